/* Fuzz target: the multipart/form-data parser (upload bodies from any
 * client). The first byte picks a split point; the body is parsed whole,
 * in two pieces there, and one byte at a time, and all three must report
 * the same parts, bytes and result. Any crash, leak or difference is a
 * finding. */
#include "sbx/buf.h"
#include "sbx/multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct record {
	struct sbx_buf out;
};

static int on_begin(void *arg, const struct sbx_multipart_part *p)
{
	struct record *r = arg;

	return sbx_buf_printf(&r->out, "[%s|%s|%s]", p->name, p->filename ? p->filename : "-",
			      p->content_type ? p->content_type : "-")
		       ? 1
		       : 0;
}

static int on_data(void *arg, const char *at, size_t len)
{
	if (!len)
		abort(); /* empty data callbacks are a bug */
	return sbx_buf_append(&((struct record *)arg)->out, at, len) ? 1 : 0;
}

static int on_end(void *arg)
{
	return sbx_buf_append_str(&((struct record *)arg)->out, "<end>") ? 1 : 0;
}

static const struct sbx_multipart_callbacks cbs = { on_begin, on_data, on_end };

static int parse(const char *data, size_t len, size_t step, size_t split, struct record *r)
{
	char err[128];
	struct sbx_multipart *mp = sbx_multipart_new("multipart/form-data; boundary=b0", &cbs, r,
						     16, err, sizeof(err));
	int rc = 0;

	sbx_buf_init(&r->out, 1 << 20);
	if (step) {
		for (size_t i = 0; i < len && !rc; i += step)
			rc = sbx_multipart_feed(mp, data + i, 1);
	} else {
		rc = sbx_multipart_feed(mp, data, split);
		if (!rc)
			rc = sbx_multipart_feed(mp, data + split, len - split);
	}
	if (!rc)
		rc = sbx_multipart_finish(mp);
	sbx_multipart_free(mp);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct record whole, split, bytes;
	const char *body;
	size_t at;
	int a, b, c;

	if (size < 1)
		return 0;
	body = (const char *)data + 1;
	size--;
	at = size ? data[0] % (size + 1) : 0;
	a = parse(body, size, 0, size, &whole);
	b = parse(body, size, 0, at, &split);
	c = parse(body, size, 1, 0, &bytes);
	/* A callback error (1) is the record filling up: not comparable. */
	if (a != 1 && b != 1 && c != 1) {
		if (a != b || a != c || whole.out.len != split.out.len ||
		    whole.out.len != bytes.out.len ||
		    (whole.out.len && (memcmp(whole.out.data, split.out.data, whole.out.len) ||
				       memcmp(whole.out.data, bytes.out.data, whole.out.len))))
			abort();
	}
	sbx_buf_release(&whole.out);
	sbx_buf_release(&split.out);
	sbx_buf_release(&bytes.out);
	return 0;
}
