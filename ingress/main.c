/* sbx-ingress: routes /sandboxes/<id>/port/<port>/... (and the header and
 * wildcard-host forms) to sandbox pods over HTTP/1.1 and HTTP/2.
 *
 * main() parses the configuration, keeps the routing table current (from
 * Sandbox objects through an informer, or from a routes file watched for
 * changes), and runs the public listener, whose one route
 * dispatches every request: to a sandbox (proxy.c), or to the ingress's own
 * few paths. Health and metrics are also served on the admin listener.
 */
#include "auth.h"
#include "discovery.h"
#include "ingress.h"

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
static long pool_max_idle = 32;
static long pool_idle_timeout_ms = 30000;
static bool trust_forwarded = false;
static char *jwt_public_key = "";
static long ticket_ttl_s = 30;
static long shutdown_delay_ms = 0;
static bool access_log = true;
static bool reuse_port = true;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;

struct app {
	uv_loop_t *loop;
	struct ingress in;
	struct sbx_http_server *admin;
	struct sbx_signals signals;
	uv_signal_t sighup;
	uv_timer_t shutdown_delay;
	uv_fs_poll_t routes_poll;
	bool polling;
	struct sbx_kube *kube;
	struct discovery *discovery;
	struct ingress_auth auth;
	bool ready;    /* a routing table is loaded */
	bool draining; /* stopping: the public listener is closed */
	uint64_t reloads, reload_errors;
};

static struct app app;

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
	t->generation = a->in.table->generation + 1;
	ingress_set_table(&a->in, t);
	ingress_table_unref(t);
	a->reloads++;
	a->ready = true;
	sbx_log_info("routes loaded", SBX_LS("file", routes_file),
		     SBX_LI("sandboxes", (long long)ingress_table_count(a->in.table)));
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

	t->generation = a->in.table->generation + 1;
	ingress_set_table(&a->in, t);
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

/* ---- the public listener's one route --------------------------------------------------- */

static void respond_own(struct sbx_http_req *req, int status, const char *message)
{
	ingress_count(&app.in, INGRESS_FORMS - 1, status, uv_now(app.loop));
	sbx_http_respond_error(req, status, message);
}

static void dispatch(struct sbx_http_req *req, void *arg)
{
	struct app *a = arg;
	const char *path = sbx_http_path(req), *why;
	struct ingress_target t;
	int rc = ingress_route(path, sbx_http_header(req, "Host"),
			       sbx_http_header(req, INGRESS_TO_HEADER), base_domain, &t, &why);

	if (rc == 0) {
		ingress_proxy(&a->in, req, &t);
		return;
	}
	if (rc == -EINVAL) {
		respond_own(req, 400, why);
		return;
	}
	if (!strcmp(path, "/tickets") && !strcmp(sbx_http_method(req), "POST")) {
		ingress_auth_tickets(&a->auth, req);
		return;
	}
	if (!strcmp(path, "/healthz")) {
		ingress_count(&a->in, INGRESS_FORMS - 1, 200, uv_now(a->loop));
		sbx_http_respond(req, 200, "text/plain", "ok\n", 3);
		return;
	}
	respond_own(req, 404,
		    "not a sandbox route: use /sandboxes/<id>/port/<port>/..., the "
		    "OpenSandbox-Ingress-To header, or <id>-<port>.<base domain>");
}

/* Runs at the head, before any of the body is read: a request for a
 * sandbox needs a credential that names it. The ingress's own paths go on
 * (POST /tickets checks its token itself; 400s and 404s reveal nothing). */
static bool authorize(struct sbx_http_req *req, void *arg)
{
	struct app *a = arg;
	struct ingress_target t;
	const char *why;

	if (ingress_route(sbx_http_path(req), sbx_http_header(req, "Host"),
			  sbx_http_header(req, INGRESS_TO_HEADER), base_domain, &t, &why))
		return true;
	return ingress_auth_check(&a->auth, req, &t, a->in.table);
}

static const struct sbx_http_route public_routes[] = {
	{ .pattern = "/*",
	  .fn = dispatch,
	  .arg = &app,
	  .stream_body = true,
	  .summary = "every request: to a sandbox's port, or the ingress's own paths" },
};

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
	  .fn = sbx_metrics_handle,
	  .public = true,
	  .health = true },
};

static void app_metrics(struct sbx_buf *b, void *arg)
{
	struct app *a = arg;

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
			   (double)a->auth.unauthorized);
	sbx_metrics_more(b, "sbx_ingress_auth_refused_total", "status=\"403\"",
			 (double)a->auth.forbidden);
	sbx_metrics_sample(b, "sbx_ingress_tickets_issued_total", "counter",
			   "Tickets made by POST /tickets.", "", (double)a->auth.tickets_issued);
	sbx_metrics_sample(b, "sbx_ingress_tickets_used_total", "counter",
			   "Tickets that let a request in (each works once).", "",
			   (double)a->auth.tickets_used);
	ingress_metrics(b, &a->in);
}

/* ---- start and stop ----------------------------------------------------------------------- */

static void on_closed(void *arg)
{
	struct app *a = arg;

	if (a->draining)
		sbx_log_info("drained");
	if (a->admin)
		sbx_http_server_close(a->admin, NULL, NULL);
	a->admin = NULL;
	discovery_free(a->discovery);
	a->discovery = NULL;
	sbx_kube_free(a->kube);
	a->kube = NULL;
	ingress_release(&a->in);
	ingress_auth_release(&a->auth);
}

/* SIGHUP: a renewed certificate (cert-manager, say, rewrote the files)
 * for new connections; open ones go on with theirs. */
static void on_sighup(uv_signal_t *h, int signum)
{
	char err[512];
	int rc;

	(void)signum;
	if (!*tls_listen)
		return;
	rc = sbx_http_server_reload_tls(((struct app *)h->data)->in.http, tls_cert,
					*tls_key ? tls_key : tls_cert, err, sizeof(err));
	if (rc < 0)
		sbx_log_error("certificate not reloaded; the old one stays", SBX_LS("error", err));
	else
		sbx_log_info("certificate reloaded", SBX_LS("cert", tls_cert));
}

static void close_public(uv_timer_t *t)
{
	struct app *a = t->data;

	uv_close((uv_handle_t *)t, NULL);
	sbx_http_server_close(a->in.http, on_closed, a);
}

static void on_stop(void *arg)
{
	struct app *a = arg;

	sbx_log_info("stopping: draining connections",
		     SBX_LI("drain_timeout_ms", http_flags.drain_timeout_ms));
	if (a->polling) {
		uv_fs_poll_stop(&a->routes_poll);
		uv_close((uv_handle_t *)&a->routes_poll, NULL);
		a->polling = false;
	}
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

static int listen_all(struct app *a)
{
	char err[512];
	int rc;

	if (*listen_addr && (rc = sbx_http_server_listen(a->in.http, listen_addr))) {
		fprintf(stderr, "sbx-ingress: cannot listen on %s: %s\n", listen_addr,
			uv_strerror(rc));
		return rc;
	}
	if (*tls_listen) {
		if (!*tls_cert) {
			fprintf(stderr,
				"sbx-ingress: --tls-listen needs --tls-cert (and --tls-key)\n");
			return -EINVAL;
		}
		if ((rc = sbx_http_server_listen_tls(a->in.http, tls_listen, tls_cert,
						     *tls_key ? tls_key : tls_cert, err,
						     sizeof(err)))) {
			fprintf(stderr, "sbx-ingress: %s\n", err);
			return rc;
		}
	}
	if (*admin_listen && (rc = sbx_http_server_listen(a->admin, admin_listen))) {
		fprintf(stderr, "sbx-ingress: cannot listen on %s: %s\n", admin_listen,
			uv_strerror(rc));
		return rc;
	}
	return 0;
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
	struct sbx_http_route routes[sizeof(public_routes) / sizeof(public_routes[0])];
	struct sbx_http_server_opts so = { 0 }, ao = { 0 };
	struct sbx_http_pool_opts po = { 0 };
	struct ingress_opts io = { 0 };
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
	{
		char err[256];

		if (ingress_auth_init(&a->auth, a->loop, jwt_public_key, ticket_ttl_s, err,
				      sizeof(err))) {
			sbx_log_error("access control cannot start", SBX_LS("error", err));
			ingress_auth_release(&a->auth);
			sbx_config_release(&cfg);
			return 2;
		}
	}
	io.base_domain = base_domain;
	io.hold_timeout_ms = (uint64_t)hold_timeout_ms;
	io.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	io.response_timeout_ms = (uint64_t)response_timeout_ms;
	io.trust_forwarded = trust_forwarded;
	io.strip_credentials = ingress_auth_enabled(&a->auth);
	io.access_log = access_log;
	po.max_idle_per_backend = pool_max_idle ? (unsigned)pool_max_idle : 1;
	po.idle_timeout_ms = (uint64_t)pool_idle_timeout_ms;
	po.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	po.read_timeout_ms = (uint64_t)response_timeout_ms;
	po.max_header_bytes = (size_t)http_flags.max_header_bytes;
	if ((rc = ingress_init(&a->in, a->loop, &io, &po))) {
		fprintf(stderr, "sbx-ingress: %s\n", strerror(-rc));
		sbx_config_release(&cfg);
		return 1;
	}
	sbx_http_flags_apply(&http_flags, &so);
	so.server_name = "sbx-ingress";
	so.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	so.authorize = authorize;
	so.authorize_arg = a;
	so.reuse_port = reuse_port;
	memcpy(routes, public_routes, sizeof(routes));
	routes[0].max_body_bytes = max_body_bytes ? (size_t)max_body_bytes : SIZE_MAX;
	ao.server_name = "sbx-ingress";
	ao.max_connections = 64;
	if (sbx_http_server_new(a->loop, &so, routes, 1, &a->in.http) ||
	    sbx_http_server_new(a->loop, &ao, admin_routes,
				sizeof(admin_routes) / sizeof(admin_routes[0]), &a->admin)) {
		fprintf(stderr, "sbx-ingress: out of memory\n");
		return 1;
	}
	if ((*routes_file ? load_routes(a) : start_discovery(a)) || listen_all(a)) {
		sbx_http_server_close(a->in.http, on_closed, a);
		uv_run(a->loop, UV_RUN_DEFAULT);
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
		     SBX_LS("version", SBX_VERSION));
	uv_run(a->loop, UV_RUN_DEFAULT);
	sbx_loop_close(a->loop);
	sbx_config_release(&cfg);
	return 0;
}
