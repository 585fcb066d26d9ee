/* Unit tests for egress-sidecar/audit.c: the bounded record of recent
 * decisions GET /decisions serves, and the name patterns of --log-quiet and
 * ?name=. */
#include "unit.h"

#include "audit.h"

#include <jansson.h>

static void add(struct audit *a, const char *name, bool denied)
{
	struct audit_record r = { .time = 1796328000.5,
				  .name = name,
				  .qtype = 1,
				  .outcome = denied ? "denied" : "allowed",
				  .verdict = denied ? "deny" : "allow",
				  .rule = denied ? "defaultAction" : "rules[0]",
				  .target = denied ? NULL : "*.test",
				  .addresses = denied ? "" : "192.0.2.1",
				  .upstream_ms = 1.5,
				  .refused = denied };

	assert_true(audit_add(a, &r) > 0);
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
	assert_string_equal(names, "b.test c.test d.test");
	assert_int_equal(json_integer_value(json_object_get(doc, "next")), 4);
	assert_int_equal(json_integer_value(json_object_get(doc, "kept")), 3);
	json_decref(doc);

	/* after: what a poller has not seen; limit: the newest that match. */
	json_decref(
		query(&a, (struct audit_query){ .after = 2, .denied = -1 }, names, sizeof(names)));
	assert_string_equal(names, "c.test d.test");
	doc = query(&a, (struct audit_query){ .limit = 1, .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "d.test");
	json_decref(doc);
	doc = query(&a, (struct audit_query){ .after = 4, .denied = -1 }, names, sizeof(names));
	assert_string_equal(names, "");
	assert_int_equal(json_integer_value(json_object_get(doc, "next")), 4);
	json_decref(doc);

	/* verdict and name filters; names compare as DNS names. */
	json_decref(query(&a, (struct audit_query){ .denied = 1 }, names, sizeof(names)));
	assert_string_equal(names, "b.test d.test");
	json_decref(query(&a, (struct audit_query){ .denied = 0 }, names, sizeof(names)));
	assert_string_equal(names, "c.test");
	json_decref(query(&a, (struct audit_query){ .pattern = "d.TEST", .denied = -1 }, names,
			  sizeof(names)));
	assert_string_equal(names, "d.test");
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

static void test_an_entry_says_what_was_decided(void **state)
{
	struct audit a;
	char names[64];
	json_t *doc, *e;

	(void)state;
	assert_int_equal(audit_init(&a, 4), 0);
	add(&a, "WWW.Example.TEST.", false);
	add(&a, "x.test", true);
	doc = query(&a, (struct audit_query){ .denied = -1 }, names, sizeof(names));
	e = json_array_get(json_object_get(doc, "decisions"), 0);
	assert_string_equal(json_string_value(json_object_get(e, "name")), "www.example.test");
	assert_string_equal(json_string_value(json_object_get(e, "verdict")), "allow");
	assert_string_equal(json_string_value(json_object_get(e, "rule")), "rules[0]");
	assert_string_equal(json_string_value(json_object_get(e, "target")), "*.test");
	assert_string_equal(json_string_value(json_object_get(e, "addresses")), "192.0.2.1");
	assert_null(json_object_get(e, "denied"));
	assert_true(json_real_value(json_object_get(e, "upstream_ms")) == 1.5);
	assert_int_equal(json_integer_value(json_object_get(e, "qtype")), 1);
	e = json_array_get(json_object_get(doc, "decisions"), 1);
	assert_string_equal(json_string_value(json_object_get(e, "outcome")), "denied");
	assert_null(json_object_get(e, "target"));
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
		cmocka_unit_test(test_an_entry_says_what_was_decided),
		cmocka_unit_test(test_name_patterns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
