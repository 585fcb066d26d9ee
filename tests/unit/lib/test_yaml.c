/* Unit tests for lib/yaml.c: YAML documents as jansson values. */
#include "unit.h"

#include "sbx/yaml.h"

static json_t *load(const char *s, char *err)
{
	return sbx_yaml_load(s, strlen(s), 16, err, 256);
}

static void scalars_are_typed_like_the_core_schema(void **state)
{
	char err[256];
	json_t *v = load("s: hello\nq: '123'\ni: -42\nf: 1.5\nt: true\nn: ~\ne:\nb: False\n"
			 "v: 1.2.3\nlist: [a, 2]\nnested: {x: {y: z}}\n",
			 err);

	assert_non_null(v);
	assert_string_equal(json_string_value(json_object_get(v, "s")), "hello");
	assert_string_equal(json_string_value(json_object_get(v, "q")), "123");
	assert_int_equal(json_integer_value(json_object_get(v, "i")), -42);
	assert_true(json_real_value(json_object_get(v, "f")) == 1.5);
	assert_true(json_is_true(json_object_get(v, "t")));
	assert_true(json_is_null(json_object_get(v, "n")));
	assert_true(json_is_null(json_object_get(v, "e")));
	assert_true(json_is_false(json_object_get(v, "b")));
	assert_string_equal(json_string_value(json_object_get(v, "v")), "1.2.3");
	assert_int_equal(json_array_size(json_object_get(v, "list")), 2);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_object_get(v, "nested"), "x"), "y")),
			    "z");
	json_decref(v);
}

static void empty_document_is_null(void **state)
{
	char err[256];
	json_t *v = load("", err);

	assert_true(json_is_null(v));
	json_decref(v);
	v = load("# only a comment\n", err);
	assert_true(json_is_null(v));
	json_decref(v);
}

static void errors_carry_line_and_column(void **state)
{
	char err[256];

	assert_null(load("a: b\nc: [d\n", err));
	assert_contains(err, "line 3");
	assert_null(load("a: &x [1]\nb: *x\n", err));
	assert_contains(err, "anchors and aliases are not supported");
	assert_null(load("[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]", err));
	assert_contains(err, "nested too deeply");
	/* Found by fuzz_yaml_json: nested mappings as keys used to grow
	 * exponentially when turned into text. */
	assert_null(
		load("{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}: v", err));
	assert_contains(err, "mapping keys must be plain values");
	assert_null(load("? [a, b]\n: v\n", err));
	/* Raw bytes that are not UTF-8 are refused, not passed on. */
	assert_null(load("k: \xff\xfe\n", err));
	assert_contains(err, "line 1");
}

static void non_string_keys_become_strings(void **state)
{
	char err[256];
	json_t *v = load("1: one\ntrue: yes\n", err);

	/* 'yes' is a string in YAML 1.2 (only YAML 1.1 made it a boolean). */

	assert_non_null(v);
	assert_string_equal(json_string_value(json_object_get(v, "1")), "one");
	assert_string_equal(json_string_value(json_object_get(v, "true")), "yes");
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(scalars_are_typed_like_the_core_schema),
		cmocka_unit_test(empty_document_is_null),
		cmocka_unit_test(errors_carry_line_and_column),
		cmocka_unit_test(non_string_keys_become_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
