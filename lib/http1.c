/* HTTP/1.1 server codec on http-parser: one request at a time per
 * connection (pipelined bytes wait, unparsed, until the answer before them
 * has ended), the head routed and authorized before any of the body is
 * read, buffered or streamed bodies, keep-alive, and the switch to a raw
 * byte stream for Upgrade. A connection that opens with HTTP/2's preface is
 * handed to the HTTP/2 codec.
 *
 * The parser is paused at the end of each head (to route it) and of each
 * message (so that pipelined bytes are parsed only when their turn comes).
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/json.h"

#include <errno.h>
#include <http_parser.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct h1;

struct h1_req {
	struct sbx_http_req r;
	struct h1 *h;
	bool chunked;	    /* the response is chunked */
	bool has_body;	    /* the request announced a body */
	bool msg_done;	    /* the parser has seen the whole request */
	bool body_paused;   /* a streamed body's sink asked for a pause */
	bool want_continue; /* Expect: 100-continue, not answered yet */
	/* The arena's first bytes: a usual request head fits (not zeroed). */
	char arena_space[512];
};

const size_t http1_req_size = sizeof(struct h1_req);

struct h1 {
	struct http_conn *c;
	http_parser parser;
	struct sbx_buf pending; /* read, not parsed yet */
	struct h1_req *req;	/* being read or handled */
	enum { H_NONE, H_FIELD, H_VALUE } last;
	bool keep_alive;
	bool processing, again;
	bool at_head;	   /* the parser stopped at a head: route it */
	bool at_end;	   /* the parser stopped at a message's end */
	bool seen_request; /* no HTTP/2 preface any more */
	bool dead;	   /* the connection is gone: free when processing ends */
};

struct h1_stream {
	struct http_stream st;
	struct http_conn *c;
	struct sbx_buf held; /* input before attach or while paused */
	bool paused;
};

static const struct http_req_ops h1_req_ops;
static const struct http_codec h1_raw_codec;
static const http_parser_settings settings;
static void process(struct h1 *h);

static struct h1 *h1_of(struct http_conn *c)
{
	return c->codec_data;
}

/* ---- answers without a request ---------------------------------------------------- */

static int build_head(struct h1 *h, struct h1_req *q, struct sbx_buf *b, int status,
		      const char *content_type, long long length)
{
	bool no_body = status < 200 || status == 204 || status == 304;
	char st[24], cl[24];
	int rc;

	rc = sbx_buf_cat(b, "HTTP/1.1 ", http_utoa((unsigned)status, st), " ",
			 sbx_http_reason(status), "\r\nServer: ", h->c->s->o.server_name,
			 "\r\nDate: ", http_date(h->c->s), "\r\n");
	if (!rc && q && q->r.resp_headers.len)
		rc = sbx_buf_append(b, q->r.resp_headers.data, q->r.resp_headers.len);
	if (!rc && content_type && !no_body)
		rc = sbx_buf_cat(b, "Content-Type: ", content_type, "\r\n");
	if (!rc && !no_body && length >= 0)
		rc = sbx_buf_cat(b, "Content-Length: ", http_utoa((unsigned long long)length, cl),
				 "\r\n");
	else if (!rc && !no_body && q && q->chunked)
		rc = sbx_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
	if (!rc && !h->keep_alive)
		rc = sbx_buf_append_str(b, "Connection: close\r\n");
	if (!rc)
		rc = sbx_buf_append_str(b, "\r\n");
	http_count_response(h->c->s, status);
	return rc;
}

/* A JSON error for a connection whose request cannot be handled (a parse
 * error, a limit, no slot); the connection ends after it. */
static void refuse(struct h1 *h, int status, const char *message)
{
	json_t *body = json_pack("{s:{s:i, s:s}}", "error", "status", status, "message", message);
	char *text = body ? sbx_json_dumps(body) : NULL;
	struct sbx_buf head;

	h->keep_alive = false;
	sbx_buf_init(&head, 4096);
	if (text &&
	    !build_head(h, NULL, &head, status, "application/json", (long long)strlen(text))) {
		uv_buf_t b[2] = { uv_buf_init(head.data, (unsigned)head.len),
				  uv_buf_init(text, (unsigned)strlen(text)) };

		conn_send(h->c, b, 2);
	}
	sbx_buf_release(&head);
	sbx_free(text);
	json_decref(body);
	conn_shutdown(h->c);
}

void http1_refuse(struct http_conn *c, int status, const char *message)
{
	refuse(h1_of(c), status, message);
}

/* ---- requests ---------------------------------------------------------------------- */

static struct h1_req *req_new(struct h1 *h)
{
	struct sbx_http_server *s = h->c->s;
	struct h1_req *q = sbx_spares_get(&s->h1_reqs);

	if (!q)
		return NULL;
	memset(q, 0, offsetof(struct h1_req, arena_space));
	/* Room for the NULs between fields on top of the header byte limit. */
	req_init(&q->r, s, &h1_req_ops, s->o.max_header_bytes + 2u * s->o.max_headers + 8);
	sbx_buf_init_on(&q->r.arena, q->r.arena.max, q->arena_space, sizeof(q->arena_space));
	q->h = h;
	q->r.reserved = h->c->reserved;
	q->r.secure = h->c->ssl != NULL;
	return q;
}

static void req_free(struct h1_req *q)
{
	struct sbx_http_server *s = q->r.s;

	req_release(&q->r);
	sbx_spares_put(&s->h1_reqs, q);
}

/* The handler had the request and its client is gone. */
static void req_abandon(struct h1_req *q)
{
	if (q->r.state >= REQ_HANDLER && q->r.state != REQ_DONE && q->r.on_abort)
		q->r.on_abort(&q->r, q->r.abort_arg);
	req_free(q);
}

/* Is the request's body still (partly) unread? Then the connection cannot
 * carry another request after the answer. */
static bool body_unread(const struct h1_req *q)
{
	return !q->msg_done && q->has_body;
}

/* The response has ended: free the request, go on with the connection. */
static void finish(struct h1_req *q)
{
	struct h1 *h = q->h;
	struct http_conn *c = h->c;

	req_set_state(&q->r, REQ_DONE);
	if (body_unread(q) || h->parser.upgrade)
		h->keep_alive = false;
	/* This may run inside the parser (a sink answering from its data
	 * callback): stop it before it reaches more of this request. */
	http_parser_pause(&h->parser, 1);
	h->req = NULL;
	req_free(q);
	if (!h->keep_alive || c->state != CONN_OPEN) {
		conn_shutdown(c);
		return;
	}
	http_parser_pause(&h->parser, 0);
	conn_set_timer(c, TIMER_IDLE, c->s->o.idle_timeout_ms);
	conn_resume(c, PAUSE_HANDLER | PAUSE_BODY);
	process(h);
}

static void decide_keep_alive(struct h1_req *q)
{
	struct h1 *h = q->h;

	h->keep_alive = h->keep_alive && http_should_keep_alive(&h->parser) &&
			h->c->state == CONN_OPEN && !body_unread(q) && !h->parser.upgrade;
}

static int h1_respond(struct sbx_http_req *r, int status, const char *content_type,
		      long long length, const void *body, size_t len, bool whole)
{
	struct h1_req *q = (struct h1_req *)r;
	struct h1 *h = q->h;
	bool no_body = status < 200 || status == 204 || status == 304;
	char space[1024]; /* a usual head; conn_send copies what the socket does not take */
	struct sbx_buf head;
	int rc;

	req_set_state(r, REQ_RESPONDING);
	if (!conn_alive(h->c)) {
		if (whole)
			finish(q);
		return -ECONNRESET;
	}
	decide_keep_alive(q);
	if (!whole && length < 0) {
		/* HTTP/1.0 has no chunked coding: the end of the body is the close. */
		if (h->parser.http_major == 1 && h->parser.http_minor >= 1)
			q->chunked = true;
		else
			h->keep_alive = false;
	}
	sbx_buf_init_on(&head, 128 * 1024, space, sizeof(space));
	rc = build_head(h, q, &head, status, content_type, no_body && whole ? -1 : length);
	if (!rc) {
		/* The head and what body there is, in one write. */
		bool with_body = !r->head && !no_body && len;
		char size_line[24];
		uv_buf_t b[4] = { uv_buf_init(head.data, (unsigned)head.len) };
		unsigned nb = 1;

		if (with_body && !whole && q->chunked) {
			int n = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);

			b[nb++] = uv_buf_init(size_line, (unsigned)n);
		}
		if (with_body)
			b[nb++] = uv_buf_init((char *)body, (unsigned)len);
		if (with_body && !whole && q->chunked)
			b[nb++] = uv_buf_init("\r\n", 2);
		rc = conn_send(h->c, b, nb);
	}
	sbx_buf_release(&head);
	if (rc)
		h->keep_alive = false;
	if (whole)
		finish(q);
	else if (!rc && len)
		rc = conn_congested(h->c);
	return rc;
}

static int h1_write(struct sbx_http_req *r, const void *data, size_t len)
{
	struct h1_req *q = (struct h1_req *)r;
	struct http_conn *c = q->h->c;
	char size_line[24];
	int rc;

	if (!conn_alive(c))
		return -ECONNRESET;
	if (q->chunked) {
		int n = snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
		uv_buf_t b[3] = { uv_buf_init(size_line, (unsigned)n),
				  uv_buf_init((char *)data, (unsigned)len),
				  uv_buf_init("\r\n", 2) };

		rc = conn_send(c, b, 3);
	} else {
		rc = conn_send1(c, data, len);
	}
	if (rc)
		return rc;
	return conn_congested(c);
}

static int h1_end(struct sbx_http_req *r)
{
	struct h1_req *q = (struct h1_req *)r;
	struct h1 *h = q->h;
	int rc = 0;

	if (conn_alive(h->c) && q->chunked && !r->head)
		rc = conn_send1(h->c, "0\r\n\r\n", 5);
	if (r->sized && r->length_left && !r->head)
		h->keep_alive = false; /* short: the close tells the client */
	finish(q);
	return rc;
}

static void h1_file_sent(struct http_conn *c, int status)
{
	struct h1_req *q = h1_of(c)->req;
	sbx_http_file_cb done;

	if (!q || !(done = q->r.file_done))
		return;
	q->r.file_done = NULL;
	done(&q->r, q->r.file_arg, status);
}

static int h1_send_file(struct sbx_http_req *r, int fd, uint64_t off, uint64_t len)
{
	struct h1_req *q = (struct h1_req *)r;

	if (q->chunked)
		return -ENOTSUP;
	return conn_send_file(q->h->c, fd, off, len, h1_file_sent);
}

static void h1_abort(struct sbx_http_req *r)
{
	struct h1_req *q = (struct h1_req *)r;

	/* The handler gives up: its abort callback does not run. */
	r->on_abort = NULL;
	conn_close(q->h->c);
}

static void h1_pause_body(struct sbx_http_req *r)
{
	struct h1_req *q = (struct h1_req *)r;

	if (!r->streamed || q->msg_done || q->body_paused)
		return;
	q->body_paused = true;
	conn_pause(q->h->c, PAUSE_BODY);
	conn_set_timer(q->h->c, TIMER_NONE, 0);
}

static void h1_resume_body(struct sbx_http_req *r)
{
	struct h1_req *q = (struct h1_req *)r;
	struct h1 *h = q->h;

	if (!r->streamed || r->body_ended || !conn_alive(h->c))
		return;
	if (q->want_continue) {
		q->want_continue = false;
		conn_send1(h->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	}
	q->body_paused = false;
	if (!q->msg_done) {
		conn_set_timer(h->c, TIMER_BODY, h->c->s->o.idle_timeout_ms);
		/* The handler may have held the request without its body
		 * (PAUSE_HANDLER): reading is this body's now. */
		conn_resume(h->c, PAUSE_BODY | PAUSE_HANDLER);
	}
	process(h);
}

static const char *h1_peer(const struct sbx_http_req *r)
{
	return ((const struct h1_req *)r)->h->c->peer;
}

/* ---- the byte stream after an Upgrade --------------------------------------------- */

static void raw_input(struct http_conn *c, const char *data, size_t len)
{
	struct h1_stream *hs = c->codec_data;

	conn_set_timer(c, TIMER_STREAM, c->s->o.stream_idle_timeout_ms);
	if (!hs->st.cb || hs->paused) {
		/* At most one read more arrives after the pause. */
		if (sbx_buf_append(&hs->held, data, len))
			conn_close(c);
		return;
	}
	hs->st.cb->data(hs->st.arg, data, len);
}

static void raw_drained(struct http_conn *c)
{
	struct h1_stream *hs = c->codec_data;

	if (hs->st.cb && hs->st.cb->drained)
		hs->st.cb->drained(hs->st.arg);
}

static void raw_timeout(struct http_conn *c, enum conn_timer which)
{
	(void)which;
	conn_close(c); /* no traffic either way for stream_idle_timeout_ms */
}

static void raw_shutdown(struct http_conn *c)
{
	struct h1_stream *hs = c->codec_data;

	if (hs->st.cb && hs->st.cb->shutdown)
		hs->st.cb->shutdown(hs->st.arg);
}

static void raw_gone(struct http_conn *c)
{
	struct h1_stream *hs = c->codec_data;

	if (hs->st.cb && hs->st.cb->closed)
		hs->st.cb->closed(hs->st.arg);
	sbx_buf_release(&hs->held);
	sbx_free(hs);
}

static const struct http_codec h1_raw_codec = {
	.name = "http/1.1-upgraded",
	.input = raw_input,
	.drained = raw_drained,
	.timeout = raw_timeout,
	.shutdown = raw_shutdown,
	.gone = raw_gone,
};

static int raw_send(struct http_stream *st, const void *data, size_t len)
{
	struct h1_stream *hs = (struct h1_stream *)st;
	int rc = conn_send1(hs->c, data, len);

	if (rc)
		return rc;
	conn_set_timer(hs->c, TIMER_STREAM, hs->c->s->o.stream_idle_timeout_ms);
	return conn_congested(hs->c);
}

static bool raw_congested(const struct http_stream *st)
{
	return conn_congested(((const struct h1_stream *)st)->c);
}

static void raw_pause(struct http_stream *st)
{
	struct h1_stream *hs = (struct h1_stream *)st;

	hs->paused = true;
	conn_pause(hs->c, PAUSE_PEER);
}

static void raw_resume(struct http_stream *st)
{
	struct h1_stream *hs = (struct h1_stream *)st;
	struct http_conn *c = hs->c;

	hs->paused = false;
	if (hs->held.len && st->cb) {
		struct sbx_buf held = hs->held;

		sbx_buf_init(&hs->held, held.max);
		st->cb->data(st->arg, held.data, held.len);
		sbx_buf_release(&held);
		if (!conn_alive(c) || hs->paused)
			return;
	}
	conn_resume(c, PAUSE_PEER);
}

static void raw_close(struct http_stream *st)
{
	conn_shutdown(((struct h1_stream *)st)->c);
}

static const struct http_stream_ops raw_ops = {
	.send = raw_send,
	.congested = raw_congested,
	.pause = raw_pause,
	.resume = raw_resume,
	.close = raw_close,
};

static int h1_upgrade(struct sbx_http_req *r, struct http_stream **out)
{
	struct h1_req *q = (struct h1_req *)r;
	struct h1 *h = q->h;
	struct http_conn *c = h->c;
	struct h1_stream *hs;
	struct sbx_buf head;
	int rc;

	if (!(r->upgrade || r->connect) || r->upgrade_by_connect || !conn_alive(c) || !q->msg_done)
		return -EINVAL;
	hs = sbx_calloc(1, sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	sbx_buf_init(&head, 128 * 1024);
	if (r->connect)
		rc = sbx_buf_printf(&head, "HTTP/1.1 200 Connection established\r\nServer: %s\r\n",
				    c->s->o.server_name);
	else
		rc = sbx_buf_printf(&head,
				    "HTTP/1.1 101 Switching Protocols\r\nServer: %s\r\nUpgrade: "
				    "%s\r\nConnection: Upgrade\r\n",
				    c->s->o.server_name, r->upgrade);
	if (!rc && r->resp_headers.len)
		rc = sbx_buf_append(&head, r->resp_headers.data, r->resp_headers.len);
	if (!rc)
		rc = sbx_buf_append_str(&head, "\r\n");
	if (!rc)
		rc = conn_send1(c, head.data, head.len);
	sbx_buf_release(&head);
	if (rc) {
		sbx_free(hs);
		return rc;
	}
	http_count_response(c->s, r->connect ? 200 : 101);
	hs->st.ops = &raw_ops;
	hs->st.s = c->s;
	hs->c = c;
	hs->paused = true; /* until attached */
	snprintf(hs->st.peer, sizeof(hs->st.peer), "%s", c->peer);
	/* Bytes the client sent right behind its request are the stream's. */
	sbx_buf_init(&hs->held, h->pending.len + sizeof(c->s->read_buf) + 4096);
	sbx_buf_append(&hs->held, h->pending.data, h->pending.len);
	req_set_state(r, REQ_DONE);
	h->req = NULL;
	req_free(q);
	sbx_buf_release(&h->pending);
	if (h->processing) {
		h->dead = true; /* process() frees it */
	} else {
		sbx_free(h);
	}
	conn_set_codec(c, &h1_raw_codec, hs);
	c->pause = PAUSE_PEER;
	conn_resume(c, 0);
	conn_set_timer(c, TIMER_STREAM, c->s->o.stream_idle_timeout_ms);
	*out = &hs->st;
	return 0;
}

static const struct http_req_ops h1_req_ops = {
	.respond = h1_respond,
	.write = h1_write,
	.end = h1_end,
	.abort = h1_abort,
	.pause_body = h1_pause_body,
	.resume_body = h1_resume_body,
	.upgrade = h1_upgrade,
	.peer = h1_peer,
	.send_file = h1_send_file,
};

/* ---- parsing ------------------------------------------------------------------------- */

static struct h1 *h1_parser(http_parser *p)
{
	return p->data;
}

/* Rejects the request being parsed; the answer goes out once the parser
 * has returned. -1, not 1: from on_headers_complete, 1 would mean "no body
 * follows" rather than an error. */
static int reject(struct h1_req *q, int status, const char *message)
{
	req_early(&q->r, status, message);
	return -1;
}

static int on_message_begin(http_parser *p)
{
	struct h1 *h = h1_parser(p);

	h->req = req_new(h);
	if (!h->req)
		return -1;
	h->seen_request = true;
	h->last = H_NONE;
	h->c->s->stats.requests++;
	/* The head must arrive within header_timeout, however slowly sent. */
	conn_set_timer(h->c, TIMER_HEADER, h->c->s->o.header_timeout_ms);
	return 0;
}

static int arena_add(struct h1_req *q, const char *at, size_t len)
{
	return sbx_buf_append(&q->r.arena, at, len) ? reject(q, 431, "request headers too large")
						    : 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct h1_req *q = h1_parser(p)->req;

	if (!q)
		return -1;
	return sbx_buf_append(&q->r.arena, at, len) ? reject(q, 414, "request target too long") : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = h1_parser(p);
	struct h1_req *q = h->req;
	struct http_hdr *slot;
	int err;

	if (!q)
		return -1;
	if (q->r.state != REQ_HEAD)
		return 0; /* a chunked body's trailers: dropped (the arena stays put) */
	/* No whitespace before the colon (RFC 9112 5.1): "Transfer-Encoding :"
	 * must not pass as some other header beside a framing one. */
	if (!http_is_token(at, len))
		return reject(q, 400, "invalid header field name");
	if (h->last != H_FIELD) {
		if (arena_add(q, "", 1))
			return -1;
		if (!(slot = req_header_slot(&q->r, &err)))
			return err == -E2BIG ? reject(q, 431, "too many request headers")
					     : reject(q, 503, "out of memory");
		*slot = (struct http_hdr){ .name = q->r.arena.len };
		q->r.n_headers++;
		h->last = H_FIELD;
	}
	return arena_add(q, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = h1_parser(p);
	struct h1_req *q = h->req;

	if (!q)
		return -1;
	if (q->r.state != REQ_HEAD)
		return 0;
	if (h->last == H_FIELD) {
		struct http_hdr *last = &q->r.headers[q->r.n_headers - 1];

		last->name_len = q->r.arena.len - last->name;
		if (arena_add(q, "", 1))
			return -1;
		last->value = q->r.arena.len;
		h->last = H_VALUE;
	}
	return arena_add(q, at, len);
}

static int on_headers_complete(http_parser *p)
{
	struct h1 *h = h1_parser(p);
	struct h1_req *q = h->req;
	struct sbx_http_req *r;
	const char *upgrade;

	if (!q || arena_add(q, "", 1))
		return -1;
	r = &q->r;
	/* An empty last value never called on_header_value: point it at a NUL
	 * (its name's). */
	if (h->last == H_FIELD) {
		struct http_hdr *last = &r->headers[r->n_headers - 1];

		last->name_len = r->arena.len - 1 - last->name;
		last->value = r->arena.len - 1;
	}
	req_set_method(r, http_method_str(p->method));
	r->head = p->method == HTTP_HEAD;
	if (p->method == HTTP_CONNECT) {
		/* authority-form: host:port, for a forward proxy only */
		if (!h->c->s->o.proxy)
			return reject(q, 400, "CONNECT is not served here");
		if (!r->arena.data[0] || strpbrk(r->arena.data, "/?#@"))
			return reject(q, 400, "CONNECT takes host:port");
		if (!(r->authority = sbx_strdup(r->arena.data)))
			return reject(q, 503, "out of memory");
		r->target = r->path = r->arena.data;
		r->connect = true;
	} else {
		req_split_target(r);
		if (r->path[0] != '/' && p->method != HTTP_OPTIONS)
			return reject(q, 400, "the request target must be a path");
	}
	if (p->flags & F_CONTENTLENGTH)
		r->content_length = (long long)p->content_length;
	else if (!(p->flags & F_CHUNKED))
		r->content_length = 0; /* no framing: no body (RFC 9112 6.3) */
	q->has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length);
	upgrade = sbx_http_header(r, "Upgrade");
	if (p->upgrade && upgrade && p->method == HTTP_GET)
		r->upgrade = upgrade;
	if (sbx_http_header(r, "Expect") && p->http_minor >= 1) {
		if (strcasecmp(sbx_http_header(r, "Expect"), "100-continue") != 0)
			return reject(q, 417, "unsupported Expect header");
		q->want_continue = q->has_body;
	}
	/* Stop here: the head is routed and authorized before the body. */
	h->at_head = true;
	http_parser_pause(p, 1);
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct h1 *h = h1_parser(p);
	struct h1_req *q = h->req;
	struct sbx_http_req *r;
	int rc;

	if (!q)
		return 0;
	r = &q->r;
	conn_set_timer(h->c, TIMER_BODY, h->c->s->o.idle_timeout_ms);
	if (r->streamed) {
		if (r->body_ended)
			return 0;
		r->body_received += len;
		if (r->body_received > r->body.max) {
			r->body_ended = true;
			h1_pause_body(r);
			if (r->sink->end)
				r->sink->end(r, -EFBIG, r->sink_arg); /* may answer */
			return 0;
		}
		if (r->sink->data(r, at, len, r->sink_arg) < 0 && h->req == q) {
			r->body_ended = true;
			h->keep_alive = false;
			h1_pause_body(r);
		}
		return 0;
	}
	rc = req_body_append(r, at, len);
	if (rc == -ENOBUFS)
		return reject(q, 503, "the server holds too many request bodies; try again");
	if (rc) {
		snprintf(r->early_text, sizeof(r->early_text),
			 "request body too large (the limit is %zu bytes)", r->body.max);
		return reject(q, 413, r->early_text);
	}
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct h1 *h = h1_parser(p);

	if (h->req)
		h->req->msg_done = true;
	h->at_end = true;
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

/* ---- the connection ------------------------------------------------------------------- */

static void on_head(struct h1 *h)
{
	struct h1_req *q = h->req;
	enum route_verdict v;

	conn_set_timer(h->c, TIMER_BODY, h->c->s->o.idle_timeout_ms);
	v = http_route_head(&q->r);
	if (h->dead || h->req != q)
		return; /* answered (and freed) */
	if (v == ROUTE_BUFFER && q->want_continue) {
		q->want_continue = false;
		conn_send1(h->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	}
	if (v == ROUTE_STREAM && !q->r.sink && q->has_body) {
		/* The body waits until the handler asks for it. */
		q->body_paused = true;
		conn_pause(h->c, PAUSE_BODY);
		conn_set_timer(h->c, TIMER_NONE, 0);
	} else if (v == ROUTE_STREAM && !q->has_body) {
		/* Nothing to wait for: reading goes on (a next request waits in
		 * the buffer), and no body timer runs while the handler works. */
		conn_set_timer(h->c, TIMER_NONE, 0);
	}
}

static void on_end(struct h1 *h)
{
	struct h1_req *q = h->req;
	struct sbx_http_req *r;

	if (!q)
		return; /* answered at its head, and it had no body */
	r = &q->r;
	conn_set_timer(h->c, TIMER_NONE, 0);
	if (r->streamed) {
		if (!r->body_ended) {
			r->body_ended = true;
			if (r->sink && r->sink->end)
				r->sink->end(r, 0, r->sink_arg);
		}
		return;
	}
	if (r->state == REQ_BODY)
		http_route_dispatch(r);
}

/* May the parser go on? Not while a handler holds the request, unless it
 * is reading that request's streamed body, or the last byte of a request
 * without a body (http_parser stops at the head one byte before the end of
 * the message: left unread, it would count as a next request's bytes and
 * pause reading for every request). */
static bool may_parse(const struct h1 *h)
{
	const struct h1_req *q = h->req;

	if (!q)
		return true;
	if (q->r.state == REQ_HEAD || q->r.state == REQ_BODY)
		return true;
	if (!q->msg_done && !q->has_body && !h->parser.upgrade)
		return true;
	return q->r.streamed && !q->msg_done && q->r.sink && !q->body_paused && !q->r.body_ended;
}

static bool start_h2(struct h1 *h)
{
	struct http_conn *c = h->c;
	size_t n =
		h->pending.len < sizeof(h2_preface) - 1 ? h->pending.len : sizeof(h2_preface) - 1;
	struct sbx_buf first;

	if (h->seen_request || !n || memcmp(h->pending.data, h2_preface, n) != 0)
		return false;
	if (n < sizeof(h2_preface) - 1)
		return true; /* the rest of the preface is still to come */
	/* The connection is HTTP/2's now (never called while parsing). */
	first = h->pending;
	sbx_free(h);
	conn_set_codec(c, NULL, NULL);
	if (http2_start(c, first.data, first.len))
		conn_close(c);
	else
		conn_resume(c, PAUSE_FULL); /* HTTP/2 paces its input by its windows */
	sbx_buf_release(&first);
	return true;
}

static void parse_failed(struct h1 *h, enum http_errno err)
{
	struct h1_req *q = h->req;
	int status = q && q->r.early_status ? q->r.early_status : 400;
	const char *message =
		q && q->r.early_status ? q->r.early_message : http_errno_description(err);

	if (q && q->r.state >= REQ_HANDLER) {
		/* A streamed body turned out malformed: its handler is aborted. */
		conn_close(h->c);
		return;
	}
	if (q) {
		/* Copy out: the message may live in the request. */
		char text[128];

		snprintf(text, sizeof(text), "%s", message);
		h->req = NULL;
		req_free(q);
		refuse(h, status, text);
		return;
	}
	refuse(h, status, message);
}

static void parse(struct h1 *h)
{
	struct http_conn *c = h->c;

	while (!h->dead && conn_alive(c) && h->pending.len && may_parse(h)) {
		size_t n =
			http_parser_execute(&h->parser, &settings, h->pending.data, h->pending.len);
		enum http_errno err = HTTP_PARSER_ERRNO(&h->parser);

		if (h->dead)
			return;
		if (err != HPE_OK && err != HPE_PAUSED) {
			parse_failed(h, err);
			return;
		}
		sbx_buf_consume(&h->pending, n);
		if (h->at_head) {
			h->at_head = false;
			http_parser_pause(&h->parser, 0);
			on_head(h);
			continue;
		}
		if (h->at_end) {
			h->at_end = false;
			on_end(h);
			if (!h->dead && h->parser.upgrade)
				return; /* what follows is not HTTP/1 */
			if (!h->dead && !h->req)
				http_parser_pause(&h->parser, 0);
			continue;
		}
		if (!n)
			return;
	}
}

static void process(struct h1 *h)
{
	if (h->processing) {
		h->again = true;
		return;
	}
	if (start_h2(h))
		return;
	h->processing = true;
	do {
		h->again = false;
		parse(h);
	} while (h->again && !h->dead);
	h->processing = false;
	if (h->dead) {
		sbx_buf_release(&h->pending);
		sbx_free(h);
		return;
	}
	if (!conn_alive(h->c))
		return;
	if (h->pending.len < sizeof(h->c->s->read_buf))
		conn_resume(h->c, PAUSE_FULL);
	/* Bytes of the next request arrived while this one is handled: keep
	 * them, and read no more until the answer is out. Until then reading
	 * goes on, so that a client going away is noticed. */
	if (h->req && !may_parse(h) && h->pending.len)
		conn_pause(h->c, PAUSE_HANDLER);
}

static void h1_input(struct http_conn *c, const char *data, size_t len)
{
	struct h1 *h = h1_of(c);

	if (sbx_buf_append(&h->pending, data, len)) {
		refuse(h, 431, "request too large");
		return;
	}
	if (h->pending.len >= sizeof(c->s->read_buf))
		conn_pause(c, PAUSE_FULL);
	process(h);
}

static void h1_drained(struct http_conn *c)
{
	struct h1 *h = h1_of(c);
	struct h1_req *q = h->req;

	if (q && q->r.on_drain) {
		void (*cb)(struct sbx_http_req *, void *) = q->r.on_drain;

		q->r.on_drain = NULL;
		cb(&q->r, q->r.drain_arg);
	}
}

static void h1_timeout(struct http_conn *c, enum conn_timer which)
{
	struct h1 *h = h1_of(c);
	struct h1_req *q = h->req;

	if (q && q->r.state < REQ_HANDLER) {
		h->req = NULL;
		req_free(q);
		refuse(h, 408, "request not received in time");
		return;
	}
	(void)which;
	/* Idle between requests, or a streamed body stalled (its handler
	 * hears of it through its abort callback). */
	conn_close(c);
}

static void h1_shutdown(struct http_conn *c)
{
	struct h1 *h = h1_of(c);

	/* Idle: close now. Busy: close after the answer (finish sees the
	 * connection draining). */
	if (!h->req)
		conn_shutdown(c);
	else
		h->keep_alive = false;
}

static void h1_gone(struct http_conn *c)
{
	struct h1 *h = h1_of(c);
	struct h1_req *q = h->req;

	h->req = NULL;
	if (q)
		req_abandon(q);
	if (h->processing) {
		h->dead = true;
		return;
	}
	sbx_buf_release(&h->pending);
	sbx_free(h);
}

const struct http_codec http1_codec = {
	.name = "http/1.1",
	.input = h1_input,
	.drained = h1_drained,
	.timeout = h1_timeout,
	.shutdown = h1_shutdown,
	.gone = h1_gone,
};

void *http1_new(struct http_conn *c)
{
	struct h1 *h = sbx_calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->c = c;
	h->keep_alive = true;
	/* Bytes past the current message: at most one read plus a head. */
	sbx_buf_init(&h->pending, 2 * sizeof(c->s->read_buf) + c->s->o.max_header_bytes + 4096);
	http_parser_init(&h->parser, HTTP_REQUEST);
	h->parser.data = h;
	return h;
}
