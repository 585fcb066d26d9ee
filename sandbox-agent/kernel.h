/* Stateful code sessions: one persistent interpreter (python3 or node) per
 * session, so variables, imports and functions survive between calls. They
 * serve the /v1/jupyter and /v1/nodejs groups and /v1/code/execute with stateful.
 *
 * Each interpreter runs a small driver (embedded here, handed over with -c
 * / -e) in its own process group, with four pipes: requests in on fd 3 and
 * replies out on fd 4 (one JSON object per line), and the code's stdout and
 * stderr on fds 1 and 2, so that output from child processes is caught too.
 * After each execution the driver writes a per-interpreter random marker to
 * both streams; output up to the markers belongs to that execution.
 *
 * Executions in one session run one after another (queued). A timeout
 * interrupts the execution (SIGINT to the group: Python's
 * KeyboardInterrupt; Node's vm timeout), keeping the session; if the
 * interpreter does not come back within 3 s its group is killed and the
 * session is gone. Sessions idle past their limit are closed.
 */
#ifndef SBX_AGENT_KERNEL_H
#define SBX_AGENT_KERNEL_H

#include "sbx/map.h"

#include <jansson.h>
#include <stdbool.h>

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;

struct kernels {
	uv_loop_t *loop;
	const char *workspace;
	unsigned max_sessions;
	size_t max_output_bytes; /* per stream and execution */
	uint64_t jupyter_idle_ms;
	struct sbx_map sessions; /* "py:" or "js:" + id -> struct kernel */
	uv_timer_t reaper;
	unsigned long seq;
	bool closing;
};

int kernels_init(struct kernels *ks, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
		 size_t max_output_bytes);
/* Kills every interpreter; the loop then runs until their handles close. */
void kernels_close(struct kernels *ks);

void kernels_handle_jupyter_execute(struct sbx_http_req *req, void *arg);
void kernels_handle_jupyter_create(struct sbx_http_req *req, void *arg);
void kernels_handle_jupyter_info(struct sbx_http_req *req, void *arg);
void kernels_handle_jupyter_list(struct sbx_http_req *req, void *arg);
void kernels_handle_jupyter_delete_all(struct sbx_http_req *req, void *arg);
void kernels_handle_jupyter_delete(struct sbx_http_req *req, void *arg);

void kernels_handle_nodejs_execute(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_create(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_list(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_get(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_update(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_delete(struct sbx_http_req *req, void *arg);
void kernels_handle_nodejs_info(struct sbx_http_req *req, void *arg);

/* /v1/code/execute with stateful: true (body already validated: language
 * python or javascript, code a string). Takes a reference to body. */
void kernels_code_execute(struct kernels *ks, struct sbx_http_req *req, json_t *body,
			  long timeout_s);

#endif
