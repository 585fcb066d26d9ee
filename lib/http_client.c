/* One HTTP/1.1 exchange with a backend, on a connection from the pool: the
 * request head written from the caller's fields (validated: nothing the
 * caller passes can split the request), the body streamed with
 * Content-Length or chunked framing, the answer parsed by http_parser
 * (ambiguous framing is an error, as on the server side) and handed on as
 * it arrives. See sbx/http_client.h.
 *
 * An exchange moves CONNECTING -> EXCHANGING -> (UPGRADED) -> DONE, only
 * through x_set_state. Callbacks may abort the exchange from inside: 'depth'
 * counts the calls in progress and the memory goes when the last returns.
 */
#include "http_pool.h"
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_FIELDS 128

enum x_state { X_CONNECTING, X_EXCHANGING, X_UPGRADED, X_DONE };

struct sbx_http_client {
	struct sbx_http_pool *p;
	struct sbx_http_client *prev, *next; /* the pool's exchanges in flight */
	struct upconn *c;
	const struct sbx_http_client_callbacks *cb;
	void *arg;
	enum x_state state;
	char key[64];	      /* the backend ("ip:port"), for a retry */
	struct sbx_buf head;  /* the request head: sent again on a retry */
	struct sbx_buf early; /* body bytes written before the connection was up */
	http_parser parser;
	struct sbx_buf fields; /* the response head: name NUL value NUL ... */
	int64_t content_length, body_sent;
	size_t queued; /* bytes handed to the socket, not yet written */
	int depth;
	bool upgrade, is_head;
	bool reused, retried, ended, head_in, resp_done, interim, last_was_value;
	bool got_bytes, broken, paused, want_drain, freed, too_big;
	/* Where a usual request head and answer head fit without an
	 * allocation of their own (HEAD_SPACE bytes each); none in an
	 * upgrade, whose exchange lives on as a tunnel. */
	char space[];
};

#define HEAD_SPACE 512

const size_t http_client_size = sizeof(struct sbx_http_client) + 2 * HEAD_SPACE;

static void x_set_state(struct sbx_http_client *x, enum x_state to)
{
	assert(x->state != X_DONE);
	assert(to == X_DONE || (x->state == X_CONNECTING && to == X_EXCHANGING) ||
	       (x->state == X_EXCHANGING && to == X_UPGRADED) ||
	       (x->state == X_EXCHANGING && to == X_CONNECTING)); /* a retry */
	x->state = to;
}

static void x_free(struct sbx_http_client *x)
{
	struct sbx_http_pool *p = x->p;

	if (x->depth) {
		x->freed = true; /* by the outermost caller */
		return;
	}
	sbx_buf_release(&x->head);
	sbx_buf_release(&x->early);
	sbx_buf_release(&x->fields);
	if (x->upgrade)
		sbx_free(x);
	else
		sbx_spares_put(&p->spare_exchanges, x);
	pool_exchange_gone(p);
}

static void x_leave(struct sbx_http_client *x)
{
	if (--x->depth == 0 && x->freed) {
		x->freed = false;
		x_free(x);
	}
}

/* Takes the exchange off the pool's list and its connection: back to the
 * pool when it may carry another exchange, closed otherwise. */
static void detach(struct sbx_http_client *x, bool reusable)
{
	struct sbx_http_pool *p = x->p;
	struct upconn *c = x->c;

	if (x->prev)
		x->prev->next = x->next;
	else
		p->active = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	x->c = NULL;
	if (!c)
		return;
	c->x = NULL;
	if (reusable)
		pool_put(c);
	else
		pool_close(c);
}

static void finish(struct sbx_http_client *x, int err)
{
	bool reusable = !err && x->state == X_EXCHANGING && x->resp_done && x->ended &&
			!x->queued && !x->broken && http_should_keep_alive(&x->parser);

	if (x->state == X_DONE)
		return;
	x_set_state(x, X_DONE);
	detach(x, reusable);
	x->depth++;
	if (x->cb->done)
		x->cb->done(x, err, x->arg);
	x_leave(x);
	x_free(x);
}

/* The connection's one timer: connect, then write or read progress. */
static void rearm(struct sbx_http_client *x)
{
	const struct sbx_http_pool_opts *o = &x->p->o;
	uint64_t ms = 0;

	if (!x->c)
		return;
	if (x->state == X_CONNECTING)
		ms = o->connect_timeout_ms;
	else if (x->queued)
		ms = o->write_timeout_ms;
	else if (x->state == X_EXCHANGING && !x->paused && (x->ended || x->head_in))
		ms = o->read_timeout_ms;
	pool_timer(x->c, ms);
}

static int send_bufs(struct sbx_http_client *x, const uv_buf_t *bufs, unsigned n)
{
	ssize_t queued;
	int rc;

	if (x->state == X_CONNECTING) {
		for (unsigned i = 0; i < n; i++)
			if ((rc = sbx_buf_append(&x->early, bufs[i].base, bufs[i].len)))
				return rc;
		return 0;
	}
	if ((queued = pool_send(x->c, bufs, n)) < 0)
		return (int)queued;
	x->queued += (size_t)queued;
	rearm(x);
	return 0;
}

static bool congested(const struct sbx_http_client *x)
{
	return x->queued + x->early.len > x->p->o.write_high_water;
}

/* ---- the response ------------------------------------------------------------------ */

static int on_begin(http_parser *hp)
{
	struct sbx_http_client *x = hp->data;

	sbx_buf_reset(&x->fields);
	x->last_was_value = false;
	return 0;
}

static int add_field_bytes(struct sbx_http_client *x, bool value, const char *at, size_t len)
{
	int rc = 0;

	if (x->last_was_value != value && (value || x->fields.len))
		rc = sbx_buf_append(&x->fields, "", 1); /* ends the name, or the value */
	x->last_was_value = value;
	if (!rc)
		rc = sbx_buf_append(&x->fields, at, len);
	if (rc == -E2BIG)
		x->too_big = true;
	return rc ? -1 : 0;
}

static int on_field(http_parser *hp, const char *at, size_t len)
{
	/* "Name :" must not pass as another header beside a framing one. */
	if (!http_is_token(at, len))
		return -1;
	return add_field_bytes(hp->data, false, at, len);
}

static int on_value(http_parser *hp, const char *at, size_t len)
{
	return add_field_bytes(hp->data, true, at, len);
}

static int on_headers_complete(http_parser *hp)
{
	struct sbx_http_client *x = hp->data;
	struct sbx_http_field f[MAX_FIELDS];
	const char *at, *end;
	size_t n = 0;

	if (hp->status_code / 100 == 1 && hp->status_code != 101) {
		x->interim = true; /* 100 Continue, 103 Early Hints: not the answer */
		return 0;
	}
	if (hp->status_code == 101 && (!x->upgrade || !hp->upgrade))
		return -1; /* a switch nobody asked for, or one without Upgrade */
	if (x->last_was_value && sbx_buf_append(&x->fields, "", 1)) {
		x->too_big = true;
		return -1;
	}
	at = x->fields.data;
	end = at ? at + x->fields.len : NULL;
	while (at && at < end) {
		if (n == MAX_FIELDS)
			return -1;
		f[n].name = at;
		f[n].name_len = strlen(at);
		at += f[n].name_len + 1;
		f[n].value = at < end ? at : "";
		at += strlen(f[n].value) + 1;
		n++;
	}
	x->head_in = true;
	if (hp->status_code == 101) {
		/* Switched before the caller hears of it: what it writes from
		 * inside 'head' goes out as the new protocol's bytes. */
		x_set_state(x, X_UPGRADED);
		sbx_buf_release(&x->head);
		rearm(x);
	}
	if (x->cb->head) {
		x->cb->head(x, hp->status_code, f, n, x->arg);
		if (x->state == X_DONE)
			return -1;
	}
	return x->is_head ? 1 : 0; /* no body follows an answer to HEAD */
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
	struct sbx_http_client *x = hp->data;

	if (x->cb->data)
		x->cb->data(x, at, len, x->arg);
	return x->state == X_DONE ? -1 : 0;
}

static int on_complete(http_parser *hp)
{
	struct sbx_http_client *x = hp->data;

	if (x->interim) {
		x->interim = false;
		return 0;
	}
	x->resp_done = true;
	http_parser_pause(hp, 1);
	return 0;
}

static const http_parser_settings response_settings = {
	.on_message_begin = on_begin,
	.on_header_field = on_field,
	.on_header_value = on_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_complete,
};

static void parse_failed(struct sbx_http_client *x)
{
	if (x->state == X_DONE)
		return;
	finish(x, x->too_big || HTTP_PARSER_ERRNO(&x->parser) == HPE_HEADER_OVERFLOW ? -E2BIG
										     : -EPROTO);
}

static int start_exchange(struct sbx_http_client *x);

/* A reused connection that failed before any answer came, with no body
 * byte sent: the backend closed it as it was taken. Once, on a new one. */
static bool retry(struct sbx_http_client *x)
{
	if (!x->reused || x->retried || x->got_bytes || x->body_sent)
		return false;
	x->retried = true;
	x->p->stats.retries++;
	x->c->x = NULL;
	pool_close(x->c);
	x->c = NULL;
	x->queued = 0;
	x_set_state(x, X_CONNECTING);
	if (start_exchange(x))
		return false;
	return true;
}

void client_input(struct sbx_http_client *x, const char *data, ssize_t n)
{
	size_t used;

	x->depth++;
	if (n < 0) {
		if (x->state == X_UPGRADED) {
			finish(x, 0);
		} else if (!x->got_bytes && retry(x)) {
			/* sent again */
		} else if (x->head_in && !x->resp_done && n == UV_EOF) {
			/* A close-delimited body ends here, or it was cut. */
			http_parser_execute(&x->parser, &response_settings, NULL, 0);
			x->broken = true;
			finish(x, x->resp_done ? 0 : -ECONNRESET);
		} else {
			finish(x, -ECONNRESET);
		}
		x_leave(x);
		return;
	}
	x->got_bytes = true;
	if (x->state == X_UPGRADED) {
		rearm(x);
		if (x->cb->data)
			x->cb->data(x, data, (size_t)n, x->arg);
		x_leave(x);
		return;
	}
	used = http_parser_execute(&x->parser, &response_settings, data, (size_t)n);
	if (x->state == X_DONE) {
		x_leave(x);
		return;
	}
	if (HTTP_PARSER_ERRNO(&x->parser) != HPE_OK &&
	    HTTP_PARSER_ERRNO(&x->parser) != HPE_PAUSED) {
		parse_failed(x);
	} else if (x->state == X_UPGRADED) {
		/* The parser stops at the end of a 101's head: the rest is the
		 * new protocol's. */
		if (used < (size_t)n && x->cb->data)
			x->cb->data(x, data + used, (size_t)n - used, x->arg);
	} else if (x->resp_done) {
		if (used < (size_t)n)
			x->broken = true; /* bytes after the answer: not to be trusted again */
		finish(x, 0);
	} else {
		rearm(x);
	}
	x_leave(x);
}

void client_written(struct sbx_http_client *x, int status, size_t len)
{
	x->queued -= len;
	if (status < 0) {
		x->broken = true;
		x->depth++;
		/* An early answer may still be on its way: reading goes on. */
		if (x->state == X_UPGRADED || (!x->got_bytes && !retry(x)))
			finish(x, -ECONNRESET);
		x_leave(x);
		return;
	}
	rearm(x);
	if (x->want_drain && !congested(x)) {
		x->want_drain = false;
		x->depth++;
		if (x->cb->drained)
			x->cb->drained(x, x->arg);
		x_leave(x);
	}
}

void client_timeout(struct sbx_http_client *x)
{
	finish(x, -ETIMEDOUT);
}

void client_cancel(struct sbx_http_client *x)
{
	finish(x, -ECANCELED);
}

/* ---- the request ----------------------------------------------------------------- */

/* The head (and what the caller wrote meanwhile) goes out. */
static int connected(struct sbx_http_client *x)
{
	uv_buf_t b[2] = { uv_buf_init(x->head.data, (unsigned)x->head.len),
			  uv_buf_init(x->early.data, (unsigned)x->early.len) };
	int rc;

	x_set_state(x, X_EXCHANGING);
	if ((rc = send_bufs(x, b, x->early.len ? 2 : 1)))
		return rc;
	sbx_buf_release(&x->early);
	if (!x->paused)
		pool_read(x->c, true);
	rearm(x);
	if (x->cb->connected) {
		x->depth++;
		x->cb->connected(x, x->arg);
		x_leave(x);
	}
	return 0;
}

void client_connected(struct sbx_http_client *x, int status)
{
	x->depth++;
	if (status < 0)
		finish(x, status);
	else if (connected(x))
		finish(x, -ECONNRESET);
	x_leave(x);
}

static int start_exchange(struct sbx_http_client *x)
{
	int rc;

	http_parser_init(&x->parser, HTTP_RESPONSE);
	x->parser.data = x;
	/* One without a body is retried if a reused connection turns out
	 * closed: the pool need not ask the kernel first. */
	x->c = pool_take(x->p, x->key, x, x->retried, x->content_length != 0, &x->reused, &rc);
	if (!x->c)
		return rc;
	if (x->reused)
		return connected(x);
	rearm(x);
	return 0;
}

static bool is_token(const char *s)
{
	return *s && http_is_token(s, strlen(s));
}

/* Names the client writes itself, and the others that end at a hop. */
static bool framing(const char *name, size_t len)
{
	return SBX_HTTP_NAME_IS(name, len, "host") ||
	       SBX_HTTP_NAME_IS(name, len, "content-length") || sbx_http_hop_by_hop(name, len);
}

/* "name: value" and its CRLF, unless the client writes that name itself;
 * -EINVAL for a name that is not a token or a value that would end the
 * line. */
static int put_field(struct sbx_buf *b, const struct sbx_http_field *f)
{
	const char *name = f->name, *value = f->value;
	size_t nl = f->name_len ? f->name_len : strlen(name), vl = strlen(value);
	int rc;

	if (!nl || !http_is_token(name, nl) || memchr(value, '\r', vl) || memchr(value, '\n', vl))
		return -EINVAL;
	if (framing(name, nl))
		return 0;
	/* Measured already: appends, not sbx_buf_cat, which would measure again. */
	if ((rc = sbx_buf_append(b, name, nl)) || (rc = sbx_buf_append(b, ": ", 2)) ||
	    (rc = sbx_buf_append(b, value, vl)))
		return rc;
	return sbx_buf_append(b, "\r\n", 2);
}

static int build_head(struct sbx_http_client *x, const struct sbx_http_client_request *r)
{
	struct sbx_buf *b = &x->head;
	char cl[24];
	bool with_body = r->content_length != 0 || !strcmp(r->method, "POST") ||
			 !strcmp(r->method, "PUT") || !strcmp(r->method, "PATCH");
	int rc;

	/* origin-form, or absolute-form for a request to a proxy */
	if (!is_token(r->method) || !r->target ||
	    (r->target[0] != '/' && strncmp(r->target, "http://", 7) != 0) ||
	    strpbrk(r->target, " \r\n") || (r->host && (!*r->host || strpbrk(r->host, " \r\n/"))) ||
	    (r->upgrade && !is_token(r->upgrade)) || r->content_length < -1)
		return -EINVAL;
	rc = sbx_buf_cat(b, r->method, " ", r->target,
			 " HTTP/1.1\r\nHost: ", r->host ? r->host : r->backend, "\r\n");
	for (size_t i = 0; !rc && i < r->n_headers; i++)
		rc = put_field(b, &r->headers[i]);
	if (!rc && r->lines_len)
		rc = sbx_buf_append(b, r->lines, r->lines_len);
	if (!rc && r->upgrade)
		rc = sbx_buf_cat(b, "Connection: Upgrade\r\nUpgrade: ", r->upgrade, "\r\n");
	if (!rc && r->content_length < 0)
		rc = sbx_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
	else if (!rc && with_body)
		rc = sbx_buf_cat(b, "Content-Length: ",
				 http_utoa((unsigned long long)r->content_length, cl), "\r\n");
	return rc ? rc : sbx_buf_append_str(b, "\r\n");
}

int sbx_http_client_start(struct sbx_http_pool *p, const struct sbx_http_client_request *r,
			  const struct sbx_http_client_callbacks *cb, void *arg,
			  struct sbx_http_client **out)
{
	struct sbx_http_client *x;
	int rc;

	if (p->freeing || !r->method || !r->backend)
		return -EINVAL;
	x = r->upgrade ? sbx_malloc(sizeof(*x)) : sbx_spares_get(&p->spare_exchanges);
	if (!x)
		return -ENOMEM;
	p->exchanges++;
	memset(x, 0, sizeof(*x)); /* the spaces need no zeroing */
	x->p = p;
	x->cb = cb;
	x->arg = arg;
	x->content_length = r->content_length;
	x->upgrade = r->upgrade != NULL;
	x->is_head = !strcmp(r->method, "HEAD");
	x->ended = r->content_length == 0;
	sbx_buf_init(&x->early, SIZE_MAX);
	if (r->upgrade) {
		sbx_buf_init(&x->head, 2 * p->o.max_header_bytes + 4096);
		sbx_buf_init(&x->fields, p->o.max_header_bytes);
	} else {
		sbx_buf_init_on(&x->head, 2 * p->o.max_header_bytes + 4096, x->space, HEAD_SPACE);
		sbx_buf_init_on(&x->fields, p->o.max_header_bytes, x->space + HEAD_SPACE,
				HEAD_SPACE);
	}
	/* The pool's addresses are numeric: "[v6]:port" fits. */
	rc = strlen(r->backend) < sizeof(x->key) ? build_head(x, r) : -EINVAL;
	if (!rc)
		strcpy(x->key, r->backend);
	if (rc) {
		x_free(x);
		return rc;
	}
	x->next = p->active;
	if (p->active)
		p->active->prev = x;
	p->active = x;
	if ((rc = start_exchange(x))) {
		detach(x, false);
		x_free(x);
		return rc;
	}
	*out = x;
	return 0;
}

int sbx_http_client_write(struct sbx_http_client *x, const void *data, size_t len)
{
	char prefix[24];
	uv_buf_t b[3];
	unsigned n = 0;

	if (x->state == X_DONE || x->broken)
		return -EPIPE;
	if (!len)
		return congested(x) ? 1 : 0;
	if (x->state != X_UPGRADED) {
		if (x->ended || (x->content_length >= 0 &&
				 (uint64_t)x->body_sent + len > (uint64_t)x->content_length))
			return -EINVAL;
		if (x->content_length < 0) {
			snprintf(prefix, sizeof(prefix), "%zx\r\n", len);
			b[n++] = uv_buf_init(prefix, (unsigned)strlen(prefix));
		}
	}
	b[n++] = uv_buf_init((char *)data, (unsigned)len);
	if (x->state != X_UPGRADED && x->content_length < 0)
		b[n++] = uv_buf_init("\r\n", 2);
	if (send_bufs(x, b, n))
		return -EPIPE;
	x->body_sent += (int64_t)len;
	if (!congested(x))
		return 0;
	x->want_drain = true;
	return 1;
}

int sbx_http_client_end(struct sbx_http_client *x)
{
	uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);

	if (x->state == X_DONE || x->state == X_UPGRADED || x->ended)
		return 0;
	if (x->content_length >= 0 && x->body_sent < x->content_length)
		return -EINVAL;
	if (x->content_length < 0 && send_bufs(x, &b, 1))
		return -EPIPE;
	x->ended = true;
	rearm(x);
	return 0;
}

void sbx_http_client_pause(struct sbx_http_client *x)
{
	x->paused = true;
	if (x->c && x->state != X_CONNECTING)
		pool_read(x->c, false);
	rearm(x);
}

void sbx_http_client_resume(struct sbx_http_client *x)
{
	x->paused = false;
	if (x->c && x->state != X_CONNECTING && x->state != X_DONE)
		pool_read(x->c, true);
	rearm(x);
}

void sbx_http_client_abort(struct sbx_http_client *x)
{
	if (x->state == X_DONE)
		return;
	x_set_state(x, X_DONE);
	detach(x, false);
	x_free(x);
}

bool sbx_http_client_reused(const struct sbx_http_client *x)
{
	return x->reused;
}
