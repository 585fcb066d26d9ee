/* Shell sessions on pseudo-terminals (see shell.h). Owns the sessions, their
 * PTY master fds, their polls and timers, and the requests waiting on them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shell.h"

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
#include <fcntl.h>
#include <limits.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define OUTPUT_LIMIT_CHARS 30000
#define MAX_WAITERS	   16
#define MAX_CONSOLE	   50

enum status { ST_IDLE, ST_RUNNING, ST_COMPLETED, ST_NO_CHANGE, ST_HARD_TIMEOUT, ST_TERMINATED };

static const char *const status_names[] = {
	[ST_IDLE] = "completed",
	[ST_RUNNING] = "running",
	[ST_COMPLETED] = "completed",
	[ST_NO_CHANGE] = "no_change_timeout",
	[ST_HARD_TIMEOUT] = "hard_timeout",
	[ST_TERMINATED] = "terminated",
};

enum wait_kind { W_EXEC, W_WAIT };

struct waiter {
	struct sbx_http_req *req;
	enum wait_kind kind;
	uv_timer_t timer; /* the request's own time limit */
	bool truncate;
	struct session *s;
};

struct session {
	struct shell *sh;
	char id[64];
	int master; /* PTY master, non-blocking */
	int script; /* the current command's file (memfd), or -1 */
	pid_t pid;  /* the shell, leader of its own session */
	uv_poll_t poll;
	uv_timer_t timer; /* hard timeout and no-change watch */
	int open_handles;
	bool ready;  /* the first prompt came */
	bool dead;   /* the shell exited */
	bool reaped; /* and its status was collected */
	bool removing;
	char nonce[17];
	char tag[TREE_TAG_MAX]; /* its shell's tree; a command's is tag.seq */
	char marker[48];	/* "\x01SBX<nonce>;" */
	enum status status;	/* what is reported */
	bool running;		/* a command is in flight (until its prompt) */
	char *command;		/* current or last command */
	struct sbx_buf out;	/* current command's output */
	struct sbx_buf scan;	/* raw bytes not yet parsed (a marker may be split) */
	int exit_code;
	bool have_exit;
	bool exit_pending; /* the shell ended with its command: answered once reaped */
	int wait_status;   /* what waitpid said, once reaped */
	char cwd[PATH_MAX];
	uint64_t created_ms, last_used_ms, last_output_ms;
	uint64_t hard_deadline_ms; /* 0: none */
	uint64_t no_change_ms;	   /* 0: none */
	unsigned seq;
	time_t created_at, last_used_at;
	struct waiter *waiters[MAX_WAITERS];
	unsigned n_waiters;
	json_t *console; /* [ConsoleRecord] of past commands */
};

static void session_settle(struct session *s);
static void exit_settle(struct session *s);
static void command_tag(const struct session *s, unsigned seq, char *out, size_t size);
static void command_done(struct session *s);

/* ---- small helpers ----------------------------------------------------------- */

static void iso_time(time_t t, char *out, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *shell_truncate(const char *text, size_t len, size_t limit)
{
	struct sbx_buf b;
	size_t head, tail;

	if (len <= limit)
		return sbx_strndup(text, len);
	/* Keep the start (what the command began with) and the end (how it
	 * ended); cut at UTF-8 character boundaries. */
	head = limit / 2;
	while (head > 0 && ((unsigned char)text[head] & 0xC0) == 0x80)
		head--;
	tail = len - (limit - head);
	while (tail < len && ((unsigned char)text[tail] & 0xC0) == 0x80)
		tail++;
	sbx_buf_init(&b, limit + 128);
	sbx_buf_append(&b, text, head);
	sbx_buf_printf(&b, "\n[... %zu characters truncated ...]\n", tail - head);
	sbx_buf_append(&b, text + tail, len - tail);
	return sbx_buf_steal(&b);
}

/* ---- output -------------------------------------------------------------------- */

/* Appends terminal output to the command's output, without the CRs the
 * terminal adds to line ends. Output past the limit is dropped and said so. */
static void keep_output(struct session *s, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] == '\n'))
			continue;
		if (sbx_buf_append(&s->out, p + i, 1) == -E2BIG) {
			static const char note[] =
				"\n[output limit reached; the rest was dropped]\n";

			s->out.len = s->out.max - sizeof(note) + 1;
			memcpy(s->out.data + s->out.len, note, sizeof(note) - 1);
			s->out.len += sizeof(note) - 1;
			s->out.data[s->out.len] = '\0';
			s->out.max = s->out.len; /* stays full from now on */
			return;
		}
	}
}

/* Looks for "<marker><rc>;<cwd>\x02" in the scan buffer: output before it
 * belongs to the command; the marker ends it. */
static void parse_scan(struct session *s)
{
	for (;;) {
		char *m = s->scan.len
				  ? memmem(s->scan.data, s->scan.len, s->marker, strlen(s->marker))
				  : NULL;
		size_t keep;

		if (!m) {
			/* Everything but a possible partial marker at the end is output;
			 * a marker starts with \x01, so only from there on is held. */
			size_t tail = strlen(s->marker) - 1;
			size_t from = s->scan.len > tail ? s->scan.len - tail : 0;
			char *start = memrchr(s->scan.data + from, '\x01', s->scan.len - from);

			keep = start ? s->scan.len - (size_t)(start - s->scan.data) : 0;
			if (s->scan.len > keep) {
				if (s->ready && s->running)
					keep_output(s, s->scan.data, s->scan.len - keep);
				sbx_buf_consume(&s->scan, s->scan.len - keep);
			}
			return;
		}
		char *end = memchr(m, '\x02', s->scan.len - (size_t)(m - s->scan.data));

		if (!end)
			return; /* the rest of the marker is still to come */
		if (s->ready && s->running)
			keep_output(s, s->scan.data, (size_t)(m - s->scan.data));
		char *rc = m + strlen(s->marker), *semi = memchr(rc, ';', (size_t)(end - rc));

		if (semi) {
			s->exit_code = atoi(rc);
			s->have_exit = true;
			snprintf(s->cwd, sizeof(s->cwd), "%.*s", (int)(end - semi - 1), semi + 1);
		}
		sbx_buf_consume(&s->scan, (size_t)(end + 1 - s->scan.data));
		if (!s->ready) {
			/* The shell's first prompt: ready; a command may be queued. */
			s->ready = true;
		} else if (s->running) {
			s->running = false;
			/* A killed command keeps its hard_timeout / terminated status. */
			if (s->status == ST_RUNNING || s->status == ST_NO_CHANGE)
				s->status = ST_COMPLETED;
			command_done(s);
			session_settle(s);
		}
	}
}

/* ---- answering waiters ------------------------------------------------------------ */

static json_t *command_result(struct session *s, bool truncate)
{
	char *out = truncate ? shell_truncate(s->out.data ? s->out.data : "", s->out.len,
					      OUTPUT_LIMIT_CHARS)
			     : sbx_strndup(s->out.data ? s->out.data : "", s->out.len);
	json_t *o =
		json_pack("{s:s, s:s, s:s, s:s?, s:O, s:o}", "session_id", s->id, "command",
			  s->command ? s->command : "", "status", status_names[s->status], "output",
			  out, "console", s->console, "exit_code",
			  !s->running && s->have_exit ? json_integer(s->exit_code) : json_null());

	sbx_free(out);
	return o;
}

static void waiter_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void waiter_remove(struct waiter *w)
{
	struct session *s = w->s;

	for (unsigned i = 0; i < s->n_waiters; i++) {
		if (s->waiters[i] == w) {
			s->waiters[i] = s->waiters[--s->n_waiters];
			break;
		}
	}
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_answer(struct waiter *w)
{
	struct session *s = w->s;
	struct sbx_http_req *req = w->req;
	json_t *data;

	sbx_http_on_abort(req, NULL, NULL);
	waiter_remove(w);
	if (w->kind == W_WAIT)
		data = json_pack("{s:s}", "status", status_names[s->status]);
	else
		data = command_result(s, w->truncate);
	api_ok(req, s->running ? "Command is still running" : "Command finished", data);
}

/* The session changed (a command finished, a timeout hit, the shell died):
 * answer everyone waiting on it. */
static void session_settle(struct session *s)
{
	while (s->n_waiters)
		waiter_answer(s->waiters[0]);
}

static void on_waiter_timeout(uv_timer_t *t)
{
	waiter_answer(t->data);
}

static void on_waiter_gone(struct sbx_http_req *req, void *arg)
{
	waiter_remove(arg);
}

/* Holds req until the session settles, or for at most timeout_ms (0: no
 * limit of its own). */
static void session_wait(struct session *s, struct sbx_http_req *req, enum wait_kind kind,
			 uint64_t timeout_ms, bool truncate)
{
	struct waiter *w;

	if (s->n_waiters >= MAX_WAITERS || !(w = sbx_calloc(1, sizeof(*w)))) {
		api_fail(req, "too many requests waiting on this session", NULL);
		return;
	}
	w->req = req;
	w->kind = kind;
	w->s = s;
	w->truncate = truncate;
	uv_timer_init(s->sh->loop, &w->timer);
	w->timer.data = w;
	if (timeout_ms)
		uv_timer_start(&w->timer, on_waiter_timeout, timeout_ms, 0);
	s->waiters[s->n_waiters++] = w;
	sbx_http_on_abort(req, on_waiter_gone, w);
}

/* ---- sessions ---------------------------------------------------------------------- */

static void session_closed(uv_handle_t *h)
{
	struct session *s = h->data;

	if (--s->open_handles)
		return;
	if (s->script >= 0)
		close(s->script);
	sbx_buf_release(&s->out);
	sbx_buf_release(&s->scan);
	json_decref(s->console);
	sbx_free(s->command);
	sbx_free(s);
}

/* Ends a session: its shell and everything in its terminal session. */
static void session_remove(struct session *s)
{
	if (s->removing)
		return;
	s->removing = true;
	sbx_map_remove(&s->sh->sessions, s->id);
	if (!s->reaped) {
		struct shell *sh = s->sh;

		if (!s->dead)
			tree_signal(s->tag, s->pid, SIGKILL); /* the shell and all it started */
		/* Out of the map, so on_sigchld must find it here to reap it. */
		pty_graveyard_add(&sh->graveyard, s->pid);
	}
	if (s->running) {
		s->running = false;
		s->status = ST_TERMINATED;
	}
	session_settle(s);
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, session_closed);
	uv_close((uv_handle_t *)&s->timer, session_closed);
	close(s->master);
}

static void on_pty(uv_poll_t *p, int status, int events)
{
	struct session *s = p->data;
	char buf[16384];
	ssize_t n;

	for (;;) {
		n = read(s->master, buf, sizeof(buf));
		if (n > 0) {
			s->last_output_ms = uv_now(s->sh->loop);
			if (sbx_buf_append(&s->scan, buf, (size_t)n)) {
				/* No marker in a whole scan buffer: it is all output. */
				if (s->running)
					keep_output(s, s->scan.data, s->scan.len);
				sbx_buf_reset(&s->scan);
				sbx_buf_append(&s->scan, buf, (size_t)n);
			}
			parse_scan(s);
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		/* EIO: the shell and everything on its terminal are gone. */
		uv_poll_stop(p);
		s->dead = true;
		if (s->running) {
			/* The command ended the shell ("exit 3"): its status is
			 * the command's. The shell closed its terminal on the
			 * way out, so it is a zombie now or within moments: the
			 * answer waits for SIGCHLD rather than the loop. */
			int st;

			if (!s->reaped && waitpid(s->pid, &st, WNOHANG) == s->pid) {
				s->reaped = true;
				s->wait_status = st;
			}
			s->exit_pending = true;
			if (s->reaped)
				exit_settle(s);
			return;
		}
		session_settle(s);
		return;
	}
}

/* Kills the command in the terminal's foreground process group; the shell
 * (leading its own group) survives and prints its prompt again. */
static void kill_command(struct session *s)
{
	pid_t fg = tcgetpgrp(s->master);
	char tag[TREE_TAG_MAX + 16];

	/* What the command started carries its tag (a child that left the
	 * foreground group with setsid too); the shell carries the session's. */
	command_tag(s, s->seq, tag, sizeof(tag));
	tree_signal(tag, fg > 0 && fg != s->pid ? fg : 0, SIGKILL);
	if (fg <= 0 || fg == s->pid)
		kill(s->pid, SIGINT); /* a builtin loop runs in the shell itself */
}

static void on_session_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	uint64_t now = uv_now(s->sh->loop), next = 0;

	if (!s->running)
		return;
	if (s->hard_deadline_ms && now >= s->hard_deadline_ms) {
		s->status = ST_HARD_TIMEOUT;
		s->hard_deadline_ms = 0;
		kill_command(s);
		/* The prompt that follows settles the waiters. */
	} else if (s->no_change_ms && s->status == ST_RUNNING &&
		   now - s->last_output_ms >= s->no_change_ms) {
		s->status = ST_NO_CHANGE;
		session_settle(s);
	}
	if (s->hard_deadline_ms)
		next = s->hard_deadline_ms - now;
	if (s->no_change_ms && s->status == ST_RUNNING) {
		uint64_t nc = s->last_output_ms + s->no_change_ms > now
				      ? s->last_output_ms + s->no_change_ms - now
				      : 1;
		next = next && next < nc ? next : nc;
	}
	if (next)
		uv_timer_start(&s->timer, on_session_timer, next, 0);
}

/* Starts a shell on a new PTY. The child sets its prompt to the marker;
 * the first prompt makes the session ready. */
static int session_spawn(struct shell *sh, const char *id, const char *dir, struct session **out)
{
	struct winsize ws = { .ws_row = 50, .ws_col = 200 };
	struct session *s;
	int master;
	pid_t pid;
	char ps1[96];

	if (sh->sessions.count >= sh->max_sessions)
		return -EMFILE;
	s = sbx_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->sh = sh;
	s->script = -1;
	if (id)
		snprintf(s->id, sizeof(s->id), "%s", id);
	else
		sbx_random_hex(s->id, 8);
	sbx_random_hex(s->nonce, 8);
	/* \x01 and \x02 cannot come out of a prompt by accident. */
	snprintf(s->marker, sizeof(s->marker), "\x01SBX%s;", s->nonce);
	snprintf(ps1, sizeof(ps1), "\\001SBX%s;$?;${PWD}\\002", s->nonce);
	snprintf(s->cwd, sizeof(s->cwd), "%s", dir);
	{
		char ps1_env[128];
		char tag_env[TREE_TAG_MAX + 16];
		const char *const changes[] = { ps1_env,	  "PS2=",  "?TERM=xterm-256color",
						"PROMPT_COMMAND", tag_env, NULL };
		const char *bash = pty_shell();
		const char *const bash_argv[] = { "bash",	 "--noprofile", "--norc",
						  "--noediting", "-i",		NULL };
		const char *const sh_argv[] = { "sh", "-i", NULL };
		struct pty_spawn_opts o = { .dir = dir, .size = ws, .no_echo = true };
		int rc;

		/* No echo: commands are sourced from files, never typed. */
		snprintf(ps1_env, sizeof(ps1_env), "PS1=%s", ps1);
		tree_new_tag(s->tag);
		snprintf(tag_env, sizeof(tag_env), "%s=%s", TREE_ENV, s->tag);
		o.path = bash;
		o.argv = strcmp(bash, "/bin/bash") == 0 ? bash_argv : sh_argv;
		char **env = pty_env(changes);

		o.envp = env;
		rc = env ? pty_spawn(&o, &master, &pid) : -ENOMEM;
		pty_env_free(env);
		if (rc) {
			sbx_free(s);
			return rc;
		}
	}
	s->master = master;
	s->pid = pid;
	s->status = ST_IDLE;
	s->created_ms = s->last_used_ms = uv_now(sh->loop);
	s->created_at = s->last_used_at = time(NULL);
	s->no_change_ms = (uint64_t)sh->default_no_change_s * 1000;
	s->console = json_array();
	sbx_buf_init(&s->out, sh->max_output_bytes);
	sbx_buf_init(&s->scan, 256 * 1024);
	uv_poll_init(sh->loop, &s->poll, master);
	uv_timer_init(sh->loop, &s->timer);
	s->poll.data = s->timer.data = s;
	s->open_handles = 2;
	uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT, on_pty);
	if (sbx_map_put(&sh->sessions, s->id, s, NULL)) {
		session_remove(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

static void reap_one(const char *key, void *value, void *arg)
{
	struct session *s = value;
	int st;

	(void)key;
	(void)arg;
	if (!s->reaped && waitpid(s->pid, &st, WNOHANG) == s->pid) {
		s->dead = true;
		s->reaped = true;
		s->wait_status = st;
		sbx_log_info(
			"shell session ended", SBX_LS("session", s->id),
			SBX_LI("status", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)));
	}
}

/* A command that ended its shell ("exit 3") answers once the shell is
 * reaped: its status is the command's. */
static void exit_settle(struct session *s)
{
	int st = s->wait_status;

	s->exit_pending = false;
	s->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	s->have_exit = true;
	s->running = false;
	if (s->status == ST_RUNNING || s->status == ST_NO_CHANGE)
		s->status = ST_COMPLETED;
	session_settle(s);
}

static void settle_exited(const char *key, void *value, void *arg)
{
	struct session *s = value;

	(void)key;
	(void)arg;
	if (s->exit_pending && s->reaped)
		exit_settle(s);
}

/* Reaps our shells, by pid: waitpid(-1) would steal the exit statuses libuv
 * waits for (its own spawned children). */
static void on_sigchld(uv_signal_t *h, int signum)
{
	struct shell *sh = h->data;

	(void)signum;
	sbx_map_foreach(&sh->sessions, reap_one, NULL);
	sbx_map_foreach(&sh->sessions, settle_exited, NULL);
	pty_graveyard_reap(&sh->graveyard);
}

/* ---- commands ----------------------------------------------------------------------- */

static void command_tag(const struct session *s, unsigned seq, char *out, size_t size)
{
	snprintf(out, size, "%s.%u", s->tag, seq);
}

static void script_drop(struct session *s)
{
	if (s->script >= 0)
		close(s->script);
	s->script = -1;
}

/* A finished command goes into the console history; its script file goes. */
static void command_done(struct session *s)
{
	char ps1[PATH_MAX + 8];
	char *out = shell_truncate(s->out.data ? s->out.data : "", s->out.len, OUTPUT_LIMIT_CHARS);

	script_drop(s);
	snprintf(ps1, sizeof(ps1), "%s $", s->cwd);
	if (json_array_size(s->console) >= MAX_CONSOLE)
		json_array_remove(s->console, 0);
	json_array_append_new(s->console, json_pack("{s:s, s:s, s:s?}", "ps1", ps1, "command",
						    s->command ? s->command : "", "output", out));
	sbx_free(out);
	uv_timer_stop(&s->timer);
}

/* 'text' with every ' made safe inside single quotes. */
static int shell_quote(struct sbx_buf *b, const char *text)
{
	int rc = sbx_buf_append_str(b, "'");

	for (const char *p = text; !rc && *p; p++)
		rc = *p == '\'' ? sbx_buf_append_str(b, "'\\''") : sbx_buf_append(b, p, 1);
	return rc ? rc : sbx_buf_append_str(b, "'");
}

/* Writes the command to its script file and has the shell source it. The
 * file is a memfd, which the shell reads through /proc/<agent>/fd/<n>: the
 * write is to memory, so it never waits for a disk (or for the kernel's
 * throttling of writers while an upload's pages are flushed), and nothing
 * is left in a folder. */
static int start_command(struct session *s, const char *command, const char *dir)
{
	struct sbx_buf text, line;
	char path[64];
	int rc = 0;

	script_drop(s);
	s->seq++;
	sbx_buf_init(&text, strlen(command) + PATH_MAX * 4 + 64);
	if (dir) {
		rc = sbx_buf_append_str(&text, "cd -- ");
		if (!rc)
			rc = shell_quote(&text, dir);
		if (!rc)
			rc = sbx_buf_append_str(&text, " || return $?\n");
	}
	if (!rc)
		rc = sbx_buf_cat(&text, command, "\n");
	if (!rc && (s->script = memfd_create("sbx-command", MFD_CLOEXEC)) < 0)
		rc = -errno;
	for (size_t off = 0; !rc && off < text.len;) {
		ssize_t n = write(s->script, text.data + off, text.len - off);

		if (n < 0 && errno != EINTR)
			rc = -errno;
		off += n > 0 ? (size_t)n : 0;
	}
	sbx_buf_release(&text);
	if (rc) {
		script_drop(s);
		return rc;
	}
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), s->script);
	sbx_buf_init(&line, 256);
	/* The assignment holds for the sourcing only, and is in the
	 * environment of all the command starts (tree.h). */
	{
		char tag[TREE_TAG_MAX + 16];

		command_tag(s, s->seq, tag, sizeof(tag));
		rc = sbx_buf_cat(&line, TREE_ENV "=", tag, " . ", path, "\n");
	}
	/* A line of a few hundred bytes fits the terminal's input queue. */
	if (!rc && write(s->master, line.data, line.len) != (ssize_t)line.len)
		rc = -EIO;
	sbx_buf_release(&line);
	if (rc)
		script_drop(s);
	return rc;
}

/* ---- request parsing ------------------------------------------------------------------- */

struct exec_args {
	const char *id, *command, *exec_dir;
	bool async, truncate, strict;
	double timeout_s, hard_timeout_s;
	long no_change_s;
};

/* Reads an optional field of the given kind; false (422 sent) if mistyped. */
static bool opt_field(struct sbx_http_req *req, json_t *body, const char *name, char kind,
		      void *out)
{
	json_t *v = json_object_get(body, name);
	char loc[64];

	if (!v || json_is_null(v))
		return true;
	snprintf(loc, sizeof(loc), "body.%s", name);
	switch (kind) {
	case 's':
		if (json_is_string(v)) {
			*(const char **)out = json_string_value(v);
			return true;
		}
		api_invalid(req, loc, "Input should be a valid string", "string_type");
		return false;
	case 'b':
		if (json_is_boolean(v)) {
			*(bool *)out = json_is_true(v);
			return true;
		}
		api_invalid(req, loc, "Input should be a valid boolean", "bool_type");
		return false;
	case 'n':
		if (json_is_number(v) && json_number_value(v) > API_MAX_SECONDS) {
			api_invalid(req, loc, "Input should be less than or equal to 1000000000",
				    "less_than_equal");
			return false;
		}
		if (json_is_number(v) && json_number_value(v) >= 0) {
			*(double *)out = json_number_value(v);
			return true;
		}
		api_invalid(req, loc, "Input should be a non-negative number", "float_type");
		return false;
	case 'i':
		if (json_is_integer(v) && json_integer_value(v) >= 0) {
			*(long *)out = (long)json_integer_value(v);
			return true;
		}
		api_invalid(req, loc, "Input should be a non-negative integer", "int_type");
		return false;
	}
	return false;
}

static bool required_string(struct sbx_http_req *req, json_t *body, const char *name,
			    const char **out)
{
	char loc[64];

	snprintf(loc, sizeof(loc), "body.%s", name);
	if (!json_object_get(body, name) || json_is_null(json_object_get(body, name))) {
		api_invalid(req, loc, "Field required", "missing");
		return false;
	}
	return opt_field(req, body, name, 's', out);
}

static struct session *find_live(struct shell *sh, const char *id)
{
	struct session *s = id ? sbx_map_get(&sh->sessions, id) : NULL;

	if (s && s->dead) {
		session_remove(s);
		s = NULL;
	}
	return s;
}

/* ---- handlers ------------------------------------------------------------------------- */

static bool absolute_dir(struct sbx_http_req *req, const char *dir, bool strict)
{
	struct stat st;

	if (dir[0] != '/') {
		api_invalid(req, "body.exec_dir", "exec_dir must be an absolute path",
			    "value_error");
		return false;
	}
	if (strict && (stat(dir, &st) || !S_ISDIR(st.st_mode))) {
		api_fail(req, "exec_dir does not exist or is not a directory", NULL);
		return false;
	}
	return true;
}

void shell_handle_exec(struct sbx_http_req *req, void *arg)
{
	struct shell *sh = arg;
	struct exec_args a = { .truncate = true };
	struct session *s;
	json_t *body = api_body_object(req);
	int rc;

	if (!body)
		return;
	if (!required_string(req, body, "command", &a.command) ||
	    !opt_field(req, body, "id", 's', &a.id) ||
	    !opt_field(req, body, "exec_dir", 's', &a.exec_dir) ||
	    !opt_field(req, body, "async_mode", 'b', &a.async) ||
	    !opt_field(req, body, "truncate", 'b', &a.truncate) ||
	    !opt_field(req, body, "strict", 'b', &a.strict) ||
	    !opt_field(req, body, "timeout", 'n', &a.timeout_s) ||
	    !opt_field(req, body, "hard_timeout", 'n', &a.hard_timeout_s) ||
	    !opt_field(req, body, "no_change_timeout", 'i', &a.no_change_s) ||
	    (a.exec_dir && !absolute_dir(req, a.exec_dir, a.strict)))
		goto out;
	if (a.id && strlen(a.id) >= sizeof(((struct session *)0)->id)) {
		api_invalid(req, "body.id", "session id too long", "string_too_long");
		goto out;
	}
	s = find_live(sh, a.id);
	if (!s && (rc = session_spawn(sh, a.id, sh->workspace, &s))) {
		/* A command that cannot start is an answer, not a server error:
		 * clients retry 5xx and would run it twice. */
		api_fail(req,
			 rc == -EMFILE ? "too many shell sessions; delete some first"
				       : "cannot start a shell session",
			 NULL);
		goto out;
	}
	if (s->running) {
		api_fail(req, "the session is still running a command; wait for it, or kill it",
			 NULL);
		goto out;
	}
	sbx_free(s->command);
	s->command = sbx_strdup(a.command);
	sbx_buf_reset(&s->out);
	s->out.max = sh->max_output_bytes;
	s->have_exit = false;
	if ((rc = start_command(s, a.command, a.exec_dir))) {
		api_fail(req, "cannot hand the command to the shell", NULL);
		goto out;
	}
	s->running = true;
	s->status = ST_RUNNING;
	s->last_used_ms = s->last_output_ms = uv_now(sh->loop);
	s->last_used_at = time(NULL);
	s->hard_deadline_ms =
		a.hard_timeout_s > 0 ? s->last_used_ms + (uint64_t)(a.hard_timeout_s * 1000) : 0;
	if (json_object_get(body, "no_change_timeout"))
		s->no_change_ms = (uint64_t)a.no_change_s * 1000;
	uv_timer_stop(&s->timer);
	on_session_timer(&s->timer);
	if (a.async) {
		json_t *data = command_result(s, a.truncate);

		api_ok(req, "Command started", data);
		goto out;
	}
	session_wait(s, req, W_EXEC, a.timeout_s > 0 ? (uint64_t)(a.timeout_s * 1000) : 0,
		     a.truncate);
out:
	json_decref(body);
}

/* The session named by body.id, or NULL with the answer sent. */
static struct session *named_session(struct sbx_http_req *req, struct shell *sh, json_t *body)
{
	const char *id = NULL;
	struct session *s;

	if (!required_string(req, body, "id", &id))
		return NULL;
	s = sbx_map_get(&sh->sessions, id);
	if (!s)
		api_fail(req, "no such shell session", NULL);
	return s;
}

void shell_handle_view(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *data;
	struct session *s;

	if (!body)
		return;
	if ((s = named_session(req, arg, body))) {
		data = command_result(s, true);
		api_ok(req, "Session output", data);
	}
	json_decref(body);
}

void shell_handle_wait(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	struct session *s;
	long seconds = 0, max_wait = 0;

	if (!body)
		return;
	if ((s = named_session(req, arg, body)) && opt_field(req, body, "seconds", 'i', &seconds) &&
	    opt_field(req, body, "max_wait_seconds", 'i', &max_wait)) {
		long limit = seconds ? seconds : max_wait;

		if (!s->running)
			api_ok(req, "Command finished",
			       json_pack("{s:s}", "status", status_names[s->status]));
		else
			session_wait(s, req, W_WAIT, limit > 0 ? (uint64_t)limit * 1000 : 0, true);
	}
	json_decref(body);
}

void shell_handle_kill(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	struct session *s;

	if (!body)
		return;
	if ((s = named_session(req, arg, body))) {
		if (s->running) {
			s->status = ST_TERMINATED;
			kill_command(s);
		}
		api_ok(req, s->running ? "Command killed" : "No command was running",
		       json_pack("{s:s, s:o, s:o}", "status", status_names[s->status], "exit_code",
				 !s->running && s->have_exit ? json_integer(s->exit_code)
							     : json_null(),
				 "returncode",
				 !s->running && s->have_exit ? json_integer(s->exit_code)
							     : json_null()));
	}
	json_decref(body);
}

void shell_handle_write(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	struct session *s;
	const char *input = NULL;
	bool enter = false;

	if (!body)
		return;
	if ((s = named_session(req, arg, body)) && required_string(req, body, "input", &input) &&
	    opt_field(req, body, "press_enter", 'b', &enter)) {
		size_t n = strlen(input);

		if (!s->running) {
			api_fail(req, "no command is running in this session to read the input",
				 NULL);
		} else if ((n && write(s->master, input, n) != (ssize_t)n) ||
			   (enter && write(s->master, "\n", 1) != 1)) {
			api_fail(req, "the terminal did not take the input", NULL);
		} else {
			api_ok(req, "Input written",
			       json_pack("{s:s}", "status", status_names[s->status]));
		}
	}
	json_decref(body);
}

void shell_handle_create(struct sbx_http_req *req, void *arg)
{
	struct shell *sh = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *id = NULL, *dir = NULL;
	long no_change = -1;
	struct session *s;
	int rc;

	if (!body)
		return;
	if (opt_field(req, body, "id", 's', &id) && opt_field(req, body, "exec_dir", 's', &dir) &&
	    opt_field(req, body, "no_change_timeout", 'i', &no_change) &&
	    (!dir || absolute_dir(req, dir, true))) {
		if (id && sbx_map_get(&sh->sessions, id)) {
			api_fail(req, "a shell session with this id exists already", NULL);
		} else if ((rc = session_spawn(sh, id, dir ? dir : sh->workspace, &s))) {
			api_fail(req,
				 rc == -EMFILE ? "too many shell sessions; delete some first"
					       : "cannot start a shell session",
				 NULL);
		} else {
			if (no_change >= 0)
				s->no_change_ms = (uint64_t)no_change * 1000;
			api_ok(req, "Session created",
			       json_pack("{s:s, s:s}", "session_id", s->id, "working_dir", s->cwd));
		}
	}
	json_decref(body);
}

static void list_one(const char *key, void *value, void *arg)
{
	struct session *s = value;
	char created[32], used[32];

	iso_time(s->created_at, created, sizeof(created));
	iso_time(s->last_used_at, used, sizeof(used));
	json_object_set_new(arg, key,
			    json_pack("{s:s, s:s, s:s, s:I, s:s, s:s?}", "working_dir", s->cwd,
				      "created_at", created, "last_used_at", used, "age_seconds",
				      (json_int_t)(time(NULL) - s->created_at), "status",
				      s->dead	   ? "exited"
				      : s->running ? "running"
						   : "idle",
				      "current_command", s->running ? s->command : NULL));
}

void shell_handle_list(struct sbx_http_req *req, void *arg)
{
	struct shell *sh = arg;
	json_t *sessions = json_object();

	sbx_map_foreach(&sh->sessions, list_one, sessions);
	api_ok(req, "Active sessions", json_pack("{s:o}", "sessions", sessions));
}

void shell_handle_delete(struct sbx_http_req *req, void *arg)
{
	struct shell *sh = arg;
	struct session *s = sbx_map_get(&sh->sessions, sbx_http_param(req, "session_id"));

	if (!s) {
		api_fail(req, "no such shell session", NULL);
		return;
	}
	session_remove(s);
	api_ok(req, "Session deleted", NULL);
}

static void collect(const char *key, void *value, void *arg)
{
	struct sbx_buf *b = arg;

	(void)key;
	sbx_buf_append(b, &value, sizeof(value));
}

static unsigned remove_all(struct shell *sh)
{
	struct sbx_buf b;
	unsigned n;

	/* The map cannot change under sbx_map_foreach: collect, then remove. */
	sbx_buf_init(&b, (sh->sessions.count + 1) * sizeof(void *));
	sbx_map_foreach(&sh->sessions, collect, &b);
	n = (unsigned)(b.len / sizeof(void *));
	for (unsigned i = 0; i < n; i++)
		session_remove(((struct session **)(void *)b.data)[i]);
	sbx_buf_release(&b);
	return n;
}

void shell_handle_delete_all(struct sbx_http_req *req, void *arg)
{
	unsigned n = remove_all(arg);
	char msg[64];

	snprintf(msg, sizeof(msg), "Deleted %u sessions", n);
	api_ok(req, msg, NULL);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int shell_init(struct shell *sh, uv_loop_t *loop, const char *workspace, unsigned max_sessions,
	       size_t max_output_bytes)
{

	memset(sh, 0, sizeof(*sh));
	sh->loop = loop;
	sh->workspace = workspace;
	sh->max_sessions = max_sessions;
	sh->max_output_bytes = max_output_bytes;
	sh->default_no_change_s = 120;
	sbx_map_init(&sh->sessions, max_sessions);
	uv_signal_init(loop, &sh->sigchld);
	sh->sigchld.data = sh;
	uv_signal_start(&sh->sigchld, on_sigchld, SIGCHLD);
	uv_unref((uv_handle_t *)&sh->sigchld);
	return 0;
}

void shell_close(struct shell *sh)
{
	if (sh->closing)
		return;
	sh->closing = true;
	remove_all(sh);
	sbx_map_release(&sh->sessions);
	on_sigchld(&sh->sigchld, SIGCHLD);
	pty_graveyard_release(&sh->graveyard);
	uv_close((uv_handle_t *)&sh->sigchld, NULL);
}

void shell_handle_update(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	struct session *s;
	long no_change = -1;

	if (!body)
		return;
	if ((s = named_session(req, arg, body)) &&
	    opt_field(req, body, "no_change_timeout", 'i', &no_change)) {
		if (no_change >= 0)
			s->no_change_ms = (uint64_t)no_change * 1000;
		api_ok(req, "Session updated",
		       json_pack("{s:s, s:I}", "session_id", s->id, "no_change_timeout",
				 (json_int_t)(s->no_change_ms / 1000)));
	}
	json_decref(body);
}

static void count_active(const char *key, void *value, void *arg)
{
	(void)key;
	*(unsigned *)arg += ((struct session *)value)->running;
}

void shell_handle_stats(struct sbx_http_req *req, void *arg)
{
	struct shell *sh = arg;
	unsigned total = (unsigned)sh->sessions.count, active = 0;

	sbx_map_foreach(&sh->sessions, count_active, &active);
	/* Sessions do not expire on their own: session_timeout is 0. */
	api_ok(req, "Session statistics",
	       json_pack("{s:i, s:i, s:i, s:i, s:i, s:f}", "total_sessions", (int)total,
			 "active_sessions", (int)active, "idle_sessions", (int)(total - active),
			 "max_sessions", (int)sh->max_sessions, "session_timeout", 0, "usage_ratio",
			 sh->max_sessions ? (double)total / sh->max_sessions : 0.0));
}
