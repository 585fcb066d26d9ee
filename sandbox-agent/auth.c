/* Agent authentication (see auth.h). */
#include "auth.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/jwt.h"
#include "sbx/log.h"
#include "sbx/tickets.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TICKETS 10000

/* ---- setup ----------------------------------------------------------------- */

int auth_init(struct auth *a, uv_loop_t *loop, const char *jwt_public_key, const char *api_key,
	      long ticket_ttl_s, char *err, size_t err_size)
{
	int rc;

	memset(a, 0, sizeof(*a));
	a->loop = loop;
	a->ticket_ttl_s = ticket_ttl_s;
	sbx_tickets_init(&a->tickets, MAX_TICKETS, NULL);
	if (jwt_public_key && *jwt_public_key &&
	    (rc = sbx_jwt_key_load(&a->key, jwt_public_key, "JWT_PUBLIC_KEY", err, err_size)))
		return rc;
	if (api_key && *api_key && !(a->api_key = sbx_strdup(api_key)))
		return -ENOMEM;
	return 0;
}

void auth_release(struct auth *a)
{
	sbx_tickets_release(&a->tickets);
	if (a->api_key)
		OPENSSL_cleanse(a->api_key, strlen(a->api_key));
	sbx_free(a->api_key);
	a->api_key = NULL;
	sbx_jwt_key_release(&a->key);
}

bool auth_enabled(const struct auth *a)
{
	return a->key.pem || a->api_key;
}

/* ---- JWT ------------------------------------------------------------------- */

const char *auth_check_jwt(const struct auth *a, const char *token, long long now_s)
{
	return sbx_jwt_verify(&a->key, token, now_s, NULL);
}

/* ---- tickets ---------------------------------------------------------------- */

int auth_issue_ticket(struct auth *a, char *out, size_t size)
{
	char value[SBX_TICKET_SIZE];
	int rc;

	if (!auth_enabled(a))
		return -ENOTSUP;
	if (size < sizeof(value))
		return -ENAMETOOLONG;
	if ((rc = sbx_tickets_issue(&a->tickets, (uint64_t)a->ticket_ttl_s * 1000, NULL, value)))
		return rc == -ENOMEM ? -EAGAIN : rc;
	memcpy(out, value, sizeof(value));
	return 0;
}

void auth_handle_tickets(struct sbx_http_req *req, void *arg)
{
	struct auth *a = arg;
	char ticket[64];
	json_t *body;
	int rc = auth_issue_ticket(a, ticket, sizeof(ticket));

	if (rc == -ENOTSUP) {
		/* Not 404: the endpoint exists; this configuration has no use for it. */
		sbx_http_respond_error(req, 400,
				       "tickets need authentication to be configured "
				       "(JWT_PUBLIC_KEY or SANDBOX_API_KEY)");
		return;
	}
	if (rc) {
		sbx_http_respond_error(req, rc == -E2BIG ? 429 : 503,
				       rc == -E2BIG ? "too many tickets outstanding"
						    : "cannot make a ticket now");
		return;
	}
	body = json_pack("{s:s, s:i}", "ticket", ticket, "expires_in", (int)a->ticket_ttl_s);
	sbx_http_respond_json(req, 200, body);
	json_decref(body);
}

/* ---- the check --------------------------------------------------------------- */

static bool same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	/* Constant time in the content; the length may show. */
	return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

static bool deny(struct auth *a, struct sbx_http_req *req, const char *why)
{
	json_t *body = json_pack("{s:s}", "detail", why);

	a->denied++;
	sbx_log_info("request refused", SBX_LS("path", sbx_http_path(req)),
		     SBX_LS("peer", sbx_http_peer(req)), SBX_LS("reason", why));
	sbx_http_add_header(req, "WWW-Authenticate", "Bearer");
	sbx_http_respond_json(req, 401, body);
	json_decref(body);
	return false;
}

/* Whether a static key or a token is one this agent accepts: NULL, or why
 * not. */
static const char *check_key_or_token(struct auth *a, const char *cred, bool token_too)
{
	if (strlen(cred) > SBX_JWT_MAX)
		return "token too long";
	if (a->api_key && same_secret(cred, a->api_key))
		return NULL;
	if (!token_too || !a->key.pem)
		return "invalid API key";
	return auth_check_jwt(a, cred, (long long)time(NULL));
}

bool auth_is_agent_bearer(struct auth *a, const char *h)
{
	if (!auth_enabled(a) || !h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7 + strspn(h + 7, " ");
	return *h && !check_key_or_token(a, h, true);
}

/* The credentials a request may carry, in the order they are tried: the
 * key headers (X-AIO-API-Key, X-API-Key), Authorization: Bearer (the key or
 * a JWT), the api_key query parameter of query, then a ticket from it
 * (spent only when nothing before it let the request in). One good
 * credential is enough. NULL and *how set, or why the first one given was
 * refused. */
static const char *authenticate(struct auth *a, struct sbx_http_req *req, const char *query,
				const char **how, bool spend)
{
	static const char *const key_headers[] = { "X-AIO-API-Key", "X-API-Key" };
	const char *h, *why = NULL, *w;
	char value[SBX_JWT_MAX + 2];

	for (size_t i = 0; i < sizeof(key_headers) / sizeof(key_headers[0]); i++) {
		if ((h = sbx_http_header(req, key_headers[i]))) {
			if (!(w = check_key_or_token(a, h, false))) {
				*how = "api_key";
				return NULL;
			}
			why = why ? why : w;
		}
	}
	h = sbx_http_header(req, "Authorization");
	if (h && strncasecmp(h, "Bearer ", 7) == 0) {
		h += 7 + strspn(h + 7, " ");
		if (*h) {
			if (!(w = check_key_or_token(a, h, true))) {
				*how = a->api_key && same_secret(h, a->api_key) ? "api_key" : "jwt";
				return NULL;
			}
			why = why ? why : w;
		}
	}
	if (sbx_http_query_param(query, "api_key", value, sizeof(value)) > 0) {
		if (!(w = check_key_or_token(a, value, false))) {
			*how = "api_key";
			return NULL;
		}
		why = why ? why : w;
	}
	if (sbx_http_query_param(query, "ticket", value, 128) > 0) {
		if (!spend || sbx_tickets_take(&a->tickets, value, NULL)) {
			*how = "ticket";
			return NULL;
		}
		why = why ? why : "invalid or expired ticket";
	}
	return why ? why : "missing credentials";
}

/* The query a request's credentials are looked for in: its own, or for
 * GET /auth the query of the URI a front proxy is deciding on. */
static const char *credential_query(struct sbx_http_req *req)
{
	const char *uri, *q;

	if (strcmp(sbx_http_path(req), "/auth") != 0)
		return sbx_http_query_string(req);
	uri = sbx_http_header(req, "X-Original-URI");
	return uri && (q = strchr(uri, '?')) ? q + 1 : "";
}

bool auth_authorize(struct sbx_http_req *req, void *arg)
{
	struct auth *a = arg;
	const char *why, *how;

	if (!auth_enabled(a))
		return true;
	if (!(why = authenticate(a, req, credential_query(req), &how, true)))
		return true;
	return deny(a, req, why);
}

/* GET /auth, for a front proxy's subrequest (nginx auth_request): the
 * authorize check let it in (its credentials, or a ticket or api_key in the
 * query of X-Original-URI); the answer says how. */
void auth_handle_auth(struct sbx_http_req *req, void *arg)
{
	struct auth *a = arg;
	const char *how = "none";
	json_t *body;

	/* Again without spending anything: the first good credential names
	 * how; only a ticket can have let it in otherwise. */
	if (auth_enabled(a) && authenticate(a, req, credential_query(req), &how, false))
		how = "ticket";
	body = json_pack("{s:s, s:s}", "status", "authenticated", "method", how);
	sbx_http_respond_json(req, 200, body);
	json_decref(body);
}
