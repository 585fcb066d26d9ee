/* DNS messages for the egress proxy (see dns.h). */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define FLAG_QR	 0x8000u
#define FLAG_TC	 0x0200u
#define FLAG_RD	 0x0100u
#define FLAG_RA	 0x0080u
#define CLASS_IN 1

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* The name at msg[off]: its decoded text into out (when not NULL) and the
 * bytes it takes at off; -EBADMSG when it is malformed or too long. */
static int name_at(const uint8_t *msg, size_t len, size_t off, char *out, size_t size, size_t *used)
{
	char *s = NULL;
	long enc = 0;

	if (off >= len || len > 65535)
		return -EBADMSG;
	if (ares_expand_name(msg + off, msg, (int)len, &s, &enc) != ARES_SUCCESS)
		return -EBADMSG;
	if (out) {
		size_t n = strlen(s);

		if (n >= size) {
			ares_free_string(s);
			return -EBADMSG;
		}
		memcpy(out, s, n + 1);
	}
	ares_free_string(s);
	if (enc <= 0 || off + (size_t)enc > len)
		return -EBADMSG;
	*used = (size_t)enc;
	return 0;
}

/* The one question after the header: its name, type and class, and the
 * offset just past it; -EBADMSG when it is malformed. */
static int question_at(const uint8_t *msg, size_t len, char *name, size_t size, uint16_t *qtype,
		       uint16_t *qclass, size_t *end)
{
	size_t used;

	if (name_at(msg, len, DNS_HEADER, name, size, &used) || DNS_HEADER + used + 4 > len)
		return -EBADMSG;
	*qtype = get16(msg + DNS_HEADER + used);
	*qclass = get16(msg + DNS_HEADER + used + 2);
	*end = DNS_HEADER + used + 4;
	return 0;
}

/* The EDNS buffer size from an OPT record in the additional section (512
 * without one); -EBADMSG when the section is malformed. */
static int edns_size(const uint8_t *msg, size_t len, size_t off, unsigned records, uint16_t *size)
{
	*size = 512;
	for (unsigned i = 0; i < records; i++) {
		size_t used;
		uint16_t type, rdlen;

		if (name_at(msg, len, off, NULL, 0, &used))
			return -EBADMSG;
		off += used;
		if (off + 10 > len)
			return -EBADMSG;
		type = get16(msg + off);
		rdlen = get16(msg + off + 8);
		if (type == DNS_TYPE_OPT) {
			uint16_t s = get16(msg + off + 2);

			*size = s < 512 ? 512 : s;
		}
		off += 10u + rdlen;
		if (off > len)
			return -EBADMSG;
	}
	return 0;
}

int dns_parse_query(const uint8_t *msg, size_t len, struct dns_question *q)
{
	uint16_t flags;

	memset(q, 0, sizeof(*q));
	if (len < DNS_HEADER || len > 65535)
		return -EBADMSG;
	q->id = get16(msg);
	flags = get16(msg + 2);
	q->rd = flags & FLAG_RD;
	q->udp_size = 512;
	if (flags & FLAG_QR)
		return -EBADMSG; /* a response: never answer one */
	if (get16(msg + 4) != 1)
		return -ENOTSUP; /* no question to echo: dropped */
	if (question_at(msg, len, q->name, sizeof(q->name), &q->qtype, &q->qclass,
			&q->question_end))
		return -EBADMSG;
	if (edns_size(msg, len, q->question_end, get16(msg + 10), &q->udp_size))
		return -EBADMSG;
	if (((flags >> 11) & 0xf) != 0 || get16(msg + 6) || get16(msg + 8) || q->qclass != CLASS_IN)
		return -ENOTSUP;
	return 0;
}

size_t dns_refusal(const uint8_t *query, const struct dns_question *q, int rcode, uint8_t *out,
		   size_t size)
{
	uint16_t flags;

	if (!q->question_end || q->question_end > size)
		return 0;
	memcpy(out, query, q->question_end);
	flags = get16(query + 2);
	/* Keep the opcode and RD; set QR and RA; no AA, TC, Z bits. */
	flags = (uint16_t)((flags & 0x7900u) | FLAG_QR | FLAG_RA | ((unsigned)rcode & 0xfu));
	put16(out + 2, flags);
	put16(out + 4, 1);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, 0);
	return q->question_end;
}

size_t dns_truncate(uint8_t *answer, size_t len, const struct dns_question *q)
{
	if (len < q->question_end || q->question_end < DNS_HEADER)
		return len < DNS_HEADER ? len : DNS_HEADER;
	put16(answer + 2, (uint16_t)(get16(answer + 2) | FLAG_TC));
	put16(answer + 6, 0);
	put16(answer + 8, 0);
	put16(answer + 10, 0);
	return q->question_end;
}

static void add_name(struct dns_answer *a, const char *name)
{
	for (size_t i = 0; i < a->n_names; i++)
		if (strcasecmp(a->names[i], name) == 0)
			return;
	if (a->n_names == DNS_MAX_CHAIN || strlen(name) >= DNS_MAX_NAME) {
		a->chain_cut = true;
		return;
	}
	strcpy(a->names[a->n_names++], name);
}

static void add_addr(struct dns_answer *a, int family, const void *addr, int ttl)
{
	struct dns_addr *d;

	if (a->n_addrs == DNS_MAX_ADDRS) {
		a->addrs_cut = true;
		return;
	}
	d = &a->addrs[a->n_addrs++];
	d->family = family;
	memset(d->addr, 0, sizeof(d->addr));
	memcpy(d->addr, addr, family == AF_INET ? 4 : 16);
	d->ttl = ttl < 0 ? 0 : (uint32_t)ttl;
}

/* One record of the answer section, as read. */
struct record {
	char owner[DNS_MAX_NAME];
	uint16_t type;
	uint32_t ttl;
	size_t rdata, rdlen; /* offset and length in the message */
};

static int record_at(const uint8_t *msg, size_t len, size_t *off, struct record *r)
{
	size_t used;

	if (name_at(msg, len, *off, r->owner, sizeof(r->owner), &used))
		return -EBADMSG;
	*off += used;
	if (*off + 10 > len)
		return -EBADMSG;
	r->type = get16(msg + *off);
	r->ttl = (uint32_t)get16(msg + *off + 4) << 16 | get16(msg + *off + 6);
	if (r->ttl > 0x7fffffffu)
		r->ttl = 0; /* RFC 2181 section 8: read as zero */
	r->rdlen = get16(msg + *off + 8);
	r->rdata = *off + 10;
	*off = r->rdata + r->rdlen;
	return *off > len ? -EBADMSG : 0;
}

/* The answer section's CNAME chain from the question, and the addresses of
 * its names. A learned address lives no longer than the shortest TTL on the
 * way to it. The walk is bounded by DNS_MAX_CHAIN passes. */
int dns_parse_answer(const uint8_t *msg, size_t len, const struct dns_question *q,
		     struct dns_answer *a)
{
	char name[DNS_MAX_NAME];
	uint32_t chain_ttl = UINT32_MAX;
	unsigned count;
	size_t used, start;
	uint16_t flags, qtype, qclass;

	memset(a, 0, sizeof(*a));
	if (len < DNS_HEADER || len > 65535)
		return -EBADMSG;
	a->id = get16(msg);
	flags = get16(msg + 2);
	a->rcode = flags & 0xf;
	a->truncated = flags & FLAG_TC;
	if (!(flags & FLAG_QR) || get16(msg + 4) != 1)
		return -EBADMSG;
	if (question_at(msg, len, name, sizeof(name), &qtype, &qclass, &start) ||
	    strcasecmp(name, q->name) != 0 || qtype != q->qtype)
		return -EBADMSG;
	count = get16(msg + 6);
	add_name(a, q->name);
	/* Every record must be well-formed, whatever it is. */
	for (size_t off = start, i = 0; i < count; i++) {
		struct record r;

		if (record_at(msg, len, &off, &r))
			return -EBADMSG;
	}
	/* Follow the chain: each pass finds the CNAME of the chain's last name. */
	for (unsigned pass = 0; pass <= DNS_MAX_CHAIN && !a->chain_cut; pass++) {
		const char *last = a->names[a->n_names - 1];
		bool moved = false;

		for (size_t off = start, i = 0; i < count && !moved; i++) {
			struct record r;
			char target[DNS_MAX_NAME];

			record_at(msg, len, &off, &r);
			if (r.type != DNS_TYPE_CNAME || strcasecmp(r.owner, last) != 0)
				continue;
			if (name_at(msg, len, r.rdata, target, sizeof(target), &used) ||
			    used != r.rdlen)
				return -EBADMSG;
			if (r.ttl < chain_ttl)
				chain_ttl = r.ttl;
			for (size_t k = 0; k < a->n_names; k++)
				if (strcasecmp(a->names[k], target) == 0)
					return -EBADMSG; /* a loop */
			add_name(a, target);
			moved = true;
		}
		if (!moved)
			break;
	}
	if (a->chain_cut || a->rcode != DNS_NOERROR)
		return 0;
	/* The addresses of the chain's end (where a resolver's answer puts them). */
	for (size_t off = start, i = 0; i < count; i++) {
		struct record r;

		record_at(msg, len, &off, &r);
		if (strcasecmp(r.owner, a->names[a->n_names - 1]) != 0)
			continue;
		if ((r.type == DNS_TYPE_A && q->qtype == DNS_TYPE_A && r.rdlen == 4) ||
		    (r.type == DNS_TYPE_AAAA && q->qtype == DNS_TYPE_AAAA && r.rdlen == 16))
			add_addr(a, r.type == DNS_TYPE_A ? AF_INET : AF_INET6, msg + r.rdata,
				 (int)(r.ttl < chain_ttl ? r.ttl : chain_ttl));
		else if (r.type == DNS_TYPE_A || r.type == DNS_TYPE_AAAA)
			return -EBADMSG; /* a wrong size, or the other family's record */
	}
	return 0;
}
