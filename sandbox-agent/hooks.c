/* Lifecycle hooks (see hooks.h). */
#include "hooks.h"

#include "api.h"
#include "sbx/alloc.h"
#include "sbx/http.h"
#include "sbx/log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMAND_MAX 4096

struct hook_run {
	struct hooks *h;
	uv_process_t proc;
	uv_timer_t timer;
	char name[65];
	int open; /* handles not closed yet */
	bool exited;
};

static void run_next_level(struct hooks *h);

/* ---- the list ---------------------------------------------------------------------- */

static struct hook *find(struct hooks *h, const char *name)
{
	for (unsigned i = 0; i < h->n; i++)
		if (!strcmp(h->list[i].name, name))
			return &h->list[i];
	return NULL;
}

/* Kept in priority order (stable: among equals, the older first). */
static int add(struct hooks *h, const char *name, const char *command, double timeout_s,
	       long priority, bool from_env)
{
	struct hook *old = find(h, name),
		    nh = { .timeout_s = timeout_s, .priority = priority, .from_env = from_env };
	unsigned at;

	if (old) {
		sbx_free(old->command);
		memmove(old, old + 1, (size_t)(h->list + h->n - old - 1) * sizeof(*old));
		h->n--;
	}
	if (h->n == HOOKS_MAX)
		return -E2BIG;
	snprintf(nh.name, sizeof(nh.name), "%s", name);
	if (!(nh.command = sbx_strdup(command)))
		return -ENOMEM;
	for (at = 0; at < h->n && h->list[at].priority <= priority; at++)
		;
	memmove(&h->list[at + 1], &h->list[at], (h->n - at) * sizeof(h->list[0]));
	h->list[at] = nh;
	h->n++;
	return 0;
}

static json_t *hook_json(const struct hook *k)
{
	return json_pack("{s:s, s:s, s:s, s:f, s:i, s:s}", "name", k->name, "event", "shutdown",
			 "command", k->command, "timeout", k->timeout_s, "priority",
			 (int)k->priority, "source", k->from_env ? "env" : "api");
}

int hooks_init(struct hooks *h, uv_loop_t *loop, const char *workspace, const char *env_command)
{
	memset(h, 0, sizeof(*h));
	h->loop = loop;
	h->workspace = workspace;
	if (env_command && *env_command)
		return add(h, "env", env_command, 10, 100, true);
	return 0;
}

void hooks_release(struct hooks *h)
{
	for (unsigned i = 0; i < h->n; i++)
		sbx_free(h->list[i].command);
	h->n = 0;
}

/* ---- running ----------------------------------------------------------------------- */

static void run_closed(uv_handle_t *hd)
{
	struct hook_run *r = hd->data;
	struct hooks *h = r->h;

	if (--r->open)
		return;
	sbx_free(r);
	if (--h->live == 0)
		run_next_level(h);
}

static void run_exit(uv_process_t *p, int64_t status, int signo)
{
	struct hook_run *r = p->data;

	r->exited = true;
	/* What the hook left running in its group goes with it. */
	kill(-p->pid, SIGKILL);
	if (status || signo)
		sbx_log_warn("shutdown hook failed", SBX_LS("hook", r->name),
			     SBX_LI("exit_code", status), SBX_LI("signal", signo));
	else
		sbx_log_info("shutdown hook done", SBX_LS("hook", r->name));
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->proc, run_closed);
	uv_close((uv_handle_t *)&r->timer, run_closed);
}

static void run_timeout(uv_timer_t *t)
{
	struct hook_run *r = t->data;

	sbx_log_warn("shutdown hook timed out, killed", SBX_LS("hook", r->name));
	kill(-r->proc.pid, SIGKILL); /* run_exit follows */
}

static void run_one(struct hooks *h, const struct hook *k)
{
	char *args[] = { "/bin/sh", "-c", k->command, NULL };
	uv_process_options_t o = { .file = "/bin/sh",
				   .args = args,
				   .cwd = h->workspace,
				   .exit_cb = run_exit,
				   .flags = UV_PROCESS_DETACHED };
	uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE },
					  { .flags = UV_INHERIT_FD, .data.fd = 2 },
					  { .flags = UV_INHERIT_FD, .data.fd = 2 } };
	struct hook_run *r = sbx_calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return;
	o.stdio = stdio;
	o.stdio_count = 3;
	r->h = h;
	snprintf(r->name, sizeof(r->name), "%s", k->name);
	r->proc.data = r->timer.data = r;
	uv_timer_init(h->loop, &r->timer);
	if ((rc = uv_spawn(h->loop, &r->proc, &o))) {
		sbx_log_warn("shutdown hook could not start", SBX_LS("hook", k->name),
			     SBX_LS("error", uv_strerror(rc)));
		r->open = 1;
		h->live++;
		uv_close((uv_handle_t *)&r->proc, NULL);
		uv_close((uv_handle_t *)&r->timer, run_closed);
		return;
	}
	r->open = 2;
	h->live++;
	uv_timer_start(&r->timer, run_timeout, (uint64_t)(k->timeout_s * 1000), 0);
}

/* The hooks of the next priority, side by side; when none is left, done.
 * The list is in priority order. */
static void run_next_level(struct hooks *h)
{
	unsigned i = 0;

	while (i < h->n && h->list[i].priority <= h->level)
		i++;
	if (i == h->n) {
		h->running = false;
		if (h->done)
			h->done(h->done_arg);
		return;
	}
	h->level = h->list[i].priority;
	for (; i < h->n && h->list[i].priority == h->level; i++)
		run_one(h, &h->list[i]);
	if (h->live == 0) /* none could start */
		run_next_level(h);
}

void hooks_run_shutdown(struct hooks *h, void (*done)(void *arg), void *arg)
{
	if (h->running)
		return;
	h->running = true;
	h->done = done;
	h->done_arg = arg;
	h->level = LONG_MIN;
	if (h->n)
		sbx_log_info("running shutdown hooks", SBX_LI("hooks", h->n));
	run_next_level(h);
}

/* ---- the API ------------------------------------------------------------------------ */

void hooks_handle_register(struct sbx_http_req *req, void *arg)
{
	struct hooks *h = arg;
	json_t *body = api_body_object(req), *v;
	const char *name, *command, *event = "shutdown";
	double timeout_s = 10;
	long priority = 100;
	struct hook *old;
	int rc;

	if (!body)
		return;
	name = json_string_value(json_object_get(body, "name"));
	command = json_string_value(json_object_get(body, "command"));
	if (!name || !*name || strlen(name) > 64 ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyz"
			 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789_-") != strlen(name)) {
		api_invalid(req, "body.name", "Input should be 1 to 64 of a-z, A-Z, 0-9, _ and -",
			    name ? "string_pattern_mismatch" : "missing");
		goto out;
	}
	if (!command || !*command || strlen(command) > COMMAND_MAX) {
		api_invalid(req, "body.command",
			    "Input should be a command of 1 to 4096 characters",
			    command ? "string_too_long" : "missing");
		goto out;
	}
	if ((v = json_object_get(body, "event")) && !json_is_null(v)) {
		event = json_string_value(v);
		if (!event || strcmp(event, "shutdown")) {
			api_invalid(req, "body.event", "Input should be 'shutdown'", "enum");
			goto out;
		}
	}
	if ((v = json_object_get(body, "timeout")) && !json_is_null(v)) {
		timeout_s = json_number_value(v);
		if (!json_is_number(v) || !isfinite(timeout_s) || timeout_s <= 0 ||
		    timeout_s > 3600) {
			api_invalid(req, "body.timeout",
				    "Input should be a number of seconds above 0, at most 3600",
				    "less_than_equal");
			goto out;
		}
	}
	if ((v = json_object_get(body, "priority")) && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < -1000000 ||
		    json_integer_value(v) > 1000000) {
			api_invalid(req, "body.priority", "Input should be a valid integer",
				    "int_type");
			goto out;
		}
		priority = (long)json_integer_value(v);
	}
	if ((old = find(h, name)) && old->from_env) {
		api_fail(req, "a hook of this name comes from the agent's configuration", NULL);
		goto out;
	}
	if (h->running) {
		api_fail(req, "the agent is stopping: its shutdown hooks are running", NULL);
		goto out;
	}
	if ((rc = add(h, name, command, timeout_s, priority, false))) {
		api_fail(req, rc == -E2BIG ? "too many hooks (64)" : "out of memory", NULL);
		goto out;
	}
	api_ok(req, "Hook registered", hook_json(find(h, name)));
out:
	json_decref(body);
}

void hooks_handle_list(struct sbx_http_req *req, void *arg)
{
	struct hooks *h = arg;
	json_t *list = json_array();
	char event[32];

	if (sbx_http_query(req, "event", event, sizeof(event)) >= 0 && strcmp(event, "shutdown")) {
		api_ok(req, "Hooks", list); /* no other event has hooks */
		return;
	}
	for (unsigned i = 0; i < h->n; i++)
		json_array_append_new(list, hook_json(&h->list[i]));
	api_ok(req, "Hooks", list);
}

void hooks_handle_remove(struct sbx_http_req *req, void *arg)
{
	struct hooks *h = arg;
	const char *name = sbx_http_param(req, "name");
	struct hook *k = find(h, name ? name : "");
	json_t *env;

	if (!k || k->from_env || h->running) {
		env = api_envelope(
			false,
			!k	     ? "no hook of this name"
			: h->running ? "the agent is stopping: its shutdown hooks are running"
				     : "a hook from the agent's configuration cannot be removed",
			NULL);
		sbx_http_respond_json(req, !k ? 404 : h->running ? 409 : 403, env);
		json_decref(env);
		return;
	}
	sbx_free(k->command);
	memmove(k, k + 1, (size_t)(h->list + h->n - k - 1) * sizeof(*k));
	h->n--;
	api_ok(req, "Hook removed", NULL);
}
