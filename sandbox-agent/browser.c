/* The browser endpoints (see browser.h). Talking to Chromium's DevTools
 * HTTP side (a blocking HTTP/1.1 exchange parsed by http-parser) and, for
 * screenshots, to a page's DevTools WebSocket (wslay, client side) happens
 * on the thread pool with bounded timeouts; the DevTools WebSocket of a
 * client is a byte tunnel (sbx_http_tunnel). */
#define _GNU_SOURCE
#include "browser.h"

#include "api.h"
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
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define HTTP_TIMEOUT_S 10
#define MAX_JSON       (4u << 20)
#define MAX_SHOT       (64u << 20)

static const char no_browser[] =
	"no browser in this sandbox: start sbx-agent with --cdp ADDR, the address of a "
	"Chromium running with --remote-debugging-port";

enum kind { K_INFO, K_JSON, K_SHOT };

struct fetch {
	uv_work_t work;
	struct browser *b;
	struct sbx_http_req *req; /* NULL once the client has gone */
	enum kind kind;
	char path[128];
	char ws_base[600];   /* "ws://host/prefix": where the agent's /cdp is */
	char host_base[600]; /* "host/prefix" (for devtoolsFrontendUrl's ws=) */
	char http_base[600]; /* "http://host/prefix" */
	bool jpeg;
	int quality;
	long status;
	struct sbx_buf body;
	char *image;
	size_t image_len;
	int page_width, page_height; /* the first page's innerWidth/Height; 0: unknown */
	char err[256];
};

/* ---- the DevTools HTTP side ------------------------------------------------------------ */

/* A socket to "host:port" (a name or an address) with both timeouts set:
 * the fd, or -1 with err set. */
static int dial(const char *hostport, char *err, size_t err_size)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
	struct timeval tv = { .tv_sec = HTTP_TIMEOUT_S };
	char host[256], *colon;
	int fd = -1, rc;

	snprintf(host, sizeof(host), "%s", hostport);
	colon = strrchr(host, ':');
	if (!colon || colon == host) {
		snprintf(err, err_size, "unexpected DevTools address %.100s", hostport);
		return -1;
	}
	*colon = '\0';
	if (host[0] == '[' && colon[-1] == ']') { /* [::1]:9222 */
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if ((rc = getaddrinfo(host, colon + 1, &hints, &ai))) {
		snprintf(err, err_size, "cannot resolve %.100s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, a->ai_addr, a->ai_addrlen)) {
			rc = errno;
			close(fd);
			fd = -1;
			errno = rc;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0)
		snprintf(err, err_size, "cannot connect to %.100s: %s", hostport, strerror(errno));
	return fd;
}

struct devtools_answer {
	struct sbx_buf *body;
	bool complete, too_big;
};

static int on_dt_body(http_parser *p, const char *at, size_t len)
{
	struct devtools_answer *a = p->data;

	if (sbx_buf_append(a->body, at, len)) {
		a->too_big = true;
		return -1;
	}
	return 0;
}

static int on_dt_complete(http_parser *p)
{
	((struct devtools_answer *)p->data)->complete = true;
	return 0;
}

/* GET (or PUT) http://cdp/path into body, f->status set: 0, or -1 with
 * f->err set. Chromium's DevTools HTTP side answers small JSON documents. */
static int devtools_http(struct fetch *f, const char *method, const char *path,
			 struct sbx_buf *body)
{
	static const http_parser_settings settings = { .on_body = on_dt_body,
						       .on_message_complete = on_dt_complete };
	struct devtools_answer a = { .body = body };
	http_parser p;
	char head[512], err[200];
	int fd = dial(f->b->cdp, err, sizeof(err)), n;

	if (fd < 0) {
		snprintf(f->err, sizeof(f->err), "the browser's DevTools did not answer: %s", err);
		return -1;
	}
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		     method, path, f->b->cdp);
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &a;
	if (n < 0 || (size_t)n >= sizeof(head) || send(fd, head, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(f->err, sizeof(f->err), "cannot send a request to the browser's DevTools");
		close(fd);
		return -1;
	}
	while (!a.complete) {
		char chunk[16384];
		ssize_t r = recv(fd, chunk, sizeof(chunk), 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		/* At EOF, a zero-length execute ends a body that has no length. */
		if (http_parser_execute(&p, &settings, chunk, (size_t)r) != (size_t)r ||
		    p.http_errno != HPE_OK || r == 0)
			break;
	}
	close(fd);
	f->status = p.status_code;
	if (!a.complete) {
		snprintf(f->err, sizeof(f->err), "the browser's DevTools at %.60s %s", f->b->cdp,
			 a.too_big ? "answered more than the agent takes"
				   : "did not answer completely");
		return -1;
	}
	return 0;
}

/* ---- a DevTools WebSocket call (blocking, on the thread pool) -------------------------- */

struct wsc {
	int fd;
	struct sbx_buf in; /* bytes read past the handshake */
	size_t in_off;
	bool done;
	json_t *reply;
	char err[160];
};

static ssize_t wsc_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
			void *user)
{
	struct wsc *w = user;
	ssize_t n;

	if (w->done) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (w->in_off < w->in.len) {
		n = (ssize_t)(w->in.len - w->in_off < len ? w->in.len - w->in_off : len);
		memcpy(buf, w->in.data + w->in_off, (size_t)n);
		w->in_off += (size_t)n;
		return n;
	}
	n = recv(w->fd, buf, len, 0);
	if (n <= 0) {
		snprintf(w->err, sizeof(w->err), "the page's DevTools socket %s",
			 n == 0 ? "closed" : "timed out");
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return n;
}

static ssize_t wsc_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
			void *user)
{
	ssize_t n = send(((struct wsc *)user)->fd, data, len, MSG_NOSIGNAL);

	if (n < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return n;
}

static int wsc_mask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void wsc_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
		    void *user)
{
	struct wsc *w = user;
	char err[64];
	json_t *j;

	if (m->opcode != WSLAY_TEXT_FRAME)
		return;
	j = sbx_json_loadb((const char *)m->msg, m->msg_length, MAX_SHOT, err, sizeof(err));
	/* Events (no id) may come first; the answer carries our id, 1. */
	if (json_integer_value(json_object_get(j, "id")) == 1) {
		w->reply = j;
		w->done = true;
		return;
	}
	json_decref(j);
}

/* Sends one CDP command ("id": 1) to ws_url and returns its answer. */
static json_t *devtools_call(const char *ws_url, const char *command, char *err, size_t err_size)
{
	static const struct wslay_event_callbacks cb = { .recv_callback = wsc_recv,
							 .send_callback = wsc_send,
							 .genmask_callback = wsc_mask,
							 .on_msg_recv_callback = wsc_msg };
	struct wsc w = { .fd = -1 };
	char hostport[256], key_raw[16], *key = NULL, accept[SBX_WS_ACCEPT_SIZE], head[1024],
					 expect[64];
	const char *p = ws_url + 5, *slash, *end;
	size_t n;
	wslay_event_context_ptr ctx = NULL;
	struct wslay_event_msg msg = { .opcode = WSLAY_TEXT_FRAME };
	json_t *reply = NULL;

	/* ws://127.0.0.1:9222/devtools/page/ID: Chromium's own address. */
	if (strncmp(ws_url, "ws://", 5) || !(slash = strchr(p, '/')) ||
	    (size_t)(slash - p) >= sizeof(hostport)) {
		snprintf(err, err_size, "unexpected DevTools address %.100s", ws_url);
		return NULL;
	}
	memcpy(hostport, p, (size_t)(slash - p));
	hostport[slash - p] = '\0';
	if ((w.fd = dial(hostport, err, err_size)) < 0)
		return NULL;
	RAND_bytes((unsigned char *)key_raw, sizeof(key_raw));
	sbx_base64_encode(key_raw, sizeof(key_raw), &key, &n);
	snprintf(head, sizeof(head),
		 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		 slash, hostport, key ? key : "");
	if (!key || send(w.fd, head, strlen(head), MSG_NOSIGNAL) < 0) {
		snprintf(err, err_size, "cannot send the WebSocket handshake");
		goto out;
	}
	/* The handshake answer, and any frames right behind it. */
	sbx_buf_init(&w.in, MAX_SHOT);
	while (!(end = w.in.data ? memmem(w.in.data, w.in.len, "\r\n\r\n", 4) : NULL)) {
		char chunk[4096];
		ssize_t r = recv(w.fd, chunk, sizeof(chunk), 0);

		if (r <= 0 || w.in.len > 16384 || sbx_buf_append(&w.in, chunk, (size_t)r)) {
			snprintf(err, err_size, "no WebSocket handshake answer from the browser");
			goto out;
		}
	}
	sbx_ws_accept_key(key, accept);
	snprintf(expect, sizeof(expect), "Sec-WebSocket-Accept: %s", accept);
	if (strncmp(w.in.data, "HTTP/1.1 101", 12) != 0 ||
	    !memmem(w.in.data, (size_t)(end - w.in.data), expect, strlen(expect))) {
		snprintf(err, err_size, "the browser refused the WebSocket: %.60s", w.in.data);
		goto out;
	}
	w.in_off = (size_t)(end + 4 - w.in.data);
	if (wslay_event_context_client_init(&ctx, &cb, &w)) {
		snprintf(err, err_size, "out of memory");
		goto out;
	}
	wslay_event_config_set_max_recv_msg_length(ctx, MAX_SHOT);
	msg.msg = (const uint8_t *)command;
	msg.msg_length = strlen(command);
	if (wslay_event_queue_msg(ctx, &msg) || wslay_event_send(ctx)) {
		snprintf(err, err_size, "cannot send the command to the browser");
		goto out;
	}
	while (!w.done) {
		if (wslay_event_recv(ctx) || !wslay_event_want_read(ctx)) {
			snprintf(err, err_size, "%s",
				 w.err[0] ? w.err : "the browser closed the page's socket");
			goto out;
		}
		wslay_event_send(ctx); /* pongs */
	}
	reply = w.reply;
	w.reply = NULL;
out:
	if (ctx)
		wslay_event_context_free(ctx);
	json_decref(w.reply);
	sbx_buf_release(&w.in);
	sbx_free(key);
	if (w.fd >= 0)
		close(w.fd);
	return reply;
}

/* The first page's DevTools WebSocket address (a blank one is opened if the
 * browser has none). */
static int first_page(struct fetch *f, char *out, size_t size, bool open_one)
{
	struct sbx_buf b;
	char err[128];
	json_t *list, *t;
	size_t i;
	int rc = -1;

	sbx_buf_init(&b, MAX_JSON);
	if (devtools_http(f, "GET", "/json/list", &b)) {
		sbx_buf_release(&b);
		return -1;
	}
	list = sbx_json_loadb(b.data ? b.data : "", b.len, MAX_JSON, err, sizeof(err));
	json_array_foreach(list, i, t)
	{
		const char *ws = sbx_json_str(t, "webSocketDebuggerUrl");

		if (ws && strcmp(sbx_json_str(t, "type") ?: "", "page") == 0) {
			snprintf(out, size, "%s", ws);
			rc = 0;
			break;
		}
	}
	json_decref(list);
	sbx_buf_release(&b);
	if (rc == 0 || !open_one)
		return rc;
	sbx_buf_init(&b, MAX_JSON);
	if (devtools_http(f, "PUT", "/json/new?about:blank", &b) == 0) {
		json_t *t2 =
			sbx_json_loadb(b.data ? b.data : "", b.len, MAX_JSON, err, sizeof(err));
		const char *ws = sbx_json_str(t2, "webSocketDebuggerUrl");

		if (ws) {
			snprintf(out, size, "%s", ws);
			rc = 0;
		}
		json_decref(t2);
	}
	sbx_buf_release(&b);
	if (rc)
		snprintf(f->err, sizeof(f->err), "the browser has no page to take a picture of");
	return rc;
}

static void take_screenshot(struct fetch *f)
{
	char ws[512], cmd[160];
	json_t *reply;
	const char *data;

	if (first_page(f, ws, sizeof(ws), true))
		return;
	snprintf(cmd, sizeof(cmd),
		 "{\"id\":1,\"method\":\"Page.captureScreenshot\",\"params\":{\"format\":\"%s\"}}",
		 f->jpeg ? "jpeg" : "png");
	if (f->jpeg && f->quality)
		snprintf(cmd, sizeof(cmd),
			 "{\"id\":1,\"method\":\"Page.captureScreenshot\",\"params\":{\"format\":"
			 "\"jpeg\",\"quality\":%d}}",
			 f->quality);
	reply = devtools_call(ws, cmd, f->err, sizeof(f->err));
	if (!reply)
		return;
	data = sbx_json_str(reply, "result.data");
	if (!data) {
		snprintf(f->err, sizeof(f->err), "the browser did not take the picture: %.150s",
			 sbx_json_str(reply, "error.message") ?: "no data");
	} else if (sbx_base64_decode(data, strlen(data), &f->image, &f->image_len)) {
		snprintf(f->err, sizeof(f->err), "the browser sent a picture that is not base64");
	}
	json_decref(reply);
}

/* The first page's viewport as the page sees it (window.innerWidth and
 * innerHeight): left unknown when there is no page (none is opened for it)
 * or the page does not answer. */
static void page_viewport(struct fetch *f)
{
	static const char cmd[] =
		"{\"id\":1,\"method\":\"Runtime.evaluate\",\"params\":{\"expression\":"
		"\"[window.innerWidth, window.innerHeight]\",\"returnByValue\":true}}";
	char ws[512], err[256];
	json_t *reply, *size;

	if (first_page(f, ws, sizeof(ws), false))
		return;
	if (!(reply = devtools_call(ws, cmd, err, sizeof(err))))
		return;
	size = sbx_json_path(reply, "result.result.value");
	if (json_array_size(size) == 2 && json_is_integer(json_array_get(size, 0)) &&
	    json_is_integer(json_array_get(size, 1))) {
		f->page_width = (int)json_integer_value(json_array_get(size, 0));
		f->page_height = (int)json_integer_value(json_array_get(size, 1));
	}
	json_decref(reply);
}

static void fetch_work(uv_work_t *w)
{
	struct fetch *f = w->data;

	if (f->kind == K_SHOT) {
		take_screenshot(f);
		return;
	}
	(void)devtools_http(f, "GET", f->path, &f->body);
	if (f->kind == K_INFO && !f->err[0])
		page_viewport(f);
}

/* Chromium's addresses in its answers, pointed at the agent instead. */
static char *rewrite(const struct fetch *f, const char *text)
{
	char from_ws[96], from_eq[96];
	struct sbx_buf out;
	const char *p = text;

	snprintf(from_ws, sizeof(from_ws), "ws://%s/", f->b->cdp);
	snprintf(from_eq, sizeof(from_eq), "ws=%s/", f->b->cdp);
	sbx_buf_init(&out, strlen(text) * 4 + 1024);
	while (*p) {
		if (strncmp(p, from_ws, strlen(from_ws)) == 0) {
			sbx_buf_printf(&out, "%s/cdp/", f->ws_base);
			p += strlen(from_ws);
		} else if (strncmp(p, from_eq, strlen(from_eq)) == 0) {
			sbx_buf_printf(&out, "ws=%s/cdp/", f->host_base);
			p += strlen(from_eq);
		} else {
			sbx_buf_append(&out, p++, 1);
		}
	}
	return sbx_buf_steal(&out);
}

static void fetch_done(uv_work_t *w, int status)
{
	struct fetch *f = w->data;
	char err[160];

	if (f->req) {
		struct sbx_http_req *req = f->req;

		sbx_http_on_abort(req, NULL, NULL);
		if (f->kind == K_SHOT) {
			if (f->image)
				sbx_http_respond(req, 200, f->jpeg ? "image/jpeg" : "image/png",
						 f->image, f->image_len);
			else
				sbx_http_respond_error(req, 502, f->err);
		} else if (f->err[0] || f->status != 200) {
			char msg[320];

			snprintf(msg, sizeof(msg), "%s",
				 f->err[0] ? f->err : "the browser refused");
			if (f->kind == K_INFO)
				api_fail(req, msg, NULL);
			else
				sbx_http_respond_error(req, 502, msg);
		} else {
			char *text = rewrite(f, f->body.data ? f->body.data : "");
			json_t *j =
				sbx_json_loadb(text, strlen(text), MAX_JSON * 4, err, sizeof(err));

			if (f->kind == K_JSON) {
				sbx_http_respond(req, 200, "application/json", text, strlen(text));
			} else {
				char cdp_url[700];

				snprintf(cdp_url, sizeof(cdp_url), "%s/cdp", f->http_base);
				json_t *page =
					f->page_width > 0
						? json_pack("{s:i, s:i}", "width", f->page_width,
							    "height", f->page_height)
						: json_null();

				api_ok(req, "Browser",
				       json_pack(
					       "{s:s, s:s, s:s, s:n, s:{s:i, s:i}, s:o, s:s?, s:s?}",
					       "user_agent", sbx_json_str(j, "User-Agent") ?: "",
					       "cdp_url", cdp_url, "vnc_url", "", "cdp_ui_url",
					       "viewport", "width", (int)f->b->width, "height",
					       (int)f->b->height, "page_viewport", page, "browser",
					       sbx_json_str(j, "Browser"), "browser_ws_url",
					       sbx_json_str(j, "webSocketDebuggerUrl")));
			}
			json_decref(j);
			sbx_free(text);
		}
	}
	sbx_buf_release(&f->body);
	sbx_free(f->image);
	sbx_free(f);
}

static void fetch_gone(struct sbx_http_req *req, void *arg)
{
	((struct fetch *)arg)->req = NULL;
}

static void start(struct sbx_http_req *req, struct browser *b, enum kind kind, const char *path)
{
	struct fetch *f;

	if (!b->cdp) {
		/* An image endpoint answers an error status: the SDKs hand a 200's
		 * body back as the image. */
		if (kind == K_JSON || kind == K_SHOT)
			sbx_http_respond_error(req, 503, no_browser);
		else
			api_fail(req, no_browser, NULL);
		return;
	}
	f = sbx_calloc(1, sizeof(*f));
	if (!f) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	f->b = b;
	f->req = req;
	f->kind = kind;
	f->work.data = f;
	snprintf(f->path, sizeof(f->path), "%s", path);
	sbx_buf_init(&f->body, MAX_JSON);
	api_public_base(req, f->http_base, sizeof(f->http_base), f->ws_base, sizeof(f->ws_base),
			f->host_base, sizeof(f->host_base));
	if (kind == K_SHOT) {
		char v[16];

		f->jpeg = sbx_http_query(req, "format", v, sizeof(v)) > 0 &&
			  (strcasecmp(v, "jpeg") == 0 || strcasecmp(v, "jpg") == 0);
		if (sbx_http_query(req, "quality", v, sizeof(v)) > 0)
			f->quality = atoi(v) < 0 ? 0 : atoi(v) > 100 ? 100 : atoi(v);
	}
	sbx_http_on_abort(req, fetch_gone, f);
	if (uv_queue_work(b->loop, &f->work, fetch_work, fetch_done)) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_buf_release(&f->body);
		sbx_free(f);
		sbx_http_respond_error(req, 503, "cannot queue the work");
	}
}

void browser_handle_info(struct sbx_http_req *req, void *arg)
{
	start(req, arg, K_INFO, "/json/version");
}

void browser_handle_json(struct sbx_http_req *req, void *arg)
{
	const char *path = sbx_http_path(req);

	/* /cdp/json/version, /cdp/json, /cdp/json/list */
	start(req, arg, K_JSON, path + 4);
}

void browser_handle_screenshot(struct sbx_http_req *req, void *arg)
{
	char v[16];

	if (sbx_http_query(req, "format", v, sizeof(v)) > 0 && strcasecmp(v, "png") &&
	    strcasecmp(v, "jpeg") && strcasecmp(v, "jpg")) {
		api_invalid(req, "query.format", "Input should be 'png' or 'jpeg'", "enum");
		return;
	}
	start(req, arg, K_SHOT, "");
}

/* Appends the query's parameters but the gateway's credentials (ticket,
 * api_key) to out: the browser is not told them. */
static bool query_without_credentials(const char *q, struct sbx_buf *out)
{
	bool first = true;

	while (*q) {
		size_t len = strcspn(q, "&"), name = strcspn(q, "=&");

		if (len && !((name == 6 && !strncmp(q, "ticket", 6)) ||
			     (name == 7 && !strncmp(q, "api_key", 7)))) {
			if (sbx_buf_append(out, first ? "?" : "&", 1) ||
			    sbx_buf_append(out, q, len))
				return false;
			first = false;
		}
		q += len + (q[len] == '&');
	}
	return true;
}

void browser_handle_devtools(struct sbx_http_req *req, void *arg)
{
	/* The gateway's and the agent's credentials stay here: what reaches
	 * the browser is the DevTools protocol, nothing of who asked. */
	static const char *const drop[] = { "Origin",
					    "Authorization",
					    "Proxy-Authorization",
					    "X-API-Key",
					    "X-AIO-API-Key",
					    "Cookie",
					    "X-Forwarded-For",
					    "X-Forwarded-Host",
					    "X-Forwarded-Proto",
					    "X-Forwarded-Prefix",
					    NULL };
	struct browser *b = arg;
	struct sbx_buf path;

	if (!b->cdp) {
		sbx_http_respond_error(req, 503, no_browser);
		return;
	}
	/* /cdp/devtools/browser/ID -> /devtools/browser/ID on Chromium. Its
	 * DevTools refuse a Host that is not an address, and (since 111) an
	 * Origin it was not told of: the agent's own auth guards this path. */
	sbx_buf_init(&path, 2048);
	if (sbx_buf_append_str(&path, sbx_http_path(req) + 4) ||
	    !query_without_credentials(sbx_http_query_string(req), &path)) {
		sbx_buf_release(&path);
		sbx_http_respond_error(req, 414, "path too long");
		return;
	}
	struct sbx_http_tunnel_opts o = { .upstream = b->cdp,
					  .path = path.data,
					  .drop_headers = drop };

	sbx_http_tunnel(req, &o);
	sbx_buf_release(&path);
}
