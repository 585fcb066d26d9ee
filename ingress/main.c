/* sbx-ingress: routes /sandboxes/<id>/port/<port>/... (and the header and
 * wildcard-host forms) to sandbox pods over HTTP/1.1 and HTTP/2.
 *
 * main() parses the configuration and runs the control loop: it keeps the
 * routing table current (from Sandbox objects through informers, or from a
 * routes file watched for changes) and hands each new snapshot to the
 * workers (worker.c), which serve the public listeners; it serves health
 * and metrics on the admin listener, and turns signals into a drain or a
 * certificate reload.
 */
#include "auth.h"
#include "discovery.h"
#include "ingress.h"
#include "worker.h"

#include "sbx/alloc.h"
#include "sbx/config.h"
#include "sbx/kube.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"
#include "sbx/loop.h"
#include "sbx/metrics.h"
#include "sbx/version.h"
#include "sbx/yaml.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTES_MAX_BYTES (64u << 20)
#define ROUTES_POLL_MS	 250

static char *listen_addr = ":8080";
static char *admin_listen = ":9090";
static char *tls_listen = "";
static char *tls_cert = "", *tls_key = "";
static char *base_domain = "";
static char *routes_file = "";
static char *kubeconfig = "";
static char *kube_context = "";
static struct sbx_strv namespaces;
static long hold_timeout_ms = 10000;
static long connect_timeout_ms = 5000;
static long response_timeout_ms = 60000;
static long max_body_bytes = 0;
static long pool_max_idle = 128;
static long pool_idle_timeout_ms = 30000;
static bool trust_forwarded = false;
static char *jwt_public_key = "";
static long ticket_ttl_s = 30;
static long shutdown_delay_ms = 0;
static bool access_log = true;
static bool reuse_port = true;
static long workers_n = 1;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;

struct app {
	uv_loop_t *loop;
	struct worker *workers[256];
	int n_workers;
	struct ingress_table *table; /* the latest snapshot, handed to every worker */
	struct sbx_http_server *admin;
	struct sbx_signals signals;
	uv_signal_t sighup;
	uv_timer_t shutdown_delay;
	uv_async_t notify; /* a worker has counters ready, or has finished */
	uv_fs_poll_t routes_poll;
	bool polling;
	struct sbx_kube *kube;
	struct discovery *discovery;
	struct ingress_auth auth;
	bool ready;    /* a routing table is loaded */
	bool draining; /* stopping: the public listeners close */
	bool done;     /* every worker has finished */
	uint64_t reloads, reload_errors;
	/* /metrics requests waiting for the workers' counters of scrape_gen. */
	struct scrape *scrapes;
	uint64_t scrape_gen;
	struct ingress_snapshot sum; /* what the collector renders */
};

static struct app app;

/* ---- the routing table ------------------------------------------------------------------ */

/* The new snapshot, for every worker (and for those started later). */
static void set_table(struct app *a, struct ingress_table *t)
{
	t->generation = a->table ? a->table->generation + 1 : 1;
	ingress_table_ref(t);
	ingress_table_unref(a->table);
	a->table = t;
	for (int i = 0; i < a->n_workers; i++)
		worker_publish(a->workers[i], t);
}

/* ---- the routing table from a routes file ------------------------------------------------- */

static int load_routes(struct app *a)
{
	char err[512];
	json_t *doc = sbx_yaml_load_file(routes_file, ROUTES_MAX_BYTES, err, sizeof(err));
	struct ingress_table *t = NULL;

	if (doc)
		t = ingress_routes_load(doc, err, sizeof(err)); /* NULL: err says why */
	json_decref(doc);
	if (!t) {
		a->reload_errors++;
		sbx_log_error("routes file refused; the routes stay as they were",
			      SBX_LS("file", routes_file), SBX_LS("error", err));
		return -EINVAL;
	}
	set_table(a, t);
	ingress_table_unref(t);
	a->reloads++;
	a->ready = true;
	sbx_log_info("routes loaded", SBX_LS("file", routes_file),
		     SBX_LI("sandboxes", (long long)ingress_table_count(t)));
	return 0;
}

static void routes_changed(uv_fs_poll_t *h, int status, const uv_stat_t *prev,
			   const uv_stat_t *curr)
{
	(void)prev;
	(void)curr;
	if (status < 0) {
		sbx_log_warn("routes file unreadable; the routes stay as they were",
			     SBX_LS("file", routes_file), SBX_LS("error", uv_strerror(status)));
		return;
	}
	load_routes(h->data);
}

/* ---- the routing table from Sandbox objects ------------------------------------------------ */

static void publish(struct ingress_table *t, void *arg)
{
	struct app *a = arg;

	set_table(a, t);
	a->reloads++;
	if (!a->ready)
		sbx_log_info("routes synced from Sandbox objects",
			     SBX_LI("sandboxes", (long long)ingress_table_count(t)));
	a->ready = true;
}

static int start_discovery(struct app *a)
{
	struct sbx_kube_config kc = { 0 };
	struct sbx_kube_opts ko = { .user_agent = "sbx-ingress/" SBX_VERSION };
	char err[512];
	int rc;

	if ((rc = sbx_kube_config_load(&kc, *kubeconfig ? kubeconfig : NULL,
				       *kube_context ? kube_context : NULL, err, sizeof(err)))) {
		sbx_log_error("cannot reach the Kubernetes API (or give --routes-file)",
			      SBX_LS("error", err));
		return rc;
	}
	sbx_log_info("Kubernetes API", SBX_LS("server", kc.server), SBX_LS("from", kc.source));
	rc = sbx_kube_new(a->loop, &kc, &ko, &a->kube);
	sbx_kube_config_release(&kc);
	if (!rc)
		rc = discovery_new(a->loop, a->kube, (const char *const *)namespaces.v,
				   namespaces.n, publish, a, &a->discovery);
	if (!rc)
		rc = discovery_start(a->discovery);
	if (rc)
		sbx_log_error("cannot watch Sandboxes", SBX_LERR(rc));
	return rc;
}

/* ---- the admin listener ------------------------------------------------------------------ */

static void healthz(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	sbx_http_respond(req, 200, "text/plain", "ok\n", 3);
}

static void readyz(struct sbx_http_req *req, void *arg)
{
	struct app *a = arg;

	if (a->draining)
		sbx_http_respond_error(req, 503,
				       "draining: open connections finish, new ones go "
				       "elsewhere");
	else if (a->ready)
		sbx_http_respond(req, 200, "text/plain", "ready\n", 6);
	else
		sbx_http_respond_error(req, 503,
				       a->discovery ? "the Sandbox informer has not listed yet"
						    : "no routing table loaded yet");
}

/* GET /metrics: the workers' counters are taken on their own threads, then
 * summed here; the answer goes once every worker has given them. */
struct scrape {
	struct sbx_http_req *req;
	uint64_t gen;
	struct scrape *next;
};

static void scrape_gone(struct sbx_http_req *req, void *arg)
{
	struct app *a = &app;
	struct scrape **p = &a->scrapes, *sc = arg;

	(void)req;
	while (*p && *p != sc)
		p = &(*p)->next;
	if (*p)
		*p = sc->next;
	sbx_free(sc);
}

static void metrics(struct sbx_http_req *req, void *arg)
{
	struct app *a = arg;
	struct scrape *sc = sbx_calloc(1, sizeof(*sc));

	if (!sc) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	sc->req = req;
	sc->gen = ++a->scrape_gen;
	sc->next = a->scrapes;
	a->scrapes = sc;
	sbx_http_on_abort(req, scrape_gone, sc);
	for (int i = 0; i < a->n_workers; i++)
		worker_request_snapshot(a->workers[i], sc->gen);
	uv_async_send(&a->notify); /* with no worker left, answers at once */
}

/* Answers the scrapes whose counters are all in. */
static void answer_scrapes(struct app *a)
{
	struct scrape **p = &a->scrapes;

	while (*p) {
		struct scrape *sc = *p;
		struct ingress_snapshot one, sum;
		bool all = true;

		memset(&sum, 0, sizeof(sum));
		for (int i = 0; i < a->n_workers && all; i++) {
			all = worker_snapshot(a->workers[i], sc->gen, &one);
			if (all)
				ingress_snapshot_add(&sum, &one);
		}
		if (!all) {
			p = &sc->next;
			continue;
		}
		*p = sc->next;
		a->sum = sum;
		sbx_http_on_abort(sc->req, NULL, NULL);
		sbx_metrics_handle(sc->req, NULL);
		sbx_free(sc);
	}
}

static const struct sbx_http_route admin_routes[] = {
	{ .method = "GET", .pattern = "/healthz", .fn = healthz, .public = true, .health = true },
	{ .method = "GET",
	  .pattern = "/readyz",
	  .fn = readyz,
	  .arg = &app,
	  .public = true,
	  .health = true },
	{ .method = "GET",
	  .pattern = "/metrics",
	  .fn = metrics,
	  .arg = &app,
	  .public = true,
	  .health = true },
};

static void app_metrics(struct sbx_buf *b, void *arg)
{
	struct app *a = arg;
	struct ingress_auth_counts ac;

	ingress_auth_counts(&a->auth, &ac);
	sbx_metrics_sample(b, "sbx_ingress_workers", "gauge", "Worker threads serving requests.",
			   "", a->n_workers);
	sbx_metrics_sample(b, "sbx_ingress_routes_reloads_total", "counter",
			   "Routing tables made (from the routes file, or Sandbox changes).", "",
			   (double)a->reloads);
	sbx_metrics_sample(b, "sbx_ingress_informer_synced", "gauge",
			   "1 once every Sandbox informer has listed (0 without Kubernetes).", "",
			   a->discovery && discovery_synced(a->discovery) ? 1 : 0);
	sbx_metrics_sample(b, "sbx_ingress_routes_reload_errors_total", "counter",
			   "Routes files refused (the table stayed as it was).", "",
			   (double)a->reload_errors);
	sbx_metrics_sample(b, "sbx_ingress_auth_refused_total", "counter",
			   "Requests refused by access control, by status.", "status=\"401\"",
			   (double)ac.unauthorized);
	sbx_metrics_more(b, "sbx_ingress_auth_refused_total", "status=\"403\"",
			 (double)ac.forbidden);
	sbx_metrics_sample(b, "sbx_ingress_tickets_issued_total", "counter",
			   "Tickets made by POST /tickets.", "", (double)ac.tickets_issued);
	sbx_metrics_sample(b, "sbx_ingress_tickets_used_total", "counter",
			   "Tickets that let a request in (each works once).", "",
			   (double)ac.tickets_used);
	ingress_metrics(b, &a->sum, a->table ? ingress_table_count(a->table) : 0);
}

/* ---- start and stop ----------------------------------------------------------------------- */

/* Every worker has drained: the control loop lets go of the rest. */
static void finish(struct app *a)
{
	if (a->done)
		return;
	a->done = true;
	if (a->draining)
		sbx_log_info("drained");
	if (a->polling) {
		uv_fs_poll_stop(&a->routes_poll);
		uv_close((uv_handle_t *)&a->routes_poll, NULL);
		a->polling = false;
	}
	if (a->admin)
		sbx_http_server_close(a->admin, NULL, NULL);
	a->admin = NULL;
	discovery_free(a->discovery);
	a->discovery = NULL;
	sbx_kube_free(a->kube);
	a->kube = NULL;
	uv_close((uv_handle_t *)&a->notify, NULL);
}

static void on_notify(uv_async_t *h)
{
	struct app *a = h->data;
	bool all = true;

	answer_scrapes(a);
	for (int i = 0; i < a->n_workers && all; i++)
		all = worker_finished(a->workers[i]);
	if (all && a->draining)
		finish(a);
}

/* SIGHUP: a renewed certificate (cert-manager, say, rewrote the files)
 * for new connections; open ones go on with theirs. */
static void on_sighup(uv_signal_t *h, int signum)
{
	struct app *a = h->data;

	(void)signum;
	if (!*tls_listen)
		return;
	for (int i = 0; i < a->n_workers; i++)
		worker_reload_tls(a->workers[i]);
	sbx_log_info("certificate reloaded", SBX_LS("cert", tls_cert));
}

static void close_public(uv_timer_t *t)
{
	struct app *a = t->data;

	uv_close((uv_handle_t *)t, NULL);
	for (int i = 0; i < a->n_workers; i++)
		worker_stop(a->workers[i]);
	uv_async_send(&a->notify); /* with no worker, finish now */
}

static void on_stop(void *arg)
{
	struct app *a = arg;

	sbx_log_info("stopping: draining connections",
		     SBX_LI("drain_timeout_ms", http_flags.drain_timeout_ms));
	sbx_signals_close(&a->signals);
	uv_close((uv_handle_t *)&a->sighup, NULL);
	/* Health and metrics stay up while draining (/readyz says so). The
	 * listeners stay open --shutdown-delay-ms first: until the Service's
	 * endpoints have dropped this pod, clients may still be sent here. */
	a->draining = true;
	uv_timer_init(a->loop, &a->shutdown_delay);
	a->shutdown_delay.data = a;
	uv_timer_start(&a->shutdown_delay, close_public, (uint64_t)shutdown_delay_ms, 0);
}

/* The data plane: --workers threads on the public listeners. */
static int start_workers(struct app *a, const struct worker_config *wc)
{
	char err[512];
	int rc;

	for (int i = 0; i < workers_n; i++) {
		if ((rc = worker_start(wc, i, &a->workers[i], err, sizeof(err)))) {
			sbx_log_error("cannot start", SBX_LS("error", err), SBX_LI("worker", i));
			return rc;
		}
		a->n_workers++;
		if (a->table)
			worker_publish(a->workers[i], a->table);
	}
	return 0;
}

/* The admin listener, the routing table's source, then the workers: 0, or
 * the error (logged). */
static int start_all(struct app *a, const struct worker_config *wc)
{
	struct sbx_http_server_opts ao = { .server_name = "sbx-ingress", .max_connections = 64 };
	int rc;

	if ((rc = sbx_http_server_new(a->loop, &ao, admin_routes,
				      sizeof(admin_routes) / sizeof(admin_routes[0]), &a->admin))) {
		sbx_log_error("out of memory");
		return rc;
	}
	if ((rc = *routes_file ? load_routes(a) : start_discovery(a)) ||
	    (rc = start_workers(a, wc)))
		return rc;
	if (*admin_listen && (rc = sbx_http_server_listen(a->admin, admin_listen)))
		sbx_log_error("cannot listen", SBX_LS("addr", admin_listen),
			      SBX_LS("error", uv_strerror(rc)));
	return rc;
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		{ .name = "listen",
		  .type = SBX_OPT_STRING,
		  .dest = &listen_addr,
		  .metavar = "ADDR",
		  .help = "public listener, HTTP/1.1 and h2c (\"\" for none)" },
		{ .name = "tls-listen",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_listen,
		  .metavar = "ADDR",
		  .help = "public listener with TLS, ALPN h2 and http/1.1" },
		{ .name = "tls-cert",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_cert,
		  .metavar = "FILE",
		  .help = "certificate chain for --tls-listen (PEM)" },
		{ .name = "tls-key",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_key,
		  .metavar = "FILE",
		  .help = "its private key (PEM; default: in --tls-cert)" },
		{ .name = "admin-listen",
		  .type = SBX_OPT_STRING,
		  .dest = &admin_listen,
		  .metavar = "ADDR",
		  .help = "/healthz, /readyz and /metrics (\"\" for none)" },
		{ .name = "base-domain",
		  .type = SBX_OPT_STRING,
		  .dest = &base_domain,
		  .metavar = "DOMAIN",
		  .help = "route Host <id>-<port>.DOMAIN to that sandbox's port" },
		{ .name = "routes-file",
		  .type = SBX_OPT_STRING,
		  .dest = &routes_file,
		  .metavar = "FILE",
		  .help = "the sandboxes, as YAML (reloaded when it changes), instead of Sandbox "
			  "objects" },
		{ .name = "kubeconfig",
		  .type = SBX_OPT_STRING,
		  .dest = &kubeconfig,
		  .metavar = "FILE",
		  .help = "kubeconfig file (else in-cluster, else ~/.kube/config)" },
		{ .name = "kube-context",
		  .type = SBX_OPT_STRING,
		  .dest = &kube_context,
		  .metavar = "NAME",
		  .help = "kubeconfig context (default: the current one)" },
		{ .name = "namespace",
		  .type = SBX_OPT_LIST,
		  .dest = &namespaces,
		  .metavar = "NS",
		  .help = "route only this namespace's Sandboxes (repeat; default: all)" },
		{ .name = "hold-timeout-ms",
		  .type = SBX_OPT_INT,
		  .dest = &hold_timeout_ms,
		  .metavar = "MS",
		  .help = "hold requests for a sandbox not ready, or a port not listening, this long "
			  "(0: answer 503/502 at once)",
		  .min = 0,
		  .max = 600000 },
		{ .name = "connect-timeout-ms",
		  .type = SBX_OPT_INT,
		  .dest = &connect_timeout_ms,
		  .metavar = "MS",
		  .help = "to connect to a pod, and for a tunnel's answer (504 beyond)",
		  .min = 1,
		  .max = 600000 },
		{ .name = "response-timeout-ms",
		  .type = SBX_OPT_INT,
		  .dest = &response_timeout_ms,
		  .metavar = "MS",
		  .help = "a pod silent this long while its answer is awaited: 504, or the "
			  "answer cut",
		  .min = 1,
		  .max = 86400000 },
		{ .name = "max-body-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_body_bytes,
		  .metavar = "N",
		  .help = "largest request body passed on (0: no limit; 413 beyond)",
		  .min = 0,
		  .max = 1L << 50 },
		{ .name = "pool-max-idle",
		  .type = SBX_OPT_INT,
		  .dest = &pool_max_idle,
		  .metavar = "N",
		  .help = "kept-alive connections per pod port",
		  .min = 0,
		  .max = 100000 },
		{ .name = "pool-idle-timeout-ms",
		  .type = SBX_OPT_INT,
		  .dest = &pool_idle_timeout_ms,
		  .metavar = "MS",
		  .help = "close a kept-alive connection to a pod after this long unused",
		  .min = 1,
		  .max = 3600000 },
		{ .name = "jwt-public-key",
		  .type = SBX_OPT_STRING,
		  .dest = &jwt_public_key,
		  .metavar = "KEY",
		  .help = "RSA public key (base64 of a PEM, or the PEM): every request for a "
			  "sandbox needs an RS256 token that names it",
		  .env = "JWT_PUBLIC_KEY" },
		{ .name = "ticket-ttl-seconds",
		  .type = SBX_OPT_INT,
		  .dest = &ticket_ttl_s,
		  .metavar = "S",
		  .help = "lifetime of a ticket from POST /tickets (single use)",
		  .min = 1,
		  .max = 3600 },
		{ .name = "trust-forwarded-headers",
		  .type = SBX_OPT_BOOL,
		  .dest = &trust_forwarded,
		  .help = "keep clients' X-Forwarded-For/-Proto/-Host (behind a proxy that sets "
			  "them)" },
		{ .name = "shutdown-delay-ms",
		  .type = SBX_OPT_INT,
		  .dest = &shutdown_delay_ms,
		  .metavar = "MS",
		  .help = "on SIGTERM, keep accepting this long (with /readyz at 503) before "
			  "draining, while load balancers take this pod out",
		  .min = 0,
		  .max = 600000 },
		{ .name = "workers",
		  .type = SBX_OPT_INT,
		  .dest = &workers_n,
		  .metavar = "N",
		  .help = "threads serving the public listeners, each with its own event loop "
			  "(one per core)",
		  .min = 1,
		  .max = 256 },
		{ .name = "reuse-port",
		  .type = SBX_OPT_BOOL,
		  .dest = &reuse_port,
		  .help = "public listeners with SO_REUSEPORT: a new process started beside a "
			  "draining one takes its new connections" },
		{ .name = "access-log",
		  .type = SBX_OPT_BOOL,
		  .dest = &access_log,
		  .help = "log every request (JSON with --log-format=json)" },
		SBX_HTTP_FLAG_OPTS(&http_flags),
	};
	struct sbx_config cfg = {
		.program = "sbx-ingress",
		.summary = "Routes /sandboxes/<id>/port/<port>/... to sandbox pods over HTTP/1.1 "
			   "and HTTP/2.",
		.env_prefix = "SBX_INGRESS_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	struct worker_config wc = { 0 };
	struct app *a = &app;
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	if (cfg.argi < argc) {
		fprintf(stderr, "sbx-ingress: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		sbx_config_release(&cfg);
		return 2;
	}
	sbx_alloc_install_jansson();
	a->loop = uv_default_loop();
	if (workers_n > 1 && !reuse_port) {
		sbx_log_error("--workers above 1 needs --reuse-port (each worker listens)");
		sbx_config_release(&cfg);
		return 2;
	}
	{
		char err[256];

		if (ingress_auth_init(&a->auth, jwt_public_key, ticket_ttl_s, err, sizeof(err))) {
			sbx_log_error("access control cannot start", SBX_LS("error", err));
			ingress_auth_release(&a->auth);
			sbx_config_release(&cfg);
			return 2;
		}
	}
	wc.ingress.base_domain = base_domain;
	wc.ingress.hold_timeout_ms = (uint64_t)hold_timeout_ms;
	wc.ingress.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	wc.ingress.response_timeout_ms = (uint64_t)response_timeout_ms;
	wc.ingress.trust_forwarded = trust_forwarded;
	wc.ingress.strip_credentials = ingress_auth_enabled(&a->auth);
	wc.ingress.access_log = access_log;
	wc.pool.max_idle_per_backend = pool_max_idle ? (unsigned)pool_max_idle : 1;
	wc.pool.idle_timeout_ms = (uint64_t)pool_idle_timeout_ms;
	wc.pool.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	wc.pool.read_timeout_ms = (uint64_t)response_timeout_ms;
	wc.pool.max_header_bytes = (size_t)http_flags.max_header_bytes;
	sbx_http_flags_apply(&http_flags, &wc.server);
	wc.server.server_name = "sbx-ingress";
	wc.server.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	wc.server.reuse_port = reuse_port;
	wc.max_body_bytes = max_body_bytes ? (size_t)max_body_bytes : SIZE_MAX;
	wc.auth = &a->auth;
	wc.listen = listen_addr;
	wc.tls_listen = tls_listen;
	wc.tls_cert = tls_cert;
	wc.tls_key = tls_key;
	wc.notify = &a->notify;
	uv_async_init(a->loop, &a->notify, on_notify);
	a->notify.data = a;
	if (start_all(a, &wc)) {
		/* Stop what started, and go. */
		a->draining = false;
		for (int i = 0; i < a->n_workers; i++)
			worker_stop(a->workers[i]);
		while (!a->done) {
			bool all = true;

			for (int i = 0; i < a->n_workers && all; i++)
				all = worker_finished(a->workers[i]);
			if (all)
				finish(a);
			else
				uv_run(a->loop, UV_RUN_ONCE);
		}
		uv_run(a->loop, UV_RUN_DEFAULT);
		for (int i = 0; i < a->n_workers; i++)
			worker_join(a->workers[i]);
		ingress_table_unref(a->table);
		ingress_auth_release(&a->auth);
		sbx_loop_close(a->loop);
		sbx_config_release(&cfg);
		return 1;
	}
	if (*routes_file) {
		uv_fs_poll_init(a->loop, &a->routes_poll);
		a->routes_poll.data = a;
		uv_fs_poll_start(&a->routes_poll, routes_changed, routes_file, ROUTES_POLL_MS);
		a->polling = true;
	}
	sbx_metrics_register(app_metrics, a);
	sbx_signals_init(a->loop, &a->signals, on_stop, a);
	uv_signal_init(a->loop, &a->sighup);
	a->sighup.data = a;
	uv_signal_start(&a->sighup, on_sighup, SIGHUP);
	uv_unref((uv_handle_t *)&a->sighup);
	sbx_log_info("listening", SBX_LS("listen", listen_addr), SBX_LS("tls_listen", tls_listen),
		     SBX_LB("access_control", ingress_auth_enabled(&a->auth)),
		     SBX_LS("admin_listen", admin_listen), SBX_LS("base_domain", base_domain),
		     SBX_LI("workers", a->n_workers), SBX_LS("version", SBX_VERSION));
	uv_run(a->loop, UV_RUN_DEFAULT);
	for (int i = 0; i < a->n_workers; i++)
		worker_join(a->workers[i]);
	ingress_table_unref(a->table);
	ingress_auth_release(&a->auth);
	sbx_loop_close(a->loop);
	sbx_config_release(&cfg);
	return 0;
}
