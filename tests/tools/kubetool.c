/* sbx-kubetool: drives libsbx's Kubernetes client from the command line, so
 * integration tests can check it against a real kube-apiserver.
 *
 *   sbx-kubetool [flags] get|delete PATH
 *   sbx-kubetool [flags] create|replace|merge-patch|apply|status PATH JSON
 *   sbx-kubetool [flags] watch|informer COLLECTION
 *
 * One-shot verbs print {"status": N, "http_version": V, "body": ...} and exit
 * 0 for 2xx, 1 for other statuses, 3 for transport errors. watch and informer
 * print one JSON line per event until SIGTERM. JSON arguments may be "@file".
 */
#include "tool.h"

#include "sbx/alloc.h"
#include "sbx/config.h"
#include "sbx/informer.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/kube_config.h"
#include "sbx/kube_watch.h"
#include "sbx/log.h"
#include "sbx/loop.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static char *kubeconfig;
static char *context;
static bool http1;
static char *field_manager = "sbx-kubetool";
static bool force;
static char *propagation;
static char *resource_version;
static long watch_timeout_s = 300;
static long backoff_max_ms = 2000;
static long page_size = 500;
static bool compact;

struct tool {
	uv_loop_t *loop;
	struct sbx_kube *kube;
	struct sbx_watch *watch;
	struct sbx_informer *informer;
	struct sbx_signals signals;
	int exit_code;
};

static void on_response(const struct sbx_kube_response *r, void *arg)
{
	struct tool *t = arg;

	if (r->rc) {
		print_line(
			json_pack("{s:s, s:i}", "error", sbx_kube_status_message(r), "rc", r->rc));
		t->exit_code = 3;
	} else {
		print_line(json_pack("{s:i, s:i, s:I, s:O?}", "status", (int)r->status,
				     "http_version", sbx_kube_http_version(t->kube), "connects",
				     (json_int_t)sbx_kube_connects(t->kube), "body", r->body));
		t->exit_code = r->status / 100 == 2 ? 0 : 1;
	}
	sbx_kube_free(t->kube);
	t->kube = NULL;
	sbx_signals_close(&t->signals);
}

static const char *type_name(enum sbx_watch_type type)
{
	static const char *const names[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK" };

	return names[type];
}

static void on_watch_event(enum sbx_watch_type type, json_t *obj, void *arg)
{
	struct tool *t = arg;

	print_line(json_pack("{s:s, s:s?, s:s?, s:O?, s:I}", "type", type_name(type), "name",
			     sbx_json_str(obj, "metadata.name"), "rv",
			     sbx_json_str(obj, "metadata.resourceVersion"), "data",
			     json_object_get(obj, "data"), "reconnects",
			     (json_int_t)sbx_watch_reconnects(t->watch)));
}

static void on_watch_gone(void *arg)
{
	struct tool *t = arg;

	print_line(json_pack("{s:s}", "type", "GONE"));
	/* Like a consumer that relists: resume from "now". */
	sbx_watch_start(t->watch, NULL);
}

/* One line per handler call: the object, the old one's data (updates), and
 * the data of what the cache now returns for that name. */
static void informer_line(struct tool *t, const char *event, json_t *obj, json_t *old)
{
	const char *name = obj ? sbx_json_str(obj, "metadata.name") : NULL;
	json_t *cached =
		name ? sbx_informer_get(t->informer, sbx_json_str(obj, "metadata.namespace"), name)
		     : NULL;

	print_line(json_pack("{s:s, s:s?, s:s?, s:O?, s:O?, s:O?, s:I, s:I, s:I, s:i, s:I, s:I}",
			     "event", event, "name", name, "rv",
			     obj ? sbx_json_str(obj, "metadata.resourceVersion") : NULL, "data",
			     obj ? json_object_get(obj, "data") : NULL, "old_data",
			     old ? json_object_get(old, "data") : NULL, "cached_data",
			     cached ? json_object_get(cached, "data") : NULL, "lists",
			     (json_int_t)sbx_informer_lists(t->informer), "count",
			     (json_int_t)sbx_informer_count(t->informer), "connects",
			     (json_int_t)sbx_kube_connects(t->kube), "http_version",
			     sbx_kube_http_version(t->kube), "gets",
			     (json_int_t)sbx_kube_requests(t->kube, "GET"), "cache_bytes",
			     (json_int_t)sbx_informer_cache_bytes(t->informer)));
	json_decref(cached);
}

static void on_inf_add(json_t *obj, void *arg)
{
	informer_line(arg, "add", obj, NULL);
}

static void on_inf_update(json_t *old_obj, json_t *new_obj, void *arg)
{
	informer_line(arg, "update", new_obj, old_obj);
}

static void on_inf_delete(json_t *obj, void *arg)
{
	informer_line(arg, "delete", obj, NULL);
}

static void on_inf_synced(void *arg)
{
	informer_line(arg, "synced", NULL, NULL);
}

static void on_stop(void *arg)
{
	struct tool *t = arg;

	sbx_watch_free(t->watch);
	t->watch = NULL;
	sbx_informer_free(t->informer);
	t->informer = NULL;
	sbx_kube_free(t->kube);
	t->kube = NULL;
	sbx_signals_close(&t->signals);
}

static json_t *load_arg(const char *arg)
{
	char err[256];
	json_t *v;

	if (arg[0] == '@') {
		v = json_load_file(arg + 1, 0, NULL);
		if (!v)
			fprintf(stderr, "sbx-kubetool: cannot read JSON from %s\n", arg + 1);
		return v;
	}
	v = sbx_json_loadb(arg, strlen(arg), 16u << 20, err, sizeof(err));
	if (!v)
		fprintf(stderr, "sbx-kubetool: bad JSON argument: %s\n", err);
	return v;
}

static int run_verb(struct tool *t, const char *verb, const char *path, const char *arg)
{
	json_t *body = NULL;
	int rc;

	if (!strcmp(verb, "get"))
		return sbx_kube_get(t->kube, path, on_response, t);
	if (!strcmp(verb, "delete"))
		return sbx_kube_delete(t->kube, path, propagation, on_response, t);
	if (!arg) {
		fprintf(stderr, "sbx-kubetool: %s needs a JSON argument\n", verb);
		return -EINVAL;
	}
	if (!(body = load_arg(arg)))
		return -EINVAL;
	if (!strcmp(verb, "create"))
		rc = sbx_kube_create(t->kube, path, body, on_response, t);
	else if (!strcmp(verb, "replace"))
		rc = sbx_kube_replace(t->kube, path, body, on_response, t);
	else if (!strcmp(verb, "merge-patch"))
		rc = sbx_kube_merge_patch(t->kube, path, body, on_response, t);
	else if (!strcmp(verb, "apply"))
		rc = sbx_kube_apply(t->kube, path, body, field_manager, force, on_response, t);
	else if (!strcmp(verb, "status"))
		rc = sbx_kube_update_status(t->kube, path, body, on_response, t);
	else {
		fprintf(stderr, "sbx-kubetool: unknown command '%s' (see --help)\n", verb);
		rc = -EINVAL;
	}
	json_decref(body);
	return rc;
}

static int run_stream(struct tool *t, const char *verb, const char *path)
{
	int rc;

	if (!strcmp(verb, "watch")) {
		struct sbx_watch_opts o = { .path = path,
					    .timeout_s = (unsigned)watch_timeout_s,
					    .backoff_max_ms = (uint64_t)backoff_max_ms };
		struct sbx_watch_handlers h = { on_watch_event, on_watch_gone };

		if ((rc = sbx_watch_new(t->kube, &o, &h, t, &t->watch)))
			return rc;
		return sbx_watch_start(t->watch, resource_version);
	}
	struct sbx_informer_opts o = { .path = path,
				       .page_size = (unsigned)page_size,
				       .watch_timeout_s = (unsigned)watch_timeout_s,
				       .backoff_max_ms = (unsigned long)backoff_max_ms,
				       .compact = compact };
	struct sbx_informer_handlers h = { on_inf_add, on_inf_update, on_inf_delete,
					   on_inf_synced };

	if ((rc = sbx_informer_new(t->kube, &o, &h, t, &t->informer)))
		return rc;
	return sbx_informer_start(t->informer);
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		{ .name = "kubeconfig",
		  .type = SBX_OPT_STRING,
		  .dest = &kubeconfig,
		  .metavar = "FILE",
		  .help = "kubeconfig file (else $KUBECONFIG, in-cluster, ~/.kube/config)",
		  .env = "" },
		{ .name = "context",
		  .type = SBX_OPT_STRING,
		  .dest = &context,
		  .metavar = "NAME",
		  .help = "kubeconfig context (default: current-context)" },
		{ .name = "http1",
		  .type = SBX_OPT_BOOL,
		  .dest = &http1,
		  .help = "never use HTTP/2" },
		{ .name = "field-manager",
		  .type = SBX_OPT_STRING,
		  .dest = &field_manager,
		  .metavar = "NAME",
		  .help = "server-side apply field manager" },
		{ .name = "force",
		  .type = SBX_OPT_BOOL,
		  .dest = &force,
		  .help = "server-side apply: take over conflicting fields" },
		{ .name = "propagation",
		  .type = SBX_OPT_STRING,
		  .dest = &propagation,
		  .metavar = "POLICY",
		  .help = "delete: Foreground, Background or Orphan" },
		{ .name = "resource-version",
		  .type = SBX_OPT_STRING,
		  .dest = &resource_version,
		  .metavar = "RV",
		  .help = "watch: start after this resourceVersion" },
		{ .name = "watch-timeout",
		  .type = SBX_OPT_INT,
		  .dest = &watch_timeout_s,
		  .metavar = "SECONDS",
		  .help = "server-side length of one watch stream",
		  .min = 1,
		  .max = 3600 },
		{ .name = "page-size",
		  .type = SBX_OPT_INT,
		  .dest = &page_size,
		  .metavar = "N",
		  .help = "informer: objects per list page",
		  .min = 1,
		  .max = 10000 },
		{ .name = "compact",
		  .type = SBX_OPT_BOOL,
		  .dest = &compact,
		  .help = "informer: keep objects as compact text (sbx_informer_opts.compact)" },
		{ .name = "backoff-max-ms",
		  .type = SBX_OPT_INT,
		  .dest = &backoff_max_ms,
		  .metavar = "MS",
		  .help = "cap of the reconnect backoff",
		  .min = 10,
		  .max = 600000 },
	};
	struct sbx_config cfg = {
		.program = "sbx-kubetool",
		.summary =
			"Drives the sbx Kubernetes client: get, create, replace, merge-patch, apply,\n"
			"status, delete, watch, informer.",
		.usage = "COMMAND PATH [JSON]",
		.env_prefix = "SBX_KUBETOOL_",
		.opts = opts,
		.n_opts = sizeof(opts) / sizeof(opts[0]),
	};
	struct sbx_kube_config kc;
	struct sbx_kube_opts ko = { 0 };
	struct tool t = { .loop = uv_default_loop() };
	const char *verb, *path;
	char err[512];
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		t.exit_code = rc > 0 ? 0 : 2;
		goto out_config;
	}
	t.exit_code = 2;
	if (argc - cfg.argi < 2) {
		fprintf(stderr, "sbx-kubetool: expected COMMAND PATH (see --help)\n");
		goto out_config;
	}
	verb = argv[cfg.argi];
	path = argv[cfg.argi + 1];
	sbx_alloc_install_jansson();
	if ((rc = sbx_kube_config_load(&kc, kubeconfig, context, err, sizeof(err)))) {
		fprintf(stderr, "sbx-kubetool: %s\n", err);
		goto out_config;
	}
	ko.http1_only = http1;
	rc = sbx_kube_new(t.loop, &kc, &ko, &t.kube);
	sbx_kube_config_release(&kc);
	if (rc) {
		fprintf(stderr, "sbx-kubetool: cannot create the client: %s\n", sbx_strerror(rc));
		goto out_config;
	}
	t.exit_code = 0;
	sbx_signals_init(t.loop, &t.signals, on_stop, &t);
	if (!strcmp(verb, "watch") || !strcmp(verb, "informer"))
		rc = run_stream(&t, verb, path);
	else
		rc = run_verb(&t, verb, path, argc - cfg.argi > 2 ? argv[cfg.argi + 2] : NULL);
	if (rc) {
		if (rc != -EINVAL)
			fprintf(stderr, "sbx-kubetool: %s\n", sbx_strerror(rc));
		on_stop(&t);
		t.exit_code = 2;
	}
	uv_run(t.loop, UV_RUN_DEFAULT);
	sbx_loop_close(t.loop);
out_config:
	sbx_config_release(&cfg);
	return t.exit_code;
}
