/* Base64 (see sbx/base64.h). */
#include "sbx/base64.h"

#include "sbx/alloc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

int sbx_base64_decode(const char *in, size_t len, char **out, size_t *out_len)
{
	size_t m = 0, pad;
	unsigned char *clean, *dec;
	int n;

	if (len > INT_MAX)
		return -EINVAL;
	clean = sbx_malloc(len + 1);
	if (!clean)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (!isspace((unsigned char)in[i]))
			clean[m++] = (unsigned char)in[i];
	}
	if (m % 4) {
		sbx_free(clean);
		return -EINVAL;
	}
	pad = m ? (clean[m - 1] == '=') + (clean[m - 2] == '=') : 0;
	dec = sbx_malloc(m / 4 * 3 + 1);
	if (!dec) {
		sbx_free(clean);
		return -ENOMEM;
	}
	/* EVP_DecodeBlock keeps the padding's zero bytes in its count. */
	n = m ? EVP_DecodeBlock(dec, clean, (int)m) : 0;
	sbx_free(clean);
	if (n < 0 || (size_t)n < pad) {
		sbx_free(dec);
		return -EINVAL;
	}
	*out_len = (size_t)n - pad;
	dec[*out_len] = '\0';
	*out = (char *)dec;
	return 0;
}

int sbx_base64_encode(const void *in, size_t len, char **out, size_t *out_len)
{
	unsigned char *enc;

	if (len > (size_t)INT_MAX / 4 * 3)
		return -ENOMEM;
	enc = sbx_malloc((len + 2) / 3 * 4 + 1);
	if (!enc)
		return -ENOMEM;
	*out_len = (size_t)EVP_EncodeBlock(enc, in, (int)len);
	*out = (char *)enc;
	return 0;
}

void sbx_random_hex(char *out, size_t bytes)
{
	unsigned char raw[32];

	if (bytes > sizeof(raw))
		bytes = sizeof(raw);
	if (RAND_bytes(raw, (int)bytes) != 1) {
		for (size_t i = 0; i < bytes; i++)
			raw[i] = (unsigned char)rand();
	}
	for (size_t i = 0; i < bytes; i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	out[2 * bytes] = '\0';
}
