/* The /v1/code group: run a piece of Python or JavaScript and return what it
 * printed. Each run writes the code to a file and starts python3 / node on
 * it in its own process group, in the workspace (or cwd), with stdout and
 * stderr on separate pipes; a timeout kills the group. Python errors come
 * back with their traceback. With stateful (or a session_id) the code runs
 * in a kept interpreter instead (kernel.h). */
#ifndef SBX_AGENT_CODE_H
#define SBX_AGENT_CODE_H

#include <stddef.h>
#include <uv.h>

struct context;
struct kernels;
struct sbx_http_req;

struct code {
	uv_loop_t *loop;
	const char *workspace;
	struct context *ctx;	 /* runtime versions for /v1/code/info */
	char dir[256];		 /* code files */
	size_t max_output_bytes; /* per stream */
	unsigned max_running;
	unsigned running;
	unsigned long seq;
	struct kernels *kernels; /* stateful execution */
};

int code_init(struct code *c, uv_loop_t *loop, const char *workspace, struct context *ctx,
	      size_t max_output_bytes, unsigned max_running);
void code_release(struct code *c);

void code_handle_execute(struct sbx_http_req *req, void *arg);
void code_handle_info(struct sbx_http_req *req, void *arg);

#endif
