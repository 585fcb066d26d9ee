/* The DevTools client (see cdp.h).
 *
 * A connection goes IDLE -> FINDING (GET /json/version on the thread pool,
 * for the browser's WebSocket address) -> CONNECTING -> HANDSHAKE (our
 * Upgrade out, the 101 in) -> OPEN, and back to IDLE when it fails or
 * closes. Frames are wslay's (client side, masked); bytes read go into a
 * buffer that wslay's recv callback drains, bytes it sends are gathered
 * and written once per turn.
 */
#define _GNU_SOURCE
#include "cdp.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define MAX_MESSAGE    (64u << 20) /* a full-page screenshot, in base64 */
#define MAX_HEAD       16384
#define FIND_TIMEOUT_S 10

enum cdp_state { C_IDLE, C_FINDING, C_CONNECTING, C_HANDSHAKE, C_OPEN };

struct call {
	struct cdp *c;
	struct call *next;
	uint64_t id;
	char *text; /* the command, until it is sent */
	cdp_reply_cb cb;
	void *arg;
	uv_timer_t timer;
	char error[200];
	bool answered;
};

struct find {
	uv_work_t work;
	struct cdp *c; /* NULL once the client is freed */
	char addr[256];
	char ws_url[512];
	char error[200];
};

/* The socket, apart: it closes after the client may be gone. */
struct link {
	uv_tcp_t tcp;
	uv_connect_t connect;
	struct cdp *c; /* NULL once the connection is over */
};

struct cdp {
	uv_loop_t *loop;
	char addr[256];
	cdp_event_cb on_event;
	cdp_lost_cb on_lost;
	void *arg;
	enum cdp_state state;
	struct find *find;
	struct link *link;
	char path[512]; /* /devtools/browser/<id> */
	char key[32];
	struct sbx_buf in; /* read, not yet taken by wslay */
	size_t in_off;
	struct sbx_buf out; /* what wslay sent this turn */
	wslay_event_context_ptr ws;
	uint64_t next_id;
	struct call *calls; /* sent or waiting to be, oldest first */
	bool freed;
	bool in_recv;	    /* inside wslay_event_recv: no sending, no freeing */
	const char *broken; /* why the connection must end, once out of wslay */
};

static void lost(struct cdp *c, const char *why);
static void destroy(struct cdp *c);

/* ---- calls -------------------------------------------------------------------------- */

static void call_closed(uv_handle_t *h)
{
	struct call *k = h->data;

	sbx_free(k->text);
	sbx_free(k);
}

static void unlink_call(struct cdp *c, struct call *k)
{
	for (struct call **p = &c->calls; *p; p = &(*p)->next) {
		if (*p == k) {
			*p = k->next;
			return;
		}
	}
}

/* The answer (or its error) goes to the caller; the call is done. */
static void finish(struct call *k, json_t *result, const char *error)
{
	if (k->answered)
		return;
	k->answered = true;
	if (k->c)
		unlink_call(k->c, k);
	uv_timer_stop(&k->timer);
	uv_close((uv_handle_t *)&k->timer, call_closed);
	k->cb(result, error, k->arg);
}

static void call_timeout(uv_timer_t *t)
{
	struct call *k = t->data;

	finish(k, NULL, k->error[0] ? k->error : "the browser did not answer in time");
}

/* Fails a call from the loop's next turn (never inside cdp_call). */
static void fail_soon(struct call *k, const char *why)
{
	snprintf(k->error, sizeof(k->error), "%s", why);
	uv_timer_start(&k->timer, call_timeout, 0, 0);
}

/* ---- writing ----------------------------------------------------------------------- */

struct wreq {
	uv_write_t w;
	char data[];
};

static void on_written(uv_write_t *w, int status)
{
	sbx_free(w);
}

static void flush(struct cdp *c)
{
	struct wreq *wr;
	uv_buf_t b;
	int n;

	if (c->in_recv)
		return; /* after wslay_event_recv */
	if (c->state == C_OPEN && c->ws && wslay_event_want_write(c->ws) &&
	    wslay_event_send(c->ws)) {
		lost(c, "cannot send to the browser");
		return;
	}
	if (!c->out.len || !c->link)
		return;
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	n = uv_try_write((uv_stream_t *)&c->link->tcp, &b, 1);
	n = n > 0 ? n : 0;
	if ((size_t)n == c->out.len) {
		c->out.len = 0;
		return;
	}
	/* The rest, copied, after what the socket took. */
	wr = sbx_malloc(sizeof(*wr) + c->out.len - (size_t)n);
	if (!wr) {
		lost(c, "out of memory");
		return;
	}
	memcpy(wr->data, c->out.data + n, c->out.len - (size_t)n);
	b = uv_buf_init(wr->data, (unsigned)(c->out.len - (size_t)n));
	c->out.len = 0;
	if (uv_write(&wr->w, (uv_stream_t *)&c->link->tcp, &b, 1, on_written)) {
		sbx_free(wr);
		lost(c, "the browser's socket failed");
	}
}

/* Every queued command not yet sent goes to wslay. */
static void send_queued(struct cdp *c)
{
	if (c->in_recv)
		return; /* after wslay_event_recv */
	for (struct call *k = c->calls; k && c->state == C_OPEN; k = k->next) {
		struct wslay_event_msg msg = { .opcode = WSLAY_TEXT_FRAME };

		if (!k->text)
			continue;
		msg.msg = (const uint8_t *)k->text;
		msg.msg_length = strlen(k->text);
		if (wslay_event_queue_msg(c->ws, &msg)) {
			lost(c, "cannot send to the browser");
			return;
		}
		/* wslay copies the message. */
		sbx_free(k->text);
		k->text = NULL;
	}
	flush(c);
}

/* ---- wslay's callbacks ------------------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	struct cdp *c = user;
	size_t have = c->in.len - c->in_off;

	if (!have) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (len > have)
		len = have;
	memcpy(buf, c->in.data + c->in_off, len);
	c->in_off += len;
	return (ssize_t)len;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	struct cdp *c = user;

	if (sbx_buf_append(&c->out, data, len)) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static int ws_mask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void ws_message(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
		       void *user)
{
	struct cdp *c = user;
	char err[128];
	json_t *j, *id;

	if (m->opcode == WSLAY_CONNECTION_CLOSE) {
		c->broken = "the browser closed the DevTools connection";
		return;
	}
	if (m->opcode != WSLAY_TEXT_FRAME)
		return;
	j = sbx_json_loadb((const char *)m->msg, m->msg_length, MAX_MESSAGE, err, sizeof(err));
	if (!j)
		return;
	if ((id = json_object_get(j, "id")) && json_is_integer(id)) {
		for (struct call *k = c->calls; k; k = k->next) {
			if (k->id == (uint64_t)json_integer_value(id) && !k->text) {
				json_t *e = json_object_get(j, "error");

				if (e)
					finish(k, NULL,
					       sbx_json_str(e, "message") ?: "the browser refused");
				else
					finish(k, json_object_get(j, "result"), NULL);
				break;
			}
		}
	} else if (json_is_string(json_object_get(j, "method")) && c->on_event) {
		json_t *params = json_object_get(j, "params");

		c->on_event(json_string_value(json_object_get(j, "method")),
			    sbx_json_str(j, "sessionId") ?: "", params ? params : json_null(),
			    c->arg);
	}
	json_decref(j);
}

/* ---- the connection ---------------------------------------------------------------- */

static void link_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

/* The connection is over: its calls fail, the next call opens another. */
static void lost(struct cdp *c, const char *why)
{
	struct call *k;

	if (c->state == C_IDLE)
		return;
	if (c->find)
		c->find->c = NULL; /* its answer is dropped */
	c->find = NULL;
	if (c->link) {
		c->link->c = NULL;
		uv_close((uv_handle_t *)&c->link->tcp, link_closed);
		c->link = NULL;
	}
	if (c->ws)
		wslay_event_context_free(c->ws);
	c->ws = NULL;
	c->state = C_IDLE;
	c->in.len = c->in_off = c->out.len = 0;
	if (!c->freed)
		sbx_log_warn("browser connection lost", SBX_LS("cdp", c->addr),
			     SBX_LS("reason", why));
	while ((k = c->calls)) {
		c->calls = k->next;
		k->c = NULL;
		finish(k, NULL, why);
	}
	if (c->on_lost && !c->freed)
		c->on_lost(c->arg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void handshake_answer(struct cdp *c)
{
	static const struct wslay_event_callbacks cb = { .recv_callback = ws_recv,
							 .send_callback = ws_send,
							 .genmask_callback = ws_mask,
							 .on_msg_recv_callback = ws_message };
	char accept[SBX_WS_ACCEPT_SIZE], expect[64];
	const char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);

	if (!end) {
		if (c->in.len > MAX_HEAD)
			lost(c, "the browser's answer to the WebSocket handshake is too long");
		return;
	}
	sbx_ws_accept_key(c->key, accept);
	snprintf(expect, sizeof(expect), "Sec-WebSocket-Accept: %s", accept);
	if (c->in.len < 12 || strncmp(c->in.data, "HTTP/1.1 101", 12) != 0 ||
	    !memmem(c->in.data, (size_t)(end - c->in.data), expect, strlen(expect))) {
		lost(c, "the browser refused the DevTools WebSocket");
		return;
	}
	if (wslay_event_context_client_init(&c->ws, &cb, c)) {
		lost(c, "out of memory");
		return;
	}
	wslay_event_config_set_max_recv_msg_length(c->ws, MAX_MESSAGE);
	c->in_off = (size_t)(end + 4 - c->in.data);
	c->state = C_OPEN;
	send_queued(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct cdp *c = ((struct link *)s->data)->c;
	int rc;

	if (!c)
		return;
	if (n < 0) {
		lost(c, n == UV_EOF ? "the browser closed the DevTools connection"
				    : "the browser's socket failed");
		return;
	}
	if (n == 0)
		return;
	/* What wslay took is dropped before more is added. */
	if (c->in_off) {
		memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
		c->in.len -= c->in_off;
		c->in_off = 0;
	}
	if (sbx_buf_append(&c->in, buf->base, (size_t)n)) {
		lost(c, "the browser sent more than a message may hold");
		return;
	}
	if (c->state == C_HANDSHAKE) {
		handshake_answer(c);
		if (c->state != C_OPEN)
			return;
	}
	if (c->state != C_OPEN)
		return;
	/* Answers and events run their callbacks from in here. */
	c->in_recv = true;
	rc = wslay_event_recv(c->ws);
	c->in_recv = false;
	if (c->freed) {
		destroy(c);
		return;
	}
	if (rc || c->broken) {
		lost(c, c->broken ? c->broken : "the browser's WebSocket broke");
		return;
	}
	send_queued(c); /* what the callbacks asked for, and pongs */
}

static void on_connect(uv_connect_t *req, int status)
{
	struct cdp *c = ((struct link *)req->data)->c;
	unsigned char raw[16];
	char *key = NULL;
	size_t n;

	if (!c || c->state != C_CONNECTING)
		return;
	if (status < 0) {
		lost(c, "cannot connect to the browser's DevTools WebSocket");
		return;
	}
	RAND_bytes(raw, sizeof(raw));
	if (sbx_base64_encode((const char *)raw, sizeof(raw), &key, &n) || n >= sizeof(c->key)) {
		sbx_free(key);
		lost(c, "out of memory");
		return;
	}
	memcpy(c->key, key, n + 1);
	sbx_free(key);
	c->state = C_HANDSHAKE;
	sbx_buf_printf(
		&c->out,
		"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		c->path, c->addr, c->key);
	uv_read_start((uv_stream_t *)&c->link->tcp, on_alloc, on_read);
	flush(c);
}

/* ws://host:port/path -> a TCP connect to host:port (an address: Chromium
 * names itself by the address it listens on). */
static void connect_to(struct cdp *c, const char *ws_url)
{
	char host[256];
	const char *p = ws_url + 5, *slash = strchr(p, '/'), *colon;
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV },
			*ai;
	size_t hl;

	if (strncmp(ws_url, "ws://", 5) || !slash || (size_t)(slash - p) >= sizeof(host) ||
	    strlen(slash) >= sizeof(c->path)) {
		lost(c, "the browser named an unexpected DevTools address");
		return;
	}
	memcpy(host, p, (size_t)(slash - p));
	host[slash - p] = '\0';
	snprintf(c->path, sizeof(c->path), "%s", slash);
	colon = strrchr(host, ':');
	if (!colon) {
		lost(c, "the browser named an unexpected DevTools address");
		return;
	}
	host[colon - host] = '\0';
	hl = strlen(host);
	if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	if (getaddrinfo(host, colon + 1, &hints, &ai)) {
		lost(c, "the browser named an unexpected DevTools address");
		return;
	}
	c->link = sbx_calloc(1, sizeof(*c->link));
	if (!c->link) {
		freeaddrinfo(ai);
		lost(c, "out of memory");
		return;
	}
	uv_tcp_init(c->loop, &c->link->tcp);
	c->link->c = c;
	c->link->tcp.data = c->link->connect.data = c->link;
	c->state = C_CONNECTING;
	if (uv_tcp_connect(&c->link->connect, &c->link->tcp, ai->ai_addr, on_connect))
		lost(c, "cannot connect to the browser's DevTools WebSocket");
	freeaddrinfo(ai);
}

/* ---- finding the browser's endpoint (blocking, on the thread pool) ----------------- */

struct answer {
	struct sbx_buf body;
	bool complete;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
	return sbx_buf_append(&((struct answer *)p->data)->body, at, len) ? -1 : 0;
}

static int on_complete(http_parser *p)
{
	((struct answer *)p->data)->complete = true;
	return 0;
}

static void find_work(uv_work_t *w)
{
	static const http_parser_settings settings = { .on_body = on_body,
						       .on_message_complete = on_complete };
	struct find *f = w->data;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
	struct timeval tv = { .tv_sec = FIND_TIMEOUT_S };
	struct answer a = { .complete = false };
	char host[256], head[512], err[128], *colon;
	http_parser p;
	json_t *j = NULL;
	int fd = -1, n;

	snprintf(host, sizeof(host), "%s", f->addr);
	if (!(colon = strrchr(host, ':'))) {
		snprintf(f->error, sizeof(f->error), "--cdp %.100s is not host:port", f->addr);
		return;
	}
	*colon = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &ai) ||
	    (fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		snprintf(f->error, sizeof(f->error),
			 "the browser's DevTools at %.100s did not answer", f->addr);
		goto out;
	}
	n = snprintf(head, sizeof(head),
		     "GET /json/version HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		     f->addr);
	sbx_buf_init(&a.body, 1 << 20);
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &a;
	if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n)
		goto bad;
	while (!a.complete) {
		char chunk[8192];
		ssize_t r = recv(fd, chunk, sizeof(chunk), 0);

		if (r < 0 || http_parser_execute(&p, &settings, chunk, (size_t)r) != (size_t)r ||
		    r == 0)
			break;
	}
	if (!a.complete || p.status_code != 200 ||
	    !(j = sbx_json_loadb(a.body.data ? a.body.data : "", a.body.len, 1 << 20, err,
				 sizeof(err))) ||
	    !sbx_json_str(j, "webSocketDebuggerUrl"))
		goto bad;
	snprintf(f->ws_url, sizeof(f->ws_url), "%s", sbx_json_str(j, "webSocketDebuggerUrl"));
	goto done;
bad:
	snprintf(f->error, sizeof(f->error),
		 "the browser's DevTools at %.100s gave no WebSocket address", f->addr);
done:
	json_decref(j);
	sbx_buf_release(&a.body);
out:
	if (fd >= 0)
		close(fd);
	if (ai)
		freeaddrinfo(ai);
}

static void find_done(uv_work_t *w, int status)
{
	struct find *f = w->data;
	struct cdp *c = f->c;

	if (c) {
		c->find = NULL;
		if (f->error[0] || status)
			lost(c, f->error[0] ? f->error : "cancelled");
		else
			connect_to(c, f->ws_url);
	}
	sbx_free(f);
}

static void open_connection(struct cdp *c)
{
	struct find *f = sbx_calloc(1, sizeof(*f));

	c->state = C_FINDING;
	if (!f) {
		lost(c, "out of memory");
		return;
	}
	f->c = c;
	f->work.data = f;
	snprintf(f->addr, sizeof(f->addr), "%s", c->addr);
	c->find = f;
	if (uv_queue_work(c->loop, &f->work, find_work, find_done)) {
		c->find = NULL;
		sbx_free(f);
		lost(c, "cannot reach the thread pool");
	}
}

/* ---- the API ------------------------------------------------------------------------ */

struct cdp *cdp_new(uv_loop_t *loop, const char *addr, cdp_event_cb on_event, cdp_lost_cb on_lost,
		    void *arg)
{
	struct cdp *c = sbx_calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->loop = loop;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	c->on_event = on_event;
	c->on_lost = on_lost;
	c->arg = arg;
	sbx_buf_init(&c->in, MAX_MESSAGE + MAX_HEAD);
	sbx_buf_init(&c->out, 2 * (size_t)MAX_MESSAGE);
	return c;
}

void cdp_free(struct cdp *c)
{
	if (!c)
		return;
	c->freed = true;
	if (c->in_recv) {
		/* From a callback inside wslay: on_read ends it. */
		c->broken = "the browser client is closing";
		return;
	}
	destroy(c);
}

static void destroy(struct cdp *c)
{
	lost(c, "the browser client is closing");
	sbx_buf_release(&c->in);
	sbx_buf_release(&c->out);
	sbx_free(c);
}

bool cdp_connected(const struct cdp *c)
{
	return c->state == C_OPEN;
}

void cdp_call(struct cdp *c, const char *session, const char *method, json_t *params,
	      uint64_t timeout_ms, cdp_reply_cb cb, void *arg)
{
	struct call *k = sbx_calloc(1, sizeof(*k));
	json_t *msg;

	if (!k) {
		json_decref(params);
		cb(NULL, "out of memory", arg); /* nothing better is left */
		return;
	}
	k->cb = cb;
	k->arg = arg;
	uv_timer_init(c->loop, &k->timer);
	k->timer.data = k;
	if (c->freed) {
		json_decref(params);
		fail_soon(k, "the browser client is closing");
		return;
	}
	k->id = ++c->next_id;
	msg = json_pack("{s:I, s:s, s:o}", "id", (json_int_t)k->id, "method", method, "params",
			params ? params : json_object());
	if (msg && session && *session)
		json_object_set_new(msg, "sessionId", json_string(session));
	k->text = msg ? sbx_json_dumps(msg) : NULL;
	json_decref(msg);
	if (!k->text) {
		fail_soon(k, "out of memory");
		return;
	}
	/* Last in the list: commands go out in the order they were made. */
	{
		struct call **p = &c->calls;

		while (*p)
			p = &(*p)->next;
		*p = k;
	}
	k->c = c;
	uv_timer_start(&k->timer, call_timeout, timeout_ms, 0);
	if (c->state == C_IDLE)
		open_connection(c);
	else if (c->state == C_OPEN)
		send_queued(c);
}
