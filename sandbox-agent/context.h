/* What the sandbox is: GET /v1/sandbox (the context the SDK validates),
 * GET /v1/ping. Owns the facts gathered at start (user, home, runtimes found
 * by running their --version once, tools on PATH). */
#ifndef SBX_AGENT_CONTEXT_H
#define SBX_AGENT_CONTEXT_H

#include <jansson.h>
#include <uv.h>

struct sbx_http_req;

struct context {
	uv_loop_t *loop;
	char *home;
	char *workspace;
	char *user;
	json_t *runtime; /* {"python": [ToolSpec], "nodejs": [ToolSpec]} */
	json_t *utils;	 /* [ToolCategory] */
	unsigned probes; /* --version runs still going */
	/* GET /v1/sandbox requests held until the probes are done */
	struct sbx_http_req *waiting[64];
	unsigned n_waiting;
};

/* workspace NULL means the home folder. Starts the runtime probes. */
int context_init(struct context *ctx, uv_loop_t *loop, const char *workspace);
/* Call after the loop has stopped (probes hold handles). */
void context_release(struct context *ctx);

void context_handle_sandbox(struct sbx_http_req *req, void *arg);
void context_handle_ping(struct sbx_http_req *req, void *arg);

/* Listening TCP ports from /proc/net/tcp{,6}, as ["8080", ...]. */
json_t *context_listening_ports(void);

#endif
