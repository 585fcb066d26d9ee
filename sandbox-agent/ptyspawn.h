/* A program on a new pseudo-terminal, for the shell sessions and the
 * WebSocket terminal. Everything the child needs (argv, the environment,
 * the terminal's modes) is made before the fork; the child only resets its
 * signals, takes the terminal and execs, the way libuv's
 * uv__process_child_init does for pipes. A failed exec is reported through
 * a close-on-exec pipe, not as a shell that exits 127. */
#ifndef SBX_AGENT_PTYSPAWN_H
#define SBX_AGENT_PTYSPAWN_H

#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/types.h>

struct pty_spawn_opts {
	const char *path;	 /* the program */
	const char *const *argv; /* its argv ("bash", ...) */
	char *const *envp;	 /* from pty_env */
	const char *dir;	 /* the working directory ("/" if it cannot be entered) */
	struct winsize size;
	bool no_echo; /* the terminal does not echo input (commands come from files) */
};

/* 0, with *master (non-blocking, close-on-exec) and *pid; or -errno,
 * including the exec's own failure. */
int pty_spawn(const struct pty_spawn_opts *o, int *master, pid_t *pid);

/* The agent's environment with changes: "NAME=value" sets, "?NAME=value"
 * sets only if NAME is not set, "NAME" removes. NULL on no memory; freed
 * with pty_env_free. */
char **pty_env(const char *const *changes);
void pty_env_free(char **env);

/* The interactive shell to run: /bin/bash if it can be run, else /bin/sh. */
const char *pty_shell(void);

/* Shells that were killed and are not reaped yet: waitpid(-1) would take
 * the exit statuses libuv waits for, so each pid is waited for by itself,
 * never blocking. */
struct pty_graveyard {
	pid_t *pids;
	size_t n, cap;
};

/* Reaps pid if it has ended, else keeps it for pty_graveyard_reap. */
void pty_graveyard_add(struct pty_graveyard *g, pid_t pid);
/* Reaps those that have ended since (on SIGCHLD, or a timer). */
void pty_graveyard_reap(struct pty_graveyard *g);
void pty_graveyard_release(struct pty_graveyard *g);

#endif
