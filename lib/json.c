/* JSON helpers (see sbx/json.h). */
#include "sbx/json.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
