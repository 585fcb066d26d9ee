/* Forwarding one request to another HTTP/1.1 server (a reverse proxy's
 * single hop), on the client side of the core (http_client.c).
 *
 * The request body is taken only once the upstream connection is up, then
 * streams to it, and the answer streams back, each side paced by the other:
 * a body of any size crosses in bounded memory. Hop-by-hop headers (those
 * RFC 9110 section 7.6.1 names, and whatever Connection lists) end here on
 * both sides. A protocol switch goes to sbx_http_tunnel. Upstreams that
 * answer slowly are waited for up to the server's stream idle timeout, not
 * the tunnels' connect timeout: a forwarded request may be a long poll or
 * an event stream.
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FIELDS 160

struct forward {
	struct sbx_http_req *req;
	struct sbx_http_client *x; /* until the exchange ends */
	bool body_started, body_ended, responding;
	char upstream[64]; /* for the messages */
};

/* Hop-by-hop names aside, the request headers that the HTTP client writes
 * itself or that end here. */
static const struct sbx_http_name not_forwarded[] = {
	SBX_HTTP_NAME("content-length"),
	SBX_HTTP_NAME("host"),
	SBX_HTTP_NAME("expect"),
};

static void forward_free(struct forward *f)
{
	sbx_free(f);
}

static void fail(struct forward *f, int status, const char *message)
{
	struct sbx_http_req *req = f->req;

	sbx_http_on_abort(req, NULL, NULL);
	if (f->x)
		sbx_http_client_abort(f->x);
	forward_free(f);
	sbx_http_respond_error(req, status, message);
}

static void client_gone(struct sbx_http_req *req, void *arg)
{
	struct forward *f = arg;

	(void)req;
	if (f->x)
		sbx_http_client_abort(f->x);
	forward_free(f);
}

/* ---- the request body ------------------------------------------------------------ */

static int sink_data(struct sbx_http_req *req, const char *at, size_t len, void *arg)
{
	struct forward *f = arg;
	int rc = f->x ? sbx_http_client_write(f->x, at, len) : -EPIPE;

	if (rc < 0)
		return rc; /* the exchange has failed: its end answers */
	if (rc == 1)
		sbx_http_pause_body(req); /* upstream is behind */
	return 0;
}

static void sink_end(struct sbx_http_req *req, int status, void *arg)
{
	struct forward *f = arg;

	f->body_ended = true;
	if (!f->x)
		return;
	if (status == 0 && sbx_http_client_end(f->x) == 0)
		return;
	if (f->responding) {
		/* The answer has begun: all that can be said is to cut it. */
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_client_abort(f->x);
		forward_free(f);
		sbx_http_abort(req);
		return;
	}
	fail(f, status == -EFBIG ? 413 : 400,
	     status == -EFBIG ? "the request body is larger than this route takes"
			      : "the request body was cut");
}

static const struct sbx_http_body_sink sink = { sink_data, sink_end };

/* ---- the upstream ---------------------------------------------------------------- */

static void up_connected(struct sbx_http_client *x, void *arg)
{
	struct forward *f = arg;

	f->x = x;
	if (f->body_started || sbx_http_content_length(f->req) == 0)
		return;
	f->body_started = true;
	sbx_http_stream_body(f->req, &sink, f);
}

static void up_drained(struct sbx_http_client *x, void *arg)
{
	struct forward *f = arg;

	(void)x;
	if (f->body_started && !f->body_ended)
		sbx_http_resume_body(f->req);
}

static void resume_up(struct sbx_http_req *req, void *arg)
{
	struct forward *f = arg;

	(void)req;
	if (f->x)
		sbx_http_client_resume(f->x);
}

static void up_head(struct sbx_http_client *x, int status, const struct sbx_http_field *fl,
		    size_t n, void *arg)
{
	struct forward *f = arg;
	const char *type, *length;
	long long len = -1;

	sbx_http_pass_answer_fields(f->req, fl, n, &type, &length);
	if (status == 204 || status == 304)
		len = 0;
	else if (length)
		len = strtoll(length, NULL, 10); /* the client checked it */
	f->responding = true;
	if (sbx_http_start_with(f->req, status, type, len, NULL, 0) == 1) {
		sbx_http_client_pause(x);
		sbx_http_on_drain(f->req, resume_up, f);
	}
}

static void up_data(struct sbx_http_client *x, const char *data, size_t len, void *arg)
{
	struct forward *f = arg;

	if (sbx_http_write(f->req, data, len) == 1) {
		sbx_http_client_pause(x); /* the client is behind */
		sbx_http_on_drain(f->req, resume_up, f);
	}
}

static void up_done(struct sbx_http_client *x, int err, void *arg)
{
	struct forward *f = arg;
	struct sbx_http_req *req = f->req;
	char msg[160];

	(void)x;
	f->x = NULL;
	if (f->responding) {
		sbx_http_on_abort(req, NULL, NULL);
		forward_free(f);
		if (err)
			sbx_http_abort(req); /* the client sees the answer cut */
		else
			sbx_http_end(req);
		return;
	}
	if (err == -ETIMEDOUT)
		snprintf(msg, sizeof(msg), "%s did not answer in time", f->upstream);
	else if (err == -EPROTO || err == -E2BIG)
		snprintf(msg, sizeof(msg), "%s answered with something that is not HTTP/1.1",
			 f->upstream);
	else if (err == -ECONNRESET)
		snprintf(msg, sizeof(msg), "%s closed the connection unanswered", f->upstream);
	else if (err == -ECONNREFUSED)
		snprintf(msg, sizeof(msg), "nothing listens on %s", f->upstream);
	else
		snprintf(msg, sizeof(msg), "cannot reach %s: %s", f->upstream,
			 strerror(err < 0 ? -err : EIO));
	fail(f, err == -ETIMEDOUT ? 504 : 502, msg);
}

static const struct sbx_http_client_callbacks up_cb = {
	.head = up_head,
	.data = up_data,
	.drained = up_drained,
	.done = up_done,
	.connected = up_connected,
};

/* ---- starting -------------------------------------------------------------------- */

static bool in_list(const char *name, const char *const *list, size_t step)
{
	for (; list && *list; list += step)
		if (!strcasecmp(name, *list))
			return true;
	return false;
}

int sbx_http_forward(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o)
{
	struct sbx_http_client_request up = {
		.backend = o->upstream,
		.method = req->method,
		.target = o->path,
		.host = o->host ?: sbx_http_header(req, "Host"),
		.content_length = sbx_http_content_length(req),
	};
	const char *connection = sbx_http_header(req, "Connection");
	struct sbx_http_pool *pool;
	struct sbx_http_field fields[MAX_FIELDS];
	const char *name, *value;
	size_t len;
	struct forward *f;
	int rc;

	if (req->upgrade)
		return sbx_http_tunnel(req, o);
	if (!(pool = http_server_pool(req->s, true)) || !(f = sbx_calloc(1, sizeof(*f)))) {
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; sbx_http_header_at(req, i, &name, &len, &value); i++) {
		if (sbx_http_hop_by_hop(name, len) ||
		    sbx_http_name_in(name, len, not_forwarded,
				     sizeof(not_forwarded) / sizeof(not_forwarded[0])) ||
		    (connection && sbx_http_list_has(connection, name)) ||
		    in_list(name, o->drop_headers, 1) || in_list(name, o->add_headers, 2))
			continue;
		if (up.n_headers == MAX_FIELDS - 8)
			goto too_large;
		fields[up.n_headers++] =
			(struct sbx_http_field){ .name = name, .value = value, .name_len = len };
	}
	for (const char *const *a = o->add_headers; a && a[0] && a[1]; a += 2) {
		if (up.n_headers == MAX_FIELDS)
			goto too_large;
		fields[up.n_headers++] = (struct sbx_http_field){ .name = a[0], .value = a[1] };
	}
	up.headers = fields;
	f->req = req;
	snprintf(f->upstream, sizeof(f->upstream), "%s", o->upstream);
	rc = sbx_http_client_start(pool, &up, &up_cb, f, &f->x);
	if (rc) {
		forward_free(f);
		if (rc == -EINVAL)
			sbx_http_respond_error(req, 400,
					       "the request cannot be passed on (a header or the "
					       "upstream address is malformed)");
		else
			sbx_http_respond_error(req, 503, "out of memory");
		return rc;
	}
	sbx_http_on_abort(req, client_gone, f);
	return 0;

too_large:
	forward_free(f);
	sbx_http_respond_error(req, 431, "the request has too many headers to pass on");
	return -E2BIG;
}
