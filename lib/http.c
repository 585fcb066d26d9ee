/* HTTP/1.1 server core (see sbx/http.h).
 *
 * Ownership: the server owns its listeners and connections; a connection
 * owns the request being read or handled (one at a time: pipelined requests
 * wait, unparsed, in 'pending' until the current response has ended). The
 * parser is paused at the end of each message so that pipelined bytes are
 * parsed only when their turn comes.
 */
#include "sbx/http.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <wslay/wslay.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_LISTENERS 4

struct listener {
	uv_tcp_t tcp;
	struct sbx_http_server *s;
	SSL_CTX *tls; /* NULL: cleartext */
};

struct conn;

struct hdr {
	size_t name, value; /* offsets into req->arena */
};

struct sbx_http_req {
	struct conn *c;	      /* NULL once the connection is gone */
	struct sbx_buf arena; /* target and headers, NUL-separated */
	struct hdr *headers;
	unsigned n_headers;
	enum { H_NONE, H_FIELD, H_VALUE } last;
	const char *target, *path, *query;
	char method[16];
	const struct sbx_http_route *route;
	int early_status; /* an answer decided before dispatch (404, 405, 413, ...) */
	const char *early_message;
	char early_text[96]; /* for early messages that carry a number */
	const char *param_names[SBX_HTTP_MAX_PARAMS];
	char *param_values[SBX_HTTP_MAX_PARAMS];
	size_t n_params;
	struct sbx_buf body;
	struct sbx_buf resp_headers; /* "Name: value\r\n" lines */
	bool started;		     /* status line sent */
	bool chunked;
	bool head;
	bool ended;
	bool streamed;	   /* the route takes its body as a stream */
	bool headers_done; /* what follows is body (and trailers, dropped) */
	bool body_ended;   /* streamed: the sink has had its end (or an error) */
	bool sized;	   /* streamed response with Content-Length */
	uint64_t body_received;
	uint64_t length_left; /* sized: bytes still owed */
	const struct sbx_http_body_sink *sink;
	void *sink_arg;
	/* An internal call (sbx_http_call): no connection; the answer is
	 * captured and handed to done. */
	struct sbx_http_server *srv;
	const char *call_ctype;
	char resp_ctype[128];
	struct sbx_buf captured;
	sbx_http_call_done done;
	void *done_arg;
	/* HTTP/2: the stream, its response bytes not yet framed, flow control */
	int32_t stream_id;
	struct sbx_buf h2_hdrs; /* request headers as "name\0value\0" until complete */
	struct sbx_buf h2_out;
	size_t h2_out_off;
	size_t h2_unconsumed; /* body bytes not yet given back to the window */
	bool h2_eof, h2_deferred, h2_paused, h2_body_done, h2_drain_due;
	struct sbx_http_req *h2_next, *h2_prev; /* the connection's open streams */
	int status;
	void (*on_abort)(struct sbx_http_req *, void *);
	void *abort_arg;
	void (*on_drain)(struct sbx_http_req *, void *);
	void *drain_arg;
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutdown;
	struct sbx_http_server *s;
	struct conn *next, *prev;
	http_parser parser;
	struct sbx_http_req *req;
	struct sbx_buf pending; /* bytes read past the current message */
	char peer[64];
	int handles; /* open libuv handles, for freeing */
	bool keep_alive;
	bool closing;
	bool reading;
	bool handling;			     /* the request is with its handler */
	bool complete;			     /* the parser finished a message */
	bool processing;		     /* inside conn_process (no recursion) */
	bool again;			     /* conn_process must look once more */
	bool shutting;			     /* uv_shutdown issued */
	bool headers_ready;		     /* a streamed route's headers are in: dispatch */
	bool streaming;			     /* with its handler, body still arriving */
	bool body_paused;		     /* streaming, but not reading for now */
	bool lingering;			     /* shut down; draining the client's rest */
	struct sbx_ws *ws;		     /* upgraded: frames, not requests, from now on */
	struct tunnel *tunnel;		     /* tunneled: raw bytes to and from upstream */
	nghttp2_session *h2;		     /* HTTP/2 (prior knowledge): streams, not messages */
	bool seen_request;		     /* an HTTP/1 request began: no HTTP/2 preface now */
	bool h2_drain;			     /* a stream wants its drain callback */
	struct sbx_http_req *h2_drains[128]; /* streams whose drain is due */
	struct sbx_http_req *h2_streams;     /* requests of open streams */
	SSL *ssl;			     /* TLS: bytes pass through memory BIOs */
	unsigned n_h2_drains;
};

struct tunnel {
	struct conn *c;		  /* NULL once the client side is gone */
	struct sbx_http_req *req; /* until connected */
	uv_tcp_t up;
	uv_connect_t connect;
	struct sbx_buf head; /* the request head for upstream */
	bool up_open, up_reading, connected, closing;
	size_t high_water;
};

struct sbx_ws {
	struct conn *c; /* NULL once the connection is gone */
	wslay_event_context_ptr ctx;
	const struct sbx_ws_callbacks *cb;
	void *arg;
	struct sbx_buf in; /* read, not yet taken by wslay */
	size_t in_off;
	bool blocked; /* the send callback said "would block" */
};

struct sbx_http_server {
	uv_loop_t *loop;
	struct sbx_http_server_opts o;
	const struct sbx_http_route *routes;
	size_t n_routes;
	struct listener listeners[MAX_LISTENERS];
	int n_listeners;
	int open_listeners;
	struct conn *conns;
	struct sbx_http_stats stats;
	bool closing;
	void (*done)(void *);
	void *done_arg;
	char date[40];
	time_t date_at;
	char read_buf[65536]; /* one loop, one read at a time: shared */
};

static const http_parser_settings settings;
static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);
static void ws_input(struct sbx_ws *ws, const char *data, size_t len);
static void ws_drained(struct sbx_ws *ws);
static void ws_gone(struct sbx_ws *ws);
static void tunnel_from_client(struct tunnel *t, const char *data, size_t len);
static void tunnel_client_drained(struct tunnel *t);
static void tunnel_client_gone(struct tunnel *t);
static int parse_addr(const char *addr, struct sockaddr_storage *ss);
static bool h2_maybe_start(struct conn *c);
static void h2_input(struct conn *c, const char *data, size_t len);
static void h2_flush(struct conn *c);
static void h2_drop_drain(struct conn *c, struct sbx_http_req *r);
static void h2_unlink(struct conn *c, struct sbx_http_req *r);
static void h2_conn_gone(struct conn *c);
static int h2_respond(struct sbx_http_req *r, int status, const char *content_type,
		      const void *body, size_t len, bool streamed, long long length);
static int h2_write(struct sbx_http_req *r, const void *data, size_t len);
static int h2_end(struct sbx_http_req *r);
static void h2_resume_body(struct sbx_http_req *r);
static void split_target(struct sbx_http_req *r);
static void conn_input(struct conn *c, const char *data, size_t len);
static int tls_flush(struct conn *c);
static void tls_input(struct conn *c, const char *data, size_t len);
static int tls_attach(struct conn *c, SSL_CTX *ctx);

/* ---- small helpers ------------------------------------------------------- */

static const struct {
	int status;
	const char *text;
} reasons[] = {
	{ 100, "Continue" },
	{ 101, "Switching Protocols" },
	{ 200, "OK" },
	{ 201, "Created" },
	{ 202, "Accepted" },
	{ 204, "No Content" },
	{ 206, "Partial Content" },
	{ 301, "Moved Permanently" },
	{ 302, "Found" },
	{ 304, "Not Modified" },
	{ 307, "Temporary Redirect" },
	{ 400, "Bad Request" },
	{ 401, "Unauthorized" },
	{ 403, "Forbidden" },
	{ 404, "Not Found" },
	{ 405, "Method Not Allowed" },
	{ 408, "Request Timeout" },
	{ 409, "Conflict" },
	{ 410, "Gone" },
	{ 411, "Length Required" },
	{ 413, "Content Too Large" },
	{ 414, "URI Too Long" },
	{ 415, "Unsupported Media Type" },
	{ 416, "Range Not Satisfiable" },
	{ 417, "Expectation Failed" },
	{ 422, "Unprocessable Content" },
	{ 429, "Too Many Requests" },
	{ 431, "Request Header Fields Too Large" },
	{ 499, "Client Closed Request" },
	{ 500, "Internal Server Error" },
	{ 501, "Not Implemented" },
	{ 502, "Bad Gateway" },
	{ 503, "Service Unavailable" },
	{ 504, "Gateway Timeout" },
};

const char *sbx_http_reason(int status)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		if (reasons[i].status == status)
			return reasons[i].text;
	}
	return "Unknown";
}

static const char *http_date(struct sbx_http_server *s)
{
	time_t now = time(NULL);
	struct tm tm;

	if (now != s->date_at) {
		gmtime_r(&now, &tm);
		strftime(s->date, sizeof(s->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		s->date_at = now;
	}
	return s->date;
}

/* Header names are tokens; values may not carry CR or LF (no injection). */
static bool valid_header(const char *name, const char *value)
{
	if (!*name)
		return false;
	for (const char *p = name; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
			return false;
	}
	return !strpbrk(value, "\r\n");
}

/* ---- requests ------------------------------------------------------------ */

static struct sbx_http_req *req_new(struct conn *c)
{
	struct sbx_http_req *r = sbx_calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->c = c;
	/* Room for the NULs between fields on top of the header byte limit. */
	sbx_buf_init(&r->arena, c->s->o.max_header_bytes + 2u * c->s->o.max_headers + 8);
	sbx_buf_init(&r->body, c->s->o.max_body_bytes);
	sbx_buf_init(&r->resp_headers, 64 * 1024);
	r->target = r->path = r->query = "";
	return r;
}

static void req_free(struct sbx_http_req *r)
{
	if (!r)
		return;
	sbx_buf_release(&r->arena);
	sbx_buf_release(&r->body);
	sbx_buf_release(&r->resp_headers);
	sbx_buf_release(&r->captured);
	sbx_buf_release(&r->h2_hdrs);
	sbx_buf_release(&r->h2_out);
	sbx_free(r->headers);
	for (size_t i = 0; i < r->n_params; i++)
		sbx_free(r->param_values[i]);
	sbx_free(r);
}

const char *sbx_http_method(const struct sbx_http_req *req)
{
	return req->method;
}

const char *sbx_http_path(const struct sbx_http_req *req)
{
	return req->path;
}

const char *sbx_http_query_string(const struct sbx_http_req *req)
{
	return req->query;
}

const char *sbx_http_peer(const struct sbx_http_req *req)
{
	return req->c ? req->c->peer : "";
}

const char *sbx_http_header(const struct sbx_http_req *req, const char *name)
{
	if (req->srv && strcasecmp(name, "Content-Type") == 0)
		return req->call_ctype;
	for (unsigned i = 0; i < req->n_headers; i++) {
		if (strcasecmp(req->arena.data + req->headers[i].name, name) == 0)
			return req->arena.data + req->headers[i].value;
	}
	return NULL;
}

const char *sbx_http_param(const struct sbx_http_req *req, const char *name)
{
	size_t len = strlen(name);

	/* Names point into the route pattern and end at its '}'. */
	for (size_t i = 0; i < req->n_params; i++) {
		if (strncmp(req->param_names[i], name, len) == 0 && req->param_names[i][len] == '}')
			return req->param_values[i];
	}
	return NULL;
}

const char *sbx_http_body(const struct sbx_http_req *req, size_t *len)
{
	if (len)
		*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

json_t *sbx_http_body_json(const struct sbx_http_req *req, char *err, size_t err_size)
{
	if (req->body.len == 0) {
		snprintf(err, err_size, "the request body is empty; a JSON object was expected");
		return NULL;
	}
	return sbx_json_loadb(req->body.data, req->body.len, req->body.max, err, err_size);
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into out ('+' is a space in query strings). */
static int url_decode(const char *s, size_t n, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];

		if (ch == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			ch = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
			i += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (o + 1 >= size)
			return -ENAMETOOLONG;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return (int)o;
}

int sbx_http_query(const struct sbx_http_req *req, const char *name, char *out, size_t size)
{
	char key[256];
	const char *p = req->query;

	while (*p) {
		size_t len = strcspn(p, "&");
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;

		if (url_decode(p, klen, key, sizeof(key)) >= 0 && strcmp(key, name) == 0) {
			if (!eq) {
				if (size)
					out[0] = '\0';
				return 0;
			}
			return url_decode(eq + 1, len - klen - 1, out, size);
		}
		p += len;
		if (*p == '&')
			p++;
	}
	return -ENOENT;
}

void sbx_http_on_abort(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg)
{
	req->on_abort = cb;
	req->abort_arg = arg;
}

void sbx_http_on_drain(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg)
{
	req->on_drain = cb;
	req->drain_arg = arg;
}

/* ---- routing ------------------------------------------------------------- */

int sbx_http_match(const char *pattern, const char *path, const char *names[], const char *values[],
		   size_t value_lens[], size_t *n_params)
{
	const char *p = pattern, *q = path;

	*n_params = 0;
	while (*p) {
		if (p[0] == '*' && p[1] == '\0')
			return 1;
		if (*p == '{') {
			const char *close = strchr(p, '}');
			size_t seg = strcspn(q, "/");

			if (!close || seg == 0 || *n_params >= SBX_HTTP_MAX_PARAMS)
				return 0;
			names[*n_params] = p + 1; /* terminated by '}', see req_set_params */
			values[*n_params] = q;
			value_lens[*n_params] = seg;
			(*n_params)++;
			p = close + 1;
			q += seg;
			continue;
		}
		if (*p != *q)
			return 0;
		p++;
		q++;
	}
	return *q == '\0';
}

static int req_set_params(struct sbx_http_req *r, const char *pattern, const char *path)
{
	const char *names[SBX_HTTP_MAX_PARAMS], *values[SBX_HTTP_MAX_PARAMS];
	size_t lens[SBX_HTTP_MAX_PARAMS], n;

	if (!sbx_http_match(pattern, path, names, values, lens, &n))
		return 0;
	for (size_t i = 0; i < n; i++) {
		r->param_values[i] = sbx_strndup(values[i], lens[i]);
		if (!r->param_values[i])
			return -ENOMEM;
		r->param_names[i] = names[i];
		r->n_params = i + 1;
	}
	return 1;
}

/* Picks the route, or decides an early answer (404, 405). */
static void route(struct sbx_http_server *s, struct sbx_http_req *r)
{
	bool path_known = false;
	const char *names[SBX_HTTP_MAX_PARAMS], *values[SBX_HTTP_MAX_PARAMS];
	size_t lens[SBX_HTTP_MAX_PARAMS], n;

	for (size_t i = 0; i < s->n_routes; i++) {
		const struct sbx_http_route *rt = &s->routes[i];

		if (!sbx_http_match(rt->pattern, r->path, names, values, lens, &n))
			continue;
		path_known = true;
		if (rt->method && strcmp(rt->method, r->method) != 0 &&
		    !(strcmp(r->method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0))
			continue;
		r->route = rt;
		if (req_set_params(r, rt->pattern, r->path) < 0) {
			r->early_status = 503;
			r->early_message = "out of memory";
		}
		if (rt->max_body_bytes)
			r->body.max = rt->max_body_bytes;
		return;
	}
	if (path_known) {
		r->early_status = 405;
		r->early_message = "method not allowed for this path";
	}
}

/* ---- writing -------------------------------------------------------------- */

struct wreq {
	uv_write_t w;
	struct conn *c;
	char data[];
};

static void on_written(uv_write_t *w, int status)
{
	struct wreq *wr = (struct wreq *)w;
	struct conn *c = wr->c;
	struct sbx_http_req *r;
	size_t queued;

	sbx_free(wr);
	if (status < 0) {
		conn_close(c);
		return;
	}
	r = c->req;
	queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
	if (c->ws && queued < c->s->o.write_high_water / 2) {
		ws_drained(c->ws);
		return;
	}
	if (c->tunnel && queued < c->s->o.write_high_water / 2) {
		tunnel_client_drained(c->tunnel);
		return;
	}
	if (c->h2) {
		if (queued < c->s->o.write_high_water / 2)
			h2_flush(c);
		return;
	}
	if (r && r->on_drain && queued < c->s->o.write_high_water / 2) {
		void (*cb)(struct sbx_http_req *, void *) = r->on_drain;

		r->on_drain = NULL;
		cb(r, r->drain_arg);
	}
}

/* Sends up to three pieces as one write (copied). */
static int send_parts(struct conn *c, const void *a, size_t alen, const void *b, size_t blen,
		      const void *t, size_t tlen)
{
	struct wreq *wr;
	uv_buf_t buf;
	int rc;

	if (c->closing)
		return -ECONNRESET;
	if (c->ssl) {
		/* Into the TLS engine; its records go out through tls_flush. */
		if ((alen && SSL_write(c->ssl, a, (int)alen) <= 0) ||
		    (blen && SSL_write(c->ssl, b, (int)blen) <= 0) ||
		    (tlen && SSL_write(c->ssl, t, (int)tlen) <= 0))
			return -EIO;
		c->s->stats.bytes_out += alen + blen + tlen;
		return tls_flush(c);
	}
	wr = sbx_malloc(sizeof(*wr) + alen + blen + tlen);
	if (!wr)
		return -ENOMEM;
	wr->c = c;
	if (alen)
		memcpy(wr->data, a, alen);
	if (blen)
		memcpy(wr->data + alen, b, blen);
	if (tlen)
		memcpy(wr->data + alen + blen, t, tlen);
	buf = uv_buf_init(wr->data, (unsigned)(alen + blen + tlen));
	rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
	if (rc) {
		sbx_free(wr);
		return rc;
	}
	c->s->stats.bytes_out += alen + blen + tlen;
	return 0;
}

/* Our side is done. Unread bytes in the socket would make close() send a
 * reset that can destroy the response before the client reads it (an
 * upload answered early, say), so the connection lingers: it reads and
 * drops whatever still comes for up to a second, then closes. */
static void on_shutdown(uv_shutdown_t *sh, int status)
{
	struct conn *c = sh->data;

	if (status < 0 || c->closing) {
		conn_close(c);
		return;
	}
	c->lingering = true;
	uv_timer_start(&c->timer, on_timer, 1000, 0);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
		conn_close(c);
}

/* Closes after everything queued has been written. */
static void conn_shutdown(struct conn *c)
{
	if (c->closing || c->shutting)
		return;
	c->shutting = true;
	if (c->ssl && SSL_is_init_finished(c->ssl)) {
		SSL_shutdown(c->ssl); /* close_notify, then the TCP half-close */
		tls_flush(c);
	}
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_start(&c->timer, on_timer, c->s->o.idle_timeout_ms, 0);
	c->shutdown.data = c;
	if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown))
		conn_close(c);
}

/* Status line and headers into b. length < 0: chunked (or close-delimited). */
static int build_head(struct conn *c, struct sbx_http_req *r, struct sbx_buf *b, int status,
		      const char *content_type, long long length)
{
	bool no_body = status < 200 || status == 204 || status == 304;
	int rc;

	rc = sbx_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n", status,
			    sbx_http_reason(status), c->s->o.server_name, http_date(c->s));
	if (!rc && r && r->resp_headers.len)
		rc = sbx_buf_append(b, r->resp_headers.data, r->resp_headers.len);
	if (!rc && content_type && !no_body)
		rc = sbx_buf_printf(b, "Content-Type: %s\r\n", content_type);
	if (!rc && !no_body && length >= 0)
		rc = sbx_buf_printf(b, "Content-Length: %lld\r\n", length);
	else if (!rc && !no_body && r && r->chunked)
		rc = sbx_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
	if (!rc && !c->keep_alive)
		rc = sbx_buf_append_str(b, "Connection: close\r\n");
	if (!rc)
		rc = sbx_buf_append_str(b, "\r\n");
	c->s->stats.responses_by_class[status / 100 < 6 ? status / 100 : 5]++;
	return rc;
}

/* A JSON error answer to a request that never reached a handler; the
 * connection closes after it. */
static void send_early(struct conn *c, int status, const char *message)
{
	json_t *body = json_pack("{s:{s:i, s:s}}", "error", "status", status, "message", message);
	char *text = body ? sbx_json_dumps(body) : NULL;
	struct sbx_buf head;

	c->keep_alive = false;
	sbx_buf_init(&head, 4096);
	if (text &&
	    !build_head(c, NULL, &head, status, "application/json", (long long)strlen(text)))
		send_parts(c, head.data, head.len, text, strlen(text), NULL, 0);
	sbx_buf_release(&head);
	sbx_free(text);
	json_decref(body);
	conn_shutdown(c);
}

/* ---- the response API ----------------------------------------------------- */

int sbx_http_add_header(struct sbx_http_req *req, const char *name, const char *value)
{
	if (req->started)
		return -EALREADY;
	if (!valid_header(name, value))
		return -EINVAL;
	return sbx_buf_printf(&req->resp_headers, "%s: %s\r\n", name, value);
}

/* The response is complete: free the request and go on with the connection. */
static void finish(struct sbx_http_req *r)
{
	struct conn *c = r->c;

	r->ended = true;
	if (!c) {
		req_free(r);
		return;
	}
	c->req = NULL;
	c->handling = false;
	if (c->streaming) {
		/* Answered before its body was read: the rest of the body is
		 * not worth reading, so the connection ends here. */
		c->streaming = false;
		c->keep_alive = false;
		/* This may run inside the parser (a sink answering from its
		 * data callback): stop it before it reaches more of the body,
		 * or trailers, with no request to put them in. */
		http_parser_pause(&c->parser, 1);
	}
	c->body_paused = false;
	req_free(r);
	if (!c->keep_alive || c->s->closing) {
		conn_shutdown(c);
		return;
	}
	http_parser_pause(&c->parser, 0);
	uv_timer_start(&c->timer, on_timer, c->s->o.idle_timeout_ms, 0);
	conn_process(c);
}

static void decide_keep_alive(struct sbx_http_req *r)
{
	struct conn *c = r->c;

	/* A body still arriving will not be read: the connection ends. */
	c->keep_alive = c->keep_alive && http_should_keep_alive(&c->parser) && !c->s->closing &&
			!c->streaming;
}

/* ---- internal calls -------------------------------------------------------- */

static void call_capture_start(struct sbx_http_req *r, int status, const char *content_type)
{
	r->status = status;
	snprintf(r->resp_ctype, sizeof(r->resp_ctype), "%s", content_type ? content_type : "");
}

static void call_finish(struct sbx_http_req *r)
{
	r->ended = true;
	r->done(r->status, r->resp_ctype, r->captured.data ? r->captured.data : "", r->captured.len,
		r->done_arg);
	req_free(r);
}

int sbx_http_call(struct sbx_http_server *s, const char *method, const char *target,
		  const char *content_type, const void *body, size_t len, sbx_http_call_done done,
		  void *arg)
{
	struct sbx_http_req *r = sbx_calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->srv = s;
	r->done = done;
	r->done_arg = arg;
	r->call_ctype = content_type;
	sbx_buf_init(&r->arena, s->o.max_header_bytes);
	sbx_buf_init(&r->body, len + 1);
	sbx_buf_init(&r->resp_headers, 64 * 1024);
	sbx_buf_init(&r->captured, 64u << 20);
	r->target = r->path = r->query = "";
	snprintf(r->method, sizeof(r->method), "%s", method);
	if (sbx_buf_append(&r->arena, target, strlen(target) + 1) ||
	    sbx_buf_append(&r->body, body, len)) {
		req_free(r);
		return -ENOMEM;
	}
	split_target(r);
	route(s, r);
	if (!r->early_status && r->route && r->route->stream_body) {
		r->early_status = 405;
		r->early_message = "this endpoint takes a streamed body: not callable internally";
	}
	if (r->early_status)
		sbx_http_respond_error(r, r->early_status, r->early_message);
	else if (r->route)
		r->route->fn(r, r->route->arg);
	else
		sbx_http_respond_error(r, 404, "no such endpoint");
	return 0;
}

int sbx_http_respond(struct sbx_http_req *req, int status, const char *content_type,
		     const void *body, size_t len)
{
	struct conn *c = req->c;
	struct sbx_buf head;
	bool no_body = status < 200 || status == 204 || status == 304;
	int rc;

	if (req->started || req->ended)
		return -EALREADY;
	req->started = true;
	req->status = status;
	if (req->srv) {
		call_capture_start(req, status, content_type);
		if (sbx_buf_append(&req->captured, body, len))
			req->status = 500;
		call_finish(req);
		return 0;
	}
	if (req->stream_id)
		return h2_respond(req, status, content_type, body, len, false, (long long)len);
	if (!c || c->closing) {
		finish(req);
		return -ECONNRESET;
	}
	decide_keep_alive(req);
	sbx_buf_init(&head, 128 * 1024);
	rc = build_head(c, req, &head, status, content_type, no_body ? -1 : (long long)len);
	if (!rc)
		rc = send_parts(c, head.data, head.len, body, req->head || no_body ? 0 : len, NULL,
				0);
	sbx_buf_release(&head);
	if (rc)
		c->keep_alive = false;
	finish(req);
	return rc;
}

int sbx_http_respond_json(struct sbx_http_req *req, int status, const json_t *body)
{
	char *text = sbx_json_dumps(body);
	int rc;

	if (!text)
		return sbx_http_respond_error(req, 500, "out of memory");
	rc = sbx_http_respond(req, status, "application/json", text, strlen(text));
	sbx_free(text);
	return rc;
}

int sbx_http_respond_error(struct sbx_http_req *req, int status, const char *message)
{
	json_t *body = json_pack("{s:{s:i, s:s}}", "error", "status", status, "message", message);
	int rc;

	if (!body)
		return sbx_http_respond(req, status, "text/plain", message, strlen(message));
	rc = sbx_http_respond_json(req, status, body);
	json_decref(body);
	return rc;
}

/* The head of a streamed response: chunked (length < 0; close-delimited on
 * HTTP/1.0) or of a known length. */
static int start_stream(struct sbx_http_req *req, int status, const char *content_type,
			long long length)
{
	struct conn *c = req->c;
	struct sbx_buf head;
	int rc;

	if (req->started || req->ended)
		return -EALREADY;
	req->started = true;
	req->status = status;
	if (length >= 0) {
		req->sized = true;
		req->length_left = (uint64_t)length;
	}
	if (req->srv) {
		call_capture_start(req, status, content_type);
		return 0;
	}
	if (req->stream_id)
		return h2_respond(req, status, content_type, NULL, 0, true, length);
	if (!c || c->closing)
		return -ECONNRESET;
	decide_keep_alive(req);
	if (length < 0) {
		/* HTTP/1.0 has no chunked coding: the end of the body is the close. */
		if (c->parser.http_major == 1 && c->parser.http_minor >= 1)
			req->chunked = true;
		else
			c->keep_alive = false;
	}
	sbx_buf_init(&head, 128 * 1024);
	rc = build_head(c, req, &head, status, content_type, length);
	if (!rc)
		rc = send_parts(c, head.data, head.len, NULL, 0, NULL, 0);
	sbx_buf_release(&head);
	return rc;
}

int sbx_http_start(struct sbx_http_req *req, int status, const char *content_type)
{
	return start_stream(req, status, content_type, -1);
}

int sbx_http_start_sized(struct sbx_http_req *req, int status, const char *content_type,
			 uint64_t length)
{
	return start_stream(req, status, content_type, (long long)length);
}

int sbx_http_write(struct sbx_http_req *req, const void *data, size_t len)
{
	struct conn *c = req->c;
	char size_line[24];
	int rc;

	if (!req->started || req->ended)
		return -EINVAL;
	if (req->srv)
		return sbx_buf_append(&req->captured, data, len) ? -EMSGSIZE : 0;
	if (req->stream_id)
		return h2_write(req, data, len);
	if (!c || c->closing)
		return -ECONNRESET;
	if (len == 0 || req->head)
		return 0;
	if (req->sized) {
		if (len > req->length_left)
			return -EMSGSIZE;
		req->length_left -= len;
	}
	if (req->chunked) {
		int n = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);

		rc = send_parts(c, size_line, (size_t)n, data, len, "\r\n", 2);
	} else {
		rc = send_parts(c, data, len, NULL, 0, NULL, 0);
	}
	if (rc)
		return rc;
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->s->o.write_high_water;
}

int sbx_http_end(struct sbx_http_req *req)
{
	struct conn *c = req->c;
	int rc = 0;

	if (!req->started || req->ended)
		return -EINVAL;
	if (req->srv) {
		call_finish(req);
		return 0;
	}
	if (req->stream_id)
		return h2_end(req);
	if (c && !c->closing && req->chunked && !req->head)
		rc = send_parts(c, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
	if (c && req->sized && req->length_left && !req->head)
		c->keep_alive = false; /* short: the close tells the client */
	finish(req);
	return rc;
}

void sbx_http_abort(struct sbx_http_req *req)
{
	struct conn *c = req->c;

	req->ended = true;
	if (req->srv) {
		req->status = 502; /* the handler gave up halfway */
		call_finish(req);
		return;
	}
	if (req->stream_id) {
		/* One stream gives up, not the whole connection. */
		if (c && c->h2) {
			nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, req->stream_id,
						  NGHTTP2_INTERNAL_ERROR);
			h2_flush(c);
		}
		return;
	}
	if (!c) {
		req_free(req);
		return;
	}
	conn_close(c);
}

/* ---- streamed request bodies ---------------------------------------------- */

void sbx_http_stream_body(struct sbx_http_req *req, const struct sbx_http_body_sink *sink,
			  void *arg)
{
	req->sink = sink;
	req->sink_arg = arg;
	sbx_http_resume_body(req);
}

void sbx_http_pause_body(struct sbx_http_req *req)
{
	struct conn *c = req->c;

	if (req->stream_id) {
		req->h2_paused = true;
		return;
	}
	if (!c || !c->streaming || c->body_paused)
		return;
	c->body_paused = true;
	uv_timer_stop(&c->timer);
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

void sbx_http_resume_body(struct sbx_http_req *req)
{
	struct conn *c = req->c;

	if (req->stream_id) {
		h2_resume_body(req);
		return;
	}
	if (!c || !c->streaming || !c->body_paused || !req->sink || req->body_ended)
		return;
	c->body_paused = false;
	uv_timer_start(&c->timer, on_timer, c->s->o.idle_timeout_ms, 0);
	conn_process(c);
}

uint64_t sbx_http_body_received(const struct sbx_http_req *req)
{
	return req->body_received;
}

/* Hands streamed body bytes to the sink. Runs inside the parser: the sink
 * may answer (which frees r), so nothing here touches r after calling it. */
static int stream_data(struct conn *c, struct sbx_http_req *r, const char *at, size_t len)
{
	if (r->body_ended)
		return 0;
	r->body_received += len;
	if (r->body_received > r->body.max) {
		r->body_ended = true;
		c->keep_alive = false;
		sbx_http_pause_body(r);
		if (r->sink->end)
			r->sink->end(r, -EFBIG, r->sink_arg);
		return 0;
	}
	if (r->sink->data(r, at, len, r->sink_arg) < 0 && c->req == r) {
		r->body_ended = true;
		c->keep_alive = false;
		sbx_http_pause_body(r);
	}
	return 0;
}

static void stream_end(struct conn *c)
{
	struct sbx_http_req *r = c->req;

	c->streaming = false;
	if (!r || r->body_ended)
		return;
	r->body_ended = true;
	if (r->sink->end)
		r->sink->end(r, 0, r->sink_arg);
}

/* ---- parsing -------------------------------------------------------------- */

static struct conn *conn_of(http_parser *p)
{
	return p->data;
}

/* Rejects the request being parsed; the answer goes out after the parser
 * returns (see conn_process). -1, not 1: from on_headers_complete, 1 would
 * mean "no body follows" rather than an error. */
static int reject(struct sbx_http_req *r, int status, const char *message)
{
	r->early_status = status;
	r->early_message = message;
	return -1;
}

static int on_message_begin(http_parser *p)
{
	struct conn *c = conn_of(p);

	c->req = req_new(c);
	if (!c->req)
		return -1;
	c->seen_request = true;
	c->s->stats.requests++;
	/* The headers must arrive within header_timeout, however slowly sent. */
	uv_timer_start(&c->timer, on_timer, c->s->o.header_timeout_ms, 0);
	return 0;
}

static int arena_add(struct sbx_http_req *r, const char *at, size_t len)
{
	return sbx_buf_append(&r->arena, at, len) ? reject(r, 431, "request headers too large") : 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct sbx_http_req *r = conn_of(p)->req;

	return sbx_buf_append(&r->arena, at, len) ? reject(r, 414, "request target too long") : 0;
}

/* Ends the target or the previous header value with a NUL. */
static int close_piece(struct sbx_http_req *r)
{
	return arena_add(r, "", 1);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	struct sbx_http_req *r = c->req;
	struct hdr *grown;

	if (!r)
		return -1; /* answered already (see finish) */
	if (r->headers_done)
		return 0; /* a chunked body's trailers: path and query point into
			   * the arena, which must not move any more */

	if (r->last != H_FIELD) {
		if (close_piece(r))
			return -1;
		if (r->n_headers >= c->s->o.max_headers)
			return reject(r, 431, "too many request headers");
		grown = sbx_realloc(r->headers, (r->n_headers + 1) * sizeof(*grown));
		if (!grown)
			return reject(r, 503, "out of memory");
		r->headers = grown;
		r->headers[r->n_headers++] = (struct hdr){ .name = r->arena.len };
		r->last = H_FIELD;
	}
	return arena_add(r, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct sbx_http_req *r = conn_of(p)->req;

	if (!r)
		return -1;
	if (r->headers_done)
		return 0; /* trailers */
	if (r->last == H_FIELD) {
		if (close_piece(r))
			return -1;
		r->headers[r->n_headers - 1].value = r->arena.len;
		r->last = H_VALUE;
	}
	return arena_add(r, at, len);
}

/* Splits the target into path and query (the arena no longer moves). */
static void split_target(struct sbx_http_req *r)
{
	char *t = r->arena.data, *q;

	/* absolute-form (a client talking to a proxy): drop scheme and authority */
	if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
		char *slash = strchr(strstr(t, "://") + 3, '/');

		t = slash ? slash : (char *)"/";
	}
	r->target = t;
	q = strchr(t, '?');
	if (q && q >= r->arena.data && q < r->arena.data + r->arena.len) {
		*q = '\0';
		r->query = q + 1;
	}
	r->path = t;
}

static int on_headers_complete(http_parser *p)
{
	struct conn *c = conn_of(p);
	struct sbx_http_req *r = c->req;
	const char *expect;

	if (!r || close_piece(r))
		return -1;
	r->headers_done = true;
	/* An empty value never called on_header_value: point it at a NUL. */
	if (r->last == H_FIELD) {
		r->headers[r->n_headers - 1].value = r->arena.len - 1;
	}
	snprintf(r->method, sizeof(r->method), "%s", http_method_str(p->method));
	r->head = p->method == HTTP_HEAD;
	split_target(r);
	if (r->path[0] != '/' && strcmp(r->method, "OPTIONS") != 0)
		return reject(r, 400, "the request target must be a path");
	route(c->s, r);
	if (r->early_status == 503)
		return -1;
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > r->body.max) {
		snprintf(r->early_text, sizeof(r->early_text),
			 "request body too large (the limit is %zu bytes)", r->body.max);
		return reject(r, 413, r->early_text);
	}
	expect = sbx_http_header(r, "Expect");
	if (expect && p->http_minor >= 1) {
		if (strcasecmp(expect, "100-continue") != 0)
			return reject(r, 417, "unsupported Expect header");
		if (!r->early_status)
			send_parts(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0);
	}
	/* The body may take longer than the headers: an inactivity limit now. */
	uv_timer_start(&c->timer, on_timer, c->s->o.idle_timeout_ms, 0);
	if (!r->early_status && r->route && r->route->stream_body) {
		/* Stop here: the handler gets the request before its body. */
		r->streamed = true;
		c->headers_ready = true;
		http_parser_pause(p, 1);
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct conn *c = conn_of(p);
	struct sbx_http_req *r = c->req;

	if (!r || r->early_status)
		return 0; /* answered already, or 404/405: the body is dropped */
	if (r->streamed)
		return stream_data(c, r, at, len);
	return sbx_buf_append(&r->body, at, len) ? reject(r, 413, "request body too large") : 0;
}

static int on_message_complete(http_parser *p)
{
	struct conn *c = conn_of(p);

	c->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* ---- connections ---------------------------------------------------------- */

/* Headers too slow, a body stalled, or an idle keep-alive connection. */
static void on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;

	/* Shutting down (a client that does not read what we send, or the
	 * end of lingering), or a stalled body (the handler hears of it). */
	if (c->shutting || (c->streaming && !c->body_paused))
		conn_close(c);
	else if (c->req && !c->handling)
		send_early(c, 408, "request not received in time");
	else if (!c->handling)
		conn_close(c);
}

/* The authorize check (for non-public routes, 405s and unknown paths),
 * then the early answer, the route's handler, or the not-found answer. */
static void run_handler(struct sbx_http_server *s, struct sbx_http_req *r)
{
	if (r->early_status == 405 || (!r->early_status && !(r->route && r->route->public))) {
		if (s->o.authorize && !s->o.authorize(r, s->o.authorize_arg))
			return;
	}
	if (r->early_status)
		sbx_http_respond_error(r, r->early_status, r->early_message);
	else if (r->route)
		r->route->fn(r, r->route->arg);
	else if (s->o.not_found)
		s->o.not_found(r, s->o.not_found_arg);
	else
		sbx_http_respond_error(r, 404, "no such endpoint");
}

static void dispatch(struct conn *c)
{
	struct sbx_http_req *r = c->req;
	struct sbx_http_server *s = c->s;

	c->handling = true;
	uv_timer_stop(&c->timer);
	if (r->streamed) {
		/* The body waits until the handler asks for it. */
		c->streaming = true;
		c->body_paused = true;
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->reading = false;
		}
	}
	run_handler(s, r);
}

/* Parses what is pending and dispatches complete requests, one at a time.
 * A loop rather than recursion: handlers that answer at once would otherwise
 * nest one call per pipelined request. */
static void conn_process(struct conn *c)
{
	if (c->processing) {
		c->again = true;
		return;
	}
	if (!c->seen_request && !c->h2 && h2_maybe_start(c))
		return;
	c->processing = true;
	do {
		c->again = false;
		while (!c->closing && !c->shutting && c->pending.len &&
		       (!c->handling || (c->streaming && !c->body_paused))) {
			size_t n = http_parser_execute(&c->parser, &settings, c->pending.data,
						       c->pending.len);
			enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

			if (err != HPE_OK && err != HPE_PAUSED) {
				struct sbx_http_req *r = c->req;

				send_early(c, r && r->early_status ? r->early_status : 400,
					   r && r->early_status ? r->early_message
								: http_errno_description(err));
				break;
			}
			sbx_buf_consume(&c->pending, n);
			if (c->headers_ready) {
				c->headers_ready = false;
				http_parser_pause(&c->parser, 0);
				dispatch(c);
				continue;
			}
			if (!c->complete)
				break;
			c->complete = false;
			if (c->streaming)
				stream_end(c);
			else if (c->req && !c->shutting)
				dispatch(c);
		}
	} while (c->again);
	c->processing = false;
	if (c->closing || c->shutting)
		return;
	/* Read while no handler holds a request: backpressure for pipelining
	 * and for handlers that take their time. */
	if ((!c->handling || (c->streaming && !c->body_paused)) && !c->reading) {
		c->reading = true;
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->s->read_buf, sizeof(c->s->read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;

	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0 || c->lingering)
		return;
	if (c->ssl) {
		tls_input(c, buf->base, (size_t)nread);
		return;
	}
	conn_input(c, buf->base, (size_t)nread);
}

/* Bytes from the client (decrypted, with TLS), as each mode wants them. */
static void conn_input(struct conn *c, const char *data, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	const uv_buf_t *buf = &b;
	ssize_t nread = (ssize_t)len;
	uv_stream_t *stream = (uv_stream_t *)&c->tcp;

	c->s->stats.bytes_in += (uint64_t)nread;
	if (c->ws) {
		ws_input(c->ws, buf->base, (size_t)nread);
		return;
	}
	if (c->tunnel && c->tunnel->connected) {
		tunnel_from_client(c->tunnel, buf->base, (size_t)nread);
		return;
	}
	if (c->h2) {
		h2_input(c, buf->base, (size_t)nread);
		return;
	}
	if (sbx_buf_append(&c->pending, buf->base, (size_t)nread)) {
		send_early(c, 431, "request too large");
		return;
	}
	if (c->streaming && !c->body_paused)
		uv_timer_start(&c->timer, on_timer, c->s->o.idle_timeout_ms, 0);
	else if (c->handling) {
		/* Bytes of the next request arrived while this one is handled:
		 * keep them, and stop reading until the answer is out. */
		uv_read_stop(stream);
		c->reading = false;
		return;
	}
	conn_process(c);
}

static void maybe_free_server(struct sbx_http_server *s)
{
	void (*done)(void *) = s->done;
	void *arg = s->done_arg;

	if (!s->closing || s->conns || s->open_listeners)
		return;
	sbx_free(s);
	if (done)
		done(arg);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct sbx_http_server *s = c->s;

	if (--c->handles > 0)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->stats.connections_open--;
	sbx_buf_release(&c->pending);
	SSL_free(c->ssl);
	sbx_free(c);
	maybe_free_server(s);
}

static void conn_close(struct conn *c)
{
	struct sbx_http_req *r = c->req;

	if (c->closing)
		return;
	c->closing = true;
	c->req = NULL;
	if (c->ws)
		ws_gone(c->ws);
	if (c->tunnel)
		tunnel_client_gone(c->tunnel);
	if (c->h2)
		h2_conn_gone(c);
	if (r) {
		/* The handler learns that nobody waits for its answer any more. */
		r->c = NULL;
		if (c->handling && !r->ended && r->on_abort)
			r->on_abort(r, r->abort_arg);
		req_free(r);
	}
	uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void peer_name(struct conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	c->peer[0] = '\0';
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET6)
		uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
	else
		uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
}

/* Adds a connection (its tcp and timer handles initialised) to the server. */
static void conn_link(struct sbx_http_server *s, struct conn *c)
{
	c->s = s;
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.connections_open++;
}

/* Starts a linked connection whose tcp handle is connected (by accept, or
 * by a test harness): reads, parses, answers. */
static void conn_start(struct sbx_http_server *s, struct conn *c)
{
	/* Bytes past the current message: at most one read plus a header. */
	sbx_buf_init(&c->pending, sizeof(s->read_buf) + s->o.max_header_bytes + 4096);
	peer_name(c);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->keep_alive = true;
	if (s->stats.connections_open > s->o.max_connections) {
		s->stats.connections_rejected++;
		send_early(c, 503, "too many connections");
		return;
	}
	uv_timer_start(&c->timer, on_timer, s->o.header_timeout_ms, 0);
	c->reading = true;
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	struct sbx_http_server *s = l->s;
	struct conn *c;

	if (status < 0 || s->closing)
		return;
	c = sbx_calloc(1, sizeof(*c));
	if (!c)
		return;
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	conn_link(s, c);
	if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
		conn_close(c);
		return;
	}
	s->stats.connections_accepted++;
	uv_tcp_nodelay(&c->tcp, 1);
	if (l->tls && tls_attach(c, l->tls)) {
		conn_close(c);
		return;
	}
	conn_start(s, c);
}

/* ---- the server ----------------------------------------------------------- */

int sbx_http_server_new(uv_loop_t *loop, const struct sbx_http_server_opts *opts,
			const struct sbx_http_route *routes, size_t n_routes,
			struct sbx_http_server **out)
{
	struct sbx_http_server *s = sbx_calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->o = opts ? *opts : (struct sbx_http_server_opts){ 0 };
	if (!s->o.max_header_bytes)
		s->o.max_header_bytes = 65536;
	if (!s->o.max_headers)
		s->o.max_headers = 100;
	if (!s->o.max_body_bytes)
		s->o.max_body_bytes = 1u << 20;
	if (!s->o.max_connections)
		s->o.max_connections = 1024;
	if (!s->o.header_timeout_ms)
		s->o.header_timeout_ms = 30000;
	if (!s->o.idle_timeout_ms)
		s->o.idle_timeout_ms = 75000;
	if (!s->o.write_high_water)
		s->o.write_high_water = 256 * 1024;
	if (!s->o.server_name)
		s->o.server_name = "sbx";
	s->routes = routes;
	s->n_routes = n_routes;
	*out = s;
	return 0;
}

/* "host:port", "[v6]:port" or ":port" into a socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(addr, ':');
	long port;
	char *end;
	size_t hlen;

	if (!colon)
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return -EINVAL;
	hlen = (size_t)(colon - addr);
	if (hlen && addr[0] == '[') {
		if (hlen < 2 || addr[hlen - 1] != ']' || hlen - 2 >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr + 1, hlen - 2);
		host[hlen - 2] = '\0';
		return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
	}
	if (hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	return uv_ip4_addr(hlen ? host : "0.0.0.0", (int)port, (struct sockaddr_in *)ss);
}

int sbx_http_server_listen(struct sbx_http_server *s, const char *addr)
{
	struct sockaddr_storage ss;
	struct listener *l;
	int rc;

	if (s->n_listeners >= MAX_LISTENERS)
		return -E2BIG;
	if ((rc = parse_addr(addr, &ss)))
		return rc;
	l = &s->listeners[s->n_listeners];
	l->s = s;
	uv_tcp_init(s->loop, &l->tcp);
	l->tcp.data = l;
	s->open_listeners++;
	s->n_listeners++;
	if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) ||
	    (rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection))) {
		s->n_listeners--;
		uv_close((uv_handle_t *)&l->tcp, NULL);
		s->open_listeners--;
		return rc;
	}
	return 0;
}

int sbx_http_server_port(const struct sbx_http_server *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (!s->n_listeners ||
	    uv_tcp_getsockname(&s->listeners[0].tcp, (struct sockaddr *)&ss, &len))
		return -1;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
}

const struct sbx_http_stats *sbx_http_server_stats(const struct sbx_http_server *s)
{
	return &s->stats;
}

static void on_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	struct sbx_http_server *s = l->s;

	s->open_listeners--;
	SSL_CTX_free(l->tls); /* connections hold their own references */
	l->tls = NULL;
	maybe_free_server(s);
}

void sbx_http_server_close(struct sbx_http_server *s, void (*done)(void *arg), void *arg)
{
	struct conn *c, *next;

	s->closing = true;
	s->done = done;
	s->done_arg = arg;
	for (int i = 0; i < s->n_listeners; i++)
		uv_close((uv_handle_t *)&s->listeners[i].tcp, on_listener_closed);
	/* Idle connections go now; busy ones after their answer (finish sees
	 * s->closing). */
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (!c->req)
			conn_close(c);
		else
			c->keep_alive = false;
	}
	maybe_free_server(s);
}

/* ---- WebSocket -------------------------------------------------------------- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
			  void *user)
{
	struct sbx_ws *ws = user;
	size_t n = ws->in.len - ws->in_off;

	if (!n) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (n > len)
		n = len;
	memcpy(buf, ws->in.data + ws->in_off, n);
	ws->in_off += n;
	return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
			  void *user)
{
	struct sbx_ws *ws = user;
	struct conn *c = ws->c;

	if (!c || c->closing) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->s->o.write_high_water) {
		ws->blocked = true;
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (send_parts(c, data, len, NULL, 0, NULL, 0)) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
		      void *user)
{
	struct sbx_ws *ws = user;

	if ((m->opcode == WSLAY_TEXT_FRAME || m->opcode == WSLAY_BINARY_FRAME) && ws->cb->message)
		ws->cb->message(ws, m->opcode == WSLAY_TEXT_FRAME ? SBX_WS_TEXT : SBX_WS_BINARY,
				(const char *)m->msg, m->msg_length, ws->arg);
}

/* Flushes what wslay has queued; ends the connection once both sides have
 * closed (or wslay has given up on it). */
static void ws_flush(struct sbx_ws *ws)
{
	struct conn *c = ws->c;

	if (!c || c->closing || c->shutting)
		return;
	ws->blocked = false;
	if (wslay_event_send(ws->ctx)) {
		conn_close(c);
		return;
	}
	if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
		conn_shutdown(c);
}

static void ws_input(struct sbx_ws *ws, const char *data, size_t len)
{
	struct conn *c = ws->c;

	if (sbx_buf_append(&ws->in, data, len)) {
		conn_close(c);
		return;
	}
	if (wslay_event_recv(ws->ctx)) {
		if (ws->c)
			conn_close(ws->c);
		return;
	}
	if (!ws->c)
		return; /* a message callback closed it */
	sbx_buf_consume(&ws->in, ws->in_off);
	ws->in_off = 0;
	ws_flush(ws);
}

static void ws_drained(struct sbx_ws *ws)
{
	if (ws->blocked)
		ws_flush(ws);
	if (ws->c && !ws->blocked && ws->cb->drain)
		ws->cb->drain(ws, ws->arg);
}

/* The connection is closing: tell the owner, free everything. */
static void ws_gone(struct sbx_ws *ws)
{
	ws->c->ws = NULL;
	ws->c = NULL;
	if (ws->cb->closed)
		ws->cb->closed(ws, ws->arg);
	wslay_event_context_free(ws->ctx);
	sbx_buf_release(&ws->in);
	sbx_free(ws);
}

void sbx_ws_accept_key(const char *key, char out[SBX_WS_ACCEPT_SIZE])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char digest[SHA_DIGEST_LENGTH];
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	/* With no context (out of memory) the answer is empty: the peer refuses. */
	out[0] = '\0';
	if (md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) &&
	    EVP_DigestUpdate(md, key, strlen(key)) &&
	    EVP_DigestUpdate(md, guid, sizeof(guid) - 1) && EVP_DigestFinal_ex(md, digest, NULL))
		EVP_EncodeBlock((unsigned char *)out, digest, sizeof(digest));
	EVP_MD_CTX_free(md);
}

/* Does the comma-separated header value hold token (case-insensitive)? */
static bool has_token(const char *value, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = value; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, token, n) == 0 &&
		    (!p[n] || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
			return true;
		p = strchr(p, ',');
	}
	return false;
}

int sbx_http_websocket(struct sbx_http_req *req, const struct sbx_ws_callbacks *cb, void *arg,
		       size_t max_message, struct sbx_ws **out)
{
	static const struct wslay_event_callbacks wcb = { .recv_callback = ws_recv_cb,
							  .send_callback = ws_send_cb,
							  .on_msg_recv_callback = ws_msg_cb };
	const char *key = sbx_http_header(req, "Sec-WebSocket-Key");
	const char *version = sbx_http_header(req, "Sec-WebSocket-Version");
	struct conn *c = req->c;
	char accept[SBX_WS_ACCEPT_SIZE], *raw = NULL;
	size_t raw_len = 0;
	struct sbx_buf head;
	struct sbx_ws *ws;

	if (!c || c->closing || req->srv || strcmp(req->method, "GET") != 0 ||
	    !has_token(sbx_http_header(req, "Upgrade"), "websocket") ||
	    !has_token(sbx_http_header(req, "Connection"), "upgrade") || !key ||
	    sbx_base64_decode(key, strlen(key), &raw, &raw_len) || raw_len != 16) {
		sbx_free(raw);
		sbx_http_respond_error(req, 400,
				       "a WebSocket upgrade (GET with Upgrade: websocket, "
				       "Connection: Upgrade and a Sec-WebSocket-Key) "
				       "is expected here");
		return -EINVAL;
	}
	sbx_free(raw);
	if (!version || strcmp(version, "13") != 0) {
		sbx_http_add_header(req, "Sec-WebSocket-Version", "13");
		sbx_http_respond_error(req, 426, "WebSocket version 13 is required");
		return -EINVAL;
	}
	ws = sbx_calloc(1, sizeof(*ws));
	if (!ws || wslay_event_context_server_init(&ws->ctx, &wcb, ws)) {
		sbx_free(ws);
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message ? max_message : 1u << 20);
	sbx_buf_init(&ws->in, (max_message ? max_message : 1u << 20) + sizeof(c->s->read_buf) +
				      c->pending.max);
	sbx_ws_accept_key(key, accept);
	sbx_buf_init(&head, 128 * 1024);
	sbx_buf_printf(&head,
		       "HTTP/1.1 101 Switching Protocols\r\nServer: %s\r\nUpgrade: websocket\r\n"
		       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
		       c->s->o.server_name, accept);
	sbx_buf_append(&head, req->resp_headers.data ? req->resp_headers.data : "",
		       req->resp_headers.len);
	sbx_buf_append_str(&head, "\r\n");
	send_parts(c, head.data, head.len, NULL, 0, NULL, 0);
	sbx_buf_release(&head);
	c->s->stats.responses_by_class[1]++;
	/* The connection is the WebSocket's now; the request is done. */
	req->started = req->ended = true;
	c->req = NULL;
	c->handling = false;
	c->keep_alive = false;
	req_free(req);
	ws->c = c;
	ws->cb = cb;
	ws->arg = arg;
	c->ws = ws;
	uv_timer_stop(&c->timer);
	/* Frames the client sent right behind its handshake. */
	if (c->pending.len) {
		sbx_buf_append(&ws->in, c->pending.data, c->pending.len);
		sbx_buf_reset(&c->pending);
	}
	if (!c->reading) {
		c->reading = true;
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
	*out = ws;
	if (ws->in.len)
		ws_input(ws, "", 0);
	return 0;
}

int sbx_ws_send(struct sbx_ws *ws, int opcode, const void *data, size_t len)
{
	struct wslay_event_msg m = { .opcode = opcode == SBX_WS_BINARY ? WSLAY_BINARY_FRAME
								       : WSLAY_TEXT_FRAME,
				     .msg = data,
				     .msg_length = len };
	struct conn *c = ws->c;

	if (!c || c->closing || c->shutting)
		return -ECONNRESET;
	/* wslay copies the message when it is queued. */
	if (wslay_event_queue_msg(ws->ctx, &m))
		return -ENOMEM;
	ws_flush(ws);
	if (!ws->c)
		return -ECONNRESET;
	return ws->blocked ||
	       uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->s->o.write_high_water;
}

void sbx_ws_close(struct sbx_ws *ws, uint16_t code, const char *reason)
{
	if (!ws->c)
		return;
	wslay_event_queue_close(ws->ctx, code, (const uint8_t *)(reason ? reason : ""),
				reason ? strlen(reason) : 0);
	ws_flush(ws);
}

const char *sbx_ws_peer(const struct sbx_ws *ws)
{
	return ws->c ? ws->c->peer : "";
}

/* ---- tunnels ------------------------------------------------------------------ */

struct twrite {
	uv_write_t w;
	struct tunnel *t;
	char data[];
};

static void tunnel_up_closed(uv_handle_t *h)
{
	struct tunnel *t = h->data;

	sbx_buf_release(&t->head);
	sbx_free(t);
}

/* Ends both sides. */
static void tunnel_close(struct tunnel *t)
{
	struct conn *c = t->c;

	if (t->closing)
		return;
	t->closing = true;
	if (c) {
		c->tunnel = NULL;
		t->c = NULL;
		conn_shutdown(c); /* what was queued for the client still goes */
	}
	uv_close((uv_handle_t *)&t->up, tunnel_up_closed);
}

static void tunnel_client_gone(struct tunnel *t)
{
	t->c->tunnel = NULL;
	t->c = NULL;
	if (t->req) {
		/* Gone before upstream answered the connect: the request is
		 * freed with the connection; the connect callback sees this. */
		t->req = NULL;
	}
	tunnel_close(t);
}

static void up_written(uv_write_t *w, int status)
{
	struct twrite *tw = (struct twrite *)w;
	struct tunnel *t = tw->t;

	sbx_free(tw);
	if (status < 0) {
		tunnel_close(t);
		return;
	}
	/* Upstream took the backlog: read the client again. */
	if (t->c && !t->c->reading && !t->closing &&
	    uv_stream_get_write_queue_size((uv_stream_t *)&t->up) < t->high_water / 2) {
		t->c->reading = true;
		uv_read_start((uv_stream_t *)&t->c->tcp, on_alloc, on_read);
	}
}

static int up_send(struct tunnel *t, const char *data, size_t len)
{
	struct twrite *tw = sbx_malloc(sizeof(*tw) + len);
	uv_buf_t b;

	if (!tw)
		return -ENOMEM;
	tw->t = t;
	memcpy(tw->data, data, len);
	b = uv_buf_init(tw->data, (unsigned)len);
	if (uv_write(&tw->w, (uv_stream_t *)&t->up, &b, 1, up_written)) {
		sbx_free(tw);
		return -EPIPE;
	}
	return 0;
}

static void tunnel_from_client(struct tunnel *t, const char *data, size_t len)
{
	if (t->closing || up_send(t, data, len)) {
		tunnel_close(t);
		return;
	}
	if (t->c && uv_stream_get_write_queue_size((uv_stream_t *)&t->up) > t->high_water) {
		uv_read_stop((uv_stream_t *)&t->c->tcp); /* upstream is behind */
		t->c->reading = false;
	}
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void up_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct tunnel *t = st->data;
	struct conn *c = t->c;

	if (n < 0 || !c) {
		tunnel_close(t);
		return;
	}
	if (n == 0)
		return;
	if (send_parts(c, buf->base, (size_t)n, NULL, 0, NULL, 0)) {
		tunnel_close(t);
		return;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->s->o.write_high_water) {
		uv_read_stop(st); /* the client is behind */
		t->up_reading = false;
	}
}

static void tunnel_client_drained(struct tunnel *t)
{
	if (!t->up_reading && t->connected && !t->closing) {
		t->up_reading = true;
		uv_read_start((uv_stream_t *)&t->up, up_alloc, up_read);
	}
}

static void tunnel_connected(uv_connect_t *cr, int status)
{
	struct tunnel *t = cr->data;
	struct sbx_http_req *req = t->req;
	struct conn *c;

	if (!req) { /* the client went away meanwhile */
		if (!t->closing)
			tunnel_close(t);
		return;
	}
	c = req->c;
	t->req = NULL;
	if (status < 0) {
		char msg[160];

		snprintf(msg, sizeof(msg), "cannot reach the upstream: %s", uv_strerror(status));
		sbx_http_on_abort(req, NULL, NULL);
		c->tunnel = NULL;
		t->c = NULL;
		t->closing = true;
		uv_close((uv_handle_t *)&t->up, tunnel_up_closed);
		sbx_http_respond_error(req, 502, msg);
		return;
	}
	/* The connection is the tunnel's now; the request is done. */
	t->connected = true;
	req->started = req->ended = true;
	c->req = NULL;
	c->handling = false;
	c->keep_alive = false;
	req_free(req);
	uv_timer_stop(&c->timer);
	if (up_send(t, t->head.data, t->head.len) ||
	    (c->pending.len && up_send(t, c->pending.data, c->pending.len))) {
		tunnel_close(t);
		return;
	}
	sbx_buf_reset(&c->pending);
	t->up_reading = true;
	uv_read_start((uv_stream_t *)&t->up, up_alloc, up_read);
	if (!c->reading) {
		c->reading = true;
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
}

static void tunnel_req_gone(struct sbx_http_req *req, void *arg)
{
	struct tunnel *t = arg;

	t->req = NULL; /* tunnel_client_gone has closed, or will close, upstream */
}

int sbx_http_tunnel(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o)
{
	struct conn *c = req->c;
	struct sockaddr_storage ss;
	struct tunnel *t;
	int rc;

	if (!c || c->closing || req->srv) {
		sbx_http_respond_error(req, 500, "a tunnel needs a client connection");
		return -ENOTCONN;
	}
	if ((rc = parse_addr(o->upstream, &ss))) {
		sbx_http_respond_error(req, 502,
				       "the upstream address is not an IP address and port");
		return rc;
	}
	t = sbx_calloc(1, sizeof(*t));
	if (!t) {
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	sbx_buf_init(&t->head, c->s->o.max_header_bytes * 2 + 1024);
	sbx_buf_printf(&t->head, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method, o->path,
		       o->host ? o->host : o->upstream);
	for (unsigned i = 0; i < req->n_headers; i++) {
		const char *name = req->arena.data + req->headers[i].name;
		bool drop = strcasecmp(name, "Host") == 0;

		for (const char *const *d = o->drop_headers; d && *d && !drop; d++)
			drop = strcasecmp(name, *d) == 0;
		if (!drop)
			sbx_buf_printf(&t->head, "%s: %s\r\n", name,
				       req->arena.data + req->headers[i].value);
	}
	if (sbx_buf_append_str(&t->head, "\r\n")) {
		sbx_buf_release(&t->head);
		sbx_free(t);
		sbx_http_respond_error(req, 431, "request head too large to pass on");
		return -E2BIG;
	}
	t->c = c;
	t->req = req;
	t->high_water = c->s->o.write_high_water;
	c->tunnel = t;
	uv_tcp_init(c->s->loop, &t->up);
	t->up.data = t;
	t->connect.data = t;
	sbx_http_on_abort(req, tunnel_req_gone, t);
	rc = uv_tcp_connect(&t->connect, &t->up, (const struct sockaddr *)&ss, tunnel_connected);
	if (rc) {
		sbx_http_on_abort(req, NULL, NULL);
		c->tunnel = NULL;
		t->c = NULL;
		t->closing = true;
		uv_close((uv_handle_t *)&t->up, tunnel_up_closed);
		sbx_http_respond_error(req, 502, "cannot connect to the upstream");
		return rc;
	}
	return 0;
}

/* ---- HTTP/2 (h2c with prior knowledge, nghttp2) ---------------------------------- */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#define H2_MAX_STREAMS 100
#define H2_WINDOW      (1u << 20)

/* A stream's request body, as the handler is ready for it. */
static void h2_body_to_sink(struct sbx_http_req *r, const char *data, size_t len)
{
	struct conn *c = r->c;

	if (r->body_ended)
		goto consume;
	r->body_received += len;
	if (r->body_received > r->body.max) {
		r->body_ended = true;
		if (r->sink && r->sink->end)
			r->sink->end(r, -EFBIG, r->sink_arg);
		goto consume;
	}
	if (!r->sink) {
		/* The handler has not asked for the body yet: hold it. */
		if (sbx_buf_append(&r->body, data, len)) {
			r->body_ended = true;
			nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, r->stream_id,
						  NGHTTP2_FLOW_CONTROL_ERROR);
		}
		r->h2_unconsumed += len; /* given back when the sink takes it */
		return;
	}
	if (r->sink->data(r, data, len, r->sink_arg) < 0)
		r->body_ended = true;
	if (r->h2_paused) {
		r->h2_unconsumed += len;
		return;
	}
consume:
	nghttp2_session_consume(c->h2, r->stream_id, len);
}

static void h2_resume_body(struct sbx_http_req *r)
{
	struct conn *c = r->c;

	if (!c || !c->h2)
		return;
	r->h2_paused = false;
	if (r->sink && r->body.len) {
		/* What came before the sink did. */
		struct sbx_buf held = r->body;

		sbx_buf_init(&r->body, held.max);
		if (!r->body_ended && r->sink->data(r, held.data, held.len, r->sink_arg) < 0)
			r->body_ended = true;
		sbx_buf_release(&held);
		if (!r->c)
			return;
	}
	if (r->h2_unconsumed && !r->h2_paused) {
		nghttp2_session_consume(c->h2, r->stream_id, r->h2_unconsumed);
		r->h2_unconsumed = 0;
	}
	if (r->sink && r->h2_body_done && !r->body_ended && !r->h2_paused) {
		r->body_ended = true;
		if (r->sink->end)
			r->sink->end(r, 0, r->sink_arg);
	}
	h2_flush(c);
}

static void h2_dispatch(struct sbx_http_req *r)
{
	run_handler(r->c->s, r);
}

/* The request's headers are complete: arrange them as HTTP/1's are (the
 * target first in the arena), route, and dispatch a streamed route now. */
static int h2_headers_done(struct conn *c, struct sbx_http_req *r, bool end_stream)
{
	const char *p = r->h2_hdrs.data, *end = p + r->h2_hdrs.len, *path = NULL, *authority = NULL;
	const char *clen = NULL;

	for (const char *q = p; q < end;) {
		const char *name = q, *value = q + strlen(q) + 1;

		if (!strcmp(name, ":path"))
			path = value;
		else if (!strcmp(name, ":authority"))
			authority = value;
		else if (!strcmp(name, ":method"))
			snprintf(r->method, sizeof(r->method), "%s", value);
		else if (!strcmp(name, "content-length"))
			clen = value;
		q = value + strlen(value) + 1;
	}
	if (!path || !r->method[0])
		return NGHTTP2_ERR_CALLBACK_FAILURE; /* a malformed request: reset */
	sbx_buf_reset(&r->arena);
	if (sbx_buf_append(&r->arena, path, strlen(path) + 1))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (authority && (r->n_headers || true)) {
		struct hdr *h = sbx_realloc(r->headers, (r->n_headers + 1) * sizeof(*h));

		if (!h)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		r->headers = h;
		h[r->n_headers].name = r->arena.len;
		sbx_buf_append(&r->arena, "Host", 5);
		h[r->n_headers].value = r->arena.len;
		sbx_buf_append(&r->arena, authority, strlen(authority) + 1);
		r->n_headers++;
	}
	for (const char *q = p; q < end;) {
		const char *name = q, *value = q + strlen(q) + 1;
		struct hdr *h;

		q = value + strlen(value) + 1;
		if (name[0] == ':')
			continue;
		if (r->n_headers >= c->s->o.max_headers)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		h = sbx_realloc(r->headers, (r->n_headers + 1) * sizeof(*h));
		if (!h)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		r->headers = h;
		h[r->n_headers].name = r->arena.len;
		if (sbx_buf_append(&r->arena, name, strlen(name) + 1))
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		h[r->n_headers].value = r->arena.len;
		if (sbx_buf_append(&r->arena, value, strlen(value) + 1))
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		r->n_headers++;
	}
	sbx_buf_release(&r->h2_hdrs);
	r->headers_done = true;
	r->head = strcmp(r->method, "HEAD") == 0;
	split_target(r);
	if (r->path[0] != '/' && strcmp(r->method, "OPTIONS") != 0) {
		r->early_status = 400;
		r->early_message = "the request target must be a path";
	}
	if (!r->early_status)
		route(c->s, r);
	if (!r->early_status && clen && strtoull(clen, NULL, 10) > r->body.max) {
		snprintf(r->early_text, sizeof(r->early_text),
			 "request body too large (the limit is %zu bytes)", r->body.max);
		r->early_status = 413;
		r->early_message = r->early_text;
	}
	if (!r->early_status && r->route && r->route->stream_body) {
		r->streamed = true;
		r->h2_body_done = end_stream;
		h2_dispatch(r);
		return 0;
	}
	if (end_stream || r->early_status)
		h2_dispatch(r);
	return 0;
}

static int h2_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	struct conn *c = user;
	struct sbx_http_req *r;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	r = req_new(c);
	if (!r)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	r->stream_id = f->hd.stream_id;
	r->h2_next = c->h2_streams;
	if (c->h2_streams)
		c->h2_streams->h2_prev = r;
	c->h2_streams = r;
	sbx_buf_init(&r->h2_hdrs, c->s->o.max_header_bytes);
	sbx_buf_init(&r->h2_out, SIZE_MAX / 2);
	c->s->stats.requests++;
	nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, r);
	return 0;
}

static int h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user)
{
	struct sbx_http_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);

	if (!r || r->headers_done)
		return 0; /* trailers are dropped, as on HTTP/1 */
	if (sbx_buf_append(&r->h2_hdrs, name, namelen) || sbx_buf_append(&r->h2_hdrs, "", 1) ||
	    sbx_buf_append(&r->h2_hdrs, value, valuelen) || sbx_buf_append(&r->h2_hdrs, "", 1)) {
		/* Over the header limit: 431 for this stream alone. */
		r->early_status = 431;
		r->early_message = "request headers too large";
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static int h2_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	struct conn *c = user;
	struct sbx_http_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;

	if (!r)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && !r->headers_done &&
	    (f->hd.flags & NGHTTP2_FLAG_END_HEADERS))
		return h2_headers_done(c, r, end);
	if (end && r->headers_done && !r->started && !r->streamed && !r->early_status)
		h2_dispatch(r); /* the body is complete */
	else if (end && r->streamed) {
		r->h2_body_done = true;
		if (r->sink && !r->body_ended && !r->h2_paused && !r->body.len) {
			r->body_ended = true;
			if (r->sink->end)
				r->sink->end(r, 0, r->sink_arg);
		}
	}
	return 0;
}

static int h2_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
		      size_t len, void *user)
{
	struct conn *c = user;
	struct sbx_http_req *r = nghttp2_session_get_stream_user_data(ng, id);

	if (!r || r->early_status || r->ended) {
		nghttp2_session_consume(c->h2, id, len);
		return 0;
	}
	if (r->streamed) {
		h2_body_to_sink(r, (const char *)data, len);
		return 0;
	}
	nghttp2_session_consume(c->h2, id, len);
	if (sbx_buf_append(&r->body, data, len)) {
		r->early_status = 413;
		r->early_message = "request body too large";
		h2_dispatch(r);
	}
	return 0;
}

static int h2_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
	struct sbx_http_req *r = nghttp2_session_get_stream_user_data(ng, id);

	if (!r)
		return 0;
	nghttp2_session_set_stream_user_data(ng, id, NULL);
	h2_unlink(user, r);
	/* Reset or gone before the answer ended: the handler hears of it. */
	if (!r->ended && r->on_abort) {
		r->c = NULL;
		r->on_abort(r, r->abort_arg);
	}
	req_free(r);
	return 0;
}

static ssize_t h2_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct sbx_http_req *r = src->ptr;
	struct conn *c = user;
	size_t left = r->h2_out.len - r->h2_out_off, n = left < length ? left : length;

	if (n)
		memcpy(buf, r->h2_out.data + r->h2_out_off, n);
	r->h2_out_off += n;
	if (r->h2_out_off == r->h2_out.len) {
		sbx_buf_reset(&r->h2_out);
		r->h2_out_off = 0;
	}
	if (r->on_drain && !r->h2_drain_due &&
	    r->h2_out.len - r->h2_out_off < c->s->o.write_high_water / 2 &&
	    c->n_h2_drains < sizeof(c->h2_drains) / sizeof(c->h2_drains[0])) {
		/* Called after framing, outside nghttp2's callbacks. */
		r->h2_drain_due = true;
		c->h2_drains[c->n_h2_drains++] = r;
		c->h2_drain = true;
	}
	if (r->h2_eof && r->h2_out.len == r->h2_out_off) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	if (!n) {
		r->h2_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

static void h2_call_drains(struct conn *c);

/* Frames what nghttp2 has to send, as far as the socket keeps up. */
static void h2_flush(struct conn *c)
{
	const uint8_t *data;
	ssize_t n;

	if (!c->h2 || c->closing)
		return;
	while (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= c->s->o.write_high_water &&
	       (n = nghttp2_session_mem_send(c->h2, &data)) > 0) {
		if (send_parts(c, data, (size_t)n, NULL, 0, NULL, 0)) {
			conn_close(c);
			return;
		}
	}
	if (c->h2_drain)
		h2_call_drains(c);
	if (c->h2 && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		conn_shutdown(c);
}

static void h2_unlink(struct conn *c, struct sbx_http_req *r)
{
	if (r->h2_prev)
		r->h2_prev->h2_next = r->h2_next;
	else
		c->h2_streams = r->h2_next;
	if (r->h2_next)
		r->h2_next->h2_prev = r->h2_prev;
	r->h2_next = r->h2_prev = NULL;
	if (r->h2_drain_due)
		h2_drop_drain(c, r);
}

static void h2_drop_drain(struct conn *c, struct sbx_http_req *r)
{
	for (unsigned i = 0; i < c->n_h2_drains; i++)
		if (c->h2_drains[i] == r) {
			c->h2_drains[i] = c->h2_drains[--c->n_h2_drains];
			break;
		}
	r->h2_drain_due = false;
}

static void h2_call_drains(struct conn *c)
{
	c->h2_drain = false;
	while (c->n_h2_drains && c->h2) {
		struct sbx_http_req *r = c->h2_drains[--c->n_h2_drains];
		void (*cb)(struct sbx_http_req *, void *) = r->on_drain;

		r->h2_drain_due = false;
		if (cb) {
			r->on_drain = NULL;
			cb(r, r->drain_arg);
		}
	}
}

static void h2_input(struct conn *c, const char *data, size_t len)
{
	ssize_t n = nghttp2_session_mem_recv(c->h2, (const uint8_t *)data, len);

	if (n < 0) {
		conn_close(c);
		return;
	}
	h2_flush(c);
}

/* The response head, and a data source unless there is no body. */
static int h2_respond(struct sbx_http_req *r, int status, const char *content_type,
		      const void *body, size_t len, bool streamed, long long length)
{
	struct conn *c = r->c;
	nghttp2_nv nva[64];
	size_t n = 0;
	char st[8], cl[24];
	nghttp2_data_provider dp = { .source.ptr = r, .read_callback = h2_read_body };
	bool no_body = status < 200 || status == 204 || status == 304 || r->head;
	char *lines, *p;
	int rc;

	if (!streamed) {
		r->ended = true;
	}
	if (!c || !c->h2 || c->closing)
		return -ECONNRESET;
#define NV(N, V)                                                                       \
	nva[n++] = (nghttp2_nv){ (uint8_t *)(N), (uint8_t *)(V), strlen(N), strlen(V), \
				 NGHTTP2_NV_FLAG_NONE }
	snprintf(st, sizeof(st), "%d", status);
	NV(":status", st);
	NV("server", c->s->o.server_name);
	NV("date", http_date(c->s));
	if (content_type && !(status < 200 || status == 204 || status == 304))
		NV("content-type", content_type);
	if (length >= 0 && !(status < 200 || status == 204 || status == 304)) {
		snprintf(cl, sizeof(cl), "%lld", length);
		NV("content-length", cl);
	}
	/* The handler's own headers ("Name: value\r\n" lines), lowercased. */
	lines = r->resp_headers.len ? sbx_strndup(r->resp_headers.data, r->resp_headers.len) : NULL;
	for (p = lines; p && *p && n < sizeof(nva) / sizeof(nva[0]);) {
		char *eol = strstr(p, "\r\n"), *colon = strchr(p, ':');

		if (!eol || !colon || colon > eol)
			break;
		*eol = *colon = '\0';
		for (char *q = p; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		/* Connection-specific headers have no place in HTTP/2. */
		if (strcmp(p, "connection") && strcmp(p, "transfer-encoding") &&
		    strcmp(p, "keep-alive") && strcmp(p, "upgrade"))
			NV(p, colon + 1 + strspn(colon + 1, " "));
		p = eol + 2;
	}
#undef NV
	c->s->stats.responses_by_class[status / 100 < 6 ? status / 100 : 5]++;
	if (!no_body && body && len && sbx_buf_append(&r->h2_out, body, len)) {
		sbx_free(lines);
		return -ENOMEM;
	}
	r->h2_eof = !streamed;
	rc = nghttp2_submit_response(c->h2, r->stream_id, nva, n, no_body ? NULL : &dp);
	sbx_free(lines);
	if (!no_body && streamed)
		r->h2_deferred = false;
	if (no_body && streamed)
		r->h2_eof = true;
	h2_flush(c);
	return rc ? -EIO : 0;
}

static int h2_write(struct sbx_http_req *r, const void *data, size_t len)
{
	struct conn *c = r->c;

	if (!c || !c->h2 || c->closing)
		return -ECONNRESET;
	if (len == 0 || r->head)
		return 0;
	if (r->sized) {
		if (len > r->length_left)
			return -EMSGSIZE;
		r->length_left -= len;
	}
	if (sbx_buf_append(&r->h2_out, data, len))
		return -ENOMEM;
	if (r->h2_deferred) {
		r->h2_deferred = false;
		nghttp2_session_resume_data(c->h2, r->stream_id);
	}
	h2_flush(c);
	return r->h2_out.len - r->h2_out_off > c->s->o.write_high_water;
}

static int h2_end(struct sbx_http_req *r)
{
	struct conn *c = r->c;

	r->ended = true;
	r->h2_eof = true;
	if (!c || !c->h2 || c->closing)
		return -ECONNRESET;
	if (r->sized && r->length_left && !r->head) {
		/* Short of its Content-Length: the stream is reset, not ended. */
		nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, r->stream_id,
					  NGHTTP2_INTERNAL_ERROR);
	} else if (r->h2_deferred) {
		r->h2_deferred = false;
		nghttp2_session_resume_data(c->h2, r->stream_id);
	}
	h2_flush(c);
	return 0;
}

/* The connection opened with HTTP/2's preface: speak HTTP/2 on it. true
 * when the connection is (or is waiting to be seen as) HTTP/2. */
static bool h2_maybe_start(struct conn *c)
{
	size_t n =
		c->pending.len < sizeof(h2_preface) - 1 ? c->pending.len : sizeof(h2_preface) - 1;
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	nghttp2_settings_entry h2_settings[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->s->o.max_header_bytes },
	};
	struct sbx_buf first;

	if (!n || memcmp(c->pending.data, h2_preface, n) != 0)
		return false;
	if (n < sizeof(h2_preface) - 1)
		return true; /* the rest of the preface is still to come */
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
	nghttp2_option_new(&opt);
	/* Window updates follow what handlers take (streamed bodies pause). */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
	if (nghttp2_session_server_new2(&c->h2, cbs, c, opt)) {
		nghttp2_option_del(opt);
		nghttp2_session_callbacks_del(cbs);
		conn_close(c);
		return true;
	}
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, h2_settings,
				sizeof(h2_settings) / sizeof(h2_settings[0]));
	/* Connection-level flow control: a generous window, refilled as used. */
	nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 * H2_WINDOW);
	uv_timer_stop(&c->timer);
	c->keep_alive = true;
	first = c->pending;
	sbx_buf_init(&c->pending, first.max);
	h2_input(c, first.data, first.len);
	sbx_buf_release(&first);
	if (!c->reading && !c->closing) {
		c->reading = true;
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
	return true;
}

static void h2_conn_gone(struct conn *c)
{
	nghttp2_session *ng = c->h2;
	struct sbx_http_req *r;

	/* Deleting the session does not close its streams through the
	 * callbacks: their requests are aborted and freed here. */
	c->h2 = NULL;
	while ((r = c->h2_streams)) {
		h2_unlink(c, r);
		r->c = NULL;
		if (!r->ended && r->on_abort)
			r->on_abort(r, r->abort_arg);
		req_free(r);
	}
	nghttp2_session_del(ng);
}

/* ---- TLS (OpenSSL on memory BIOs), with ALPN ---------------------------------------- */

/* Sends what the TLS engine has written (records, alerts). */
static int tls_flush(struct conn *c)
{
	BIO *w = SSL_get_wbio(c->ssl);
	size_t pending;

	while ((pending = BIO_ctrl_pending(w)) > 0) {
		struct wreq *wr = sbx_malloc(sizeof(*wr) + pending);
		uv_buf_t buf;
		int n;

		if (!wr)
			return -ENOMEM;
		wr->c = c;
		n = BIO_read(w, wr->data, (int)pending);
		if (n <= 0) {
			sbx_free(wr);
			break;
		}
		buf = uv_buf_init(wr->data, (unsigned)n);
		if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_written)) {
			sbx_free(wr);
			return -EPIPE;
		}
	}
	return 0;
}

static void tls_input(struct conn *c, const char *data, size_t len)
{
	char plain[16384];
	int n;

	if (BIO_write(SSL_get_rbio(c->ssl), data, (int)len) != (int)len) {
		conn_close(c);
		return;
	}
	if (!SSL_is_init_finished(c->ssl)) {
		n = SSL_do_handshake(c->ssl);
		tls_flush(c);
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);

			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				sbx_log_debug(
					"TLS handshake failed", SBX_LS("peer", c->peer),
					SBX_LS("error", ERR_reason_error_string(ERR_peek_error())
								?: "closed"));
				ERR_clear_error();
				conn_close(c);
			}
			return;
		}
	}
	while (!c->closing && (n = SSL_read(c->ssl, plain, sizeof(plain))) > 0) {
		conn_input(c, plain, (size_t)n);
		if (c->closing || c->lingering || !c->ssl)
			return;
	}
	if (!c->closing) {
		int e = SSL_get_error(c->ssl, n);

		tls_flush(c);
		if (e == SSL_ERROR_ZERO_RETURN) {
			conn_shutdown(c); /* the client's close_notify */
		} else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			ERR_clear_error();
			conn_close(c);
		}
	}
}

static int tls_attach(struct conn *c, SSL_CTX *ctx)
{
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());

	c->ssl = SSL_new(ctx);
	if (!c->ssl || !r || !w) {
		BIO_free(r);
		BIO_free(w);
		return -ENOMEM;
	}
	SSL_set_bio(c->ssl, r, w);
	SSL_set_accept_state(c->ssl);
	return 0;
}

/* ALPN: HTTP/2 when the client offers it, else HTTP/1.1. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x02h2\x08http/1.1";

	if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* no protocol in common */
	return SSL_TLSEXT_ERR_OK;
}

int sbx_http_server_listen_tls(struct sbx_http_server *s, const char *addr, const char *cert_file,
			       const char *key_file, char *err, size_t err_size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int rc;

	if (!ctx) {
		snprintf(err, err_size, "cannot make a TLS context");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, err_size, "TLS certificate %s / key %s: %s", cert_file, key_file,
			 ERR_reason_error_string(ERR_peek_last_error()) ?: "unusable");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return -EINVAL;
	}
	rc = sbx_http_server_listen(s, addr);
	if (rc) {
		snprintf(err, err_size, "cannot listen on %s: %s", addr, uv_strerror(rc));
		SSL_CTX_free(ctx);
		return rc;
	}
	s->listeners[s->n_listeners - 1].tls = ctx;
	return 0;
}
