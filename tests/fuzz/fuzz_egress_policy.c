/* Fuzz target: sbx-egress's policy parser and matcher (a file or an admin API
 * body a platform writes). Every input must give a clean policy or a clean
 * error; an accepted policy is then asked about names and addresses taken
 * from its own rules, which must each be decided by a rule or the default. */
#include "policy.h"

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {
		"a.test", "x.y.allowed.test", "xn--bcher-kva.example", "API.Example.COM.", "", "."
	};
	struct egress_policy *p = NULL;
	char err[256];
	uint8_t any[16] = { 0 };

	if (egress_policy_parse((const char *)data, size, NULL, 0, &p, err, sizeof(err)) != 0)
		return 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct egress_verdict v = egress_policy_name(p, names[i]);

		egress_policy_answer(p, v, AF_INET, any);
		egress_policy_answer(p, v, AF_INET6, any);
	}
	for (size_t i = 0; i < egress_policy_count(p); i++) {
		const struct egress_rule *r = egress_policy_rule(p, i);
		struct egress_verdict v;

		if (r->name) {
			v = egress_policy_name(p, r->name);
			/* A name rule matches its own name (a wildcard: one below it). */
			if (r->kind == EGRESS_NAME && (!v.rule || v.rule->order > r->order))
				__builtin_trap();
		}
		if (r->kind == EGRESS_NET) {
			v = egress_policy_addr(p, r->net.family, r->net.addr);
			if (!v.rule || v.rule->order > r->order)
				__builtin_trap();
		}
	}
	egress_policy_free(p);
	return 0;
}
