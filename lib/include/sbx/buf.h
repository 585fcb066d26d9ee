/* A growable byte buffer with a hard maximum.
 *
 * Anything fed by the network (headers, bodies, watch events) lands in a
 * struct sbx_buf whose 'max' bounds it: an append that would pass the limit
 * fails with -E2BIG and leaves the buffer unchanged, so the caller can answer
 * "too big" instead of growing without end. The data is always kept
 * NUL-terminated for convenience (the NUL is not counted in len).
 */
#ifndef SBX_BUF_H
#define SBX_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct sbx_buf {
	char *data;    /* NULL until the first append */
	size_t len;    /* bytes in use */
	size_t cap;    /* bytes allocated, excluding the NUL slot */
	size_t max;    /* hard limit on len */
	bool borrowed; /* data is the caller's storage (sbx_buf_init_on) */
};

/* Sets up an empty buffer that may hold at most max_bytes. */
void sbx_buf_init(struct sbx_buf *b, size_t max_bytes);
/* The same, starting in the caller's storage (size bytes, the NUL
 * included: size - 1 of data), which is never freed: what outgrows it
 * moves to the heap. The storage must outlive the buffer and stay put
 * (no copying the struct sbx_buf while it is in use). For what is
 * usually small and made often: a request head, say. */
void sbx_buf_init_on(struct sbx_buf *b, size_t max_bytes, char *storage, size_t size);
/* Frees what the buffer holds and leaves it empty and reusable. */
void sbx_buf_release(struct sbx_buf *b);
/* Empties the buffer and keeps its memory. */
void sbx_buf_reset(struct sbx_buf *b);

/* Appends what does not fit in the room there is (see sbx_buf_append). */
int sbx_buf_append_grow(struct sbx_buf *b, const void *data, size_t n);

/* 0, -E2BIG past the maximum, or -ENOMEM. Inline: heads are built out of
 * many short pieces, most of them constants whose copy compiles to a
 * store, and nearly all fit in the room there is. */
static inline int sbx_buf_append(struct sbx_buf *b, const void *data, size_t n)
{
	if (!b->data || n > b->cap - b->len || n > b->max - b->len)
		return sbx_buf_append_grow(b, data, n);
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static inline int sbx_buf_append_str(struct sbx_buf *b, const char *s)
{
	return sbx_buf_append(b, s, strlen(s));
}

/* Appends the strings given, one after the other: what a "%s%s..." format
 * would, without formatting (request and response heads are built with
 * it). All or nothing, like an append. Inline, with the count known where
 * it is called: constant strings are measured when compiled and copied
 * with stores. */
#define sbx_buf_cat(b, ...)                                      \
	sbx_buf_cat_n((b), (const char *const[]){ __VA_ARGS__ }, \
		      sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *))

/* The same out of line, for any count. */
int sbx_buf_cat_many(struct sbx_buf *b, const char *const *parts, size_t n);

static inline int sbx_buf_cat_n(struct sbx_buf *b, const char *const *parts, size_t n)
{
	size_t lens[16], total = 0;

	if (n > 16 || !b->data)
		return sbx_buf_cat_many(b, parts, n);
#pragma GCC unroll 16
	for (size_t i = 0; i < n; i++)
		total += lens[i] = strlen(parts[i]);
	if (total > b->cap - b->len || total > b->max - b->len)
		return sbx_buf_cat_many(b, parts, n);
#pragma GCC unroll 16
	for (size_t i = 0; i < n; i++) {
		memcpy(b->data + b->len, parts[i], lens[i]);
		b->len += lens[i];
	}
	b->data[b->len] = '\0';
	return 0;
}

int sbx_buf_printf(struct sbx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sbx_buf_vprintf(struct sbx_buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void sbx_buf_consume(struct sbx_buf *b, size_t n);

/* Hands the data to the caller (who frees it with sbx_free) and leaves the
 * buffer empty. Returns "" copies for an untouched buffer; NULL on -ENOMEM. */
char *sbx_buf_steal(struct sbx_buf *b);

#endif
