/* Stateful code sessions (see kernel.h). A kernel owns its process, four
 * pipes and a timer; an execution (kexec) belongs to its kernel's queue and
 * to the request that asked for it, until one of them lets go. */
#define _GNU_SOURCE
#include "kernel.h"

#include "api.h"
#include "kernel_js.h"
#include "kernel_py.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S  30
#define MAX_TIMEOUT_S	   3600
#define INTERRUPT_GRACE_MS 3000
#define NODE_FALLBACK_MS   2000
#define JUPYTER_IDLE_S	   1800	 /* sessions expire after 30 minutes idle */
#define NODE_IDLE_S	   86400 /* the API's default max_idle_time */
#define REAP_EVERY_MS	   10000
#define MAX_ID		   64

enum lang { PY, JS };

struct kernel;

/* Output of one stream: what precedes the marker is the execution's. */
struct kstream {
	struct sbx_buf kept;   /* this execution's bytes so far */
	struct sbx_buf sealed; /* a finished execution's bytes (marker seen) */
	size_t dropped;	       /* past the limit */
	size_t sealed_dropped;
	size_t matched; /* bytes of the marker matched */
	bool has_sealed;
};

struct kexec {
	struct kexec *next;
	struct kernel *k;
	struct sbx_http_req *req; /* NULL once the client has gone */
	enum { EP_JUPYTER, EP_NODEJS, EP_CODE } endpoint;
	char *code;
	json_t *files;	    /* name -> content, written before the run (Node.js), or NULL */
	json_t *stdin_text; /* the run's process.stdin (Node.js), or NULL */
	char cwd[PATH_MAX];
	long timeout_s;
	bool ephemeral; /* the kernel was made for this execution alone */
};

struct kernel {
	struct kernels *ks;
	char key[MAX_ID + 4]; /* "py:" / "js:" + id */
	char id[MAX_ID + 1];
	enum lang lang;
	char cwd[PATH_MAX];
	char marker[32];
	size_t mlen;
	uv_process_t proc;
	uv_pipe_t to, from, out, err;
	uv_timer_t timer;
	int open_handles;
	bool exited, dead, interrupted, timed_out;
	int64_t exit_status;
	int term_signal;
	struct sbx_buf line; /* a reply line being read */
	json_t *reply;
	struct kstream sout, serr;
	struct kexec *cur, *head, *tail;
	int execution_count;
	double created_ms, last_used_ms;
	uint64_t max_idle_ms;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
}

static const char *runtime_path(enum lang lang, char *out, size_t size)
{
	static const char *const py[] = { "python3", "python", NULL };
	static const char *const js[] = { "node", "nodejs", NULL };
	const char *path = getenv("PATH");

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *const *n = lang == PY ? py : js; *n; n++) {
		for (const char *p = path; *p;) {
			size_t len = strcspn(p, ":");
			int w = snprintf(out, size, "%.*s/%s", (int)len, p, *n);

			if (len && w > 0 && (size_t)w < size && access(out, X_OK) == 0)
				return out;
			p += len + (p[len] == ':');
		}
	}
	return NULL;
}

/* ---- output streams ----------------------------------------------------------- */

static void stream_init(struct kstream *st, size_t max)
{
	sbx_buf_init(&st->kept, max);
	sbx_buf_init(&st->sealed, max);
}

static void stream_release(struct kstream *st)
{
	sbx_buf_release(&st->kept);
	sbx_buf_release(&st->sealed);
}

static void stream_keep(struct kstream *st, const char *p, size_t n)
{
	size_t room = st->kept.max - st->kept.len;

	if (n > room) {
		st->dropped += n - room;
		n = room;
	}
	if (n)
		sbx_buf_append(&st->kept, p, n);
}

/* The marker's first byte (0x1e) occurs nowhere else in it, so a failed
 * partial match can only restart at the failing byte: linear, no look-back. */
static void stream_feed(struct kernel *k, struct kstream *st, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (st->matched == 0) {
			const char *rs = memchr(p + i, 0x1e, n - i);
			size_t upto = rs ? (size_t)(rs - p) : n;

			stream_keep(st, p + i, upto - i);
			i = upto;
			if (!rs)
				break;
			st->matched = 1;
			i++;
			continue;
		}
		if (p[i] == k->marker[st->matched]) {
			i++;
			if (++st->matched == k->mlen) {
				struct sbx_buf swap = st->sealed;

				/* An execution's output is complete. */
				st->matched = 0;
				sbx_buf_reset(&swap);
				st->sealed = st->kept;
				st->kept = swap;
				st->sealed_dropped = st->dropped;
				st->dropped = 0;
				st->has_sealed = true;
			}
			continue;
		}
		stream_keep(st, k->marker, st->matched);
		st->matched = 0;
	}
}

/* ---- answers --------------------------------------------------------------------- */

static json_t *stream_text(const struct sbx_buf *b, size_t dropped)
{
	struct sbx_buf t;
	json_t *s;

	sbx_buf_init(&t, b->len + 128);
	sbx_buf_append(&t, b->data ? b->data : "", b->len);
	if (dropped)
		sbx_buf_printf(&t, "\n[output limit reached; %zu bytes dropped]\n", dropped);
	s = sbx_json_string_lossy(t.data ? t.data : "", t.len);
	sbx_buf_release(&t);
	return s ? s : json_string("");
}

static const char *exec_status(const struct kernel *k, const json_t *reply)
{
	if (k->timed_out)
		return "timeout";
	if (!reply)
		return "error";
	return json_string_value(json_object_get(reply, "status")) ?: "error";
}

/* The answer for x from the kernel's reply (NULL: the interpreter died) and
 * the two outputs. */
static void exec_answer(struct kexec *x, json_t *reply, json_t *out, json_t *err, const char *why)
{
	struct kernel *k = x->k;
	const char *status = exec_status(k, reply);
	json_t *outputs = json_array(), *tb = json_object_get(reply, "traceback"), *data;
	json_t *result = json_object_get(reply, "result");
	json_int_t count = json_integer_value(json_object_get(reply, "execution_count"));
	bool timed_out = strcmp(status, "timeout") == 0;
	char msg_id[33];
	const char *message;

	if (json_string_length(out))
		json_array_append_new(outputs, json_pack("{s:s, s:s, s:O}", "output_type", "stream",
							 "name", "stdout", "text", out));
	if (json_string_length(err))
		json_array_append_new(outputs, json_pack("{s:s, s:s, s:O}", "output_type", "stream",
							 "name", "stderr", "text", err));
	if (json_is_string(result))
		json_array_append_new(outputs,
				      json_pack("{s:s, s:{s:O}, s:{}, s:I}", "output_type",
						"execute_result", "data", "text/plain", result,
						"metadata", "execution_count", count));
	if (strcmp(status, "ok") != 0) {
		const char *ename = json_string_value(json_object_get(reply, "ename"));
		const char *evalue = json_string_value(json_object_get(reply, "evalue"));

		if (!reply) {
			ename = timed_out ? "TimeoutError" : "KernelDied";
			evalue = why;
		} else if (timed_out) {
			ename = "TimeoutError";
			evalue = "the execution ran past its timeout and was interrupted";
		}
		json_array_append_new(
			outputs,
			json_pack("{s:s, s:s, s:s, s:o}", "output_type", "error", "ename",
				  ename ? ename : "Error", "evalue", evalue ? evalue : "",
				  "traceback", json_is_array(tb) ? json_incref(tb) : json_array()));
	}
	sbx_random_hex(msg_id, 16);
	switch (x->endpoint) {
	case EP_JUPYTER:
		data = json_pack("{s:s, s:s, s:s, s:I, s:o, s:s, s:s}", "kernel_name", "python3",
				 "session_id", k->id, "status", status, "execution_count", count,
				 "outputs", outputs, "code", x->code, "msg_id", msg_id);
		break;
	case EP_NODEJS:
	case EP_CODE:
		data = json_pack("{s:s, s:s, s:o, s:s, s:O, s:O, s:i, s:O, s:I}", "language",
				 k->lang == PY ? "python" : "javascript", "status", status,
				 "outputs", outputs, "code", x->code, "stdout", out, "stderr", err,
				 "exit_code", strcmp(status, "ok") == 0 ? 0 : 1, "traceback",
				 json_is_array(tb) ? tb : json_null(), "execution_count", count);
		if (data)
			json_object_set_new(data, "session_id",
					    x->ephemeral ? json_null() : json_string(k->id));
		break;
	default:
		data = NULL;
	}
	message = !reply		      ? why
		  : timed_out		      ? "Execution timed out"
		  : strcmp(status, "ok") == 0 ? "Code executed successfully"
					      : "Code raised an error";
	sbx_http_on_abort(x->req, NULL, NULL);
	if (data)
		api_ok(x->req, message, data);
	else
		sbx_http_respond_error(x->req, 500, "out of memory");
}

static void exec_free(struct kexec *x)
{
	sbx_free(x->code);
	json_decref(x->files);
	json_decref(x->stdin_text);
	sbx_free(x);
}

static void exec_gone(struct sbx_http_req *req, void *arg)
{
	struct kexec *x = arg;

	/* The execution goes on (it may set state the next call uses); its
	 * answer is dropped. */
	x->req = NULL;
}

/* ---- the kernel's life ---------------------------------------------------------- */

static void kernel_send_next(struct kernel *k);
static void kernel_destroy(struct kernel *k, const char *why);

static void kernel_closed(uv_handle_t *h)
{
	struct kernel *k = h->data;

	if (--k->open_handles)
		return;
	sbx_buf_release(&k->line);
	stream_release(&k->sout);
	stream_release(&k->serr);
	json_decref(k->reply);
	sbx_free(k);
}

/* Ends the current execution with what is known. */
static void exec_finish(struct kernel *k, json_t *reply, const char *why)
{
	struct kexec *x = k->cur;
	json_t *out, *err;

	if (!x)
		return;
	k->cur = NULL;
	uv_timer_stop(&k->timer);
	if (reply) {
		out = stream_text(&k->sout.sealed, k->sout.sealed_dropped);
		err = stream_text(&k->serr.sealed, k->serr.sealed_dropped);
	} else {
		out = stream_text(&k->sout.kept, k->sout.dropped);
		err = stream_text(&k->serr.kept, k->serr.dropped);
	}
	k->sout.has_sealed = k->serr.has_sealed = false;
	if (x->req)
		exec_answer(x, reply, out, err, why);
	json_decref(out);
	json_decref(err);
	k->last_used_ms = now_ms();
	k->timed_out = k->interrupted = false;
	if (x->ephemeral) {
		exec_free(x);
		kernel_destroy(k, NULL);
		return;
	}
	exec_free(x);
	kernel_send_next(k);
}

/* Done when the reply is in and both streams have passed the marker. */
static void kernel_check_done(struct kernel *k)
{
	json_t *reply = k->reply;

	if (!k->cur || !reply || !k->sout.has_sealed || !k->serr.has_sealed)
		return;
	k->reply = NULL;
	k->execution_count = (int)json_integer_value(json_object_get(reply, "execution_count"));
	exec_finish(k, reply, NULL);
	json_decref(reply);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_stream(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct kernel *k = s->data;

	if (n < 0) {
		uv_read_stop(s);
		return;
	}
	stream_feed(k, s == (uv_stream_t *)&k->out ? &k->sout : &k->serr, buf->base, (size_t)n);
	kernel_check_done(k);
}

static void on_reply(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct kernel *k = s->data;
	const char *nl;

	if (n < 0) {
		uv_read_stop(s);
		return;
	}
	if (sbx_buf_append(&k->line, buf->base, (size_t)n)) {
		kernel_destroy(k, "the interpreter sent a reply too large to read");
		return;
	}
	while ((nl = memchr(k->line.data, '\n', k->line.len))) {
		char err[128];
		json_t *reply = sbx_json_loadb(k->line.data, (size_t)(nl - k->line.data),
					       k->line.max, err, sizeof(err));

		sbx_buf_consume(&k->line, (size_t)(nl - k->line.data) + 1);
		if (!reply) {
			kernel_destroy(k, "the interpreter's driver sent a malformed reply");
			return;
		}
		json_decref(k->reply);
		k->reply = reply;
		kernel_check_done(k);
	}
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct kernel *k = p->data;
	char why[128];

	k->exited = true;
	k->exit_status = status;
	k->term_signal = sig;
	kill(-k->proc.pid, SIGKILL); /* what it started goes with it */
	if (k->timed_out)
		snprintf(why, sizeof(why),
			 "the execution ran past its timeout and did not stop when "
			 "interrupted: the session was killed and its state is lost");
	else if (sig)
		snprintf(why, sizeof(why), "the interpreter was killed by signal %d", sig);
	else
		snprintf(why, sizeof(why), "the interpreter exited with status %lld",
			 (long long)status);
	kernel_destroy(k, why);
}

static void on_timer(uv_timer_t *t)
{
	struct kernel *k = t->data;

	if (!k->cur)
		return;
	if (!k->interrupted) {
		/* Python: KeyboardInterrupt in the cell; the session lives on. */
		k->interrupted = k->timed_out = true;
		kill(-k->proc.pid, SIGINT);
		uv_timer_start(&k->timer, on_timer, INTERRUPT_GRACE_MS, 0);
		return;
	}
	kill(-k->proc.pid, SIGKILL); /* on_exit_cb answers */
}

static void on_written(uv_write_t *w, int status)
{
	sbx_free(w);
}

/* Writes the next queued execution to the driver. */
static void kernel_send_next(struct kernel *k)
{
	struct kexec *x = k->head;
	json_t *req;
	char *text;
	uv_write_t *w;
	size_t len;
	uv_buf_t b;

	if (k->cur || !x || k->dead)
		return;
	k->head = x->next;
	if (!k->head)
		k->tail = NULL;
	x->next = NULL;
	k->cur = x;
	k->timed_out = k->interrupted = false;
	req = json_pack("{s:s, s:s?, s:I, s:O?, s:O?}", "code", x->code, "cwd",
			x->cwd[0] ? x->cwd : NULL, "timeout_ms", (json_int_t)x->timeout_s * 1000,
			"files", x->files, "stdin", x->stdin_text);
	text = req ? sbx_json_dumps(req) : NULL;
	json_decref(req);
	len = text ? strlen(text) : 0;
	w = text ? sbx_malloc(sizeof(*w) + len + 1) : NULL;
	if (!w) {
		sbx_free(text);
		exec_finish(k, NULL, "out of memory");
		return;
	}
	memcpy((char *)(w + 1), text, len);
	((char *)(w + 1))[len] = '\n';
	sbx_free(text);
	b = uv_buf_init((char *)(w + 1), (unsigned)len + 1);
	if (uv_write(w, (uv_stream_t *)&k->to, &b, 1, on_written)) {
		sbx_free(w);
		kernel_destroy(k, "cannot write to the interpreter");
		return;
	}
	/* Python is interrupted at the timeout. Node's driver keeps the timeout
	 * itself (a SIGINT landing just after its vm stopped would interrupt the
	 * next cell), so the signal there is a late fallback only. */
	uv_timer_start(&k->timer, on_timer,
		       (uint64_t)x->timeout_s * 1000 + (k->lang == JS ? NODE_FALLBACK_MS : 0), 0);
}

static void kernel_destroy(struct kernel *k, const char *why)
{
	struct kexec *x;

	if (k->dead)
		return;
	k->dead = true;
	if (sbx_map_get(&k->ks->sessions, k->key) == k)
		sbx_map_remove(&k->ks->sessions, k->key);
	if (!k->exited)
		kill(-k->proc.pid, SIGKILL);
	exec_finish(k, NULL, why ? why : "the session was closed");
	while ((x = k->head)) {
		k->head = x->next;
		if (x->req) {
			sbx_http_on_abort(x->req, NULL, NULL);
			api_fail(x->req, why ? why : "the session was closed", NULL);
		}
		exec_free(x);
	}
	k->tail = NULL;
	uv_close((uv_handle_t *)&k->proc, kernel_closed);
	uv_close((uv_handle_t *)&k->to, kernel_closed);
	uv_close((uv_handle_t *)&k->from, kernel_closed);
	uv_close((uv_handle_t *)&k->out, kernel_closed);
	uv_close((uv_handle_t *)&k->err, kernel_closed);
	uv_close((uv_handle_t *)&k->timer, kernel_closed);
}

/* A new interpreter. *err says why on failure. */
static struct kernel *kernel_start(struct kernels *ks, enum lang lang, const char *id,
				   const char *cwd, bool ephemeral, const char **err)
{
	uv_stdio_container_t stdio[5];
	uv_process_options_t o = { 0 };
	char runtime[PATH_MAX];
	char *args[6];
	struct kernel *k;
	int rc;

	if (!runtime_path(lang, runtime, sizeof(runtime))) {
		*err = lang == PY ? "no Python (python3) in this sandbox"
				  : "no JavaScript runtime (node) in this sandbox";
		return NULL;
	}
	if (!ephemeral && ks->sessions.count >= ks->max_sessions) {
		*err = "too many code sessions; delete one first";
		return NULL;
	}
	k = sbx_calloc(1, sizeof(*k));
	if (!k) {
		*err = "out of memory";
		return NULL;
	}
	k->ks = ks;
	k->lang = lang;
	if (id)
		snprintf(k->id, sizeof(k->id), "%s", id);
	else
		sbx_random_hex(k->id, 16);
	snprintf(k->key, sizeof(k->key), "%s:%s", lang == PY ? "py" : "js", k->id);
	snprintf(k->cwd, sizeof(k->cwd), "%s", cwd && *cwd ? cwd : ks->workspace);
	k->marker[0] = 0x1e;
	memcpy(k->marker + 1, "SBXK", 4);
	sbx_random_hex(k->marker + 5, 12);
	k->marker[29] = 0x1f;
	k->mlen = 30;
	k->created_ms = k->last_used_ms = now_ms();
	k->max_idle_ms = (uint64_t)(lang == PY ? JUPYTER_IDLE_S : NODE_IDLE_S) * 1000;
	sbx_buf_init(&k->line, ks->max_output_bytes * 2 + 65536);
	stream_init(&k->sout, ks->max_output_bytes);
	stream_init(&k->serr, ks->max_output_bytes);
	uv_pipe_init(ks->loop, &k->to, 0);
	uv_pipe_init(ks->loop, &k->from, 0);
	uv_pipe_init(ks->loop, &k->out, 0);
	uv_pipe_init(ks->loop, &k->err, 0);
	uv_timer_init(ks->loop, &k->timer);
	k->proc.data = k->to.data = k->from.data = k->out.data = k->err.data = k->timer.data = k;
	k->open_handles = 6;
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&k->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&k->err;
	stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
	stdio[3].data.stream = (uv_stream_t *)&k->to;
	stdio[4].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[4].data.stream = (uv_stream_t *)&k->from;
	args[0] = runtime;
	if (lang == PY) {
		args[1] = "-u";
		args[2] = "-c";
		args[3] = (char *)kernel_py;
		args[4] = k->marker;
		args[5] = NULL;
	} else {
		args[1] = "-e";
		args[2] = (char *)kernel_js;
		args[3] = k->marker;
		args[4] = NULL;
	}
	o.file = runtime;
	o.args = args;
	o.cwd = k->cwd;
	o.stdio = stdio;
	o.stdio_count = 5;
	o.exit_cb = on_exit_cb;
	o.flags = UV_PROCESS_DETACHED; /* its own group: kills reach all it starts */
	rc = uv_spawn(ks->loop, &k->proc, &o);
	if (rc) {
		k->exited = true;
		k->dead = true;
		*err = rc == UV_ENOENT ? "the working directory does not exist"
				       : "cannot start the interpreter";
		uv_close((uv_handle_t *)&k->proc, kernel_closed);
		uv_close((uv_handle_t *)&k->to, kernel_closed);
		uv_close((uv_handle_t *)&k->from, kernel_closed);
		uv_close((uv_handle_t *)&k->out, kernel_closed);
		uv_close((uv_handle_t *)&k->err, kernel_closed);
		uv_close((uv_handle_t *)&k->timer, kernel_closed);
		return NULL;
	}
	uv_read_start((uv_stream_t *)&k->out, on_alloc, on_stream);
	uv_read_start((uv_stream_t *)&k->err, on_alloc, on_stream);
	uv_read_start((uv_stream_t *)&k->from, on_alloc, on_reply);
	if (!ephemeral && sbx_map_put(&ks->sessions, k->key, k, NULL)) {
		kernel_destroy(k, NULL);
		*err = "out of memory";
		return NULL;
	}
	sbx_log_info("code session started", SBX_LS("session", k->id),
		     SBX_LS("language", lang == PY ? "python" : "javascript"),
		     SBX_LI("pid", k->proc.pid));
	return k;
}

static struct kernel *kernel_find(struct kernels *ks, enum lang lang, const char *id)
{
	char key[MAX_ID + 8];

	snprintf(key, sizeof(key), "%s:%s", lang == PY ? "py" : "js", id);
	return sbx_map_get(&ks->sessions, key);
}

/* Queues code on session id (made if missing; NULL: a new one, or, with
 * ephemeral, one that ends after this execution). */
static void kernel_submit(struct kernels *ks, struct sbx_http_req *req, int endpoint,
			  enum lang lang, const char *id, const char *code, const char *cwd,
			  long timeout_s, bool ephemeral, json_t *files, json_t *stdin_text)
{
	struct kernel *k = id ? kernel_find(ks, lang, id) : NULL;
	const char *err = NULL;
	struct kexec *x;

	if (id && strlen(id) > MAX_ID) {
		api_invalid(req, "body.session_id", "session_id is longer than 64 characters",
			    "string_too_long");
		return;
	}
	if (!k && !(k = kernel_start(ks, lang, id, cwd, ephemeral, &err))) {
		api_fail(req, err, NULL);
		return;
	}
	x = sbx_calloc(1, sizeof(*x));
	if (!x || !(x->code = sbx_strdup(code))) {
		sbx_free(x);
		if (ephemeral)
			kernel_destroy(k, NULL);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	x->k = k;
	x->req = req;
	x->files = json_incref(files);
	x->stdin_text = json_incref(stdin_text);
	x->endpoint = endpoint;
	x->ephemeral = ephemeral;
	x->timeout_s = timeout_s;
	if (cwd)
		snprintf(x->cwd, sizeof(x->cwd), "%s", cwd);
	if (k->tail)
		k->tail->next = x;
	else
		k->head = x;
	k->tail = x;
	k->last_used_ms = now_ms();
	sbx_http_on_abort(req, exec_gone, x);
	kernel_send_next(k);
}

/* ---- set-up ------------------------------------------------------------------------ */

struct reap_ctx {
	struct kernel *victims[64];
	size_t n;
	double now;
};

static void reap_one(const char *key, void *value, void *arg)
{
	struct reap_ctx *r = arg;
	struct kernel *k = value;

	if (!k->cur && !k->head && r->now - k->last_used_ms > (double)k->max_idle_ms &&
	    r->n < sizeof(r->victims) / sizeof(r->victims[0]))
		r->victims[r->n++] = k;
}

static void on_reap(uv_timer_t *t)
{
	struct kernels *ks = t->data;
	struct reap_ctx r = { .now = now_ms() };

	sbx_map_foreach(&ks->sessions, reap_one, &r);
	for (size_t i = 0; i < r.n; i++) {
		sbx_log_info("code session idle too long: closed",
			     SBX_LS("session", r.victims[i]->id));
		kernel_destroy(r.victims[i], NULL);
	}
}

int kernels_init(struct kernels *ks, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
		 size_t max_output_bytes)
{
	memset(ks, 0, sizeof(*ks));
	ks->loop = loop;
	ks->workspace = workspace;
	ks->max_sessions = max_sessions;
	ks->max_output_bytes = max_output_bytes;
	sbx_map_init(&ks->sessions, max_sessions + 1);
	uv_timer_init(loop, &ks->reaper);
	ks->reaper.data = ks;
	uv_timer_start(&ks->reaper, on_reap, REAP_EVERY_MS, REAP_EVERY_MS);
	uv_unref((uv_handle_t *)&ks->reaper);
	return 0;
}

struct collect {
	struct kernel *all[1024];
	size_t n;
	int lang; /* -1: any */
};

static void collect_one(const char *key, void *value, void *arg)
{
	struct collect *c = arg;
	struct kernel *k = value;

	if ((c->lang < 0 || (int)k->lang == c->lang) && c->n < sizeof(c->all) / sizeof(c->all[0]))
		c->all[c->n++] = k;
}

static size_t destroy_all(struct kernels *ks, int lang)
{
	static struct collect c;

	do {
		c.n = 0;
		c.lang = lang;
		sbx_map_foreach(&ks->sessions, collect_one, &c);
		for (size_t i = 0; i < c.n; i++)
			kernel_destroy(c.all[i], NULL);
	} while (c.n == sizeof(c.all) / sizeof(c.all[0]));
	return c.n;
}

void kernels_close(struct kernels *ks)
{
	struct kernel *k;

	if (ks->closing)
		return;
	ks->closing = true;
	while ((k = sbx_map_pop(&ks->sessions)))
		kernel_destroy(k, NULL);
	uv_close((uv_handle_t *)&ks->reaper, NULL);
	sbx_map_release(&ks->sessions);
}

/* ---- request helpers ------------------------------------------------------------------ */

/* timeout (seconds, 1..3600; absent or null: 30). false after a 422. */
static bool get_timeout(struct sbx_http_req *req, json_t *body, long *out)
{
	json_t *v = json_object_get(body, "timeout");

	*out = DEFAULT_TIMEOUT_S;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > MAX_TIMEOUT_S) {
		api_invalid(req, "body.timeout", "Input should be an integer from 1 to 3600",
			    "int_type");
		return false;
	}
	*out = (long)json_integer_value(v);
	return true;
}

static bool get_cwd(struct sbx_http_req *req, json_t *body, const char **cwd)
{
	if (!api_opt_string(req, body, "cwd", cwd))
		return false;
	if (*cwd && (*cwd)[0] != '/') {
		api_invalid(req, "body.cwd", "cwd must be an absolute path", "value_error");
		return false;
	}
	return true;
}

static bool get_code(struct sbx_http_req *req, json_t *body, const char **code)
{
	json_t *v = json_object_get(body, "code");

	if (!v) {
		api_invalid(req, "body.code", "Field required", "missing");
		return false;
	}
	if (!json_is_string(v)) {
		api_invalid(req, "body.code", "Input should be a valid string", "string_type");
		return false;
	}
	*code = json_string_value(v);
	return true;
}

/* ---- /v1/jupyter ------------------------------------------------------------------------ */

static bool kernel_name_ok(struct sbx_http_req *req, const char *name)
{
	if (!name || !*name || strcmp(name, "python3") == 0 || strcmp(name, "python") == 0)
		return true;
	api_fail(req, "unknown kernel_name; this sandbox has 'python3'", NULL);
	return false;
}

void kernels_handle_jupyter_execute(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *code, *id, *cwd, *kname;
	long timeout;

	if (!body)
		return;
	if (get_code(req, body, &code) && get_timeout(req, body, &timeout) &&
	    api_opt_string(req, body, "session_id", &id) && get_cwd(req, body, &cwd) &&
	    api_opt_string(req, body, "kernel_name", &kname) && kernel_name_ok(req, kname))
		kernel_submit(arg, req, EP_JUPYTER, PY, id && *id ? id : NULL, code, cwd, timeout,
			      false, NULL, NULL);
	json_decref(body);
}

void kernels_handle_jupyter_create(struct sbx_http_req *req, void *arg)
{
	struct kernels *ks = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *id, *cwd, *kname, *err = NULL;
	struct kernel *k;

	if (!body)
		return;
	if (!api_opt_string(req, body, "session_id", &id) || !get_cwd(req, body, &cwd) ||
	    !api_opt_string(req, body, "kernel_name", &kname) || !kernel_name_ok(req, kname))
		goto out;
	if (id && strlen(id) > MAX_ID) {
		api_invalid(req, "body.session_id", "session_id is longer than 64 characters",
			    "string_too_long");
		goto out;
	}
	if (id && *id && (k = kernel_find(ks, PY, id))) {
		api_ok(req, "Session already exists",
		       json_pack("{s:s, s:s, s:s}", "session_id", k->id, "kernel_name", "python3",
				 "message", "Session already exists"));
		goto out;
	}
	if (!(k = kernel_start(ks, PY, id && *id ? id : NULL, cwd, false, &err))) {
		api_fail(req, err, NULL);
		goto out;
	}
	api_ok(req, "Session created",
	       json_pack("{s:s, s:s, s:s}", "session_id", k->id, "kernel_name", "python3",
			 "message", "Session created"));
out:
	json_decref(body);
}

void kernels_handle_jupyter_info(struct sbx_http_req *req, void *arg)
{
	struct kernels *ks = arg;
	struct collect *c = sbx_calloc(1, sizeof(*c));
	char path[PATH_MAX];
	bool have = runtime_path(PY, path, sizeof(path)) != NULL;

	if (!c) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	c->lang = PY;
	sbx_map_foreach(&ks->sessions, collect_one, c);
	api_ok(req, "Jupyter information",
	       json_pack("{s:s, s:[s?], s:I, s:i, s:i, s:s, s:s}", "default_kernel", "python3",
			 "available_kernels", have ? "python3" : NULL, "active_sessions",
			 (json_int_t)c->n, "session_timeout_seconds", JUPYTER_IDLE_S,
			 "max_sessions", (int)ks->max_sessions, "description",
			 "Persistent Python interpreters, one per session (variables, imports "
			 "and functions survive between calls)",
			 "kernel_detection", have ? path : "no python3 on PATH"));
	sbx_free(c);
}

static json_t *jupyter_session_info(const struct kernel *k, double now)
{
	return json_pack("{s:s, s:f, s:I}", "kernel_name", "python3", "last_used",
			 k->last_used_ms / 1000.0, "age_seconds",
			 (json_int_t)((now - k->created_ms) / 1000.0));
}

void kernels_handle_jupyter_list(struct sbx_http_req *req, void *arg)
{
	struct kernels *ks = arg;
	struct collect *c = sbx_calloc(1, sizeof(*c));
	json_t *sessions = json_object();
	double now = now_ms();

	if (!c) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	c->lang = PY;
	sbx_map_foreach(&ks->sessions, collect_one, c);
	for (size_t i = 0; i < c->n; i++)
		json_object_set_new(sessions, c->all[i]->id, jupyter_session_info(c->all[i], now));
	api_ok(req, "Active sessions", json_pack("{s:o}", "sessions", sessions));
	sbx_free(c);
}

void kernels_handle_jupyter_delete_all(struct sbx_http_req *req, void *arg)
{
	size_t n = destroy_all(arg, PY);
	char msg[64];

	snprintf(msg, sizeof(msg), "Closed %zu sessions", n);
	api_ok(req, msg, NULL);
}

void kernels_handle_jupyter_delete(struct sbx_http_req *req, void *arg)
{
	struct kernel *k = kernel_find(arg, PY, sbx_http_param(req, "session_id"));

	if (!k) {
		api_fail(req, "no such session", NULL);
		return;
	}
	kernel_destroy(k, NULL);
	api_ok(req, "Session closed", NULL);
}

/* ---- /v1/nodejs ------------------------------------------------------------------------- */

static json_t *node_session_info(const struct kernel *k, double now)
{
	return json_pack("{s:s, s:s, s:f, s:f, s:I, s:I, s:s}", "session_id", k->id, "cwd", k->cwd,
			 "created_at", k->created_ms, "last_used", k->last_used_ms, "max_idle_time",
			 (json_int_t)k->max_idle_ms, "age_seconds",
			 (json_int_t)((now - k->last_used_ms) / 1000.0), "state",
			 k->cur ? "EXECUTING" : "IDLE");
}

/* max_idle_time in seconds (1..30 days); false after a 422. */
static bool get_idle(struct sbx_http_req *req, json_t *body, long *out)
{
	json_t *v = json_object_get(body, "max_idle_time");

	*out = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > 30L * 86400) {
		api_invalid(req, "body.max_idle_time",
			    "Input should be a number of seconds from 1 to 2592000", "int_type");
		return false;
	}
	*out = (long)json_integer_value(v);
	return true;
}

/* "files": names relative to the execution's directory, each made of
 * path segments that are not empty, "." or ".."; string contents. */
static bool files_ok(struct sbx_http_req *req, json_t *files)
{
	const char *name;
	json_t *v;

	if (!json_is_object(files)) {
		api_invalid(req, "body.files", "Input should be a valid dictionary", "dict_type");
		return false;
	}
	json_object_foreach(files, name, v)
	{
		bool bad = !*name || name[0] == '/' || strlen(name) > 1024;

		for (const char *p = name; !bad && *p;) {
			size_t n = strcspn(p, "/");

			bad = n == 0 || (n == 1 && p[0] == '.') || (n == 2 && !strncmp(p, "..", 2));
			p += n + (p[n] == '/');
		}
		if (bad) {
			api_invalid(req, "body.files",
				    "file names are relative paths inside the execution's "
				    "directory (no '..', no empty segment)",
				    "value_error");
			return false;
		}
		if (!json_is_string(v) && !json_is_null(v)) {
			api_invalid(req, "body.files",
				    "file contents should be strings (or null: empty)",
				    "string_type");
			return false;
		}
	}
	return true;
}

void kernels_handle_nodejs_execute(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *files, *stdin_text;
	const char *code, *id, *cwd;
	long timeout;
	bool stateful;

	if (!body)
		return;
	if (!get_code(req, body, &code) || !get_timeout(req, body, &timeout) ||
	    !api_opt_string(req, body, "session_id", &id) || !get_cwd(req, body, &cwd))
		goto out;
	stdin_text = json_object_get(body, "stdin");
	if (json_is_null(stdin_text))
		stdin_text = NULL;
	if (stdin_text && !json_is_string(stdin_text)) {
		api_invalid(req, "body.stdin", "Input should be a valid string", "string_type");
		goto out;
	}
	files = json_object_get(body, "files");
	if (json_is_null(files))
		files = NULL;
	if (files && !files_ok(req, files))
		goto out;
	stateful = json_is_true(json_object_get(body, "stateful")) || (id && *id);
	kernel_submit(arg, req, EP_NODEJS, JS, stateful && id && *id ? id : NULL, code, cwd,
		      timeout, !stateful, json_object_size(files) ? files : NULL, stdin_text);
out:
	json_decref(body);
}

void kernels_handle_nodejs_create(struct sbx_http_req *req, void *arg)
{
	struct kernels *ks = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *id, *cwd, *err = NULL;
	struct kernel *k;
	long idle;

	if (!body)
		return;
	if (!api_opt_string(req, body, "session_id", &id) || !get_cwd(req, body, &cwd) ||
	    !get_idle(req, body, &idle))
		goto out;
	if (id && strlen(id) > MAX_ID) {
		api_invalid(req, "body.session_id", "session_id is longer than 64 characters",
			    "string_too_long");
		goto out;
	}
	if (id && *id && (k = kernel_find(ks, JS, id))) {
		api_ok(req, "Session already exists",
		       json_pack("{s:s, s:b, s:s, s:o}", "session_id", k->id, "created", 0,
				 "message", "Session already exists", "session",
				 node_session_info(k, now_ms())));
		goto out;
	}
	if (!(k = kernel_start(ks, JS, id && *id ? id : NULL, cwd, false, &err))) {
		api_fail(req, err, NULL);
		goto out;
	}
	if (idle)
		k->max_idle_ms = (uint64_t)idle * 1000;
	api_ok(req, "Session created",
	       json_pack("{s:s, s:b, s:s, s:o}", "session_id", k->id, "created", 1, "message",
			 "Session created", "session", node_session_info(k, now_ms())));
out:
	json_decref(body);
}

void kernels_handle_nodejs_list(struct sbx_http_req *req, void *arg)
{
	struct collect *c = sbx_calloc(1, sizeof(*c));
	json_t *sessions = json_object();
	double now = now_ms();

	if (!c) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	c->lang = JS;
	sbx_map_foreach(&((struct kernels *)arg)->sessions, collect_one, c);
	for (size_t i = 0; i < c->n; i++)
		json_object_set_new(sessions, c->all[i]->id, node_session_info(c->all[i], now));
	api_ok(req, "Sessions", json_pack("{s:o}", "sessions", sessions));
	sbx_free(c);
}

void kernels_handle_nodejs_get(struct sbx_http_req *req, void *arg)
{
	struct kernel *k = kernel_find(arg, JS, sbx_http_param(req, "session_id"));

	if (!k) {
		api_fail(req, "no such session", NULL);
		return;
	}
	api_ok(req, "Session", json_pack("{s:o}", "session", node_session_info(k, now_ms())));
}

void kernels_handle_nodejs_update(struct sbx_http_req *req, void *arg)
{
	struct kernel *k = kernel_find(arg, JS, sbx_http_param(req, "session_id"));
	json_t *body;
	const char *cwd;
	long idle;

	if (!k) {
		api_fail(req, "no such session", NULL);
		return;
	}
	body = api_body_object_or_empty(req);
	if (!body)
		return;
	if (get_cwd(req, body, &cwd) && get_idle(req, body, &idle)) {
		if (idle)
			k->max_idle_ms = (uint64_t)idle * 1000;
		if (cwd) /* the next execution starts there */
			snprintf(k->cwd, sizeof(k->cwd), "%s", cwd);
		api_ok(req, "Session updated",
		       json_pack("{s:b, s:o}", "updated", 1, "session",
				 node_session_info(k, now_ms())));
	}
	json_decref(body);
}

void kernels_handle_nodejs_delete(struct sbx_http_req *req, void *arg)
{
	struct kernel *k = kernel_find(arg, JS, sbx_http_param(req, "session_id"));

	if (!k) {
		api_fail(req, "no such session", NULL);
		return;
	}
	kernel_destroy(k, NULL);
	api_ok(req, "Session deleted", json_pack("{s:b}", "deleted", 1));
}

void kernels_handle_nodejs_info(struct sbx_http_req *req, void *arg)
{
	char path[PATH_MAX];
	const char *node = runtime_path(JS, path, sizeof(path));

	api_ok(req, "Node.js runtime",
	       json_pack("{s:s, s:s, s:[s], s:s, s:s?, s:[], s:[], s:[], s:n}", "node_version",
			 node ? "available" : "", "npm_version", "", "supported_languages",
			 "javascript", "description",
			 node ? "Persistent Node.js contexts, one per session"
			      : "no node on PATH in this sandbox",
			 "runtime_directory", node ? path : NULL, "runtime_packages",
			 "global_packages", "available_versions", "current_version"));
}

/* ---- /v1/code/execute, stateful ----------------------------------------------------------- */

void kernels_code_execute(struct kernels *ks, struct sbx_http_req *req, json_t *body,
			  long timeout_s)
{
	const char *lang = json_string_value(json_object_get(body, "language"));
	const char *code = json_string_value(json_object_get(body, "code"));
	const char *id = json_string_value(json_object_get(body, "session_id"));
	const char *cwd = json_string_value(json_object_get(body, "cwd"));

	kernel_submit(ks, req, EP_CODE, strcmp(lang, "python") == 0 ? PY : JS,
		      id && *id ? id : NULL, code, cwd, timeout_s, false, NULL, NULL);
}
