/* Leader election on a coordination.k8s.io/v1 Lease, so that of several
 * operator replicas one reconciles and the others wait.
 *
 * Every retry interval a candidate reads the Lease; it takes it when it is
 * missing, when it is its own, or when its holder has not renewed it for
 * leaseDurationSeconds. Writes are conditional (create, or PUT with the
 * resourceVersion read), so two candidates never both win. The leader renews
 * every renew interval; when it has not renewed for a whole lease duration
 * (the apiserver unreachable, or another holder) it has lost, and says so
 * once: the program must then stop reconciling (sbx-operator exits, and its
 * Deployment restarts it as a candidate).
 */
#ifndef SBX_OPERATOR_LEADER_H
#define SBX_OPERATOR_LEADER_H

#include <stdbool.h>
#include <uv.h>

struct sbx_kube;
struct leader;

struct leader_opts {
	const char *ns, *name; /* the Lease */
	const char *identity;  /* this candidate, unique among replicas */
	unsigned lease_s;      /* leaseDurationSeconds (10) */
	unsigned renew_s;      /* the leader renews this often (3) */
	unsigned retry_s;      /* candidates look this often (2) */
};

struct leader_handlers {
	void (*on_elected)(void *arg);
	void (*on_lost)(void *arg);
};

int leader_new(uv_loop_t *loop, struct sbx_kube *kube, const struct leader_opts *opts,
	       const struct leader_handlers *h, void *arg, struct leader **out);
int leader_start(struct leader *l);
bool leader_is_leader(const struct leader *l);
/* Stops; a leader's requests in flight are cancelled with the client. */
void leader_free(struct leader *l);

#endif
