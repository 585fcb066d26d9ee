/* The /v1/bash group: commands on pipes, stdout and stderr apart, read by
 * byte offsets. A session is API-level state only (its working directory);
 * each command is its own `bash -c` in its own process group, so `cd` and
 * `export` inside a command do not carry over (unlike /v1/shell). Several
 * commands may run in one session at once; the session's output is that of
 * its latest command unless a command_id is given. */
#ifndef SBX_AGENT_BASH_H
#define SBX_AGENT_BASH_H

#include "sbx/map.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct sbx_http_req;

struct bash {
	uv_loop_t *loop;
	const char *workspace;
	unsigned max_sessions;
	size_t max_output_bytes; /* kept per stream and command */
	struct sbx_map sessions;
	bool closing;
};

int bash_init(struct bash *b, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
	      size_t max_output_bytes);
void bash_close(struct bash *b);

void bash_handle_exec(struct sbx_http_req *req, void *arg);
void bash_handle_output(struct sbx_http_req *req, void *arg);
void bash_handle_write(struct sbx_http_req *req, void *arg);
void bash_handle_kill(struct sbx_http_req *req, void *arg);
void bash_handle_sessions(struct sbx_http_req *req, void *arg);
void bash_handle_create(struct sbx_http_req *req, void *arg);
void bash_handle_close(struct sbx_http_req *req, void *arg);

#endif
