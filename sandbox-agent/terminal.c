/* The WebSocket terminal (see terminal.h). A terminal owns its shell, its
 * pty master and the list of viewers; a viewer is one WebSocket. */
#define _GNU_SOURCE
#include "terminal.h"

#include "ptyspawn.h"

#include "api.h"
#include "auth.h"
#include "terminal_html.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS		 30000
#define MAX_VIEWERS	 8
#define MAX_INPUT_QUEUED (1u << 20)
#define MAX_MESSAGE	 (1u << 20)

struct terminal;

struct viewer {
	struct sbx_ws *ws;
	struct terminal *t; /* NULL once detached */
	bool behind;	    /* its queue is over the high water mark */
};

struct terminal {
	struct terminals *ts;
	char id[40];
	pid_t pid;
	int master;
	uv_poll_t poll;
	int poll_events;
	bool dead, reaped, removing;
	struct viewer *viewers[MAX_VIEWERS];
	unsigned n_viewers;
	struct sbx_buf input; /* typed, not yet written to the pty */
	char carry[4];	      /* the start of a UTF-8 sequence cut by a read */
	size_t carry_len;
	uint64_t alone_since;  /* loop time the last viewer left (0: watched) */
	struct winsize size;   /* as the last resize asked */
	struct winsize undone; /* the size before it */
	uint64_t watch_until;  /* loop time the size stops being watched (0: not) */
};

/* How long after a resize the size is watched for the shell taking it back:
 * each readline call reads the size and writes it again, so a resize that
 * lands between the two is undone by the shell itself. */
#define RESIZE_WATCH_MS 5000

static void send_json(struct sbx_ws *ws, json_t *msg)
{
	char *text = sbx_json_dumps(msg);

	if (text)
		sbx_ws_send(ws, SBX_WS_TEXT, text, strlen(text));
	sbx_free(text);
	json_decref(msg);
}

static void send_typed(struct sbx_ws *ws, const char *type, const char *data)
{
	send_json(ws, json_pack("{s:s, s:s}", "type", type, "data", data));
}

/* ---- the terminal's life ---------------------------------------------------------- */

static void terminal_update_poll(struct terminal *t);

static void terminal_closed(uv_handle_t *h)
{
	struct terminal *t = h->data;

	sbx_buf_release(&t->input);
	sbx_free(t);
}

static void terminal_reap(struct terminal *t)
{
	int st;

	if (!t->reaped && waitpid(t->pid, &st, WNOHANG) == t->pid) {
		t->reaped = true;
		t->dead = true;
	}
}

/* Ends a terminal: its shell and all on its terminal, and its viewers. */
static void terminal_remove(struct terminal *t, const char *why)
{
	if (t->removing)
		return;
	t->removing = true;
	sbx_map_remove(&t->ts->all, t->id);
	if (!t->dead)
		kill(-t->pid, SIGKILL);
	for (unsigned i = 0; i < t->n_viewers; i++) {
		struct viewer *v = t->viewers[i];

		v->t = NULL;
		sbx_ws_close(v->ws, 1000, why);
	}
	t->n_viewers = 0;
	/* Reaped now if it has ended, else on a later tick: never waited
	 * for on the loop. */
	if (!t->reaped)
		pty_graveyard_add(&t->ts->graveyard, t->pid);
	t->reaped = true;
	uv_poll_stop(&t->poll);
	close(t->master);
	uv_close((uv_handle_t *)&t->poll, terminal_closed);
	sbx_log_info("terminal closed", SBX_LS("session", t->id), SBX_LS("reason", why));
}

/* Hands output to every viewer as an "output" frame; holds back the last
 * bytes of a UTF-8 sequence a read cut in two. */
static void terminal_output(struct terminal *t, const char *data, size_t len)
{
	char buf[16384 + sizeof(t->carry)];
	size_t n = 0, ok;
	json_t *msg;
	char *text;

	memcpy(buf, t->carry, t->carry_len);
	n = t->carry_len;
	memcpy(buf + n, data, len);
	n += len;
	ok = sbx_utf8_valid_prefix(buf, n);
	/* A cut sequence at the end waits for its rest (at most 3 bytes). */
	t->carry_len = 0;
	if (ok < n && n - ok < 4) {
		const unsigned char lead = (unsigned char)buf[ok];
		size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;

		if (need > n - ok && sbx_utf8_valid_prefix(buf + ok, n - ok) == 0 &&
		    (lead & 0xc0) == 0xc0) {
			t->carry_len = n - ok;
			memcpy(t->carry, buf + ok, t->carry_len);
			n = ok;
		}
	}
	if (!n)
		return;
	msg = json_pack("{s:s, s:o}", "type", "output", "data", sbx_json_string_lossy(buf, n));
	text = msg ? sbx_json_dumps(msg) : NULL;
	json_decref(msg);
	if (!text)
		return;
	/* A send may close (and free) its viewer: go over a copy. */
	struct viewer *viewers[MAX_VIEWERS];
	unsigned count = t->n_viewers;

	memcpy(viewers, t->viewers, sizeof(viewers[0]) * count);
	for (unsigned i = 0; i < count; i++) {
		if (sbx_ws_send(viewers[i]->ws, SBX_WS_TEXT, text, strlen(text)) == 1)
			viewers[i]->behind = true; /* still open: 1 is "queued" */
	}
	sbx_free(text);
}

static bool any_behind(const struct terminal *t)
{
	for (unsigned i = 0; i < t->n_viewers; i++)
		if (t->viewers[i]->behind)
			return true;
	return false;
}

/* Puts back a resize the shell undid (see RESIZE_WATCH_MS): readline
 * writes the size just before its prompt, so the shell's output is the
 * moment to look, and before the viewers see it. Only a return to the size
 * before the resize counts as undone; another size set inside the sandbox
 * (stty rows 50) stands, and so does any after the window. */
static void terminal_keep_size(struct terminal *t)
{
	struct winsize now;

	if (!t->watch_until)
		return;
	if (uv_now(t->ts->loop) > t->watch_until) {
		t->watch_until = 0;
		return;
	}
	if (ioctl(t->master, TIOCGWINSZ, &now) == 0 && now.ws_row == t->undone.ws_row &&
	    now.ws_col == t->undone.ws_col)
		ioctl(t->master, TIOCSWINSZ, &t->size); /* SIGWINCH again */
}

static void on_pty(uv_poll_t *p, int status, int events)
{
	struct terminal *t = p->data;
	char buf[16384];
	ssize_t n;

	if (events & UV_WRITABLE) {
		while (t->input.len) {
			n = write(t->master, t->input.data, t->input.len);
			if (n <= 0)
				break;
			sbx_buf_consume(&t->input, (size_t)n);
		}
	}
	if (events & (UV_READABLE | UV_DISCONNECT)) {
		for (;;) {
			n = read(t->master, buf, sizeof(buf));
			if (n > 0) {
				terminal_keep_size(t); /* before the shell reads on */
				terminal_output(t, buf, (size_t)n);
				if (any_behind(t))
					break; /* paced by the slowest viewer */
				continue;
			}
			if (n < 0 && errno == EAGAIN)
				break;
			/* EIO: the shell and all on its terminal are gone. */
			t->dead = true;
			terminal_reap(t);
			terminal_remove(t, "the shell exited");
			return;
		}
	}
	terminal_update_poll(t);
}

static void terminal_update_poll(struct terminal *t)
{
	int want = (any_behind(t) ? 0 : UV_READABLE | UV_DISCONNECT) |
		   (t->input.len ? UV_WRITABLE : 0);

	if (t->removing || want == t->poll_events)
		return;
	t->poll_events = want;
	if (want)
		uv_poll_start(&t->poll, want, on_pty);
	else
		uv_poll_stop(&t->poll);
}

static struct terminal *terminal_start(struct terminals *ts, unsigned cols, unsigned rows,
				       const char **err)
{
	struct winsize wsz = { .ws_col = (unsigned short)(cols ? cols : 80),
			       .ws_row = (unsigned short)(rows ? rows : 24) };
	struct terminal *t;
	int master;
	pid_t pid;

	if (ts->all.count >= ts->max) {
		*err = "too many terminals open";
		return NULL;
	}
	t = sbx_calloc(1, sizeof(*t));
	if (!t) {
		*err = "out of memory";
		return NULL;
	}
	{
		const char *const changes[] = { "TERM=xterm-256color", NULL };
		const char *path = pty_shell();
		const char *const argv[] = { strcmp(path, "/bin/bash") == 0 ? "bash" : "sh", "-i",
					     NULL };
		struct pty_spawn_opts o = {
			.path = path, .argv = argv, .dir = ts->workspace, .size = wsz
		};
		int rc;

		char **env = pty_env(changes);

		o.envp = env;
		rc = env ? pty_spawn(&o, &master, &pid) : -ENOMEM;
		pty_env_free(env);
		if (rc) {
			sbx_free(t);
			*err = "cannot start a shell on a pseudo-terminal";
			return NULL;
		}
	}
	t->ts = ts;
	t->pid = pid;
	t->master = master;
	sbx_random_hex(t->id, 16);
	sbx_buf_init(&t->input, MAX_INPUT_QUEUED);
	uv_poll_init(ts->loop, &t->poll, master);
	t->poll.data = t;
	if (sbx_map_put(&ts->all, t->id, t, NULL)) {
		t->removing = true; /* not in the map */
		kill(-pid, SIGKILL);
		pty_graveyard_add(&ts->graveyard, pid);
		close(master);
		uv_close((uv_handle_t *)&t->poll, terminal_closed);
		*err = "out of memory";
		return NULL;
	}
	terminal_update_poll(t);
	sbx_log_info("terminal opened", SBX_LS("session", t->id), SBX_LI("pid", pid));
	return t;
}

/* ---- viewers ------------------------------------------------------------------------ */

static void viewer_detach(struct viewer *v)
{
	struct terminal *t = v->t;

	if (!t)
		return;
	for (unsigned i = 0; i < t->n_viewers; i++) {
		if (t->viewers[i] == v) {
			t->viewers[i] = t->viewers[--t->n_viewers];
			break;
		}
	}
	v->t = NULL;
	if (!t->n_viewers)
		t->alone_since = uv_now(t->ts->loop);
	terminal_update_poll(t); /* a slow viewer gone may unblock the rest */
}

static void on_ws_message(struct sbx_ws *ws, int opcode, const char *data, size_t len, void *arg)
{
	struct viewer *v = arg;
	struct terminal *t = v->t;
	char err[128];
	json_t *msg;
	const char *type;

	if (!t)
		return;
	msg = sbx_json_loadb(data, len, MAX_MESSAGE, err, sizeof(err));
	type = sbx_json_str(msg, "type");
	if (!type) {
		send_typed(ws, "error", "expected a JSON object with a \"type\"");
	} else if (strcmp(type, "input") == 0) {
		json_t *d = json_object_get(msg, "data");

		if (!json_is_string(d)) {
			send_typed(ws, "error", "input needs \"data\" as a string");
		} else if (sbx_buf_append(&t->input, json_string_value(d), json_string_length(d))) {
			send_typed(ws, "error",
				   "input arrives faster than the terminal takes it; "
				   "this input was not typed");
		} else {
			terminal_update_poll(t);
			on_pty(&t->poll, 0, UV_WRITABLE); /* write at once when it can */
		}
	} else if (strcmp(type, "resize") == 0) {
		json_t *d = json_object_get(msg, "data");
		json_int_t cols = json_integer_value(json_object_get(d ? d : msg, "cols"));
		json_int_t rows = json_integer_value(json_object_get(d ? d : msg, "rows"));
		struct winsize wsz = { .ws_col = (unsigned short)cols,
				       .ws_row = (unsigned short)rows };
		struct winsize before;

		if (cols < 1 || rows < 1 || cols > 10000 || rows > 10000) {
			send_typed(ws, "error", "resize needs cols and rows from 1 to 10000");
		} else if (ioctl(t->master, TIOCGWINSZ, &before) < 0) {
			t->watch_until = 0;
			ioctl(t->master, TIOCSWINSZ, &wsz);
		} else if (before.ws_row == rows && before.ws_col == cols) {
			t->watch_until = 0; /* already so: nothing to watch */
		} else if (ioctl(t->master, TIOCSWINSZ, &wsz) == 0) { /* the shell gets SIGWINCH */
			t->size = wsz;
			t->undone = before;
			t->watch_until = uv_now(t->ts->loop) + RESIZE_WATCH_MS;
		}
	} else if (strcmp(type, "pong") != 0 && strcmp(type, "ping") != 0) {
		send_typed(ws, "error", "unknown message type");
	}
	json_decref(msg);
}

static void on_ws_drain(struct sbx_ws *ws, void *arg)
{
	struct viewer *v = arg;

	v->behind = false;
	if (v->t)
		terminal_update_poll(v->t);
}

static void on_ws_closed(struct sbx_ws *ws, void *arg)
{
	struct viewer *v = arg;

	viewer_detach(v);
	sbx_free(v);
}

void terminals_handle_ws(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_ws_callbacks cb = { on_ws_message, on_ws_closed, on_ws_drain };
	struct terminals *ts = arg;
	char id[64], num[16];
	struct terminal *t = NULL;
	struct viewer *v;
	const char *err = NULL;
	unsigned cols = 0, rows = 0;
	bool restored = false;
	struct sbx_ws *ws;

	if (sbx_http_query(req, "cols", num, sizeof(num)) > 0)
		cols = (unsigned)strtoul(num, NULL, 10);
	if (sbx_http_query(req, "rows", num, sizeof(num)) > 0)
		rows = (unsigned)strtoul(num, NULL, 10);
	if (sbx_http_query(req, "session_id", id, sizeof(id)) > 0) {
		t = sbx_map_get(&ts->all, id);
		restored = t != NULL;
		if (!t)
			err = "Session not found";
		else if (t->n_viewers >= MAX_VIEWERS)
			err = "too many viewers on this terminal";
	}
	v = sbx_calloc(1, sizeof(*v));
	if (!v) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	if (sbx_http_websocket(req, &cb, v, MAX_MESSAGE, &ws)) {
		sbx_free(v);
		return;
	}
	v->ws = ws;
	if (!err && !t)
		t = terminal_start(ts, cols, rows, &err);
	if (err) {
		/* Said inside the WebSocket, where a browser can read it. */
		send_typed(ws, "error", err);
		sbx_ws_close(ws, 1008, err);
		return;
	}
	v->t = t;
	t->viewers[t->n_viewers++] = v;
	t->alone_since = 0;
	send_typed(ws, "session_id", t->id);
	if (restored) {
		char msg[96];

		snprintf(msg, sizeof(msg), "Session %s restored", t->id);
		send_typed(ws, "terminal_restored", msg);
	} else {
		send_typed(ws, "ready", "Terminal ready");
	}
}

void terminals_handle_url(struct sbx_http_req *req, void *arg)
{
	struct terminals *ts = arg;
	char http[600], ws[600], hp[600], ticket[64], url[1024];
	const char *err = NULL;
	struct terminal *t = terminal_start(ts, 0, 0, &err);
	int rc;

	if (!t) {
		api_fail(req, err, NULL);
		return;
	}
	t->alone_since = uv_now(ts->loop); /* closed if nobody comes */
	api_public_base(req, http, sizeof(http), ws, sizeof(ws), hp, sizeof(hp));
	rc = ts->auth ? auth_issue_ticket(ts->auth, ticket, sizeof(ticket)) : -ENOTSUP;
	if (rc && rc != -ENOTSUP) {
		terminal_remove(t, "no ticket for its page");
		api_fail(req, "cannot make a ticket for the terminal page now", NULL);
		return;
	}
	snprintf(url, sizeof(url), "%s/terminal?session_id=%s%s%s", http, t->id,
		 rc ? "" : "&ticket=", rc ? "" : ticket);
	api_ok(req, "Terminal URL", json_string(url));
}

void terminals_handle_page(struct sbx_http_req *req, void *arg)
{
	sbx_http_add_header(req, "Cache-Control", "no-store");
	sbx_http_respond(req, 200, "text/html; charset=utf-8", terminal_html,
			 sizeof(terminal_html) - 1);
}

/* ---- set-up -------------------------------------------------------------------------- */

struct tick_ctx {
	struct terminal *idle[64];
	size_t n;
	uint64_t now;
	json_int_t ms;
	char *ping;
	size_t ping_len;
};

static void tick_one(const char *key, void *value, void *arg)
{
	struct tick_ctx *c = arg;
	struct terminal *t = value;

	terminal_reap(t);
	for (unsigned i = 0; i < t->n_viewers; i++)
		if (c->ping)
			sbx_ws_send(t->viewers[i]->ws, SBX_WS_TEXT, c->ping, c->ping_len);
	if ((t->dead ||
	     (!t->n_viewers && t->alone_since && c->now - t->alone_since >= t->ts->idle_ms)) &&
	    c->n < sizeof(c->idle) / sizeof(c->idle[0]))
		c->idle[c->n++] = t;
}

static void on_tick(uv_timer_t *h)
{
	struct terminals *ts = h->data;
	struct tick_ctx c = { .now = uv_now(ts->loop) };
	struct timespec now;
	json_t *ping;

	clock_gettime(CLOCK_REALTIME, &now);
	c.ms = (json_int_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	ping = json_pack("{s:s, s:I, s:I}", "type", "ping", "data", c.ms, "timestamp", c.ms);
	c.ping = ping ? sbx_json_dumps(ping) : NULL;
	c.ping_len = c.ping ? strlen(c.ping) : 0;
	json_decref(ping);
	sbx_map_foreach(&ts->all, tick_one, &c);
	sbx_free(c.ping);
	pty_graveyard_reap(&ts->graveyard);
	for (size_t i = 0; i < c.n; i++)
		terminal_remove(c.idle[i],
				c.idle[i]->dead ? "the shell exited" : "idle without a viewer");
}

/* A shell that ended after its terminal was removed is reaped as soon as
 * the kernel says so, not at the next tick. */
static void on_sigchld(uv_signal_t *h, int signum)
{
	(void)signum;
	pty_graveyard_reap(&((struct terminals *)h->data)->graveyard);
}

int terminals_init(struct terminals *ts, uv_loop_t *loop, const char *workspace, unsigned max)
{
	memset(ts, 0, sizeof(*ts));
	ts->loop = loop;
	ts->workspace = workspace;
	ts->max = max;
	ts->idle_ms = 10 * 60 * 1000;
	sbx_map_init(&ts->all, max + 1);
	uv_timer_init(loop, &ts->tick);
	ts->tick.data = ts;
	uv_timer_start(&ts->tick, on_tick, TICK_MS, TICK_MS);
	uv_unref((uv_handle_t *)&ts->tick);
	uv_signal_init(loop, &ts->sigchld);
	ts->sigchld.data = ts;
	uv_signal_start(&ts->sigchld, on_sigchld, SIGCHLD);
	uv_unref((uv_handle_t *)&ts->sigchld);
	return 0;
}

void terminals_close(struct terminals *ts)
{
	struct terminal *t;

	if (ts->closing)
		return;
	ts->closing = true;
	while ((t = sbx_map_pop(&ts->all)))
		terminal_remove(t, "the agent is stopping");
	uv_close((uv_handle_t *)&ts->tick, NULL);
	uv_close((uv_handle_t *)&ts->sigchld, NULL);
	sbx_map_release(&ts->all);
	pty_graveyard_release(&ts->graveyard);
}
