/* /v1/bash (see bash.h). Lifetimes are counted: a command is held by its
 * running process, by its session's history and by each request waiting on
 * it; a session by the session table and by each of its commands. */
#define _GNU_SOURCE
#include "bash.h"

#include "api.h"
#include "ptyspawn.h"
#include "tree.h"
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EPHEMERAL_LINGER_S 600
#define HISTORY		   16 /* finished commands a session remembers */
#define MAX_ID		   64
#define DEFAULT_MAX_OUTPUT 50000
#define MAX_WAIT_S	   3600
enum cstatus { C_RUNNING, C_COMPLETED, C_TIMED_OUT, C_KILLED };
static const char *const cstatus_names[] = { "running", "completed", "timed_out", "killed" };

struct bsession;
struct bwait;

struct bcmd {
	int refs;
	struct bsession *s;
	char id[33];
	char tag[TREE_TAG_MAX]; /* its process tree's (tree.h) */
	char *command;
	enum cstatus status;
	int exit_code;
	bool have_exit;
	uv_process_t proc;
	uv_pipe_t in, out, err;
	uv_timer_t hard;
	int open_handles;
	int pending; /* exit + two EOFs */
	bool exited, out_ended, err_ended, hard_fired;
	struct sbx_buf stdout_buf, stderr_buf;
	size_t stdout_dropped, stderr_dropped;
	struct bwait *waiters;
};

struct bsession {
	int refs;
	struct bash *b;
	char id[MAX_ID + 1];
	char dir[PATH_MAX];
	bool closed;
	/* Made for one /v1/bash/exec without a session_id: it ends with its
	 * command when the exec answered the final result; otherwise (async,
	 * or the exec's timeout came first) its output can be read for
	 * EPHEMERAL_LINGER_S after the command ended, unless a new session
	 * needs its place first. Naming it in a later exec makes it last. */
	bool ephemeral, delivered;
	time_t finished_at;
	time_t created_at, last_used_at;
	unsigned command_count;
	struct bcmd *history[HISTORY]; /* newest last */
	unsigned n_history;
};

struct bwait {
	struct bwait *next;
	struct bcmd *cmd;
	struct sbx_http_req *req;
	uv_timer_t timer;
	bool is_exec;
	bool timer_on;
	size_t off, eoff;
	long max_len;
};

static void iso_time(time_t t, char *out, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- lifetimes ------------------------------------------------------------------- */

static void session_unref(struct bsession *s)
{
	if (--s->refs == 0)
		sbx_free(s);
}

static void cmd_unref(struct bcmd *c)
{
	if (--c->refs)
		return;
	sbx_buf_release(&c->stdout_buf);
	sbx_buf_release(&c->stderr_buf);
	sbx_free(c->command);
	session_unref(c->s);
	sbx_free(c);
}

static void cmd_closed(uv_handle_t *h)
{
	struct bcmd *c = h->data;

	if (--c->open_handles == 0)
		cmd_unref(c); /* the process's hold */
}

/* ---- answers --------------------------------------------------------------------- */

/* bytes [from, end) of a stream as text (lossy UTF-8), cut in the middle
 * to max characters (0: whole). */
static json_t *stream_text(const struct sbx_buf *b, size_t from, size_t dropped, long max)
{
	const char *data = b->data ? b->data : "";
	size_t len = from < b->len ? b->len - from : 0;
	struct sbx_buf t;
	json_t *s;

	sbx_buf_init(&t, len + 256);
	if (max > 0 && len > (size_t)max) {
		size_t head = (size_t)max / 2, tail = (size_t)max - head;

		sbx_buf_append(&t, data + from, head);
		sbx_buf_printf(&t, "\n... [%zu bytes omitted] ...\n", len - head - tail);
		sbx_buf_append(&t, data + from + len - tail, tail);
	} else {
		sbx_buf_append(&t, data + from, len);
	}
	if (dropped && from + len >= b->len)
		sbx_buf_printf(&t, "\n[output limit reached; %zu bytes dropped]\n", dropped);
	s = sbx_json_string_lossy(t.data ? t.data : "", t.len);
	sbx_buf_release(&t);
	return s ? s : json_string("");
}

static json_t *cmd_info(const struct bcmd *c)
{
	return json_pack("{s:s, s:s, s:s, s:o}", "command_id", c->id, "command", c->command,
			 "status", cstatus_names[c->status], "exit_code",
			 c->have_exit ? json_integer(c->exit_code) : json_null());
}

static json_t *exec_result(const struct bcmd *c, long max_len)
{
	return json_pack(
		"{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:I}", "session_id", c->s->id,
		"command_id", c->id, "command", c->command, "status", cstatus_names[c->status],
		"stdout", stream_text(&c->stdout_buf, 0, c->stdout_dropped, max_len), "stderr",
		stream_text(&c->stderr_buf, 0, c->stderr_dropped, max_len), "exit_code",
		c->have_exit ? json_integer(c->exit_code) : json_null(), "offset",
		(json_int_t)c->stdout_buf.len, "stderr_offset", (json_int_t)c->stderr_buf.len);
}

static json_t *output_result(const struct bcmd *c, size_t off, size_t eoff)
{
	return json_pack("{s:s, s:o, s:o, s:I, s:I, s:o}", "session_id", c->s->id, "stdout",
			 stream_text(&c->stdout_buf, off, c->stdout_dropped, 0), "stderr",
			 stream_text(&c->stderr_buf, eoff, c->stderr_dropped, 0), "offset",
			 (json_int_t)c->stdout_buf.len, "stderr_offset",
			 (json_int_t)c->stderr_buf.len, "command", cmd_info(c));
}

static void wait_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

/* Answers w and drops it. */
static void wait_answer(struct bwait *w)
{
	struct bcmd *c = w->cmd;
	struct bwait **pp;

	for (pp = &c->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	if (w->req) {
		sbx_http_on_abort(w->req, NULL, NULL);
		if (w->is_exec)
			api_ok(w->req,
			       c->status == C_RUNNING ? "Command is still running"
						      : "Command finished",
			       exec_result(c, w->max_len));
		else
			api_ok(w->req, "Output", output_result(c, w->off, w->eoff));
		if (w->is_exec && c->status != C_RUNNING)
			c->s->delivered = true; /* the exec answered its final result */
	}
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, wait_closed);
	cmd_unref(c);
}

static void wait_gone(struct sbx_http_req *req, void *arg)
{
	struct bwait *w = arg;

	w->req = NULL;
	wait_answer(w);
}

static void wait_timeout(uv_timer_t *t)
{
	wait_answer(t->data);
}

/* New output or an end: answers the waiters it satisfies. */
static void cmd_notify(struct bcmd *c)
{
	struct bwait *w = c->waiters, *next;

	c->refs++; /* answering may drop the last waiter's hold */
	for (; w; w = next) {
		next = w->next;
		if (c->status != C_RUNNING ||
		    (!w->is_exec && (c->stdout_buf.len > w->off || c->stderr_buf.len > w->eoff)))
			wait_answer(w);
	}
	cmd_unref(c);
}

/* Registers a waiter on c for up to timeout_ms (0: no limit). */
static void wait_add(struct bcmd *c, struct sbx_http_req *req, bool is_exec, size_t off,
		     size_t eoff, long max_len, uint64_t timeout_ms)
{
	struct bwait *w = sbx_calloc(1, sizeof(*w));

	if (!w) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	w->cmd = c;
	w->req = req;
	w->is_exec = is_exec;
	w->off = off;
	w->eoff = eoff;
	w->max_len = max_len;
	c->refs++;
	uv_timer_init(c->s->b->loop, &w->timer);
	w->timer.data = w;
	if (timeout_ms)
		uv_timer_start(&w->timer, wait_timeout, timeout_ms, 0);
	w->next = c->waiters;
	c->waiters = w;
	sbx_http_on_abort(req, wait_gone, w);
}

static void session_close(struct bsession *s);

/* ---- the command's process --------------------------------------------------------- */

static void cmd_step(struct bcmd *c)
{
	if (--c->pending)
		return;
	uv_timer_stop(&c->hard);
	if (c->status == C_RUNNING)
		c->status = C_COMPLETED;
	cmd_notify(c);
	uv_close((uv_handle_t *)&c->proc, cmd_closed);
	uv_close((uv_handle_t *)&c->in, cmd_closed);
	uv_close((uv_handle_t *)&c->out, cmd_closed);
	uv_close((uv_handle_t *)&c->err, cmd_closed);
	uv_close((uv_handle_t *)&c->hard, cmd_closed);
	if (c->s->ephemeral && !c->s->closed) {
		c->s->finished_at = time(NULL);
		if (c->s->delivered)
			session_close(c->s);
	}
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct bcmd *c = p->data;

	c->exited = true;
	c->exit_code = sig ? 128 + sig : (int)status;
	c->have_exit = true;
	kill(-c->proc.pid, SIGKILL); /* what it left in its group */
	cmd_step(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void stream_ended(struct bcmd *c, bool is_out)
{
	if (is_out ? c->out_ended : c->err_ended)
		return;
	if (is_out)
		c->out_ended = true;
	else
		c->err_ended = true;
	uv_read_stop(is_out ? (uv_stream_t *)&c->out : (uv_stream_t *)&c->err);
	cmd_step(c);
}

static void on_output(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct bcmd *c = st->data;
	bool is_out = st == (uv_stream_t *)&c->out;
	struct sbx_buf *b = is_out ? &c->stdout_buf : &c->stderr_buf;

	if (n > 0) {
		size_t room = b->max - b->len, take = (size_t)n < room ? (size_t)n : room;

		sbx_buf_append(b, buf->base, take);
		if (is_out)
			c->stdout_dropped += (size_t)n - take;
		else
			c->stderr_dropped += (size_t)n - take;
		cmd_notify(c);
		return;
	}
	if (n < 0)
		stream_ended(c, is_out);
}

/* The root while it lives (its pid may be another's once reaped). */
static pid_t live_root(const struct bcmd *c)
{
	return c->exited ? 0 : c->proc.pid;
}

static void on_hard_timeout(uv_timer_t *t)
{
	struct bcmd *c = t->data;

	if (!c->hard_fired) {
		c->hard_fired = true;
		c->status = C_TIMED_OUT;
		tree_signal(c->tag, live_root(c), SIGKILL);
		/* Its pipes close as the tree dies; whatever still holds them a
		 * second later is outside it, and the answer does not wait. */
		uv_timer_start(&c->hard, on_hard_timeout, 1000, 0);
		return;
	}
	if (!c->out_ended)
		stream_ended(c, true);
	if (!c->err_ended)
		stream_ended(c, false);
}

/* A copy of environ with env's string values set and the tree's tag (NULL
 * on no memory; freed with pty_env_free). */
static char **make_env(json_t *env, const char *tag)
{
	size_t n = 0, max = json_object_size(env) + 2;
	const char **changes = sbx_calloc(max, sizeof(*changes));
	const char *key;
	char **out = NULL;
	json_t *v;

	if (!changes)
		return NULL;
	/* The command's tree carries its tag (tree.h). */
	if (asprintf((char **)&changes[n], "%s=%s", TREE_ENV, tag) < 0)
		goto out;
	n++;
	json_object_foreach(env, key, v)
	{
		if (json_is_string(v) &&
		    asprintf((char **)&changes[n], "%s=%s", key, json_string_value(v)) >= 0)
			n++;
	}
	out = pty_env(changes);
out:
	for (size_t i = 0; i < n; i++)
		free((char *)changes[i]);
	sbx_free(changes);
	return out;
}

static int cmd_spawn(struct bcmd *c, const char *dir, json_t *env)
{
	uv_stdio_container_t stdio[3];
	uv_process_options_t o = { 0 };
	const char *shell = pty_shell();
	bool bash = strcmp(shell, "/bin/bash") == 0;
	/* stdin is a socket (libuv's pipes are socket pairs): bash then takes
	 * itself for a command run by rshd and, at the top level (SHLVL unset,
	 * as under an agent that is PID 1), sources ~/.bashrc before every
	 * command. --norc stops that; sh reads nothing. */
	char *args[4] = { (char *)shell, "-c", c->command, NULL };
	char *bash_args[5] = { (char *)shell, "--norc", "-c", c->command, NULL };
	char **envp = make_env(env, c->tag);
	uv_loop_t *loop = c->s->b->loop;
	int rc;

	uv_pipe_init(loop, &c->in, 0);
	uv_pipe_init(loop, &c->out, 0);
	uv_pipe_init(loop, &c->err, 0);
	uv_timer_init(loop, &c->hard);
	c->proc.data = c->in.data = c->out.data = c->err.data = c->hard.data = c;
	c->open_handles = 5;
	stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
	stdio[0].data.stream = (uv_stream_t *)&c->in;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&c->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&c->err;
	o.file = shell;
	o.args = bash ? bash_args : args;
	o.cwd = dir;
	o.env = envp;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = on_exit_cb;
	o.flags = UV_PROCESS_DETACHED; /* its own group: kill reaches all it started */
	rc = uv_spawn(loop, &c->proc, &o);
	pty_env_free(envp);
	return rc;
}

/* ---- sessions ------------------------------------------------------------------------ */

static json_t *session_info(const struct bsession *s)
{
	char created[32], used[32];
	const struct bcmd *last = s->n_history ? s->history[s->n_history - 1] : NULL;

	iso_time(s->created_at, created, sizeof(created));
	iso_time(s->last_used_at, used, sizeof(used));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:i}", "session_id", s->id, "status",
			 s->closed ? "closed" : "ready", "working_dir", s->dir, "created_at",
			 created, "last_used_at", used, "current_command",
			 last && last->status == C_RUNNING ? last->command : NULL, "command_count",
			 (int)s->command_count);
}

struct sweep {
	struct bsession *due[64];
	size_t n;
	struct bsession *oldest; /* the finished one-call session to evict first */
	time_t now;
};

static void sweep_one(const char *key, void *value, void *arg)
{
	struct sweep *sw = arg;
	struct bsession *s = value;

	(void)key;
	if (!s->ephemeral || !s->finished_at)
		return;
	if (sw->now - s->finished_at >= EPHEMERAL_LINGER_S &&
	    sw->n < sizeof(sw->due) / sizeof(sw->due[0]))
		sw->due[sw->n++] = s;
	else if (!sw->oldest || s->finished_at < sw->oldest->finished_at)
		sw->oldest = s;
}

/* Ends the finished one-call sessions past their time; when the table is
 * still full, the oldest finished one makes room. */
static void sweep(struct bash *b)
{
	struct sweep sw = { .now = time(NULL) };

	sbx_map_foreach(&b->sessions, sweep_one, &sw);
	for (size_t i = 0; i < sw.n; i++)
		session_close(sw.due[i]);
	if (b->sessions.count >= b->max_sessions && sw.oldest)
		session_close(sw.oldest);
}

static struct bsession *session_new(struct bash *b, const char *id, const char *dir,
				    const char **err)
{
	struct bsession *s;

	sweep(b);
	if (b->sessions.count >= b->max_sessions) {
		*err = "too many bash sessions; close one first";
		return NULL;
	}
	s = sbx_calloc(1, sizeof(*s));
	if (!s) {
		*err = "out of memory";
		return NULL;
	}
	s->b = b;
	s->refs = 1; /* the table's */
	if (id && *id)
		snprintf(s->id, sizeof(s->id), "%s", id);
	else
		sbx_random_hex(s->id, 8);
	snprintf(s->dir, sizeof(s->dir), "%s", dir && *dir ? dir : b->workspace);
	s->created_at = s->last_used_at = time(NULL);
	if (sbx_map_put(&b->sessions, s->id, s, NULL)) {
		sbx_free(s);
		*err = "out of memory";
		return NULL;
	}
	return s;
}

static void session_close(struct bsession *s)
{
	if (s->closed)
		return;
	s->closed = true;
	sbx_map_remove(&s->b->sessions, s->id);
	for (unsigned i = 0; i < s->n_history; i++) {
		struct bcmd *c = s->history[i];

		if (c->status == C_RUNNING) {
			c->status = C_KILLED;
			tree_signal(c->tag, live_root(c), SIGKILL);
		}
		cmd_unref(c);
	}
	s->n_history = 0;
	session_unref(s);
}

/* Remembers c; forgets the oldest finished command past the limit. */
static void session_remember(struct bsession *s, struct bcmd *c)
{
	if (s->n_history == HISTORY) {
		unsigned drop = 0;

		while (drop < s->n_history && s->history[drop]->status == C_RUNNING)
			drop++;
		if (drop == s->n_history)
			drop = 0; /* all running: the oldest goes from the list only */
		cmd_unref(s->history[drop]);
		memmove(&s->history[drop], &s->history[drop + 1],
			(s->n_history - drop - 1) * sizeof(s->history[0]));
		s->n_history--;
	}
	s->history[s->n_history++] = c;
	c->refs++;
}

static struct bcmd *session_cmd(struct bsession *s, const char *id)
{
	for (unsigned i = s->n_history; i-- > 0;)
		if (!id || strcmp(s->history[i]->id, id) == 0)
			return s->history[i];
	return NULL;
}

/* ---- validation ------------------------------------------------------------------------ */

static bool opt_number(struct sbx_http_req *req, json_t *body, const char *f, double *out)
{
	json_t *v = json_object_get(body, f);
	char loc[64];

	*out = -1;
	if (!v || json_is_null(v))
		return true;
	snprintf(loc, sizeof(loc), "body.%s", f);
	if (!json_is_number(v) || !(json_number_value(v) >= 0)) {
		api_invalid(req, loc, "Input should be a non-negative number", "float_type");
		return false;
	}
	/* Seconds, turned into milliseconds for a timer: bounded so that the
	 * conversion stays defined. */
	if (json_number_value(v) > API_MAX_SECONDS) {
		api_invalid(req, loc, "Input should be less than or equal to 1000000000",
			    "less_than_equal");
		return false;
	}
	*out = json_number_value(v);
	return true;
}

static bool required_session(struct sbx_http_req *req, json_t *body, const char **id)
{
	if (!api_opt_string(req, body, "session_id", id))
		return false;
	if (!*id) {
		api_invalid(req, "body.session_id", "Field required", "missing");
		return false;
	}
	return true;
}

static bool dir_ok(struct sbx_http_req *req, const char *dir)
{
	struct stat st;

	if (!dir)
		return true;
	if (dir[0] != '/') {
		api_invalid(req, "body.exec_dir", "exec_dir must be an absolute path",
			    "value_error");
		return false;
	}
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		api_fail(req, "exec_dir is not an existing directory", NULL);
		return false;
	}
	return true;
}

/* ---- handlers ------------------------------------------------------------------------- */

void bash_handle_exec(struct sbx_http_req *req, void *arg)
{
	struct bash *b = arg;
	json_t *body = api_body_object(req), *env, *mol;
	const char *command, *sid, *dir, *err = NULL;
	struct bsession *s;
	struct bcmd *c;
	double timeout, hard;
	long max_len = DEFAULT_MAX_OUTPUT;
	bool async_mode;
	int rc;

	if (!body)
		return;
	if (!api_opt_string(req, body, "command", &command) ||
	    !api_opt_string(req, body, "session_id", &sid) ||
	    !api_opt_string(req, body, "exec_dir", &dir) ||
	    !opt_number(req, body, "timeout", &timeout) ||
	    !opt_number(req, body, "hard_timeout", &hard) || !dir_ok(req, dir))
		goto out;
	if (!command) {
		api_invalid(req, "body.command", "Field required", "missing");
		goto out;
	}
	env = json_object_get(body, "env");
	if (env && !json_is_null(env) && !json_is_object(env)) {
		api_invalid(req, "body.env", "Input should be a valid dictionary", "dict_type");
		goto out;
	}
	mol = json_object_get(body, "max_output_length");
	if (mol && !json_is_null(mol)) {
		if (!json_is_integer(mol) || json_integer_value(mol) < 0) {
			api_invalid(req, "body.max_output_length",
				    "Input should be a non-negative integer", "int_type");
			goto out;
		}
		max_len = (long)json_integer_value(mol);
	}
	if (sid && strlen(sid) > MAX_ID) {
		api_invalid(req, "body.session_id", "session_id is longer than 64 characters",
			    "string_too_long");
		goto out;
	}
	async_mode = json_is_true(json_object_get(body, "async_mode"));
	s = sid && *sid ? sbx_map_get(&b->sessions, sid) : NULL;
	if (s) {
		s->ephemeral = false; /* named again: it lasts */
	} else if (!(s = session_new(b, sid, dir, &err))) {
		api_fail(req, err, NULL);
		goto out;
	} else if (!sid || !*sid) {
		s->ephemeral = true;
	}
	if (dir) /* takes effect for this and later calls */
		snprintf(s->dir, sizeof(s->dir), "%s", dir);
	c = sbx_calloc(1, sizeof(*c));
	if (!c || !(c->command = sbx_strdup(command))) {
		sbx_free(c);
		sbx_http_respond_error(req, 503, "out of memory");
		goto out;
	}
	c->refs = 1; /* the process's hold, released when its handles close */
	c->s = s;
	s->refs++;
	c->pending = 3;
	sbx_random_hex(c->id, 16);
	tree_new_tag(c->tag);
	sbx_buf_init(&c->stdout_buf, b->max_output_bytes);
	sbx_buf_init(&c->stderr_buf, b->max_output_bytes);
	s->command_count++;
	s->last_used_at = time(NULL);
	session_remember(s, c);
	if ((rc = cmd_spawn(c, s->dir, json_is_object(env) ? env : NULL))) {
		char msg[160];

		snprintf(msg, sizeof(msg), "cannot start the command: %s", uv_strerror(rc));
		c->status = C_KILLED;
		api_fail(req, msg, NULL);
		c->pending = 1;
		c->exited = true;
		cmd_step(c);
		goto out;
	}
	uv_read_start((uv_stream_t *)&c->out, on_alloc, on_output);
	uv_read_start((uv_stream_t *)&c->err, on_alloc, on_output);
	if (hard > 0)
		uv_timer_start(&c->hard, on_hard_timeout, (uint64_t)(hard * 1000), 0);
	if (async_mode)
		api_ok(req, "Command started", exec_result(c, max_len));
	else
		wait_add(c, req, true, 0, 0, max_len, timeout > 0 ? (uint64_t)(timeout * 1000) : 0);
out:
	json_decref(body);
}

void bash_handle_output(struct sbx_http_req *req, void *arg)
{
	struct bash *b = arg;
	json_t *body = api_body_object(req);
	const char *sid, *cid;
	struct bsession *s;
	struct bcmd *c;
	double off, eoff, wait_timeout;

	if (!body)
		return;
	if (!required_session(req, body, &sid) || !api_opt_string(req, body, "command_id", &cid) ||
	    !opt_number(req, body, "offset", &off) ||
	    !opt_number(req, body, "stderr_offset", &eoff) ||
	    !opt_number(req, body, "wait_timeout", &wait_timeout))
		goto out;
	if (!(s = sbx_map_get(&b->sessions, sid))) {
		api_fail(req, "no such bash session", NULL);
		goto out;
	}
	if (!(c = session_cmd(s, cid))) {
		if (cid)
			api_fail(req, "no such command in this session", NULL);
		else
			api_ok(req, "No command yet",
			       json_pack("{s:s, s:s, s:s, s:i, s:i, s:n}", "session_id", s->id,
					 "stdout", "", "stderr", "", "offset", 0, "stderr_offset",
					 0, "command"));
		goto out;
	}
	off = off < 0 ? 0 : off;
	eoff = eoff < 0 ? 0 : eoff;
	if (json_is_true(json_object_get(body, "wait")) && c->status == C_RUNNING &&
	    c->stdout_buf.len <= (size_t)off && c->stderr_buf.len <= (size_t)eoff) {
		double w = wait_timeout < 0	       ? 30
			   : wait_timeout > MAX_WAIT_S ? MAX_WAIT_S
						       : wait_timeout;

		wait_add(c, req, false, (size_t)off, (size_t)eoff, 0, (uint64_t)(w * 1000) + 1);
		goto out;
	}
	api_ok(req, "Output", output_result(c, (size_t)off, (size_t)eoff));
out:
	json_decref(body);
}

static void on_input_written(uv_write_t *w, int status)
{
	sbx_free(w);
}

void bash_handle_write(struct sbx_http_req *req, void *arg)
{
	struct bash *b = arg;
	json_t *body = api_body_object(req);
	const char *sid, *cid, *input;
	struct bsession *s;
	struct bcmd *c;
	uv_write_t *w;
	uv_buf_t buf;
	size_t len;

	if (!body)
		return;
	if (!required_session(req, body, &sid) || !api_opt_string(req, body, "command_id", &cid) ||
	    !api_opt_string(req, body, "input", &input))
		goto out;
	if (!input) {
		api_invalid(req, "body.input", "Field required", "missing");
		goto out;
	}
	if (!(s = sbx_map_get(&b->sessions, sid)) || !(c = session_cmd(s, cid))) {
		api_fail(req, s ? "no such command in this session" : "no such bash session", NULL);
		goto out;
	}
	if (c->status != C_RUNNING || c->exited) {
		api_fail(req, "the command is not running", NULL);
		goto out;
	}
	len = json_string_length(json_object_get(body, "input"));
	w = sbx_malloc(sizeof(*w) + len + 1);
	if (!w) {
		sbx_http_respond_error(req, 503, "out of memory");
		goto out;
	}
	memcpy((char *)(w + 1), input, len);
	buf = uv_buf_init((char *)(w + 1), (unsigned)len);
	if (uv_write(w, (uv_stream_t *)&c->in, &buf, 1, on_input_written)) {
		sbx_free(w);
		api_fail(req, "the command no longer reads its input", NULL);
		goto out;
	}
	api_ok(req, "Input written", NULL);
out:
	json_decref(body);
}

void bash_handle_kill(struct sbx_http_req *req, void *arg)
{
	static const struct {
		const char *name;
		int sig;
	} sigs[] = { { "SIGTERM", SIGTERM }, { "SIGKILL", SIGKILL }, { "SIGINT", SIGINT },
		     { "SIGHUP", SIGHUP },   { "SIGQUIT", SIGQUIT }, { "SIGUSR1", SIGUSR1 },
		     { "SIGUSR2", SIGUSR2 }, { "SIGSTOP", SIGSTOP }, { "SIGCONT", SIGCONT } };
	struct bash *b = arg;
	json_t *body = api_body_object(req);
	const char *sid, *name;
	struct bsession *s;
	struct bcmd *c;
	int sig = 0;

	if (!body)
		return;
	if (!required_session(req, body, &sid) || !api_opt_string(req, body, "signal", &name))
		goto out;
	if (!name)
		name = "SIGTERM";
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (strcasecmp(name, sigs[i].name) == 0 || strcasecmp(name, sigs[i].name + 3) == 0)
			sig = sigs[i].sig;
	if (!sig) {
		api_invalid(req, "body.signal",
			    "Input should be a signal name such as SIGTERM, SIGKILL or SIGINT",
			    "enum");
		goto out;
	}
	if (!(s = sbx_map_get(&b->sessions, sid)) || !(c = session_cmd(s, NULL)) ||
	    c->status != C_RUNNING) {
		api_fail(req, s ? "no command is running in this session" : "no such bash session",
			 NULL);
		goto out;
	}
	if (sig != SIGSTOP && sig != SIGCONT)
		c->status = C_KILLED;
	tree_signal(c->tag, live_root(c), sig); /* the whole tree */
	api_ok(req, "Signal sent", NULL);
out:
	json_decref(body);
}

static void list_one(const char *key, void *value, void *arg)
{
	json_array_append_new(arg, session_info(value));
}

void bash_handle_sessions(struct sbx_http_req *req, void *arg)
{
	json_t *list = json_array();

	sbx_map_foreach(&((struct bash *)arg)->sessions, list_one, list);
	api_ok(req, "Sessions", list);
}

void bash_handle_create(struct sbx_http_req *req, void *arg)
{
	struct bash *b = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *sid, *dir, *err = NULL;
	struct bsession *s;

	if (!body)
		return;
	if (!api_opt_string(req, body, "session_id", &sid) ||
	    !api_opt_string(req, body, "exec_dir", &dir) || !dir_ok(req, dir))
		goto out;
	if (sid && strlen(sid) > MAX_ID) {
		api_invalid(req, "body.session_id", "session_id is longer than 64 characters",
			    "string_too_long");
		goto out;
	}
	if (sid && *sid && sbx_map_get(&b->sessions, sid)) {
		api_fail(req, "a bash session with this id exists", NULL);
		goto out;
	}
	if (!(s = session_new(b, sid, dir, &err))) {
		api_fail(req, err, NULL);
		goto out;
	}
	api_ok(req, "Session created", session_info(s));
out:
	json_decref(body);
}

void bash_handle_close(struct sbx_http_req *req, void *arg)
{
	struct bash *b = arg;
	struct bsession *s = sbx_map_get(&b->sessions, sbx_http_param(req, "session_id"));

	if (!s) {
		api_fail(req, "no such bash session", NULL);
		return;
	}
	session_close(s);
	api_ok(req, "Session closed", NULL);
}

/* ---- set-up --------------------------------------------------------------------------- */

int bash_init(struct bash *b, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
	      size_t max_output_bytes)
{
	memset(b, 0, sizeof(*b));
	b->loop = loop;
	b->workspace = workspace;
	b->max_sessions = max_sessions;
	b->max_output_bytes = max_output_bytes;
	sbx_map_init(&b->sessions, max_sessions + 1);
	return 0;
}

void bash_close(struct bash *b)
{
	struct bsession *s;

	if (b->closing)
		return;
	b->closing = true;
	while ((s = sbx_map_pop(&b->sessions)))
		session_close(s);
	sbx_map_release(&b->sessions);
}
