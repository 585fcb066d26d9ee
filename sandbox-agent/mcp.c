/* MCP over streamable HTTP (see mcp.h). */
#include "mcp.h"

#include "api.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SERVER_NAME    "sandbox"
#define LATEST_VERSION "2025-11-25"

/* JSON-RPC error codes */
#define PARSE_ERROR	 -32700
#define INVALID_REQUEST	 -32600
#define METHOD_NOT_FOUND -32601
#define INVALID_PARAMS	 -32602

static const char *const versions[] = { "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25" };

/* ---- the tools ---------------------------------------------------------------- */

struct tool {
	const char *name;
	const char *description;
	const char *schema; /* JSON Schema of the arguments */
	/* The internal request for args: method, target, JSON body (owned). */
	int (*build)(const struct tool *t, const json_t *args, const char **method, char *target,
		     size_t size, json_t **body, char *err, size_t err_size);
	/* The text a model reads from the operation's data. */
	void (*text)(const json_t *data, struct sbx_buf *out);
	/* For the browser's tools: the operation, and the arguments it takes. */
	const char *method, *target;
	const char *const *fields;
};

static void copy_fields(json_t *dst, const json_t *args, const char *const *names)
{
	for (; *names; names++) {
		json_t *v = json_object_get(args, *names);

		if (v && !json_is_null(v))
			json_object_set(dst, *names, v);
	}
}

static int build_bash(const struct tool *t, const json_t *args, const char **method, char *target,
		      size_t size, json_t **body, char *err, size_t err_size)
{
	static const char *const fields[] = { "command",      "exec_dir",   "timeout",
					      "hard_timeout", "session_id", NULL };

	*method = "POST";
	snprintf(target, size, "/v1/shell/exec");
	*body = json_object();
	copy_fields(*body, args, fields);
	/* The tool's session_id is the shell's "id". */
	if (json_object_get(*body, "session_id")) {
		json_object_set(*body, "id", json_object_get(*body, "session_id"));
		json_object_del(*body, "session_id");
	}
	return 0;
}

static void text_bash(const json_t *data, struct sbx_buf *out)
{
	json_t *code = json_object_get(data, "exit_code");

	sbx_buf_append_str(out, sbx_json_str(data, "output") ?: "");
	if (json_is_integer(code))
		sbx_buf_printf(out, "%s[exit code %lld]", out->len ? "\n" : "",
			       (long long)json_integer_value(code));
	else
		sbx_buf_printf(out, "%s[%s; session %s]", out->len ? "\n" : "",
			       sbx_json_str(data, "status") ?: "running",
			       sbx_json_str(data, "session_id") ?: "");
}

static int build_code(const struct tool *t, const json_t *args, const char **method, char *target,
		      size_t size, json_t **body, char *err, size_t err_size)
{
	static const char *const fields[] = { "code",	    "language", "timeout", "cwd",
					      "session_id", "stateful", NULL };

	*method = "POST";
	snprintf(target, size, "/v1/code/execute");
	*body = json_object();
	copy_fields(*body, args, fields);
	if (!json_object_get(*body, "language"))
		json_object_set_new(*body, "language", json_string("python"));
	return 0;
}

static void text_code(const json_t *data, struct sbx_buf *out)
{
	const char *so = sbx_json_str(data, "stdout"), *se = sbx_json_str(data, "stderr");
	json_t *tb = json_object_get(data, "traceback"), *line;
	size_t i;

	sbx_buf_append_str(out, so ? so : "");
	if (se && *se)
		sbx_buf_printf(out, "%s[stderr]\n%s", out->len ? "\n" : "", se);
	if (json_is_array(tb) && json_array_size(tb) && !(se && strstr(se, "Traceback"))) {
		sbx_buf_append_str(out, out->len ? "\n" : "");
		json_array_foreach(tb, i, line)
			sbx_buf_printf(out, "%s\n", json_string_value(line) ?: "");
	}
	sbx_buf_printf(out, "%s[status %s]", out->len ? "\n" : "",
		       sbx_json_str(data, "status") ?: "unknown");
}

/* sandbox_file_operations: one tool for the plain file operations, chosen
 * by action; the arguments are those of the matching /v1/file endpoint, with
 * "path" standing for "file" where that endpoint says file. */
static int build_file(const struct tool *t, const json_t *args, const char **method, char *target,
		      size_t size, json_t **body, char *err, size_t err_size)
{
	static const char *const actions[] = { "read", "write",	 "list",    "find", "glob",
					       "grep", "search", "replace", NULL };
	const char *action = sbx_json_str(args, "action");
	const char *path = sbx_json_str(args, "path");
	const char *key;
	json_t *v;
	bool known = false;

	for (const char *const *a = actions; action && *a; a++)
		known = known || strcmp(*a, action) == 0;
	if (!known) {
		snprintf(err, err_size,
			 "action must be one of read, write, list, find, glob, grep, search, "
			 "replace");
		return -EINVAL;
	}
	*method = "POST";
	snprintf(target, size, "/v1/file/%s", action);
	*body = json_object();
	json_object_foreach((json_t *)args, key, v)
	{
		if (strcmp(key, "action") != 0 && strcmp(key, "path") != 0)
			json_object_set(*body, key, v);
	}
	if (path) {
		bool file_key = strcmp(action, "read") == 0 || strcmp(action, "write") == 0 ||
				strcmp(action, "search") == 0 || strcmp(action, "replace") == 0;

		json_object_set_new(*body, file_key ? "file" : "path", json_string(path));
	}
	return 0;
}

static void text_json(const json_t *data, struct sbx_buf *out)
{
	sbx_json_dump_buf(data, out);
}

static void text_file(const json_t *data, struct sbx_buf *out)
{
	const char *content = sbx_json_str(data, "content");

	if (content && !json_object_get(data, "error_type")) /* a read: the text itself */
		sbx_buf_append_str(out, content);
	else
		text_json(data, out);
}

static int build_editor(const struct tool *t, const json_t *args, const char **method, char *target,
			size_t size, json_t **body, char *err, size_t err_size)
{
	*method = "POST";
	snprintf(target, size, "/v1/file/str_replace_editor");
	*body = json_deep_copy(args);
	return *body ? 0 : -ENOMEM;
}

static void text_editor(const json_t *data, struct sbx_buf *out)
{
	const char *o = sbx_json_str(data, "output");

	if (o)
		sbx_buf_append_str(out, o);
	else
		text_json(data, out);
}

/* The browser's tools: the operation named in the table, with the
 * arguments it takes (a screenshot's full_page goes in the query). */
static int build_browser(const struct tool *t, const json_t *args, const char **method,
			 char *target, size_t size, json_t **body, char *err, size_t err_size)
{
	*method = t->method;
	snprintf(target, size, "%s%s", t->target,
		 json_is_true(json_object_get(args, "full_page")) ? "?full_page=true" : "");
	*body = json_object();
	if (t->fields)
		copy_fields(*body, args, t->fields);
	return *body ? 0 : -ENOMEM;
}

/* A page's text is the text itself; anything else, its JSON. */
static void text_browser(const json_t *data, struct sbx_buf *out)
{
	if (json_is_string(data))
		sbx_buf_append_str(out, json_string_value(data));
	else
		text_json(data, out);
}

static const char *const f_navigate[] = { "url", "wait_until", "timeout", NULL };
static const char *const f_click[] = {
	"selector", "index", "x", "y", "button", "click_count", NULL
};
static const char *const f_fill[] = { "selector", "index", "text", NULL };
static const char *const f_text[] = { "text", NULL };
static const char *const f_key[] = { "key", NULL };
static const char *const f_hover[] = { "selector", "x", "y", NULL };
static const char *const f_select[] = { "selector", "value", "label", "index", NULL };
static const char *const f_scroll[] = { "direction", "amount", NULL };
static const char *const f_eval[] = { "expression", NULL };
static const char *const f_wait[] = { "type",	     "selector",   "state",   "url",
				      "url_pattern", "expression", "timeout", NULL };
static const char *const f_url[] = { "url", NULL };

#define ELEMENT_PROPS                                                            \
	"\"selector\":{\"type\":\"string\",\"description\":\"a CSS selector\"}," \
	"\"index\":{\"type\":\"integer\",\"description\":\"an index from "       \
	"browser_get_elements\"},"

static const struct tool tools[] = {
	{ "sandbox_execute_bash",
	  "Run a bash command in the sandbox and return its output and exit code. A session "
	  "(session_id) keeps its working directory and exported variables between calls.",
	  "{\"type\":\"object\",\"properties\":{"
	  "\"command\":{\"type\":\"string\",\"description\":\"the command line\"},"
	  "\"exec_dir\":{\"type\":\"string\",\"description\":\"absolute directory to run in\"},"
	  "\"session_id\":{\"type\":\"string\",\"description\":\"shell session to run in\"},"
	  "\"timeout\":{\"type\":\"number\",\"description\":\"seconds to wait for output\"},"
	  "\"hard_timeout\":{\"type\":\"number\",\"description\":\"seconds before the command "
	  "and everything it started are killed\"}},\"required\":[\"command\"]}",
	  build_bash, text_bash, NULL, NULL, NULL },
	{ "sandbox_execute_code",
	  "Run Python or JavaScript code and return what it printed (and a Python traceback). "
	  "With stateful and a session_id, variables survive between calls.",
	  "{\"type\":\"object\",\"properties\":{"
	  "\"code\":{\"type\":\"string\"},"
	  "\"language\":{\"type\":\"string\",\"enum\":[\"python\",\"javascript\"],"
	  "\"default\":\"python\"},"
	  "\"timeout\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":300},"
	  "\"cwd\":{\"type\":\"string\"},"
	  "\"stateful\":{\"type\":\"boolean\"},"
	  "\"session_id\":{\"type\":\"string\"}},\"required\":[\"code\"]}",
	  build_code, text_code, NULL, NULL, NULL },
	{ "sandbox_file_operations",
	  "Read, write, list, find, glob, grep, search or replace in files. Relative paths "
	  "are in the workspace.",
	  "{\"type\":\"object\",\"properties\":{"
	  "\"action\":{\"type\":\"string\",\"enum\":[\"read\",\"write\",\"list\",\"find\","
	  "\"glob\",\"grep\",\"search\",\"replace\"]},"
	  "\"path\":{\"type\":\"string\",\"description\":\"file or folder\"},"
	  "\"content\":{\"type\":\"string\",\"description\":\"write: the new content\"},"
	  "\"append\":{\"type\":\"boolean\"},"
	  "\"encoding\":{\"type\":\"string\",\"enum\":[\"utf-8\",\"base64\"]},"
	  "\"start_line\":{\"type\":\"integer\"},\"end_line\":{\"type\":\"integer\"},"
	  "\"recursive\":{\"type\":\"boolean\"},"
	  "\"pattern\":{\"type\":\"string\",\"description\":\"find, glob, grep: what to "
	  "match\"},"
	  "\"regex\":{\"type\":\"string\",\"description\":\"search: a regular expression\"},"
	  "\"old_str\":{\"type\":\"string\"},\"new_str\":{\"type\":\"string\"}},"
	  "\"required\":[\"action\",\"path\"]}",
	  build_file, text_file, NULL, NULL, NULL },
	{ "sandbox_str_replace_editor",
	  "View, create and edit text files: view (with view_range), create (file_text), "
	  "str_replace (old_str must be unique), insert (after insert_line), undo_edit.",
	  "{\"type\":\"object\",\"properties\":{"
	  "\"command\":{\"type\":\"string\",\"enum\":[\"view\",\"create\",\"str_replace\","
	  "\"insert\",\"undo_edit\"]},"
	  "\"path\":{\"type\":\"string\"},"
	  "\"file_text\":{\"type\":\"string\"},"
	  "\"old_str\":{\"type\":\"string\"},\"new_str\":{\"type\":\"string\"},"
	  "\"insert_line\":{\"type\":\"integer\"},"
	  "\"view_range\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}},"
	  "\"required\":[\"command\",\"path\"]}",
	  build_editor, text_editor, NULL, NULL, NULL },
	{ "browser_navigate", "Open a URL in the browser's active tab and wait for it to load.",
	  "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"},"
	  "\"wait_until\":{\"type\":\"string\",\"enum\":[\"load\",\"domcontentloaded\","
	  "\"networkidle\",\"commit\"]},\"timeout\":{\"type\":\"number\"}},"
	  "\"required\":[\"url\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/navigate", f_navigate },
	{ "browser_go_back", "Go back in the active tab's history.",
	  "{\"type\":\"object\",\"properties\":{}}", build_browser, text_browser, "POST",
	  "/v1/browser/page/back", NULL },
	{ "browser_click",
	  "Click an element (a CSS selector, or an index from browser_get_elements) or a point.",
	  "{\"type\":\"object\",\"properties\":{" ELEMENT_PROPS
	  "\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"number\"},"
	  "\"button\":{\"type\":\"string\",\"enum\":[\"left\",\"right\",\"middle\"]},"
	  "\"click_count\":{\"type\":\"integer\"}}}",
	  build_browser, text_browser, "POST", "/v1/browser/page/click", f_click },
	{ "browser_fill", "Replace the text of an input (a CSS selector, or an index).",
	  "{\"type\":\"object\",\"properties\":{" ELEMENT_PROPS
	  "\"text\":{\"type\":\"string\"}},\"required\":[\"text\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/fill", f_fill },
	{ "browser_type", "Type text into the focused element.",
	  "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"}},"
	  "\"required\":[\"text\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/type", f_text },
	{ "browser_press_key", "Press a key: Enter, Tab, Escape, Backspace, an arrow, a character.",
	  "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"}},"
	  "\"required\":[\"key\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/press_key", f_key },
	{ "browser_hover", "Move the mouse over an element or a point.",
	  "{\"type\":\"object\",\"properties\":{\"selector\":{\"type\":\"string\"},"
	  "\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"number\"}}}",
	  build_browser, text_browser, "POST", "/v1/browser/page/hover", f_hover },
	{ "browser_select_option", "Choose an option of a select element by value, label or index.",
	  "{\"type\":\"object\",\"properties\":{\"selector\":{\"type\":\"string\"},"
	  "\"value\":{\"type\":\"string\"},\"label\":{\"type\":\"string\"},"
	  "\"index\":{\"type\":\"integer\"}},\"required\":[\"selector\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/select_option", f_select },
	{ "browser_scroll", "Scroll the page by an amount of pixels in a direction.",
	  "{\"type\":\"object\",\"properties\":{\"direction\":{\"type\":\"string\","
	  "\"enum\":[\"up\",\"down\",\"left\",\"right\"]},\"amount\":{\"type\":\"integer\"}}}",
	  build_browser, text_browser, "POST", "/v1/browser/page/scroll", f_scroll },
	{ "browser_get_text", "The visible text of the active tab.",
	  "{\"type\":\"object\",\"properties\":{}}", build_browser, text_browser, "GET",
	  "/v1/browser/page/text", NULL },
	{ "browser_get_elements",
	  "The interactive elements of the active tab, with the indexes click and fill take.",
	  "{\"type\":\"object\",\"properties\":{}}", build_browser, text_browser, "GET",
	  "/v1/browser/page/elements", NULL },
	{ "browser_evaluate", "Evaluate a JavaScript expression in the active tab.",
	  "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\"}},"
	  "\"required\":[\"expression\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/evaluate", f_eval },
	{ "browser_wait",
	  "Wait for a load, a selector, a URL, a function, the network to settle, or a time.",
	  "{\"type\":\"object\",\"properties\":{\"type\":{\"type\":\"string\",\"enum\":["
	  "\"load\",\"selector\",\"url\",\"function\",\"network_idle\",\"request\","
	  "\"response\",\"timeout\"]},\"selector\":{\"type\":\"string\"},"
	  "\"state\":{\"type\":\"string\"},\"url\":{\"type\":\"string\"},"
	  "\"url_pattern\":{\"type\":\"string\"},\"expression\":{\"type\":\"string\"},"
	  "\"timeout\":{\"type\":\"number\"}},\"required\":[\"type\"]}",
	  build_browser, text_browser, "POST", "/v1/browser/page/wait", f_wait },
	{ "browser_screenshot", "A picture of the active tab (PNG), or of the whole page.",
	  "{\"type\":\"object\",\"properties\":{\"full_page\":{\"type\":\"boolean\"}}}",
	  build_browser, text_browser, "GET", "/v1/browser/page/screenshot", NULL },
	{ "browser_tabs", "The browser's tabs, and which one is active.",
	  "{\"type\":\"object\",\"properties\":{}}", build_browser, text_browser, "GET",
	  "/v1/browser/tabs", NULL },
	{ "browser_new_tab", "Open a tab (at a URL) and make it the active one.",
	  "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"}}}", build_browser,
	  text_browser, "POST", "/v1/browser/tabs", f_url },
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

static const struct tool *tool_find(const char *name)
{
	for (size_t i = 0; name && i < N_TOOLS; i++)
		if (strcmp(tools[i].name, name) == 0)
			return &tools[i];
	return NULL;
}

/* The tools as tools/list gives them, schemas parsed (once, at start). */
static json_t *tool_list_build(void)
{
	json_t *list = json_array();

	for (size_t i = 0; i < N_TOOLS; i++) {
		json_error_t e;
		json_t *schema = json_loads(tools[i].schema, 0, &e);

		json_array_append_new(list,
				      json_pack("{s:s, s:s, s:o}", "name", tools[i].name,
						"description", tools[i].description, "inputSchema",
						schema ? schema : json_object()));
	}
	return list;
}

/* Checks args against the schema's required and property types. */
static bool args_valid(const struct mcp *m, const struct tool *t, const json_t *args, char *err,
		       size_t size)
{
	json_t *schema =
		json_object_get(json_array_get(m->tools, (size_t)(t - tools)), "inputSchema");
	json_t *props, *req, *v, *spec;
	const char *key;
	size_t i;
	bool ok = true;

	if (!json_is_object(args)) {
		snprintf(err, size, "arguments must be an object");
		return false;
	}
	req = json_object_get(schema, "required");
	json_array_foreach(req, i, v)
	{
		if (ok && !json_object_get(args, json_string_value(v))) {
			snprintf(err, size, "missing required argument '%s'", json_string_value(v));
			ok = false;
		}
	}
	props = json_object_get(schema, "properties");
	json_object_foreach((json_t *)args, key, v)
	{
		const char *type;
		bool match;

		if (!ok || !(spec = json_object_get(props, key)) || json_is_null(v))
			continue;
		type = json_string_value(json_object_get(spec, "type"));
		match = !type || (strcmp(type, "string") == 0 && json_is_string(v)) ||
			(strcmp(type, "integer") == 0 && json_is_integer(v)) ||
			(strcmp(type, "number") == 0 && json_is_number(v)) ||
			(strcmp(type, "boolean") == 0 && json_is_boolean(v)) ||
			(strcmp(type, "array") == 0 && json_is_array(v)) ||
			(strcmp(type, "object") == 0 && json_is_object(v));
		if (!match) {
			snprintf(err, size, "argument '%s' must be of type %s", key, type);
			ok = false;
		}
	}
	return ok;
}

/* ---- running a tool ------------------------------------------------------------ */

struct exchange; /* one POST /mcp */

struct tool_run {
	const struct tool *tool;
	struct exchange *ex;	  /* NULL for the REST wrapper */
	struct sbx_http_req *req; /* the REST wrapper's request (NULL once gone) */
	json_t *id;		  /* the JSON-RPC id */
};

/* CallToolResult from the internal answer. */
static json_t *tool_result(const struct tool *t, int status, const char *content_type,
			   const char *body, size_t len)
{
	char err[160];
	json_t *env, *data;
	struct sbx_buf text;
	bool ok;
	json_t *res;

	if (status == 200 && content_type && strncmp(content_type, "image/", 6) == 0) {
		char *b64 = NULL;
		size_t n;

		if (sbx_base64_encode(body, len, &b64, &n))
			return NULL;
		res = json_pack("{s:[{s:s, s:s, s:s}], s:b}", "content", "type", "image", "data",
				b64, "mimeType", content_type, "isError", 0);
		sbx_free(b64);
		return res;
	}
	env = sbx_json_loadb(body, len, len + 1, err, sizeof(err));

	sbx_buf_init(&text, 64u << 20);
	data = json_object_get(env, "data");
	ok = status == 200 && json_is_true(json_object_get(env, "success"));
	if (status == 422) {
		/* FastAPI's validation detail: say which argument and why. */
		json_t *d = json_array_get(json_object_get(env, "detail"), 0);
		json_t *loc = json_object_get(d, "loc");

		sbx_buf_printf(&text, "invalid arguments: %s: %s",
			       json_string_value(json_array_get(loc, json_array_size(loc) - 1))
				       ?: "body",
			       sbx_json_str(d, "msg") ?: "invalid");
	} else if (!env) {
		sbx_buf_printf(&text, "the operation answered HTTP %d", status);
	} else if ((ok && data && !json_is_null(data)) ||
		   (json_is_object(data) && !sbx_json_str(env, "message"))) {
		t->text(data, &text);
	} else {
		const char *msg = sbx_json_str(env, "message");
		const char *emsg = sbx_json_str(env, "error.message");

		sbx_buf_printf(&text, "%s", msg ? msg : emsg ? emsg : "the operation failed");
		if (json_is_object(data) && sbx_json_str(data, "error_type"))
			sbx_buf_printf(&text, " (%s)", sbx_json_str(data, "error_type"));
	}
	res = json_pack("{s:[{s:s, s:s%}], s:b}", "content", "type", "text", "text",
			text.data ? text.data : "", text.len, "isError", !ok);
	if (res && json_is_object(data))
		json_object_set(res, "structuredContent", data);
	if (!res) /* text that is not UTF-8 */
		res = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text",
				"(output that is not UTF-8)", "isError", !ok);
	sbx_buf_release(&text);
	json_decref(env);
	return res;
}

/* ---- the JSON-RPC exchange -------------------------------------------------------- */

struct exchange {
	struct mcp *m;
	struct sbx_http_req *req; /* NULL once the client has gone */
	json_t *replies;	  /* responses, in request order */
	bool batch;
	int pending; /* tool calls still running */
	char session[40];
};

static json_t *rpc_result(json_t *id, json_t *result)
{
	return json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
			 result);
}

static json_t *rpc_error(json_t *id, int code, const char *message)
{
	return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
			 "error", "code", code, "message", message);
}

static void exchange_free(struct exchange *ex)
{
	json_decref(ex->replies);
	sbx_free(ex);
}

static void exchange_gone(struct sbx_http_req *req, void *arg)
{
	struct exchange *ex = arg;

	ex->req = NULL;
	if (!ex->pending)
		exchange_free(ex);
}

/* Answers once every reply is in. */
static void exchange_answer(struct exchange *ex)
{
	if (ex->pending)
		return;
	if (ex->req) {
		sbx_http_on_abort(ex->req, NULL, NULL);
		if (ex->session[0])
			sbx_http_add_header(ex->req, "Mcp-Session-Id", ex->session);
		if (!json_array_size(ex->replies))
			sbx_http_respond(ex->req, 202, NULL, "", 0); /* notifications only */
		else
			sbx_http_respond_json(ex->req, 200,
					      ex->batch ? ex->replies
							: json_array_get(ex->replies, 0));
	}
	exchange_free(ex);
}

static void tool_done(int status, const char *content_type, const char *body, size_t len, void *arg)
{
	struct tool_run *run = arg;
	json_t *res = tool_result(run->tool, status, content_type, body, len);

	if (run->ex) {
		json_t *slot = json_array_get(run->ex->replies, 0);
		size_t i;

		/* Fill this call's place in the replies. */
		json_array_foreach(run->ex->replies, i, slot)
		{
			if (json_is_null(json_object_get(slot, "result")) &&
			    json_equal(json_object_get(slot, "id"), run->id)) {
				json_object_set_new(slot, "result",
						    res ? json_incref(res) : json_object());
				break;
			}
		}
		run->ex->pending--;
		exchange_answer(run->ex);
	} else if (run->req) {
		sbx_http_on_abort(run->req, NULL, NULL);
		api_ok(run->req, "Tool executed", res ? json_incref(res) : NULL);
	}
	json_decref(res);
	json_decref(run->id);
	sbx_free(run);
}

static void rest_gone(struct sbx_http_req *req, void *arg)
{
	((struct tool_run *)arg)->req = NULL;
}

/* Starts t on args. err set (and NULL returned) for invalid arguments. */
static int tool_start(struct mcp *m, const struct tool *t, const json_t *args, struct tool_run *run,
		      char *err, size_t err_size)
{
	char target[128];
	const char *method;
	json_t *body = NULL;
	char *text;
	int rc;

	if (!args_valid(m, t, args, err, err_size))
		return -EINVAL;
	if ((rc = t->build(t, args, &method, target, sizeof(target), &body, err, err_size)))
		return rc;
	text = sbx_json_dumps(body);
	json_decref(body);
	if (!text) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	rc = sbx_http_call(m->http, method, target, "application/json", text, strlen(text),
			   tool_done, run);
	sbx_free(text);
	if (rc)
		snprintf(err, err_size, "out of memory");
	return rc;
}

static const char *negotiate(const char *asked)
{
	for (size_t i = 0; asked && i < sizeof(versions) / sizeof(versions[0]); i++)
		if (strcmp(versions[i], asked) == 0)
			return versions[i];
	return LATEST_VERSION;
}

/* One message of the exchange. Requests leave a reply (or a placeholder a
 * tool call fills); notifications and responses leave nothing. */
static void handle_message(struct exchange *ex, json_t *msg)
{
	json_t *id = json_object_get(msg, "id"), *params = json_object_get(msg, "params");
	const char *method = sbx_json_str(msg, "method");
	char err[192];

	if (!json_is_object(msg) || strcmp(sbx_json_str(msg, "jsonrpc") ?: "", "2.0") != 0 ||
	    (!method && !json_object_get(msg, "result") && !json_object_get(msg, "error"))) {
		json_array_append_new(ex->replies,
				      rpc_error(id, INVALID_REQUEST, "not a JSON-RPC 2.0 message"));
		return;
	}
	if (!method || !id)
		return; /* a response, or a notification ("notifications/initialized") */
	if (strcmp(method, "initialize") == 0) {
		const char *asked = sbx_json_str(params, "protocolVersion");
		json_t *res;

		if (!ex->session[0]) {
			/* At the session limit the exchange goes on statelessly. */
			sbx_random_hex(ex->session, 16);
			if (sbx_map_put(&ex->m->sessions, ex->session, (void *)1, NULL))
				ex->session[0] = '\0';
		}
		res = json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion",
				negotiate(asked), "capabilities", "tools", "listChanged", 0,
				"serverInfo", "name", "sbx-agent", "version", ex->m->version,
				"instructions",
				"Tools that act inside this sandbox: run bash commands and code, "
				"read and write files, and edit text files.");
		json_array_append_new(ex->replies, rpc_result(id, res));
		json_decref(res);
	} else if (strcmp(method, "ping") == 0) {
		json_t *res = json_object();

		json_array_append_new(ex->replies, rpc_result(id, res));
		json_decref(res);
	} else if (strcmp(method, "tools/list") == 0) {
		json_t *res = json_pack("{s:O}", "tools", ex->m->tools);

		json_array_append_new(ex->replies, rpc_result(id, res));
		json_decref(res);
	} else if (strcmp(method, "tools/call") == 0) {
		const struct tool *t = tool_find(sbx_json_str(params, "name"));
		json_t *args = json_object_get(params, "arguments");
		struct tool_run *run;
		json_t *slot;

		if (!t) {
			snprintf(err, sizeof(err), "unknown tool '%.80s'",
				 sbx_json_str(params, "name") ?: "");
			json_array_append_new(ex->replies, rpc_error(id, INVALID_PARAMS, err));
			return;
		}
		run = sbx_calloc(1, sizeof(*run));
		if (!run) {
			json_array_append_new(ex->replies, rpc_error(id, -32603, "out of memory"));
			return;
		}
		run->tool = t;
		run->ex = ex;
		run->id = json_incref(id);
		slot = json_pack("{s:s, s:O, s:n}", "jsonrpc", "2.0", "id", id, "result");
		json_array_append_new(ex->replies, slot);
		ex->pending++;
		json_t *no_args = args ? NULL : json_object();
		int rc = tool_start(ex->m, t, args ? args : no_args, run, err, sizeof(err));

		json_decref(no_args);
		if (rc) {
			ex->pending--;
			json_object_del(slot, "result");
			json_object_set_new(
				slot, "error",
				json_pack("{s:i, s:s}", "code", INVALID_PARAMS, "message", err));
			json_decref(run->id);
			sbx_free(run);
		}
	} else {
		snprintf(err, sizeof(err), "method '%.80s' is not supported", method);
		json_array_append_new(ex->replies, rpc_error(id, METHOD_NOT_FOUND, err));
	}
}

static void rpc_http_error(struct sbx_http_req *req, int status, int code, const char *message)
{
	json_t *e = rpc_error(NULL, code, message);

	sbx_http_respond_json(req, status, e);
	json_decref(e);
}

void mcp_handle_post(struct sbx_http_req *req, void *arg)
{
	struct mcp *m = arg;
	const char *sid = sbx_http_header(req, "Mcp-Session-Id");
	const char *ctype = sbx_http_header(req, "Content-Type");
	struct exchange *ex;
	char err[160];
	bool too_large;
	json_t *body, *msg;
	size_t i;

	if (sid && !sbx_map_get(&m->sessions, sid)) {
		rpc_http_error(req, 404, INVALID_REQUEST,
			       "unknown or ended MCP session; initialize again");
		return;
	}
	if (!ctype || strncasecmp(ctype, "application/json", 16) != 0) {
		rpc_http_error(req, 415, INVALID_REQUEST, "Content-Type must be application/json");
		return;
	}
	body = sbx_http_body_json(req, err, sizeof(err), &too_large);
	if (!body) {
		rpc_http_error(req, too_large ? 413 : 400, PARSE_ERROR, err);
		return;
	}
	if (json_is_array(body) && !json_array_size(body)) {
		json_decref(body);
		rpc_http_error(req, 400, INVALID_REQUEST, "an empty batch");
		return;
	}
	ex = sbx_calloc(1, sizeof(*ex));
	if (!ex) {
		json_decref(body);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	ex->m = m;
	ex->req = req;
	ex->replies = json_array();
	ex->batch = json_is_array(body);
	ex->pending = 1; /* this function's own hold, released below */
	sbx_http_on_abort(req, exchange_gone, ex);
	if (ex->batch) {
		json_array_foreach(body, i, msg) handle_message(ex, msg);
	} else {
		handle_message(ex, body);
	}
	json_decref(body);
	ex->pending--;
	exchange_answer(ex);
}

void mcp_handle_delete(struct sbx_http_req *req, void *arg)
{
	struct mcp *m = arg;
	const char *sid = sbx_http_header(req, "Mcp-Session-Id");

	if (!sid) {
		sbx_http_respond_error(req, 400, "Mcp-Session-Id header required");
		return;
	}
	if (!sbx_map_remove(&m->sessions, sid)) {
		sbx_http_respond_error(req, 404, "unknown MCP session");
		return;
	}
	sbx_http_respond(req, 204, NULL, "", 0);
}

/* ---- REST wrappers ------------------------------------------------------------------ */

void mcp_handle_servers(struct sbx_http_req *req, void *arg)
{
	api_ok(req, "MCP servers", json_pack("[s]", SERVER_NAME));
}

static bool known_server(struct sbx_http_req *req)
{
	const char *name = sbx_http_param(req, "server_name");

	if (name && strcmp(name, SERVER_NAME) == 0)
		return true;
	api_fail(req, "unknown MCP server; this sandbox has 'sandbox'", NULL);
	return false;
}

void mcp_handle_tools(struct sbx_http_req *req, void *arg)
{
	if (known_server(req))
		api_ok(req, "MCP tools", json_pack("{s:O}", "tools", ((struct mcp *)arg)->tools));
}

void mcp_handle_tool_call(struct sbx_http_req *req, void *arg)
{
	struct mcp *m = arg;
	const struct tool *t;
	struct tool_run *run;
	char err[192];
	json_t *args;

	if (!known_server(req))
		return;
	if (!(t = tool_find(sbx_http_param(req, "tool_name")))) {
		api_fail(req, "unknown tool", NULL);
		return;
	}
	args = api_body_object_or_empty(req);
	if (!args)
		return;
	run = sbx_calloc(1, sizeof(*run));
	if (!run) {
		json_decref(args);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	run->tool = t;
	run->req = req;
	sbx_http_on_abort(req, rest_gone, run);
	if (tool_start(m, t, args, run, err, sizeof(err))) {
		sbx_http_on_abort(req, NULL, NULL);
		api_invalid(req, "body", err, "value_error");
		sbx_free(run);
	}
	json_decref(args);
}

void mcp_init(struct mcp *m, const char *version, unsigned max_sessions)
{
	memset(m, 0, sizeof(*m));
	m->version = version;
	m->tools = tool_list_build();
	sbx_map_init(&m->sessions, max_sessions);
}

void mcp_release(struct mcp *m)
{
	sbx_map_release(&m->sessions);
	json_decref(m->tools);
}
