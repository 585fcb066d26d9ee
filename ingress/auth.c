/* Who may reach which sandbox (see auth.h). */
#include "auth.h"

#include "sbx/alloc.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TICKETS 100000
#define TICKET_MAX  128

struct ticket {
	uint64_t expires_ms; /* loop time */
	json_t *claims;	     /* the minting token's scope claims */
};

int ingress_auth_init(struct ingress_auth *a, uv_loop_t *loop, const char *key, long ticket_ttl_s,
		      char *err, size_t err_size)
{
	memset(a, 0, sizeof(*a));
	a->loop = loop;
	a->ticket_ttl_s = ticket_ttl_s;
	sbx_map_init(&a->tickets, MAX_TICKETS);
	if (key && *key)
		return sbx_jwt_key_load(&a->key, key, "--jwt-public-key", err, err_size);
	return 0;
}

static void ticket_free(struct ticket *t)
{
	if (t) {
		json_decref(t->claims);
		sbx_free(t);
	}
}

void ingress_auth_release(struct ingress_auth *a)
{
	struct ticket *t;

	while ((t = sbx_map_pop(&a->tickets)))
		ticket_free(t);
	sbx_map_release(&a->tickets);
	sbx_jwt_key_release(&a->key);
}

bool ingress_auth_enabled(const struct ingress_auth *a)
{
	return a->key.pem != NULL;
}

/* ---- answers -------------------------------------------------------------------------------- */

static bool unauthorized(struct ingress_auth *a, struct sbx_http_req *req, const char *why)
{
	a->unauthorized++;
	sbx_log_info("request refused", SBX_LI("status", 401), SBX_LS("path", sbx_http_path(req)),
		     SBX_LS("peer", sbx_http_peer(req)), SBX_LS("reason", why));
	sbx_http_add_header(req, "WWW-Authenticate", "Bearer");
	sbx_http_respond_error(req, 401, why);
	return false;
}

static bool forbidden(struct ingress_auth *a, struct sbx_http_req *req, const char *id)
{
	char msg[160];

	a->forbidden++;
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
	struct ticket *t = sbx_map_remove(&a->tickets, value);
	json_t *claims = NULL;

	if (t && t->expires_ms > uv_now(a->loop)) {
		claims = json_incref(t->claims);
		a->tickets_used++;
	}
	ticket_free(t);
	return claims;
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

struct expired {
	uint64_t now;
	const char *keys[64];
	size_t n;
};

static void find_expired(const char *key, void *value, void *arg)
{
	struct expired *e = arg;

	if (((struct ticket *)value)->expires_ms <= e->now && e->n < 64)
		e->keys[e->n++] = key;
}

static void purge(struct ingress_auth *a)
{
	struct expired e = { .now = uv_now(a->loop) };

	do {
		e.n = 0;
		sbx_map_foreach(&a->tickets, find_expired, &e);
		for (size_t i = 0; i < e.n; i++)
			ticket_free(sbx_map_remove(&a->tickets, e.keys[i]));
	} while (e.n == 64);
}

void ingress_auth_tickets(struct ingress_auth *a, struct sbx_http_req *req)
{
	unsigned char raw[24];
	char value[2 * sizeof(raw) + 1];
	struct ticket *t;
	const char *why;
	json_t *claims, *body;

	if (!ingress_auth_enabled(a)) {
		sbx_http_respond_error(req, 400,
				       "tickets need access control to be on (--jwt-public-key)");
		return;
	}
	if (!(claims = bearer_claims(a, req, &why))) {
		unauthorized(a, req, why);
		return;
	}
	purge(a);
	t = sbx_calloc(1, sizeof(*t));
	if (!t || RAND_bytes(raw, sizeof(raw)) != 1) {
		sbx_free(t);
		json_decref(claims);
		sbx_http_respond_error(req, 503, "cannot make a ticket now");
		return;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(value + 2 * i, 3, "%02x", raw[i]);
	t->expires_ms = uv_now(a->loop) + (uint64_t)a->ticket_ttl_s * 1000;
	t->claims = json_pack("{s:O?, s:O?}", "sandboxes", json_object_get(claims, "sandboxes"),
			      "namespaces", json_object_get(claims, "namespaces"));
	json_decref(claims);
	if (!t->claims || sbx_map_put(&a->tickets, value, t, NULL)) {
		ticket_free(t);
		sbx_http_respond_error(req, 429, "too many tickets outstanding");
		return;
	}
	a->tickets_issued++;
	body = json_pack("{s:s, s:i}", "ticket", value, "expires_in", (int)a->ticket_ttl_s);
	sbx_http_respond_json(req, 200, body);
	json_decref(body);
}
