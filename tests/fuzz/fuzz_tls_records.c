/* Fuzz target: TLS records from a client (a ClientHello and what follows,
 * alerts, records cut anywhere) into a server connection with TLS on it,
 * through the memory-BIO transport to the same routes as fuzz_http_request.
 * The certificate is a self-signed one made once, in memory, at start. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "http_types.h"

static SSL_CTX *fuzz_tls_ctx(void)
{
	static SSL_CTX *ctx;
	char dir[] = "/tmp/sbx-fuzz-tls-XXXXXX", cert[64], key[64], err[256];
	EVP_PKEY *pkey;
	X509 *x;
	FILE *f;

	if (ctx)
		return ctx;
	if (!mkdtemp(dir))
		abort();
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	pkey = EVP_EC_gen("P-256");
	x = X509_new();
	if (!pkey || !x)
		abort();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"fuzz.sbx.test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, pkey);
	if (!X509_sign(x, pkey, EVP_sha256()))
		abort();
	f = fopen(cert, "w");
	PEM_write_X509(f, x);
	fclose(f);
	f = fopen(key, "w");
	PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pkey);
	ctx = tls_ctx_new(cert, key, err, sizeof(err));
	unlink(cert);
	unlink(key);
	rmdir(dir);
	if (!ctx)
		abort();
	return ctx;
}

#define FUZZ_TLS_RECORDS 1
#include "fuzz_http_request.c"
