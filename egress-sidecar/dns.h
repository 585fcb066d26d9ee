/* DNS messages as the egress proxy handles them: the question of a query,
 * the refusals it answers itself, and the names and addresses of an
 * upstream answer. Names are decoded by c-ares (ares_expand_name) and
 * answers by its A/AAAA parsers; this module only reads the fixed-size
 * header fields around them (RFC 1035 section 4.1).
 */
#ifndef SBX_EGRESS_DNS_H
#define SBX_EGRESS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER    12
#define DNS_MAX_NAME  1025 /* ares_expand_name escapes, so a 253-byte name can grow */
#define DNS_MAX_CHAIN 16   /* names in a CNAME chain that are checked */
#define DNS_MAX_ADDRS 64   /* addresses of one answer that are learned */

enum {
	DNS_TYPE_A = 1,
	DNS_TYPE_CNAME = 5,
	DNS_TYPE_AAAA = 28,
	DNS_TYPE_OPT = 41,
	DNS_TYPE_ANY = 255,
};

enum {
	DNS_NOERROR = 0,
	DNS_FORMERR = 1,
	DNS_SERVFAIL = 2,
	DNS_NXDOMAIN = 3,
	DNS_NOTIMP = 4,
	DNS_REFUSED = 5,
};

struct dns_question {
	uint16_t id;
	uint16_t qtype, qclass;
	bool rd;	     /* recursion desired */
	uint16_t udp_size;   /* the client's EDNS buffer size, or 512 without EDNS */
	size_t question_end; /* offset just past the question */
	char name[DNS_MAX_NAME];
};

/* The question of a standard query (QR 0, opcode 0, one question, no
 * answers). 0; -EBADMSG when the message is malformed (drop it); -ENOTSUP
 * for a well-formed message that is not a standard query (answer it with
 * dns_refusal(FORMERR or REFUSED) when q->question_end is set, else drop). */
int dns_parse_query(const uint8_t *msg, size_t len, struct dns_question *q);

/* An answer the proxy writes itself: the query's header and question with
 * QR, RA and rcode set and no records. The length written, or 0 when size
 * is too small. */
size_t dns_refusal(const uint8_t *query, const struct dns_question *q, int rcode, uint8_t *out,
		   size_t size);

/* Marks an answer too large for the client's UDP buffer as truncated: the
 * header and question only, with TC set, so the client retries over TCP.
 * Returns the new length. */
size_t dns_truncate(uint8_t *answer, size_t len, const struct dns_question *q);

struct dns_addr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint32_t ttl;
};

/* What an upstream answer says: its rcode, the names its CNAME chain goes
 * through (the question's first), and its A/AAAA addresses with TTLs. */
struct dns_answer {
	uint16_t id;
	int rcode;
	bool truncated;
	size_t n_names;
	char names[DNS_MAX_CHAIN][DNS_MAX_NAME];
	bool chain_cut; /* more names than DNS_MAX_CHAIN: treat as refused */
	size_t n_addrs;
	struct dns_addr addrs[DNS_MAX_ADDRS];
	bool addrs_cut; /* more than DNS_MAX_ADDRS: the rest are not learned */
};

/* Reads an answer to q. 0, or -EBADMSG when it is malformed or does not
 * answer q (another id or question). */
int dns_parse_answer(const uint8_t *msg, size_t len, const struct dns_question *q,
		     struct dns_answer *a);

#endif
