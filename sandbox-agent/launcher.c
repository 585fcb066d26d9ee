/* The agent's own browser and restarts (see launcher.h). */
#include "launcher.h"

#include "api.h"
#include "automation.h"
#include "ptyspawn.h"
#include "sbx/alloc.h"
#include "sbx/http.h"
#include "sbx/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KILL_GRACE_MS  5000
#define READY_WAIT_MS  30000
#define PROBE_EVERY_MS 100

struct browser_run {
	uv_process_t proc;
	struct launcher *l; /* NULL once the launcher has let it go */
	bool exited;
};

static void fail_waiting(struct launcher *l, int status, const char *message);

static void run_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void run_exit(uv_process_t *p, int64_t status, int sig)
{
	struct browser_run *r = p->data;
	struct launcher *l = r->l;

	r->exited = true;
	/* Whatever it left in its group goes with it. */
	kill(-p->pid, SIGKILL);
	uv_close((uv_handle_t *)p, run_closed);
	if (!l)
		return;
	l->run = NULL;
	if (l->killing) {
		/* A hard restart: the old one is gone, the next one starts. */
		l->killing = false;
		uv_timer_stop(&l->timer);
		launcher_start(l);
		return;
	}
	sbx_log_warn("the browser exited", SBX_LI("status", (long long)status),
		     SBX_LI("signal", sig));
	fail_waiting(l, 502, "the browser exited before its DevTools came up");
}

static void fail_waiting(struct launcher *l, int status, const char *message)
{
	struct sbx_http_req *req = l->waiting;

	l->waiting = NULL;
	uv_timer_stop(&l->timer);
	if (req) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond_error(req, status, message);
	}
}

/* ---- waiting for DevTools ---------------------------------------------------------- */

static void probe_closed(uv_handle_t *h)
{
	sbx_free(h);
}

static void poll_devtools(uv_timer_t *t);

static void probed(uv_connect_t *c, int status)
{
	struct launcher *l = c->data;
	uv_tcp_t *tcp = (uv_tcp_t *)c->handle;
	struct sbx_http_req *req;

	sbx_free(c);
	if (l->probe != tcp)
		return; /* launcher_close closed it */
	l->probe = NULL;
	uv_close((uv_handle_t *)tcp, probe_closed);
	if (status < 0) {
		if (uv_now(l->loop) >= l->deadline_ms) {
			fail_waiting(l, 504, "the browser's DevTools did not come up in 30 s");
			return;
		}
		uv_timer_start(&l->timer, poll_devtools, PROBE_EVERY_MS, 0);
		return;
	}
	automation_reconnect(l->automation);
	if ((req = l->waiting)) {
		l->waiting = NULL;
		sbx_http_on_abort(req, NULL, NULL);
		api_ok(req, "Browser restarted",
		       json_pack("{s:s, s:i}", "mode", "hard", "pid",
				 l->run ? l->run->proc.pid : 0));
	}
	sbx_log_info("browser ready", SBX_LS("cdp", l->cdp_addr));
}

static void poll_devtools(uv_timer_t *t)
{
	struct launcher *l = t->data;
	struct sockaddr_storage sa;
	char host[64];
	const char *colon = strrchr(l->cdp_addr, ':');
	uv_connect_t *c;
	int rc;

	snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - l->cdp_addr) : 0, l->cdp_addr);
	if (!colon || (uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)&sa) &&
		       uv_ip6_addr(host, atoi(colon + 1), (struct sockaddr_in6 *)&sa))) {
		fail_waiting(l, 500, "--cdp is not an IP address and port");
		return;
	}
	l->probe = sbx_calloc(1, sizeof(*l->probe));
	c = sbx_calloc(1, sizeof(*c));
	if (!l->probe || !c) {
		sbx_free(l->probe);
		sbx_free(c);
		l->probe = NULL;
		fail_waiting(l, 503, "out of memory");
		return;
	}
	uv_tcp_init(l->loop, l->probe);
	c->data = l;
	if ((rc = uv_tcp_connect(c, l->probe, (struct sockaddr *)&sa, probed))) {
		sbx_free(c);
		uv_close((uv_handle_t *)l->probe, probe_closed);
		l->probe = NULL;
		uv_timer_start(&l->timer, poll_devtools, PROBE_EVERY_MS, 0);
	}
}

/* ---- the process ------------------------------------------------------------------- */

int launcher_start(struct launcher *l)
{
	char *args[] = { "/bin/sh", "-c", (char *)l->cmd, NULL };
	uv_process_options_t o = { .file = "/bin/sh",
				   .args = args,
				   .cwd = l->workspace,
				   .exit_cb = run_exit,
				   .flags = UV_PROCESS_DETACHED };
	uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE },
					  { .flags = UV_INHERIT_FD, .data.fd = 2 },
					  { .flags = UV_INHERIT_FD, .data.fd = 2 } };
	char proxy[128];
	const char *changes[] = { proxy, NULL }, *none[] = { NULL };
	struct browser_run *r;
	int rc;

	if (!l->cmd || l->closing)
		return 0;
	/* The forward proxy, for --proxy-server=$SBX_FORWARD_PROXY. */
	snprintf(proxy, sizeof(proxy), "SBX_FORWARD_PROXY=%s", l->proxy_url ? l->proxy_url : "");
	if (!(r = sbx_calloc(1, sizeof(*r))) || !(o.env = pty_env(l->proxy_url ? changes : none))) {
		sbx_free(r);
		fail_waiting(l, 503, "out of memory");
		return -ENOMEM;
	}
	o.stdio = stdio;
	o.stdio_count = 3;
	r->l = l;
	r->proc.data = r;
	rc = uv_spawn(l->loop, &r->proc, &o);
	pty_env_free(o.env);
	if (rc) {
		char msg[160];

		uv_close((uv_handle_t *)&r->proc, run_closed);
		snprintf(msg, sizeof(msg), "cannot start the browser: %s", uv_strerror(rc));
		sbx_log_error("cannot start the browser", SBX_LS("error", uv_strerror(rc)));
		fail_waiting(l, 500, msg);
		return rc;
	}
	l->run = r;
	l->starts++;
	sbx_log_info("browser started", SBX_LI("pid", r->proc.pid), SBX_LS("cdp", l->cdp_addr));
	if (l->waiting) {
		l->deadline_ms = uv_now(l->loop) + READY_WAIT_MS;
		uv_timer_start(&l->timer, poll_devtools, PROBE_EVERY_MS, 0);
	}
	return 0;
}

static void kill_hard(uv_timer_t *t)
{
	struct launcher *l = t->data;

	if (l->run)
		kill(-l->run->proc.pid, SIGKILL); /* run_exit follows */
}

static void restart_gone(struct sbx_http_req *req, void *arg)
{
	struct launcher *l = arg;

	(void)req;
	l->waiting = NULL; /* the restart goes on; nobody waits for it */
}

void launcher_handle_restart(struct sbx_http_req *req, void *arg)
{
	static const char *const policies[] = { "url_blocklist", "url_allowlist",
						"allow_file_selection_dialogs", "locale" };
	struct launcher *l = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *mode = "hard";

	if (!body || !api_opt_string(req, body, "mode", &mode))
		goto out;
	if (!mode)
		mode = "hard";
	if (strcmp(mode, "soft") && strcmp(mode, "hard")) {
		api_invalid(req, "body.mode", "Input should be 'soft' or 'hard'", "enum");
		goto out;
	}
	for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
		json_t *v = json_object_get(body, policies[i]);

		if (v && !json_is_null(v)) {
			char msg[160];

			snprintf(msg, sizeof(msg),
				 "browser policies (%s) are not applied by sbx-agent: set them in "
				 "the image's Chromium policy folder",
				 policies[i]);
			sbx_http_respond_error(req, 501, msg);
			goto out;
		}
	}
	if (!l->cdp_addr) {
		sbx_http_respond_error(
			req, 503, "no browser in this sandbox: start sbx-agent with --cdp ADDR");
		goto out;
	}
	if (!strcmp(mode, "soft")) {
		automation_reconnect(l->automation);
		api_ok(req, "Browser session reconnected", json_pack("{s:s}", "mode", "soft"));
		goto out;
	}
	if (!l->cmd) {
		sbx_http_respond_error(
			req, 409,
			"the agent did not start this browser (no --browser-cmd): only "
			"a soft restart is possible");
		goto out;
	}
	if (l->waiting) {
		sbx_http_respond_error(req, 409, "a restart is already under way");
		goto out;
	}
	l->waiting = req;
	sbx_http_on_abort(req, restart_gone, l);
	automation_reconnect(l->automation);
	if (l->run) {
		l->killing = true;
		kill(-l->run->proc.pid, SIGTERM); /* run_exit starts the next */
		uv_timer_start(&l->timer, kill_hard, KILL_GRACE_MS, 0);
	} else {
		launcher_start(l);
	}
out:
	json_decref(body);
}

void launcher_init(struct launcher *l, uv_loop_t *loop, const char *cmd, const char *cdp_addr,
		   const char *workspace, struct automation *automation)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->cmd = cmd && *cmd ? cmd : NULL;
	l->cdp_addr = cdp_addr;
	l->workspace = workspace;
	l->automation = automation;
	uv_timer_init(loop, &l->timer);
	l->timer.data = l;
}

void launcher_close(struct launcher *l)
{
	if (l->closing)
		return;
	l->closing = true;
	fail_waiting(l, 503, "the agent is stopping");
	if (l->probe) {
		uv_close((uv_handle_t *)l->probe, probe_closed);
		l->probe = NULL; /* its connect callback sees it is not ours */
	}
	if (l->run) {
		kill(-l->run->proc.pid, SIGKILL);
		l->run->l = NULL;
		l->run = NULL;
	}
	uv_close((uv_handle_t *)&l->timer, NULL);
}
