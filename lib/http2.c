/* HTTP/2 server codec on nghttp2 (h2c with prior knowledge, h2 by ALPN).
 *
 * Each stream is a request (struct h2_stream embeds it) that lives until
 * nghttp2 closes the stream, so nothing nghttp2 still refers to is ever
 * freed early. Heads are routed and authorized as soon as they are in; the
 * DATA of a refused request is consumed and dropped. Flow control follows
 * the handler: window is given back only as a streamed body's sink (or an
 * upgraded stream's user) takes the bytes. An extended CONNECT (RFC 8441,
 * :protocol) is answered 200 and its stream carries bytes both ways through
 * the same struct http_stream an HTTP/1 Upgrade provides.
 *
 * Timers: a connection without streams is idle (idle_timeout_ms); with
 * streams, a periodic check resets the streams whose body stalled and the
 * upgraded ones without traffic. The server's stop sends GOAWAY and closes
 * the connection when its last stream has finished.
 */
#include "http_types.h"

#include "sbx/alloc.h"

#include <ctype.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define H2_MAX_STREAMS 100
#define H2_WINDOW      (1u << 20)

struct h2;

struct h2_stream {
	struct sbx_http_req r; /* first: the request API's view */
	struct h2 *h2;
	int32_t id;
	struct sbx_buf hdrs; /* "name\0value\0" until the head is complete */
	struct sbx_buf out;  /* response bytes not yet framed */
	size_t out_off;
	size_t unconsumed; /* bytes not yet given back to the window */
	uint64_t last_in_ms;
	bool head_done, end_in, eof_out, deferred, paused, upgraded, too_large;
	struct http_stream st; /* after an extended CONNECT */
	struct h2_stream *next, *prev;
};

struct h2 {
	struct http_conn *c;
	nghttp2_session *ng;
	struct h2_stream *streams;
	unsigned n_streams;
	/* nghttp2 may not send from inside its callbacks, and sending may
	 * close (and free) streams: while hold is set, flushes are only noted
	 * (flush_due) and run once the outermost caller lets go. */
	unsigned hold;
	bool flush_due;
	bool goaway;
	bool flushing;
};

static const struct http_req_ops h2_req_ops;
static const struct http_stream_ops h2_stream_ops;
static void flush(struct h2 *h2);
static void flush_soon(struct h2 *h2);

static struct h2 *h2_of(struct http_conn *c)
{
	return c->codec_data;
}

static void arm(struct h2 *h2)
{
	struct http_conn *c = h2->c;

	if (!h2->n_streams)
		conn_set_timer(c, TIMER_IDLE, c->s->o.idle_timeout_ms);
	else if (c->timer_kind != TIMER_CHECK)
		conn_set_timer(c, TIMER_CHECK, c->s->o.idle_timeout_ms / 2);
}

/* ---- streams ----------------------------------------------------------------- */

static struct h2_stream *stream_new(struct h2 *h2, int32_t id)
{
	struct sbx_http_server *s = h2->c->s;
	struct h2_stream *hs = sbx_calloc(1, sizeof(*hs));

	if (!hs)
		return NULL;
	req_init(&hs->r, s, &h2_req_ops, s->o.max_header_bytes + 2u * s->o.max_headers + 64);
	hs->r.reserved = h2->c->reserved;
	hs->r.secure = h2->c->ssl != NULL;
	hs->h2 = h2;
	hs->id = id;
	hs->last_in_ms = uv_now(s->loop);
	sbx_buf_init(&hs->hdrs, s->o.max_header_bytes);
	sbx_buf_init(&hs->out, SIZE_MAX / 2);
	hs->next = h2->streams;
	if (h2->streams)
		h2->streams->prev = hs;
	h2->streams = hs;
	h2->n_streams++;
	s->stats.requests++;
	arm(h2);
	return hs;
}

static void stream_unlink(struct h2 *h2, struct h2_stream *hs)
{
	if (hs->prev)
		hs->prev->next = hs->next;
	else
		h2->streams = hs->next;
	if (hs->next)
		hs->next->prev = hs->prev;
	hs->next = hs->prev = NULL;
	h2->n_streams--;
}

/* The stream is gone: its user hears of it, and it is freed. */
static void stream_free(struct h2_stream *hs)
{
	if (hs->upgraded) {
		if (hs->st.cb && hs->st.cb->closed)
			hs->st.cb->closed(hs->st.arg);
	} else if (hs->r.state >= REQ_HANDLER && hs->r.state != REQ_DONE && hs->r.on_abort) {
		hs->r.on_abort(&hs->r, hs->r.abort_arg);
	}
	req_release(&hs->r);
	sbx_buf_release(&hs->hdrs);
	sbx_buf_release(&hs->out);
	sbx_free(hs);
}

static void give_back(struct h2_stream *hs, size_t len)
{
	nghttp2_session_consume(hs->h2->ng, hs->id, len);
}

static void reset(struct h2_stream *hs, uint32_t code)
{
	nghttp2_submit_rst_stream(hs->h2->ng, NGHTTP2_FLAG_NONE, hs->id, code);
}

/* ---- the response ------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h2_stream *hs = src->ptr;
	size_t left = hs->out.len - hs->out_off, n = left < length ? left : length;

	(void)ng;
	(void)id;
	(void)user;
	if (n)
		memcpy(buf, hs->out.data + hs->out_off, n);
	hs->out_off += n;
	if (hs->out_off == hs->out.len) {
		sbx_buf_reset(&hs->out);
		hs->out_off = 0;
	}
	if (hs->eof_out && hs->out.len == hs->out_off) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	if (!n) {
		hs->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* Submits the response head (and a data source unless there is no body). */
static int submit_head(struct h2_stream *hs, int status, const char *content_type, long long length,
		       bool body)
{
	struct http_conn *c = hs->h2->c;
	nghttp2_nv nva[64];
	size_t n = 0, off = 0, nlen, vlen;
	char st[24], cl[24], names[64][64];
	const char *name, *value;
	nghttp2_data_provider dp = { .source.ptr = hs, .read_callback = read_body };
	bool no_body = status < 200 || status == 204 || status == 304;

#define NV(N, NL, V, VL) \
	nva[n++] = (nghttp2_nv){ (uint8_t *)(N), (uint8_t *)(V), NL, VL, NGHTTP2_NV_FLAG_NONE }
	http_utoa((unsigned)status, st);
	NV(":status", 7, st, strlen(st));
	NV("server", 6, c->s->o.server_name, strlen(c->s->o.server_name));
	NV("date", 4, http_date(c->s), strlen(http_date(c->s)));
	if (content_type && !no_body)
		NV("content-type", 12, content_type, strlen(content_type));
	if (length >= 0 && !no_body) {
		http_utoa((unsigned long long)length, cl);
		NV("content-length", 14, cl, strlen(cl));
	}
	/* The handler's own headers, lower-cased; connection-specific ones
	 * have no place in HTTP/2. */
	while (n < sizeof(nva) / sizeof(nva[0]) &&
	       req_next_resp_header(&hs->r, &off, &name, &nlen, &value, &vlen)) {
		char *lower = names[n];

		if (nlen >= sizeof(names[0]))
			continue;
		for (size_t i = 0; i < nlen; i++)
			lower[i] = (char)tolower((unsigned char)name[i]);
		lower[nlen] = '\0';
		if (sbx_http_hop_by_hop(lower, nlen) ||
		    (hs->r.upgrade && !strcmp(lower, "sec-websocket-accept")))
			continue;
		NV(lower, nlen, value, vlen);
	}
#undef NV
	http_count_response(c->s, status);
	return nghttp2_submit_response(hs->h2->ng, hs->id, nva, n, body ? &dp : NULL) ? -EIO : 0;
}

static int h2_respond(struct sbx_http_req *r, int status, const char *content_type,
		      long long length, const void *body, size_t len, bool whole)
{
	struct h2_stream *hs = (struct h2_stream *)r;
	struct h2 *h2 = hs->h2;
	bool no_body = status < 200 || status == 204 || status == 304 || r->head;
	int rc;

	req_set_state(r, whole ? REQ_DONE : REQ_RESPONDING);
	if (!h2 || !conn_alive(h2->c))
		return -ECONNRESET;
	/* The body, or its first bytes, go in the same flush as the head. */
	if (!no_body && len && sbx_buf_append(&hs->out, body, len))
		return -ENOMEM;
	hs->eof_out = whole || no_body;
	rc = submit_head(hs, status, content_type, length, !no_body);
	flush_soon(h2);
	if (!rc && !whole && len)
		rc = hs->out.len - hs->out_off > h2->c->s->o.write_high_water;
	return rc;
}

static void resume_data(struct h2_stream *hs)
{
	if (hs->deferred) {
		hs->deferred = false;
		nghttp2_session_resume_data(hs->h2->ng, hs->id);
	}
}

static int h2_write(struct sbx_http_req *r, const void *data, size_t len)
{
	struct h2_stream *hs = (struct h2_stream *)r;
	struct h2 *h2 = hs->h2;

	if (!h2 || !conn_alive(h2->c))
		return -ECONNRESET;
	if (sbx_buf_append(&hs->out, data, len))
		return -ENOMEM;
	resume_data(hs);
	flush_soon(h2);
	return hs->out.len - hs->out_off > h2->c->s->o.write_high_water;
}

static int h2_end(struct sbx_http_req *r)
{
	struct h2_stream *hs = (struct h2_stream *)r;
	struct h2 *h2 = hs->h2;

	req_set_state(r, REQ_DONE);
	hs->eof_out = true;
	if (!h2 || !conn_alive(h2->c))
		return -ECONNRESET;
	if (r->sized && r->length_left && !r->head)
		reset(hs, NGHTTP2_INTERNAL_ERROR); /* short of its length: reset, not ended */
	else
		resume_data(hs);
	flush_soon(h2);
	return 0;
}

static void h2_abort(struct sbx_http_req *r)
{
	struct h2_stream *hs = (struct h2_stream *)r;

	/* One stream gives up, not the whole connection; no abort callback. */
	r->on_abort = NULL;
	if (r->state != REQ_DONE)
		req_set_state(r, REQ_DONE);
	if (hs->h2 && conn_alive(hs->h2->c)) {
		reset(hs, NGHTTP2_INTERNAL_ERROR);
		flush(hs->h2);
	}
}

/* Delivers held body bytes to the sink and gives their window back. */
static void body_flow(struct h2_stream *hs)
{
	struct sbx_http_req *r = &hs->r;
	struct h2 *h2 = hs->h2;

	/* Answered already: the handler has let go of its sink. */
	if (!h2 || !r->sink || hs->paused || r->state == REQ_DONE)
		return;
	if (r->body.len) {
		struct sbx_buf held = r->body;

		r->s->body_bytes_buffered -= held.len;
		sbx_buf_init(&r->body, held.max);
		h2->hold++;
		if (!r->body_ended && r->sink->data(r, held.data, held.len, r->sink_arg) < 0)
			r->body_ended = true;
		h2->hold--;
		sbx_buf_release(&held);
		if (!hs->h2 || hs->paused)
			return;
	}
	if (hs->unconsumed) {
		give_back(hs, hs->unconsumed);
		hs->unconsumed = 0;
	}
	if (hs->end_in && !r->body_ended) {
		r->body_ended = true;
		h2->hold++;
		if (r->sink->end)
			r->sink->end(r, 0, r->sink_arg);
		h2->hold--;
	}
}

static void h2_pause_body(struct sbx_http_req *r)
{
	((struct h2_stream *)r)->paused = true;
}

static void h2_resume_body(struct sbx_http_req *r)
{
	struct h2_stream *hs = (struct h2_stream *)r;

	hs->paused = false;
	body_flow(hs);
	if (hs->h2)
		flush(hs->h2);
}

static const char *h2_peer(const struct sbx_http_req *r)
{
	const struct h2_stream *hs = (const struct h2_stream *)r;

	return hs->h2 ? hs->h2->c->peer : "";
}

static int h2_upgrade(struct sbx_http_req *r, struct http_stream **out)
{
	struct h2_stream *hs = (struct h2_stream *)r;
	struct h2 *h2 = hs->h2;
	int rc;

	if (!r->upgrade_by_connect || !h2 || !conn_alive(h2->c))
		return -EINVAL;
	req_set_state(r, REQ_DONE);
	hs->upgraded = true;
	hs->paused = true; /* until attached */
	hs->st.ops = &h2_stream_ops;
	hs->st.s = r->s;
	snprintf(hs->st.peer, sizeof(hs->st.peer), "%s", h2->c->peer);
	rc = submit_head(hs, 200, NULL, -1, true);
	flush(h2);
	if (rc)
		return rc;
	*out = &hs->st;
	return 0;
}

static const struct http_req_ops h2_req_ops = {
	.respond = h2_respond,
	.write = h2_write,
	.end = h2_end,
	.abort = h2_abort,
	.pause_body = h2_pause_body,
	.resume_body = h2_resume_body,
	.upgrade = h2_upgrade,
	.peer = h2_peer,
};

/* ---- an upgraded stream as a byte stream ---------------------------------------- */

static struct h2_stream *of_stream(const struct http_stream *st)
{
	return (struct h2_stream *)((char *)st - offsetof(struct h2_stream, st));
}

static int st_send(struct http_stream *st, const void *data, size_t len)
{
	struct h2_stream *hs = of_stream(st);

	if (!hs->h2 || !conn_alive(hs->h2->c) || hs->eof_out)
		return -ECONNRESET;
	if (sbx_buf_append(&hs->out, data, len))
		return -ENOMEM;
	hs->last_in_ms = uv_now(st->s->loop);
	resume_data(hs);
	flush_soon(hs->h2);
	return hs->out.len - hs->out_off > st->s->o.write_high_water;
}

static bool st_congested(const struct http_stream *st)
{
	struct h2_stream *hs = of_stream(st);

	return hs->out.len - hs->out_off > st->s->o.write_high_water;
}

static void st_pause(struct http_stream *st)
{
	of_stream(st)->paused = true;
}

static void st_resume(struct http_stream *st)
{
	struct h2_stream *hs = of_stream(st);

	hs->paused = false;
	if (hs->r.body.len && st->cb) {
		struct sbx_buf held = hs->r.body;

		st->s->body_bytes_buffered -= held.len;
		sbx_buf_init(&hs->r.body, held.max);
		if (hs->h2)
			hs->h2->hold++;
		st->cb->data(st->arg, held.data, held.len);
		if (hs->h2)
			hs->h2->hold--;
		sbx_buf_release(&held);
	}
	if (!hs->h2 || hs->paused)
		return;
	if (hs->unconsumed) {
		give_back(hs, hs->unconsumed);
		hs->unconsumed = 0;
	}
	flush(hs->h2);
}

static void st_close(struct http_stream *st)
{
	struct h2_stream *hs = of_stream(st);

	hs->eof_out = true;
	if (hs->h2) {
		resume_data(hs);
		flush_soon(hs->h2);
	}
}

static const struct http_stream_ops h2_stream_ops = {
	.send = st_send,
	.congested = st_congested,
	.pause = st_pause,
	.resume = st_resume,
	.close = st_close,
};

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

/* The head is complete: arrange it as HTTP/1's (target first in the
 * arena), route and authorize it. */
static void head_done(struct h2 *h2, struct h2_stream *hs)
{
	struct sbx_http_req *r = &hs->r;
	const char *p = hs->hdrs.data, *end = p + hs->hdrs.len;
	const char *path = NULL, *authority = NULL, *protocol = NULL;
	enum route_verdict v;

	hs->head_done = true;
	for (const char *q = p; q && q < end;) {
		const char *name = q, *value = q + strlen(q) + 1;

		if (!strcmp(name, ":path"))
			path = value;
		else if (!strcmp(name, ":authority"))
			authority = value;
		else if (!strcmp(name, ":protocol"))
			protocol = value;
		else if (!strcmp(name, ":method"))
			req_set_method(r, value);
		else if (!strcmp(name, "content-length"))
			r->content_length = strtoll(value, NULL, 10);
		q = value + strlen(value) + 1;
	}
	if (sbx_buf_append(&r->arena, path ? path : "", (path ? strlen(path) : 0) + 1))
		req_early(r, 431, "request headers too large");
	if (hs->end_in)
		r->content_length = 0; /* END_STREAM on the head: no body */
	if (authority && req_add_header(r, "Host", 4, authority, strlen(authority)))
		req_early(r, 431, "request headers too large");
	for (const char *q = p; q && q < end && !r->early_status;) {
		const char *name = q, *value = q + strlen(q) + 1;

		q = value + strlen(value) + 1;
		if (name[0] != ':' && req_add_header(r, name, strlen(name), value, strlen(value)))
			req_early(r, 431, "request headers too large");
	}
	if (protocol && !strcmp(r->method, "CONNECT")) {
		/* RFC 8441: a request for path that switches to protocol. */
		size_t at = r->arena.len;

		r->upgrade_by_connect = true;
		if (sbx_buf_append(&r->arena, protocol, strlen(protocol) + 1))
			req_early(r, 431, "request headers too large");
		else
			r->upgrade = r->arena.data + at;
	}
	sbx_buf_release(&hs->hdrs);
	if (hs->too_large)
		req_early(r, 431, "request headers too large");
	r->head = strcmp(r->method, "HEAD") == 0;
	if (!r->early_status) {
		req_split_target(r);
		if (!strcmp(r->method, "CONNECT") && !protocol)
			req_early(r, 405, "plain CONNECT tunnels are not served here");
		else if (r->path[0] != '/' && strcmp(r->method, "OPTIONS") != 0)
			req_early(r, 400, "the request target must be a path");
	}
	v = http_route_head(r);
	/* An extended CONNECT has no body: its DATA are the switched
	 * protocol's, held until the handler takes the stream. */
	if (v == ROUTE_BUFFER && (hs->end_in || r->upgrade_by_connect))
		http_route_dispatch(r);
	(void)h2;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	struct h2 *h2 = user;
	struct h2_stream *hs;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	hs = stream_new(h2, f->hd.stream_id);
	if (!hs)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, hs);
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	struct h2_stream *hs = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);

	(void)flags;
	(void)user;
	if (!hs || hs->head_done || hs->too_large)
		return 0; /* trailers are dropped, as on HTTP/1 */
	if (sbx_buf_append(&hs->hdrs, name, namelen) || sbx_buf_append(&hs->hdrs, "", 1) ||
	    sbx_buf_append(&hs->hdrs, value, valuelen) || sbx_buf_append(&hs->hdrs, "", 1)) {
		/* Over the limit: this stream gets 431 once its head ends. */
		hs->too_large = true;
		sbx_buf_reset(&hs->hdrs);
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
	struct h2 *h2 = user;
	struct h2_stream *hs = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
	bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;

	if (!hs || (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
		return 0;
	if (end)
		hs->end_in = true;
	if (f->hd.type == NGHTTP2_HEADERS && !hs->head_done &&
	    (f->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
		head_done(h2, hs);
		return 0;
	}
	if (!end)
		return 0;
	if (hs->upgraded) {
		/* The client ended its side: so does the tunnel. */
		st_close(&hs->st);
	} else if (hs->r.state == REQ_BODY) {
		http_route_dispatch(&hs->r);
	} else if (hs->r.streamed) {
		body_flow(hs);
	}
	return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *user)
{
	struct h2_stream *hs = nghttp2_session_get_stream_user_data(ng, id);
	struct sbx_http_req *r;
	int rc;

	(void)flags;
	(void)user;
	if (!hs) {
		nghttp2_session_consume(ng, id, len);
		return 0;
	}
	r = &hs->r;
	hs->last_in_ms = uv_now(r->s->loop);
	if (hs->upgraded || r->upgrade_by_connect) {
		if (!hs->st.cb || hs->paused) {
			/* Held within the stream's window, which is given back
			 * when the user takes the bytes. */
			if (sbx_buf_append(&r->body, (const char *)data, len))
				reset(hs, NGHTTP2_FLOW_CONTROL_ERROR);
			else
				r->s->body_bytes_buffered += len;
			hs->unconsumed += len;
			return 0;
		}
		give_back(hs, len);
		hs->st.cb->data(hs->st.arg, (const char *)data, len);
		return 0;
	}
	if (r->state == REQ_BODY && !r->early_status) {
		give_back(hs, len);
		rc = req_body_append(r, (const char *)data, len);
		if (rc == -ENOBUFS)
			req_early(r, 503, "the server holds too many request bodies; try again");
		else if (rc)
			req_early(r, 413, "request body too large");
		if (rc)
			http_route_dispatch(r);
		return 0;
	}
	if (!r->streamed || r->body_ended || r->state == REQ_DONE) {
		/* Refused, answered or over: dropped. */
		give_back(hs, len);
		return 0;
	}
	r->body_received += len;
	if (r->body_received > r->body.max) {
		r->body_ended = true;
		give_back(hs, len);
		if (r->sink && r->sink->end)
			r->sink->end(r, -EFBIG, r->sink_arg);
		return 0;
	}
	if (!r->sink || hs->paused) {
		/* Not asked for yet, or paused: held within the window. */
		if (sbx_buf_append(&r->body, (const char *)data, len))
			reset(hs, NGHTTP2_FLOW_CONTROL_ERROR);
		else
			r->s->body_bytes_buffered += len;
		hs->unconsumed += len;
		return 0;
	}
	give_back(hs, len);
	if (r->sink->data(r, (const char *)data, len, r->sink_arg) < 0)
		r->body_ended = true;
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
	struct h2 *h2 = user;
	struct h2_stream *hs = nghttp2_session_get_stream_user_data(ng, id);

	(void)error;
	if (!hs)
		return 0;
	nghttp2_session_set_stream_user_data(ng, id, NULL);
	stream_unlink(h2, hs);
	hs->h2 = NULL;
	stream_free(hs);
	arm(h2);
	return 0;
}

/* ---- the connection ------------------------------------------------------------------ */

static void call_drains(struct h2 *h2)
{
	size_t low = h2->c->s->o.write_high_water / 2;

	for (struct h2_stream *hs = h2->streams, *next; hs; hs = next) {
		next = hs->next;
		if (hs->out.len - hs->out_off >= low)
			continue;
		if (hs->upgraded && hs->st.cb && hs->st.cb->drained) {
			hs->st.cb->drained(hs->st.arg);
		} else if (!hs->upgraded && hs->r.on_drain) {
			void (*cb)(struct sbx_http_req *, void *) = hs->r.on_drain;

			hs->r.on_drain = NULL;
			cb(&hs->r, hs->r.drain_arg);
		}
		if (!conn_alive(h2->c))
			return;
	}
}

/* Frames what nghttp2 has to send, as far as the socket keeps up, and
 * tells streams that were waiting that there is room again. */
/* What nghttp2 has to send, gathered into as few writes as it fits in:
 * one per 64 KiB rather than one per frame. 0, or an error (closed). */
static int send_frames(struct h2 *h2)
{
	struct http_conn *c = h2->c;
	struct sbx_http_server *s = c->s;
	bool batching = !s->batch_busy;
	const uint8_t *data;
	size_t len = 0;
	ssize_t n;
	int rc = 0;

	s->batch_busy = true;
	while (!rc && !conn_congested(c) && (n = nghttp2_session_mem_send(h2->ng, &data)) > 0) {
		if (batching && len + (size_t)n <= sizeof(s->batch)) {
			memcpy(s->batch + len, data, (size_t)n);
			len += (size_t)n;
			if (len < sizeof(s->batch) / 2)
				continue; /* more frames may follow */
			rc = conn_send1(c, s->batch, len);
			len = 0;
			continue;
		}
		if (len && (rc = conn_send1(c, s->batch, len)))
			break;
		len = 0;
		rc = conn_send1(c, data, (size_t)n);
	}
	if (!rc && len)
		rc = conn_send1(c, s->batch, len);
	if (batching)
		s->batch_busy = false;
	return rc;
}

static void flush(struct h2 *h2)
{
	struct http_conn *c = h2->c;

	if (h2->hold || h2->flushing) {
		h2->flush_due = true;
		return;
	}
	if (!conn_alive(c))
		return;
	h2->flushing = true;
	do {
		h2->flush_due = false;
		if (send_frames(h2)) {
			h2->flushing = false;
			conn_close(c);
			return;
		}
		if (!conn_congested(c)) {
			h2->hold++;
			call_drains(h2);
			h2->hold--;
		}
	} while (h2->flush_due && conn_alive(c) && !conn_congested(c));
	h2->flushing = false;
	if (!conn_alive(c))
		return;
	if ((!nghttp2_session_want_read(h2->ng) && !nghttp2_session_want_write(h2->ng)) ||
	    (h2->goaway && !h2->n_streams && !nghttp2_session_want_write(h2->ng)))
		conn_shutdown(c);
}

/* A response step: its frames go out at the end of the loop turn, in the
 * same write as every other stream's answered in that turn. */
static void flush_soon(struct h2 *h2)
{
	if (h2->hold || h2->flushing) {
		h2->flush_due = true; /* the outermost caller flushes */
		return;
	}
	conn_flush_soon(h2->c);
}

static void h2_input(struct http_conn *c, const char *data, size_t len)
{
	struct h2 *h2 = h2_of(c);
	ssize_t n;

	h2->hold++;
	n = nghttp2_session_mem_recv(h2->ng, (const uint8_t *)data, len);
	h2->hold--;
	if (!conn_alive(c))
		return;
	if (n < 0) {
		conn_close(c);
		return;
	}
	flush(h2);
}

static void h2_drained(struct http_conn *c)
{
	flush(h2_of(c));
}

/* Streams whose body stalled are answered 408 (or reset once answering);
 * upgraded ones without traffic are reset. */
static void check_streams(struct h2 *h2)
{
	const struct sbx_http_server_opts *o = &h2->c->s->o;
	uint64_t now = uv_now(h2->c->s->loop);

	for (struct h2_stream *hs = h2->streams, *next; hs; hs = next) {
		next = hs->next;
		if (hs->upgraded) {
			if (now - hs->last_in_ms >= o->stream_idle_timeout_ms)
				reset(hs, NGHTTP2_CANCEL);
			continue;
		}
		if (hs->end_in || now - hs->last_in_ms < o->idle_timeout_ms)
			continue;
		if (hs->r.state == REQ_HEAD || hs->r.state == REQ_BODY) {
			hs->r.state = REQ_BODY;
			req_early(&hs->r, 408, "request body not received in time");
			http_route_dispatch(&hs->r);
		} else if (hs->r.streamed && !hs->r.body_ended && !hs->paused) {
			reset(hs, NGHTTP2_CANCEL); /* its handler hears through on_abort */
		}
	}
}

static void h2_timeout(struct http_conn *c, enum conn_timer which)
{
	struct h2 *h2 = h2_of(c);

	if (which == TIMER_IDLE && !h2->n_streams) {
		/* Idle: say so, then close. */
		nghttp2_session_terminate_session(h2->ng, NGHTTP2_NO_ERROR);
		flush(h2);
		if (conn_alive(c))
			conn_shutdown(c);
		return;
	}
	h2->hold++;
	check_streams(h2);
	h2->hold--;
	if (!conn_alive(c))
		return;
	c->timer_kind = TIMER_NONE;
	arm(h2);
	flush(h2);
}

static void h2_shutdown(struct http_conn *c)
{
	struct h2 *h2 = h2_of(c);

	h2->goaway = true;
	nghttp2_submit_goaway(h2->ng, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(h2->ng), NGHTTP2_NO_ERROR,
			      NULL, 0);
	h2->hold++;
	for (struct h2_stream *hs = h2->streams, *next; hs; hs = next) {
		next = hs->next;
		if (hs->upgraded && hs->st.cb && hs->st.cb->shutdown)
			hs->st.cb->shutdown(hs->st.arg);
	}
	h2->hold--;
	flush(h2);
}

static void h2_gone(struct http_conn *c)
{
	struct h2 *h2 = h2_of(c);
	struct h2_stream *hs;

	/* Deleting the session closes no stream through the callbacks: their
	 * users are told here. */
	while ((hs = h2->streams)) {
		stream_unlink(h2, hs);
		hs->h2 = NULL;
		stream_free(hs);
	}
	nghttp2_session_del(h2->ng);
	sbx_free(h2);
}

static const struct http_codec h2_codec = {
	.name = "h2",
	.input = h2_input,
	.drained = h2_drained,
	.timeout = h2_timeout,
	.shutdown = h2_shutdown,
	.gone = h2_gone,
	.flush = h2_drained,
};

int http2_start(struct http_conn *c, const char *data, size_t len)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	nghttp2_settings_entry settings[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->s->o.max_header_bytes },
		{ NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1 },
	};
	struct h2 *h2 = sbx_calloc(1, sizeof(*h2));
	int rc;

	if (!h2)
		return -ENOMEM;
	h2->c = c;
	if (nghttp2_session_callbacks_new(&cbs)) {
		sbx_free(h2);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_option_new(&opt);
	/* Window updates follow what handlers take (streamed bodies pause). */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
	rc = nghttp2_session_server_new2(&h2->ng, cbs, h2, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rc) {
		sbx_free(h2);
		return -ENOMEM;
	}
	nghttp2_submit_settings(h2->ng, NGHTTP2_FLAG_NONE, settings,
				sizeof(settings) / sizeof(settings[0]));
	/* Connection-level flow control: a generous window, refilled as used. */
	nghttp2_session_set_local_window_size(h2->ng, NGHTTP2_FLAG_NONE, 0, 16 * H2_WINDOW);
	conn_set_codec(c, &h2_codec, h2);
	arm(h2);
	if (c->state == CONN_DRAINING)
		h2_shutdown(c);
	h2_input(c, data, len);
	return 0;
}
