/* The ingress's data plane: --workers threads, each with its own libuv loop,
 * its own listeners on the same ports (SO_REUSEPORT: the kernel spreads new
 * connections among them), its own pool of connections to pods and its own
 * held requests. Nothing on the request path is shared but the routing
 * snapshot (immutable, counted) and access control's tickets (locked).
 *
 * The control loop (main.c: discovery, the admin listener, signals) talks to
 * a worker through one async handle and a lock: a new routing snapshot, a
 * certificate reload, a request for its counters, and stop. A worker answers
 * by waking the control loop's notify handle.
 */
#ifndef SBX_INGRESS_WORKER_H
#define SBX_INGRESS_WORKER_H

#include "ingress.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct worker;

struct worker_config {
	struct sbx_http_server_opts server; /* authorize and reuse_port are set here */
	size_t max_body_bytes;		    /* of proxied requests; SIZE_MAX: none */
	struct sbx_http_pool_opts pool;
	struct ingress_opts ingress;
	struct ingress_auth *auth;
	const char *listen, *tls_listen, *tls_cert, *tls_key; /* "" for none */
	uv_async_t *notify;				      /* on the control loop */
};

/* Starts a worker and waits until it listens: 0, or a negative errno with
 * the reason in err (then it has stopped already). */
int worker_start(const struct worker_config *c, int index, struct worker **out, char *err,
		 size_t err_size);
/* Routes by t from now on (a reference is taken). */
void worker_publish(struct worker *w, struct ingress_table *t);
void worker_reload_tls(struct worker *w);
/* Drains: the listeners close, what is open finishes (or is closed at the
 * drain timeout); then the worker is finished. */
void worker_stop(struct worker *w);
/* Asks for the counters as of now; notify fires when they are in. */
void worker_request_snapshot(struct worker *w, uint64_t gen);
/* The counters of request gen (or the last, once finished): false while
 * they are not in yet. */
bool worker_snapshot(struct worker *w, uint64_t gen, struct ingress_snapshot *out);
bool worker_finished(struct worker *w);
/* Waits for the thread to end, and frees the worker. */
void worker_join(struct worker *w);

#endif
