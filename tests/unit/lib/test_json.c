/* Unit tests for lib/json.c. */
#include "unit.h"

#include "sbx/buf.h"
#include "sbx/alloc.h"
#include "sbx/json.h"

#include <string.h>

#include <errno.h>

static void load_reports_position(void **state)
{
	char err[128];
	json_t *v = sbx_json_loadb("{\"a\":\n  [1, 2,]}", 16, 1024, err, sizeof(err));

	assert_null(v);
	assert_contains(err, "line 2");
	assert_null(sbx_json_loadb("[1]", 3, 2, err, sizeof(err)));
	assert_string_equal(err, "larger than 2 bytes");
	v = sbx_json_loadb("\"x\"", 3, 10, err, sizeof(err));
	assert_string_equal(json_string_value(v), "x");
	json_decref(v);
}

static void paths_never_crash_on_wrong_types(void **state)
{
	json_t *o = json_loads("{\"metadata\":{\"name\":\"n\",\"generation\":3,\"labels\":[1]},"
			       "\"spec\":{\"paused\":true}}",
			       0, NULL);
	long long i = 0;

	assert_string_equal(sbx_json_str(o, "metadata.name"), "n");
	assert_null(sbx_json_str(o, "metadata.generation"));
	assert_null(sbx_json_str(o, "metadata.labels.app"));
	assert_null(sbx_json_str(o, "metadata.name.deeper"));
	assert_null(sbx_json_str(o, "missing.name"));
	assert_int_equal(sbx_json_int(o, "metadata.generation", &i), 0);
	assert_int_equal(i, 3);
	assert_int_equal(sbx_json_int(o, "metadata.name", &i), -EINVAL);
	assert_int_equal(sbx_json_int(o, "metadata.nope", &i), -ENOENT);
	assert_true(sbx_json_bool(o, "spec.paused", false));
	assert_false(sbx_json_bool(o, "spec.absent", false));
	assert_true(sbx_json_bool(o, "metadata.name", true));
	json_decref(o);
}

static void dump_is_bounded(void **state)
{
	json_t *o = json_pack("{s:s}", "key", "a fairly long value");
	struct sbx_buf b;
	char *s;

	sbx_buf_init(&b, 10);
	assert_int_equal(sbx_json_dump_buf(o, &b), -E2BIG);
	sbx_buf_release(&b);
	sbx_buf_init(&b, 100);
	assert_int_equal(sbx_json_dump_buf(o, &b), 0);
	assert_string_equal(b.data, "{\"key\":\"a fairly long value\"}");
	sbx_buf_release(&b);
	s = sbx_json_dumps(o);
	assert_string_equal(s, "{\"key\":\"a fairly long value\"}");
	free(s);
	json_decref(o);
}

static void lossy_strings_always_serialize(void **state)
{
#define CASE(in, want)                                     \
	{                                                  \
		in, sizeof(in) - 1, want, sizeof(want) - 1 \
	}
	static const struct {
		const char *in;
		size_t len;
		const char *want;
		size_t want_len;
	} cases[] = {
		CASE("plain", "plain"),
		CASE("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80",
		     "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"),
		CASE("a\xff"
		     "b",
		     "a\xef\xbf\xbd"
		     "b"),						      /* a stray byte */
		CASE("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"),		      /* overlong '/' */
		CASE("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"), /* a surrogate */
		CASE("\xf4\x90\x80\x80",
		     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"), /* > U+10FFFF */
		CASE("ok\xe2\x9c", "ok\xef\xbf\xbd\xef\xbf\xbd"),	  /* cut short */
		CASE("n\0ul", "n\0ul"),					  /* NUL is text */
	};
#undef CASE

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *s = sbx_json_string_lossy(cases[i].in, cases[i].len);
		char *text;

		assert_non_null(s);
		assert_int_equal(json_string_length(s), cases[i].want_len);
		assert_memory_equal(json_string_value(s), cases[i].want, cases[i].want_len);
		text = sbx_json_dumps(s); /* always valid JSON text */
		assert_non_null(text);
		sbx_free(text);
		json_decref(s);
	}
	assert_int_equal(sbx_utf8_valid_prefix("ab\xc3\xa9\xe2\x9c", 6), 4);
	assert_int_equal(sbx_utf8_valid_prefix("", 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(load_reports_position),
		cmocka_unit_test(paths_never_crash_on_wrong_types),
		cmocka_unit_test(dump_is_bounded),
		cmocka_unit_test(lossy_strings_always_serialize),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
