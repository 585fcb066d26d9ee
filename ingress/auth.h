/* Who may reach which sandbox through the ingress.
 *
 * Off unless a key is given (--jwt-public-key, or JWT_PUBLIC_KEY: base64 of
 * a PEM RSA public key, as AIO takes it). Then every request for a sandbox
 * needs "Authorization: Bearer <JWT>" (RS256, exp enforced) or a ticket
 * (?ticket=), and the token's claims must name the sandbox:
 *
 *   "sandboxes": ["demo-1a2b3", ...]   ids, or "*" for every sandbox
 *   "namespaces": ["team-a", ...]      every sandbox of these namespaces
 *
 * A missing, malformed, expired or forged credential is 401, the same for
 * every path, so it reveals nothing about which sandboxes exist; a valid
 * token outside its scope is 403, whether the sandbox exists or not.
 * POST /tickets trades a valid token for a single-use ticket that carries
 * the token's scope and lives --ticket-ttl-seconds, for URLs that cannot
 * carry headers (a browser's WebSocket, a VNC page). Neither the
 * Authorization header nor the ticket is passed on to pods.
 */
#ifndef SBX_INGRESS_AUTH_H
#define SBX_INGRESS_AUTH_H

#include "route.h"
#include "table.h"

#include "sbx/jwt.h"
#include "sbx/tickets.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;

/* Shared by the worker threads: the key is read-only once loaded; tickets
 * and counters are behind the lock. */
struct ingress_auth {
	struct sbx_jwt_key key;
	long ticket_ttl_s;
	uv_mutex_t lock;
	struct sbx_tickets tickets; /* each carries its token's scope claims */
	uint64_t unauthorized, forbidden, tickets_issued, tickets_used;
};

struct ingress_auth_counts {
	uint64_t unauthorized, forbidden, tickets_issued, tickets_used;
};

/* key NULL or "": off. 0, or -EINVAL with the reason in err. */
int ingress_auth_init(struct ingress_auth *a, const char *key, long ticket_ttl_s, char *err,
		      size_t err_size);
void ingress_auth_release(struct ingress_auth *a);
bool ingress_auth_enabled(const struct ingress_auth *a);
void ingress_auth_counts(struct ingress_auth *a, struct ingress_auth_counts *out);

/* For a request naming sandbox t: true to go on; otherwise it has answered
 * 401 or 403. table gives the sandbox's namespace for namespace scopes. */
bool ingress_auth_check(struct ingress_auth *a, struct sbx_http_req *req,
			const struct ingress_target *t, const struct ingress_table *table);
/* POST /tickets: {"ticket": ..., "expires_in": seconds}, or 401. */
void ingress_auth_tickets(struct ingress_auth *a, struct sbx_http_req *req);

#endif
