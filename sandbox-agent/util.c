/* POST /v1/util/convert_to_markdown (see util.h). */
#include "util.h"

#include "api.h"
#include "markdown_py.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"

#include <stdio.h>
#include <string.h>

#define CONVERT_TIMEOUT_S 60

struct convert {
	struct sbx_http_req *req; /* NULL once the client has gone */
	char *uri;
};

static void convert_free(struct convert *c)
{
	sbx_free(c->uri);
	sbx_free(c);
}

static void convert_gone(struct sbx_http_req *req, void *arg)
{
	((struct convert *)arg)->req = NULL;
}

static void converted(int status, const char *content_type, const char *body, size_t len, void *arg)
{
	struct convert *c = arg;
	char err[160], message[600];
	json_t *env, *data;
	const char *why;

	if (!c->req) {
		convert_free(c);
		return;
	}
	sbx_http_on_abort(c->req, NULL, NULL);
	env = sbx_json_loadb(body, len, len + 1, err, sizeof(err));
	data = json_object_get(env, "data");
	if (status != 200 || !json_is_object(data)) {
		api_fail(c->req, sbx_json_str(env, "message") ?: "the conversion could not run",
			 NULL);
	} else if (json_integer_value(json_object_get(data, "exit_code")) == 0 &&
		   !strcmp(sbx_json_str(data, "status") ?: "", "ok")) {
		api_ok(c->req, "Converted",
		       json_pack("{s:s, s:O}", "uri", c->uri, "markdown",
				 json_object_get(data, "stdout")));
	} else {
		why = sbx_json_str(data, "stderr");
		snprintf(message, sizeof(message), "cannot convert %.200s: %.350s", c->uri,
			 !strcmp(sbx_json_str(data, "status") ?: "", "timeout")
				 ? "the conversion timed out"
			 : why && *why ? why
				       : "the converter failed");
		message[strcspn(message, "\n")] = '\0';
		api_fail(c->req, message, NULL);
	}
	json_decref(env);
	convert_free(c);
}

void util_handle_markdown(struct sbx_http_req *req, void *arg)
{
	struct util *u = arg;
	json_t *body = api_body_object(req), *uri, *call = NULL;
	struct convert *c = NULL;
	struct sbx_buf code;
	char *literal = NULL, *text = NULL;

	if (!body)
		return;
	uri = json_object_get(body, "uri");
	if (!json_is_string(uri) || !json_string_length(uri)) {
		api_invalid(req, "body.uri",
			    uri ? "Input should be a non-empty string" : "Field required",
			    uri ? "string_type" : "missing");
		json_decref(body);
		return;
	}
	/* URI = "<the URI as a JSON string, which Python reads as a literal>" */
	sbx_buf_init(&code, sizeof(markdown_py) + 65536);
	literal = json_dumps(uri, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
	if (literal && !sbx_buf_cat(&code, "URI = ", literal, "\n", markdown_py))
		call = json_pack("{s:s, s:s, s:i}", "language", "python", "code", code.data,
				 "timeout", CONVERT_TIMEOUT_S);
	free(literal);
	sbx_buf_release(&code);
	text = call ? sbx_json_dumps(call) : NULL;
	json_decref(call);
	c = text ? sbx_calloc(1, sizeof(*c)) : NULL;
	if (c && !(c->uri = sbx_strdup(json_string_value(uri)))) {
		sbx_free(c);
		c = NULL;
	}
	json_decref(body);
	if (!c) {
		sbx_free(text);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	c->req = req;
	sbx_http_on_abort(req, convert_gone, c);
	if (sbx_http_call(u->http, "POST", "/v1/code/execute", "application/json", text,
			  strlen(text), converted, c)) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond_error(req, 503, "out of memory");
		convert_free(c);
	}
	sbx_free(text);
}
