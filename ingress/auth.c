/* Who may reach which sandbox (see auth.h). */
#include "auth.h"

#include "sbx/alloc.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TICKETS 100000
#define TICKET_MAX  128 /* longest ?ticket= looked at */

static void claims_free(void *claims)
{
	json_decref(claims);
}

int ingress_auth_init(struct ingress_auth *a, const char *key, long ticket_ttl_s, char *err,
		      size_t err_size)
{
	memset(a, 0, sizeof(*a));
	a->ticket_ttl_s = ticket_ttl_s;
	uv_mutex_init(&a->lock);
	/* A ticket carries the scope claims of the token that made it. */
	sbx_tickets_init(&a->tickets, MAX_TICKETS, claims_free);
	if (key && *key)
		return sbx_jwt_key_load(&a->key, key, "--jwt-public-key", err, err_size);
	return 0;
}

void ingress_auth_release(struct ingress_auth *a)
{
	sbx_tickets_release(&a->tickets);
	sbx_jwt_key_release(&a->key);
	uv_mutex_destroy(&a->lock);
}

void ingress_auth_counts(struct ingress_auth *a, struct ingress_auth_counts *out)
{
	uv_mutex_lock(&a->lock);
	*out = (struct ingress_auth_counts){ a->unauthorized, a->forbidden, a->tickets_issued,
					     a->tickets_used };
	uv_mutex_unlock(&a->lock);
}

static void count(struct ingress_auth *a, uint64_t *counter)
{
	uv_mutex_lock(&a->lock);
	(*counter)++;
	uv_mutex_unlock(&a->lock);
}

bool ingress_auth_enabled(const struct ingress_auth *a)
{
	return a->key.pem != NULL;
}

/* ---- answers -------------------------------------------------------------------------------- */

static bool unauthorized(struct ingress_auth *a, struct sbx_http_req *req, const char *why)
{
	count(a, &a->unauthorized);
	sbx_log_info("request refused", SBX_LI("status", 401), SBX_LS("path", sbx_http_path(req)),
		     SBX_LS("peer", sbx_http_peer(req)), SBX_LS("reason", why));
	sbx_http_add_header(req, "WWW-Authenticate", "Bearer");
	sbx_http_respond_error(req, 401, why);
	return false;
}

static bool forbidden(struct ingress_auth *a, struct sbx_http_req *req, const char *id)
{
	char msg[160];

	count(a, &a->forbidden);
	snprintf(msg, sizeof(msg), "this credential does not give access to sandbox '%s'", id);
	sbx_log_info("request refused", SBX_LI("status", 403), SBX_LS("path", sbx_http_path(req)),
		     SBX_LS("peer", sbx_http_peer(req)), SBX_LS("sandbox", id));
	sbx_http_respond_error(req, 403, msg);
	return false;
}

/* ---- credentials ------------------------------------------------------------------------------
 */

/* The bearer token's claims (a new reference), or NULL with why. */
static json_t *bearer_claims(struct ingress_auth *a, struct sbx_http_req *req, const char **why)
{
	const char *h = sbx_http_header(req, "Authorization"), *token;
	json_t *claims = NULL;

	*why = "missing credentials (a bearer token, or a ticket)";
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	token = h + 7 + strspn(h + 7, " ");
	if (!*token)
		return NULL;
	*why = sbx_jwt_verify(&a->key, token, (long long)time(NULL), &claims);
	if (*why)
		return NULL;
	if (!claims)
		*why = "unreadable token claims";
	return claims;
}

/* The claims a ticket carries, once (it is gone after), or NULL. */
static json_t *take_ticket(struct ingress_auth *a, const char *value)
{
	void *claims = NULL;
	bool ok;

	uv_mutex_lock(&a->lock);
	ok = sbx_tickets_take(&a->tickets, value, &claims);
	a->tickets_used += ok;
	uv_mutex_unlock(&a->lock);
	return ok ? claims : NULL;
}

static bool listed(const json_t *list, const char *value)
{
	const json_t *v;
	size_t i;

	json_array_foreach(list, i, v)
	{
		if (json_is_string(v) && !strcmp(json_string_value(v), value))
			return true;
	}
	return false;
}

static bool in_scope(const json_t *claims, const char *id, const struct ingress_table *table)
{
	const json_t *ids = json_object_get(claims, "sandboxes");
	const json_t *nss = json_object_get(claims, "namespaces");
	const struct ingress_sandbox *s;

	if (listed(ids, "*") || listed(ids, id))
		return true;
	s = table ? ingress_table_get(table, id) : NULL;
	return s && *s->ns && listed(nss, s->ns);
}

bool ingress_auth_check(struct ingress_auth *a, struct sbx_http_req *req,
			const struct ingress_target *t, const struct ingress_table *table)
{
	char ticket[TICKET_MAX];
	const char *why;
	json_t *claims;
	bool ok;

	if (!ingress_auth_enabled(a))
		return true;
	if (sbx_http_query(req, "ticket", ticket, sizeof(ticket)) > 0) {
		if (!(claims = take_ticket(a, ticket)))
			return unauthorized(a, req, "invalid or expired ticket");
	} else if (!(claims = bearer_claims(a, req, &why))) {
		return unauthorized(a, req, why);
	}
	ok = in_scope(claims, t->id, table);
	json_decref(claims);
	return ok ? true : forbidden(a, req, t->id);
}

/* ---- tickets --------------------------------------------------------------------------------- */

void ingress_auth_tickets(struct ingress_auth *a, struct sbx_http_req *req)
{
	char value[SBX_TICKET_SIZE];
	const char *why;
	json_t *claims, *scope, *body;
	int rc;

	if (!ingress_auth_enabled(a)) {
		sbx_http_respond_error(req, 400,
				       "tickets need access control to be on (--jwt-public-key)");
		return;
	}
	if (!(claims = bearer_claims(a, req, &why))) {
		unauthorized(a, req, why);
		return;
	}
	scope = json_pack("{s:O?, s:O?}", "sandboxes", json_object_get(claims, "sandboxes"),
			  "namespaces", json_object_get(claims, "namespaces"));
	json_decref(claims);
	rc = -ENOMEM;
	if (scope) {
		uv_mutex_lock(&a->lock);
		rc = sbx_tickets_issue(&a->tickets, (uint64_t)a->ticket_ttl_s * 1000, scope, value);
		a->tickets_issued += rc == 0;
		uv_mutex_unlock(&a->lock);
	}
	if (rc) {
		json_decref(scope);
		sbx_http_respond_error(req, rc == -E2BIG ? 429 : 503,
				       rc == -E2BIG ? "too many tickets outstanding"
						    : "cannot make a ticket now");
		return;
	}
	body = json_pack("{s:s, s:i}", "ticket", value, "expires_in", (int)a->ticket_ttl_s);
	sbx_http_respond_json(req, 200, body);
	json_decref(body);
}
