/*
 * sbx-pause: the process that holds a pod's namespaces on the test cluster
 * (containerd's sandbox image). It is PID 1 of the pod: it waits for signals,
 * reaps any child that is re-parented to it, and exits 0 on SIGTERM or SIGINT.
 * Built static so the image holds this one file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

int main(void)
{
	sigset_t wanted;
	int sig;

	sigemptyset(&wanted);
	sigaddset(&wanted, SIGTERM);
	sigaddset(&wanted, SIGINT);
	sigaddset(&wanted, SIGCHLD);
	/* Blocked signals are taken with sigwait: no handler runs, nothing races. */
	if (sigprocmask(SIG_BLOCK, &wanted, NULL) != 0) {
		perror("sbx-pause: sigprocmask");
		return 1;
	}
	for (;;) {
		if (sigwait(&wanted, &sig) != 0)
			continue;
		if (sig == SIGCHLD) {
			for (;;) {
				pid_t pid = waitpid(-1, NULL, WNOHANG);

				if (pid > 0 || (pid < 0 && errno == EINTR))
					continue;
				break;
			}
			continue;
		}
		return 0;
	}
}
