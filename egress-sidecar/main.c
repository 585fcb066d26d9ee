/* sbx-egress: enforces a sandbox's FQDN egress policy through DNS and nftables.
 *
 * main() parses the configuration, wires the modules and runs the loop:
 * the policy (policy.c), the firewall table (firewall.c), the DNS proxy
 * (proxy.c) forwarding through c-ares (upstream.c), and the health and
 * metrics endpoints. `check` shows a policy; `cleanup` removes the table.
 */
#define _GNU_SOURCE
#include "sidecar.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/config.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"
#include "sbx/loop.h"
#include "sbx/metrics.h"
#include "sbx/version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#define POLICY_MAX_BYTES (4u << 20)

static char *policy_file;
static struct sbx_strv always_allow, always_deny;
static long max_rules = EGRESS_MAX_RULES;
static char *dns_listen = "127.0.0.1:15353";
static char *dns_listen6 = "[::1]:15353";
static char *upstream_servers_flag = "";
static char *resolv_conf = "/etc/resolv.conf";
static char *listen_addr = ":15380";
static char *deny_answer = "nxdomain";
static long mark = 0x5b0;
static long ttl_grace = 5, ttl_min = 5, ttl_max = 3600;
static long max_inflight = 1024;
static struct sbx_strv doh_block;
static char *admin_listen = "";
static char *admin_token_file = "";
static long decisions_kept = 1000;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;
static struct sbx_strv log_quiet;
static char *log_decisions = "all";
static char *policy_hash_file = "";

/* Known DNS-over-HTTPS services: their names are denied after every rule
 * (so only a rule that allows one by name reaches it) and port 443 to their
 * addresses is dropped unless such an answer gave them. Public resolvers
 * with published DoH endpoints; --doh-block replaces the list. */
static const char *const doh_default[] = {
	/* Cloudflare */ "cloudflare-dns.com",
	"*.cloudflare-dns.com",
	"one.one.one.one",
	"1.1.1.1",
	"1.0.0.1",
	"1.1.1.2",
	"1.0.0.2",
	"1.1.1.3",
	"1.0.0.3",
	"2606:4700:4700::1111",
	"2606:4700:4700::1001",
	"2606:4700:4700::1112",
	"2606:4700:4700::1002",
	"2606:4700:4700::1113",
	"2606:4700:4700::1003",
	/* Google */ "dns.google",
	"dns.google.com",
	"8.8.8.8",
	"8.8.4.4",
	"2001:4860:4860::8888",
	"2001:4860:4860::8844",
	/* Quad9 */ "dns.quad9.net",
	"*.dns.quad9.net",
	"9.9.9.9",
	"149.112.112.112",
	"9.9.9.10",
	"149.112.112.10",
	"9.9.9.11",
	"149.112.112.11",
	"2620:fe::/48",
	/* Cisco OpenDNS */ "doh.opendns.com",
	"*.opendns.com",
	"208.67.222.222",
	"208.67.220.220",
	"2620:119:35::35",
	"2620:119:53::53",
	/* AdGuard */ "dns.adguard-dns.com",
	"*.adguard-dns.com",
	"dns.adguard.com",
	"94.140.14.14",
	"94.140.15.15",
	"94.140.14.140",
	"94.140.14.141",
	"2a10:50c0::/32",
	/* NextDNS */ "dns.nextdns.io",
	"*.dns.nextdns.io",
	"45.90.28.0/24",
	"45.90.30.0/24",
	"2a07:a8c0::/32",
	"2a07:a8c1::/32",
	/* CleanBrowsing, Control D, Mullvad, Mozilla's */ "doh.cleanbrowsing.org",
	"*.cleanbrowsing.org",
	"185.228.168.9",
	"185.228.169.9",
	"freedns.controld.com",
	"*.controld.com",
	"76.76.2.0/24",
	"76.76.10.0/24",
	"dns.mullvad.net",
	"*.dns.mullvad.net",
	"194.242.2.0/24",
	"mozilla.cloudflare-dns.com",
	"doh.dns.sb",
	"185.222.222.222",
	"45.11.45.11",
};

/* The DoH list split into names (for the policy) and addresses (for the
 * firewall); both point into the list. */
static void doh_lists(const char **names, size_t *n_names, const char **nets, size_t *n_nets)
{
	const char *const *list = doh_default;
	size_t n = sizeof(doh_default) / sizeof(doh_default[0]);

	if (doh_block.n) {
		list = (const char *const *)doh_block.v;
		n = doh_block.n == 1 && strcmp(doh_block.v[0], "none") == 0 ? 0 : doh_block.n;
	}
	*n_names = *n_nets = 0;
	for (size_t i = 0; i < n; i++) {
		struct egress_net net;

		if (egress_net_parse(list[i], &net))
			nets[(*n_nets)++] = list[i];
		else
			names[(*n_names)++] = list[i];
	}
}

static const char *doh_names[1024], *doh_nets[1024];
static size_t n_doh_names, n_doh_nets;

static struct egress_extra policy_extra(void)
{
	return (struct egress_extra){ .always_allow = (const char *const *)always_allow.v,
				      .n_allow = always_allow.n,
				      .always_deny = (const char *const *)always_deny.v,
				      .n_deny = always_deny.n,
				      .doh_names = doh_names,
				      .n_doh = n_doh_names };
}

/* Reads and compiles the policy file; with text, keeps what it read there
 * (sbx_free it). Errors go to stderr. */
static int load_policy(struct egress_policy **out, char **text_out)
{
	struct egress_extra extra = policy_extra();
	char err[512], *text = NULL;
	json_t *doc = NULL;
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
	rc = -EINVAL;
	if ((doc = egress_policy_load(text, len, err, sizeof(err))))
		rc = egress_policy_compile(doc, &extra, (size_t)max_rules, out, err, sizeof(err));
	if (rc)
		fprintf(stderr, "sbx-egress: %s: %s\n", policy_file, err);
	json_decref(doc);
	if (!rc && text_out)
		*text_out = text;
	else
		sbx_free(text);
	return rc;
}

/* Gives the memory a policy's parsing left behind back to the system: the
 * sidecar's footprint is what it holds, not its peak. */
static void trim(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* The policy's digest as the operator wrote it next to the policy (the
 * ConfigMap's policy-hash key: the first 16 bytes of the text's SHA-256 in
 * hex, as status.egress.policyHash), or "" without one. The kubelet swaps
 * both files at once. Read, not computed: hashing would initialise
 * OpenSSL's providers, 2 MiB of the sidecar's memory. */
static void read_hash(char out[33])
{
	char *text = NULL, *dir;
	size_t len = 0, n;

	out[0] = '\0';
	if (*policy_hash_file) {
		sbx_read_file(policy_hash_file, 256, &text, &len);
	} else if ((dir = sbx_strdup(policy_file))) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/policy-hash", dirname(dir));
		sbx_free(dir);
		sbx_read_file(path, 256, &text, &len);
	}
	if (!text)
		return;
	n = strspn(text, "0123456789abcdef");
	if (n == 32) {
		memcpy(out, text, 32);
		out[32] = '\0';
	}
	sbx_free(text);
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

	if (load_policy(&p, NULL))
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

/* ---- the sidecar ---------------------------------------------------------- */

static int learn(void *arg, const struct dns_question *q, const struct dns_answer *a)
{
	struct egress *e = arg;
	int rc = firewall_learn(e->fw, a);

	(void)q;
	if (rc)
		e->learn_failures++;
	else
		e->learned += a->n_addrs;
	return rc;
}

/* Whether a decision goes to the log: --log-decisions, then --log-quiet. */
static bool logged(const struct proxy_decision *d, bool denied)
{
	if (strcmp(log_decisions, "none") == 0 || (!denied && strcmp(log_decisions, "denied") == 0))
		return false;
	for (size_t i = 0; i < log_quiet.n; i++)
		if (audit_name_matches(log_quiet.v[i], d->q->name))
			return false;
	return true;
}

static void decided(void *arg, const struct proxy_decision *d)
{
	struct egress *e = arg;
	char addrs[DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "";
	bool denied = d->outcome != PROXY_ALLOWED;
	uv_timeval64_t now;
	size_t n = 0;

	for (size_t i = 0; d->answer && i < d->answer->n_addrs && n < sizeof(addrs); i++) {
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(d->answer->addrs[i].family, d->answer->addrs[i].addr, ip, sizeof(ip));
		n += (size_t)snprintf(addrs + n, sizeof(addrs) - n, "%s%s", n ? "," : "", ip);
	}
	uv_gettimeofday(&now);
	audit_add(&e->audit, &(struct audit_record){ .time = (double)now.tv_sec + now.tv_usec / 1e6,
						     .name = d->q->name,
						     .qtype = d->q->qtype,
						     .outcome = proxy_outcome_name(d->outcome),
						     .verdict = d->verdict,
						     .rule = d->rule,
						     .target = d->target,
						     .denied = d->denied_name,
						     .addresses = addrs,
						     .upstream_ms = d->upstream_ms,
						     .refused = denied });
	if (!logged(d, denied))
		return;
	sbx_log_info("dns", SBX_LS("name", d->q->name), SBX_LI("qtype", d->q->qtype),
		     SBX_LS("outcome", proxy_outcome_name(d->outcome)),
		     SBX_LS("verdict", d->verdict), SBX_LS("rule", d->rule),
		     SBX_LS("target", d->target ? d->target : ""),
		     SBX_LS("denied", d->denied_name ? d->denied_name : ""),
		     SBX_LS("addresses", addrs), SBX_LD("upstream_ms", d->upstream_ms));
}

static void healthz(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	sbx_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void readyz(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;
	char body[256];
	int n = snprintf(body, sizeof(body),
			 "{\"status\":\"ok\",\"policyGeneration\":%lu,\"policyHash\":\"%s\","
			 "\"policySource\":\"%s\"}",
			 e->generation, e->policy_hash, e->api_text ? "api" : "file");

	sbx_http_respond(req, 200, "application/json", body, (size_t)n);
}

static void metrics(struct sbx_buf *b, void *arg)
{
	struct egress *e = arg;
	struct proxy_stats sum = *proxy_stats(e->proxy), *s = &sum;
	long learned_now = firewall_learned(e->fw);

	if (e->proxy6) {
		const struct proxy_stats *six = proxy_stats(e->proxy6);

		for (int i = 0; i < PROXY_OUTCOMES; i++)
			sum.outcomes[i] += six->outcomes[i];
		sum.malformed += six->malformed;
		sum.busy += six->busy;
		sum.inflight += six->inflight;
	}

	sbx_buf_printf(b, "# HELP sbx_egress_queries_total DNS queries by outcome\n"
			  "# TYPE sbx_egress_queries_total counter\n");
	for (int i = 0; i < PROXY_OUTCOMES; i++) {
		char label[48];

		snprintf(label, sizeof(label), "outcome=\"%s\"", proxy_outcome_name(i));
		sbx_metrics_more(b, "sbx_egress_queries_total", label, (double)s->outcomes[i]);
	}
	sbx_metrics_sample(b, "sbx_egress_queries_dropped_total", "counter",
			   "Queries dropped: malformed, or over the in-flight bound", "",
			   (double)(s->malformed + s->busy));
	sbx_metrics_sample(b, "sbx_egress_queries_inflight", "gauge", "Queries forwarded upstream",
			   "", (double)s->inflight);
	sbx_metrics_sample(b, "sbx_egress_learned_addresses_total", "counter",
			   "Addresses admitted from allowed answers", "", (double)e->learned);
	sbx_metrics_sample(b, "sbx_egress_learn_failures_total", "counter",
			   "Answers withheld because the firewall did not take their addresses", "",
			   (double)e->learn_failures);
	sbx_metrics_sample(b, "sbx_egress_learned_addresses", "gauge",
			   "Addresses in the allow sets now", "", (double)learned_now);
	sbx_metrics_sample(b, "sbx_egress_policy_generation", "gauge",
			   "Policies applied since start (1: the first)", "",
			   (double)e->generation);
	sbx_metrics_sample(b, "sbx_egress_policy_reload_failures_total", "counter",
			   "Policy changes refused (the previous policy stays)", "",
			   (double)e->reloads_failed);
	sbx_metrics_sample(b, "sbx_egress_policy_rules", "gauge", "Rules of the policy in force",
			   "", (double)egress_policy_count(e->policy));
	sbx_metrics_sample(b, "sbx_egress_policy_api_changes_total", "counter",
			   "Policies applied through the admin API", "", (double)e->api_changes);
	sbx_metrics_sample(b, "sbx_egress_policy_api_refused_total", "counter",
			   "Admin API changes refused (invalid, or a stale If-Match)", "",
			   (double)e->api_refused);
	sbx_metrics_sample(b, "sbx_egress_policy_from_api", "gauge",
			   "1 while a policy set through the admin API is in force", "",
			   e->api_text ? 1 : 0);
	sbx_metrics_sample(b, "sbx_egress_decisions_kept", "gauge",
			   "Decisions GET /decisions can return now", "", (double)e->audit.n);
	sbx_metrics_sample(b, "sbx_egress_decisions_dropped_total", "counter",
			   "Decisions not kept for GET /decisions (out of memory)", "",
			   (double)e->audit.dropped);
	sbx_metrics_sample(b, "sbx_egress_ready_seconds", "gauge",
			   "From exec to rules in and proxy listening", "", e->ready_ms / 1e3);
	sbx_metrics_http_server(b, e->http, "sbx_egress");
	if (e->admin)
		sbx_metrics_http_server(b, e->admin, "sbx_egress_admin");
}

/* The effective document: the file's, or the API's defaultAction and rules
 * with the file's always lists. NULL on -ENOMEM. */
static json_t *effective(json_t *file, json_t *api)
{
	json_t *rules;

	if (!api)
		return json_incref(file);
	rules = json_object_get(api, "rules") ?: json_object_get(api, "egress");
	return json_pack("{s:O*, s:O*, s:O*, s:O*}", "defaultAction",
			 json_object_get(api, "defaultAction"), "rules", rules, "alwaysAllow",
			 json_object_get(file, "alwaysAllow"), "alwaysDeny",
			 json_object_get(file, "alwaysDeny"));
}

json_t *egress_file_doc(const struct egress *e)
{
	char err[64];

	return egress_policy_load(e->policy_text, strlen(e->policy_text), err, sizeof(err));
}

json_t *egress_api_doc(const struct egress *e)
{
	return e->api_text ? json_loads(e->api_text, 0, NULL) : NULL;
}

int egress_set_policy(struct egress *e, json_t *file, json_t *api, char *err, size_t err_size)
{
	struct egress_extra extra = policy_extra();
	struct egress_policy *p = NULL;
	json_t *doc = effective(file, api);
	char *api_text = NULL;
	int rc = -ENOMEM;

	if (!doc || (api && !(api_text = sbx_json_dumps(api))))
		snprintf(err, err_size, "out of memory");
	else if (!(rc = egress_policy_compile(doc, &extra, (size_t)max_rules, &p, err, err_size)) &&
		 (rc = firewall_update(e->fw, p, err, err_size)))
		egress_policy_free(p);
	json_decref(doc);
	if (rc) {
		sbx_free(api_text);
		json_decref(file);
		json_decref(api);
		return rc;
	}
	egress_policy_free(e->policy);
	e->policy = p;
	sbx_free(e->api_text);
	e->api_text = api_text;
	json_decref(file);
	json_decref(api);
	e->generation++;
	trim();
	return 0;
}

/* The policy file changed (a ConfigMap update swaps a symlink in its
 * folder): apply it if it is valid and different. It replaces a policy the
 * admin API set: the file is the source of truth. */
static void reload(struct egress *e)
{
	char err[512], *text = NULL;
	bool had_api = e->api_text != NULL;
	json_t *doc;
	size_t len = 0;
	int rc = -EINVAL;

	if (sbx_read_file(policy_file, POLICY_MAX_BYTES, &text, &len))
		return; /* mid-swap; the next event brings it */
	if ((e->policy_text && strcmp(text, e->policy_text) == 0) ||
	    (e->refused_text && strcmp(text, e->refused_text) == 0)) {
		if (e->policy_text && strcmp(text, e->policy_text) == 0)
			read_hash(e->policy_hash); /* read mid-swap last time, maybe */
		sbx_free(text);
		return;
	}
	if ((doc = egress_policy_load(text, len, err, sizeof(err))))
		rc = egress_set_policy(e, doc, NULL, err, sizeof(err));
	if (rc) {
		e->reloads_failed++;
		sbx_log_error("policy refused; the previous one stays", SBX_LS("file", policy_file),
			      SBX_LS("error", err), SBX_LI("generation", (long long)e->generation));
		sbx_free(e->refused_text);
		e->refused_text = text;
		return;
	}
	sbx_free(e->policy_text);
	e->policy_text = text;
	read_hash(e->policy_hash);
	sbx_log_info("policy applied", SBX_LS("source", "file"), SBX_LS("file", policy_file),
		     SBX_LS("hash", e->policy_hash), SBX_LI("generation", (long long)e->generation),
		     SBX_LI("rules", (long long)egress_policy_count(e->policy)),
		     SBX_LB("replaced_api_policy", had_api));
}

static void on_policy_event(uv_fs_event_t *h, const char *name, int events, int status)
{
	(void)name;
	(void)events;
	if (status == 0)
		reload(h->data);
}

static void on_stop(void *arg)
{
	struct egress *e = arg;

	sbx_log_info("stopping; the firewall table stays (traffic stays blocked until "
		     "sbx-egress runs again or `sbx-egress cleanup`)");
	upstream_free(e->up);
	e->up = NULL;
	proxy_free(e->proxy);
	e->proxy = NULL;
	proxy_free(e->proxy6);
	e->proxy6 = NULL;
	if (e->watching)
		uv_close((uv_handle_t *)&e->watch, NULL);
	sbx_http_server_close(e->http, NULL, NULL);
	if (e->admin)
		sbx_http_server_close(e->admin, NULL, NULL);
	sbx_signals_close(&e->signals);
}

static int sidecar(void)
{
	uint64_t t0 = uv_hrtime();
	struct egress e = { .loop = uv_default_loop(),
			    .http_flags = &http_flags,
			    .policy_file = policy_file,
			    .admin_token_file = admin_token_file,
			    .generation = 1,
			    .flag_allow = (const char *const *)always_allow.v,
			    .n_flag_allow = always_allow.n,
			    .flag_deny = (const char *const *)always_deny.v,
			    .n_flag_deny = always_deny.n };
	struct upstream_opts uo = { .servers = upstream_servers_flag,
				    .resolv_conf = resolv_conf,
				    .mark = (uint32_t)mark };
	struct firewall_opts fo = { .mark = (uint32_t)mark,
				    .grace_s = (unsigned)ttl_grace,
				    .min_s = (unsigned)ttl_min,
				    .max_s = (unsigned)ttl_max,
				    .doh_nets = doh_nets,
				    .n_doh_nets = n_doh_nets };
	struct proxy_opts po = { .listen = dns_listen,
				 .max_inflight = (unsigned)max_inflight,
				 .deny_rcode = strcmp(deny_answer, "refused") == 0 ? DNS_REFUSED
										   : DNS_NXDOMAIN };
	struct proxy_hooks hooks = { .learn = learn, .decided = decided, .arg = &e };
	const struct sbx_http_route routes[] = {
		{ .method = "GET",
		  .pattern = "/healthz",
		  .fn = healthz,
		  .public = true,
		  .health = true },
		{ .method = "GET",
		  .pattern = "/readyz",
		  .fn = readyz,
		  .arg = &e,
		  .public = true,
		  .health = true },
		{ .method = "GET",
		  .pattern = "/metrics",
		  .fn = sbx_metrics_handle,
		  .public = true,
		  .health = true },
	};
	struct sbx_http_server_opts so = { .server_name = "sbx-egress" };
	const char *colon = strrchr(dns_listen, ':');
	char err[512], servers[512], *dir;
	int rc;

	if (strcmp(deny_answer, "nxdomain") != 0 && strcmp(deny_answer, "refused") != 0) {
		fprintf(stderr, "sbx-egress: --deny-answer: nxdomain or refused\n");
		return 2;
	}
	if (strcmp(log_decisions, "all") != 0 && strcmp(log_decisions, "denied") != 0 &&
	    strcmp(log_decisions, "none") != 0) {
		fprintf(stderr, "sbx-egress: --log-decisions: all, denied or none\n");
		return 2;
	}
	for (size_t i = 0; i < log_quiet.n; i++)
		if (!audit_pattern_valid(log_quiet.v[i])) {
			fprintf(stderr, "sbx-egress: --log-quiet %s: a name, *.name or *\n",
				log_quiet.v[i]);
			return 2;
		}
	/* Anything in the pod can reach the admin port: never without a token. */
	if (*admin_listen && !*admin_token_file) {
		fprintf(stderr, "sbx-egress: --admin-listen needs --admin-token-file (everything "
				"in the pod shares the network; the token keeps the app out)\n");
		return 2;
	}
	if (audit_init(&e.audit, (size_t)decisions_kept)) {
		fprintf(stderr, "sbx-egress: out of memory\n");
		return 1;
	}
	rc = 1;
	if (load_policy(&e.policy, &e.policy_text))
		goto out;
	read_hash(e.policy_hash);
	/* Never run open. The table goes in as one transaction that uses every
	 * kernel feature the rules need; when the kernel refuses it, the probes
	 * of firewall_check name what is missing. */
	fo.dns_port = (uint16_t)(colon ? atoi(colon + 1) : 53);
	if (firewall_new(&fo, e.policy, &e.fw, err, sizeof(err))) {
		char why[512];

		if (firewall_check(why, sizeof(why)))
			snprintf(err, sizeof(err), "%s", why);
		sbx_log_error("cannot enforce egress", SBX_LS("error", err));
		goto out;
	}
	if (upstream_new(e.loop, &uo, &e.up, err, sizeof(err)) ||
	    proxy_new(e.loop, &po, &e.policy, e.up, &hooks, &e.proxy, err, sizeof(err))) {
		sbx_log_error("cannot start", SBX_LS("error", err));
		goto out;
	}
	/* IPv6 DNS is redirected to ::1 on the same port. A pod without IPv6
	 * has no ::1: its IPv6 queries then fail, closed, as nothing answers. */
	if (*dns_listen6) {
		const char *c6 = strrchr(dns_listen6, ':');

		if (!c6 || atoi(c6 + 1) != fo.dns_port) {
			sbx_log_error("--dns-listen6 must use the port of --dns-listen (the rules "
				      "redirect both families to one port)",
				      SBX_LS("dns_listen", dns_listen),
				      SBX_LS("dns_listen6", dns_listen6));
			goto out;
		}
		po.listen = dns_listen6;
		if (proxy_new(e.loop, &po, &e.policy, e.up, &hooks, &e.proxy6, err, sizeof(err)))
			sbx_log_warn("no IPv6 DNS listener; IPv6 DNS queries will fail",
				     SBX_LS("error", err));
	}
	sbx_http_flags_apply(&http_flags, &so);
	if ((rc = sbx_http_server_new(e.loop, &so, routes, sizeof(routes) / sizeof(routes[0]),
				      &e.http)) ||
	    (rc = sbx_http_server_listen(e.http, listen_addr))) {
		sbx_log_error("cannot listen", SBX_LS("addr", listen_addr),
			      SBX_LS("error", uv_strerror(rc)));
		rc = 1;
		goto out;
	}
	if (*admin_listen && admin_start(&e, admin_listen, err, sizeof(err))) {
		sbx_log_error("cannot start", SBX_LS("error", err));
		goto out;
	}
	/* The folder, not the file: a ConfigMap update replaces a symlink. */
	uv_fs_event_init(e.loop, &e.watch);
	e.watch.data = &e;
	dir = sbx_strdup(policy_file);
	if (dir && uv_fs_event_start(&e.watch, on_policy_event, dirname(dir), 0) == 0)
		e.watching = true;
	else
		uv_close((uv_handle_t *)&e.watch, NULL);
	sbx_free(dir);
	sbx_metrics_register(metrics, &e);
	sbx_signals_init(e.loop, &e.signals, on_stop, &e);
	e.ready_ms = (double)(uv_hrtime() - t0) / 1e6;
	upstream_servers(e.up, servers, sizeof(servers));
	sbx_log_info("ready", SBX_LS("dns", dns_listen),
		     SBX_LS("dns6", e.proxy6 ? dns_listen6 : ""), SBX_LS("upstream", servers),
		     SBX_LS("listen", listen_addr), SBX_LS("admin", admin_listen),
		     SBX_LI("rules", (long long)egress_policy_count(e.policy)),
		     SBX_LS("default", egress_action_name(egress_policy_default(e.policy))),
		     SBX_LS("policy_hash", e.policy_hash), SBX_LD("ready_ms", e.ready_ms));
	/* Ready: what only starting needed can go now. */
	firewall_trim(e.fw);
	trim();
	uv_run(e.loop, UV_RUN_DEFAULT);
	rc = 0;
out:
	if (rc) {
		/* A start that failed: close what did start (the table stays: fail
		 * closed, as when the process dies). */
		upstream_free(e.up);
		proxy_free(e.proxy);
		proxy_free(e.proxy6);
		if (e.http)
			sbx_http_server_close(e.http, NULL, NULL);
		if (e.admin)
			sbx_http_server_close(e.admin, NULL, NULL);
		uv_run(e.loop, UV_RUN_NOWAIT);
	}
	firewall_free(e.fw);
	audit_release(&e.audit);
	sbx_free(e.api_text);
	egress_policy_free(e.policy);
	sbx_free(e.policy_text);
	sbx_free(e.refused_text);
	sbx_loop_close(e.loop);
	return rc;
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		SBX_HTTP_FLAG_OPTS(&http_flags),
		{ .name = "policy-file",
		  .type = SBX_OPT_STRING,
		  .dest = &policy_file,
		  .metavar = "FILE",
		  .help = "the policy, JSON or YAML: {defaultAction, rules, alwaysAllow, "
			  "alwaysDeny} (docs/egress.md); changes to it apply at once" },
		{ .name = "policy-hash-file",
		  .type = SBX_OPT_STRING,
		  .dest = &policy_hash_file,
		  .metavar = "FILE",
		  .help = "the policy's digest, reported as policyHash (empty: policy-hash next "
			  "to --policy-file, when there is one)" },
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
		{ .name = "dns-listen",
		  .type = SBX_OPT_STRING,
		  .dest = &dns_listen,
		  .metavar = "ADDR",
		  .help = "the DNS proxy, UDP and TCP; the pod's DNS is redirected to its port" },
		{ .name = "dns-listen6",
		  .type = SBX_OPT_STRING,
		  .dest = &dns_listen6,
		  .metavar = "ADDR",
		  .help = "the DNS proxy for IPv6 queries, on the same port (empty: none)" },
		{ .name = "upstream",
		  .type = SBX_OPT_STRING,
		  .dest = &upstream_servers_flag,
		  .metavar = "IP:PORT,...",
		  .help = "resolvers allowed queries go to (empty: the nameservers of "
			  "--resolv-conf)" },
		{ .name = "resolv-conf",
		  .type = SBX_OPT_STRING,
		  .dest = &resolv_conf,
		  .metavar = "FILE",
		  .help = "where the pod's own resolvers are listed" },
		{ .name = "deny-answer",
		  .type = SBX_OPT_STRING,
		  .dest = &deny_answer,
		  .metavar = "RCODE",
		  .help = "what a denied name gets: nxdomain or refused" },
		{ .name = "mark",
		  .type = SBX_OPT_INT,
		  .dest = &mark,
		  .metavar = "N",
		  .help = "SO_MARK of the proxy's upstream sockets, which the rules let out",
		  .min = 1,
		  .max = 0x7fffffff },
		{ .name = "ttl-grace",
		  .type = SBX_OPT_INT,
		  .dest = &ttl_grace,
		  .metavar = "S",
		  .help = "a learned address lives for its TTL plus this",
		  .min = 0,
		  .max = 3600 },
		{ .name = "ttl-min",
		  .type = SBX_OPT_INT,
		  .dest = &ttl_min,
		  .metavar = "S",
		  .help = "shortest life of a learned address",
		  .min = 1,
		  .max = 86400 },
		{ .name = "ttl-max",
		  .type = SBX_OPT_INT,
		  .dest = &ttl_max,
		  .metavar = "S",
		  .help = "longest life of a learned address",
		  .min = 1,
		  .max = 604800 },
		{ .name = "max-inflight",
		  .type = SBX_OPT_INT,
		  .dest = &max_inflight,
		  .metavar = "N",
		  .help = "queries forwarded at once; more are dropped and counted",
		  .min = 1,
		  .max = 65536 },
		{ .name = "doh-block",
		  .type = SBX_OPT_LIST,
		  .dest = &doh_block,
		  .metavar = "TARGET",
		  .help = "a DNS-over-HTTPS service's name, *.name, address or CIDR, blocked unless "
			  "a rule allows it (repeat; replaces the built-in list; none: no list)" },
		{ .name = "listen",
		  .type = SBX_OPT_STRING,
		  .dest = &listen_addr,
		  .metavar = "ADDR",
		  .help = "/healthz, /readyz (the startup probe) and /metrics" },
		{ .name = "admin-listen",
		  .type = SBX_OPT_STRING,
		  .dest = &admin_listen,
		  .metavar = "ADDR",
		  .help = "the admin API: GET/PUT/PATCH/DELETE /policy, GET /decisions (empty: "
			  "none)" },
		{ .name = "admin-token-file",
		  .type = SBX_OPT_STRING,
		  .dest = &admin_token_file,
		  .metavar = "FILE",
		  .help = "the bearer token the admin API requires, read at each request" },
		{ .name = "decisions-kept",
		  .type = SBX_OPT_INT,
		  .dest = &decisions_kept,
		  .metavar = "N",
		  .help = "recent decisions GET /decisions can return",
		  .min = 1,
		  .max = 1000000 },
		{ .name = "log-decisions",
		  .type = SBX_OPT_STRING,
		  .dest = &log_decisions,
		  .metavar = "WHICH",
		  .help = "decisions written to the log: all, denied or none (all are counted "
			  "and kept for GET /decisions)" },
		{ .name = "log-quiet",
		  .type = SBX_OPT_LIST,
		  .dest = &log_quiet,
		  .metavar = "PATTERN",
		  .help = "a name, *.name or * whose decisions stay out of the log (repeat)" },
	};
	struct sbx_config cfg = {
		.program = "sbx-egress",
		.summary = "enforces a sandbox's FQDN egress policy through DNS and nftables.\n"
			   "  sbx-egress                     the sidecar (needs CAP_NET_ADMIN)\n"
			   "  sbx-egress check [NAME|IP...]  shows the compiled policy, or the "
			   "verdict for each name or address\n"
			   "  sbx-egress cleanup             removes the firewall table (allows "
			   "everything again)",
		.usage = "[check [NAME|IP...] | cleanup]",
		.env_prefix = "SBX_EGRESS_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	if (doh_block.n > 1024) {
		fprintf(stderr, "sbx-egress: --doh-block: at most 1024 entries\n");
		sbx_config_release(&cfg);
		return 2;
	}
	doh_lists(doh_names, &n_doh_names, doh_nets, &n_doh_nets);
	if (cfg.argi < argc && strcmp(argv[cfg.argi], "check") == 0) {
		rc = check(argc - cfg.argi - 1, argv + cfg.argi + 1);
	} else if (cfg.argi + 1 == argc && strcmp(argv[cfg.argi], "cleanup") == 0) {
		char err[512];

		rc = firewall_cleanup(err, sizeof(err)) ? 1 : 0;
		if (rc)
			fprintf(stderr, "sbx-egress: %s\n", err);
	} else if (cfg.argi < argc) {
		fprintf(stderr, "sbx-egress: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		rc = 2;
	} else {
		rc = sidecar();
	}
	sbx_config_release(&cfg);
	return rc;
}
