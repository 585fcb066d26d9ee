/* Fuzz target: the agent's JSON request decoders, through the same route
 * table a client reaches (internal calls, no socket). The first byte picks
 * the endpoint; the rest is the body. Endpoints are those that only read:
 * MCP's JSON-RPC (initialize, tools/list, batches, tools/call whose inner
 * calls find no route here), and the file operations that read, in an
 * empty scratch workspace. Any crash, leak, hang or answer that is not JSON
 * is a finding. */
#include "api.h"
#include "files.h"
#include "mcp.h"
#include "sbx/http.h"
#include "sbx/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct files files;
static struct mcp mcp;

static const struct sbx_http_route routes[] = {
	{ .method = "POST", .pattern = "/mcp", .fn = mcp_handle_post, .arg = &mcp },
	{ .method = "POST", .pattern = "/v1/file/read", .fn = files_handle_read, .arg = &files },
	{ .method = "POST", .pattern = "/v1/file/list", .fn = files_handle_list, .arg = &files },
	{ .method = "POST",
	  .pattern = "/v1/file/search",
	  .fn = files_handle_search,
	  .arg = &files },
	{ .method = "POST", .pattern = "/v1/file/find", .fn = files_handle_find, .arg = &files },
	{ .method = "POST", .pattern = "/v1/file/glob", .fn = files_handle_glob, .arg = &files },
	{ .method = "POST", .pattern = "/v1/file/grep", .fn = files_handle_grep, .arg = &files },
	{ .method = "POST",
	  .pattern = "/v1/mcp/{server_name}/tools/{tool_name}",
	  .fn = mcp_handle_tool_call,
	  .arg = &mcp },
};

static const char *const targets[] = {
	"/mcp",		 "/v1/file/read",
	"/v1/file/list", "/v1/file/search",
	"/v1/file/find", "/v1/file/glob",
	"/v1/file/grep", "/v1/mcp/sandbox/tools/sandbox_file_operations",
};

static struct sbx_http_server *server;
static char workspace[64];
static int answered;

static void done(int status, const char *ctype, const char *body, size_t len, void *arg)
{
	char err[128];
	json_t *j;

	answered = 1;
	if (status == 202 || (status >= 500 && status != 500))
		return;
	/* Every answer of these endpoints is JSON. */
	j = sbx_json_loadb(body, len, len + 1, err, sizeof(err));
	if (!j)
		abort();
	json_decref(j);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(workspace, sizeof(workspace), "/tmp/sbx-fuzz-ws-XXXXXX");
	if (!mkdtemp(workspace))
		abort();
	files = (struct files){ .loop = uv_default_loop(),
				.workspace = workspace,
				.max_read_bytes = 1 << 16,
				.max_list_entries = 1000,
				.max_walk_ms = 200 }; /* "/" is a big tree to walk */
	mcp_init(&mcp, "fuzz", 64);
	sbx_http_server_new(uv_default_loop(), NULL, routes, sizeof(routes) / sizeof(routes[0]),
			    &server);
	mcp.http = server;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *target;

	if (size < 1)
		return 0;
	target = targets[data[0] % (sizeof(targets) / sizeof(targets[0]))];
	answered = 0;
	if (sbx_http_call(server, "POST", target, "application/json", data + 1, size - 1, done,
			  NULL))
		return 0;
	while (!answered && uv_run(uv_default_loop(), UV_RUN_ONCE))
		;
	if (!answered)
		abort(); /* a request nobody answered */
	return 0;
}
