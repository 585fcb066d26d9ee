/* RS256 JSON Web Tokens: the key programs are given, and the check.
 *
 * Keys come as AIO's JWT_PUBLIC_KEY does: base64 of a PEM public key
 * (whitespace anywhere, as wrapped environment values have), or the PEM
 * itself, and must be RSA. Only RS256 is accepted, whatever a token's header
 * says: "alg: none" and HS256 signed with the public key as a secret (the
 * classic forgery) are refused before any signature check. exp is required
 * and enforced; nbf, when present, allows 60 s of clock skew.
 *
 * In its own library (sbx-jwt), so that only the programs that check tokens
 * link libjwt.
 */
#ifndef SBX_JWT_H
#define SBX_JWT_H

#include <jansson.h>
#include <stddef.h>

struct sbx_jwt_key {
	char *pem;
	size_t pem_len;
};

/* 0, or -EINVAL with the reason in err (prefixed by what, e.g.
 * "JWT_PUBLIC_KEY"); -ENOMEM. */
int sbx_jwt_key_load(struct sbx_jwt_key *k, const char *value, const char *what, char *err,
		     size_t err_size);
void sbx_jwt_key_release(struct sbx_jwt_key *k);

/* Longest token looked at. */
#define SBX_JWT_MAX 16384

/* NULL when token is valid at now_s (then *claims, if asked for, is a new
 * reference to its payload); otherwise why not, for a log line. */
const char *sbx_jwt_verify(const struct sbx_jwt_key *k, const char *token, long long now_s,
			   json_t **claims);

#endif
