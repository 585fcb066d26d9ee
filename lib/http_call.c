/* In-process calls (sbx_http_call): a request without a connection, run
 * through the same routes, whose answer is gathered and handed to a
 * callback. A transport of its own, behind the same operations table as
 * HTTP/1 and HTTP/2, so no other code asks whether a request has a client.
 */
#include "http_types.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct call {
	struct sbx_http_req r;
	char ctype[128];
	struct sbx_buf captured;
	sbx_http_call_done done;
	void *done_arg;
};

static void call_finish(struct call *k)
{
	req_set_state(&k->r, REQ_DONE);
	k->done(k->r.status, k->ctype, k->captured.data ? k->captured.data : "", k->captured.len,
		k->done_arg);
	req_release(&k->r);
	sbx_buf_release(&k->captured);
	sbx_free(k);
}

static int call_respond(struct sbx_http_req *r, int status, const char *content_type,
			long long length, const void *body, size_t len, bool whole)
{
	struct call *k = (struct call *)r;

	(void)length;
	req_set_state(r, REQ_RESPONDING);
	r->status = status;
	snprintf(k->ctype, sizeof(k->ctype), "%s", content_type ? content_type : "");
	if (len && sbx_buf_append(&k->captured, body, len)) {
		if (!whole)
			return -EMSGSIZE;
		r->status = 500;
	}
	if (whole)
		call_finish(k);
	return 0;
}

static int call_write(struct sbx_http_req *r, const void *data, size_t len)
{
	return sbx_buf_append(&((struct call *)r)->captured, data, len) ? -EMSGSIZE : 0;
}

static int call_end(struct sbx_http_req *r)
{
	call_finish((struct call *)r);
	return 0;
}

static void call_abort(struct sbx_http_req *r)
{
	r->status = 502; /* the handler gave up halfway */
	if (r->state == REQ_HANDLER)
		req_set_state(r, REQ_RESPONDING);
	call_finish((struct call *)r);
}

static void call_body_noop(struct sbx_http_req *r)
{
	(void)r;
}

static int call_upgrade(struct sbx_http_req *r, struct http_stream **out)
{
	(void)r;
	(void)out;
	return -ENOTCONN;
}

static const char *call_peer(const struct sbx_http_req *r)
{
	(void)r;
	return "";
}

static const struct http_req_ops call_ops = {
	.respond = call_respond,
	.write = call_write,
	.end = call_end,
	.abort = call_abort,
	.pause_body = call_body_noop,
	.resume_body = call_body_noop,
	.upgrade = call_upgrade,
	.peer = call_peer,
};

int sbx_http_call(struct sbx_http_server *s, const char *method, const char *target,
		  const char *content_type, const void *body, size_t len, sbx_http_call_done done,
		  void *arg)
{
	struct call *k = sbx_calloc(1, sizeof(*k));
	struct sbx_http_req *r;

	if (!k)
		return -ENOMEM;
	r = &k->r;
	req_init(r, s, &call_ops, s->o.max_header_bytes);
	k->done = done;
	k->done_arg = arg;
	sbx_buf_init(&k->captured, 64u << 20);
	r->body.max = len + 1;
	snprintf(r->method, sizeof(r->method), "%s", method);
	if (sbx_buf_append(&r->arena, target, strlen(target) + 1) ||
	    (content_type &&
	     req_add_header(r, "Content-Type", 12, content_type, strlen(content_type))) ||
	    sbx_buf_append(&r->body, body, len)) {
		req_release(r);
		sbx_buf_release(&k->captured);
		sbx_free(k);
		return -ENOMEM;
	}
	s->body_bytes_buffered += len; /* released with the request */
	req_split_target(r);
	http_route_pick(s, r);
	if (!r->early_status && r->route && r->route->stream_body)
		req_early(r, 405, "this endpoint takes a streamed body: not callable internally");
	if (!r->early_status && !r->route)
		req_early(r, 404, "no such endpoint");
	req_set_state(r, REQ_BODY);
	http_route_dispatch(r);
	return 0;
}
