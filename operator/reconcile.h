/* The reconciler: informers on Sandboxes and on the Pods, Services and
 * NetworkPolicies they own (label sbx.dev/sandbox), a work queue of Sandbox
 * keys ("namespace/name"), and for each key one pass that makes the children
 * what sandbox.c says they should be and writes the status when it changed.
 *
 * A pass reads only the informers' caches and writes only what differs: a
 * child whose spec-hash annotation matches is left alone, and the status is
 * written only when it says something new. Children are written with
 * server-side apply (field manager sbx-operator). A child that exists but is
 * not controlled by the Sandbox is never touched; the Sandbox's Ready
 * condition says so. A Pod whose new spec the apiserver refuses as an
 * immutable change is deleted, and the next pass creates it anew.
 */
#ifndef SBX_OPERATOR_RECONCILE_H
#define SBX_OPERATOR_RECONCILE_H

#include "sandbox.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct sbx_kube;
struct reconciler;

/* Upper bounds (seconds) of the pass-duration histogram's buckets. */
#define RECONCILER_BUCKETS 9
extern const double reconciler_bucket_bounds[RECONCILER_BUCKETS];

struct reconciler_stats {
	uint64_t passes, failures, writes, status_writes, conflicts, deletes, events;
	uint64_t egress_probes;			   /* GETs of sidecars' /readyz */
	uint64_t pass_us_total;			   /* summed duration of passes */
	uint64_t pass_buckets[RECONCILER_BUCKETS]; /* passes no longer than each bound */
};

/* Sandbox phases as counted by reconciler_phases; the last, "", is a
 * Sandbox without a status yet. */
#define RECONCILER_PHASES 6
extern const char *const reconciler_phase_names[RECONCILER_PHASES];

/* settings must outlive the reconciler. workers: keys processed at once.
 * namespaces: NULL-terminated list of namespaces to watch (NULL or empty: all
 * of them); Sandboxes elsewhere are not seen at all. */
int reconciler_new(uv_loop_t *loop, struct sbx_kube *kube, const struct sandbox_settings *settings,
		   unsigned workers, const char *const *namespaces, struct reconciler **out);
int reconciler_start(struct reconciler *r);
/* Every informer has listed once (the /readyz condition). */
bool reconciler_synced(const struct reconciler *r);
size_t reconciler_sandboxes(const struct reconciler *r);
/* Bytes the cached Sandboxes and children take (compressed text). */
size_t reconciler_cache_bytes(const struct reconciler *r);
/* The cached Sandboxes by status.phase, in reconciler_phase_names order. */
void reconciler_phases(const struct reconciler *r, size_t counts[RECONCILER_PHASES]);
size_t reconciler_queue_len(const struct reconciler *r);
const struct reconciler_stats *reconciler_stats(const struct reconciler *r);
/* Shutdown is two steps around sbx_kube_free: reconciler_stop frees the
 * informers (they need the client to cancel their watches); then the client
 * goes, cancelling the passes' requests without calling them back; then
 * reconciler_free frees those passes and the queue. */
void reconciler_stop(struct reconciler *r);
void reconciler_free(struct reconciler *r);

#endif
