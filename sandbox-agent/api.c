/* AIO response shapes (see api.h). */
#include "api.h"

#include "sbx/http.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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

bool api_opt_string(struct sbx_http_req *req, json_t *body, const char *field, const char **out)
{
	json_t *v = json_object_get(body, field);
	char loc[64];

	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (json_is_string(v)) {
		*out = json_string_value(v);
		return true;
	}
	snprintf(loc, sizeof(loc), "body.%s", field);
	api_invalid(req, loc, "Input should be a valid string", "string_type");
	return false;
}

json_t *api_body_object_or_empty(struct sbx_http_req *req)
{
	return sbx_http_body(req, NULL)[0] ? api_body_object(req) : json_object();
}

json_t *api_body_object(struct sbx_http_req *req)
{
	char err[160];
	bool too_large;
	json_t *body = sbx_http_body_json(req, err, sizeof(err), &too_large);

	if (!body && too_large) {
		sbx_http_respond_error(req, 413, err);
		return NULL;
	}
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

void api_public_base(struct sbx_http_req *req, char *http, size_t http_size, char *ws,
		     size_t ws_size, char *host_prefix, size_t hp_size)
{
	static const char host_chars[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]";
	static const char path_chars[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~/-";
	const char *host = sbx_http_header(req, "X-Forwarded-Host");
	const char *proto = sbx_http_header(req, "X-Forwarded-Proto");
	const char *prefix = sbx_http_header(req, "X-Forwarded-Prefix");
	char pre[301];
	bool tls;

	if (!host || !*host || strspn(host, host_chars) != strlen(host))
		host = sbx_http_header(req, "Host");
	if (!host || !*host || strspn(host, host_chars) != strlen(host))
		host = "127.0.0.1";
	if (!prefix || strspn(prefix, path_chars) != strlen(prefix))
		prefix = "";
	snprintf(pre, sizeof(pre), "%s", prefix);
	for (size_t n = strlen(pre); n && pre[n - 1] == '/'; n--)
		pre[n - 1] = '\0'; /* "/x/" and "/x" alike */
	tls = proto && strcasecmp(proto, "https") == 0;
	snprintf(host_prefix, hp_size, "%.200s%.300s", host, pre);
	snprintf(ws, ws_size, "%s://%s", tls ? "wss" : "ws", host_prefix);
	snprintf(http, http_size, "%s://%s", tls ? "https" : "http", host_prefix);
}

/* An optional number field within [min, max]: false (422 sent) when it
 * is there and not such a number. */
bool api_opt_number(struct sbx_http_req *req, json_t *body, const char *field, double min,
		    double max, bool integer, double *out, bool *given)
{
	json_t *v = json_object_get(body, field);
	char loc[64], msg[128];
	double d;

	*given = false;
	if (!v || json_is_null(v))
		return true;
	snprintf(loc, sizeof(loc), "body.%s", field);
	if (!json_is_number(v) || (integer && !json_is_integer(v))) {
		api_invalid(req, loc,
			    integer ? "Input should be a valid integer"
				    : "Input should be a valid number",
			    integer ? "int_type" : "float_type");
		return false;
	}
	d = json_number_value(v);
	if (!isfinite(d) || d < min || d > max) {
		snprintf(msg, sizeof(msg), "Input should be from %g to %g", min, max);
		api_invalid(req, loc, msg, "value_error");
		return false;
	}
	*out = d;
	*given = true;
	return true;
}
