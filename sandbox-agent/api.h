/* The AIO Sandbox response shapes the official SDKs expect.
 *
 * Success and handled failures travel in the envelope
 *   {"success": bool, "message": str, "data": any, "hint": str|null}
 * with HTTP 200; invalid requests get FastAPI's 422 shape
 *   {"detail": [{"loc": [...], "msg": str, "type": str}]}.
 */
#ifndef SBX_AGENT_API_H
#define SBX_AGENT_API_H

#include <jansson.h>
#include <stdbool.h>

struct sbx_http_req;

/* {"success", "message", "data" (stolen; NULL is null), "hint": null} */
json_t *api_envelope(bool success, const char *message, json_t *data);
/* Sends an envelope with HTTP 200. data is stolen. */
void api_ok(struct sbx_http_req *req, const char *message, json_t *data);
void api_fail(struct sbx_http_req *req, const char *message, json_t *data);
/* 422 with one detail entry: loc is "body.field" (split on dots). */
void api_invalid(struct sbx_http_req *req, const char *loc, const char *msg, const char *type);
/* The largest number of seconds a request may give (a timeout, a wait):
 * a billion, so that any such value in milliseconds fits a uint64_t. */
#define API_MAX_SECONDS 1e9

/* Where the client reached the agent: "http(s)://host/prefix", the same with
 * ws(s)://, and "host/prefix". A proxy in front says so with
 * X-Forwarded-Host, -Proto and -Prefix; only plain characters are taken
 * (the results go into JSON and URLs). */
void api_public_base(struct sbx_http_req *req, char *http, size_t http_size, char *ws,
		     size_t ws_size, char *host_prefix, size_t hp_size);

/* The request body as a JSON object; on failure a 422 has been sent and
 * NULL is returned. */
json_t *api_body_object(struct sbx_http_req *req);

/* The body as an object, an empty body being an empty object. */
json_t *api_body_object_or_empty(struct sbx_http_req *req);
/* An optional string field: absent or null gives NULL; anything but a
 * string is a 422 (sent) and false. */
bool api_opt_string(struct sbx_http_req *req, json_t *body, const char *field, const char **out);
/* An optional number field within [min, max] (integer: an integer one):
 * absent or null leaves *given false; anything else out of that is a 422
 * (sent) and false. */
bool api_opt_number(struct sbx_http_req *req, json_t *body, const char *field, double min,
		    double max, bool integer, double *out, bool *given);

#endif
