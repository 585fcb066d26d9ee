/* Unit tests for egress-sidecar/audit.c: the bounded record of recent
 * decisions GET /decisions serves, and the name patterns of --log-quiet and
 * ?name=. */
#include "unit.h"

#include "audit.h"

#include <jansson.h>

static void add(struct audit *a, const char *name, bool denied)
{
	json_t *e = json_pack("{s:s, s:s}", "name", name, "verdict", denied ? "deny" : "allow");

	assert_true(audit_add(a, e, name, denied) > 0);
	json_decref(e);
}

/* The query's answer, parsed; its decisions' names joined with spaces. */
static json_t *query(const struct audit *a, struct audit_query q, char *names, size_t size)
{
	struct sbx_buf b;
	json_t *doc, *e;
	size_t i, n = 0;

	sbx_buf_init(&b, 1 << 20);
	assert_int_equal(audit_query(a, &q, &b), 0);
	doc = json_loads(b.data, 0, NULL);
	assert_non_null(doc);
	sbx_buf_release(&b);
	names[0] = '\0';
	json_array_foreach(json_object_get(doc, "decisions"), i, e) n +=
		(size_t)snprintf(names + n, size - n, "%s%s", n ? " " : "",
				 json_string_value(json_object_get(e, "name")));
	return doc;
}

static void test_the_ring_keeps_the_newest_in_order(void **state)
{
	struct audit a;
	char names[256];
	json_t *doc;

	(void)state;
	assert_int_equal(audit_init(&a, 3), 0);
	doc = query(&a, (struct audit_query){ .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "");
	assert_int_equal(json_integer_value(json_object_get(doc, "next")), 0);
	json_decref(doc);

	add(&a, "a.test", false);
	add(&a, "b.test", true);
	add(&a, "c.test", false);
	add(&a, "D.test.", true); /* evicts a.test */
	doc = query(&a, (struct audit_query){ .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "b.test c.test D.test.");
	assert_int_equal(json_integer_value(json_object_get(doc, "next")), 4);
	assert_int_equal(json_integer_value(json_object_get(doc, "kept")), 3);
	json_decref(doc);

	/* after: what a poller has not seen; limit: the newest that match. */
	json_decref(
		query(&a, (struct audit_query){ .after = 2, .denied = -1 }, names, sizeof(names)));
	assert_string_equal(names, "c.test D.test.");
	doc = query(&a, (struct audit_query){ .limit = 1, .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "D.test.");
	json_decref(doc);
	doc = query(&a, (struct audit_query){ .after = 4, .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "");
	assert_int_equal(json_integer_value(json_object_get(doc, "next")), 4);
	json_decref(doc);

	/* verdict and name filters; names compare as DNS names. */
	json_decref(query(&a, (struct audit_query){ .denied = 1 }, names, sizeof(names)));
	assert_string_equal(names, "b.test D.test.");
	json_decref(query(&a, (struct audit_query){ .denied = 0 }, names, sizeof(names)));
	assert_string_equal(names, "c.test");
	json_decref(query(&a, (struct audit_query){ .pattern = "d.TEST", .denied = -1 }, names,
			  sizeof(names)));
	assert_string_equal(names, "D.test.");
	audit_release(&a);
}

static void test_each_entry_carries_its_seq(void **state)
{
	struct audit a;
	char names[64];
	json_t *doc;

	(void)state;
	assert_int_equal(audit_init(&a, 2), 0);
	for (int i = 0; i < 5; i++)
		add(&a, "x.test", false);
	doc = query(&a, (struct audit_query){ .denied = -1 }, names, sizeof(names));
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(json_object_get(doc, "decisions"), 0), "seq")),
			 4);
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(json_object_get(doc, "decisions"), 1), "seq")),
			 5);
	json_decref(doc);
	audit_release(&a);
}

static void test_name_patterns(void **state)
{
	(void)state;
	assert_true(audit_name_matches("*", "anything.test"));
	assert_true(audit_name_matches("*.example.com", "a.example.com"));
	assert_true(audit_name_matches("*.example.com", "A.B.Example.COM."));
	assert_false(audit_name_matches("*.example.com", "example.com")); /* not the apex */
	assert_false(audit_name_matches("*.example.com", "badexample.com"));
	assert_true(audit_name_matches("example.com.", "EXAMPLE.com"));
	assert_false(audit_name_matches("example.com", "a.example.com"));

	assert_true(audit_pattern_valid("*"));
	assert_true(audit_pattern_valid("*.example.com"));
	assert_true(audit_pattern_valid("example.com"));
	assert_false(audit_pattern_valid("a*b.com"));
	assert_false(audit_pattern_valid("*."));
	assert_false(audit_pattern_valid(""));
	assert_false(audit_pattern_valid("a..b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_ring_keeps_the_newest_in_order),
		cmocka_unit_test(test_each_entry_carries_its_seq),
		cmocka_unit_test(test_name_patterns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
