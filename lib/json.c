/* JSON helpers (see sbx/json.h). */
#include "sbx/json.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- memory: jansson's allocations, with a budget for parsing ----------------------

While a budget is on, what a parse holds is counted (by malloc_usable_size,
so that the pointers stay plain malloc ones that free() takes): a body of
small numbers grows about 40-fold once parsed, and a parse that would pass
its budget fails instead of taking the process's memory. The budget is per
thread (one loop per thread). */

static _Thread_local struct {
	bool on, over;
	size_t left;
} budget;

void *sbx_json_malloc(size_t size)
{
	void *p;
	size_t got;

	if (budget.on && size > budget.left) {
		budget.over = true;
		return NULL;
	}
	p = sbx_malloc(size);
	if (p && budget.on) {
		got = malloc_usable_size(p);
		if (got > budget.left) {
			sbx_free(p);
			budget.over = true;
			return NULL;
		}
		budget.left -= got;
	}
	return p;
}

void sbx_json_free(void *ptr)
{
	if (ptr && budget.on)
		budget.left += malloc_usable_size(ptr);
	sbx_free(ptr);
}

json_t *sbx_json_loadb_within(const char *data, size_t len, size_t max_bytes, size_t memory,
			      char *err, size_t err_size, bool *over)
{
	json_t *v;

	budget.on = true;
	budget.over = false;
	budget.left = memory;
	v = sbx_json_loadb(data, len, max_bytes, err, err_size);
	budget.on = false;
	*over = budget.over;
	if (budget.over) {
		json_decref(v);
		v = NULL;
		snprintf(err, err_size, "parsing it would take more than %zu MiB of memory",
			 memory >> 20);
	}
	if (budget.over || len > (8u << 20))
		malloc_trim(0); /* what the parse held goes back to the system */
	return v;
}

json_t *sbx_json_loadb(const char *data, size_t len, size_t max_bytes, char *err, size_t err_size)
{
	json_error_t je;
	json_t *v;

	if (len > max_bytes) {
		snprintf(err, err_size, "larger than %zu bytes", max_bytes);
		return NULL;
	}
	v = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	if (!v)
		snprintf(err, err_size, "line %d, column %d: %s", je.line, je.column, je.text);
	return v;
}

json_t *sbx_json_path(const json_t *root, const char *path)
{
	const char *dot;
	json_t *cur = (json_t *)root;

	while (cur && json_is_object(cur)) {
		dot = strchr(path, '.');
		if (!dot)
			return json_object_get(cur, path);
		cur = json_object_getn(cur, path, (size_t)(dot - path));
		path = dot + 1;
	}
	return NULL;
}

const char *sbx_json_str(const json_t *root, const char *path)
{
	return json_string_value(sbx_json_path(root, path));
}

int sbx_json_int(const json_t *root, const char *path, long long *out)
{
	json_t *v = sbx_json_path(root, path);

	if (!v)
		return -ENOENT;
	if (!json_is_integer(v))
		return -EINVAL;
	*out = json_integer_value(v);
	return 0;
}

bool sbx_json_bool(const json_t *root, const char *path, bool fallback)
{
	json_t *v = sbx_json_path(root, path);

	return json_is_boolean(v) ? json_is_true(v) : fallback;
}

struct dump_ctx {
	struct sbx_buf *b;
	int rc;
};

static int dump_cb(const char *data, size_t size, void *arg)
{
	struct dump_ctx *d = arg;

	d->rc = sbx_buf_append(d->b, data, size);
	return d->rc ? -1 : 0;
}

int sbx_json_dump_buf(const json_t *v, struct sbx_buf *b)
{
	struct dump_ctx d = { .b = b };

	if (json_dump_callback(v, dump_cb, &d, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
		return d.rc ? d.rc : -ENOMEM;
	return 0;
}

char *sbx_json_dumps(const json_t *v)
{
	struct sbx_buf b;

	sbx_buf_init(&b, SIZE_MAX / 2);
	if (sbx_json_dump_buf(v, &b)) {
		sbx_buf_release(&b);
		return NULL;
	}
	return sbx_buf_steal(&b);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t len)
{
	unsigned char c = p[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

size_t sbx_utf8_valid_prefix(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;
	size_t i = 0, n;

	while (i < len && (n = utf8_seq(p + i, len - i)))
		i += n;
	return i;
}

json_t *sbx_json_string_lossy(const char *data, size_t len)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	size_t ok = sbx_utf8_valid_prefix(data, len);
	struct sbx_buf b;
	json_t *s;

	if (ok == len)
		return json_stringn(data, len);
	sbx_buf_init(&b, len * 3 + 1);
	while (len) {
		ok = sbx_utf8_valid_prefix(data, len);
		if (sbx_buf_append(&b, data, ok) ||
		    (ok < len && sbx_buf_append(&b, replacement, 3))) {
			sbx_buf_release(&b);
			return NULL;
		}
		if (ok < len)
			ok++; /* the bad byte */
		data += ok;
		len -= ok;
	}
	s = json_stringn(b.data ? b.data : "", b.len);
	sbx_buf_release(&b);
	return s;
}
