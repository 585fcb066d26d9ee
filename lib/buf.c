/* Bounded growable buffer (see sbx/buf.h). */
#include "sbx/buf.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void sbx_buf_init(struct sbx_buf *b, size_t max_bytes)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max_bytes;
	b->borrowed = false;
}

void sbx_buf_init_on(struct sbx_buf *b, size_t max_bytes, char *storage, size_t size)
{
	sbx_buf_init(b, max_bytes);
	if (!storage || size < 2)
		return;
	b->data = storage;
	b->cap = size - 1;
	b->borrowed = true;
	storage[0] = '\0';
}

void sbx_buf_release(struct sbx_buf *b)
{
	if (!b->borrowed)
		sbx_free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->borrowed = false;
}

void sbx_buf_reset(struct sbx_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

/* The slow side of reserve: the limit, then a first allocation or a larger
 * one (reserve has found the room there is too small). */
static int __attribute__((noinline)) grow(struct sbx_buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > b->max || b->len > b->max - extra)
		return -E2BIG;
	need = b->len + extra;
	cap = b->cap ? b->cap : 256; /* a request head, in one go */
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > b->max)
		cap = b->max > need ? b->max : need;
	if (b->borrowed) {
		/* Out of the caller's storage, onto the heap. */
		if (!(p = sbx_malloc(cap + 1)))
			return -ENOMEM;
		memcpy(p, b->data, b->len + 1);
		b->borrowed = false;
	} else if (!(p = sbx_realloc(b->data, cap + 1))) {
		return -ENOMEM;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Makes room for 'extra' more bytes plus the NUL. */
static inline int reserve(struct sbx_buf *b, size_t extra)
{
	if (b->data && extra <= b->cap - b->len && extra <= b->max - b->len)
		return 0;
	return grow(b, extra);
}

int sbx_buf_append_grow(struct sbx_buf *b, const void *data, size_t n)
{
	int rc = grow(b, n);

	return rc ? rc : sbx_buf_append(b, data, n); /* the room is there now */
}

int sbx_buf_cat_many(struct sbx_buf *b, const char *const *parts, size_t n)
{
	size_t total = 0;
	int rc;

	for (size_t i = 0; i < n; i++)
		total += strlen(parts[i]);
	if ((rc = reserve(b, total)))
		return rc;
	for (size_t i = 0; i < n; i++)
		sbx_buf_append_str(b, parts[i]); /* within the room reserved */
	return 0;
}

int sbx_buf_vprintf(struct sbx_buf *b, const char *fmt, va_list ap)
{
	va_list copy;
	int n, rc;

	va_copy(copy, ap);
	n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0)
		return -EINVAL;
	rc = reserve(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int sbx_buf_printf(struct sbx_buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = sbx_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

void sbx_buf_consume(struct sbx_buf *b, size_t n)
{
	if (n >= b->len) {
		sbx_buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

char *sbx_buf_steal(struct sbx_buf *b)
{
	char *p = b->data;

	if (!p)
		return sbx_strdup("");
	if (b->borrowed) {
		if (!(p = sbx_malloc(b->len + 1)))
			return NULL;
		memcpy(p, b->data, b->len + 1);
	}
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->borrowed = false;
	return p;
}
