/* sbx-ingress's state, shared by its modules: one per worker loop.
 *
 * A request on the public listener is routed (route.c), looked up in the
 * worker's routing table snapshot (table.c), and proxied (proxy.c) on the
 * HTTP core's client pool: streamed both ways, or tunnelled when it
 * switches protocols. A request for a sandbox that is not ready yet, or
 * whose port refuses, is held and tried again until --hold-timeout-ms.
 */
#ifndef SBX_INGRESS_H
#define SBX_INGRESS_H

#include "auth.h"
#include "route.h"
#include "table.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/http_client.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct proxy;

struct ingress_opts {
	const char *base_domain;      /* the host form's domain; NULL: off */
	uint64_t hold_timeout_ms;     /* 0: answer 503/502 at once */
	uint64_t connect_timeout_ms;  /* to a pod's port */
	uint64_t response_timeout_ms; /* the pod is silent while awaited (504) */
	/* Access control is on: the gateway's credentials (Authorization,
	 * ?ticket=) are not passed to pods. */
	bool strip_credentials;
	/* X-Forwarded-For/-Proto/-Host from the client are kept and added to
	 * (the ingress is behind a proxy that sets them); otherwise replaced. */
	bool trust_forwarded;
	bool access_log;
};

/* The forms a request came in by, and "none" for the ingress's own paths. */
#define INGRESS_FORMS		4
#define INGRESS_LATENCY_BUCKETS 12

enum ingress_backend_error {
	BACKEND_REFUSED,
	BACKEND_TIMEOUT,
	BACKEND_RESET,
	BACKEND_PROTOCOL,
	BACKEND_OTHER,
	BACKEND_ERRORS
};

struct ingress_stats {
	uint64_t requests[INGRESS_FORMS][6]; /* by form and status class */
	uint64_t latency[INGRESS_LATENCY_BUCKETS + 1];
	double latency_sum;
	uint64_t backend_errors[BACKEND_ERRORS];
	uint64_t held_total, hold_expired;
	unsigned held_now, proxied_now;
	uint64_t tunnels_total;
};

extern const double ingress_latency_bounds[INGRESS_LATENCY_BUCKETS];

struct ingress {
	uv_loop_t *loop;
	struct ingress_opts o;
	struct ingress_auth *auth; /* shared by the workers */
	struct sbx_http_server *http;
	struct sbx_http_pool *pool;
	struct ingress_table *table; /* the snapshot this worker routes by */
	struct proxy *held;	     /* requests waiting for their sandbox */
	uv_timer_t hold_timer;
	/* Answers whose head is in but not sent yet: it goes with the first
	 * body bytes, or at the start of the next loop turn without them. */
	struct proxy *heads;
	uv_timer_t heads_timer;
	struct ingress_stats st;
	struct sbx_spares proxies; /* freed proxy states, for the next requests */
};

int ingress_init(struct ingress *in, uv_loop_t *loop, const struct ingress_opts *o,
		 const struct sbx_http_pool_opts *pool);
/* Aborts held requests (503) and frees the pool; the loop closes the rest. */
void ingress_release(struct ingress *in);
/* Routes by t from now on (a reference is taken; the old one dropped), and
 * tries the held requests again. */
void ingress_set_table(struct ingress *in, struct ingress_table *t);

/* The public listeners' one route (a stream_body catch-all route, arg: the
 * worker's struct ingress), and their authorize check (the same arg). */
void ingress_dispatch(struct sbx_http_req *req, void *arg);
bool ingress_authorize(struct sbx_http_req *req, void *arg);

/* The size of a proxied request's state (for in->proxies). */
extern const size_t ingress_proxy_size;
/* Proxies req to the sandbox port t names. */
void ingress_proxy(struct ingress *in, struct sbx_http_req *req, const struct ingress_target *t);

/* Counts an answered request (form INGRESS_FORMS - 1: none). */
void ingress_count(struct ingress *in, int form, int status, uint64_t started_ms);

/* A worker's counters at one moment, taken on its own thread, and their
 * sum over workers. */
struct ingress_snapshot {
	struct ingress_stats st;
	struct sbx_http_stats http;
	struct sbx_http_pool_stats pool;
};

void ingress_snapshot(const struct ingress *in, struct ingress_snapshot *out);
void ingress_snapshot_add(struct ingress_snapshot *sum, const struct ingress_snapshot *one);
/* The Prometheus samples of a (summed) snapshot; routes: the table's size. */
void ingress_metrics(struct sbx_buf *b, const struct ingress_snapshot *s, size_t routes);

#endif
