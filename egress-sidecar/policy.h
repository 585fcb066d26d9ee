/* An egress policy, parsed, validated and compiled for matching.
 *
 * The shape (DESIGN.md section 5, docs/egress.md):
 *
 *   {"defaultAction": "deny",
 *    "rules": [{"action": "allow", "target": "*.pypi.org"}, ...],
 *    "alwaysAllow": ["otel.example.com"], "alwaysDeny": ["10.0.0.0/8"]}
 *
 * as JSON or YAML; "egress" is accepted for "rules" (OpenSandbox's shape).
 * A target is an exact name, "*.name" (subdomains, not the apex), "*", an IP
 * address or a CIDR. Names compare case-insensitively, without the trailing
 * dot, in their ASCII (punycode) form: a rule written in Unicode matches the
 * queries for its A-labels.
 *
 * Order: the always-allow list, then the always-deny list (so a collector
 * inside a denied range stays reachable), then the Sandbox's rules, then the
 * known DNS-over-HTTPS names (denied); the first rule that matches decides,
 * else the default action. The operator-level lists
 * come from the policy file and from the program's flags (both apply).
 */
#ifndef SBX_EGRESS_POLICY_H
#define SBX_EGRESS_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EGRESS_MAX_RULES 4096

enum egress_action { EGRESS_DENY, EGRESS_ALLOW };

enum egress_kind {
	EGRESS_NAME,	 /* api.github.com */
	EGRESS_WILDCARD, /* *.pypi.org: any name below pypi.org */
	EGRESS_ANY,	 /* * */
	EGRESS_NET,	 /* 203.0.113.7, 2001:db8::/32 */
};

/* EGRESS_DOH: the names of known DNS-over-HTTPS services, denied after every
 * other rule: reachable only when a rule allows them. */
enum egress_origin { EGRESS_ALWAYS_ALLOW, EGRESS_ALWAYS_DENY, EGRESS_RULES, EGRESS_DOH };

struct egress_net {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint8_t prefix;
};

struct egress_rule {
	enum egress_action action;
	enum egress_kind kind;
	enum egress_origin origin;
	unsigned index; /* its place in its own list */
	unsigned order; /* its place in the evaluation order */
	char *target;	/* as written */
	char *name;	/* NAME: the name; WILDCARD: the suffix without "*."; ASCII, lower case */
	struct egress_net net; /* NET */
};

/* What decided: rule is NULL when nothing matched and the default applied. */
struct egress_verdict {
	enum egress_action action;
	const struct egress_rule *rule;
};

struct egress_policy;

/* Lists given on the command line, added to the policy's own. */
struct egress_extra {
	const char *const *always_allow;
	size_t n_allow;
	const char *const *always_deny;
	size_t n_deny;
	const char *const *doh_names; /* names and *.names, denied last */
	size_t n_doh;
};

/* Parses and compiles text (JSON or YAML). 0 and *out, or -EINVAL with a
 * message naming the bad field or rule ("rules[3]: target \"a..b\" is not a
 * DNS name, *.name, *, an IP address or a CIDR") in err. max_rules bounds
 * the rules of all lists together, the DoH names aside (0: EGRESS_MAX_RULES). */
int egress_policy_parse(const char *text, size_t len, const struct egress_extra *extra,
			size_t max_rules, struct egress_policy **out, char *err, size_t err_size);
/* The same in two steps: the document (NULL with the reason in err), then
 * the policy from it (the document is not changed). */
json_t *egress_policy_load(const char *text, size_t len, char *err, size_t err_size);
int egress_policy_compile(const json_t *doc, const struct egress_extra *extra, size_t max_rules,
			  struct egress_policy **out, char *err, size_t err_size);
void egress_policy_free(struct egress_policy *p);

/* A DNS name as asked (any case, with or without the trailing dot). */
struct egress_verdict egress_policy_name(const struct egress_policy *p, const char *name);
/* An address in an answer to a name whose verdict is v: a NET rule placed
 * before v's rule (an always-deny range, say) overrides it. */
struct egress_verdict egress_policy_answer(const struct egress_policy *p, struct egress_verdict v,
					   int family, const void *addr);
/* A connection to an address no answer gave (an IP literal): NET rules and "*". */
struct egress_verdict egress_policy_addr(const struct egress_policy *p, int family,
					 const void *addr);

enum egress_action egress_policy_default(const struct egress_policy *p);
size_t egress_policy_count(const struct egress_policy *p);
/* Rules in evaluation order. */
const struct egress_rule *egress_policy_rule(const struct egress_policy *p, size_t i);

const char *egress_action_name(enum egress_action a);
const char *egress_origin_name(enum egress_origin o);

/* An IP address or CIDR ("10.0.0.0/8", "2001:db8::1"), host bits cleared;
 * false when text is neither. */
bool egress_net_parse(const char *text, struct egress_net *net);

/* Lower-cases name into out without the trailing dot; false when it is not a
 * name a query can carry (empty, too long, an empty label). */
bool egress_name_normalize(const char *name, char *out, size_t size);

#endif
