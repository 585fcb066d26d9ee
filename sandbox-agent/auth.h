/* Who may call the agent.
 *
 * Off unless configured. With JWT_PUBLIC_KEY (base64 of a PEM public key, or
 * the PEM itself), requests need "Authorization: Bearer <JWT>" signed RS256
 * by the matching private key, with an exp in the future. With
 * SANDBOX_API_KEY, the key itself is accepted as a bearer token or in an
 * X-API-Key header. POST /tickets trades a valid credential for a short-lived
 * single-use ticket, for URLs that cannot carry headers (?ticket=...).
 * Public routes (ping, health, metrics) skip the check; everything else,
 * unknown paths included, goes through it.
 */
#ifndef SBX_AGENT_AUTH_H
#define SBX_AGENT_AUTH_H

#include "sbx/jwt.h"
#include "sbx/tickets.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct sbx_http_req;

struct auth {
	uv_loop_t *loop;
	struct sbx_jwt_key key; /* key.pem NULL: no JWTs */
	char *api_key;		/* NULL: no static key */
	long ticket_ttl_s;
	struct sbx_tickets tickets;
	unsigned long denied;
};

/* 0, or -EINVAL with the reason in err (a bad key is a startup error). */
int auth_init(struct auth *a, uv_loop_t *loop, const char *jwt_public_key, const char *api_key,
	      long ticket_ttl_s, char *err, size_t err_size);
void auth_release(struct auth *a);
bool auth_enabled(const struct auth *a);

/* Whether an Authorization header value is the agent's own credential (a
 * bearer key or token this agent accepts): one not to pass on to the
 * sandbox's apps. */
bool auth_is_agent_bearer(struct auth *a, const char *authorization);
/* The HTTP server's authorize callback (arg: struct auth *). */
bool auth_authorize(struct sbx_http_req *req, void *arg);
/* A single-use ticket into out (49 bytes at least): 0, -ENOTSUP (no auth
 * configured), -E2BIG (too many outstanding), -EAGAIN. */
int auth_issue_ticket(struct auth *a, char *out, size_t size);
/* GET /auth: 200 {"status": "authenticated", "method": ...} when the
 * request's credentials, or a ticket or api_key in the query of its
 * X-Original-URI, let it in (a front proxy's auth_request); else the
 * authorize check's 401. */
void auth_handle_auth(struct sbx_http_req *req, void *arg);
/* POST /tickets -> {"ticket": ..., "expires_in": seconds} */
void auth_handle_tickets(struct sbx_http_req *req, void *arg);

/* Verifies an RS256 JWT against the PEM; NULL if valid, else why not. */
const char *auth_check_jwt(const struct auth *a, const char *token, long long now_s);

#endif
