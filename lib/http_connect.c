/* CONNECT tunnels, for a server that is a forward proxy (a proxy route):
 * the client asks for a byte stream to host:port (RFC 9110 9.3.6); the
 * caller names the address to connect to (the destination itself, or a
 * next proxy that is asked with a CONNECT of its own first), the client
 * gets 200 once the stream is up, and bytes then flow both ways, paced by
 * the slower side: the upstream socket stops being read while the client
 * is behind, and the client's side is paused while writes to upstream
 * queue beyond the server's high water mark.
 *
 * The upstream side is a plain TCP socket of this file's own (not the
 * HTTP client's pool: after the answer nothing on it is HTTP). A next
 * proxy's answer head is read up to "\r\n\r\n" and checked with
 * http-parser; bytes behind it belong to the tunnel.
 */
#define _GNU_SOURCE /* memmem */
#include "http_types.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#define HEAD_MAX (16u << 10)

struct connect_tunnel {
	struct sbx_http_server *s;
	struct sbx_http_req *req; /* until the tunnel opens or fails */
	struct http_stream *st;	  /* the client's side, once open */
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_timer_t timer;
	uv_shutdown_t shutdown;
	struct sbx_buf answer; /* a next proxy's answer head, being read */
	char *via_head;	       /* what to send first, or NULL */
	size_t queued;	       /* bytes written upstream and not yet taken */
	int handles;	       /* uv handles still open */
	bool connected, opened, closing, client_paused, up_reading;
	char upstream[64];
	char read_buf[64 << 10];
};

struct up_write {
	uv_write_t w;
	struct connect_tunnel *t;
	size_t len;
	char data[];
};

static void handle_closed(uv_handle_t *h)
{
	struct connect_tunnel *t = h->data;

	if (--t->handles == 0) {
		sbx_buf_release(&t->answer);
		sbx_free(t->via_head);
		sbx_free(t);
	}
}

/* Ends both sides; what was queued for the client still goes. */
static void tunnel_close(struct connect_tunnel *t)
{
	if (t->closing)
		return;
	t->closing = true;
	if (t->req)
		sbx_http_on_abort(t->req, NULL, NULL);
	http_stream_detach(&t->st);
	if (t->opened)
		t->s->stats.tunnels_open--;
	uv_close((uv_handle_t *)&t->timer, handle_closed);
	uv_close((uv_handle_t *)&t->tcp, handle_closed);
}

/* The tunnel did not open: the client's answer, then the end. */
static void fail(struct connect_tunnel *t, int status, const char *message)
{
	struct sbx_http_req *req = t->req;

	t->req = NULL;
	if (req) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond_error(req, status, message);
	}
	tunnel_close(t);
}

static void fail_errno(struct connect_tunnel *t, int err)
{
	char msg[160];

	if (err == UV_ECONNREFUSED)
		snprintf(msg, sizeof(msg), "nothing listens on %s", t->upstream);
	else if (err == UV_ETIMEDOUT)
		snprintf(msg, sizeof(msg), "%s did not answer in time", t->upstream);
	else if (err == UV_EOF)
		snprintf(msg, sizeof(msg), "%s closed the connection unanswered", t->upstream);
	else
		snprintf(msg, sizeof(msg), "cannot reach %s: %s", t->upstream, uv_strerror(err));
	fail(t, err == UV_ETIMEDOUT ? 504 : 502, msg);
}

static void req_gone(struct sbx_http_req *req, void *arg)
{
	struct connect_tunnel *t = arg;

	(void)req;
	t->req = NULL; /* the client left before the tunnel opened */
	tunnel_close(t);
}

static void on_timeout(uv_timer_t *timer)
{
	fail_errno(timer->data, UV_ETIMEDOUT);
}

/* ---- the client's side, once open ---------------------------------------------------- */

static void up_written(uv_write_t *w, int status)
{
	struct up_write *uw = (struct up_write *)w;
	struct connect_tunnel *t = uw->t;

	t->queued -= uw->len;
	sbx_free(uw);
	if (t->closing)
		return;
	if (status < 0) {
		tunnel_close(t);
		return;
	}
	if (t->client_paused && t->st && t->queued <= t->s->o.write_high_water / 2) {
		t->client_paused = false;
		t->st->ops->resume(t->st);
	}
}

static void client_data(void *arg, const char *data, size_t len)
{
	struct connect_tunnel *t = arg;
	struct up_write *uw = sbx_malloc(sizeof(*uw) + len);
	uv_buf_t b;

	if (!uw) {
		tunnel_close(t);
		return;
	}
	memcpy(uw->data, data, len);
	uw->t = t;
	uw->len = len;
	b = uv_buf_init(uw->data, (unsigned)len);
	if (uv_write(&uw->w, (uv_stream_t *)&t->tcp, &b, 1, up_written) < 0) {
		sbx_free(uw);
		tunnel_close(t);
		return;
	}
	t->queued += len;
	if (t->queued > t->s->o.write_high_water && !t->client_paused) {
		t->client_paused = true; /* upstream is behind */
		t->st->ops->pause(t->st);
	}
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct connect_tunnel *t = h->data;

	(void)hint;
	*buf = uv_buf_init(t->read_buf, sizeof(t->read_buf));
}

static void up_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

static void client_drained(void *arg)
{
	struct connect_tunnel *t = arg;

	if (!t->up_reading && !t->closing &&
	    uv_read_start((uv_stream_t *)&t->tcp, up_alloc, up_read) == 0)
		t->up_reading = true;
}

static void client_shutdown(void *arg)
{
	(void)arg; /* open until the drain deadline closes the connection */
}

static void up_shut(uv_shutdown_t *sh, int status)
{
	(void)status;
	tunnel_close(sh->data);
}

static void client_closed(void *arg)
{
	struct connect_tunnel *t = arg;

	t->st = NULL;
	/* What the client sent last still reaches upstream, then a FIN. */
	t->shutdown.data = t;
	if (t->closing || uv_shutdown(&t->shutdown, (uv_stream_t *)&t->tcp, up_shut) < 0)
		tunnel_close(t);
}

static const struct http_stream_cb client_cb = {
	.data = client_data,
	.drained = client_drained,
	.shutdown = client_shutdown,
	.closed = client_closed,
};

/* ---- upstream ------------------------------------------------------------------------ */

static void to_client(struct connect_tunnel *t, const char *data, size_t len)
{
	if (!len)
		return;
	if (!t->st || t->st->ops->send(t->st, data, len) < 0) {
		tunnel_close(t);
		return;
	}
	if (t->st->ops->congested(t->st) && t->up_reading) {
		uv_read_stop((uv_stream_t *)&t->tcp); /* the client is behind */
		t->up_reading = false;
	}
}

/* Answers the client 200 and joins the two sides; early holds upstream
 * bytes that came before the switch (behind a next proxy's answer). */
static void open_tunnel(struct connect_tunnel *t, const char *early, size_t len)
{
	struct sbx_http_req *req = t->req;

	uv_timer_stop(&t->timer);
	sbx_http_on_abort(req, NULL, NULL);
	t->req = NULL;
	if (req->ops->upgrade(req, &t->st)) {
		t->req = req;
		fail(t, 502, "cannot switch the client's connection to a tunnel");
		return;
	}
	t->opened = true;
	t->s->stats.tunnels_open++;
	http_stream_attach(t->st, &client_cb, t);
	if (!t->st)
		return; /* closed while attaching */
	to_client(t, early, len);
	if (!t->closing && !t->up_reading &&
	    uv_read_start((uv_stream_t *)&t->tcp, up_alloc, up_read) == 0)
		t->up_reading = true;
}

static int head_done(http_parser *p)
{
	http_parser_pause(p, 1);
	return 1; /* no body: what follows is the tunnel's */
}

/* A next proxy's answer: 2xx opens the tunnel, anything else is refused. */
static void read_answer(struct connect_tunnel *t, const char *data, size_t n)
{
	static const http_parser_settings settings = { .on_headers_complete = head_done };
	http_parser parser;
	const char *end;
	size_t head_len;
	char msg[160];

	if (sbx_buf_append(&t->answer, data, n)) {
		fail(t, 502, "the upstream proxy's answer head is too large");
		return;
	}
	end = memmem(t->answer.data, t->answer.len, "\r\n\r\n", 4);
	if (!end)
		return; /* more to come */
	head_len = (size_t)(end - t->answer.data) + 4;
	http_parser_init(&parser, HTTP_RESPONSE);
	http_parser_execute(&parser, &settings, t->answer.data, head_len);
	if (HTTP_PARSER_ERRNO(&parser) != HPE_PAUSED && HTTP_PARSER_ERRNO(&parser) != HPE_OK) {
		snprintf(msg, sizeof(msg), "%s answered with something that is not HTTP/1.1",
			 t->upstream);
		fail(t, 502, msg);
		return;
	}
	if (parser.status_code < 200 || parser.status_code > 299) {
		snprintf(msg, sizeof(msg), "the upstream proxy %s refused the tunnel with %u%s",
			 t->upstream, parser.status_code,
			 parser.status_code == 407 ? " (its credentials are missing or wrong)"
						   : "");
		fail(t, 502, msg);
		return;
	}
	open_tunnel(t, t->answer.data + head_len, t->answer.len - head_len);
}

static void up_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
	struct connect_tunnel *t = stream->data;

	if (n < 0) {
		if (t->req)
			fail_errno(t, (int)n); /* before the answer */
		else
			tunnel_close(t); /* the client gets what was queued, then the end */
		return;
	}
	if (t->req)
		read_answer(t, buf->base, (size_t)n);
	else
		to_client(t, buf->base, (size_t)n);
}

static void head_sent(uv_write_t *w, int status)
{
	struct connect_tunnel *t = w->data;

	sbx_free(w);
	if (status < 0 && !t->closing && t->req)
		fail_errno(t, status);
}

static void on_connected(uv_connect_t *c, int status)
{
	struct connect_tunnel *t = c->data;
	uv_write_t *w;
	uv_buf_t b;

	if (status == UV_ECANCELED || t->closing)
		return;
	if (status < 0) {
		fail_errno(t, status);
		return;
	}
	t->connected = true;
	if (!t->via_head) {
		open_tunnel(t, NULL, 0);
		return;
	}
	/* A next proxy: ask it, and read its answer (same deadline). */
	b = uv_buf_init(t->via_head, (unsigned)strlen(t->via_head));
	if (!(w = sbx_malloc(sizeof(*w)))) {
		fail(t, 503, "out of memory");
		return;
	}
	w->data = t;
	if (uv_write(w, (uv_stream_t *)&t->tcp, &b, 1, head_sent) < 0) {
		sbx_free(w);
		fail(t, 502, "cannot write to the upstream proxy");
		return;
	}
	if (uv_read_start((uv_stream_t *)&t->tcp, up_alloc, up_read) == 0)
		t->up_reading = true;
}

int sbx_http_connect(struct sbx_http_req *req, const char *upstream, const char *via_head)
{
	struct sbx_http_server *s = req->s;
	struct sockaddr_storage ss;
	struct connect_tunnel *t;
	int rc;

	if (!req->connect) {
		sbx_http_respond_error(req, 400, "a tunnel needs a CONNECT request");
		return -EINVAL;
	}
	if (!upstream || http_parse_addr(upstream, &ss)) {
		sbx_http_respond_error(req, 400,
				       "the tunnel's address is not an IP address and port");
		return -EINVAL;
	}
	if (!(t = sbx_calloc(1, sizeof(*t))) ||
	    (via_head && !(t->via_head = sbx_strdup(via_head)))) {
		sbx_free(t);
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	t->s = s;
	t->req = req;
	sbx_buf_init(&t->answer, HEAD_MAX);
	snprintf(t->upstream, sizeof(t->upstream), "%s", upstream);
	uv_tcp_init(s->loop, &t->tcp);
	uv_timer_init(s->loop, &t->timer);
	t->tcp.data = t->timer.data = t->connect.data = t;
	t->handles = 2;
	uv_tcp_nodelay(&t->tcp, 1);
	rc = uv_tcp_connect(&t->connect, &t->tcp, (const struct sockaddr *)&ss, on_connected);
	if (rc) {
		fail_errno(t, rc);
		return rc;
	}
	uv_timer_start(&t->timer, on_timeout, s->o.connect_timeout_ms, 0);
	sbx_http_on_abort(req, req_gone, t);
	return 0;
}
