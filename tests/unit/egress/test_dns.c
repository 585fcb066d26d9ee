/* Unit tests for egress-sidecar/dns.c: queries as resolvers send them (built
 * by c-ares), the refusals the proxy writes, and answers with CNAME chains,
 * built byte by byte as an upstream sends them. */
#include "unit.h"

#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

static size_t query(const char *name, int type, uint16_t id, int edns, uint8_t *out)
{
	unsigned char *buf = NULL;
	int len = 0;

	assert_int_equal(ares_create_query(name, 1, type, id, 1, &buf, &len, edns), ARES_SUCCESS);
	memcpy(out, buf, (size_t)len);
	ares_free_string(buf);
	return (size_t)len;
}

/* A message under construction. */
struct msg {
	uint8_t b[2048];
	size_t n;
};

static void u16(struct msg *m, unsigned v)
{
	m->b[m->n++] = (uint8_t)(v >> 8);
	m->b[m->n++] = (uint8_t)v;
}

static void u32(struct msg *m, unsigned long v)
{
	u16(m, (unsigned)(v >> 16));
	u16(m, (unsigned)(v & 0xffff));
}

static void name(struct msg *m, const char *n)
{
	while (*n) {
		size_t l = strcspn(n, ".");

		m->b[m->n++] = (uint8_t)l;
		memcpy(m->b + m->n, n, l);
		m->n += l;
		n += l + (n[l] == '.');
	}
	m->b[m->n++] = 0;
}

static void header(struct msg *m, uint16_t id, unsigned flags, unsigned an)
{
	m->n = 0;
	u16(m, id);
	u16(m, flags);
	u16(m, 1);
	u16(m, an);
	u16(m, 0);
	u16(m, 0);
}

static void rr(struct msg *m, const char *owner, unsigned type, unsigned long ttl,
	       const void *rdata, size_t rdlen)
{
	name(m, owner);
	u16(m, type);
	u16(m, 1);
	u32(m, ttl);
	u16(m, (unsigned)rdlen);
	memcpy(m->b + m->n, rdata, rdlen);
	m->n += rdlen;
}

static void cname(struct msg *m, const char *owner, unsigned long ttl, const char *target)
{
	struct msg t = { .n = 0 };

	name(&t, target);
	rr(m, owner, DNS_TYPE_CNAME, ttl, t.b, t.n);
}

static void test_a_query_as_resolvers_send_it(void **state)
{
	uint8_t b[512];
	size_t n = query("Api.Example.COM", DNS_TYPE_A, 0x1234, 0, b);
	struct dns_question q;

	(void)state;
	assert_int_equal(dns_parse_query(b, n, &q), 0);
	assert_string_equal(q.name, "Api.Example.COM");
	assert_int_equal(q.qtype, DNS_TYPE_A);
	assert_int_equal(q.id, 0x1234);
	assert_true(q.rd);
	assert_int_equal(q.udp_size, 512);
	assert_int_equal(q.question_end, n);
	/* With EDNS, the client's buffer size. */
	n = query("x.test", DNS_TYPE_AAAA, 7, 1232, b);
	assert_int_equal(dns_parse_query(b, n, &q), 0);
	assert_int_equal(q.qtype, DNS_TYPE_AAAA);
	assert_int_equal(q.udp_size, 1232);
	assert_true(q.question_end < n);
}

static void test_malformed_queries_are_dropped(void **state)
{
	uint8_t b[512];
	size_t n = query("a.example.test", DNS_TYPE_A, 1, 0, b);
	struct dns_question q;

	(void)state;
	assert_int_equal(dns_parse_query(b, 11, &q), -EBADMSG);
	assert_int_equal(dns_parse_query(b, n - 1, &q), -EBADMSG); /* question cut */
	assert_int_equal(dns_parse_query(b, 14, &q), -EBADMSG);	   /* name cut */
	b[2] |= 0x80;						   /* QR: a response */
	assert_int_equal(dns_parse_query(b, n, &q), -EBADMSG);
	b[2] &= 0x7f;
	/* A compression pointer to itself. */
	b[12] = 0xc0;
	b[13] = 12;
	assert_int_equal(dns_parse_query(b, n, &q), -EBADMSG);
	/* An EDNS record that claims more bytes than there are. */
	n = query("a.example.test", DNS_TYPE_A, 1, 4096, b);
	b[n - 1] = 0xff;
	b[n - 2] = 0xff;
	assert_int_equal(dns_parse_query(b, n, &q), -EBADMSG);
}

static void test_other_messages_get_a_refusal_or_nothing(void **state)
{
	uint8_t b[512], out[512];
	size_t n = query("version.bind", DNS_TYPE_A, 9, 0, b), r;
	struct dns_question q;

	(void)state;
	/* Class CHAOS: answered REFUSED. */
	b[n - 1] = 3;
	assert_int_equal(dns_parse_query(b, n, &q), -ENOTSUP);
	r = dns_refusal(b, &q, DNS_REFUSED, out, sizeof(out));
	assert_int_equal(r, n);
	assert_int_equal(out[3] & 0xf, DNS_REFUSED);
	/* An opcode other than QUERY (UPDATE, 5): NOTIMP. */
	n = query("x.test", DNS_TYPE_A, 9, 0, b);
	b[2] = (uint8_t)((b[2] & 0x87) | (5 << 3));
	assert_int_equal(dns_parse_query(b, n, &q), -ENOTSUP);
	assert_int_not_equal(q.question_end, 0);
	/* No question at all: nothing to echo, dropped. */
	b[5] = 0;
	assert_int_equal(dns_parse_query(b, n, &q), -ENOTSUP);
	assert_int_equal(q.question_end, 0);
	assert_int_equal(dns_refusal(b, &q, DNS_FORMERR, out, sizeof(out)), 0);
}

static void test_nxdomain_keeps_the_id_and_question(void **state)
{
	uint8_t b[512], out[512];
	size_t n = query("denied.example.test", DNS_TYPE_A, 0xbeef, 1232, b), r;
	struct dns_question q;
	struct hostent *h = NULL;
	struct ares_addrttl ttls[4];
	int nt = 4;

	(void)state;
	assert_int_equal(dns_parse_query(b, n, &q), 0);
	r = dns_refusal(b, &q, DNS_NXDOMAIN, out, sizeof(out));
	assert_int_equal(r, q.question_end);
	assert_int_equal(out[0] << 8 | out[1], 0xbeef);
	assert_int_equal(out[2], 0x81); /* QR, RD */
	assert_int_equal(out[3], 0x83); /* RA, NXDOMAIN */
	assert_memory_equal(out + 4, "\0\1\0\0\0\0\0\0", 8);
	assert_memory_equal(out + 12, b + 12, r - 12);
	assert_int_equal(dns_refusal(b, &q, DNS_NXDOMAIN, out, r - 1), 0);
	/* What a resolver library makes of it. */
	assert_int_equal(ares_parse_a_reply(out, (int)r, &h, ttls, &nt), ARES_ENODATA);
}

static void test_an_answer_through_a_cname_chain(void **state)
{
	static const uint8_t a1[4] = { 192, 0, 2, 1 }, a2[4] = { 192, 0, 2, 2 };
	uint8_t b[512];
	struct msg m;
	struct dns_question q;
	struct dns_answer a;

	(void)state;
	assert_int_equal(dns_parse_query(b, query("WWW.allowed.test", DNS_TYPE_A, 5, 0, b), &q), 0);
	header(&m, 5, 0x8180, 4);
	name(&m, "WWW.allowed.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	cname(&m, "WWW.allowed.test", 600, "edge.cdn.test");
	cname(&m, "edge.cdn.test", 120, "denied.example.test");
	rr(&m, "denied.example.test", DNS_TYPE_A, 300, a1, 4);
	rr(&m, "denied.example.test", DNS_TYPE_A, 60, a2, 4);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), 0);
	assert_int_equal(a.rcode, DNS_NOERROR);
	assert_int_equal(a.n_names, 3);
	assert_string_equal(a.names[0], "WWW.allowed.test");
	/* Every name of the chain is there to be checked against the policy. */
	for (const char *const *want =
		     (const char *const[]){ "edge.cdn.test", "denied.example.test", NULL };
	     *want; want++) {
		bool found = false;

		for (size_t i = 0; i < a.n_names; i++)
			found = found || strcmp(a.names[i], *want) == 0;
		assert_true(found);
	}
	assert_int_equal(a.n_addrs, 2);
	assert_int_equal(a.addrs[0].family, AF_INET);
	assert_memory_equal(a.addrs[0].addr, a1, 4);
	/* A learned address lives no longer than any record it came through. */
	assert_int_equal(a.addrs[0].ttl, 120);
	assert_int_equal(a.addrs[1].ttl, 60);
	assert_false(a.chain_cut || a.addrs_cut);
}

static void test_loops_long_chains_and_strays(void **state)
{
	static const uint8_t ip[4] = { 203, 0, 113, 9 };
	uint8_t b[512];
	struct msg m;
	struct dns_question q;
	struct dns_answer a;
	char owner[32], target[32];

	(void)state;
	assert_int_equal(dns_parse_query(b, query("a.loop.test", DNS_TYPE_A, 3, 0, b), &q), 0);
	/* a -> b -> a: refused as malformed. */
	header(&m, 3, 0x8180, 2);
	name(&m, "a.loop.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	cname(&m, "a.loop.test", 60, "b.loop.test");
	cname(&m, "b.loop.test", 60, "A.LOOP.test");
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), -EBADMSG);
	/* 20 hops: the chain is cut, and nothing is learned. */
	header(&m, 3, 0x8180, 21);
	name(&m, "a.loop.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	for (int i = 0; i < 20; i++) {
		snprintf(owner, sizeof(owner), i ? "h%d.loop.test" : "a.loop.test", i);
		snprintf(target, sizeof(target), "h%d.loop.test", i + 1);
		cname(&m, owner, 60, target);
	}
	rr(&m, "h20.loop.test", DNS_TYPE_A, 60, ip, 4);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), 0);
	assert_true(a.chain_cut);
	assert_int_equal(a.n_addrs, 0);
	/* An address for a name outside the chain is not learned. */
	header(&m, 3, 0x8180, 2);
	name(&m, "a.loop.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	rr(&m, "elsewhere.test", DNS_TYPE_A, 60, ip, 4);
	rr(&m, "a.loop.test", DNS_TYPE_A, 60, ip, 4);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), 0);
	assert_int_equal(a.n_addrs, 1);
	assert_int_equal(a.n_names, 1);
	/* A record whose length runs past the message. */
	m.b[m.n - 5] = 0x40;
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), -EBADMSG);
}

static void test_aaaa_nxdomain_and_answers_to_other_questions(void **state)
{
	uint8_t b[512], six[16];
	struct msg m;
	struct dns_question q;
	struct dns_answer a;

	(void)state;
	inet_pton(AF_INET6, "2001:db8::7", six);
	assert_int_equal(dns_parse_query(b, query("v6.allowed.test", DNS_TYPE_AAAA, 6, 0, b), &q),
			 0);
	header(&m, 6, 0x8180, 1);
	name(&m, "v6.allowed.test");
	u16(&m, DNS_TYPE_AAAA);
	u16(&m, 1);
	rr(&m, "v6.allowed.test", DNS_TYPE_AAAA, 30, six, 16);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), 0);
	assert_int_equal(a.n_addrs, 1);
	assert_int_equal(a.addrs[0].family, AF_INET6);
	assert_memory_equal(a.addrs[0].addr, six, 16);
	assert_int_equal(a.addrs[0].ttl, 30);
	/* NXDOMAIN: the question's name, no addresses. */
	header(&m, 6, 0x8183, 0);
	name(&m, "v6.allowed.test");
	u16(&m, DNS_TYPE_AAAA);
	u16(&m, 1);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), 0);
	assert_int_equal(a.rcode, DNS_NXDOMAIN);
	assert_int_equal(a.n_addrs, 0);
	assert_int_equal(a.n_names, 1);
	/* An answer to another name, or another type, is not this query's. */
	header(&m, 6, 0x8180, 0);
	name(&m, "other.test");
	u16(&m, DNS_TYPE_AAAA);
	u16(&m, 1);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), -EBADMSG);
	header(&m, 6, 0x8180, 0);
	name(&m, "v6.allowed.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	assert_int_equal(dns_parse_answer(m.b, m.n, &q, &a), -EBADMSG);
	/* A query is not an answer. */
	assert_int_equal(dns_parse_answer(b, q.question_end, &q, &a), -EBADMSG);
}

static void test_too_large_for_udp_is_truncated(void **state)
{
	uint8_t b[512];
	struct msg m;
	struct dns_question q;
	size_t n;

	(void)state;
	assert_int_equal(dns_parse_query(b, query("big.allowed.test", DNS_TYPE_A, 8, 0, b), &q), 0);
	header(&m, 8, 0x8180, 40);
	name(&m, "big.allowed.test");
	u16(&m, DNS_TYPE_A);
	u16(&m, 1);
	for (int i = 0; i < 40; i++) {
		uint8_t ip[4] = { 198, 51, 100, (uint8_t)i };

		rr(&m, "big.allowed.test", DNS_TYPE_A, 60, ip, 4);
	}
	assert_true(m.n > q.udp_size);
	n = dns_truncate(m.b, m.n, &q);
	assert_int_equal(n, q.question_end);
	assert_true(m.b[2] & 0x02); /* TC */
	assert_memory_equal(m.b + 6, "\0\0\0\0\0\0", 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_query_as_resolvers_send_it),
		cmocka_unit_test(test_malformed_queries_are_dropped),
		cmocka_unit_test(test_other_messages_get_a_refusal_or_nothing),
		cmocka_unit_test(test_nxdomain_keeps_the_id_and_question),
		cmocka_unit_test(test_an_answer_through_a_cname_chain),
		cmocka_unit_test(test_loops_long_chains_and_strays),
		cmocka_unit_test(test_aaaa_nxdomain_and_answers_to_other_questions),
		cmocka_unit_test(test_too_large_for_udp_is_truncated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
