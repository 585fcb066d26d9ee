/* Tunnels: a request that switches protocols (a WebSocket handshake, over
 * HTTP/1.1 Upgrade or an HTTP/2 extended CONNECT) passed through to another
 * server. The request head goes upstream as an HTTP/1.1 Upgrade (an RFC 8441
 * request is translated: GET, Connection/Upgrade and a fresh
 * Sec-WebSocket-Key); upstream's answer is parsed; a 101 switches the
 * client's side too and bytes then flow both ways, paced by the slower
 * side; any other answer is passed back as a response (its body up to
 * 1 MiB). The upstream must connect and answer within connect_timeout_ms
 * (504); after that the client's stream's idle timeout applies, and the
 * server's stop closes the tunnel at its drain deadline.
 */
#define _GNU_SOURCE /* memmem */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"

#include <errno.h>
#include <http_parser.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define RESPONSE_MAX (1u << 20)

struct tunnel {
	struct sbx_http_server *s;
	struct sbx_http_req *req; /* until upstream has answered */
	struct http_stream *st;	  /* the client's side, after a 101 */
	uv_tcp_t up;
	uv_connect_t connect;
	uv_timer_t timer;
	int handles;
	http_parser parser;
	struct sbx_buf head;   /* the request head for upstream */
	struct sbx_buf fields; /* upstream's response headers, "Name: value\r\n" */
	struct sbx_buf body;   /* a non-101 answer's body */
	bool last_was_value;
	bool head_in, answered, up_reading, closing;
};

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void up_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void handle_closed(uv_handle_t *h)
{
	struct tunnel *t = h->data;

	if (--t->handles)
		return;
	sbx_buf_release(&t->head);
	sbx_buf_release(&t->fields);
	sbx_buf_release(&t->body);
	sbx_free(t);
}

/* Closes upstream; the tunnel is freed once its handles are. */
static void tunnel_close(struct tunnel *t)
{
	if (t->closing)
		return;
	t->closing = true;
	if (t->req)
		sbx_http_on_abort(t->req, NULL, NULL);
	if (t->st) {
		struct http_stream *st = t->st;

		t->st = NULL;
		st->cb = NULL;	    /* no more calls: the tunnel is going */
		st->ops->close(st); /* what was queued for the client still goes */
	}
	uv_close((uv_handle_t *)&t->up, handle_closed);
	uv_close((uv_handle_t *)&t->timer, handle_closed);
}

/* Answers the client (the tunnel did not open) and closes. */
static void fail(struct tunnel *t, int status, const char *message)
{
	struct sbx_http_req *req = t->req;

	t->req = NULL;
	if (req) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond_error(req, status, message);
	}
	tunnel_close(t);
}

static void req_gone(struct sbx_http_req *req, void *arg)
{
	struct tunnel *t = arg;

	(void)req;
	t->req = NULL; /* the client went away before upstream answered */
	tunnel_close(t);
}

static void on_timer(uv_timer_t *tm)
{
	fail(tm->data, 504, "the upstream did not answer in time");
}

/* ---- upstream writes ---------------------------------------------------------- */

struct twrite {
	uv_write_t w;
	struct tunnel *t;
	char data[];
};

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
	if (t->st && !t->closing &&
	    uv_stream_get_write_queue_size((uv_stream_t *)&t->up) < t->s->o.write_high_water / 2)
		t->st->ops->resume(t->st);
}

static int up_send(struct tunnel *t, const char *data, size_t len)
{
	struct twrite *tw;
	uv_buf_t b;

	if (!len)
		return 0;
	tw = sbx_malloc(sizeof(*tw) + len);
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

/* ---- the client's side, once switched -------------------------------------------- */

static void client_data(void *arg, const char *data, size_t len)
{
	struct tunnel *t = arg;

	if (t->closing || up_send(t, data, len)) {
		tunnel_close(t);
		return;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)&t->up) > t->s->o.write_high_water)
		t->st->ops->pause(t->st); /* upstream is behind */
}

static void client_drained(void *arg)
{
	struct tunnel *t = arg;

	if (!t->up_reading && !t->closing) {
		t->up_reading = true;
		uv_read_start((uv_stream_t *)&t->up, up_alloc, up_read);
	}
}

static void client_shutdown(void *arg)
{
	(void)arg; /* open until the drain deadline closes the connection */
}

static void client_closed(void *arg)
{
	struct tunnel *t = arg;

	t->st = NULL;
	tunnel_close(t);
}

static const struct http_stream_cb client_cb = {
	.data = client_data,
	.drained = client_drained,
	.shutdown = client_shutdown,
	.closed = client_closed,
};

/* ---- upstream's answer --------------------------------------------------------------- */

static int on_field(http_parser *p, const char *at, size_t len)
{
	struct tunnel *t = p->data;

	if (t->last_was_value && sbx_buf_append_str(&t->fields, "\r\n"))
		return -1;
	t->last_was_value = false;
	return sbx_buf_append(&t->fields, at, len) ? -1 : 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
	struct tunnel *t = p->data;

	if (!t->last_was_value && sbx_buf_append(&t->fields, ": ", 2))
		return -1;
	t->last_was_value = true;
	return sbx_buf_append(&t->fields, at, len) ? -1 : 0;
}

static int on_headers_complete(http_parser *p)
{
	struct tunnel *t = p->data;

	if (t->last_was_value && sbx_buf_append_str(&t->fields, "\r\n"))
		return -1;
	t->head_in = true;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct tunnel *t = p->data;

	return sbx_buf_append(&t->body, at, len) ? -1 : 0;
}

static int on_complete(http_parser *p)
{
	struct tunnel *t = p->data;

	t->answered = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings response_settings = {
	.on_header_field = on_field,
	.on_header_value = on_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_complete,
};

static bool hop_by_hop(const char *name, size_t len)
{
	static const char *const names[] = { "connection",	  "upgrade",	    "keep-alive",
					     "transfer-encoding", "content-length", "content-type",
					     "proxy-connection",  "server",	    "date" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
			return true;
	}
	return false;
}

/* Upstream's end-to-end headers onto the client's response. */
static void copy_fields(struct tunnel *t, char **content_type)
{
	char *p = t->fields.data, *end = p ? p + t->fields.len : NULL;

	*content_type = NULL;
	while (p && p < end) {
		char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *colon;

		if (!eol)
			break;
		*eol = '\0';
		colon = strchr(p, ':');
		if (colon) {
			*colon = '\0';
			if (!strcasecmp(p, "content-type"))
				*content_type = colon + 2;
			else if (!hop_by_hop(p, strlen(p)))
				sbx_http_add_header(t->req, p, colon + 2);
		}
		p = eol + 2;
	}
}

static void switch_client(struct tunnel *t, const char *rest, size_t rest_len)
{
	struct sbx_http_req *req = t->req;
	char *content_type;

	uv_timer_stop(&t->timer);
	copy_fields(t, &content_type);
	sbx_http_on_abort(req, NULL, NULL);
	t->req = NULL;
	if (req->ops->upgrade(req, &t->st)) {
		t->req = req;
		fail(t, 502, "cannot switch the client's protocol");
		return;
	}
	if (rest_len && t->st->ops->send(t->st, rest, rest_len) < 0) {
		tunnel_close(t);
		return;
	}
	http_stream_attach(t->st, &client_cb, t);
}

static void relay_answer(struct tunnel *t)
{
	struct sbx_http_req *req = t->req;
	char *content_type;
	int status = t->parser.status_code;

	uv_timer_stop(&t->timer);
	sbx_http_on_abort(req, NULL, NULL);
	if (req->upgrade_by_connect && status >= 200 && status < 300) {
		/* To an HTTP/2 client, 2xx would mean "switched". */
		t->req = NULL;
		sbx_http_respond_error(req, 502,
				       "the upstream answered without switching protocols");
		tunnel_close(t);
		return;
	}
	copy_fields(t, &content_type);
	t->req = NULL;
	sbx_http_respond(req, status, content_type, t->body.data, t->body.len);
	tunnel_close(t);
}

/* Bytes of upstream's answer, before the switch. */
static void answer_input(struct tunnel *t, const char *data, size_t len)
{
	size_t n = http_parser_execute(&t->parser, &response_settings, data, len);
	enum http_errno err = HTTP_PARSER_ERRNO(&t->parser);

	if (err != HPE_OK && err != HPE_PAUSED) {
		fail(t, 502, "the upstream's answer is not HTTP/1.1");
		return;
	}
	if (t->head_in && t->parser.status_code == 101) {
		switch_client(t, data + n, len - n);
		return;
	}
	if (t->answered)
		relay_answer(t);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tunnel *t = h->data;

	(void)suggested;
	*buf = uv_buf_init(t->s->read_buf, sizeof(t->s->read_buf));
}

static void up_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
	struct tunnel *t = stream->data;

	if (t->closing)
		return;
	if (n < 0) {
		if (t->req && n == UV_EOF) {
			/* A close-delimited answer ends here. */
			http_parser_execute(&t->parser, &response_settings, NULL, 0);
			if (t->answered && !t->closing) {
				relay_answer(t);
				return;
			}
		}
		if (t->req)
			fail(t, 502, "the upstream closed without an answer");
		else
			tunnel_close(t);
		return;
	}
	if (!n)
		return;
	if (t->req) {
		answer_input(t, buf->base, (size_t)n);
		return;
	}
	if (!t->st || t->st->ops->send(t->st, buf->base, (size_t)n) < 0) {
		tunnel_close(t);
		return;
	}
	if (t->st->ops->congested(t->st)) {
		uv_read_stop(stream); /* the client is behind */
		t->up_reading = false;
	}
}

static void on_connected(uv_connect_t *cr, int status)
{
	struct tunnel *t = cr->data;
	char msg[160];

	if (t->closing)
		return;
	if (status < 0) {
		snprintf(msg, sizeof(msg), "cannot reach the upstream: %s", uv_strerror(status));
		fail(t, 502, msg);
		return;
	}
	if (up_send(t, t->head.data, t->head.len)) {
		fail(t, 502, "cannot write to the upstream");
		return;
	}
	sbx_buf_release(&t->head);
	t->up_reading = true;
	uv_read_start((uv_stream_t *)&t->up, up_alloc, up_read);
}

/* ---- the request head for upstream ---------------------------------------------------- */

static int build_head(struct tunnel *t, struct sbx_http_req *req,
		      const struct sbx_http_tunnel_opts *o)
{
	struct sbx_buf *b = &t->head;
	int rc;

	rc = sbx_buf_printf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n",
			    req->upgrade_by_connect ? "GET" : req->method, o->path,
			    o->host ? o->host : o->upstream);
	if (!rc && req->upgrade_by_connect) {
		/* RFC 8441 in, HTTP/1.1 Upgrade out: a key of our own. */
		unsigned char raw[16];
		char *key = NULL;
		size_t key_len;

		if (RAND_bytes(raw, sizeof(raw)) != 1 ||
		    sbx_base64_encode((const char *)raw, sizeof(raw), &key, &key_len))
			return -ENOMEM;
		rc = sbx_buf_printf(
			b, "Connection: Upgrade\r\nUpgrade: %s\r\nSec-WebSocket-Key: %s\r\n",
			req->upgrade, key);
		sbx_free(key);
	}
	for (unsigned i = 0; !rc && i < req->n_headers; i++) {
		const char *name = req->arena.data + req->headers[i].name;
		bool drop = !strcasecmp(name, "Host") ||
			    (req->upgrade_by_connect &&
			     (!strcasecmp(name, "Connection") || !strcasecmp(name, "Upgrade") ||
			      !strcasecmp(name, "Sec-WebSocket-Key")));

		for (const char *const *d = o->drop_headers; d && *d && !drop; d++)
			drop = strcasecmp(name, *d) == 0;
		if (!drop)
			rc = sbx_buf_printf(b, "%s: %s\r\n", name,
					    req->arena.data + req->headers[i].value);
	}
	return rc ? rc : sbx_buf_append_str(b, "\r\n");
}

int sbx_http_tunnel(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o)
{
	struct sbx_http_server *s = req->s;
	struct sockaddr_storage ss;
	struct tunnel *t;
	int rc;

	if (!req->upgrade) {
		sbx_http_respond_error(req, 400,
				       "a protocol switch (Upgrade, or an HTTP/2 extended CONNECT) "
				       "is expected here");
		return -EINVAL;
	}
	if ((rc = http_parse_addr(o->upstream, &ss))) {
		sbx_http_respond_error(req, 502,
				       "the upstream address is not an IP address and port");
		return rc;
	}
	t = sbx_calloc(1, sizeof(*t));
	if (!t) {
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	t->s = s;
	sbx_buf_init(&t->head, s->o.max_header_bytes * 2 + 1024);
	sbx_buf_init(&t->fields, s->o.max_header_bytes);
	sbx_buf_init(&t->body, RESPONSE_MAX);
	if (build_head(t, req, o)) {
		sbx_buf_release(&t->head);
		sbx_buf_release(&t->fields);
		sbx_buf_release(&t->body);
		sbx_free(t);
		sbx_http_respond_error(req, 431, "request head too large to pass on");
		return -E2BIG;
	}
	http_parser_init(&t->parser, HTTP_RESPONSE);
	t->parser.data = t;
	t->req = req;
	uv_tcp_init(s->loop, &t->up);
	uv_timer_init(s->loop, &t->timer);
	t->up.data = t->timer.data = t->connect.data = t;
	t->handles = 2;
	sbx_http_on_abort(req, req_gone, t);
	uv_timer_start(&t->timer, on_timer, s->o.connect_timeout_ms, 0);
	rc = uv_tcp_connect(&t->connect, &t->up, (const struct sockaddr *)&ss, on_connected);
	if (rc) {
		fail(t, 502, "cannot connect to the upstream");
		return rc;
	}
	return 0;
}
