/* Tunnels: a request that switches protocols (a WebSocket handshake, over
 * HTTP/1.1 Upgrade or an HTTP/2 extended CONNECT) passed through to another
 * server, on the client side of the core (http_client.c, over the server's
 * pool). The request goes upstream as an HTTP/1.1 Upgrade (an RFC 8441
 * request is translated: GET, Connection/Upgrade and a fresh
 * Sec-WebSocket-Key); a 101 switches the client's side too and bytes then
 * flow both ways, paced by the slower side; any other answer is passed back
 * as a response (its body up to 1 MiB). The upstream must connect, and then
 * answer, each within connect_timeout_ms (504); after that the client's
 * stream's idle timeout applies, and the server's stop closes the tunnel at
 * its drain deadline.
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/http_client.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define RESPONSE_MAX (1u << 20)

struct tunnel {
	struct sbx_http_server *s;
	struct sbx_http_req *req;  /* until upstream has answered */
	struct http_stream *st;	   /* the client's side, after a 101 */
	struct sbx_http_client *x; /* upstream, until it ends */
	int status;		   /* upstream's answer */
	char *content_type;
	struct sbx_buf body; /* a non-101 answer's body */
	bool by_connect;     /* the client asked with an HTTP/2 extended CONNECT */
	bool switched;	     /* counted in the server's tunnels_open */
	bool closing;
};

static void tunnel_free(struct tunnel *t)
{
	sbx_free(t->content_type);
	sbx_buf_release(&t->body);
	sbx_free(t);
}

/* Ends both sides; what was queued for the client still goes. */
static void tunnel_close(struct tunnel *t)
{
	if (t->closing)
		return;
	t->closing = true;
	if (t->req)
		sbx_http_on_abort(t->req, NULL, NULL);
	http_stream_detach(&t->st);
	if (t->x)
		sbx_http_client_abort(t->x);
	if (t->switched)
		t->s->stats.tunnels_open--;
	tunnel_free(t);
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

/* ---- the client's side, once switched -------------------------------------------- */

static void client_data(void *arg, const char *data, size_t len)
{
	struct tunnel *t = arg;
	int rc = sbx_http_client_write(t->x, data, len);

	if (rc < 0)
		tunnel_close(t);
	else if (rc == 1)
		t->st->ops->pause(t->st); /* upstream is behind */
}

static void client_drained(void *arg)
{
	struct tunnel *t = arg;

	sbx_http_client_resume(t->x);
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

/* ---- upstream ------------------------------------------------------------------------ */

static void switch_client(struct tunnel *t)
{
	struct sbx_http_req *req = t->req;

	sbx_http_on_abort(req, NULL, NULL);
	t->req = NULL;
	if (req->ops->upgrade(req, &t->st)) {
		t->req = req;
		fail(t, 502, "cannot switch the client's protocol");
		return;
	}
	t->switched = true;
	t->s->stats.tunnels_open++;
	/* Input the client sent meanwhile is delivered from here on. */
	http_stream_attach(t->st, &client_cb, t);
}

static void up_head(struct sbx_http_client *x, int status, const struct sbx_http_field *f, size_t n,
		    void *arg)
{
	struct tunnel *t = arg;
	const char *type, *length;

	(void)x;
	t->status = status;
	if (t->by_connect && status >= 200 && status < 300) {
		/* To an HTTP/2 client, 2xx would mean "switched". */
		fail(t, 502, "the upstream answered without switching protocols");
		return;
	}
	sbx_http_pass_answer_fields(t->req, f, n, &type, &length);
	if (type) {
		sbx_free(t->content_type);
		t->content_type = sbx_strdup(type);
	}
	if (status == 101)
		switch_client(t);
}

static void up_data(struct sbx_http_client *x, const char *data, size_t len, void *arg)
{
	struct tunnel *t = arg;

	if (t->req) { /* a non-101 answer's body */
		if (sbx_buf_append(&t->body, data, len))
			fail(t, 502, "the upstream's answer is larger than 1 MiB");
		return;
	}
	if (!t->st || t->st->ops->send(t->st, data, len) < 0) {
		tunnel_close(t);
		return;
	}
	if (t->st->ops->congested(t->st))
		sbx_http_client_pause(x); /* the client is behind */
}

static void up_drained(struct sbx_http_client *x, void *arg)
{
	struct tunnel *t = arg;

	(void)x;
	if (t->st)
		t->st->ops->resume(t->st); /* upstream took the backlog */
}

static void up_done(struct sbx_http_client *x, int err, void *arg)
{
	struct tunnel *t = arg;
	struct sbx_http_req *req = t->req;
	char msg[160];

	(void)x;
	t->x = NULL;
	if (!req) {
		tunnel_close(t); /* upstream ended the tunnel */
		return;
	}
	if (!err) {
		t->req = NULL;
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond(req, t->status, t->content_type, t->body.data, t->body.len);
		tunnel_close(t);
		return;
	}
	if (err == -ETIMEDOUT)
		fail(t, 504, "the upstream did not answer in time");
	else if (err == -EPROTO)
		fail(t, 502, "the upstream's answer is not HTTP/1.1");
	else if (err == -E2BIG)
		fail(t, 502, "the upstream's answer head is too large");
	else if (err == -ECONNRESET)
		fail(t, 502, "the upstream closed without an answer");
	else {
		snprintf(msg, sizeof(msg), "cannot reach the upstream: %s", strerror(-err));
		fail(t, 502, msg);
	}
}

static const struct sbx_http_client_callbacks up_cb = {
	.head = up_head,
	.data = up_data,
	.drained = up_drained,
	.done = up_done,
};

/* ---- starting ------------------------------------------------------------------------ */

struct sbx_http_pool *http_server_pool(struct sbx_http_server *s, bool forwarding)
{
	struct sbx_http_pool **pool = forwarding ? &s->forward_pool : &s->pool;
	struct sbx_http_pool_opts o = {
		.connect_timeout_ms = s->o.connect_timeout_ms,
		/* A tunnel's upstream answers its upgrade at once; a forwarded
		 * request may be a long poll. */
		.read_timeout_ms =
			forwarding ? s->o.stream_idle_timeout_ms : s->o.connect_timeout_ms,
		.write_timeout_ms = s->o.write_timeout_ms,
		.max_header_bytes = s->o.max_header_bytes,
		.write_high_water = s->o.write_high_water,
	};

	if (!*pool && sbx_http_pool_new(s->loop, &o, pool))
		return NULL;
	return *pool;
}

static bool dropped(const char *name, bool by_connect, const struct sbx_http_tunnel_opts *o)
{
	if (by_connect && !strcasecmp(name, "Sec-WebSocket-Key"))
		return true; /* replaced by a key of our own */
	for (const char *const *d = o->drop_headers; d && *d; d++)
		if (!strcasecmp(name, *d))
			return true;
	for (const char *const *a = o->add_headers; a && *a; a += 2)
		if (!strcasecmp(name, *a))
			return true;
	return false;
}

int sbx_http_tunnel(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o)
{
	struct sbx_http_server *s = req->s;
	struct sbx_http_client_request up = {
		.backend = o->upstream,
		.method = req->upgrade_by_connect ? "GET" : req->method,
		.target = o->path,
		.host = o->host,
		.upgrade = req->upgrade,
	};
	struct sbx_http_pool *pool = http_server_pool(s, false);
	struct sbx_http_field *f;
	struct tunnel *t;
	char *key = NULL;
	size_t n_add = 0;
	int rc;

	if (!req->upgrade) {
		sbx_http_respond_error(req, 400,
				       "a protocol switch (Upgrade, or an HTTP/2 extended CONNECT) "
				       "is expected here");
		return -EINVAL;
	}
	for (const char *const *a = o->add_headers; a && a[0] && a[1]; a += 2)
		n_add++;
	t = sbx_calloc(1, sizeof(*t));
	f = sbx_calloc(req->n_headers + n_add + 1, sizeof(*f));
	if (!t || !f || !pool) {
		sbx_free(t);
		sbx_free(f);
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	sbx_buf_init(&t->body, RESPONSE_MAX);
	t->s = s;
	t->by_connect = req->upgrade_by_connect;
	for (unsigned i = 0; i < req->n_headers; i++) {
		const char *name = req->arena.data + req->headers[i].name;

		if (!dropped(name, t->by_connect, o))
			f[up.n_headers++] = (struct sbx_http_field){
				.name = name,
				.value = req->arena.data + req->headers[i].value,
				.name_len = req->headers[i].name_len,
			};
	}
	for (size_t i = 0; i < n_add; i++)
		f[up.n_headers++] = (struct sbx_http_field){ .name = o->add_headers[2 * i],
							     .value = o->add_headers[2 * i + 1] };
	if (t->by_connect) {
		/* RFC 8441 in, HTTP/1.1 Upgrade out. */
		unsigned char raw[16];
		size_t key_len;

		rc = RAND_bytes(raw, sizeof(raw)) == 1 &&
				     !sbx_base64_encode((const char *)raw, sizeof(raw), &key,
							&key_len)
			     ? 0
			     : -ENOMEM;
		f[up.n_headers++] =
			(struct sbx_http_field){ .name = "Sec-WebSocket-Key", .value = key };
	} else {
		rc = 0;
	}
	up.headers = f;
	if (!rc)
		rc = sbx_http_client_start(pool, &up, &up_cb, t, &t->x);
	sbx_free(key);
	sbx_free(f);
	if (rc) {
		tunnel_free(t);
		if (rc == -E2BIG)
			sbx_http_respond_error(req, 431, "request head too large to pass on");
		else if (rc == -ENOMEM)
			sbx_http_respond_error(req, 503, "out of memory");
		else
			sbx_http_respond_error(
				req, 502, "the upstream address is not an IP address and port");
		return rc;
	}
	t->req = req;
	sbx_http_on_abort(req, req_gone, t);
	return 0;
}
