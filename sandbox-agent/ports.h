/* /proxy/{port}/... and /absproxy/{port}/...: services started inside the
 * sandbox, reached through the agent's own port (code-server's and AIO's
 * convention). /proxy strips "/proxy/{port}" and says so in
 * X-Forwarded-Prefix, for apps that build URLs from it; /absproxy passes
 * the path whole, for apps that know their base path. Both go to
 * 127.0.0.1:{port} over HTTP/1.1 with bodies streamed both ways, and a
 * WebSocket is passed through. The agent's own credentials (the API-key
 * headers, the bearer token that let the request in, api_key and ticket in
 * the query) are not passed on; everything else is the app's. The header
 * form, X-AIO-Proxy-Port, reaches the same ports (ports_pick).
 */
#ifndef SBX_AGENT_PORTS_H
#define SBX_AGENT_PORTS_H

#include "sbx/http.h"

struct auth;

struct ports {
	struct sbx_http_server *http; /* the agent's port is not a target */
	struct auth *auth;
	/* The route of a request that names its port in X-AIO-Proxy-Port
	 * (AIO's header form): its handler, ports_handle_header. */
	struct sbx_http_route by_header;
	unsigned long forwarded, refused;
};

void ports_handle_proxy(struct sbx_http_req *req, void *arg);
void ports_handle_absproxy(struct sbx_http_req *req, void *arg);
/* /proxy/{port} without the slash: a redirect to it, so that the app's
 * relative URLs resolve under the prefix. */
void ports_handle_bare(struct sbx_http_req *req, void *arg);
/* The server's pick hook: a request with X-AIO-Proxy-Port goes to that
 * port on 127.0.0.1, its path whole, whatever the path (AIO's header form,
 * for a gateway that cannot put the port in the path or the host); the
 * header itself is not passed on. The credential check applies as to any
 * route. arg is the struct ports. */
const struct sbx_http_route *ports_pick(struct sbx_http_req *req, void *arg);
void ports_handle_header(struct sbx_http_req *req, void *arg);

#endif
