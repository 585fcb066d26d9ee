/* What the sandbox is: GET /v1/sandbox (the context the SDK validates),
 * GET /v1/ping. Owns the facts gathered at start (user, home, runtimes found
 * by running their --version once, tools on PATH). */
#ifndef SBX_AGENT_CONTEXT_H
#define SBX_AGENT_CONTEXT_H

#include "sbx/http.h"

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

struct context_waiter {
	struct sbx_http_req *req;
	sbx_http_handler fn;
	void *arg;
};

struct context {
	uv_loop_t *loop;
	char *home;
	char *workspace;
	char *user;
	json_t *runtime; /* {"python": [ToolSpec], "nodejs": [ToolSpec]} */
	json_t *utils;	 /* [ToolCategory]; NULL until first asked for */
	bool gathered;	 /* the probes have been started */
	unsigned probes; /* --version runs still going */
	/* requests held until the probes are done */
	struct context_waiter waiting[64];
	unsigned n_waiting;
};

/* workspace NULL means the home folder. */
int context_init(struct context *ctx, uv_loop_t *loop, const char *workspace);
/* Call after the loop has stopped (probes hold handles). */
void context_release(struct context *ctx);

/* The runtimes are known a moment after they are first asked for (their
 * --version runs, at most PROBE_TIMEOUT_MS). Starts the probes if they have
 * not run; true if req was held and fn(req, arg) will be called once they are
 * done (or never, if the client goes first); false: answer now. */
bool context_defer(struct context *ctx, struct sbx_http_req *req, sbx_http_handler fn, void *arg);

void context_handle_sandbox(struct sbx_http_req *req, void *arg);
void context_handle_ping(struct sbx_http_req *req, void *arg);

/* Listening TCP ports from /proc/net/tcp{,6}, as ["8080", ...]. */
json_t *context_listening_ports(void);

#endif
