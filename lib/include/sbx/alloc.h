/* Allocation wrappers for all sbx code.
 *
 * Every allocation goes through these so that tests can make the Nth
 * allocation fail (sbx_alloc_fail_after) and check that each error path
 * cleans up and reports -ENOMEM instead of crashing.
 */
#ifndef SBX_ALLOC_H
#define SBX_ALLOC_H

#include <stddef.h>

void *sbx_malloc(size_t size);
void *sbx_calloc(size_t count, size_t size);
void *sbx_realloc(void *ptr, size_t size);
void sbx_free(void *ptr);
/* Copies of strings; the caller frees with sbx_free. */
char *sbx_strdup(const char *s);
char *sbx_strndup(const char *s, size_t n);

/* Freed blocks of one size kept for the next allocation of that size, up
 * to SBX_SPARES: for what a loop makes and frees for every request and is
 * larger than malloc's per-thread cache keeps (1 KiB), which otherwise goes
 * through malloc's slower bins each time. One set per loop (no locking);
 * the holder releases it when it goes, after the last put. */
#define SBX_SPARES 16
struct sbx_spares {
	size_t size;
	unsigned n;
	void *items[SBX_SPARES];
};

/* How many a set keeps: SBX_SPARES, or 0 under AddressSanitizer (every
 * block back to malloc, so that a use after free is still caught). */
extern const unsigned sbx_spares_kept;

void sbx_spares_init(struct sbx_spares *s, size_t size);
/* A block of s->size bytes (not zeroed), or NULL. */
void *sbx_spares_get(struct sbx_spares *s);
/* Takes back a block from sbx_spares_get (NULL is ignored). */
void sbx_spares_put(struct sbx_spares *s, void *p);
void sbx_spares_release(struct sbx_spares *s);

/* Test hook: after 'n' more successful allocations every allocation fails
 * until sbx_alloc_fail_reset(). n < 0 disables the hook. */
void sbx_alloc_fail_after(long n);
void sbx_alloc_fail_reset(void);

/* Routes jansson's allocations through the wrappers (call once at start). */
void sbx_alloc_install_jansson(void);

#endif
