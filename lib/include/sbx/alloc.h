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

/* Test hook: after 'n' more successful allocations every allocation fails
 * until sbx_alloc_fail_reset(). n < 0 disables the hook. */
void sbx_alloc_fail_after(long n);
void sbx_alloc_fail_reset(void);

/* Routes jansson's allocations through the wrappers (call once at start). */
void sbx_alloc_install_jansson(void);

#endif
