/* The browser the agent starts itself (--browser-cmd), and POST
 * /v1/browser/restart.
 *
 * With a command, the agent runs it (sh -c, in the workspace, in a session
 * of its own, output to the agent's stderr) at start, and again when a
 * hard restart asks: the old one's process group gets SIGTERM, SIGKILL 5 s
 * later, and the answer waits until the new one's DevTools accept
 * connections on --cdp (30 s at most). A browser that exits on its own is
 * logged and started again by the next hard restart. The command finds
 * the agent's forward proxy in SBX_FORWARD_PROXY (http://127.0.0.1:port),
 * for --proxy-server. A soft restart only
 * drops the DevTools connection and the page sessions, which the next
 * operation opens anew; without --browser-cmd that is all a restart can
 * do, and a hard one is refused (409). When the agent stops, the browser's
 * group is killed. */
#ifndef SBX_AGENT_LAUNCHER_H
#define SBX_AGENT_LAUNCHER_H

#include <stdbool.h>
#include <uv.h>

struct sbx_http_req;
struct automation;
struct browser_run;

struct launcher {
	uv_loop_t *loop;
	const char *cmd;      /* NULL: the browser is not the agent's */
	const char *cdp_addr; /* where its DevTools listen ("ip:port") */
	const char *workspace;
	const char *proxy_url; /* the forward proxy: SBX_FORWARD_PROXY in its environment */
	struct automation *automation;
	struct browser_run *run;      /* the browser now, NULL if none */
	struct sbx_http_req *waiting; /* a hard restart's answer */
	uv_timer_t timer;	      /* the kill's escalation, the DevTools poll */
	uv_tcp_t *probe;	      /* a connect to the DevTools port in flight */
	uint64_t deadline_ms;
	unsigned long starts;
	bool killing; /* the old browser is being stopped for a restart */
	bool closing;
};

void launcher_init(struct launcher *l, uv_loop_t *loop, const char *cmd, const char *cdp_addr,
		   const char *workspace, struct automation *automation);
/* Starts the browser when there is a command: 0, or a negative errno. */
int launcher_start(struct launcher *l);
void launcher_close(struct launcher *l);

void launcher_handle_restart(struct sbx_http_req *req, void *arg);

#endif
