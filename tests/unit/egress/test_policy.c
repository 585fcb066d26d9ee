/* Unit tests for egress-sidecar/policy.c: what a policy file may say, and
 * which rule decides for a name, an answer's address and an IP literal. */
#include "unit.h"

#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

static struct egress_policy *parse_ok(const char *text)
{
	struct egress_policy *p = NULL;
	char err[256] = "";
	int rc = egress_policy_parse(text, strlen(text), NULL, 0, &p, err, sizeof(err));

	if (rc)
		fail_msg("policy refused: %s\n%s", err, text);
	return p;
}

static void parse_bad(const char *text, const char *want)
{
	struct egress_policy *p = NULL;
	char err[256] = "";
	int rc = egress_policy_parse(text, strlen(text), NULL, 0, &p, err, sizeof(err));

	if (rc != -EINVAL || p)
		fail_msg("accepted: %s", text);
	if (!strstr(err, want))
		fail_msg("message \"%s\" does not say \"%s\"", err, want);
}

/* "allow by rules[1]", "deny by default", ... */
static const char *says(struct egress_verdict v)
{
	static char buf[64];

	if (!v.rule)
		snprintf(buf, sizeof(buf), "%s by default", egress_action_name(v.action));
	else
		snprintf(buf, sizeof(buf), "%s by %s[%u]", egress_action_name(v.action),
			 egress_origin_name(v.rule->origin), v.rule->index);
	return buf;
}

static const char *name(const struct egress_policy *p, const char *n)
{
	return says(egress_policy_name(p, n));
}

static const char *ip(const struct egress_policy *p, const char *text)
{
	uint8_t a[16];
	int family = strchr(text, ':') ? AF_INET6 : AF_INET;

	assert_int_equal(inet_pton(family, text, a), 1);
	return says(egress_policy_addr(p, family, a));
}

static const char *answer(const struct egress_policy *p, const char *n, const char *text)
{
	uint8_t a[16];
	int family = strchr(text, ':') ? AF_INET6 : AF_INET;

	assert_int_equal(inet_pton(family, text, a), 1);
	return says(egress_policy_answer(p, egress_policy_name(p, n), family, a));
}

static void test_wildcards_match_subdomains_not_the_apex(void **state)
{
	struct egress_policy *p =
		parse_ok("{\"defaultAction\":\"deny\",\"rules\":["
			 "{\"action\":\"allow\",\"target\":\"*.allowed.test\"},"
			 "{\"action\":\"allow\",\"target\":\"exact.example.test\"}]}");

	(void)state;
	assert_string_equal(name(p, "a.allowed.test"), "allow by rules[0]");
	assert_string_equal(name(p, "x.y.z.allowed.test"), "allow by rules[0]");
	assert_string_equal(name(p, "allowed.test"), "deny by default");
	assert_string_equal(name(p, "notallowed.test"), "deny by default");
	assert_string_equal(name(p, "allowed.test.evil.com"), "deny by default");
	assert_string_equal(name(p, "exact.example.test"), "allow by rules[1]");
	assert_string_equal(name(p, "sub.exact.example.test"), "deny by default");
	assert_string_equal(name(p, "example.test"), "deny by default");
	egress_policy_free(p);
}

static void test_case_and_the_trailing_dot_do_not_matter(void **state)
{
	struct egress_policy *p = parse_ok("defaultAction: deny\n"
					   "rules:\n"
					   "- {action: allow, target: API.GitHub.com.}\n"
					   "- {action: allow, target: '*.PyPI.org'}\n");

	(void)state;
	assert_string_equal(name(p, "api.github.com"), "allow by rules[0]");
	assert_string_equal(name(p, "API.GITHUB.COM."), "allow by rules[0]");
	assert_string_equal(name(p, "Files.PYPI.org."), "allow by rules[1]");
	assert_string_equal(egress_policy_rule(p, 0)->name, "api.github.com");
	assert_string_equal(egress_policy_rule(p, 0)->target, "API.GitHub.com.");
	/* Not names a query can carry. */
	assert_string_equal(name(p, ""), "deny by default");
	assert_string_equal(name(p, "."), "deny by default");
	assert_string_equal(name(p, "api..github.com"), "deny by default");
	egress_policy_free(p);
}

static void test_the_first_matching_rule_wins(void **state)
{
	struct egress_policy *p =
		parse_ok("{\"defaultAction\":\"allow\",\"rules\":["
			 "{\"action\":\"deny\",\"target\":\"bad.pypi.org\"},"
			 "{\"action\":\"allow\",\"target\":\"*.pypi.org\"},"
			 "{\"action\":\"deny\",\"target\":\"*.files.pypi.org\"},"
			 "{\"action\":\"deny\",\"target\":\"*\"},"
			 "{\"action\":\"allow\",\"target\":\"late.example.com\"}]}");

	(void)state;
	assert_string_equal(name(p, "bad.pypi.org"), "deny by rules[0]");
	assert_string_equal(name(p, "good.pypi.org"), "allow by rules[1]");
	/* rules[1] comes first, although rules[2] is the longer suffix. */
	assert_string_equal(name(p, "x.files.pypi.org"), "allow by rules[1]");
	assert_string_equal(name(p, "late.example.com"), "deny by rules[3]");
	assert_string_equal(name(p, "anything.else"), "deny by rules[3]");
	assert_string_equal(ip(p, "192.0.2.1"), "deny by rules[3]");
	egress_policy_free(p);
}

static void test_always_lists_come_first_and_allow_beats_deny(void **state)
{
	static const char *const flag_allow[] = { "collector.obs.svc" };
	static const char *const flag_deny[] = { "169.254.169.254" };
	const char *text = "{\"defaultAction\":\"allow\","
			   "\"alwaysAllow\":[\"10.0.5.3\"],"
			   "\"alwaysDeny\":[\"10.0.0.0/8\",\"*.internal\"],"
			   "\"rules\":[{\"action\":\"allow\",\"target\":\"*\"},"
			   "{\"action\":\"allow\",\"target\":\"10.1.2.3\"}]}";
	struct egress_extra extra = {
		.always_allow = flag_allow, .n_allow = 1, .always_deny = flag_deny, .n_deny = 1
	};
	struct egress_policy *p = NULL;
	char err[256];

	(void)state;
	assert_int_equal(egress_policy_parse(text, strlen(text), &extra, 0, &p, err, sizeof(err)),
			 0);
	assert_int_equal(egress_policy_count(p), 7);
	/* The file's entries, then the flags', in each list. */
	assert_string_equal(name(p, "collector.obs.svc"), "allow by alwaysAllow[1]");
	assert_string_equal(ip(p, "10.0.5.3"), "allow by alwaysAllow[0]");
	assert_string_equal(ip(p, "10.1.2.3"), "deny by alwaysDeny[0]");
	assert_string_equal(ip(p, "169.254.169.254"), "deny by alwaysDeny[2]");
	assert_string_equal(name(p, "db.internal"), "deny by alwaysDeny[1]");
	assert_string_equal(name(p, "example.com"), "allow by rules[0]");
	assert_string_equal(ip(p, "203.0.113.9"), "allow by rules[0]");
	/* An allowed name whose answer is in an always-denied range. */
	assert_string_equal(answer(p, "example.com", "10.9.9.9"), "deny by alwaysDeny[0]");
	assert_string_equal(answer(p, "example.com", "203.0.113.9"), "allow by rules[0]");
	/* The always-allowed name keeps its address even inside the denied range. */
	assert_string_equal(answer(p, "collector.obs.svc", "10.0.7.7"), "allow by alwaysAllow[1]");
	egress_policy_free(p);
}

static void test_cidrs_both_families(void **state)
{
	struct egress_policy *p = parse_ok("{\"defaultAction\":\"deny\",\"rules\":["
					   "{\"action\":\"deny\",\"target\":\"203.0.113.128/25\"},"
					   "{\"action\":\"allow\",\"target\":\"203.0.113.0/24\"},"
					   "{\"action\":\"allow\",\"target\":\"2001:db8:1::/48\"},"
					   "{\"action\":\"allow\",\"target\":\"198.51.100.7\"},"
					   "{\"action\":\"allow\",\"target\":\"10.1.2.3/8\"}]}");

	(void)state;
	assert_string_equal(ip(p, "203.0.113.200"), "deny by rules[0]");
	assert_string_equal(ip(p, "203.0.113.5"), "allow by rules[1]");
	assert_string_equal(ip(p, "203.0.114.5"), "deny by default");
	assert_string_equal(ip(p, "2001:db8:1:ffff::1"), "allow by rules[2]");
	assert_string_equal(ip(p, "2001:db8:2::1"), "deny by default");
	assert_string_equal(ip(p, "198.51.100.7"), "allow by rules[3]");
	assert_string_equal(ip(p, "198.51.100.8"), "deny by default");
	/* Host bits are cleared. */
	assert_string_equal(ip(p, "10.200.0.1"), "allow by rules[4]");
	assert_int_equal(egress_policy_rule(p, 4)->net.addr[1], 0);
	/* An IPv4 rule says nothing about IPv6. */
	assert_string_equal(ip(p, "::ffff:203.0.113.5"), "deny by default");
	egress_policy_free(p);
}

static void test_idn_names_compare_in_punycode(void **state)
{
	struct egress_policy *p =
		parse_ok("{\"defaultAction\":\"deny\",\"rules\":["
			 "{\"action\":\"allow\",\"target\":\"b\xc3\xbc"
			 "cher.example\"},"
			 "{\"action\":\"allow\",\"target\":\"*.M\xc3\x9cNCHEN.test\"},"
			 "{\"action\":\"allow\",\"target\":\"xn--caf-dma.test\"}]}");

	(void)state;
	assert_string_equal(egress_policy_rule(p, 0)->name, "xn--bcher-kva.example");
	assert_string_equal(name(p, "xn--bcher-kva.example"), "allow by rules[0]");
	assert_string_equal(name(p, "XN--BCHER-KVA.EXAMPLE."), "allow by rules[0]");
	/* Upper-case Unicode is mapped (UTS #46) before it is encoded. */
	assert_string_equal(egress_policy_rule(p, 1)->name, "xn--mnchen-3ya.test");
	assert_string_equal(name(p, "www.xn--mnchen-3ya.test"), "allow by rules[1]");
	assert_string_equal(name(p, "xn--caf-dma.test"), "allow by rules[2]");
	assert_string_equal(name(p, "bucher.example"), "deny by default");
	egress_policy_free(p);
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\","
		  "\"target\":\"xn--a.test\"}]}",
		  "rules[0]: target \"xn--a.test\" is not a DNS name");
}

static void test_bad_policies_name_what_is_wrong(void **state)
{
	(void)state;
	parse_bad("", "must be a mapping");
	parse_bad("[1, 2]", "must be a mapping");
	parse_bad("{\"rules\":[]}", "defaultAction must be allow or deny");
	parse_bad("{\"defaultAction\":\"block\"}", "defaultAction must be allow or deny");
	parse_bad("{\"defaultAction\":\"deny\",\"rulez\":[]}", "unknown field \"rulez\"");
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":{}}", "rules: must be a list");
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\","
		  "\"target\":\"ok.test\"},{\"action\":\"maybe\",\"target\":\"x.test\"}]}",
		  "rules[1]: action must be allow or deny");
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\"}]}",
		  "rules[0]: target must be a string");
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\","
		  "\"target\":\"a.test\",\"port\":443}]}",
		  "rules[0]: unknown field \"port\"");
	for (const char *const *t =
		     (const char *const[]){ "bad name!", "a..b", "-a.test", "a-.test", "*.",
					    "**.a.test", "a.*.test", "10.0.0.0/33", "10.0.0.0/",
					    "2001:db8::/129", NULL };
	     *t; t++) {
		char text[256];

		snprintf(text, sizeof(text),
			 "{\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\","
			 "\"target\":\"%s\"}]}",
			 *t);
		parse_bad(text, "is not a DNS name, *.name, *, an IP address or a CIDR");
	}
	parse_bad("{\"defaultAction\":\"deny\",\"alwaysDeny\":[\"ok.test\", 7]}",
		  "alwaysDeny[1]: must be a string");
	parse_bad("{\"defaultAction\":\"deny\",\"alwaysAllow\":[\"a b\"]}",
		  "alwaysAllow[0]: target \"a b\"");
	parse_bad("{\"defaultAction\":\"deny\",\"rules\":[],\"egress\":[]}",
		  "rules and egress are the same list");
	parse_bad("defaultAction: [deny", "not JSON or YAML");
}

static void test_opensandbox_shape_is_accepted(void **state)
{
	struct egress_policy *p = parse_ok("{\"defaultAction\":\"deny\",\"egress\":["
					   "{\"action\":\"allow\",\"target\":\"pypi.org\"}]}");

	(void)state;
	assert_string_equal(name(p, "pypi.org"), "allow by rules[0]");
	assert_int_equal(egress_policy_default(p), EGRESS_DENY);
	egress_policy_free(p);
}

/* 4,096 rules: the limit holds, every rule is reachable, and the first of
 * duplicates wins. */
static void test_many_rules(void **state)
{
	size_t cap = 4096 * 80 + 128, len = 0;
	char *text = malloc(cap);
	struct egress_policy *p = NULL;
	char err[256], n[64];

	(void)state;
	len += (size_t)snprintf(text + len, cap - len, "{\"defaultAction\":\"deny\",\"rules\":[");
	for (int i = 0; i < 4096; i++)
		len += (size_t)snprintf(
			text + len, cap - len, "%s{\"action\":\"%s\",\"target\":\"%sh%d.test\"}",
			i ? "," : "", i % 3 ? "allow" : "deny", i % 2 ? "*." : "", i % 4000);
	len += (size_t)snprintf(text + len, cap - len, "]}");
	assert_int_equal(egress_policy_parse(text, len, NULL, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(egress_policy_count(p), 4096);
	assert_string_equal(name(p, "h10.test"), "allow by rules[10]"); /* 10 % 3 != 0 */
	assert_string_equal(name(p, "a.h11.test"), "allow by rules[11]");
	assert_string_equal(name(p, "h12.test"), "deny by rules[12]");
	/* h4000 is rules[0]'s name again (4000 % 4000 == 0): the first wins. */
	snprintf(n, sizeof(n), "h%d.test", 0);
	assert_string_equal(name(p, n), "deny by rules[0]");
	assert_string_equal(name(p, "h4000.test"), "deny by default");
	egress_policy_free(p);
	/* One more is refused, and so is any limit's excess. */
	text[len - 2] = '\0';
	len = strlen(text);
	len += (size_t)snprintf(text + len, cap - len,
				",{\"action\":\"allow\",\"target\":\"one-more.test\"}]}");
	p = NULL;
	assert_int_equal(egress_policy_parse(text, len, NULL, 0, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "4097 rules: at most 4096"));
	{
		const char *two = "{\"defaultAction\":\"deny\",\"rules\":["
				  "{\"action\":\"allow\",\"target\":\"a.test\"},"
				  "{\"action\":\"allow\",\"target\":\"b.test\"}]}";

		assert_int_equal(
			egress_policy_parse(two, strlen(two), NULL, 1, &p, err, sizeof(err)),
			-EINVAL);
		assert_non_null(strstr(err, "2 rules: at most 1"));
	}
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wildcards_match_subdomains_not_the_apex),
		cmocka_unit_test(test_case_and_the_trailing_dot_do_not_matter),
		cmocka_unit_test(test_the_first_matching_rule_wins),
		cmocka_unit_test(test_always_lists_come_first_and_allow_beats_deny),
		cmocka_unit_test(test_cidrs_both_families),
		cmocka_unit_test(test_idn_names_compare_in_punycode),
		cmocka_unit_test(test_bad_policies_name_what_is_wrong),
		cmocka_unit_test(test_opensandbox_shape_is_accepted),
		cmocka_unit_test(test_many_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
