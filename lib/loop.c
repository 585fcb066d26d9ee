/* libuv glue (see sbx/loop.h). */
#include "sbx/loop.h"

#include "sbx/log.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void on_signal(uv_signal_t *h, int signum)
{
	struct sbx_signals *s = h->data;

	if (s->received++) {
		sbx_log_warn("second signal, exiting now", SBX_LI("signal", signum));
		_exit(128 + signum);
	}
	sbx_log_info("stopping", SBX_LS("signal", signum == SIGINT ? "SIGINT" : "SIGTERM"));
	if (s->on_stop)
		s->on_stop(s->arg);
}

int sbx_signals_init(uv_loop_t *loop, struct sbx_signals *s, void (*on_stop)(void *arg), void *arg)
{
	int rc;

	signal(SIGPIPE, SIG_IGN);
	s->on_stop = on_stop;
	s->arg = arg;
	s->received = 0;
	if ((rc = uv_signal_init(loop, &s->sigint)))
		return rc;
	if ((rc = uv_signal_init(loop, &s->sigterm))) {
		uv_close((uv_handle_t *)&s->sigint, NULL);
		return rc;
	}
	s->sigint.data = s;
	s->sigterm.data = s;
	if ((rc = uv_signal_start(&s->sigint, on_signal, SIGINT)) ||
	    (rc = uv_signal_start(&s->sigterm, on_signal, SIGTERM))) {
		sbx_signals_close(s);
		return rc;
	}
	uv_unref((uv_handle_t *)&s->sigint);
	uv_unref((uv_handle_t *)&s->sigterm);
	return 0;
}

void sbx_signals_close(struct sbx_signals *s)
{
	if (!uv_is_closing((uv_handle_t *)&s->sigint))
		uv_close((uv_handle_t *)&s->sigint, NULL);
	if (!uv_is_closing((uv_handle_t *)&s->sigterm))
		uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int sbx_loop_close(uv_loop_t *loop)
{
	uv_walk(loop, close_walk, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	return uv_loop_close(loop);
}
