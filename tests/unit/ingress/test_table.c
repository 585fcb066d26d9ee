/* Unit tests for ingress/table.c: snapshots, the routes file, and what a
 * Sandbox object gives. */
#include "unit.h"

#include "table.h"

#include "sbx/yaml.h"

#include <errno.h>

static struct ingress_table *load(const char *yaml, char *err, size_t size)
{
	json_t *doc = sbx_yaml_load(yaml, strlen(yaml), 16, err, size);
	struct ingress_table *t;

	assert_non_null(doc);
	t = ingress_routes_load(doc, err, size);
	json_decref(doc);
	return t;
}

static void routes_file_gives_each_sandbox(void **state)
{
	char err[256];
	struct ingress_table *t = load("sandboxes:\n"
				       "  - id: demo-1\n"
				       "    address: 127.0.0.1\n"
				       "    ports: [8080, 3000]\n"
				       "  - id: cold\n"
				       "    address: '::1'\n"
				       "    ports: [80]\n"
				       "    ready: false\n"
				       "    namespace: team-a\n",
				       err, sizeof(err));
	const struct ingress_sandbox *s;

	assert_non_null(t);
	assert_int_equal(ingress_table_count(t), 2);
	s = ingress_table_get(t, "demo-1");
	assert_non_null(s);
	assert_string_equal(s->address, "127.0.0.1");
	assert_true(s->ready);
	assert_true(ingress_sandbox_has_port(s, 8080));
	assert_true(ingress_sandbox_has_port(s, 3000));
	assert_false(ingress_sandbox_has_port(s, 8081));
	s = ingress_table_get(t, "cold");
	assert_false(s->ready);
	assert_string_equal(s->ns, "team-a");
	assert_string_equal(s->phase, "Pending");
	assert_null(ingress_table_get(t, "other"));
	ingress_table_unref(t);
	/* An empty file routes nothing, and is not an error. */
	t = load("sandboxes: []\n", err, sizeof(err));
	assert_int_equal(ingress_table_count(t), 0);
	ingress_table_unref(t);
}

static void routes_file_errors_name_the_entry(void **state)
{
	static const struct {
		const char *yaml, *err;
	} cases[] = {
		{ "- a\n", "expected a mapping with a list under 'sandboxes'" },
		{ "sandboxes: {}\n", "expected a mapping with a list" },
		{ "sandboxes: [x]\n", "sandboxes[0]: expected a mapping" },
		{ "sandboxes: [{id: A, address: 1.2.3.4, ports: [1]}]\n", "sandboxes[0].id" },
		{ "sandboxes: [{address: 1.2.3.4, ports: [1]}]\n", "sandboxes[0].id" },
		{ "sandboxes: [{id: a, address: pod.local, ports: [1]}]\n",
		  "sandboxes[0].address: expected an IP address" },
		{ "sandboxes: [{id: a, address: 1.2.3.4, ports: [0]}]\n",
		  "sandboxes[0].ports[0]: expected 1-65535" },
		{ "sandboxes: [{id: a, address: 1.2.3.4, ports: [\"80\"]}]\n",
		  "sandboxes[0].ports[0]" },
		{ "sandboxes: [{id: a, address: 1.2.3.4}]\n",
		  "sandboxes[0].ports: expected a list" },
		{ "sandboxes: [{id: a, address: 1.2.3.4, ports: [1], ready: yes}]\n",
		  "sandboxes[0].ready" },
		{ "sandboxes: [{id: a, address: 1.2.3.4, ports: [1], prots: [2]}]\n",
		  "sandboxes[0]: unknown key 'prots'" },
		{ "sandboxes:\n- {id: a, address: 1.2.3.4, ports: [1]}\n"
		  "- {id: a, address: 1.2.3.5, ports: [1]}\n",
		  "sandboxes[1].id: 'a' is listed twice" },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(load(cases[i].yaml, err, sizeof(err)));
		if (!strstr(err, cases[i].err))
			fail_msg("%s: '%s' does not say '%s'", cases[i].yaml, err, cases[i].err);
	}
}

static void a_clone_shares_entries_and_changes_alone(void **state)
{
	uint16_t ports[] = { 8080 };
	struct ingress_sandbox_spec a = {
		.id = "a", .address = "10.0.0.1", .ready = true, .ports = ports, .n_ports = 1
	};
	struct ingress_table *t = ingress_table_new(), *n;
	const struct ingress_sandbox *before;

	assert_int_equal(ingress_table_put(t, &a), 0);
	before = ingress_table_get(t, "a");
	n = ingress_table_clone(t);
	assert_int_equal(n->generation, t->generation + 1);
	assert_ptr_equal(ingress_table_get(n, "a"), before);
	a.address = "10.0.0.2";
	assert_int_equal(ingress_table_put(n, &a), 0);
	assert_string_equal(ingress_table_get(n, "a")->address, "10.0.0.2");
	/* The published snapshot is untouched: its lookups still see the old pod. */
	assert_string_equal(ingress_table_get(t, "a")->address, "10.0.0.1");
	ingress_table_remove(n, "a");
	assert_null(ingress_table_get(n, "a"));
	assert_non_null(ingress_table_get(t, "a"));
	ingress_table_unref(t);
	ingress_table_unref(n);
}

static void entries_without_an_address_are_not_ready(void **state)
{
	struct ingress_sandbox_spec a = { .id = "a", .ready = true };
	struct ingress_table *t = ingress_table_new();

	assert_int_equal(ingress_table_put(t, &a), 0);
	assert_false(ingress_table_get(t, "a")->ready);
	a.id = "Bad";
	assert_int_equal(ingress_table_put(t, &a), -EINVAL);
	a.id = "b";
	a.address = "not-an-ip";
	assert_int_equal(ingress_table_put(t, &a), -EINVAL);
	ingress_table_unref(t);
}

static void sandbox_object_gives_id_pod_ports_and_readiness(void **state)
{
	json_t *obj = json_loads(
		"{\"metadata\": {\"name\": \"demo\", \"namespace\": \"team-a\"},"
		" \"status\": {\"id\": \"demo-1a2b3\", \"phase\": \"Running\","
		"  \"podIP\": \"10.244.0.7\","
		"  \"endpoints\": [{\"name\": \"agent\", \"port\": 8080, \"url\": \"x\"},"
		"                {\"name\": \"web\", \"port\": 3000, \"url\": \"y\"}],"
		"  \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\"}]}}",
		0, NULL);
	struct ingress_sandbox_spec s;
	uint16_t ports[INGRESS_MAX_PORTS];

	assert_int_equal(ingress_sandbox_from_object(obj, &s, ports), 0);
	assert_string_equal(s.id, "demo-1a2b3");
	assert_string_equal(s.address, "10.244.0.7");
	assert_string_equal(s.ns, "team-a");
	assert_true(s.ready);
	assert_int_equal(s.n_ports, 2);
	assert_int_equal(s.ports[0], 8080);
	assert_int_equal(s.ports[1], 3000);
	/* Not ready unless the phase is Running too (a paused pod may linger). */
	json_object_set_new(json_object_get(obj, "status"), "phase", json_string("Paused"));
	assert_int_equal(ingress_sandbox_from_object(obj, &s, ports), 0);
	assert_false(s.ready);
	/* No id yet: nothing to route. */
	json_object_del(json_object_get(obj, "status"), "id");
	assert_int_equal(ingress_sandbox_from_object(obj, &s, ports), -ENOENT);
	json_decref(obj);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(routes_file_gives_each_sandbox),
		cmocka_unit_test(routes_file_errors_name_the_entry),
		cmocka_unit_test(a_clone_shares_entries_and_changes_alone),
		cmocka_unit_test(entries_without_an_address_are_not_ready),
		cmocka_unit_test(sandbox_object_gives_id_pod_ports_and_readiness),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
