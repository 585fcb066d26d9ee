/* The routing table: sandbox id -> where its pod is, which ports it
 * declares, and whether it is ready.
 *
 * A table is an immutable snapshot once published: discovery (the routes
 * file, or the Sandbox informer) builds the next one beside it, by cloning
 * and changing, and swaps it in; requests look up whichever snapshot their
 * worker holds, with no lock. Entries are immutable too and shared between
 * snapshots, each counted, so a clone costs one pointer per sandbox.
 */
#ifndef SBX_INGRESS_TABLE_H
#define SBX_INGRESS_TABLE_H

#include "sbx/map.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INGRESS_MAX_PORTS     64
#define INGRESS_MAX_SANDBOXES 1000000

struct ingress_sandbox {
	atomic_uint refs;
	const char *id;
	const char *address; /* the pod's IP ("" while it has none) */
	const char *ns;	     /* its namespace ("" when the routes file says none) */
	const char *phase;   /* "Running", "Pending", ... */
	bool ready;	     /* traffic may go to it */
	size_t n_ports;
	uint16_t ports[INGRESS_MAX_PORTS];
};

/* What a sandbox entry is made from (strings are copied). */
struct ingress_sandbox_spec {
	const char *id, *address, *ns, *phase;
	bool ready;
	size_t n_ports;
	const uint16_t *ports;
};

struct ingress_table {
	atomic_uint refs;
	uint64_t generation; /* counts the snapshots made */
	struct sbx_map by_id;
};

struct ingress_table *ingress_table_new(void);
/* A new table with the same entries, generation + 1. */
struct ingress_table *ingress_table_clone(const struct ingress_table *t);
struct ingress_table *ingress_table_ref(struct ingress_table *t);
void ingress_table_unref(struct ingress_table *t);

/* Adds or replaces the entry for s->id: 0, -EINVAL (an id that is not a
 * DNS label, too many ports, an address that is not an IP), -E2BIG, -ENOMEM. */
int ingress_table_put(struct ingress_table *t, const struct ingress_sandbox_spec *s);
void ingress_table_remove(struct ingress_table *t, const char *id);
const struct ingress_sandbox *ingress_table_get(const struct ingress_table *t, const char *id);
size_t ingress_table_count(const struct ingress_table *t);

bool ingress_sandbox_has_port(const struct ingress_sandbox *s, unsigned port);

/* A routes file's document (see docs/ingress.md):
 *   sandboxes: [{id, address, ports: [...], ready: true, namespace: ""}]
 * into a new table; NULL with the reason (naming the entry) in err. */
struct ingress_table *ingress_routes_load(const json_t *doc, char *err, size_t err_size);

/* The entry a Sandbox object gives (status.id, status.podIP, the Ready
 * condition, the ports its status.endpoints expose). 0, or -ENOENT for a
 * Sandbox without an id yet (not routable). Strings point into obj. */
int ingress_sandbox_from_object(const json_t *obj, struct ingress_sandbox_spec *out,
				uint16_t ports[INGRESS_MAX_PORTS]);

#endif
