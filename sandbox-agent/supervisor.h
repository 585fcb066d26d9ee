/* `sbx-agent run -- CMD ARGS`: the agent as the sandbox's init.
 *
 * A small supervisor process, deliberately free of libuv, forks two
 * children: the API server and the user's command (in its own process
 * group). It reaps every process that ends up its child (it is PID 1 in a
 * container, and a child subreaper otherwise), forwards termination and user
 * signals to the command's group, and when the command ends stops the server
 * gracefully (SIGTERM, then SIGKILL after a grace period) and exits with the
 * command's status: its exit code, or 128 + the signal that killed it.
 *
 * A libuv process cannot reap with waitpid(-1): that would steal the exit
 * statuses libuv itself waits for (the server's own child processes).
 */
#ifndef SBX_AGENT_SUPERVISOR_H
#define SBX_AGENT_SUPERVISOR_H

/* Runs cmd beside serve(arg) (called in the server child; its return value
 * is that child's exit code). Returns the status to exit with. */
int supervisor_run(char **cmd, int (*serve)(void *arg), void *arg, unsigned grace_ms);

#endif
