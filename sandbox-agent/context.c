/* Sandbox context (see context.h). */
#include "context.h"

#include "api.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 5000
#define PROBE_OUTPUT_MAX 4096

/* Tools reported in the context, by category, when found on PATH. */
static const struct {
	const char *category;
	const char *tools[6];
} util_table[] = {
	{ "shell", { "bash", "sh", "zsh" } },
	{ "vcs", { "git" } },
	{ "network", { "curl", "wget", "ssh" } },
	{ "editor", { "vim", "vi", "nano" } },
	{ "build", { "make", "gcc", "cc", "cmake" } },
	{ "package", { "pip3", "pip", "npm", "apt-get" } },
	{ "text", { "grep", "sed", "awk", "jq" } },
};

/* Full path of name on PATH into out; 0 or -ENOENT. */
static int which(const char *name, char *out, size_t size)
{
	const char *path = getenv("PATH"), *p;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p;) {
		size_t n = strcspn(p, ":");
		int len = snprintf(out, size, "%.*s/%s", (int)n, p, name);

		if (n && len > 0 && (size_t)len < size && access(out, X_OK) == 0)
			return 0;
		p += n + (p[n] == ':');
	}
	return -ENOENT;
}

/* ---- runtime probes: run "<bin> --version" once ------------------------- */

struct probe {
	struct context *ctx;
	uv_process_t proc;
	uv_pipe_t out;
	uv_timer_t timer;
	struct sbx_buf text;
	char kind[16]; /* "python" or "nodejs" */
	char bin[PATH_MAX];
	char name[32];
	int open; /* handles not yet closed */
	int64_t exit_status;
	bool exited, eof;
};

static void answer_waiting(struct context *ctx);

static void probe_closed(uv_handle_t *h)
{
	struct probe *pr = h->data;
	struct context *ctx = pr->ctx;

	if (--pr->open)
		return;
	sbx_buf_release(&pr->text);
	sbx_free(pr);
	if (--ctx->probes == 0)
		answer_waiting(ctx);
}

/* "Python 3.11.7" / "v20.20.2" -> "3.11.7" / "20.20.2" */
static const char *version_of(const char *text, char *out, size_t size)
{
	const char *p = text + strcspn(text, "0123456789");
	size_t n = strspn(p, "0123456789.");

	snprintf(out, size, "%.*s", (int)n, p);
	return n ? out : NULL;
}

/* Adds the probe's result to ctx->runtime[kind], merging names that are the
 * same file (python -> python3) into one entry's alias list. */
static void probe_record(struct probe *pr)
{
	json_t *list = json_object_get(pr->ctx->runtime, pr->kind), *it;
	char real[PATH_MAX], ver[64];
	size_t i;

	if (!pr->exited || pr->exit_status != 0 || !pr->text.data ||
	    !version_of(pr->text.data, ver, sizeof(ver)))
		return;
	if (!realpath(pr->bin, real))
		snprintf(real, sizeof(real), "%s", pr->bin);
	json_array_foreach(list, i, it)
	{
		if (strcmp(json_string_value(json_object_get(it, "real")), real) == 0) {
			json_array_append_new(json_object_get(it, "alias"), json_string(pr->name));
			return;
		}
	}
	json_array_append_new(list, json_pack("{s:s, s:s, s:[s], s:s}", "ver", ver, "bin", pr->bin,
					      "alias", pr->name, "real", real));
}

static void probe_finish(struct probe *pr)
{
	if (!pr->exited || !pr->eof)
		return;
	probe_record(pr);
	uv_timer_stop(&pr->timer);
	uv_close((uv_handle_t *)&pr->proc, probe_closed);
	uv_close((uv_handle_t *)&pr->out, probe_closed);
	uv_close((uv_handle_t *)&pr->timer, probe_closed);
}

static void probe_exit(uv_process_t *p, int64_t status, int signal)
{
	struct probe *pr = p->data;

	pr->exited = true;
	pr->exit_status = signal ? -1 : status;
	probe_finish(pr);
}

static void probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[1024];

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void probe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct probe *pr = s->data;

	if (n > 0) {
		/* Output past the limit is not needed to find a version. */
		sbx_buf_append(&pr->text, buf->base, (size_t)n);
		return;
	}
	if (n < 0) {
		uv_read_stop(s);
		pr->eof = true;
		probe_finish(pr);
	}
}

static void probe_timeout(uv_timer_t *t)
{
	struct probe *pr = t->data;

	sbx_log_warn("runtime probe timed out", SBX_LS("bin", pr->bin));
	uv_process_kill(&pr->proc, SIGKILL);
}

static void probe_start(struct context *ctx, const char *kind, const char *name)
{
	uv_stdio_container_t stdio[3];
	uv_process_options_t o = { 0 };
	struct probe *pr;
	char *args[3];

	pr = sbx_calloc(1, sizeof(*pr));
	if (!pr || which(name, pr->bin, sizeof(pr->bin))) {
		sbx_free(pr);
		return;
	}
	pr->ctx = ctx;
	snprintf(pr->kind, sizeof(pr->kind), "%s", kind);
	snprintf(pr->name, sizeof(pr->name), "%s", name);
	sbx_buf_init(&pr->text, PROBE_OUTPUT_MAX);
	uv_pipe_init(ctx->loop, &pr->out, 0);
	uv_timer_init(ctx->loop, &pr->timer);
	pr->proc.data = pr->out.data = pr->timer.data = pr;
	args[0] = pr->bin;
	args[1] = "--version";
	args[2] = NULL;
	/* Python 3 and Node print their version on stdout. */
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&pr->out;
	stdio[2].flags = UV_IGNORE;
	o.file = pr->bin;
	o.args = args;
	o.exit_cb = probe_exit;
	o.stdio = stdio;
	o.stdio_count = 3;
	ctx->probes++;
	if (uv_spawn(ctx->loop, &pr->proc, &o)) {
		/* A failed spawn still registered the process handle: close it too. */
		pr->open = 3;
		uv_close((uv_handle_t *)&pr->proc, probe_closed);
		uv_close((uv_handle_t *)&pr->out, probe_closed);
		uv_close((uv_handle_t *)&pr->timer, probe_closed);
		return;
	}
	pr->open = 3;
	uv_read_start((uv_stream_t *)&pr->out, probe_alloc, probe_read);
	uv_timer_start(&pr->timer, probe_timeout, PROBE_TIMEOUT_MS, 0);
}

/* ---- gathering ------------------------------------------------------------ */

static json_t *gather_utils(void)
{
	json_t *cats = json_array();
	char path[PATH_MAX];

	for (size_t i = 0; cats && i < sizeof(util_table) / sizeof(util_table[0]); i++) {
		json_t *tools = json_array();

		for (size_t j = 0; tools && j < 6 && util_table[i].tools[j]; j++) {
			if (which(util_table[i].tools[j], path, sizeof(path)) == 0)
				json_array_append_new(tools, json_pack("{s:s, s:s}", "name",
								       util_table[i].tools[j],
								       "description", path));
		}
		if (json_array_size(tools))
			json_array_append_new(cats,
					      json_pack("{s:s, s:o}", "category",
							util_table[i].category, "tools", tools));
		else
			json_decref(tools);
	}
	return cats;
}

int context_init(struct context *ctx, uv_loop_t *loop, const char *workspace)
{
	struct passwd *pw = getpwuid(getuid());
	const char *home = getenv("HOME");

	memset(ctx, 0, sizeof(*ctx));
	ctx->loop = loop;
	if (!home || !*home)
		home = pw && pw->pw_dir ? pw->pw_dir : "/";
	ctx->home = sbx_strdup(home);
	ctx->workspace = sbx_strdup(workspace && *workspace ? workspace : home);
	ctx->user = sbx_strdup(pw && pw->pw_name ? pw->pw_name : "unknown");
	ctx->runtime = json_pack("{s:[], s:[]}", "python", "nodejs");
	if (!ctx->home || !ctx->workspace || !ctx->user || !ctx->runtime) {
		context_release(ctx);
		return -ENOMEM;
	}
	return 0;
}

/* The facts that cost processes and file system walks are gathered when first
 * asked for, not at start: the agent answers its first request sooner. */
static void gather(struct context *ctx)
{
	if (ctx->gathered)
		return;
	ctx->gathered = true;
	ctx->utils = gather_utils();
	probe_start(ctx, "python", "python3");
	probe_start(ctx, "python", "python");
	probe_start(ctx, "nodejs", "node");
}

void context_release(struct context *ctx)
{
	sbx_free(ctx->home);
	sbx_free(ctx->workspace);
	sbx_free(ctx->user);
	json_decref(ctx->runtime);
	json_decref(ctx->utils);
	memset(ctx, 0, sizeof(*ctx));
}

/* /proc files are in memory and small: read on the loop thread. */
static void ports_from(const char *file, json_t *out)
{
	char line[512];
	FILE *f = fopen(file, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned port, state;
		char local[128];

		if (sscanf(line, " %*d: %127[0-9A-Fa-f]:%x %*s %x", local, &port, &state) != 3 ||
		    state != 0x0A)
			continue;
		char text[8];
		size_t i;
		json_t *it;
		bool seen = false;

		snprintf(text, sizeof(text), "%u", port);
		json_array_foreach(out, i, it) seen |= strcmp(json_string_value(it), text) == 0;
		if (!seen)
			json_array_append_new(out, json_string(text));
	}
	fclose(f);
}

json_t *context_listening_ports(void)
{
	json_t *ports = json_array();

	ports_from("/proc/net/tcp", ports);
	ports_from("/proc/net/tcp6", ports);
	return ports;
}

static void os_release(char *out, size_t size)
{
	char line[256];
	FILE *f = fopen("/etc/os-release", "r");

	snprintf(out, size, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "PRETTY_NAME=", 12) == 0) {
			char *v = line + 12;

			v[strcspn(v, "\n")] = '\0';
			if (*v == '"') {
				v++;
				v[strcspn(v, "\"")] = '\0';
			}
			/* Names longer than the caller's buffer are cut, on purpose. */
			snprintf(out, size, "%.100s", v);
			break;
		}
	}
	fclose(f);
}

static void timezone_name(char *out, size_t size)
{
	const char *tz = getenv("TZ");
	char link[PATH_MAX];
	ssize_t n;

	if (tz && *tz) {
		snprintf(out, size, "%s", tz[0] == ':' ? tz + 1 : tz);
		return;
	}
	n = readlink("/etc/localtime", link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = '\0';
		const char *zi = strstr(link, "zoneinfo/");

		snprintf(out, size, "%.100s", zi ? zi + 9 : link);
		return;
	}
	snprintf(out, size, "UTC");
}

static json_t *strip_real(json_t *runtime)
{
	json_t *copy = json_deep_copy(runtime), *list, *it;
	const char *k;
	size_t i;

	json_object_foreach(copy, k, list)
	{
		json_array_foreach(list, i, it) json_object_del(it, "real");
	}
	return copy;
}

static void respond_context(struct context *ctx, struct sbx_http_req *req)
{
	struct utsname un;
	char osv[128], tz[128];
	json_t *env, *extra;

	uname(&un);
	os_release(osv, sizeof(osv));
	timezone_name(tz, sizeof(tz));
	env = api_envelope(true, "Sandbox context", NULL);
	/* The SDK validates these top-level fields beside the envelope. */
	extra = json_pack(
		"{s:s, s:s, s:s, s:{s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}, s:o, s:O}}",
		"home_dir", ctx->home, "workspace", ctx->workspace, "version",
		"sbx-agent " SBX_VERSION, "detail", "system", "os", un.sysname, "os_version", osv,
		"arch", un.machine, "user", ctx->user, "home_dir", ctx->home, "workspace",
		ctx->workspace, "timezone", tz, "occupied_ports", context_listening_ports(),
		"runtime", strip_real(ctx->runtime), "utils", ctx->utils);
	if (!env || !extra || json_object_update(env, extra)) {
		json_decref(env);
		json_decref(extra);
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	json_decref(extra);
	sbx_http_respond_json(req, 200, env);
	json_decref(env);
}

static void waiter_gone(struct sbx_http_req *req, void *arg)
{
	struct context *ctx = arg;

	for (unsigned i = 0; i < ctx->n_waiting; i++) {
		if (ctx->waiting[i].req == req) {
			ctx->waiting[i] = ctx->waiting[--ctx->n_waiting];
			return;
		}
	}
}

static void answer_waiting(struct context *ctx)
{
	while (ctx->n_waiting) {
		struct context_waiter w = ctx->waiting[--ctx->n_waiting];

		sbx_http_on_abort(w.req, NULL, NULL);
		w.fn(w.req, w.arg);
	}
}

bool context_defer(struct context *ctx, struct sbx_http_req *req, sbx_http_handler fn, void *arg)
{
	gather(ctx);
	if (!ctx->probes || ctx->n_waiting == sizeof(ctx->waiting) / sizeof(ctx->waiting[0]))
		return false;
	ctx->waiting[ctx->n_waiting++] = (struct context_waiter){ req, fn, arg };
	sbx_http_on_abort(req, waiter_gone, ctx);
	return true;
}

static void handle_sandbox_now(struct sbx_http_req *req, void *arg)
{
	respond_context(arg, req);
}

void context_handle_sandbox(struct sbx_http_req *req, void *arg)
{
	if (!context_defer(arg, req, handle_sandbox_now, arg))
		respond_context(arg, req);
}

void context_handle_ping(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	api_ok(req, "pong", NULL);
}
