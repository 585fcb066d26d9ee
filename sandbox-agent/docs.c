/* API description (see docs.h). */
#include "docs.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

/* "/v1/shell/exec" -> tag "shell"; "/healthz" -> "operations". */
static void tag_of(const char *path, char *out, size_t size)
{
	if (strncmp(path, "/v1/", 4) == 0) {
		size_t n = strcspn(path + 4, "/");

		snprintf(out, size, "%.*s", (int)n, path + 4);
	} else {
		snprintf(out, size, "operations");
	}
}

/* "post" + "/v1/shell/sessions/{session_id}" -> "post_v1_shell_sessions_session_id" */
static void operation_id(const char *method, const char *path, char *out, size_t size)
{
	size_t o = (size_t)snprintf(out, size, "%s", method);

	for (const char *p = path; *p && o + 1 < size; p++) {
		char ch = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';

		if (ch == '_' && out[o - 1] == '_')
			continue;
		out[o++] = ch;
	}
	while (o > 0 && out[o - 1] == '_')
		o--;
	out[o] = '\0';
	/* A trailing slash is its own operation ("_slash"), a trailing star "_any". */
	if (path[0] && path[strlen(path) - 1] == '/')
		snprintf(out + o, size - o, "_slash");
	else if (path[0] && path[strlen(path) - 1] == '*')
		snprintf(out + o, size - o, "_any");
}

static json_t *operation(const struct sbx_http_route *r, const char *method)
{
	char tag[32], id[160];
	json_t *params = json_array(), *op;

	tag_of(r->pattern, tag, sizeof(tag));
	operation_id(method, r->pattern, id, sizeof(id));
	for (const char *p = strchr(r->pattern, '{'); p; p = strchr(p + 1, '{')) {
		size_t n = strcspn(p + 1, "}");

		json_array_append_new(params,
				      json_pack("{s:s%, s:s, s:b, s:{s:s}}", "name", p + 1, n, "in",
						"path", "required", 1, "schema", "type", "string"));
	}
	op = json_pack("{s:s, s:s, s:[s], s:o, s:{s:{s:s}}}", "summary",
		       r->summary ? r->summary : "", "operationId", id, "tags", tag, "parameters",
		       params, "responses", "200", "description",
		       "the AIO envelope {success, message, data, hint}");
	if (strcmp(method, "post") == 0)
		json_object_set_new(op, "requestBody",
				    json_pack("{s:b, s:{s:{s:{s:s}}}}", "required", 0, "content",
					      "application/json", "schema", "type", "object"));
	if (r->public)
		json_object_set_new(op, "security", json_array());
	return op;
}

static void html_escape(struct sbx_buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			sbx_buf_append_str(b, "&lt;");
			break;
		case '>':
			sbx_buf_append_str(b, "&gt;");
			break;
		case '&':
			sbx_buf_append_str(b, "&amp;");
			break;
		case '"':
			sbx_buf_append_str(b, "&quot;");
			break;
		default:
			sbx_buf_append(b, s, 1);
		}
	}
}

static int build_html(struct docs *d, const struct sbx_http_route *routes, size_t n,
		      const char *version)
{
	struct sbx_buf b;

	sbx_buf_init(&b, 1u << 20);
	sbx_buf_append_str(
		&b, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sbx-agent API"
		    "</title>\n<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em "
		    "1em;text-align:left}code{font-size:1.05em}</style></head><body>\n");
	sbx_buf_append_str(&b, "<h1>sbx-agent ");
	html_escape(&b, version);
	sbx_buf_append_str(
		&b, "</h1>\n<p>The AIO Sandbox <code>/v1</code> API as this agent serves it. "
		    "Machine-readable: <a href=\"/v1/openapi.json\">/v1/openapi.json</a>.</p>\n"
		    "<table>\n<tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr>\n");
	for (size_t i = 0; i < n; i++) {
		sbx_buf_printf(&b, "<tr><td>%s</td><td><code>",
			       routes[i].method ? routes[i].method : "ANY");
		html_escape(&b, routes[i].pattern);
		sbx_buf_append_str(&b, "</code></td><td>");
		html_escape(&b, routes[i].summary ? routes[i].summary : "");
		sbx_buf_printf(&b, "</td><td>%s</td></tr>\n",
			       routes[i].public ? "open" : "required");
	}
	if (sbx_buf_append_str(&b, "</table>\n</body></html>\n")) {
		sbx_buf_release(&b);
		return -ENOMEM;
	}
	d->html_len = b.len;
	d->html = sbx_buf_steal(&b);
	return d->html ? 0 : -ENOMEM;
}

int docs_init(struct docs *d, const struct sbx_http_route *routes, size_t n, const char *version)
{
	json_t *paths = json_object();

	memset(d, 0, sizeof(*d));
	for (size_t i = 0; paths && i < n; i++) {
		const struct sbx_http_route *r = &routes[i];
		char method[16];
		json_t *item = json_object_get(paths, r->pattern);
		size_t k;

		if (!r->method)
			continue;
		for (k = 0; k < sizeof(method) - 1 && r->method[k]; k++)
			method[k] = (char)tolower((unsigned char)r->method[k]);
		method[k] = '\0';
		if (!item) {
			item = json_object();
			json_object_set_new(paths, r->pattern, item);
		}
		json_object_set_new(item, method, operation(r, method));
	}
	d->openapi = json_pack(
		"{s:s, s:{s:s, s:s, s:s}, s:o, s:{s:{s:{s:s, s:s}}}, s:[{s:[]}]}", "openapi",
		"3.1.0", "info", "title", "sbx-agent", "version", version, "description",
		"The AIO Sandbox /v1 API as served by sbx-agent: the operations this "
		"build implements.",
		"paths", paths, "components", "securitySchemes", "bearer", "type", "http", "scheme",
		"bearer", "security", "bearer");
	if (!d->openapi)
		return -ENOMEM;
	return build_html(d, routes, n, version);
}

void docs_release(struct docs *d)
{
	json_decref(d->openapi);
	sbx_free(d->html);
	d->openapi = NULL;
	d->html = NULL;
}

void docs_handle_openapi(struct sbx_http_req *req, void *arg)
{
	struct docs *d = arg;

	sbx_http_respond_json(req, 200, d->openapi);
}

void docs_handle_page(struct sbx_http_req *req, void *arg)
{
	struct docs *d = arg;

	sbx_http_respond(req, 200, "text/html; charset=utf-8", d->html, d->html_len);
}
