/* Asks each Sandbox's egress sidecar which policy it enforces: GET
 * http://<pod IP>:15380/readyz ({policyHash, policyGeneration,
 * policySource}), so the Sandbox's status can say when a rule change has
 * reached the running pod (the kubelet updates a ConfigMap volume about a
 * minute after the ConfigMap changes).
 *
 * One GET at a time per Sandbox, with libcurl in libuv's thread pool (a 2 s
 * timeout), and not more often than every few seconds: a Sandbox is asked
 * while its status is not "applied", by the reconcile pass that writes it.
 * What was seen is kept per Sandbox and pod uid (a new pod starts over).
 */
#ifndef SBX_OPERATOR_EGRESS_PROBE_H
#define SBX_OPERATOR_EGRESS_PROBE_H

#include "sandbox.h"

#include <stdint.h>
#include <uv.h>

struct egress_probe;

/* answered runs on the loop after each GET (whatever its result), with the
 * Sandbox's key: the reconciler queues a pass. */
int egress_probe_new(uv_loop_t *loop, void (*answered)(const char *key, void *arg), void *arg,
		     struct egress_probe **out);
/* Stops asking; GETs in flight finish in the pool and are dropped. */
void egress_probe_free(struct egress_probe *ep);

/* What the sidecar of pod_uid last said, or NULL. */
const struct sandbox_egress_seen *egress_probe_seen(struct egress_probe *ep, const char *key,
						    const char *pod_uid);
/* Asks the sidecar at ip unless a GET is in flight or the last was recent:
 * 0 when asked (or in flight), else the milliseconds until it may be. */
uint64_t egress_probe_ask(struct egress_probe *ep, const char *key, const char *pod_uid,
			  const char *ip);
/* The Sandbox is gone. */
void egress_probe_forget(struct egress_probe *ep, const char *key);

unsigned long egress_probe_requests(const struct egress_probe *ep);

#endif
