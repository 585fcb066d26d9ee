/* Egress policy: parse, validate, compile, match (see policy.h).
 *
 * Compiled form: exact names in a hash map (name -> first rule), wildcard
 * suffixes in another (suffix -> first rule), the first "*" rule, and the NET
 * rules in order. A name is matched by one lookup for itself and one per
 * proper suffix (at most 127), so matching does not grow with the number of
 * rules; the first rule wins by its evaluation order. NET rules are scanned
 * in order for the addresses of an answer: the kernel's interval sets do the
 * per-packet work, not this code.
 */
#include "policy.h"

#include "sbx/alloc.h"
#include "sbx/json.h"
#include "sbx/map.h"
#include "sbx/yaml.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <idn2.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NAME_MAX_LEN 253
#define MAX_DEPTH    16

struct egress_policy {
	enum egress_action default_action;
	struct egress_rule *rules; /* evaluation order */
	size_t n_rules;
	struct sbx_map exact;	 /* name -> order + 1 */
	struct sbx_map wildcard; /* suffix -> order + 1 */
	long any;		 /* order of the first "*", or -1 */
	unsigned *nets;		 /* orders of NET rules, ascending */
	size_t n_nets;
};

const char *egress_action_name(enum egress_action a)
{
	return a == EGRESS_ALLOW ? "allow" : "deny";
}

const char *egress_origin_name(enum egress_origin o)
{
	switch (o) {
	case EGRESS_ALWAYS_ALLOW:
		return "alwaysAllow";
	case EGRESS_ALWAYS_DENY:
		return "alwaysDeny";
	case EGRESS_DOH:
		return "dohBlock";
	default:
		return "rules";
	}
}

__attribute__((format(printf, 3, 4))) static void fail(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (!err || !size)
		return;
	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
}

bool egress_name_normalize(const char *name, char *out, size_t size)
{
	size_t n = strlen(name), label = 0;

	if (n && name[n - 1] == '.')
		n--;
	if (n == 0 || n > NAME_MAX_LEN || n + 1 > size)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (++label > 63) {
			return false;
		}
		out[i] = (char)tolower(c);
	}
	if (label == 0)
		return false;
	out[n] = '\0';
	return true;
}

/* A host name rule: letters, digits and hyphens in labels of 1 to 63 that do
 * not start or end with a hyphen; underscores are allowed too, as in
 * service names (_acme-challenge.example.com). */
static bool ldh_name(const char *name)
{
	const char *label = name;

	for (const char *p = name;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t len = (size_t)(p - label);

			if (len == 0 || len > 63 || label[0] == '-' || p[-1] == '-')
				return false;
			if (*p == '\0')
				return true;
			label = p + 1;
		} else if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
			return false;
		}
	}
}

/* name (without "*." and the trailing dot) as the ASCII form queries carry,
 * lower case, into a new string; NULL when it is not a valid name. */
static char *ascii_name(const char *name)
{
	char buf[NAME_MAX_LEN + 2];
	bool ascii = true;

	for (const char *p = name; *p; p++)
		if ((unsigned char)*p >= 0x80)
			ascii = false;
	if (!ascii) {
		char *a = NULL;

		/* IDNA2008 with the UTS #46 mapping, as browsers and resolvers use. */
		if (idn2_to_ascii_8z(name, &a, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT) != IDN2_OK)
			return NULL;
		if (!egress_name_normalize(a, buf, sizeof(buf)) || !ldh_name(buf)) {
			idn2_free(a);
			return NULL;
		}
		idn2_free(a);
		return sbx_strdup(buf);
	}
	if (!egress_name_normalize(name, buf, sizeof(buf)) || !ldh_name(buf))
		return NULL;
	/* An A-label must be the encoding of a valid U-label: decoded and
	 * encoded again, it comes back the same. */
	for (const char *l = buf; l; l = strchr(l, '.') ? strchr(l, '.') + 1 : NULL) {
		if (strncmp(l, "xn--", 4) == 0) {
			char label[64], *u = NULL, *a = NULL;
			size_t len = strcspn(l, ".");
			bool same;

			memcpy(label, l, len);
			label[len] = '\0';
			if (idn2_to_unicode_8z8z(label, &u, 0) != IDN2_OK)
				return NULL;
			same = idn2_to_ascii_8z(u, &a, IDN2_NONTRANSITIONAL) == IDN2_OK &&
			       strcmp(a, label) == 0;
			idn2_free(u);
			idn2_free(a);
			if (!same)
				return NULL;
		}
	}
	return sbx_strdup(buf);
}

bool egress_net_parse(const char *text, struct egress_net *net)
{
	char buf[64], *slash, *end;
	long prefix;
	int max;

	if (strlen(text) >= sizeof(buf))
		return false;
	strcpy(buf, text);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, buf, net->addr) == 1) {
		net->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, net->addr) == 1) {
		net->family = AF_INET6;
		max = 128;
	} else {
		return false;
	}
	prefix = max;
	if (slash) {
		if (!isdigit((unsigned char)slash[1]))
			return false;
		errno = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (errno || *end || prefix < 0 || prefix > max)
			return false;
	}
	net->prefix = (uint8_t)prefix;
	/* Host bits are cleared: 10.1.2.3/8 is 10.0.0.0/8. */
	for (int bit = (int)prefix; bit < max; bit++)
		net->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	return true;
}

static bool net_contains(const struct egress_net *net, int family, const uint8_t *addr)
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;

	if (net->family != family)
		return false;
	if (memcmp(net->addr, addr, full) != 0)
		return false;
	return rest == 0 || ((net->addr[full] ^ addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

/* Fills r from target; false with err naming where. */
static bool compile_target(struct egress_rule *r, const char *where, char *err, size_t err_size)
{
	const char *t = r->target;

	if (strcmp(t, "*") == 0) {
		r->kind = EGRESS_ANY;
		return true;
	}
	if (egress_net_parse(t, &r->net)) {
		r->kind = EGRESS_NET;
		return true;
	}
	if (strncmp(t, "*.", 2) == 0) {
		r->kind = EGRESS_WILDCARD;
		r->name = ascii_name(t + 2);
	} else {
		r->kind = EGRESS_NAME;
		r->name = ascii_name(t);
	}
	if (!r->name) {
		fail(err, err_size,
		     "%s: target \"%s\" is not a DNS name, *.name, *, an IP address or a CIDR",
		     where, t);
		return false;
	}
	return true;
}

static void rule_release(struct egress_rule *r)
{
	sbx_free(r->target);
	sbx_free(r->name);
}

void egress_policy_free(struct egress_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_rules; i++)
		rule_release(&p->rules[i]);
	sbx_free(p->rules);
	sbx_map_release(&p->exact);
	sbx_map_release(&p->wildcard);
	sbx_free(p->nets);
	sbx_free(p);
}

/* Appends a rule; false with err set. */
static bool add_rule(struct egress_policy *p, size_t max_rules, enum egress_origin origin,
		     unsigned index, enum egress_action action, const char *target, char *err,
		     size_t err_size)
{
	struct egress_rule *r;
	char where[48];

	if (origin == EGRESS_RULES)
		snprintf(where, sizeof(where), "rules[%u]", index);
	else
		snprintf(where, sizeof(where), "%s[%u]", egress_origin_name(origin), index);
	if (p->n_rules >= max_rules) {
		fail(err, err_size, "%s: more than %zu rules", where, max_rules);
		return false;
	}
	if (!target || !*target || strlen(target) > NAME_MAX_LEN + 2) {
		fail(err, err_size, "%s: target must be a string of 1 to %d characters", where,
		     NAME_MAX_LEN + 2);
		return false;
	}
	r = &p->rules[p->n_rules];
	memset(r, 0, sizeof(*r));
	r->action = action;
	r->origin = origin;
	r->index = index;
	r->order = (unsigned)p->n_rules;
	if (!(r->target = sbx_strdup(target))) {
		fail(err, err_size, "out of memory");
		return false;
	}
	if (!compile_target(r, where, err, err_size)) {
		rule_release(r);
		return false;
	}
	p->n_rules++;
	return true;
}

static bool add_list(struct egress_policy *p, size_t max_rules, enum egress_origin origin,
		     const json_t *list, const char *const *extra, size_t n_extra, char *err,
		     size_t err_size)
{
	enum egress_action action = origin == EGRESS_ALWAYS_ALLOW ? EGRESS_ALLOW : EGRESS_DENY;
	unsigned index = 0;
	json_t *v;
	size_t i;

	if (list && !json_is_array(list)) {
		fail(err, err_size, "%s: must be a list of targets", egress_origin_name(origin));
		return false;
	}
	json_array_foreach(list, i, v)
	{
		if (!json_is_string(v)) {
			fail(err, err_size, "%s[%zu]: must be a string", egress_origin_name(origin),
			     i);
			return false;
		}
		if (!add_rule(p, max_rules, origin, index++, action, json_string_value(v), err,
			      err_size))
			return false;
	}
	for (i = 0; i < n_extra; i++)
		if (!add_rule(p, max_rules, origin, index++, action, extra[i], err, err_size))
			return false;
	return true;
}

static bool parse_action(const json_t *v, enum egress_action *out)
{
	const char *s = json_string_value(v);

	if (!s)
		return false;
	if (strcasecmp(s, "allow") == 0)
		*out = EGRESS_ALLOW;
	else if (strcasecmp(s, "deny") == 0)
		*out = EGRESS_DENY;
	else
		return false;
	return true;
}

static bool add_rules(struct egress_policy *p, size_t max_rules, const json_t *list, char *err,
		      size_t err_size)
{
	json_t *rule;
	size_t i;

	if (list && !json_is_array(list)) {
		fail(err, err_size, "rules: must be a list of {action, target}");
		return false;
	}
	json_array_foreach(list, i, rule)
	{
		enum egress_action action;
		const char *key;
		json_t *v;

		if (!json_is_object(rule)) {
			fail(err, err_size, "rules[%zu]: must be {action, target}", i);
			return false;
		}
		json_object_foreach(rule, key, v)
		{
			if (strcmp(key, "action") != 0 && strcmp(key, "target") != 0) {
				fail(err, err_size, "rules[%zu]: unknown field \"%s\"", i, key);
				return false;
			}
		}
		if (!parse_action(json_object_get(rule, "action"), &action)) {
			fail(err, err_size, "rules[%zu]: action must be allow or deny", i);
			return false;
		}
		if (!add_rule(p, max_rules, EGRESS_RULES, (unsigned)i, action,
			      json_string_value(json_object_get(rule, "target")), err, err_size))
			return false;
	}
	return true;
}

/* Builds the lookup tables; the first rule of a name or suffix wins. */
static bool compile(struct egress_policy *p)
{
	sbx_map_init(&p->exact, p->n_rules + 1);
	sbx_map_init(&p->wildcard, p->n_rules + 1);
	p->any = -1;
	if (!(p->nets = sbx_calloc(p->n_rules + 1, sizeof(*p->nets))))
		return false;
	for (size_t i = 0; i < p->n_rules; i++) {
		struct egress_rule *r = &p->rules[i];
		struct sbx_map *m = r->kind == EGRESS_NAME ? &p->exact : &p->wildcard;

		switch (r->kind) {
		case EGRESS_NAME:
		case EGRESS_WILDCARD:
			if (!sbx_map_get(m, r->name) &&
			    sbx_map_put(m, r->name, (void *)(uintptr_t)(i + 1), NULL))
				return false;
			break;
		case EGRESS_ANY:
			if (p->any < 0)
				p->any = (long)i;
			break;
		case EGRESS_NET:
			p->nets[p->n_nets++] = (unsigned)i;
			break;
		}
	}
	return true;
}

json_t *egress_policy_load(const char *text, size_t len, char *err, size_t err_size)
{
	char yerr[256];
	json_t *doc = sbx_yaml_load(text, len, MAX_DEPTH, yerr, sizeof(yerr));

	if (!doc)
		fail(err, err_size, "not JSON or YAML: %s", yerr);
	return doc;
}

int egress_policy_parse(const char *text, size_t len, const struct egress_extra *extra,
			size_t max_rules, struct egress_policy **out, char *err, size_t err_size)
{
	json_t *doc = egress_policy_load(text, len, err, err_size);
	int rc;

	if (!doc)
		return -EINVAL;
	rc = egress_policy_compile(doc, extra, max_rules, out, err, err_size);
	json_decref(doc);
	return rc;
}

int egress_policy_compile(const json_t *doc, const struct egress_extra *extra, size_t max_rules,
			  struct egress_policy **out, char *err, size_t err_size)
{
	static const char *const known[] = { "defaultAction", "rules",	    "egress",
					     "alwaysAllow",   "alwaysDeny", NULL };
	struct egress_extra none = { 0 };
	struct egress_policy *p = NULL;
	const char *key;
	json_t *v, *rules;
	size_t total;
	int rc = -EINVAL;

	if (!extra)
		extra = &none;
	if (!max_rules)
		max_rules = EGRESS_MAX_RULES;
	if (!json_is_object(doc)) {
		fail(err, err_size, "the policy must be a mapping {defaultAction, rules}");
		goto out;
	}
	json_object_foreach((json_t *)doc, key, v)
	{
		bool ok = false;

		for (const char *const *k = known; *k; k++)
			ok = ok || strcmp(key, *k) == 0;
		if (!ok) {
			fail(err, err_size, "unknown field \"%s\"", key);
			goto out;
		}
	}
	if (json_object_get(doc, "rules") && json_object_get(doc, "egress")) {
		fail(err, err_size, "rules and egress are the same list; give one");
		goto out;
	}
	rules = json_object_get(doc, "rules") ?: json_object_get(doc, "egress");
	total = json_array_size(rules) + json_array_size(json_object_get(doc, "alwaysAllow")) +
		json_array_size(json_object_get(doc, "alwaysDeny")) + extra->n_allow +
		extra->n_deny;
	if (total > max_rules) {
		fail(err, err_size, "%zu rules: at most %zu", total, max_rules);
		goto out;
	}
	rc = -ENOMEM;
	if (!(p = sbx_calloc(1, sizeof(*p))) ||
	    !(p->rules = sbx_calloc(total + extra->n_doh + 1, sizeof(*p->rules)))) {
		fail(err, err_size, "out of memory");
		goto out;
	}
	rc = -EINVAL;
	if (!parse_action(json_object_get(doc, "defaultAction"), &p->default_action)) {
		fail(err, err_size, "defaultAction must be allow or deny");
		goto out;
	}
	/* The DoH names are the program's, not the policy's: not counted. */
	max_rules += extra->n_doh;
	if (!add_list(p, max_rules, EGRESS_ALWAYS_ALLOW, json_object_get(doc, "alwaysAllow"),
		      extra->always_allow, extra->n_allow, err, err_size) ||
	    !add_list(p, max_rules, EGRESS_ALWAYS_DENY, json_object_get(doc, "alwaysDeny"),
		      extra->always_deny, extra->n_deny, err, err_size) ||
	    !add_rules(p, max_rules, rules, err, err_size) ||
	    !add_list(p, max_rules, EGRESS_DOH, NULL, extra->doh_names, extra->n_doh, err,
		      err_size))
		goto out;
	if (!compile(p)) {
		rc = -ENOMEM;
		fail(err, err_size, "out of memory");
		goto out;
	}
	*out = p;
	p = NULL;
	rc = 0;
out:
	egress_policy_free(p);
	return rc;
}

static struct egress_verdict verdict(const struct egress_policy *p, long order)
{
	if (order < 0)
		return (struct egress_verdict){ .action = p->default_action };
	return (struct egress_verdict){ .action = p->rules[order].action,
					.rule = &p->rules[order] };
}

static long first(long a, long b)
{
	return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

static long lookup(const struct sbx_map *m, const char *key)
{
	uintptr_t v = (uintptr_t)sbx_map_get(m, key);

	return v ? (long)v - 1 : -1;
}

struct egress_verdict egress_policy_name(const struct egress_policy *p, const char *name)
{
	char n[NAME_MAX_LEN + 2];
	long best = p->any;

	if (!egress_name_normalize(name, n, sizeof(n)))
		return verdict(p, best);
	best = first(best, lookup(&p->exact, n));
	/* Every proper suffix: b.example.com, example.com, com. */
	for (const char *s = strchr(n, '.'); s; s = strchr(s + 1, '.'))
		best = first(best, lookup(&p->wildcard, s + 1));
	return verdict(p, best);
}

static long first_net(const struct egress_policy *p, int family, const void *addr)
{
	for (size_t i = 0; i < p->n_nets; i++)
		if (net_contains(&p->rules[p->nets[i]].net, family, addr))
			return (long)p->nets[i];
	return -1;
}

struct egress_verdict egress_policy_answer(const struct egress_policy *p, struct egress_verdict v,
					   int family, const void *addr)
{
	long net = first_net(p, family, addr);

	if (net >= 0 && (!v.rule || (unsigned)net < v.rule->order))
		return verdict(p, net);
	return v;
}

struct egress_verdict egress_policy_addr(const struct egress_policy *p, int family,
					 const void *addr)
{
	return verdict(p, first(p->any, first_net(p, family, addr)));
}

enum egress_action egress_policy_default(const struct egress_policy *p)
{
	return p->default_action;
}

size_t egress_policy_count(const struct egress_policy *p)
{
	return p->n_rules;
}

const struct egress_rule *egress_policy_rule(const struct egress_policy *p, size_t i)
{
	return i < p->n_rules ? &p->rules[i] : NULL;
}
