/* sbx-dnstool: sbx-egress's DNS proxy with a recording learner in place of
 * the firewall, for the integration tests. It prints JSON lines on stdout:
 *
 *   {"event":"ready","listen":"127.0.0.1:PORT","upstream":"..."}
 *   {"event":"learn","name":...,"qtype":1,"addrs":["192.0.2.1"],"ttls":[60]}
 *   {"event":"decision","name":...,"qtype":1,"outcome":"allowed","verdict":"allow",
 *    "rule":"rules[0]","target":"*.allowed.test","denied":null,"addrs":1}
 *   {"event":"stats", ...}   (on SIGUSR1, and at exit)
 *
 * A "learn" line is written and flushed before the answer it belongs to is
 * sent, so a test can check that order. With --learn-fail every answer's
 * learning fails (the proxy must then answer SERVFAIL). SIGHUP reloads the
 * policy file; SIGTERM stops.
 */
#define _GNU_SOURCE
#include "policy.h"
#include "proxy.h"
#include "upstream.h"

#include "tool.h"

#include "sbx/alloc.h"
#include "sbx/json.h"
#include "sbx/kube_config.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static struct egress_policy *policy;
static const char *policy_file;
static bool learn_fail;
static struct proxy *proxy;
static struct upstream *up;

static json_t *addr_list(const struct dns_answer *a, json_t **ttls)
{
	json_t *out = json_array();

	*ttls = json_array();
	for (size_t i = 0; a && i < a->n_addrs; i++) {
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(a->addrs[i].family, a->addrs[i].addr, ip, sizeof(ip));
		json_array_append_new(out, json_string(ip));
		json_array_append_new(*ttls, json_integer(a->addrs[i].ttl));
	}
	return out;
}

static int learn(void *arg, const struct dns_question *q, const struct dns_answer *a)
{
	json_t *ttls, *addrs = addr_list(a, &ttls);

	(void)arg;
	print_line(json_pack("{s:s, s:s, s:i, s:o, s:o, s:b}", "event", "learn", "name", q->name,
			     "qtype", q->qtype, "addrs", addrs, "ttls", ttls, "failed",
			     learn_fail));
	return learn_fail ? -EIO : 0;
}

static void decided(void *arg, const struct proxy_decision *d)
{
	(void)arg;
	print_line(json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s?, s:s?, s:I}", "event", "decision",
			     "name", d->q->name, "qtype", d->q->qtype, "outcome",
			     proxy_outcome_name(d->outcome), "verdict", d->verdict, "rule", d->rule,
			     "target", d->target, "denied", d->denied_name, "addrs",
			     (json_int_t)(d->answer ? d->answer->n_addrs : 0)));
}

static void print_stats(void)
{
	const struct proxy_stats *s = proxy_stats(proxy);
	json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "event", "stats", "malformed",
			      (json_int_t)s->malformed, "busy", (json_int_t)s->busy, "inflight",
			      (json_int_t)s->inflight);

	for (int i = 0; i < PROXY_OUTCOMES; i++)
		json_object_set_new(o, proxy_outcome_name(i),
				    json_integer((json_int_t)s->outcomes[i]));
	print_line(o);
}

static int load(struct egress_policy **out)
{
	char err[512], *text = NULL;
	size_t len = 0;
	int rc = sbx_read_file(policy_file, 1u << 22, &text, &len);

	if (rc) {
		fprintf(stderr, "sbx-dnstool: %s: %s\n", policy_file, strerror(-rc));
		return rc;
	}
	rc = egress_policy_parse(text, len, NULL, 0, out, err, sizeof(err));
	sbx_free(text);
	if (rc)
		fprintf(stderr, "sbx-dnstool: %s\n", err);
	return rc;
}

static void on_signal(uv_signal_t *s, int signum)
{
	if (signum == SIGHUP) {
		struct egress_policy *p = NULL;

		if (load(&p) == 0) {
			egress_policy_free(policy);
			policy = p;
			print_line(json_pack("{s:s}", "event", "reloaded"));
		}
		return;
	}
	if (signum == SIGUSR1) {
		print_stats();
		return;
	}
	print_stats();
	upstream_free(up);
	proxy_free(proxy);
	uv_close((uv_handle_t *)s, NULL);
	uv_stop(s->loop);
}

int main(int argc, char **argv)
{
	static const struct option longs[] = { { "policy-file", required_argument, NULL, 'p' },
					       { "listen", required_argument, NULL, 'l' },
					       { "upstream", required_argument, NULL, 'u' },
					       { "refused", no_argument, NULL, 'r' },
					       { "learn-fail", no_argument, NULL, 'f' },
					       { "timeout-ms", required_argument, NULL, 't' },
					       { NULL, 0, NULL, 0 } };
	struct proxy_opts po = { .listen = "127.0.0.1:0", .deny_rcode = DNS_NXDOMAIN };
	struct upstream_opts uo = { 0 };
	struct proxy_hooks hooks = { .learn = learn, .decided = decided };
	uv_signal_t sigs[4];
	int signums[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	char err[512], servers[512];
	int c;

	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case 'p':
			policy_file = optarg;
			break;
		case 'l':
			po.listen = optarg;
			break;
		case 'u':
			uo.servers = optarg;
			break;
		case 'r':
			po.deny_rcode = DNS_REFUSED;
			break;
		case 'f':
			learn_fail = true;
			break;
		case 't':
			uo.timeout_ms = (unsigned)atoi(optarg);
			uo.tries = 1;
			break;
		default:
			return 2;
		}
	}
	if (!policy_file || load(&policy))
		return 2;
	if (upstream_new(uv_default_loop(), &uo, &up, err, sizeof(err)) ||
	    proxy_new(uv_default_loop(), &po, &policy, up, &hooks, &proxy, err, sizeof(err))) {
		fprintf(stderr, "sbx-dnstool: %s\n", err);
		return 1;
	}
	for (int i = 0; i < 4; i++) {
		uv_signal_init(uv_default_loop(), &sigs[i]);
		uv_signal_start(&sigs[i], on_signal, signums[i]);
		uv_unref((uv_handle_t *)&sigs[i]);
	}
	upstream_servers(up, servers, sizeof(servers));
	print_line(json_pack("{s:s, s:s, s:s}", "event", "ready", "listen", po.listen, "upstream",
			     servers));
	uv_run(uv_default_loop(), UV_RUN_DEFAULT);
	for (int i = 0; i < 4; i++)
		if (!uv_is_closing((uv_handle_t *)&sigs[i]))
			uv_close((uv_handle_t *)&sigs[i], NULL);
	uv_run(uv_default_loop(), UV_RUN_DEFAULT);
	egress_policy_free(policy);
	uv_loop_close(uv_default_loop());
	return 0;
}
