/* Allocation wrappers with a failure-injection hook for tests. */
#include "sbx/alloc.h"

#include "sbx/json.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Counts down to the injected failure; negative means no injection. The
 * counter is only touched by tests, which run single-threaded. */
static long fail_countdown = -1;

static int should_fail(void)
{
	if (fail_countdown < 0)
		return 0;
	if (fail_countdown == 0)
		return 1;
	fail_countdown--;
	return 0;
}

void sbx_alloc_fail_after(long n)
{
	fail_countdown = n;
}

void sbx_alloc_fail_reset(void)
{
	fail_countdown = -1;
}

void *sbx_malloc(size_t size)
{
	return should_fail() ? NULL : malloc(size ? size : 1);
}

void *sbx_calloc(size_t count, size_t size)
{
	return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *sbx_realloc(void *ptr, size_t size)
{
	return should_fail() ? NULL : realloc(ptr, size ? size : 1);
}

void sbx_free(void *ptr)
{
	free(ptr);
}

char *sbx_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *copy = sbx_malloc(len + 1);

	if (!copy)
		return NULL;
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

char *sbx_strdup(const char *s)
{
	return sbx_strndup(s, strlen(s));
}

void sbx_alloc_install_jansson(void)
{
	json_set_alloc_funcs(sbx_json_malloc, sbx_json_free);
}

/* Under AddressSanitizer each block goes back to malloc at once, so that a
 * use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARES_KEPT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARES_KEPT 0
#endif
#endif
#ifndef SPARES_KEPT
#define SPARES_KEPT SBX_SPARES
#endif
const unsigned sbx_spares_kept = SPARES_KEPT;

void sbx_spares_init(struct sbx_spares *s, size_t size)
{
	s->size = size;
	s->n = 0;
}

void *sbx_spares_get(struct sbx_spares *s)
{
	return s->n ? s->items[--s->n] : sbx_malloc(s->size);
}

void sbx_spares_put(struct sbx_spares *s, void *p)
{
	if (p && s->n < sbx_spares_kept)
		s->items[s->n++] = p;
	else
		sbx_free(p);
}

void sbx_spares_release(struct sbx_spares *s)
{
	while (s->n)
		sbx_free(s->items[--s->n]);
}
