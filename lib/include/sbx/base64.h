/* Base64 (RFC 4648, standard alphabet) on OpenSSL's EVP block coder, and
 * random identifiers as hex. */
#ifndef SBX_BASE64_H
#define SBX_BASE64_H

#include <stddef.h>

/* Decodes in[0..len), ignoring ASCII whitespace. *out (caller frees with
 * sbx_free) is NUL-terminated; 0, -EINVAL (not base64) or -ENOMEM. */
int sbx_base64_decode(const char *in, size_t len, char **out, size_t *out_len);
/* bytes random bytes as 2*bytes hex digits and a NUL into out (OpenSSL's
 * generator; identifiers, not secrets, if it ever fails). At most 32. */
void sbx_random_hex(char *out, size_t bytes);
/* Encodes; *out is NUL-terminated text. 0 or -ENOMEM. */
int sbx_base64_encode(const void *in, size_t len, char **out, size_t *out_len);

#endif
