/* RS256 JSON Web Tokens (see sbx/jwt.h), on libjwt and OpenSSL. */
#include "sbx/jwt.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/json.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sbx_jwt_key_load(struct sbx_jwt_key *k, const char *value, const char *what, char *err,
		     size_t err_size)
{
	char *pem = NULL;
	size_t len = 0;
	EVP_PKEY *key = NULL;
	BIO *bio;

	memset(k, 0, sizeof(*k));
	if (strstr(value, "-----BEGIN")) {
		pem = sbx_strdup(value);
		len = pem ? strlen(pem) : 0;
	} else if (sbx_base64_decode(value, strlen(value), &pem, &len) ||
		   !strstr(pem, "-----BEGIN")) {
		sbx_free(pem);
		snprintf(err, err_size, "%s: expected a PEM public key or its base64", what);
		return -EINVAL;
	}
	if (!pem)
		return -ENOMEM;
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio)
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!key || EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
		EVP_PKEY_free(key);
		sbx_free(pem);
		snprintf(err, err_size, "%s: not an RSA public key (RS256 is the only algorithm)",
			 what);
		return -EINVAL;
	}
	EVP_PKEY_free(key);
	k->pem = pem;
	k->pem_len = len;
	return 0;
}

void sbx_jwt_key_release(struct sbx_jwt_key *k)
{
	sbx_free(k->pem);
	k->pem = NULL;
	k->pem_len = 0;
}

/* base64url (no padding) to bytes, through the standard decoder. */
static int b64url_decode(const char *in, size_t len, char **out, size_t *out_len)
{
	char *std = sbx_malloc(len + 4);
	size_t n = 0;
	int rc;

	if (!std)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++)
		std[n++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (n % 4)
		std[n++] = '=';
	rc = sbx_base64_decode(std, n, out, out_len);
	sbx_free(std);
	return rc;
}

/* libjwt 1.x verifies with the algorithm the token's own header names, so an
 * HS256 token would be checked with our public key as its HMAC secret. The
 * header is read here first, and only RS256 goes on. */
static const char *header_alg_ok(const char *token)
{
	const char *dot = strchr(token, '.');
	char *raw = NULL, err[64];
	size_t len;
	json_t *h;
	const char *why = NULL;

	if (!dot || !strchr(dot + 1, '.'))
		return "malformed token";
	if (b64url_decode(token, (size_t)(dot - token), &raw, &len))
		return "malformed token header";
	h = sbx_json_loadb(raw, len, 4096, err, sizeof(err));
	sbx_free(raw);
	if (!json_is_object(h))
		why = "malformed token header";
	else if (!sbx_json_str(h, "alg") || strcmp(sbx_json_str(h, "alg"), "RS256") != 0)
		why = "only RS256 tokens are accepted";
	json_decref(h);
	return why;
}

const char *sbx_jwt_verify(const struct sbx_jwt_key *k, const char *token, long long now_s,
			   json_t **claims)
{
	const char *why;
	jwt_t *jwt = NULL;
	long exp, nbf;
	char *grants;

	if (claims)
		*claims = NULL;
	if (!k->pem)
		return "no key to check tokens with";
	if (strlen(token) > SBX_JWT_MAX)
		return "token too long";
	if ((why = header_alg_ok(token)))
		return why;
	if (jwt_decode(&jwt, token, (const unsigned char *)k->pem, (int)k->pem_len) || !jwt)
		return "invalid token signature";
	if (jwt_get_alg(jwt) != JWT_ALG_RS256) {
		why = "only RS256 tokens are accepted";
		goto out;
	}
	errno = 0;
	exp = jwt_get_grant_int(jwt, "exp");
	if (errno) {
		why = "token has no exp claim";
		goto out;
	}
	if (exp <= now_s) {
		why = "token expired";
		goto out;
	}
	errno = 0;
	nbf = jwt_get_grant_int(jwt, "nbf");
	if (!errno && nbf > now_s + 60) {
		why = "token not valid yet";
		goto out;
	}
	if (claims && (grants = jwt_get_grants_json(jwt, NULL))) {
		*claims = json_loads(grants, 0, NULL);
		free(grants); /* libjwt's, from its allocator */
	}
out:
	jwt_free(jwt);
	return why;
}
