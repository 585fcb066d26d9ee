/* Fuzz target: sbx-ingress's routes file (YAML) into a routing table. A
 * table it accepts holds only valid entries, each found by its id. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "route.h"
#include "table.h"

#include "sbx/yaml.h"

static void check(const char *key, void *value, void *arg)
{
	const struct ingress_table *t = arg;
	const struct ingress_sandbox *s = value;

	assert(ingress_valid_id(s->id, strlen(s->id)));
	assert(strcmp(key, s->id) == 0 && ingress_table_get(t, key) == s);
	assert(s->n_ports <= INGRESS_MAX_PORTS);
	for (size_t i = 0; i < s->n_ports; i++)
		assert(s->ports[i] >= 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	json_t *doc = sbx_yaml_load((const char *)data, size, 32, err, sizeof(err));
	struct ingress_table *t, *c;

	if (!doc)
		return 0;
	t = ingress_routes_load(doc, err, sizeof(err));
	json_decref(doc);
	if (!t) {
		assert(err[0]);
		return 0;
	}
	sbx_map_foreach(&t->by_id, check, t);
	c = ingress_table_clone(t);
	assert(c && ingress_table_count(c) == ingress_table_count(t));
	ingress_table_unref(t);
	ingress_table_unref(c);
	return 0;
}
