/* sbx-operator: reconciles Sandbox objects into a Pod, a Service and a
 * NetworkPolicy each, and reports their state in the Sandbox's status.
 *
 * main() only parses the configuration, wires the modules (the Kubernetes
 * client, the reconciler, the health and metrics server) and runs the loop.
 */
#include "leader.h"
#include "reconcile.h"
#include "sandbox.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/config.h"
#include "sbx/http.h"
#include "sbx/kube.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"
#include "sbx/loop.h"
#include "sbx/metrics.h"
#include "sbx/version.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *kubeconfig;
static char *kube_context;
static char *gateway_url = "";
static char *agent_image = "sbx.local/sbx-agent:dev";
static char *cluster_domain = "cluster.local";
static char *ingress_namespace = "sbx-system";
static char *ingress_selector = "app.kubernetes.io/name=sbx-ingress";
static char *operator_namespace = "";
static char *operator_selector = "app.kubernetes.io/name=sbx-operator";
static struct sbx_strv deny_cidrs;
static char *egress_image = "sbx.local/sbx-egress:dev";
static struct sbx_strv egress_allow;
static struct sbx_strv egress_deny;
static struct sbx_strv namespaces;
static char *listen_addr = ":8081";
static long workers = 4;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;
static bool leader_elect;
static char *lease_namespace = "sbx-system";
static char *lease_name = "sbx-operator";
static char *identity;
static long lease_seconds = 10;

/* Where a sandbox may never connect: private and shared ranges (pods,
 * Services, nodes of any usual cluster) and link-local (cloud metadata). */
static const char *const default_deny_cidrs[] = {
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", NULL,
};

struct operator
{
	uv_loop_t *loop;
	struct sbx_kube *kube;
	struct reconciler *rec;
	struct leader *leader;
	struct sbx_http_server *http;
	struct sbx_signals signals;
	struct sandbox_settings settings;
	const char *const *namespaces; /* NULL: all */
	int exit_code;
};

static void healthz(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	sbx_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void readyz(struct sbx_http_req *req, void *arg)
{
	struct operator* op = arg;

	/* A standby is ready: it serves its endpoints and waits for the lease. */
	if (op->leader && !leader_is_leader(op->leader))
		sbx_http_respond(req, 200, "application/json", "{\"status\":\"standby\"}", 20);
	else if (reconciler_synced(op->rec))
		sbx_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
	else
		sbx_http_respond_error(req, 503, "the caches have not listed everything yet");
}

/* The HELP and TYPE lines of a metric whose samples follow (sbx_metrics_more). */
static void header(struct sbx_buf *b, const char *name, const char *type, const char *help)
{
	sbx_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics(struct sbx_buf *b, void *arg)
{
	static const char *const verbs[] = {
		"GET", "POST", "PUT", "PATCH", "DELETE", "WATCH", NULL
	};
	struct operator* op = arg;
	const struct reconciler_stats *s = reconciler_stats(op->rec);
	size_t phases[RECONCILER_PHASES];

	sbx_metrics_sample(b, "sbx_operator_reconciles_total", "counter",
			   "Reconcile passes finished", "", (double)s->passes);
	sbx_metrics_sample(b, "sbx_operator_reconcile_errors_total", "counter",
			   "Reconcile passes that failed and were retried", "",
			   (double)s->failures);
	header(b, "sbx_operator_reconcile_duration_seconds", "histogram",
	       "How long reconcile passes take");
	for (int i = 0; i < RECONCILER_BUCKETS; i++) {
		char le[48];

		snprintf(le, sizeof(le), "le=\"%g\"", reconciler_bucket_bounds[i]);
		sbx_metrics_more(b, "sbx_operator_reconcile_duration_seconds_bucket", le,
				 (double)s->pass_buckets[i]);
	}
	sbx_metrics_more(b, "sbx_operator_reconcile_duration_seconds_bucket", "le=\"+Inf\"",
			 (double)s->passes);
	sbx_metrics_more(b, "sbx_operator_reconcile_duration_seconds_sum", "",
			 (double)s->pass_us_total / 1e6);
	sbx_metrics_more(b, "sbx_operator_reconcile_duration_seconds_count", "", (double)s->passes);
	sbx_metrics_sample(b, "sbx_operator_child_writes_total", "counter",
			   "Pods, Services and NetworkPolicies created, changed or deleted", "",
			   (double)(s->writes + s->deletes));
	sbx_metrics_sample(b, "sbx_operator_status_writes_total", "counter",
			   "Sandbox status updates", "", (double)s->status_writes);
	sbx_metrics_sample(b, "sbx_operator_conflicts_total", "counter",
			   "Status writes refused with 409 (the Sandbox had changed)", "",
			   (double)s->conflicts);
	sbx_metrics_sample(b, "sbx_operator_egress_probes_total", "counter",
			   "GETs of egress sidecars' /readyz (which policy they enforce)", "",
			   (double)s->egress_probes);
	sbx_metrics_sample(b, "sbx_operator_events_total", "counter",
			   "Kubernetes Events posted on Sandboxes", "", (double)s->events);
	sbx_metrics_sample(b, "sbx_operator_queue_depth", "gauge", "Sandbox keys waiting", "",
			   (double)reconciler_queue_len(op->rec));
	sbx_metrics_sample(b, "sbx_operator_sandboxes", "gauge", "Sandboxes in the cache", "",
			   (double)reconciler_sandboxes(op->rec));
	sbx_metrics_sample(b, "sbx_operator_cache_bytes", "gauge",
			   "Bytes the cached Sandboxes and children take, compressed", "",
			   (double)reconciler_cache_bytes(op->rec));
	reconciler_phases(op->rec, phases);
	header(b, "sbx_operator_sandboxes_by_phase", "gauge",
	       "Cached Sandboxes by status.phase (None: no status yet)");
	for (int i = 0; i < RECONCILER_PHASES; i++) {
		char label[48];

		snprintf(label, sizeof(label), "phase=\"%s\"",
			 reconciler_phase_names[i][0] ? reconciler_phase_names[i] : "None");
		sbx_metrics_more(b, "sbx_operator_sandboxes_by_phase", label, (double)phases[i]);
	}
	header(b, "sbx_operator_apiserver_requests_total", "counter",
	       "Requests sent to the apiserver, by verb");
	for (const char *const *v = verbs; *v; v++) {
		char label[32];

		snprintf(label, sizeof(label), "verb=\"%s\"", *v);
		sbx_metrics_more(b, "sbx_operator_apiserver_requests_total", label,
				 (double)sbx_kube_requests(op->kube, *v));
	}
	sbx_metrics_sample(b, "sbx_operator_synced", "gauge", "1 when every cache has listed", "",
			   reconciler_synced(op->rec) ? 1 : 0);
	sbx_metrics_sample(b, "sbx_operator_leader", "gauge",
			   "1 when this replica reconciles (always, without --leader-elect)", "",
			   !op->leader || leader_is_leader(op->leader) ? 1 : 0);
	sbx_metrics_http_server(b, op->http, "sbx_operator");
}

static void on_http_closed(void *arg)
{
	struct operator* op = arg;

	sbx_signals_close(&op->signals);
}

static void on_stop(void *arg)
{
	struct operator* op = arg;

	sbx_log_info("stopping");
	leader_free(op->leader);
	op->leader = NULL;
	reconciler_stop(op->rec);
	sbx_kube_free(op->kube);
	op->kube = NULL;
	sbx_http_server_close(op->http, on_http_closed, op);
}

static void on_elected(void *arg)
{
	struct operator* op = arg;

	reconciler_start(op->rec);
}

/* A leader that could not renew may already be replaced: stop writing at
 * once, and let the Deployment start this replica again as a candidate. */
static void on_lost(void *arg)
{
	struct operator* op = arg;

	sbx_log_error("no longer the leader; exiting");
	op->exit_code = 1;
	on_stop(op);
}

static int start_leading(struct operator* op)
{
	char host[256];
	struct leader_opts lo = { .ns = lease_namespace,
				  .name = lease_name,
				  .identity = identity,
				  .lease_s = (unsigned)lease_seconds,
				  .renew_s =
					  (unsigned)(lease_seconds / 3 ? lease_seconds / 3 : 1) };
	struct leader_handlers lh = { on_elected, on_lost };
	int rc;

	if (!leader_elect)
		return reconciler_start(op->rec);
	if (!lo.identity || !*lo.identity) {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "sbx-operator");
		host[sizeof(host) - 1] = '\0';
		lo.identity = host;
	}
	if ((rc = leader_new(op->loop, op->kube, &lo, &lh, op, &op->leader)))
		return rc;
	sbx_log_info("waiting for the leader lease", SBX_LS("namespace", lease_namespace),
		     SBX_LS("name", lease_name), SBX_LS("identity", lo.identity));
	return leader_start(op->leader);
}

static int run(struct operator* op)
{
	const struct sbx_http_route routes[] = {
		{ .method = "GET",
		  .pattern = "/healthz",
		  .fn = healthz,
		  .public = true,
		  .health = true },
		{ .method = "GET",
		  .pattern = "/readyz",
		  .fn = readyz,
		  .arg = op,
		  .public = true,
		  .health = true },
		{ .method = "GET",
		  .pattern = "/metrics",
		  .fn = sbx_metrics_handle,
		  .public = true,
		  .health = true },
	};
	struct sbx_http_server_opts so = { .server_name = "sbx-operator" };
	struct sbx_kube_config kc = { 0 };
	struct sbx_kube_opts ko = { .user_agent = "sbx-operator/" SBX_VERSION };
	char err[512];
	int rc;

	if ((rc = sbx_kube_config_load(&kc, kubeconfig, kube_context, err, sizeof(err)))) {
		sbx_log_error("cannot reach the Kubernetes API", SBX_LS("error", err));
		return 1;
	}
	sbx_log_info("Kubernetes API", SBX_LS("server", kc.server), SBX_LS("from", kc.source));
	rc = sbx_kube_new(op->loop, &kc, &ko, &op->kube);
	sbx_kube_config_release(&kc);
	if (rc) {
		sbx_log_error("cannot create the Kubernetes client", SBX_LERR(rc));
		return 1;
	}
	if ((rc = reconciler_new(op->loop, op->kube, &op->settings, (unsigned)workers,
				 op->namespaces, &op->rec))) {
		sbx_log_error("cannot create the reconciler", SBX_LERR(rc));
		sbx_kube_free(op->kube);
		return 1;
	}
	sbx_http_flags_apply(&http_flags, &so);
	sbx_http_server_new(op->loop, &so, routes, sizeof(routes) / sizeof(routes[0]), &op->http);
	if ((rc = sbx_http_server_listen(op->http, listen_addr))) {
		sbx_log_error("cannot listen", SBX_LS("addr", listen_addr),
			      SBX_LS("error", uv_strerror(rc)));
		sbx_http_server_close(op->http, NULL, NULL);
		reconciler_stop(op->rec);
		sbx_kube_free(op->kube);
		uv_run(op->loop, UV_RUN_DEFAULT);
		reconciler_free(op->rec);
		return 1;
	}
	sbx_metrics_register(metrics, op);
	sbx_signals_init(op->loop, &op->signals, on_stop, op);
	if ((rc = start_leading(op))) {
		sbx_log_error("cannot start", SBX_LERR(rc));
		op->exit_code = 1;
		on_stop(op);
	}
	sbx_log_info("running", SBX_LS("listen", listen_addr),
		     SBX_LI("port", sbx_http_server_port(op->http)), SBX_LS("version", SBX_VERSION),
		     SBX_LS("agent_image", agent_image), SBX_LS("egress_image", egress_image),
		     SBX_LS("gateway_url", gateway_url), SBX_LI("workers", workers));
	uv_run(op->loop, UV_RUN_DEFAULT);
	reconciler_free(op->rec);
	return op->exit_code;
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		SBX_HTTP_FLAG_OPTS(&http_flags),
		{ .name = "kubeconfig",
		  .type = SBX_OPT_STRING,
		  .dest = &kubeconfig,
		  .metavar = "FILE",
		  .env = "KUBECONFIG",
		  .help = "kubeconfig file (else in-cluster, else ~/.kube/config)" },
		{ .name = "context",
		  .type = SBX_OPT_STRING,
		  .dest = &kube_context,
		  .metavar = "NAME",
		  .help = "kubeconfig context (default: the current one)" },
		{ .name = "gateway-url",
		  .type = SBX_OPT_STRING,
		  .dest = &gateway_url,
		  .metavar = "URL",
		  .help = "base of endpoint URLs: URL/sandboxes/ID/port/PORT (unset: the Service's "
			  "in-cluster URL)" },
		{ .name = "agent-image",
		  .type = SBX_OPT_STRING,
		  .dest = &agent_image,
		  .metavar = "IMAGE",
		  .help = "image with the agent bundle at /opt/sbx" },
		{ .name = "cluster-domain",
		  .type = SBX_OPT_STRING,
		  .dest = &cluster_domain,
		  .metavar = "DOMAIN",
		  .help = "the cluster's DNS domain, for serviceFQDN" },
		{ .name = "ingress-namespace",
		  .type = SBX_OPT_STRING,
		  .dest = &ingress_namespace,
		  .metavar = "NS",
		  .help = "namespace of the sbx-ingress pods" },
		{ .name = "ingress-selector",
		  .type = SBX_OPT_STRING,
		  .dest = &ingress_selector,
		  .metavar = "KEY=VALUE",
		  .help = "label of the sbx-ingress pods: the only pods a sandbox admits" },
		{ .name = "operator-namespace",
		  .type = SBX_OPT_STRING,
		  .dest = &operator_namespace,
		  .metavar = "NS",
		  .help = "namespace of this operator's pods (default: $POD_NAMESPACE; empty: "
			  "it runs outside the cluster), which Sandboxes with spec.egress admit on "
			  "the sidecar's health port" },
		{ .name = "operator-selector",
		  .type = SBX_OPT_STRING,
		  .dest = &operator_selector,
		  .metavar = "KEY=VALUE",
		  .help = "label of this operator's pods, for the same rule" },
		{ .name = "deny-cidr",
		  .type = SBX_OPT_LIST,
		  .dest = &deny_cidrs,
		  .metavar = "CIDR",
		  .help = "a range sandboxes never reach (repeat; default: 10/8, 172.16/12, "
			  "192.168/16, 100.64/10, 169.254/16)" },
		{ .name = "egress-image",
		  .type = SBX_OPT_STRING,
		  .dest = &egress_image,
		  .metavar = "IMAGE",
		  .help = "the sbx-egress sidecar's image, for Sandboxes with spec.egress (empty: "
			  "such Sandboxes fail with InvalidSpec)" },
		{ .name = "egress-always-allow",
		  .type = SBX_OPT_LIST,
		  .dest = &egress_allow,
		  .metavar = "TARGET",
		  .help = "a name, *.name, IP or CIDR every egress policy allows, above its own "
			  "rules (repeat; e.g. a telemetry collector)" },
		{ .name = "egress-always-deny",
		  .type = SBX_OPT_LIST,
		  .dest = &egress_deny,
		  .metavar = "TARGET",
		  .help = "a name, *.name, IP or CIDR every egress policy denies, above its own "
			  "rules (repeat; default: the --deny-cidr ranges)" },
		{ .name = "listen",
		  .type = SBX_OPT_STRING,
		  .dest = &listen_addr,
		  .metavar = "ADDR",
		  .help = "health and metrics: /healthz, /readyz, /metrics" },
		{ .name = "workers",
		  .type = SBX_OPT_INT,
		  .dest = &workers,
		  .metavar = "N",
		  .help = "Sandboxes reconciled at once",
		  .min = 1,
		  .max = 256 },
		{ .name = "namespace",
		  .type = SBX_OPT_LIST,
		  .dest = &namespaces,
		  .metavar = "NS",
		  .help = "watch only this namespace (repeat; default: all)" },
		{ .name = "leader-elect",
		  .type = SBX_OPT_BOOL,
		  .dest = &leader_elect,
		  .help = "reconcile only while holding the Lease (run several replicas)" },
		{ .name = "leader-election-namespace",
		  .type = SBX_OPT_STRING,
		  .dest = &lease_namespace,
		  .metavar = "NS",
		  .env = "POD_NAMESPACE",
		  .help = "namespace of the Lease" },
		{ .name = "leader-election-name",
		  .type = SBX_OPT_STRING,
		  .dest = &lease_name,
		  .metavar = "NAME",
		  .help = "name of the Lease" },
		{ .name = "leader-election-identity",
		  .type = SBX_OPT_STRING,
		  .dest = &identity,
		  .metavar = "ID",
		  .env = "POD_NAME",
		  .help = "this replica's name in the Lease (default: the host name)" },
		{ .name = "lease-seconds",
		  .type = SBX_OPT_INT,
		  .dest = &lease_seconds,
		  .metavar = "S",
		  .min = 3,
		  .max = 300,
		  .help = "a leader that has not renewed for this long is replaced" },
	};
	struct sbx_config cfg = {
		.program = "sbx-operator",
		.summary = "reconciles Sandbox objects (sbx.dev/v1alpha1) into a Pod, a ClusterIP\n"
			   "Service and a NetworkPolicy each, and reports phase, conditions and\n"
			   "endpoint URLs in their status.",
		.env_prefix = "SBX_OPERATOR_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	struct operator op = { .loop = uv_default_loop() };
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	if (cfg.argi < argc) {
		fprintf(stderr, "sbx-operator: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		sbx_config_release(&cfg);
		return 2;
	}
	if (!strchr(ingress_selector, '=')) {
		fprintf(stderr, "sbx-operator: --ingress-selector wants KEY=VALUE, got '%s'\n",
			ingress_selector);
		sbx_config_release(&cfg);
		return 2;
	}
	if (!*operator_namespace && getenv("POD_NAMESPACE"))
		operator_namespace = getenv("POD_NAMESPACE");
	if (!strchr(operator_selector, '=')) {
		fprintf(stderr, "sbx-operator: --operator-selector wants KEY=VALUE, got '%s'\n",
			operator_selector);
		sbx_config_release(&cfg);
		return 2;
	}
	/* A config list is NULL-terminated once it has items. */
	op.namespaces = namespaces.n ? (const char *const *)namespaces.v : NULL;
	op.settings = (struct sandbox_settings){
		.agent_image = agent_image,
		.gateway_url = gateway_url,
		.cluster_domain = cluster_domain,
		.ingress_namespace = ingress_namespace,
		.ingress_pod_label = ingress_selector,
		.deny_cidrs = deny_cidrs.n ? (const char *const *)deny_cidrs.v : default_deny_cidrs,
		.egress_image = egress_image,
		.egress_always_allow = egress_allow.n ? (const char *const *)egress_allow.v : NULL,
		.operator_namespace = operator_namespace,
		.operator_pod_label = operator_selector,
	};
	op.settings.egress_always_deny =
		egress_deny.n ? (const char *const *)egress_deny.v : op.settings.deny_cidrs;
	sbx_alloc_install_jansson();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = run(&op);
	curl_global_cleanup();
	sbx_loop_close(op.loop);
	sbx_config_release(&cfg);
	return rc;
}
