/* AIO response shapes (see api.h). */
#include "api.h"

#include "sbx/http.h"

#include <string.h>

json_t *api_envelope(bool success, const char *message, json_t *data)
{
	return json_pack("{s:b, s:s, s:o, s:n}", "success", success, "message",
			 message ? message : "", "data", data ? data : json_null(), "hint");
}

static void respond_envelope(struct sbx_http_req *req, bool success, const char *message,
			     json_t *data)
{
	json_t *env = api_envelope(success, message, data);

	if (!env) {
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	sbx_http_respond_json(req, 200, env);
	json_decref(env);
}

void api_ok(struct sbx_http_req *req, const char *message, json_t *data)
{
	respond_envelope(req, true, message ? message : "Operation successful", data);
}

void api_fail(struct sbx_http_req *req, const char *message, json_t *data)
{
	respond_envelope(req, false, message, data);
}

void api_invalid(struct sbx_http_req *req, const char *loc, const char *msg, const char *type)
{
	json_t *path = json_array(), *body;
	const char *p = loc;

	while (path && *p) {
		size_t n = strcspn(p, ".");

		json_array_append_new(path, json_stringn(p, n));
		p += n + (p[n] == '.');
	}
	body = json_pack("{s:[{s:o, s:s, s:s}]}", "detail", "loc", path ? path : json_array(),
			 "msg", msg, "type", type);
	if (!body) {
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	sbx_http_respond_json(req, 422, body);
	json_decref(body);
}

json_t *api_body_object(struct sbx_http_req *req)
{
	char err[160];
	json_t *body = sbx_http_body_json(req, err, sizeof(err));

	if (!body) {
		api_invalid(req, "body", err, "json_invalid");
		return NULL;
	}
	if (!json_is_object(body)) {
		json_decref(body);
		api_invalid(req, "body", "Input should be a valid dictionary", "dict_type");
		return NULL;
	}
	return body;
}
