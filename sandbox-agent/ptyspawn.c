/* See ptyspawn.h. */
#define _GNU_SOURCE /* pipe2 */
#include "ptyspawn.h"

#include "sbx/alloc.h"
#include "sbx/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

const char *pty_shell(void)
{
	return access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
}

static size_t name_len(const char *entry)
{
	return strcspn(entry, "=");
}

static bool same_name(const char *a, const char *b)
{
	size_t n = name_len(a);

	return n == name_len(b) && strncmp(a, b, n) == 0;
}

char **pty_env(const char *const *changes)
{
	size_t n_env = 0, n_changes = 0, n = 0;
	char **out;

	while (environ[n_env])
		n_env++;
	while (changes[n_changes])
		n_changes++;
	out = sbx_calloc(n_env + n_changes + 1, sizeof(*out));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n_env; i++) {
		bool changed = false;

		for (size_t k = 0; k < n_changes && !changed; k++) {
			const char *c = changes[k] + (changes[k][0] == '?');

			/* "?NAME=v" keeps what is set; the others replace or drop it. */
			changed = changes[k][0] != '?' && same_name(environ[i], c);
		}
		if (!changed && !(out[n++] = sbx_strdup(environ[i])))
			goto fail;
	}
	for (size_t k = 0; k < n_changes; k++) {
		const char *c = changes[k];
		bool present = false;

		if (!strchr(c, '='))
			continue; /* a removal */
		if (c[0] == '?') {
			c++;
			for (size_t i = 0; i < n && !present; i++)
				present = same_name(out[i], c);
		}
		if (!present && !(out[n++] = sbx_strdup(c)))
			goto fail;
	}
	return out;
fail:
	pty_env_free(out);
	return NULL;
}

void pty_env_free(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		sbx_free(env[i]);
	sbx_free(env);
}

/* In the child: only async-signal-safe calls, then exec. */
static void __attribute__((noreturn))
child(const struct pty_spawn_opts *o, int slave, int master, int report)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;
	int err;

	close(master);
	if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
		goto fail;
	if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
		goto fail;
	if (slave > 2)
		close(slave);
	/* Dispositions the agent set (SIGPIPE ignored above all: `yes | head`
	 * would print "Broken pipe") would survive the exec. */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL))
		goto fail;
	if (chdir(o->dir) != 0 && chdir("/") != 0)
		goto fail;
	execve(o->path, (char *const *)o->argv, o->envp);
fail:
	err = errno;
	while (write(report, &err, sizeof(err)) < 0 && errno == EINTR)
		;
	_exit(127);
}

int pty_spawn(const struct pty_spawn_opts *o, int *master_out, pid_t *pid_out)
{
	struct winsize size = o->size;
	sigset_t all, old;
	int master, slave, report[2], err = 0;
	ssize_t n;
	pid_t pid;

	if (openpty(&master, &slave, NULL, NULL, &size) < 0)
		return -errno;
	if (o->no_echo) {
		struct termios t;

		if (tcgetattr(slave, &t) == 0) {
			t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
			tcsetattr(slave, TCSANOW, &t);
		}
	}
	if (fcntl(master, F_SETFD, FD_CLOEXEC) < 0 ||
	    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK) < 0 ||
	    pipe2(report, O_CLOEXEC) < 0) {
		err = errno;
		close(master);
		close(slave);
		return -err;
	}
	/* No handler of the agent's may run in the child before its
	 * dispositions are reset: signals wait until then. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0)
		child(o, slave, master, report[1]);
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(slave);
	close(report[1]);
	if (pid < 0) {
		close(report[0]);
		close(master);
		return -err;
	}
	/* 0 bytes: the exec closed the pipe. Returns within the exec's time,
	 * as uv_spawn does. */
	do
		n = read(report[0], &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == (ssize_t)sizeof(err)) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(master);
		return -err;
	}
	*master_out = master;
	*pid_out = pid;
	return 0;
}

/* ---- reaping ----------------------------------------------------------------------- */

void pty_graveyard_reap(struct pty_graveyard *g)
{
	for (size_t i = 0; i < g->n;) {
		if (waitpid(g->pids[i], NULL, WNOHANG) != 0 || errno == ECHILD)
			g->pids[i] = g->pids[--g->n]; /* reaped, or not ours to wait for */
		else
			i++;
	}
}

void pty_graveyard_add(struct pty_graveyard *g, pid_t pid)
{
	if (waitpid(pid, NULL, WNOHANG) != 0)
		return; /* reaped now (or already: -1) */
	if (g->n == g->cap) {
		size_t cap = g->cap ? 2 * g->cap : 16;
		pid_t *p = sbx_realloc(g->pids, cap * sizeof(*p));

		if (!p) {
			sbx_log_warn("a killed shell is left unreaped: out of memory",
				     SBX_LI("pid", pid));
			return;
		}
		g->pids = p;
		g->cap = cap;
	}
	g->pids[g->n++] = pid;
}

void pty_graveyard_release(struct pty_graveyard *g)
{
	pty_graveyard_reap(g);
	sbx_free(g->pids);
	*g = (struct pty_graveyard){ 0 };
}
