/* POST /v1/display/record (see display.h). */
#include "display.h"

#include "api.h"
#include "sbx/http.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An optional integer field within [min, max]: false (422 sent) if it is
 * something else. */
static bool opt_int(struct sbx_http_req *req, json_t *body, const char *field, long long min,
		    long long max)
{
	json_t *v = json_object_get(body, field);
	char loc[64], msg[96];

	if (!v || json_is_null(v))
		return true;
	snprintf(loc, sizeof(loc), "body.%s", field);
	if (!json_is_integer(v)) {
		api_invalid(req, loc, "Input should be a valid integer", "int_type");
		return false;
	}
	if (json_integer_value(v) < min) {
		snprintf(msg, sizeof(msg), "Input should be greater than or equal to %lld", min);
		api_invalid(req, loc, msg, "greater_than_equal");
		return false;
	}
	if (json_integer_value(v) > max) {
		snprintf(msg, sizeof(msg), "Input should be less than or equal to %lld", max);
		api_invalid(req, loc, msg, "less_than_equal");
		return false;
	}
	return true;
}

/* What the sandbox lacks for recording its screen, or NULL if it has a
 * display. */
static const char *missing_display(char *buf, size_t size)
{
	const char *d = getenv("DISPLAY");
	char sock[64];
	int n;

	if (!d || !*d)
		return "no X display in this sandbox (DISPLAY is not set)";
	/* ":N" or ":N.S" is the local socket /tmp/.X11-unix/XN. */
	if (d[0] == ':' && sscanf(d + 1, "%d", &n) == 1) {
		snprintf(sock, sizeof(sock), "/tmp/.X11-unix/X%d", n);
		if (access(sock, F_OK) != 0) {
			snprintf(buf, size,
				 "no X display in this sandbox (DISPLAY=%.32s, but %s is missing)",
				 d, sock);
			return buf;
		}
	}
	return NULL;
}

void display_handle_record(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *v, *env;
	const char *action = NULL, *save_path, *lack;
	char buf[160], message[320];

	(void)arg;
	if (!body)
		return;
	v = json_object_get(body, "action");
	if (!v) {
		api_invalid(req, "body.action", "Field required", "missing");
		goto out;
	}
	action = json_string_value(v);
	if (!action ||
	    (strcmp(action, "start") && strcmp(action, "stop") && strcmp(action, "status"))) {
		api_invalid(req, "body.action", "Input should be 'start', 'stop' or 'status'",
			    "enum");
		goto out;
	}
	if (!api_opt_string(req, body, "save_path", &save_path) ||
	    !opt_int(req, body, "fps", 1, 30) || !opt_int(req, body, "crf", 0, 51) ||
	    !opt_int(req, body, "width", 1, 1 << 16) || !opt_int(req, body, "height", 1, 1 << 16))
		goto out;
	v = json_object_get(body, "max_duration");
	if (v && !json_is_null(v) &&
	    (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0 ||
	     json_number_value(v) > API_MAX_SECONDS)) {
		api_invalid(req, "body.max_duration",
			    "Input should be a number of seconds greater than 0", "greater_than");
		goto out;
	}
	lack = missing_display(buf, sizeof(buf));
	snprintf(message, sizeof(message), "%s: screen recording (%s) is not available%s",
		 lack ? lack : "this agent does not record the screen", action,
		 lack ? "; it needs an X display and ffmpeg" : "");
	env = api_envelope(false, message, NULL);
	sbx_http_respond_json(req, 501, env);
	json_decref(env);
out:
	json_decref(body);
}
