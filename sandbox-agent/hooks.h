/* Lifecycle hooks: /v1/sandbox/hooks. Commands registered for the
 * "shutdown" event run when the agent is asked to stop (SIGTERM, SIGINT),
 * before it closes its sessions and its listener: by priority (lower
 * first), those of one priority side by side, each in its own process
 * group with `sh -c` in the workspace, killed with everything it started
 * after its timeout. A hook given by --shutdown-hook (source "env") cannot
 * be removed through the API. At most HOOKS_MAX hooks. */
#ifndef SBX_AGENT_HOOKS_H
#define SBX_AGENT_HOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#define HOOKS_MAX 64

struct sbx_http_req;
struct hook_run;

struct hook {
	char name[65];
	char *command;
	double timeout_s;
	long priority;
	bool from_env;
};

struct hooks {
	uv_loop_t *loop;
	const char *workspace;
	struct hook list[HOOKS_MAX];
	unsigned n;
	/* running: the priority being run, its processes, then done(arg) */
	bool running;
	long level;
	unsigned live;
	void (*done)(void *arg);
	void *done_arg;
};

/* env_command: the --shutdown-hook command, or NULL. */
int hooks_init(struct hooks *h, uv_loop_t *loop, const char *workspace, const char *env_command);
void hooks_release(struct hooks *h);

/* Runs the shutdown hooks, then done(arg) (at once when there are none). */
void hooks_run_shutdown(struct hooks *h, void (*done)(void *arg), void *arg);

void hooks_handle_register(struct sbx_http_req *req, void *arg);
void hooks_handle_list(struct sbx_http_req *req, void *arg);
void hooks_handle_remove(struct sbx_http_req *req, void *arg);

#endif
