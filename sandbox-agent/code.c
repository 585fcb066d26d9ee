/* Code execution (see code.h). A run owns its process handle, its two
 * pipes, its timer and its code file, and answers its request when the
 * process has exited and both pipes have ended. */
#include "code.h"

#include "ptyspawn.h"
#include "tree.h"

#include "api.h"
#include "context.h"
#include "kernel.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/log.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 30
#define MAX_TIMEOUT_S	  300

struct run {
	struct code *c;
	struct sbx_http_req *req; /* NULL once the client has gone */
	uv_process_t proc;
	uv_pipe_t out, err;
	uv_timer_t timer;
	int open_handles;
	int pending; /* exit + two EOFs still to come */
	struct sbx_buf stdout_buf, stderr_buf;
	char language[16];
	char path[PATH_MAX];
	char *code;
	int64_t exit_status;
	int term_signal;
	bool timed_out, exited, out_ended, err_ended, ending;
	char tag[TREE_TAG_MAX]; /* its process tree's (tree.h) */
};

int code_init(struct code *c, uv_loop_t *loop, const char *workspace, struct context *ctx,
	      size_t max_output_bytes, unsigned max_running)
{
	const char *tmp = getenv("TMPDIR");

	memset(c, 0, sizeof(*c));
	c->loop = loop;
	c->workspace = workspace;
	c->ctx = ctx;
	c->max_output_bytes = max_output_bytes;
	c->max_running = max_running;
	/* Made at the first run: an agent whose TMPDIR cannot be written
	 * (a read-only root file system) still starts, and says why code
	 * cannot run when asked to run some. */
	snprintf(c->dir, sizeof(c->dir), "%s/sbx-code-%d", tmp && *tmp ? tmp : "/tmp",
		 (int)getpid());
	return 0;
}

void code_release(struct code *c)
{
	rmdir(c->dir);
}

/* Full path of the first of names found on PATH. */
static const char *find_runtime(const char *const *names, char *out, size_t size)
{
	const char *path = getenv("PATH");

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (; *names; names++) {
		for (const char *p = path; *p;) {
			size_t n = strcspn(p, ":");
			int len = snprintf(out, size, "%.*s/%s", (int)n, p, *names);

			if (n && len > 0 && (size_t)len < size && access(out, X_OK) == 0)
				return out;
			p += n + (p[n] == ':');
		}
	}
	return NULL;
}

static const char *const python_names[] = { "python3", "python", NULL };
static const char *const node_names[] = { "node", "nodejs", NULL };

/* ---- answering ------------------------------------------------------------- */

/* Python's "Traceback (most recent call last):" block, as lines. */
static json_t *python_traceback(const char *err, char *ename, size_t en, char *evalue, size_t ev)
{
	const char *tb = err ? strstr(err, "Traceback (most recent call last):") : NULL;
	json_t *lines;
	const char *p, *last = NULL;

	ename[0] = evalue[0] = '\0';
	if (!tb)
		return NULL;
	lines = json_array();
	for (p = tb; *p;) {
		size_t n = strcspn(p, "\n");

		if (n) {
			json_array_append_new(lines, json_stringn(p, n));
			last = p;
		}
		p += n + (p[n] == '\n');
	}
	if (last) {
		const char *colon = strstr(last, ": ");
		size_t line_len = strcspn(last, "\n");

		if (colon && (size_t)(colon - last) < line_len) {
			snprintf(ename, en, "%.*s", (int)(colon - last), last);
			snprintf(evalue, ev, "%.*s", (int)(line_len - (size_t)(colon - last) - 2),
				 colon + 2);
		} else {
			snprintf(ename, en, "%.*s", (int)line_len, last);
		}
	}
	return lines;
}

static void run_answer(struct run *r)
{
	const char *out = r->stdout_buf.data ? r->stdout_buf.data : "";
	const char *err = r->stderr_buf.data ? r->stderr_buf.data : "";
	bool ok = !r->timed_out && r->exit_status == 0 && !r->term_signal;
	const char *status = r->timed_out ? "timeout" : ok ? "ok" : "error";
	char ename[128], evalue[512];
	json_t *outputs = json_array(), *tb = NULL, *data;
	int exit_code = r->term_signal ? 128 + r->term_signal : (int)r->exit_status;

	if (r->stdout_buf.len)
		json_array_append_new(outputs,
				      json_pack("{s:s, s:s, s:s%}", "output_type", "stream", "name",
						"stdout", "text", out, r->stdout_buf.len));
	if (r->stderr_buf.len)
		json_array_append_new(outputs,
				      json_pack("{s:s, s:s, s:s%}", "output_type", "stream", "name",
						"stderr", "text", err, r->stderr_buf.len));
	if (!ok && strcmp(r->language, "python") == 0)
		tb = python_traceback(err, ename, sizeof(ename), evalue, sizeof(evalue));
	if (tb)
		json_array_append_new(outputs,
				      json_pack("{s:s, s:s, s:s, s:O}", "output_type", "error",
						"ename", ename, "evalue", evalue, "traceback", tb));
	data = json_pack("{s:s, s:s, s:o, s:s, s:s%, s:s%, s:i, s:o, s:n}", "language", r->language,
			 "status", status, "outputs", outputs, "code", r->code, "stdout", out,
			 r->stdout_buf.len, "stderr", err, r->stderr_buf.len, "exit_code",
			 exit_code, "traceback", tb ? tb : json_null(), "session_id");
	sbx_http_on_abort(r->req, NULL, NULL);
	if (!data)
		sbx_http_respond_error(r->req, 500, "out of memory (or output that is not UTF-8)");
	else
		api_ok(r->req, r->timed_out ? "Execution timed out" : "Execution finished", data);
}

static void run_closed(uv_handle_t *h)
{
	struct run *r = h->data;

	if (--r->open_handles)
		return;
	r->c->running--;
	unlink(r->path);
	sbx_buf_release(&r->stdout_buf);
	sbx_buf_release(&r->stderr_buf);
	sbx_free(r->code);
	sbx_free(r);
}

static void run_step(struct run *r)
{
	if (--r->pending)
		return;
	if (r->req)
		run_answer(r);
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->proc, run_closed);
	uv_close((uv_handle_t *)&r->out, run_closed);
	uv_close((uv_handle_t *)&r->err, run_closed);
	uv_close((uv_handle_t *)&r->timer, run_closed);
}

static void on_timeout(uv_timer_t *t);

/* Ends the run's whole tree (a child that called setsid too); a second
 * later, pipes something outside it may still hold are no longer waited
 * for. */
static void end_tree(struct run *r)
{
	tree_signal(r->tag, r->exited ? 0 : r->proc.pid, SIGKILL);
	if (!r->ending) {
		r->ending = true;
		uv_timer_start(&r->timer, on_timeout, 1000, 0);
	}
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct run *r = p->data;

	r->exit_status = status;
	r->term_signal = sig;
	r->exited = true;
	/* Whatever the code left running goes with it. */
	end_tree(r);
	run_step(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void stream_ended(struct run *r, bool is_out)
{
	if (is_out ? r->out_ended : r->err_ended)
		return;
	if (is_out)
		r->out_ended = true;
	else
		r->err_ended = true;
	uv_read_stop(is_out ? (uv_stream_t *)&r->out : (uv_stream_t *)&r->err);
	run_step(r);
}

static void on_output(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct run *r = s->data;
	struct sbx_buf *b = s == (uv_stream_t *)&r->out ? &r->stdout_buf : &r->stderr_buf;

	if (n > 0) {
		/* Past the limit the output is dropped, and said so once. */
		if (sbx_buf_append(b, buf->base, (size_t)n) == -E2BIG && b->len < b->max + 1) {
			static const char note[] =
				"\n[output limit reached; the rest was dropped]\n";

			b->max += sizeof(note);
			sbx_buf_append(b, note, sizeof(note) - 1);
			b->max = b->len;
		}
		return;
	}
	if (n < 0)
		stream_ended(r, s == (uv_stream_t *)&r->out);
}

static void on_timeout(uv_timer_t *t)
{
	struct run *r = t->data;

	if (!r->ending) {
		r->timed_out = true;
		end_tree(r);
		return;
	}
	if (!r->out_ended)
		stream_ended(r, true);
	if (!r->err_ended)
		stream_ended(r, false);
}

static void on_gone(struct sbx_http_req *req, void *arg)
{
	struct run *r = arg;

	r->req = NULL;
	end_tree(r);
}

/* ---- handlers ---------------------------------------------------------------- */

static int write_code(const char *path, const char *code)
{
	FILE *f = fopen(path, "w");
	int rc = 0;

	if (!f)
		return -errno;
	if (fputs(code, f) == EOF)
		rc = -EIO;
	if (fclose(f) && !rc)
		rc = -errno;
	return rc;
}

static int spawn_run(struct run *r, const char *runtime, const char *cwd)
{
	uv_stdio_container_t stdio[3];
	uv_process_options_t o = { 0 };
	char *args[3] = { (char *)runtime, r->path, NULL };
	char tag_env[TREE_TAG_MAX + 16], **env;
	const char *const changes[] = { tag_env, NULL };
	int rc;

	uv_pipe_init(r->c->loop, &r->out, 0);
	uv_pipe_init(r->c->loop, &r->err, 0);
	uv_timer_init(r->c->loop, &r->timer);
	r->proc.data = r->out.data = r->err.data = r->timer.data = r;
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&r->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&r->err;
	o.file = runtime;
	o.args = args;
	o.cwd = cwd;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = on_exit_cb;
	/* Its own session and group, and the tag its whole tree carries: a
	 * timeout or abort kills all it started. */
	o.flags = UV_PROCESS_DETACHED;
	tree_new_tag(r->tag);
	snprintf(tag_env, sizeof(tag_env), "%s=%s", TREE_ENV, r->tag);
	o.env = env = pty_env(changes);
	rc = uv_spawn(r->c->loop, &r->proc, &o);
	pty_env_free(env);
	r->open_handles = 4; /* a failed spawn still registered the process */
	return rc;
}

void code_handle_execute(struct sbx_http_req *req, void *arg)
{
	struct code *c = arg;
	json_t *body = api_body_object(req), *v;
	const char *language, *code, *cwd = NULL;
	char runtime[PATH_MAX];
	long timeout = DEFAULT_TIMEOUT_S;
	struct run *r;
	bool python;
	int rc;

	if (!body)
		return;
	language = json_string_value(json_object_get(body, "language"));
	code = json_string_value(json_object_get(body, "code"));
	if (!json_object_get(body, "language") || !json_object_get(body, "code")) {
		api_invalid(req, json_object_get(body, "language") ? "body.code" : "body.language",
			    "Field required", "missing");
		goto out;
	}
	if (!language || (strcmp(language, "python") && strcmp(language, "javascript"))) {
		api_invalid(req, "body.language", "Input should be 'python' or 'javascript'",
			    "enum");
		goto out;
	}
	if (!code) {
		api_invalid(req, "body.code", "Input should be a valid string", "string_type");
		goto out;
	}
	v = json_object_get(body, "timeout");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MAX_TIMEOUT_S) {
			api_invalid(req, "body.timeout", "Input should be an integer from 1 to 300",
				    "int_type");
			goto out;
		}
		timeout = (long)json_integer_value(v);
	}
	v = json_object_get(body, "cwd");
	if (v && !json_is_null(v) && (!(cwd = json_string_value(v)) || cwd[0] != '/')) {
		api_invalid(req, "body.cwd", "cwd must be an absolute path", "value_error");
		goto out;
	}
	v = json_object_get(body, "session_id");
	if (v && !json_is_null(v) && !json_is_string(v)) {
		api_invalid(req, "body.session_id", "Input should be a valid string",
			    "string_type");
		goto out;
	}
	if (json_is_true(json_object_get(body, "stateful")) || json_string_length(v)) {
		/* A kept interpreter per session (kernel.c). */
		kernels_code_execute(c->kernels, req, body, timeout);
		goto out;
	}
	python = strcmp(language, "python") == 0;
	if (!find_runtime(python ? python_names : node_names, runtime, sizeof(runtime))) {
		api_fail(req,
			 python ? "no Python (python3) in this sandbox"
				: "no JavaScript runtime (node) in this sandbox",
			 NULL);
		goto out;
	}
	if (c->running >= c->max_running) {
		api_fail(req, "too many code executions running; try again when one ends", NULL);
		goto out;
	}
	r = sbx_calloc(1, sizeof(*r));
	if (!r || !(r->code = sbx_strdup(code))) {
		sbx_free(r);
		sbx_http_respond_error(req, 503, "out of memory");
		goto out;
	}
	r->c = c;
	r->req = req;
	r->pending = 3;
	snprintf(r->language, sizeof(r->language), "%s", language);
	snprintf(r->path, sizeof(r->path), "%s/run-%lu.%s", c->dir, ++c->seq, python ? "py" : "js");
	sbx_buf_init(&r->stdout_buf, c->max_output_bytes);
	sbx_buf_init(&r->stderr_buf, c->max_output_bytes);
	c->running++;
	if (mkdir(c->dir, 0700) && errno != EEXIST) {
		char why[PATH_MAX + 64];

		snprintf(why, sizeof(why), "cannot make %s for the code: %s", c->dir,
			 strerror(errno));
		api_fail(req, why, NULL);
		r->req = NULL;
		r->open_handles = 1;
		run_closed(&(uv_handle_t){ .data = r });
		goto out;
	}
	if ((rc = write_code(r->path, code)) ||
	    (rc = spawn_run(r, runtime, cwd ? cwd : c->workspace))) {
		api_fail(req,
			 rc == -ENOENT || rc == UV_ENOENT ? "cwd does not exist"
							  : "cannot start the interpreter",
			 NULL);
		r->req = NULL;
		if (r->open_handles) {
			r->pending = 1;
			run_step(r);
		} else {
			r->open_handles = 1;
			run_closed(&(uv_handle_t){ .data = r });
		}
		goto out;
	}
	uv_read_start((uv_stream_t *)&r->out, on_alloc, on_output);
	uv_read_start((uv_stream_t *)&r->err, on_alloc, on_output);
	uv_timer_start(&r->timer, on_timeout, (uint64_t)timeout * 1000, 0);
	sbx_http_on_abort(req, on_gone, r);
out:
	json_decref(body);
}

static json_t *language_info(const struct code *c, const char *lang, const char *kind,
			     const char *description)
{
	json_t *specs = json_object_get(c->ctx->runtime, kind), *first = json_array_get(specs, 0);
	const char *ver = json_string_value(json_object_get(first, "ver"));

	return json_pack("{s:s, s:s, s:s?, s:i, s:i}", "language", lang, "description", description,
			 "runtime_version", ver, "default_timeout", DEFAULT_TIMEOUT_S,
			 "max_timeout", MAX_TIMEOUT_S);
}

static void handle_info_now(struct sbx_http_req *req, void *arg)
{
	struct code *c = arg;
	json_t *langs = json_array();
	char path[PATH_MAX];

	if (find_runtime(python_names, path, sizeof(path)))
		json_array_append_new(langs, language_info(c, "python", "python", "Python 3"));
	if (find_runtime(node_names, path, sizeof(path)))
		json_array_append_new(langs, language_info(c, "javascript", "nodejs", "Node.js"));
	api_ok(req, "Supported languages", json_pack("{s:o}", "languages", langs));
}

void code_handle_info(struct sbx_http_req *req, void *arg)
{
	struct code *c = arg;

	if (!context_defer(c->ctx, req, handle_info_now, c))
		handle_info_now(req, c);
}
