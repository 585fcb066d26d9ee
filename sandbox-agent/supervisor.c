/* The init-style supervisor (see supervisor.h). Signals are blocked and
 * taken synchronously with sigtimedwait, so there are no handlers and no
 * races between a signal and the bookkeeping. */
#include "supervisor.h"

#include "sbx/log.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };

static void signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(set, forwarded[i]);
}

static int status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

/* Reaps every child that has ended; notes the two we care about. */
static void reap(pid_t cmd, pid_t server, int *cmd_status, bool *cmd_done, bool *server_done)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == cmd) {
			*cmd_status = st;
			*cmd_done = true;
		} else if (pid == server) {
			*server_done = true;
			if (!*cmd_done)
				sbx_log_error(
					"the API server exited; the command goes on without it",
					SBX_LI("status", status_code(st)));
		}
	}
}

static pid_t start_server(int (*serve)(void *), void *arg, const sigset_t *orig)
{
	pid_t pid;

	/* Nothing buffered may be written twice by the two processes. */
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, orig, NULL);
		/* exit, not _exit: the server ends like a standalone agent, and a
		 * sanitizer build checks it for leaks. */
		exit(serve(arg));
	}
	return pid;
}

static pid_t start_command(char **cmd, const sigset_t *orig)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* Its own group, so signals reach the whole tree it starts. */
		setpgid(0, 0);
		sigprocmask(SIG_SETMASK, orig, NULL);
		execvp(cmd[0], cmd);
		fprintf(stderr, "sbx-agent: cannot run %s: %s\n", cmd[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	if (pid > 0)
		setpgid(pid, pid); /* also here: no race with the first signal */
	return pid;
}

/* After the command: SIGTERM to the server, SIGKILL if it outstays grace_ms. */
static void stop_server(pid_t server, bool *server_done, pid_t cmd, unsigned grace_ms)
{
	struct timespec deadline, now, left;
	sigset_t set;
	int dummy = 0;
	bool cmd_done = true;

	if (*server_done)
		return;
	kill(server, SIGTERM);
	signal_set(&set);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += grace_ms / 1000;
	deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	while (!*server_done) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = deadline.tv_sec - now.tv_sec;
		left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		if (left.tv_sec < 0) {
			sbx_log_warn("the API server did not stop in time; killing it");
			kill(server, SIGKILL);
			waitpid(server, NULL, 0);
			*server_done = true;
			break;
		}
		if (sigtimedwait(&set, NULL, &left) == SIGCHLD)
			reap(cmd, server, &dummy, &cmd_done, server_done);
	}
}

int supervisor_run(char **cmd, int (*serve)(void *), void *arg, unsigned grace_ms)
{
	sigset_t set, orig;
	pid_t server, command;
	int cmd_status = 0, sig;
	bool cmd_done = false, server_done = false;

	/* Orphans anywhere below us are reparented here, to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal_set(&set);
	sigprocmask(SIG_BLOCK, &set, &orig);
	server = start_server(serve, arg, &orig);
	if (server < 0) {
		sbx_log_error("cannot start the API server", SBX_LS("error", strerror(errno)));
		return 1;
	}
	command = start_command(cmd, &orig);
	if (command < 0) {
		sbx_log_error("cannot start the command", SBX_LS("error", strerror(errno)));
		kill(server, SIGTERM);
		return 1;
	}
	sbx_log_info("supervising", SBX_LS("command", cmd[0]), SBX_LI("pid", command),
		     SBX_LI("server_pid", server));
	while (!cmd_done) {
		sig = sigwaitinfo(&set, NULL);
		if (sig < 0)
			continue;
		if (sig == SIGCHLD)
			reap(command, server, &cmd_status, &cmd_done, &server_done);
		else
			kill(-command, sig);
	}
	sbx_log_info("command ended; stopping", SBX_LI("status", status_code(cmd_status)));
	stop_server(server, &server_done, command, grace_ms);
	/* Anything the command left behind in its group goes too. */
	kill(-command, SIGKILL);
	reap(command, server, &cmd_status, &cmd_done, &server_done);
	return status_code(cmd_status);
}
