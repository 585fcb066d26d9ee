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
