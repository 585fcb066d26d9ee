/* libuv loop glue shared by every program: graceful stop on SIGINT/SIGTERM
 * (a second signal ends the process at once), SIGPIPE ignored, and a close
 * that releases every handle still on the loop. */
#ifndef SBX_LOOP_H
#define SBX_LOOP_H

#include <uv.h>

struct sbx_signals {
	uv_signal_t sigint;
	uv_signal_t sigterm;
	void (*on_stop)(void *arg); /* first signal: begin a graceful shutdown */
	void *arg;
	int received;
};

/* Installs the handlers on loop; they do not keep the loop alive. */
int sbx_signals_init(uv_loop_t *loop, struct sbx_signals *s, void (*on_stop)(void *arg), void *arg);
void sbx_signals_close(struct sbx_signals *s);

/* Closes every handle that is still open, runs the loop until their close
 * callbacks have run, and closes the loop. 0 or a negative uv error. */
int sbx_loop_close(uv_loop_t *loop);

#endif
