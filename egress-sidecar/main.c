/* sbx-egress: enforces a sandbox's FQDN egress policy through DNS and nftables.
 *
 * main() only parses the configuration, wires the modules and runs the loop.
 * This build has the policy (parse, validate, match: policy.c) and the
 * `check` command that shows it; the DNS proxy and the nftables rules come
 * next, and until then running the sidecar says so and exits 1.
 */
#define _GNU_SOURCE
#include "policy.h"

#include "sbx/alloc.h"
#include "sbx/config.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define POLICY_MAX_BYTES (4u << 20)

static char *policy_file;
static struct sbx_strv always_allow, always_deny;
static long max_rules = EGRESS_MAX_RULES;

static int load_policy(struct egress_policy **out)
{
	struct egress_extra extra = { .always_allow = (const char *const *)always_allow.v,
				      .n_allow = always_allow.n,
				      .always_deny = (const char *const *)always_deny.v,
				      .n_deny = always_deny.n };
	char err[512], *text = NULL;
	size_t len = 0;
	int rc;

	if (!policy_file || !*policy_file) {
		fprintf(stderr, "sbx-egress: --policy-file is required\n");
		return -EINVAL;
	}
	if ((rc = sbx_read_file(policy_file, POLICY_MAX_BYTES, &text, &len))) {
		fprintf(stderr, "sbx-egress: %s: %s\n", policy_file,
			rc == -E2BIG ? "larger than 4 MiB" : strerror(-rc));
		return rc;
	}
	rc = egress_policy_parse(text, len, &extra, (size_t)max_rules, out, err, sizeof(err));
	sbx_free(text);
	if (rc)
		fprintf(stderr, "sbx-egress: %s: %s\n", policy_file, err);
	return rc;
}

static void print_verdict(const char *what, struct egress_verdict v)
{
	if (v.rule)
		printf("%s\t%s\t%s[%u]\t%s\n", what, egress_action_name(v.action),
		       egress_origin_name(v.rule->origin), v.rule->index, v.rule->target);
	else
		printf("%s\t%s\tdefaultAction\t-\n", what, egress_action_name(v.action));
}

/* `sbx-egress check`: the compiled policy in evaluation order, or the verdict
 * for each name or address given. 0, or 1 when the policy is refused. */
static int check(int argc, char **argv)
{
	struct egress_policy *p = NULL;

	if (load_policy(&p))
		return 1;
	if (argc == 0) {
		printf("defaultAction\t%s\n", egress_action_name(egress_policy_default(p)));
		for (size_t i = 0; i < egress_policy_count(p); i++) {
			const struct egress_rule *r = egress_policy_rule(p, i);
			char canon[INET6_ADDRSTRLEN + 8] = "*";

			/* What the rule compares: the name in ASCII, the network. */
			if (r->kind == EGRESS_NAME)
				snprintf(canon, sizeof(canon), "%.*s", (int)sizeof(canon) - 1,
					 r->name);
			else if (r->kind == EGRESS_WILDCARD)
				snprintf(canon, sizeof(canon), "*.%.*s", (int)sizeof(canon) - 3,
					 r->name);
			else if (r->kind == EGRESS_NET &&
				 inet_ntop(r->net.family, r->net.addr, canon, sizeof(canon)))
				snprintf(canon + strlen(canon), sizeof(canon) - strlen(canon),
					 "/%u", r->net.prefix);
			printf("%zu\t%s[%u]\t%s\t%s\t%s\n", i, egress_origin_name(r->origin),
			       r->index, egress_action_name(r->action), r->target,
			       r->kind == EGRESS_ANY ? "*" : canon);
		}
	}
	for (int i = 0; i < argc; i++) {
		unsigned char addr[16];

		if (inet_pton(AF_INET, argv[i], addr) == 1)
			print_verdict(argv[i], egress_policy_addr(p, AF_INET, addr));
		else if (inet_pton(AF_INET6, argv[i], addr) == 1)
			print_verdict(argv[i], egress_policy_addr(p, AF_INET6, addr));
		else
			print_verdict(argv[i], egress_policy_name(p, argv[i]));
	}
	egress_policy_free(p);
	return 0;
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		{ .name = "policy-file",
		  .type = SBX_OPT_STRING,
		  .dest = &policy_file,
		  .metavar = "FILE",
		  .help = "the policy, JSON or YAML: {defaultAction, rules, alwaysAllow, "
			  "alwaysDeny} (docs/egress.md)" },
		{ .name = "always-allow",
		  .type = SBX_OPT_LIST,
		  .dest = &always_allow,
		  .metavar = "TARGET",
		  .help = "a name, *.name, IP or CIDR allowed above the policy's rules (repeat)" },
		{ .name = "always-deny",
		  .type = SBX_OPT_LIST,
		  .dest = &always_deny,
		  .metavar = "TARGET",
		  .help = "a name, *.name, IP or CIDR denied above the policy's rules, below "
			  "--always-allow (repeat)" },
		{ .name = "max-rules",
		  .type = SBX_OPT_INT,
		  .dest = &max_rules,
		  .metavar = "N",
		  .help = "refuse a policy with more rules than this, all lists together",
		  .min = 1,
		  .max = 65536 },
	};
	struct sbx_config cfg = {
		.program = "sbx-egress",
		.summary = "enforces a sandbox's FQDN egress policy through DNS and nftables.\n"
			   "  sbx-egress check [NAME|IP...]  shows the compiled policy, or the "
			   "verdict for each name or address",
		.usage = "[check [NAME|IP...]]",
		.env_prefix = "SBX_EGRESS_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc)
		return rc > 0 ? 0 : 2;
	if (cfg.argi < argc && strcmp(argv[cfg.argi], "check") == 0) {
		rc = check(argc - cfg.argi - 1, argv + cfg.argi + 1);
	} else if (cfg.argi < argc) {
		fprintf(stderr, "sbx-egress: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		rc = 2;
	} else {
		struct egress_policy *p = NULL;

		/* Refuse a bad policy before anything else, as the sidecar will. */
		if (load_policy(&p)) {
			rc = 1;
		} else {
			sbx_log_error("DNS interception and nftables enforcement are not part of "
				      "this build yet; the policy is valid",
				      SBX_LS("version", SBX_VERSION),
				      SBX_LI("rules", (long long)egress_policy_count(p)));
			egress_policy_free(p);
			rc = 1;
		}
	}
	sbx_config_release(&cfg);
	return rc;
}
