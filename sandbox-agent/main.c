/* sbx-agent: serves the AIO Sandbox /v1 API inside a sandbox.
 *
 * main() only parses the configuration, wires the modules and runs the loop.
 * Endpoint groups live in their own modules (context.c, files.c, shell.c,
 * automation.c, ...); the route table below is the list of what is served,
 * and docs/configuration.md describes each group.
 */
#include "api.h"
#include "auth.h"
#include "automation.h"
#include "bash.h"
#include "browser.h"
#include "context.h"
#include "display.h"
#include "hooks.h"
#include "docs.h"
#include "code.h"
#include "files.h"
#include "fwdproxy.h"
#include "install.h"
#include "kernel.h"
#include "launcher.h"
#include "mcp.h"
#include "observe.h"
#include "packages.h"
#include "ports.h"
#include "terminal.h"
#include "util.h"
#include "watch.h"
#include "shell.h"
#include "skills.h"
#include "supervisor.h"
#include "sbx/alloc.h"
#include "sbx/config.h"
#include "sbx/http.h"
#include "sbx/log.h"
#include "sbx/loop.h"
#include "sbx/metrics.h"
#include "sbx/version.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static char *listen_addr = ":8080";
static char *workspace;
static long max_body_bytes = 64L << 20;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;
static long max_file_bytes = 32L << 20;
static long max_upload_bytes = 8L << 30;
static long max_walk_seconds = 60;
static char *skills_dir;
static char *observe_dir;
static char *forward_proxy_addr;
static char *proxy_state;
static char *upstream_proxy;
static struct sbx_strv proxy_excludes;
static char *cdp_addr;
static char *browser_cmd;
static char *shutdown_hook;
static char *tls_cert, *tls_key;
static long browser_width = 1280, browser_height = 720;
static char *jwt_public_key;
static char *api_key;
static long ticket_ttl_s = 30;
static long grace_ms = 10000;
static long max_sessions = 100;
static long max_output_bytes = 8L << 20;

struct agent {
	uv_loop_t *loop;
	struct sbx_http_server *http;
	struct sbx_signals signals;
	struct context ctx;
	struct files files;
	struct auth auth;
	struct shell shell;
	struct code code;
	struct kernels kernels;
	struct mcp mcp;
	struct terminals terminals;
	struct bash bash;
	struct skills skills;
	struct watches watches;
	struct browser browser;
	struct automation automation;
	struct util util;
	struct hooks hooks;
	struct docs docs;
	struct ports ports;
	struct observe observe;
	struct launcher launcher;
	struct fwdproxy fwdproxy;
};

static void healthz(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	sbx_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void http_metrics(struct sbx_buf *b, void *arg)
{
	struct agent *a = arg;

	sbx_metrics_http_server(b, a->http, "sbx_agent");
}

static void on_closed(void *arg)
{
	struct agent *a = arg;

	sbx_signals_close(&a->signals);
}

static void stop_now(void *arg)
{
	struct agent *a = arg;

	shell_close(&a->shell);
	kernels_close(&a->kernels);
	terminals_close(&a->terminals);
	bash_close(&a->bash);
	watches_close(&a->watches);
	observe_close(&a->observe);
	launcher_close(&a->launcher);
	automation_close(&a->automation);
	fwdproxy_close(&a->fwdproxy);
	sbx_http_server_close(a->http, on_closed, a);
}

/* A stop: the shutdown hooks first, then the sessions and the listener. */
static void on_stop(void *arg)
{
	struct agent *a = arg;

	hooks_run_shutdown(&a->hooks, stop_now, a);
}

/* The API server: everything after the configuration. In run mode this is
 * the supervisor's first child, so libuv starts only here, after the fork. */
static int serve(void *arg)
{
	(void)arg;
	struct agent a = { .loop = uv_default_loop() };
	const struct sbx_http_route routes[] = {
		{ .method = "GET",
		  .pattern = "/v1/sandbox",
		  .fn = context_handle_sandbox,
		  .arg = &a.ctx,
		  .summary = "The sandbox context: home, workspace, system, runtimes, tools" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/packages/python",
		  .fn = packages_handle_python,
		  .arg = uv_default_loop(),
		  .summary = "Python packages installed (name, version)" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/packages/nodejs",
		  .fn = packages_handle_nodejs,
		  .arg = uv_default_loop(),
		  .summary = "Global Node.js packages (name, version)" },
		{ .method = "GET",
		  .pattern = "/v1/ping",
		  .fn = context_handle_ping,
		  .public = true,
		  .summary = "Liveness of the API" },
		{ .method = "POST",
		  .pattern = "/v1/sandbox/hooks",
		  .fn = hooks_handle_register,
		  .arg = &a.hooks,
		  .summary = "Register a shutdown hook (name, command, timeout, priority)" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/hooks",
		  .fn = hooks_handle_list,
		  .arg = &a.hooks,
		  .summary = "The hooks, in the order they run" },
		{ .method = "DELETE",
		  .pattern = "/v1/sandbox/hooks/{name}",
		  .fn = hooks_handle_remove,
		  .arg = &a.hooks,
		  .summary = "Remove a hook registered through the API" },
		{ .method = "POST",
		  .pattern = "/v1/util/convert_to_markdown",
		  .fn = util_handle_markdown,
		  .arg = &a.util,
		  .summary =
			  "A URL, file:// URI or path as Markdown (HTML, plain text, Markdown)" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/observe/status",
		  .fn = observe_handle_status,
		  .arg = &a.observe,
		  .summary = "Whether an observation session runs, and its settings" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/observe/live",
		  .fn = observe_handle_live,
		  .arg = &a.observe,
		  .summary = "A sample now: cgroup CPU and memory, disks, top processes, events" },
		{ .method = "POST",
		  .pattern = "/v1/sandbox/observe/start",
		  .fn = observe_handle_start,
		  .arg = &a.observe,
		  .summary = "Start sampling (capture or guardrail) at an interval" },
		{ .method = "POST",
		  .pattern = "/v1/sandbox/observe/stop",
		  .fn = observe_handle_stop,
		  .arg = &a.observe,
		  .summary = "Stop the session (a capture's report is made first)" },
		{ .method = "POST",
		  .pattern = "/v1/sandbox/observe/export",
		  .fn = observe_handle_export,
		  .arg = &a.observe,
		  .summary = "Make a report (gzip'd JSON Lines) of a session, or of one sample" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/observe/reports",
		  .fn = observe_handle_reports,
		  .arg = &a.observe,
		  .summary = "The reports kept, newest first" },
		{ .method = "GET",
		  .pattern = "/v1/sandbox/observe/reports/{report_id}",
		  .fn = observe_handle_report_get,
		  .arg = &a.observe,
		  .summary = "A report's file (application/gzip)" },
		{ .method = "DELETE",
		  .pattern = "/v1/sandbox/observe/reports/{report_id}",
		  .fn = observe_handle_report_delete,
		  .arg = &a.observe,
		  .summary = "Delete a report" },
		{ .method = "GET",
		  .pattern = "/v1/proxy/mappings",
		  .fn = fwdproxy_handle_mappings,
		  .arg = &a.fwdproxy,
		  .summary = "The forward proxy's domain mappings" },
		{ .method = "POST",
		  .pattern = "/v1/proxy/mappings",
		  .fn = fwdproxy_handle_mapping_add,
		  .arg = &a.fwdproxy,
		  .summary =
			  "Map a domain (source: [protocol://]host[:port][/path], * in the "
			  "host) to a target ([host:]port[/path]); the same source is replaced" },
		{ .method = "DELETE",
		  .pattern = "/v1/proxy/mappings/{source}",
		  .fn = fwdproxy_handle_mapping_remove,
		  .arg = &a.fwdproxy,
		  .summary = "Remove a mapping (its source, percent-encoded or not)" },
		{ .method = "DELETE",
		  .pattern = "/v1/proxy/mappings/{source}/*",
		  .fn = fwdproxy_handle_mapping_remove,
		  .arg = &a.fwdproxy,
		  .summary = "The same for a source with a path, as the SDKs send it (unencoded)" },
		{ .method = "GET",
		  .pattern = "/v1/proxy/excludes",
		  .fn = fwdproxy_handle_excludes,
		  .arg = &a.fwdproxy,
		  .summary = "Patterns that bypass the upstream proxy" },
		{ .method = "POST",
		  .pattern = "/v1/proxy/excludes",
		  .fn = fwdproxy_handle_exclude_add,
		  .arg = &a.fwdproxy,
		  .summary = "Add a bypass pattern (*.example.com, .example.com, a host, a CIDR "
			     "block)" },
		{ .method = "DELETE",
		  .pattern = "/v1/proxy/excludes",
		  .fn = fwdproxy_handle_exclude_remove,
		  .arg = &a.fwdproxy,
		  .summary = "Remove a bypass pattern" },
		{ .method = "GET",
		  .pattern = "/v1/proxy/diagnose",
		  .fn = fwdproxy_handle_diagnose,
		  .arg = &a.fwdproxy,
		  .summary = "How the forward proxy would route a URL, and whether that target "
			     "accepts connections" },
		{ .method = "GET",
		  .pattern = "/v1/proxy/health",
		  .fn = fwdproxy_handle_health,
		  .arg = &a.fwdproxy,
		  .summary = "Whether the forward proxy listens and its configuration is saved" },
		{ .method = "GET",
		  .pattern = "/v1/proxy/upstream",
		  .fn = fwdproxy_handle_upstream,
		  .arg = &a.fwdproxy,
		  .summary = "The upstream proxy, or null (direct)" },
		{ .method = "PUT",
		  .pattern = "/v1/proxy/upstream",
		  .fn = fwdproxy_handle_upstream_set,
		  .arg = &a.fwdproxy,
		  .summary = "Set the upstream proxy (host:port, user:pass@host:port, auth_cmd)" },
		{ .method = "DELETE",
		  .pattern = "/v1/proxy/upstream",
		  .fn = fwdproxy_handle_upstream_remove,
		  .arg = &a.fwdproxy,
		  .summary = "Remove the upstream proxy: direct" },
		{ .method = "GET",
		  .pattern = "/v1/browser/proxy.pac",
		  .fn = fwdproxy_handle_pac,
		  .arg = &a.fwdproxy,
		  .summary = "The PAC file: mapped hosts through the forward proxy, excluded ones "
			     "direct" },
		{ .method = "POST",
		  .pattern = "/v1/browser/restart",
		  .fn = launcher_handle_restart,
		  .arg = &a.launcher,
		  .summary = "Reconnect to the browser (soft), or restart the one the agent "
			     "started (hard)" },
		{ .pattern = "/proxy/{port}",
		  .fn = ports_handle_bare,
		  .arg = &a.ports,
		  .summary = "A redirect to /proxy/{port}/" },
		{ .pattern = "/proxy/{port}/*",
		  .fn = ports_handle_proxy,
		  .arg = &a.ports,
		  .stream_body = true,
		  .max_body_bytes = (size_t)max_upload_bytes,
		  .summary = "A service inside the sandbox on 127.0.0.1:{port}, the prefix "
			     "stripped (WebSocket too)" },
		{ .pattern = "/absproxy/{port}",
		  .fn = ports_handle_absproxy,
		  .arg = &a.ports,
		  .stream_body = true,
		  .max_body_bytes = (size_t)max_upload_bytes,
		  .summary = "The same, the path passed whole" },
		{ .pattern = "/absproxy/{port}/*",
		  .fn = ports_handle_absproxy,
		  .arg = &a.ports,
		  .stream_body = true,
		  .max_body_bytes = (size_t)max_upload_bytes,
		  .summary = "A service inside the sandbox on 127.0.0.1:{port}, the path passed "
			     "whole (WebSocket too)" },
		{ .method = "POST",
		  .pattern = "/v1/display/record",
		  .fn = display_handle_record,
		  .summary = "Screen recording (501: not available; the message says why)" },
		{ .method = "GET",
		  .pattern = "/auth",
		  .fn = auth_handle_auth,
		  .arg = &a.auth,
		  .summary = "Authenticate a front proxy's subrequest (nginx auth_request)" },
		{ .method = "POST",
		  .pattern = "/tickets",
		  .fn = auth_handle_tickets,
		  .arg = &a.auth,
		  .summary = "Trade a credential for a single-use ticket (?ticket=)" },
		{ .method = "POST",
		  .pattern = "/v1/shell/exec",
		  .fn = shell_handle_exec,
		  .arg = &a.shell,
		  .summary = "Run a command in a shell session (new or given)" },
		{ .method = "POST",
		  .pattern = "/v1/shell/view",
		  .fn = shell_handle_view,
		  .arg = &a.shell,
		  .summary = "Output and status of a session's current or last command" },
		{ .method = "POST",
		  .pattern = "/v1/shell/wait",
		  .fn = shell_handle_wait,
		  .arg = &a.shell,
		  .summary = "Wait for a session's command to finish" },
		{ .method = "POST",
		  .pattern = "/v1/shell/write",
		  .fn = shell_handle_write,
		  .arg = &a.shell,
		  .summary = "Send input to a session's running command" },
		{ .method = "POST",
		  .pattern = "/v1/shell/kill",
		  .fn = shell_handle_kill,
		  .arg = &a.shell,
		  .summary = "Kill a session's running command" },
		{ .method = "POST",
		  .pattern = "/v1/shell/sessions/create",
		  .fn = shell_handle_create,
		  .arg = &a.shell,
		  .summary = "Open a shell session" },
		{ .method = "POST",
		  .pattern = "/v1/shell/sessions/update",
		  .fn = shell_handle_update,
		  .arg = &a.shell,
		  .summary = "Change a session's no-output timeout" },
		{ .method = "GET",
		  .pattern = "/v1/shell/sessions/stats",
		  .fn = shell_handle_stats,
		  .arg = &a.shell,
		  .summary = "Counts of shell sessions against the limit" },
		{ .method = "GET",
		  .pattern = "/v1/shell/sessions",
		  .fn = shell_handle_list,
		  .arg = &a.shell,
		  .summary = "List shell sessions" },
		{ .method = "DELETE",
		  .pattern = "/v1/shell/sessions",
		  .fn = shell_handle_delete_all,
		  .arg = &a.shell,
		  .summary = "Close every shell session" },
		{ .method = "DELETE",
		  .pattern = "/v1/shell/sessions/{session_id}",
		  .fn = shell_handle_delete,
		  .arg = &a.shell,
		  .summary = "Close one shell session" },
		{ .method = "GET",
		  .pattern = "/v1/shell/terminal-url",
		  .fn = terminals_handle_url,
		  .arg = &a.terminals,
		  .summary = "Open a terminal and get the address of its page" },
		{ .method = "GET",
		  .pattern = "/terminal",
		  .fn = terminals_handle_page,
		  .arg = &a.terminals,
		  .public = true,
		  .summary = "The terminal page (its WebSocket needs a credential or ticket)" },
		{ .method = "GET",
		  .pattern = "/v1/shell/ws",
		  .fn = terminals_handle_ws,
		  .arg = &a.terminals,
		  .summary = "Interactive terminal over WebSocket (JSON frames; ?session_id= "
			     "re-attaches)" },
		{ .method = "POST",
		  .pattern = "/v1/bash/exec",
		  .fn = bash_handle_exec,
		  .arg = &a.bash,
		  .summary =
			  "Run a command on pipes (stdout and stderr apart); sync, async or until a timeout" },
		{ .method = "POST",
		  .pattern = "/v1/bash/output",
		  .fn = bash_handle_output,
		  .arg = &a.bash,
		  .summary = "A command's output from byte offsets; long-polls with wait" },
		{ .method = "POST",
		  .pattern = "/v1/bash/write",
		  .fn = bash_handle_write,
		  .arg = &a.bash,
		  .summary = "Write to a running command's stdin" },
		{ .method = "POST",
		  .pattern = "/v1/bash/kill",
		  .fn = bash_handle_kill,
		  .arg = &a.bash,
		  .summary = "Signal a session's running command (its whole process group)" },
		{ .method = "GET",
		  .pattern = "/v1/bash/sessions",
		  .fn = bash_handle_sessions,
		  .arg = &a.bash,
		  .summary = "List bash sessions" },
		{ .method = "POST",
		  .pattern = "/v1/bash/sessions/create",
		  .fn = bash_handle_create,
		  .arg = &a.bash,
		  .summary = "Open a bash session (a working directory)" },
		{ .method = "POST",
		  .pattern = "/v1/bash/sessions/{session_id}/close",
		  .fn = bash_handle_close,
		  .arg = &a.bash,
		  .summary = "Close a bash session, killing what it runs" },
		{ .method = "POST",
		  .pattern = "/v1/skills/register",
		  .fn = skills_handle_register,
		  .arg = &a.skills,
		  .max_body_bytes = (64u << 20) + 65536,
		  .summary =
			  "Register skills: a folder in the sandbox (path) or an uploaded zip (file)" },
		{ .method = "GET",
		  .pattern = "/v1/skills/metadatas",
		  .fn = skills_handle_list,
		  .arg = &a.skills,
		  .summary = "Registered skills and their front matter (?names=a,b)" },
		{ .method = "DELETE",
		  .pattern = "/v1/skills",
		  .fn = skills_handle_clear,
		  .arg = &a.skills,
		  .summary = "Forget every skill (unpacked ones are removed)" },
		{ .method = "DELETE",
		  .pattern = "/v1/skills/{name}",
		  .fn = skills_handle_delete,
		  .arg = &a.skills,
		  .summary = "Forget a skill (an unpacked one is removed)" },
		{ .method = "GET",
		  .pattern = "/v1/skills/{name}/content",
		  .fn = skills_handle_content,
		  .arg = &a.skills,
		  .summary = "A skill's SKILL.md without its front matter" },
		{ .method = "POST",
		  .pattern = "/v1/file/read",
		  .fn = files_handle_read,
		  .arg = &a.files,
		  .summary = "Read a text file (line ranges)" },
		{ .method = "POST",
		  .pattern = "/v1/file/write",
		  .fn = files_handle_write,
		  .arg = &a.files,
		  .summary = "Write a file (utf-8 or base64; append)" },
		{ .method = "POST",
		  .pattern = "/v1/file/list",
		  .fn = files_handle_list,
		  .arg = &a.files,
		  .summary = "List a directory (recursive, filters, sorting)" },
		{ .method = "POST",
		  .pattern = "/v1/file/replace",
		  .fn = files_handle_replace,
		  .arg = &a.files,
		  .summary = "Replace every occurrence of a string in a file" },
		{ .method = "POST",
		  .pattern = "/v1/file/search",
		  .fn = files_handle_search,
		  .arg = &a.files,
		  .summary = "Lines of a file matching a regular expression" },
		{ .method = "POST",
		  .pattern = "/v1/file/find",
		  .fn = files_handle_find,
		  .arg = &a.files,
		  .summary = "Files below a folder whose names match a pattern" },
		{ .method = "POST",
		  .pattern = "/v1/file/grep",
		  .fn = files_handle_grep,
		  .arg = &a.files,
		  .summary = "Lines matching a pattern across files (ripgrep-like)" },
		{ .method = "POST",
		  .pattern = "/v1/file/glob",
		  .fn = files_handle_glob,
		  .arg = &a.files,
		  .summary = "Paths below a folder matching a glob (**)" },
		{ .method = "POST",
		  .pattern = "/v1/file/str_replace_editor",
		  .fn = files_handle_editor,
		  .arg = &a.files,
		  .summary = "View, create, edit, insert into and undo edits of text files" },
		{ .method = "POST",
		  .pattern = "/v1/file/upload",
		  .fn = files_handle_upload,
		  .arg = &a.files,
		  .stream_body = true,
		  .max_body_bytes = (size_t)max_upload_bytes,
		  .summary = "Upload a file (multipart: file, and path as a file or folder)" },
		{ .method = "GET",
		  .pattern = "/v1/file/download",
		  .fn = files_handle_download,
		  .arg = &a.files,
		  .summary = "Download a file (?path=, change_policy=ignore|abort)" },
		{ .method = "GET",
		  .pattern = "/v1/file/watch",
		  .fn = watches_handle_list,
		  .arg = &a.watches,
		  .summary = "List file watchers" },
		{ .method = "POST",
		  .pattern = "/v1/file/watch",
		  .fn = watches_handle_create,
		  .arg = &a.watches,
		  .summary =
			  "Watch a file or folder tree (inotify): create, write, remove, rename, chmod" },
		{ .method = "GET",
		  .pattern = "/v1/file/watch/{watcher_id}/events",
		  .fn = watches_handle_events,
		  .arg = &a.watches,
		  .summary = "A watcher's events as Server-Sent Events (Last-Event-ID resumes)" },
		{ .method = "POST",
		  .pattern = "/v1/file/watch/{watcher_id}/poll",
		  .fn = watches_handle_poll,
		  .arg = &a.watches,
		  .summary = "A watcher's events after a cursor; long-polls with timeout" },
		{ .method = "POST",
		  .pattern = "/v1/file/watch/wait",
		  .fn = watches_handle_wait,
		  .arg = &a.watches,
		  .summary = "Wait for an event on one path" },
		{ .method = "DELETE",
		  .pattern = "/v1/file/watch/{watcher_id}",
		  .fn = watches_handle_stop,
		  .arg = &a.watches,
		  .summary = "Stop a watcher" },
		{ .method = "POST",
		  .pattern = "/v1/code/execute",
		  .fn = code_handle_execute,
		  .arg = &a.code,
		  .summary = "Run Python or JavaScript code" },
		{ .method = "GET",
		  .pattern = "/v1/code/info",
		  .fn = code_handle_info,
		  .arg = &a.code,
		  .summary = "Languages and runtime versions" },
		{ .method = "POST",
		  .pattern = "/v1/jupyter/execute",
		  .fn = kernels_handle_jupyter_execute,
		  .arg = &a.kernels,
		  .summary = "Run Python in a session's kept interpreter (state survives)" },
		{ .method = "POST",
		  .pattern = "/v1/jupyter/sessions/create",
		  .fn = kernels_handle_jupyter_create,
		  .arg = &a.kernels,
		  .summary = "Start a Python session" },
		{ .method = "GET",
		  .pattern = "/v1/jupyter/info",
		  .fn = kernels_handle_jupyter_info,
		  .arg = &a.kernels,
		  .summary = "Kernels, sessions and their limits" },
		{ .method = "GET",
		  .pattern = "/v1/jupyter/sessions",
		  .fn = kernels_handle_jupyter_list,
		  .arg = &a.kernels,
		  .summary = "List Python sessions" },
		{ .method = "DELETE",
		  .pattern = "/v1/jupyter/sessions",
		  .fn = kernels_handle_jupyter_delete_all,
		  .arg = &a.kernels,
		  .summary = "Close every Python session" },
		{ .method = "DELETE",
		  .pattern = "/v1/jupyter/sessions/{session_id}",
		  .fn = kernels_handle_jupyter_delete,
		  .arg = &a.kernels,
		  .summary = "Close one Python session" },
		{ .method = "POST",
		  .pattern = "/v1/nodejs/execute",
		  .fn = kernels_handle_nodejs_execute,
		  .arg = &a.kernels,
		  .summary = "Run JavaScript, once or in a session's kept context" },
		{ .method = "POST",
		  .pattern = "/v1/nodejs/sessions",
		  .fn = kernels_handle_nodejs_create,
		  .arg = &a.kernels,
		  .summary = "Start a Node.js session" },
		{ .method = "GET",
		  .pattern = "/v1/nodejs/sessions",
		  .fn = kernels_handle_nodejs_list,
		  .arg = &a.kernels,
		  .summary = "List Node.js sessions" },
		{ .method = "GET",
		  .pattern = "/v1/nodejs/sessions/{session_id}",
		  .fn = kernels_handle_nodejs_get,
		  .arg = &a.kernels,
		  .summary = "One Node.js session" },
		{ .method = "PATCH",
		  .pattern = "/v1/nodejs/sessions/{session_id}",
		  .fn = kernels_handle_nodejs_update,
		  .arg = &a.kernels,
		  .summary = "Change a Node.js session's idle limit or directory" },
		{ .method = "DELETE",
		  .pattern = "/v1/nodejs/sessions/{session_id}",
		  .fn = kernels_handle_nodejs_delete,
		  .arg = &a.kernels,
		  .summary = "Close a Node.js session" },
		{ .method = "GET",
		  .pattern = "/v1/nodejs/info",
		  .fn = kernels_handle_nodejs_info,
		  .arg = &a.kernels,
		  .summary = "The Node.js runtime" },
		{ .method = "POST",
		  .pattern = "/mcp",
		  .fn = mcp_handle_post,
		  .arg = &a.mcp,
		  .summary = "MCP, streamable HTTP: JSON-RPC requests (initialize, tools/list, "
			     "tools/call)" },
		{ .method = "DELETE",
		  .pattern = "/mcp",
		  .fn = mcp_handle_delete,
		  .arg = &a.mcp,
		  .summary = "End an MCP session (Mcp-Session-Id)" },
		{ .method = "POST",
		  .pattern = "/v1/mcp",
		  .fn = mcp_handle_post,
		  .arg = &a.mcp,
		  .summary = "MCP, streamable HTTP (the same as /mcp)" },
		{ .method = "DELETE",
		  .pattern = "/v1/mcp",
		  .fn = mcp_handle_delete,
		  .arg = &a.mcp,
		  .summary = "End an MCP session (the same as /mcp)" },
		{ .method = "GET",
		  .pattern = "/v1/mcp/servers",
		  .fn = mcp_handle_servers,
		  .arg = &a.mcp,
		  .summary = "MCP servers in this sandbox ('sandbox')" },
		{ .method = "GET",
		  .pattern = "/v1/mcp/{server_name}/tools",
		  .fn = mcp_handle_tools,
		  .arg = &a.mcp,
		  .summary = "An MCP server's tools and their input schemas" },
		{ .method = "POST",
		  .pattern = "/v1/mcp/{server_name}/tools/{tool_name}",
		  .fn = mcp_handle_tool_call,
		  .arg = &a.mcp,
		  .summary = "Call an MCP tool with the body as its arguments" },
		{ .method = "GET",
		  .pattern = "/v1/browser/info",
		  .fn = browser_handle_info,
		  .arg = &a.browser,
		  .summary =
			  "The browser: user agent, display size, and a cdp_url for Playwright's connect_over_cdp" },
		{ .method = "GET",
		  .pattern = "/v1/browser/screenshot",
		  .fn = browser_handle_screenshot,
		  .arg = &a.browser,
		  .summary = "A picture of the browser's first page (?format=png|jpeg, quality)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/navigate",
		  .fn = automation_navigate,
		  .arg = &a.automation,
		  .summary = "Open a URL in the active tab and wait for it to load (wait_until)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/back",
		  .fn = automation_back,
		  .arg = &a.automation,
		  .summary = "Go back in the active tab's history" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/forward",
		  .fn = automation_forward,
		  .arg = &a.automation,
		  .summary = "Go forward in the active tab's history" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/reload",
		  .fn = automation_reload,
		  .arg = &a.automation,
		  .summary = "Reload the active tab" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/click",
		  .fn = automation_click,
		  .arg = &a.automation,
		  .summary = "Click an element (selector or index) or a point (x, y)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/fill",
		  .fn = automation_fill,
		  .arg = &a.automation,
		  .summary = "Replace an input's text (selector or index)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/type",
		  .fn = automation_type,
		  .arg = &a.automation,
		  .summary = "Type text into the focused element" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/press_key",
		  .fn = automation_press_key,
		  .arg = &a.automation,
		  .summary = "Press a key (Enter, Tab, ArrowDown, a, ...)" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/text",
		  .fn = automation_text,
		  .arg = &a.automation,
		  .summary = "The active tab's visible text" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/html",
		  .fn = automation_html,
		  .arg = &a.automation,
		  .summary = "The active tab's HTML" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/markdown",
		  .fn = automation_markdown,
		  .arg = &a.automation,
		  .summary = "The active tab as Markdown (the visible DOM, walked in the page)" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/elements",
		  .fn = automation_elements,
		  .arg = &a.automation,
		  .summary = "The interactive elements, with the indexes click and fill take" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/evaluate",
		  .fn = automation_evaluate,
		  .arg = &a.automation,
		  .summary = "Evaluate a JavaScript expression in the active tab" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/wait",
		  .fn = automation_wait,
		  .arg = &a.automation,
		  .summary =
			  "Wait for a load, a selector, a URL, a function, the network, or a time" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/screenshot",
		  .fn = automation_screenshot,
		  .arg = &a.automation,
		  .summary = "A picture of the active tab (full_page, format, quality)" },
		{ .method = "GET",
		  .pattern = "/v1/browser/page/console",
		  .fn = automation_console,
		  .arg = &a.automation,
		  .summary = "Console messages of the pages worked on" },
		{ .method = "GET",
		  .pattern = "/v1/browser/tabs",
		  .fn = automation_tabs,
		  .arg = &a.automation,
		  .summary = "The tabs, and which is active" },
		{ .method = "POST",
		  .pattern = "/v1/browser/tabs",
		  .fn = automation_tab_new,
		  .arg = &a.automation,
		  .summary = "Open a tab (url) and make it active" },
		{ .method = "DELETE",
		  .pattern = "/v1/browser/tabs/{index}",
		  .fn = automation_tab_close,
		  .arg = &a.automation,
		  .summary = "Close a tab" },
		{ .method = "PUT",
		  .pattern = "/v1/browser/tabs/{index}/activate",
		  .fn = automation_tab_activate,
		  .arg = &a.automation,
		  .summary = "Make a tab the active one" },
		{ .method = "GET",
		  .pattern = "/v1/browser/cookies",
		  .fn = automation_cookies,
		  .arg = &a.automation,
		  .summary = "The browser's cookies (urls: only those sent to them)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/cookies",
		  .fn = automation_cookies_set,
		  .arg = &a.automation,
		  .summary = "Set cookies" },
		{ .method = "DELETE",
		  .pattern = "/v1/browser/cookies",
		  .fn = automation_cookies_clear,
		  .arg = &a.automation,
		  .summary = "Clear all cookies" },
		{ .method = "POST",
		  .pattern = "/v1/browser/state/save",
		  .fn = automation_state_save,
		  .arg = &a.automation,
		  .summary = "Save cookies and the active origin's localStorage to a file" },
		{ .method = "POST",
		  .pattern = "/v1/browser/state/load",
		  .fn = automation_state_load,
		  .arg = &a.automation,
		  .summary = "Load a saved state into the browser" },
		{ .method = "POST",
		  .pattern = "/v1/browser/network/route",
		  .fn = automation_route,
		  .arg = &a.automation,
		  .summary =
			  "Block (abort) or answer (response) requests whose URL matches a glob" },
		{ .method = "DELETE",
		  .pattern = "/v1/browser/network/route",
		  .fn = automation_route_remove,
		  .arg = &a.automation,
		  .summary = "Remove a route" },
		{ .method = "GET",
		  .pattern = "/v1/browser/network/requests",
		  .fn = automation_requests,
		  .arg = &a.automation,
		  .summary = "The requests of the pages worked on (filter, limit)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/network/export_har",
		  .fn = automation_export_har,
		  .arg = &a.automation,
		  .summary = "Write the request log as HAR 1.2 to a file" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/hover",
		  .fn = automation_hover,
		  .arg = &a.automation,
		  .summary = "Move the mouse over an element (selector) or a point" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/fill_form",
		  .fn = automation_fill_form,
		  .arg = &a.automation,
		  .summary = "Fill several fields: items [{selector or index, value}]" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/hot_key",
		  .fn = automation_hot_key,
		  .arg = &a.automation,
		  .summary = "Press keys together (Control, a)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/upload_file",
		  .fn = automation_upload_file,
		  .arg = &a.automation,
		  .summary = "Set a file input's files (paths in the sandbox)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/scroll",
		  .fn = automation_scroll,
		  .arg = &a.automation,
		  .summary = "Scroll by amount pixels up, down, left or right" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/scroll_to",
		  .fn = automation_scroll_to,
		  .arg = &a.automation,
		  .summary = "Scroll to x, y" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/scroll_to_element",
		  .fn = automation_scroll_to_element,
		  .arg = &a.automation,
		  .summary = "Scroll an element into view" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/check",
		  .fn = automation_check,
		  .arg = &a.automation,
		  .summary = "Check a checkbox or radio button" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/uncheck",
		  .fn = automation_uncheck,
		  .arg = &a.automation,
		  .summary = "Uncheck a checkbox" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/select_option",
		  .fn = automation_select_option,
		  .arg = &a.automation,
		  .summary = "Select an option (value, label or index)" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/find_text",
		  .fn = automation_find_text,
		  .arg = &a.automation,
		  .summary = "Where a keyword occurs on the page" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/console/export",
		  .fn = automation_export_console,
		  .arg = &a.automation,
		  .summary = "Write the console record to a file" },
		{ .method = "POST",
		  .pattern = "/v1/browser/network/headers",
		  .fn = automation_headers,
		  .arg = &a.automation,
		  .summary = "Extra headers on every request of every page" },
		{ .method = "POST",
		  .pattern = "/v1/browser/network/scoped_headers",
		  .fn = automation_scoped_headers,
		  .arg = &a.automation,
		  .summary = "Headers on the requests to one origin only" },
		{ .method = "POST",
		  .pattern = "/v1/browser/actions",
		  .fn = automation_actions,
		  .arg = &a.automation,
		  .summary = "One of AIO's display actions (pointer, keys, scroll, wait) on the "
			     "active page" },
		{ .method = "POST",
		  .pattern = "/v1/browser/page/record",
		  .fn = automation_record,
		  .arg = &a.automation,
		  .summary = "Record the active page as a video (Motion JPEG in AVI): once for a "
			     "duration, or start, pause, resume, stop, status" },
		{ .method = "POST",
		  .pattern = "/v1/browser/config",
		  .fn = automation_config,
		  .arg = &a.automation,
		  .summary = "The screen resolution, as every page's viewport" },
		{ .method = "GET",
		  .pattern = "/v1/browser/captcha/detect",
		  .fn = automation_captcha_detect,
		  .arg = &a.automation,
		  .summary =
			  "Whether the active tab shows a CAPTCHA, which, and whether it is solved" },
		{ .method = "POST",
		  .pattern = "/v1/browser/captcha/wait",
		  .fn = automation_captcha_wait,
		  .arg = &a.automation,
		  .summary =
			  "Wait until the CAPTCHA is solved or gone (no solver: a person or a tool)" },
		{ .method = "GET",
		  .pattern = "/cdp/json/version",
		  .fn = browser_handle_json,
		  .arg = &a.browser,
		  .summary = "Chromium's DevTools version, with addresses through the agent" },
		{ .method = "GET",
		  .pattern = "/cdp/json",
		  .fn = browser_handle_json,
		  .arg = &a.browser,
		  .summary = "Chromium's DevTools targets, with addresses through the agent" },
		{ .method = "GET",
		  .pattern = "/cdp/json/list",
		  .fn = browser_handle_json,
		  .arg = &a.browser,
		  .summary = "Chromium's DevTools targets, with addresses through the agent" },
		{ .method = "GET",
		  .pattern = "/cdp/json/version/",
		  .fn = browser_handle_json,
		  .arg = &a.browser,
		  .summary = "The same as /cdp/json/version (Playwright asks with the slash)" },
		{ .method = "GET",
		  .pattern = "/cdp/json/list/",
		  .fn = browser_handle_json,
		  .arg = &a.browser,
		  .summary = "The same as /cdp/json/list" },
		{ .method = "GET",
		  .pattern = "/cdp/devtools/*",
		  .fn = browser_handle_devtools,
		  .arg = &a.browser,
		  .summary = "The DevTools WebSocket, passed through to Chromium" },
		{ .method = "GET",
		  .pattern = "/v1/openapi.json",
		  .fn = docs_handle_openapi,
		  .arg = &a.docs,
		  .public = true,
		  .summary = "This API's description (OpenAPI 3.1)" },
		{ .method = "GET",
		  .pattern = "/v1/docs",
		  .fn = docs_handle_page,
		  .arg = &a.docs,
		  .public = true,
		  .summary = "This API's description, as a page" },
		{ .method = "GET",
		  .pattern = "/healthz",
		  .fn = healthz,
		  .public = true,
		  .health = true,
		  .summary = "Health for probes" },
		{ .method = "GET",
		  .pattern = "/metrics",
		  .fn = sbx_metrics_handle,
		  .public = true,
		  .health = true,
		  .summary = "Prometheus metrics" },
	};

	struct sbx_http_server_opts so = { 0 };
	int rc, exit_code = 1;
	char err[256], proxy_url[96];

	if (browser_cmd && *browser_cmd && !(cdp_addr && *cdp_addr)) {
		fprintf(stderr,
			"sbx-agent: --browser-cmd needs --cdp, the address of the browser's "
			"DevTools\n");
		return 2;
	}
	if ((rc = auth_init(&a.auth, a.loop, jwt_public_key, api_key, ticket_ttl_s, err,
			    sizeof(err)))) {
		fprintf(stderr, "sbx-agent: %s\n", err);
		auth_release(&a.auth);
		return 2;
	}
	if ((rc = context_init(&a.ctx, a.loop, workspace))) {
		sbx_log_error("cannot gather the sandbox context", SBX_LERR(rc));
		goto out_auth;
	}
	if ((rc = fwdproxy_init(&a.fwdproxy, a.loop, forward_proxy_addr, proxy_state,
				upstream_proxy, &proxy_excludes, a.ctx.workspace, err,
				sizeof(err)))) {
		fprintf(stderr, "sbx-agent: %s\n", err);
		exit_code = 2;
		goto out_context;
	}
	if ((rc = shell_init(&a.shell, a.loop, a.ctx.workspace, (unsigned)max_sessions,
			     (size_t)max_output_bytes))) {
		sbx_log_error("cannot set up shell sessions", SBX_LERR(rc));
		goto out_context;
	}
	if ((rc = code_init(&a.code, a.loop, a.ctx.workspace, &a.ctx, (size_t)max_output_bytes,
			    32))) {
		sbx_log_error("cannot set up code execution", SBX_LERR(rc));
		shell_close(&a.shell);
		goto out_context;
	}
	kernels_init(&a.kernels, a.loop, a.ctx.workspace, (unsigned)max_sessions,
		     (size_t)max_output_bytes);
	a.code.kernels = &a.kernels;
	mcp_init(&a.mcp, SBX_VERSION, 1024);
	terminals_init(&a.terminals, a.loop, a.ctx.workspace, (unsigned)max_sessions);
	a.terminals.auth = &a.auth;
	watches_init(&a.watches, a.loop, a.ctx.workspace, 64);
	a.browser = (struct browser){ .loop = a.loop,
				      .cdp = cdp_addr && *cdp_addr ? cdp_addr : NULL,
				      .width = (unsigned)browser_width,
				      .height = (unsigned)browser_height };
	automation_init(&a.automation, a.loop, a.browser.cdp, a.ctx.workspace);
	launcher_init(&a.launcher, a.loop, browser_cmd, a.browser.cdp, a.ctx.workspace,
		      &a.automation);
	a.launcher.proxy_url = fwdproxy_url(&a.fwdproxy, proxy_url, sizeof(proxy_url));
	hooks_init(&a.hooks, a.loop, a.ctx.workspace, shutdown_hook);
	skills_init(&a.skills, a.loop, a.ctx.workspace, skills_dir);
	observe_init(&a.observe, a.loop, observe_dir, a.ctx.workspace);
	bash_init(&a.bash, a.loop, a.ctx.workspace, (unsigned)max_sessions,
		  (size_t)max_output_bytes);
	if ((rc = docs_init(&a.docs, routes, sizeof(routes) / sizeof(routes[0]), SBX_VERSION))) {
		sbx_log_error("cannot describe the API", SBX_LERR(rc));
		shell_close(&a.shell);
		kernels_close(&a.kernels);
		terminals_close(&a.terminals);
		bash_close(&a.bash);
		watches_close(&a.watches);
		observe_close(&a.observe);
		launcher_close(&a.launcher);
		skills_release(&a.skills);
		mcp_release(&a.mcp);
		code_release(&a.code);
		goto out_context;
	}
	a.files = (struct files){ .loop = a.loop,
				  .workspace = a.ctx.workspace,
				  .max_read_bytes = (size_t)max_file_bytes,
				  .max_list_entries = 100000,
				  .max_upload_bytes = (uint64_t)max_upload_bytes,
				  .max_walk_ms = (uint64_t)max_walk_seconds * 1000 };
	so.max_body_bytes = (size_t)max_body_bytes;
	sbx_http_flags_apply(&http_flags, &so);
	so.server_name = "sbx-agent";
	so.authorize = auth_authorize;
	so.authorize_arg = &a.auth;
	a.ports = (struct ports){ .auth = &a.auth,
				  .by_header = { .fn = ports_handle_header,
						 .arg = &a.ports,
						 .stream_body = true,
						 .max_body_bytes = (size_t)max_upload_bytes } };
	so.pick = ports_pick;
	so.pick_arg = &a.ports;
	sbx_http_server_new(a.loop, &so, routes, sizeof(routes) / sizeof(routes[0]), &a.http);
	a.mcp.http = a.http;
	a.util.http = a.http;
	a.ports.http = a.http;
	if (tls_cert || tls_key) {
		if (!tls_cert || !tls_key) {
			snprintf(err, sizeof(err), "--tls-cert and --tls-key go together");
			rc = -EINVAL;
		} else {
			rc = sbx_http_server_listen_tls(a.http, listen_addr, tls_cert, tls_key, err,
							sizeof(err));
		}
		if (rc)
			sbx_log_error("cannot serve TLS", SBX_LS("error", err));
	} else if ((rc = sbx_http_server_listen(a.http, listen_addr))) {
		sbx_log_error("cannot listen", SBX_LS("addr", listen_addr),
			      SBX_LS("error", uv_strerror(rc)));
	}
	if (rc) {
		sbx_http_server_close(a.http, NULL, NULL);
		fwdproxy_close(&a.fwdproxy);
		goto out_loop;
	}
	sbx_metrics_register(http_metrics, &a);
	sbx_signals_init(a.loop, &a.signals, on_stop, &a);
	launcher_start(&a.launcher); /* after listening: the API is up first */
	sbx_log_info("listening", SBX_LS("addr", listen_addr),
		     SBX_LI("port", sbx_http_server_port(a.http)),
		     SBX_LS("workspace", a.ctx.workspace), SBX_LS("version", SBX_VERSION),
		     SBX_LS("forward_proxy", a.fwdproxy.addr),
		     SBX_LB("auth", auth_enabled(&a.auth)));
	exit_code = 0;
out_loop:
	uv_run(a.loop, UV_RUN_DEFAULT);
	shell_close(&a.shell);
	kernels_close(&a.kernels);
	terminals_close(&a.terminals);
	bash_close(&a.bash);
	watches_close(&a.watches);
	observe_close(&a.observe);
	launcher_close(&a.launcher);
	skills_release(&a.skills);
	mcp_release(&a.mcp);
	code_release(&a.code);
	docs_release(&a.docs);
	automation_release(&a.automation);
	hooks_release(&a.hooks);
out_context:
	fwdproxy_close(&a.fwdproxy);
	sbx_loop_close(a.loop);
	fwdproxy_release(&a.fwdproxy);
	context_release(&a.ctx);
out_auth:
	auth_release(&a.auth);
	return exit_code;
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		{ .name = "listen",
		  .type = SBX_OPT_STRING,
		  .dest = &listen_addr,
		  .metavar = "ADDR",
		  .help = "address to serve on: host:port, [v6]:port, or :port for all" },
		{ .name = "workspace",
		  .type = SBX_OPT_STRING,
		  .dest = &workspace,
		  .metavar = "DIR",
		  .help = "default working directory (default: the home folder)",
		  .env = "WORKSPACE" },
		{ .name = "max-body-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_body_bytes,
		  .metavar = "N",
		  .help = "largest request body",
		  .min = 1024,
		  .max = 1L << 34 },
		SBX_HTTP_FLAG_OPTS(&http_flags),
		{ .name = "max-file-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_file_bytes,
		  .metavar = "N",
		  .help = "largest file that /v1/file/read and write carry as JSON",
		  .min = 1024,
		  .max = 1L << 32 },
		{ .name = "max-upload-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_upload_bytes,
		  .metavar = "N",
		  .help = "largest /v1/file/upload body (streamed to disk, not held in memory)",
		  .min = 1024,
		  .max = 1L << 40 },
		{ .name = "max-walk-seconds",
		  .type = SBX_OPT_INT,
		  .dest = &max_walk_seconds,
		  .metavar = "S",
		  .help = "list, find, glob and grep stop after this long (answering what they found)",
		  .min = 1,
		  .max = 86400 },
		{ .name = "observe-dir",
		  .type = SBX_OPT_STRING,
		  .dest = &observe_dir,
		  .metavar = "DIR",
		  .help = "observation sessions and reports (default: ~/.sbx/observe)" },
		{ .name = "forward-proxy",
		  .type = SBX_OPT_STRING,
		  .dest = &forward_proxy_addr,
		  .metavar = "ADDR",
		  .help = "loopback address of the sandbox's forward proxy (default 127.0.0.1:0, "
			  "a free port; /v1/proxy configures it)" },
		{ .name = "proxy-state",
		  .type = SBX_OPT_STRING,
		  .dest = &proxy_state,
		  .metavar = "FILE",
		  .help = "where the forward proxy's mappings, excludes and upstream are kept "
			  "(default: ~/.sbx/proxy.json)" },
		{ .name = "upstream-proxy",
		  .type = SBX_OPT_STRING,
		  .dest = &upstream_proxy,
		  .metavar = "SERVER",
		  .help = "the forward proxy's upstream at a first start (host:port, "
			  "user:pass@host:port; the saved configuration wins once there is one)",
		  .env = "PROXY_SERVER" },
		{ .name = "proxy-exclude",
		  .type = SBX_OPT_LIST,
		  .dest = &proxy_excludes,
		  .metavar = "PATTERN",
		  .help = "hosts that bypass the upstream at a first start (repeat: .example.com, "
			  "*.example.com, a host, a CIDR block)",
		  .env = "PROXY_EXCLUDE" },
		{ .name = "skills-dir",
		  .type = SBX_OPT_STRING,
		  .dest = &skills_dir,
		  .metavar = "DIR",
		  .help = "where uploaded skill zips are unpacked (default: ~/.sbx/skills)" },
		{ .name = "tls-cert",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_cert,
		  .metavar = "FILE",
		  .help = "serve TLS (HTTP/2 by ALPN) with this certificate chain (PEM)" },
		{ .name = "tls-key",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_key,
		  .metavar = "FILE",
		  .help = "the TLS certificate's private key (PEM)" },
		{ .name = "shutdown-hook",
		  .type = SBX_OPT_STRING,
		  .dest = &shutdown_hook,
		  .metavar = "COMMAND",
		  .help = "a shell command run on stop, before sessions close (the hook \"env\", "
			  "priority 100, 10 s)" },
		{ .name = "cdp",
		  .type = SBX_OPT_STRING,
		  .dest = &cdp_addr,
		  .metavar = "ADDR",
		  .help = "IP:port of a Chromium's DevTools (--remote-debugging-port): serves "
			  "/v1/browser and /cdp" },
		{ .name = "browser-cmd",
		  .type = SBX_OPT_STRING,
		  .dest = &browser_cmd,
		  .metavar = "COMMAND",
		  .help = "start the browser with this shell command (its DevTools at --cdp); "
			  "POST /v1/browser/restart can then restart it" },
		{ .name = "browser-width",
		  .type = SBX_OPT_INT,
		  .dest = &browser_width,
		  .metavar = "PX",
		  .help = "display width reported by /v1/browser/info",
		  .min = 1,
		  .max = 16384 },
		{ .name = "browser-height",
		  .type = SBX_OPT_INT,
		  .dest = &browser_height,
		  .metavar = "PX",
		  .help = "display height reported by /v1/browser/info",
		  .min = 1,
		  .max = 16384 },
		{ .name = "jwt-public-key",
		  .type = SBX_OPT_STRING,
		  .dest = &jwt_public_key,
		  .metavar = "KEY",
		  .help = "RSA public key (base64 of the PEM, or the PEM): require RS256 bearer JWTs",
		  .env = "JWT_PUBLIC_KEY" },
		{ .name = "api-key",
		  .type = SBX_OPT_STRING,
		  .dest = &api_key,
		  .metavar = "KEY",
		  .help = "a static key accepted as bearer token or X-API-Key header",
		  .env = "SANDBOX_API_KEY" },
		{ .name = "ticket-ttl-seconds",
		  .type = SBX_OPT_INT,
		  .dest = &ticket_ttl_s,
		  .metavar = "S",
		  .help = "lifetime of a single-use ticket from POST /tickets",
		  .min = 1,
		  .max = 3600,
		  .env = "TICKET_TTL_SECONDS" },
		{ .name = "stop-grace-ms",
		  .type = SBX_OPT_INT,
		  .dest = &grace_ms,
		  .metavar = "MS",
		  .help = "run mode: how long the API may take to stop after the command ends",
		  .min = 0,
		  .max = 600000 },
		{ .name = "max-sessions",
		  .type = SBX_OPT_INT,
		  .dest = &max_sessions,
		  .metavar = "N",
		  .help = "shell sessions open at once",
		  .min = 1,
		  .max = 10000 },
		{ .name = "max-output-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_output_bytes,
		  .metavar = "N",
		  .help = "output kept per shell command (the rest is dropped, and said so)",
		  .min = 4096,
		  .max = 1L << 30 },
	};
	struct sbx_config cfg = {
		.program = "sbx-agent",
		.summary =
			"serves the AIO Sandbox /v1 API inside a sandbox. With 'run -- CMD ARGS' it\n"
			"also runs the command as the sandbox's main process (signals forwarded,\n"
			"orphans reaped) and exits with its status. 'install DIR' copies the agent's\n"
			"self-contained folder (binary, libraries, loader) into DIR and exits: the\n"
			"init container of a sandbox pod does this.",
		.usage = "[run [--] CMD [ARG...] | install DIR]",
		.env_prefix = "SBX_AGENT_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	char **cmd = NULL;
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	/* [run [--] CMD ARGS...]: without a command the agent runs alone. */
	if (cfg.argi < argc && strcmp(argv[cfg.argi], "install") == 0) {
		if (cfg.argi + 2 != argc) {
			fprintf(stderr, "sbx-agent: install wants one folder (see --help)\n");
			rc = 2;
		} else {
			rc = install_bundle(argv[0], argv[cfg.argi + 1]) ? 1 : 0;
		}
		sbx_config_release(&cfg);
		return rc;
	}
	if (cfg.argi < argc) {
		if (strcmp(argv[cfg.argi], "run") != 0) {
			fprintf(stderr, "sbx-agent: unexpected argument '%s' (see --help)\n",
				argv[cfg.argi]);
			sbx_config_release(&cfg);
			return 2;
		}
		cmd = argv + cfg.argi + 1;
		if (*cmd && strcmp(*cmd, "--") == 0)
			cmd++;
		if (!*cmd)
			cmd = NULL;
	}
	sbx_alloc_install_jansson();
	rc = cmd ? supervisor_run(cmd, serve, NULL, (unsigned)grace_ms) : serve(NULL);
	sbx_config_release(&cfg);
	return rc;
}
