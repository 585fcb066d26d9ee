/* Routing from Sandbox objects: an informer per namespace watched (or one
 * for all namespaces) keeps a working table, id -> pod address, the ports
 * its status.endpoints expose, and readiness. A burst of changes (the events
 * of one read) becomes one new snapshot, published through the callback;
 * nothing on the request path calls the apiserver.
 */
#ifndef SBX_INGRESS_DISCOVERY_H
#define SBX_INGRESS_DISCOVERY_H

#include "table.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct sbx_kube;
struct discovery;

/* Called with each new snapshot (the callee takes its own reference). */
typedef void (*discovery_publish)(struct ingress_table *t, void *arg);

/* namespaces: NULL or empty for every namespace. */
int discovery_new(uv_loop_t *loop, struct sbx_kube *kube, const char *const *namespaces,
		  size_t n_namespaces, discovery_publish publish, void *arg,
		  struct discovery **out);
int discovery_start(struct discovery *d);
void discovery_free(struct discovery *d);
/* Every informer has listed once. */
bool discovery_synced(const struct discovery *d);

#endif
