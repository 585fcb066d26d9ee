/* Services inside the sandbox through the agent's port (see ports.h). */
#include "ports.h"

#include "auth.h"
#include "sbx/buf.h"
#include "sbx/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The port the request names (the path's, or X-AIO-Proxy-Port's): 1-65535,
 * digits only, not the agent's own. */
static int port_of(struct ports *p, struct sbx_http_req *req)
{
	const char *s = sbx_http_param(req, "port") ?: sbx_http_header(req, "X-AIO-Proxy-Port");
	char *end;
	long v;

	if (!s || *s < '0' || *s > '9' || strlen(s) > 5 || (v = strtol(s, &end, 10), *end) ||
	    v < 1 || v > 65535) {
		sbx_http_respond_error(req, 400, "the port must be a number from 1 to 65535");
		return -1;
	}
	if (v == sbx_http_server_port(p->http)) {
		sbx_http_respond_error(req, 400, "that is the agent's own port");
		return -1;
	}
	return (int)v;
}

/* The query without the agent's credentials (api_key, ticket). */
static int append_query(struct sbx_buf *b, const char *q)
{
	bool first = true;

	while (q && *q) {
		size_t len = strcspn(q, "&"), name = strcspn(q, "=&");

		if (len && !((name == 6 && !strncmp(q, "ticket", 6)) ||
			     (name == 7 && !strncmp(q, "api_key", 7)))) {
			if (sbx_buf_append(b, first ? "?" : "&", 1) || sbx_buf_append(b, q, len))
				return -1;
			first = false;
		}
		q += len + (q[len] == '&');
	}
	return sbx_buf_append(b, "", 1);
}

static void forward(struct ports *p, struct sbx_http_req *req, bool strip)
{
	const char *authz = sbx_http_header(req, "Authorization");
	const char *const drop[] = { "X-API-Key", "X-AIO-API-Key", "X-AIO-Proxy-Port",
				     auth_is_agent_bearer(p->auth, authz) ? "Authorization" : NULL,
				     NULL };
	const char *prior = sbx_http_header(req, "X-Forwarded-Prefix");
	const char *path = sbx_http_path(req);
	char upstream[32], prefix[512];
	const char *add[2 * 2 + 1] = { NULL };
	struct sbx_buf target;
	int port = port_of(p, req);
	size_t n = 0;

	if (port < 0)
		return;
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", port);
	if (strip) {
		/* "/proxy/{port}/rest" -> "/rest" */
		const char *rest = strchr(path + strlen("/proxy/"), '/');

		if ((size_t)snprintf(prefix, sizeof(prefix), "%s/proxy/%d", prior ? prior : "",
				     port) >= sizeof(prefix)) {
			sbx_http_respond_error(req, 431, "X-Forwarded-Prefix is too long");
			return;
		}
		add[n++] = "X-Forwarded-Prefix";
		add[n++] = prefix;
		path = rest ? rest : "/";
	}
	sbx_buf_init(&target, 64 << 10);
	if (!sbx_http_header(req, "X-Forwarded-For")) {
		add[n++] = "X-Forwarded-For";
		add[n++] = sbx_http_peer(req);
	}
	if (sbx_buf_append_str(&target, path) ||
	    append_query(&target, sbx_http_query_string(req))) {
		sbx_buf_release(&target);
		sbx_http_respond_error(req, 414, "the request target is too long");
		return;
	}
	struct sbx_http_tunnel_opts o = {
		.upstream = upstream,
		.path = target.data,
		.drop_headers = drop,
		.add_headers = add,
	};

	if (sbx_http_forward(req, &o) == 0)
		p->forwarded++;
	else
		p->refused++;
	sbx_buf_release(&target);
}

void ports_handle_proxy(struct sbx_http_req *req, void *arg)
{
	forward(arg, req, true);
}

void ports_handle_absproxy(struct sbx_http_req *req, void *arg)
{
	forward(arg, req, false);
}

void ports_handle_bare(struct sbx_http_req *req, void *arg)
{
	const char *q = sbx_http_query_string(req);
	char location[2048];
	int port = port_of(arg, req);

	if (port < 0)
		return;
	/* Relative: it stays right under any prefix a gateway strips. */
	if ((size_t)snprintf(location, sizeof(location), "%d/%s%s", port, q && *q ? "?" : "",
			     q && *q ? q : "") >= sizeof(location)) {
		sbx_http_respond_error(req, 414, "add the slash: /proxy/{port}/");
		return;
	}
	sbx_http_add_header(req, "Location", location);
	sbx_http_respond_error(req, 308, "the proxied app is under /proxy/{port}/");
}

const struct sbx_http_route *ports_pick(struct sbx_http_req *req, void *arg)
{
	struct ports *p = arg;

	return sbx_http_header(req, "X-AIO-Proxy-Port") ? &p->by_header : NULL;
}

void ports_handle_header(struct sbx_http_req *req, void *arg)
{
	forward(arg, req, false);
}
