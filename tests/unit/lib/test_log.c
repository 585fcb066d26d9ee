/* Unit tests for lib/log.c: text and JSON lines, levels, typed fields. */
#include "unit.h"

#include "sbx/log.h"

#include <errno.h>
#include <jansson.h>

static char out[16384];

static const char *emit(enum sbx_log_format format, enum sbx_log_level level)
{
	FILE *f;

	out[0] = '\0';
	f = fmemopen(out, sizeof(out), "w");

	sbx_log_setup("sbx-test", SBX_LOG_INFO, format);
	sbx_log_set_stream(f);
	switch (level) {
	case SBX_LOG_DEBUG:
		sbx_log_debug("hidden", SBX_LS("k", "v"));
		break;
	case SBX_LOG_WARN:
		sbx_log_warn("watch interrupted", SBX_LS("path", "/api/v1/pods"),
			     SBX_LI("status", 503), SBX_LB("retry", true), SBX_LD("ratio", 0.5),
			     SBX_LS("reason", "said \"no\"\nthen left"), SBX_LS("none", NULL));
		break;
	default:
		sbx_log_info("started");
		break;
	}
	fclose(f);
	sbx_log_set_stream(NULL);
	return out;
}

static void text_line_has_fields_and_quotes_when_needed(void **state)
{
	const char *s = emit(SBX_LOG_TEXT, SBX_LOG_WARN);

	assert_contains(
		s, " WARN  watch interrupted path=/api/v1/pods status=503 retry=true ratio=0.5");
	assert_contains(s, "reason=\"said \\\"no\\\"\\nthen left\"");
	assert_contains(s, "none=(null)");
	assert_true(s[strlen(s) - 1] == '\n');
	/* One line: the only newline is the last byte. */
	assert_ptr_equal(strchr(s, '\n'), s + strlen(s) - 1);
}

static void json_line_keeps_types(void **state)
{
	const char *s = emit(SBX_LOG_JSON, SBX_LOG_WARN);
	json_t *o = json_loads(s, 0, NULL);

	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "component")), "sbx-test");
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "watch interrupted");
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 503);
	assert_true(json_is_true(json_object_get(o, "retry")));
	assert_true(json_is_real(json_object_get(o, "ratio")));
	assert_true(json_is_null(json_object_get(o, "none")));
	assert_string_equal(json_string_value(json_object_get(o, "reason")),
			    "said \"no\"\nthen left");
	assert_non_null(strstr(json_string_value(json_object_get(o, "ts")), "Z"));
	json_decref(o);
}

static void lines_below_level_are_dropped(void **state)
{
	assert_string_equal(emit(SBX_LOG_TEXT, SBX_LOG_DEBUG), "");
	assert_contains(emit(SBX_LOG_TEXT, SBX_LOG_INFO), "INFO  started");
}

static void level_and_format_names(void **state)
{
	enum sbx_log_level l;
	enum sbx_log_format f;

	assert_int_equal(sbx_log_level_parse("DEBUG", &l), 0);
	assert_int_equal(l, SBX_LOG_DEBUG);
	assert_int_equal(sbx_log_level_parse("warning", &l), 0);
	assert_int_equal(l, SBX_LOG_WARN);
	assert_int_equal(sbx_log_level_parse("loud", &l), -EINVAL);
	assert_int_equal(sbx_log_format_parse("json", &f), 0);
	assert_int_equal(f, SBX_LOG_JSON);
	assert_int_equal(sbx_log_format_parse("xml", &f), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(text_line_has_fields_and_quotes_when_needed),
		cmocka_unit_test(json_line_keeps_types),
		cmocka_unit_test(lines_below_level_are_dropped),
		cmocka_unit_test(level_and_format_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
