/* The /v1/shell group: persistent shell sessions on pseudo-terminals.
 *
 * A session is an interactive bash (sh where there is no bash) on its own
 * PTY, started with forkpty so it has a controlling terminal: job control
 * gives each command its own process group, which is what a kill or a hard
 * timeout stops. The agent never types commands into the terminal: each one
 * is written to a script file in memory (a memfd) and sourced
 * (". /proc/<agent>/fd/<n>"), so cd and export stay
 * in the session, any length works, and nothing is echoed. The shell's
 * prompt is set to a per-session marker carrying $? and $PWD; seeing it
 * means the command is done.
 */
#ifndef SBX_AGENT_SHELL_H
#define SBX_AGENT_SHELL_H

#include "ptyspawn.h"
#include "sbx/map.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

struct sbx_http_req;

struct shell {
	uv_loop_t *loop;
	const char *workspace;
	unsigned max_sessions;
	size_t max_output_bytes;      /* per command, kept in memory */
	unsigned default_no_change_s; /* a session's no-output timeout */
	struct sbx_map sessions;      /* id -> struct session */
	uv_signal_t sigchld;
	struct pty_graveyard graveyard; /* removed shells not reaped yet */
	bool closing;
};

int shell_init(struct shell *sh, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
	       size_t max_output_bytes);
/* Ends every session (SIGHUP, then SIGKILL) and releases the handles. */
void shell_close(struct shell *sh);

void shell_handle_exec(struct sbx_http_req *req, void *arg);
void shell_handle_view(struct sbx_http_req *req, void *arg);
void shell_handle_wait(struct sbx_http_req *req, void *arg);
void shell_handle_kill(struct sbx_http_req *req, void *arg);
void shell_handle_write(struct sbx_http_req *req, void *arg);
void shell_handle_create(struct sbx_http_req *req, void *arg);
void shell_handle_list(struct sbx_http_req *req, void *arg);
void shell_handle_delete(struct sbx_http_req *req, void *arg);
void shell_handle_delete_all(struct sbx_http_req *req, void *arg);
void shell_handle_update(struct sbx_http_req *req, void *arg);
void shell_handle_stats(struct sbx_http_req *req, void *arg);

/* Cuts text over limit characters to its head and tail around a notice;
 * returns a new string (exposed for tests). */
char *shell_truncate(const char *text, size_t len, size_t limit);

#endif
