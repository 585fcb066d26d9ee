/* Agent authentication (see auth.h). */
#include "auth.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/jwt.h"
#include "sbx/log.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
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
	sbx_map_init(&a->tickets, MAX_TICKETS);
	if (jwt_public_key && *jwt_public_key &&
	    (rc = sbx_jwt_key_load(&a->key, jwt_public_key, "JWT_PUBLIC_KEY", err, err_size)))
		return rc;
	if (api_key && *api_key && !(a->api_key = sbx_strdup(api_key)))
		return -ENOMEM;
	return 0;
}

static void free_ticket(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	sbx_free(value);
}

void auth_release(struct auth *a)
{
	sbx_map_foreach(&a->tickets, free_ticket, NULL);
	sbx_map_release(&a->tickets);
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

struct purge {
	uint64_t now;
	const char *expired[64];
	size_t n;
};

static void find_expired(const char *key, void *value, void *arg)
{
	struct purge *p = arg;

	if (*(uint64_t *)value <= p->now && p->n < 64)
		p->expired[p->n++] = key;
}

static void purge_tickets(struct auth *a)
{
	struct purge p = { .now = uv_now(a->loop) };

	do {
		p.n = 0;
		sbx_map_foreach(&a->tickets, find_expired, &p);
		for (size_t i = 0; i < p.n; i++)
			sbx_free(sbx_map_remove(&a->tickets, p.expired[i]));
	} while (p.n == 64);
}

/* A ticket works once, within its lifetime. */
static bool take_ticket(struct auth *a, const char *ticket)
{
	uint64_t *exp = sbx_map_remove(&a->tickets, ticket);
	bool ok = exp && *exp > uv_now(a->loop);

	sbx_free(exp);
	return ok;
}

int auth_issue_ticket(struct auth *a, char *out, size_t size)
{
	unsigned char raw[24];
	uint64_t *exp;

	if (!auth_enabled(a))
		return -ENOTSUP;
	if (size < 2 * sizeof(raw) + 1)
		return -ENAMETOOLONG;
	purge_tickets(a);
	if (RAND_bytes(raw, sizeof(raw)) != 1 || !(exp = sbx_malloc(sizeof(*exp))))
		return -EAGAIN;
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	*exp = uv_now(a->loop) + (uint64_t)a->ticket_ttl_s * 1000;
	if (sbx_map_put(&a->tickets, out, exp, NULL)) {
		sbx_free(exp);
		return -E2BIG;
	}
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

bool auth_authorize(struct sbx_http_req *req, void *arg)
{
	struct auth *a = arg;
	const char *h, *token = NULL, *why = "missing credentials";
	char ticket[128];

	if (!auth_enabled(a))
		return true;
	if (sbx_http_query(req, "ticket", ticket, sizeof(ticket)) > 0)
		return take_ticket(a, ticket) ? true : deny(a, req, "invalid or expired ticket");
	h = sbx_http_header(req, "X-API-Key");
	if (h && a->api_key)
		return same_secret(h, a->api_key) ? true : deny(a, req, "invalid API key");
	h = sbx_http_header(req, "Authorization");
	if (h && strncasecmp(h, "Bearer ", 7) == 0)
		token = h + 7 + strspn(h + 7, " ");
	if (!token || !*token)
		return deny(a, req, why);
	if (strlen(token) > SBX_JWT_MAX)
		return deny(a, req, "token too long");
	if (a->api_key && same_secret(token, a->api_key))
		return true;
	if (!a->key.pem)
		return deny(a, req, "invalid API key");
	why = auth_check_jwt(a, token, (long long)time(NULL));
	return why ? deny(a, req, why) : true;
}
