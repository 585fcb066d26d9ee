/* The WebSocket terminal, GET /v1/shell/ws: an interactive bash on its own
 * pseudo-terminal, its bytes carried in JSON text frames.
 *
 *   client -> agent   {"type":"input","data":"ls\n"}
 *                     {"type":"resize","data":{"cols":120,"rows":40}}
 *                     {"type":"pong", ...}
 *   agent -> client   {"type":"session_id","data":ID}  then  {"type":"ready",...}
 *                     (or {"type":"terminal_restored",...} on ?session_id=ID)
 *                     {"type":"output","data":TEXT}
 *                     {"type":"ping","data":MS,"timestamp":MS} every 30 s
 *                     {"type":"error","data":MESSAGE}
 *
 * A terminal outlives its connection: ?session_id= attaches to it again
 * (several viewers may watch one terminal; each gets the output). Without a
 * viewer it is closed after an idle limit; when its shell exits, viewers get
 * the last output and a normal close. Output is paced by the slowest viewer:
 * the terminal is not read while one is behind, so nothing is dropped.
 * /terminal is a small page on that WebSocket; /v1/shell/terminal-url hands
 * out its address for a new terminal.
 */
#ifndef SBX_AGENT_TERMINAL_H
#define SBX_AGENT_TERMINAL_H

#include "ptyspawn.h"
#include "sbx/map.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;
struct auth;

struct terminals {
	uv_loop_t *loop;
	const char *workspace;
	unsigned max;
	uint64_t idle_ms; /* without a viewer */
	struct sbx_map all;
	uv_timer_t tick;		/* pings and idle checks */
	uv_signal_t sigchld;		/* a shell ended: reap it */
	struct auth *auth;		/* for the ticket in terminal URLs */
	struct pty_graveyard graveyard; /* killed shells not reaped yet */
	bool closing;
};

int terminals_init(struct terminals *ts, uv_loop_t *loop, const char *workspace, unsigned max);
void terminals_close(struct terminals *ts);

void terminals_handle_ws(struct sbx_http_req *req, void *arg);
/* GET /v1/shell/terminal-url: opens a terminal, answers the URL of the
 * terminal page for it (with a single-use ticket when auth is on). */
void terminals_handle_url(struct sbx_http_req *req, void *arg);
/* GET /terminal: the page (public: it holds nothing; its WebSocket is
 * authorized like any request). */
void terminals_handle_page(struct sbx_http_req *req, void *arg);

#endif
