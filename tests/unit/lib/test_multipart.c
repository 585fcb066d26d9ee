/* Unit tests for lib/multipart.c: the streaming multipart/form-data parser.
 * Every body is also fed split at each byte boundary and one byte at a time:
 * the parts seen must not depend on how the bytes arrive. */
#include "unit.h"

#include "sbx/buf.h"
#include "sbx/multipart.h"

#include <errno.h>
#include <string.h>

#define CT "multipart/form-data; boundary=XyZ"

/* Parts as one text: "[name|filename|type]data<end>" per part. */
struct record {
	struct sbx_buf out;
	int stop_at_begin; /* part number whose begin returns 7 (0: none) */
	int parts;
};

static int on_begin(void *arg, const struct sbx_multipart_part *p)
{
	struct record *r = arg;

	if (++r->parts == r->stop_at_begin)
		return 7;
	return sbx_buf_printf(&r->out, "[%s|%s|%s]", p->name, p->filename ? p->filename : "-",
			      p->content_type ? p->content_type : "-");
}

static int on_data(void *arg, const char *at, size_t len)
{
	struct record *r = arg;

	assert_true(len > 0);
	return sbx_buf_append(&r->out, at, len);
}

static int on_end(void *arg)
{
	return sbx_buf_append_str(&((struct record *)arg)->out, "<end>");
}

static const struct sbx_multipart_callbacks cbs = { on_begin, on_data, on_end };

/* Parses body in pieces of size step (0: whole, then split at 'split').
 * Returns finish's result (or the first feed error) and the record. */
static int parse(const char *ct, const char *body, size_t len, size_t split, size_t step,
		 struct record *r)
{
	char err[128];
	struct sbx_multipart *mp;
	int rc = 0;

	sbx_buf_init(&r->out, 1 << 20);
	r->parts = 0;
	mp = sbx_multipart_new(ct, &cbs, r, 8, err, sizeof(err));
	assert_non_null(mp);
	if (step) {
		for (size_t i = 0; i < len && !rc; i += step)
			rc = sbx_multipart_feed(mp, body + i, len - i < step ? len - i : step);
	} else {
		rc = sbx_multipart_feed(mp, body, split);
		if (!rc)
			rc = sbx_multipart_feed(mp, body + split, len - split);
	}
	if (!rc)
		rc = sbx_multipart_finish(mp);
	sbx_multipart_free(mp);
	return rc;
}

/* Checks that every way of feeding body gives want (and rc). */
static void expect_record(const struct record *r, const char *want, size_t want_len)
{
	assert_int_equal(r->out.len, want_len);
	assert_memory_equal(r->out.data ? r->out.data : "", want, want_len);
}

static void check(const char *ct, const char *body, size_t len, int want_rc, const char *want,
		  size_t want_len)
{
	struct record r = { 0 };

	for (size_t split = 0; split <= len; split++) {
		int rc = parse(ct, body, len, split, 0, &r);

		assert_int_equal(rc, want_rc);
		if (want)
			expect_record(&r, want, want_len);
		sbx_buf_release(&r.out);
	}
	assert_int_equal(parse(ct, body, len, 0, 1, &r), want_rc);
	if (want)
		expect_record(&r, want, want_len);
	sbx_buf_release(&r.out);
}

#define CHECK(ct, body, rc, want) check(ct, body, sizeof(body) - 1, rc, want, sizeof(want) - 1)
#define CHECK_FAILS(ct, body, rc) check(ct, body, sizeof(body) - 1, rc, NULL, 0)

static void two_parts_as_httpx_sends_them(void **state)
{
	CHECK(CT,
	      "--XyZ\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/a b\r\n"
	      "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"up.bin\"\r\n"
	      "Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n\xff\r\n--XyZ--\r\n",
	      0,
	      "[path|-|-]/tmp/a b<end>[file|up.bin|application/octet-stream]\x00\x01\r\n\xff<end>");
}

static void binary_data_with_near_delimiters(void **state)
{
	static const char body[] = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n"
				   "\r\r\n\r\n-\r\n--\r\n--X\r\n--Xy\r\n--XyA\r\r\n--XyZ--";
	CHECK(CT, body, 0, "[f|-|-]\r\r\n\r\n-\r\n--\r\n--X\r\n--Xy\r\n--XyA\r<end>");
}

static void empty_parts_and_no_headers(void **state)
{
	CHECK(CT,
	      "--XyZ\r\n\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=e\r\n\r\n\r\n--XyZ--",
	      0, "[|-|-]<end>[e|-|-]<end>");
	CHECK(CT, "--XyZ--", 0, "");
}

static void preamble_padding_and_epilogue_are_skipped(void **state)
{
	CHECK(CT,
	      "ignored preamble --XyZ\r\n--Xy\r\n--XyZ \t\r\nContent-Disposition: form-data; "
	      "name=a\r\n\r\nA\r\n--XyZ--\r\nepilogue --XyZ\r\n junk",
	      0, "[a|-|-]A<end>");
}

static void disposition_parameters(void **state)
{
	CHECK(CT,
	      "--XyZ\r\ncontent-disposition:form-data;name=\"q\\\"uo;te\";  filename=\"a\\\\b.txt\""
	      "\r\ncontent-type:  text/plain  \r\nX-Other: 1\r\n\r\nx\r\n--XyZ--",
	      0, "[q\"uo;te|a\\b.txt|text/plain]x<end>");
	/* RFC 8187 filename* wins over filename. */
	CHECK(CT,
	      "--XyZ\r\nContent-Disposition: form-data; name=f; filename=\"plain\"; "
	      "filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n\r\nx\r\n--XyZ--",
	      0, "[f|\xc3\xa9t\xc3\xa9.txt|-]x<end>");
}

static void quoted_boundary_in_content_type(void **state)
{
	CHECK("Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"",
	      "--a b:c\r\nContent-Disposition: form-data; name=n\r\n\r\nv\r\n--a b:c--", 0,
	      "[n|-|-]v<end>");
}

static void malformed_bodies_are_errors(void **state)
{
	CHECK_FAILS(CT, "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
		    -EBADMSG);
	CHECK_FAILS(CT, "--XyZx\r\n", -EBADMSG);
	CHECK_FAILS(CT, "--XyZ-x", -EBADMSG);
	CHECK_FAILS(CT, "--XyZ\rx", -EBADMSG);
	CHECK_FAILS(CT, "--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", -EBADMSG);
	CHECK_FAILS(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"open\r\n\r\nx\r\n--XyZ--",
		    -EBADMSG);
	CHECK_FAILS(CT, "no boundary at all", -EBADMSG);
	CHECK_FAILS(CT, "", -EBADMSG);
}

static void limits(void **state)
{
	struct sbx_buf b;
	struct record r = { 0 };

	/* Nine parts where eight are allowed. */
	sbx_buf_init(&b, 1 << 20);
	for (int i = 0; i < 9; i++)
		sbx_buf_printf(&b,
			       "--XyZ\r\nContent-Disposition: form-data; name=p%d\r\n\r\n%d\r\n", i,
			       i);
	sbx_buf_append_str(&b, "--XyZ--");
	assert_int_equal(parse(CT, b.data, b.len, b.len, 0, &r), -E2BIG);
	sbx_buf_release(&r.out);
	/* A header block over 16 KiB. */
	sbx_buf_reset(&b);
	sbx_buf_append_str(&b, "--XyZ\r\nX-Big: ");
	for (int i = 0; i < 17 * 1024; i++)
		sbx_buf_append(&b, "a", 1);
	sbx_buf_append_str(&b, "\r\n\r\nx\r\n--XyZ--");
	assert_int_equal(parse(CT, b.data, b.len, 3, 0, &r), -E2BIG);
	sbx_buf_release(&r.out);
	sbx_buf_release(&b);
}

static void callback_stops_the_parser(void **state)
{
	static const char body[] =
		"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n"
		"--XyZ\r\nContent-Disposition: form-data; name=b\r\n\r\nB\r\n--XyZ--";
	struct record r = { .stop_at_begin = 2 };
	char err[64];
	struct sbx_multipart *mp = sbx_multipart_new(CT, &cbs, &r, 8, err, sizeof(err));

	sbx_buf_init(&r.out, 1024);
	assert_int_equal(sbx_multipart_feed(mp, body, sizeof(body) - 1), 7);
	assert_string_equal(r.out.data, "[a|-|-]A<end>");
	assert_int_equal(sbx_multipart_feed(mp, "x", 1), 7); /* stays stopped */
	assert_non_null(strstr(sbx_multipart_error(mp), "\"b\""));
	sbx_multipart_free(mp);
	sbx_buf_release(&r.out);
}

static void bad_content_types(void **state)
{
	static const char *const bad[] = {
		NULL,
		"application/json",
		"multipart/form-dataX; boundary=a",
		"multipart/form-data",
		"multipart/form-data; boundary=",
		"multipart/form-data; boundary=\"unterminated",
		"multipart/form-data; boundary="
		"12345678901234567890123456789012345678901234567890123456789012345678901",
	};
	char err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_null(sbx_multipart_new(bad[i], &cbs, NULL, 8, err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(two_parts_as_httpx_sends_them),
		cmocka_unit_test(binary_data_with_near_delimiters),
		cmocka_unit_test(empty_parts_and_no_headers),
		cmocka_unit_test(preamble_padding_and_epilogue_are_skipped),
		cmocka_unit_test(disposition_parameters),
		cmocka_unit_test(quoted_boundary_in_content_type),
		cmocka_unit_test(malformed_bodies_are_errors),
		cmocka_unit_test(limits),
		cmocka_unit_test(callback_stops_the_parser),
		cmocka_unit_test(bad_content_types),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
