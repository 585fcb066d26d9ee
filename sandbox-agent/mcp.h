/* MCP (Model Context Protocol) at /mcp and /v1/mcp: the streamable HTTP
 * transport (JSON-RPC 2.0 over POST, answered as application/json; GET
 * is not routed, so it answers 405: the agent never starts requests of its
 * own), with
 * initialize, ping, tools/list and tools/call. The tools run the agent's own
 * endpoints through internal calls (sbx_http_call), so a tool behaves
 * exactly as the REST operation it wraps: shell, code, file operations and
 * the text editor. Also the REST wrappers /v1/mcp/servers,
 * /v1/mcp/{server}/tools and /v1/mcp/{server}/tools/{tool}, where the one
 * server is "sandbox".
 *
 * Sessions: initialize hands out an Mcp-Session-Id; a request naming an
 * unknown (or deleted) session gets 404, as the transport specifies, and
 * requests without one are served statelessly. */
#ifndef SBX_AGENT_MCP_H
#define SBX_AGENT_MCP_H

#include "sbx/map.h"

#include <jansson.h>

struct sbx_http_req;
struct sbx_http_server;

struct mcp {
	struct sbx_http_server *http; /* set once the server exists */
	const char *version;
	struct sbx_map sessions; /* id -> (void *)1 */
	json_t *tools;		 /* the tools/list answer, built once */
};

void mcp_init(struct mcp *m, const char *version, unsigned max_sessions);
void mcp_release(struct mcp *m);

void mcp_handle_post(struct sbx_http_req *req, void *arg);
void mcp_handle_delete(struct sbx_http_req *req, void *arg);
void mcp_handle_servers(struct sbx_http_req *req, void *arg);
void mcp_handle_tools(struct sbx_http_req *req, void *arg);
void mcp_handle_tool_call(struct sbx_http_req *req, void *arg);

#endif
