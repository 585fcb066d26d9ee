/* Routing: the route of a request, its params, the authorize check, and the
 * dispatch to its handler. Runs as soon as the head is in, so that a
 * refused or unroutable request is answered before any of its body is read.
 */
#include "http_types.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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
			names[*n_params] = p + 1; /* ended by '}', see sbx_http_param */
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

static int set_params(struct sbx_http_req *r, const char *pattern, const char *path)
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

/* The route for method and path, or an early answer (405). */
void http_route_pick(struct sbx_http_server *s, struct sbx_http_req *r)
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
		    !(strcmp(r->method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0) &&
		    !(r->upgrade_by_connect && strcmp(rt->method, "GET") == 0))
			continue;
		r->route = rt;
		if (set_params(r, rt->pattern, r->path) < 0)
			req_early(r, 503, "out of memory");
		if (rt->max_body_bytes)
			r->body.max = rt->max_body_bytes;
		return;
	}
	if (path_known)
		req_early(r, 405, "method not allowed for this path");
}

static void answer_unrouted(struct sbx_http_server *s, struct sbx_http_req *r)
{
	if (r->early_status)
		sbx_http_respond_error(r, r->early_status, r->early_message);
	else if (s->o.not_found)
		s->o.not_found(r, s->o.not_found_arg);
	else
		sbx_http_respond_error(r, 404, "no such endpoint");
}

enum route_verdict http_route_head(struct sbx_http_req *r)
{
	struct sbx_http_server *s = r->s;
	const struct sbx_http_route *picked;

	if (r->early_status) {
		/* Malformed before routing (400, 414, 431): nothing to authorize. */
		sbx_http_respond_error(r, r->early_status, r->early_message);
		return ROUTE_ANSWERED;
	}
	picked = s->o.pick ? s->o.pick(r, s->o.pick_arg) : NULL;
	if (!picked && s->o.proxy && r->authority)
		picked = s->o.proxy; /* a forward proxy's request (absolute-form or CONNECT) */
	if (picked) {
		r->route = picked;
		if (picked->max_body_bytes)
			r->body.max = picked->max_body_bytes;
	} else {
		http_route_pick(s, r);
	}
	if (r->reserved && !(r->route && r->route->health)) {
		sbx_http_respond_error(r, 503,
				       "too many connections (this one serves health endpoints "
				       "only)");
		return ROUTE_ANSWERED;
	}
	/* Non-public routes, 405s and unknown paths (which then reveal
	 * nothing) pass the authorize check first. */
	if (r->early_status == 405 || (!r->early_status && !(r->route && r->route->public))) {
		if (s->o.authorize && !s->o.authorize(r, s->o.authorize_arg))
			return ROUTE_ANSWERED;
	}
	if (r->early_status || !r->route) {
		answer_unrouted(s, r);
		return ROUTE_ANSWERED;
	}
	if (r->content_length > 0 && (uint64_t)r->content_length > r->body.max) {
		snprintf(r->early_text, sizeof(r->early_text),
			 "request body too large (the limit is %zu bytes)", r->body.max);
		sbx_http_respond_error(r, 413, r->early_text);
		return ROUTE_ANSWERED;
	}
	/* A protocol switch has no body to stream: its handler runs once the
	 * request is complete, when the connection can be handed over. */
	if (r->route->stream_body && !r->upgrade && !r->connect) {
		r->streamed = true;
		req_set_state(r, REQ_HANDLER);
		r->route->fn(r, r->route->arg);
		return ROUTE_STREAM;
	}
	req_set_state(r, REQ_BODY);
	return ROUTE_BUFFER;
}

void http_route_dispatch(struct sbx_http_req *r)
{
	if (r->early_status) {
		sbx_http_respond_error(r, r->early_status, r->early_message);
		return;
	}
	req_set_state(r, REQ_HANDLER);
	r->route->fn(r, r->route->arg);
}
