/* Fuzz target: sbx-egress's DNS message handling. The input is read both as
 * a query from the sandbox (parsed, then refused or truncated) and as an
 * upstream answer to a fixed question; every outcome must be a clean parse
 * or a clean refusal, within the message's bytes. */
#include "dns.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t fixed[] = { 0, 7,	 1,   0,   0,	1,   0,	  0,   0,   0,	 0,   0,
					 3, 'w', 'w', 'w', 7,	'a', 'l', 'l', 'o', 'w', 'e', 'd',
					 4, 't', 'e', 's', 't', 0,   0,	  1,   0,   1 };
	struct dns_question q, fq;
	struct dns_answer *a = malloc(sizeof(*a));
	uint8_t out[1024], *copy;
	int rc;

	rc = dns_parse_query(data, size, &q);
	if (rc == 0 || rc == -ENOTSUP) {
		size_t n = dns_refusal(data, &q, DNS_NXDOMAIN, out, sizeof(out));

		if (n && (n != q.question_end || out[0] != data[0] || out[1] != data[1]))
			__builtin_trap();
	}
	if (dns_parse_query(fixed, sizeof(fixed), &fq) != 0)
		__builtin_trap();
	if (dns_parse_answer(data, size, &fq, a) == 0) {
		if (a->n_names == 0 || a->n_names > DNS_MAX_CHAIN || a->n_addrs > DNS_MAX_ADDRS)
			__builtin_trap();
		if ((copy = malloc(size ? size : 1))) {
			memcpy(copy, data, size);
			if (dns_truncate(copy, size, &fq) > size)
				__builtin_trap();
			free(copy);
		}
	}
	free(a);
	return 0;
}
