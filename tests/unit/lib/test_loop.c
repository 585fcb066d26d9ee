/* Unit tests for lib/loop.c: graceful stop on the first signal, immediate
 * exit on the second, and closing every handle left on a loop. */
#include "unit.h"

#include "sbx/loop.h"

#include <signal.h>
#include <sys/wait.h>

struct stopper {
	struct sbx_signals sig;
	uv_timer_t work; /* stands for the program's own handles */
	int stops;
};

static void on_stop(void *arg)
{
	struct stopper *s = arg;

	s->stops++;
	uv_close((uv_handle_t *)&s->work, NULL);
	sbx_signals_close(&s->sig);
}

static void send_term(uv_timer_t *t)
{
	uv_kill(getpid(), SIGTERM);
}

static void first_signal_stops_gracefully(void **state)
{
	struct stopper s = { 0 };
	uv_loop_t loop;

	uv_loop_init(&loop);
	assert_int_equal(sbx_signals_init(&loop, &s.sig, on_stop, &s), 0);
	uv_timer_init(&loop, &s.work);
	/* The program's work keeps the loop alive until the signal stops it. */
	uv_timer_start(&s.work, send_term, 10, 1000);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(s.stops, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_stop_ignore(void *arg)
{
	/* A shutdown that hangs: the second signal must still end the process. */
}

static void second_signal_exits_at_once(void **state)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct sbx_signals sig;
		uv_loop_t loop;
		uv_timer_t t;

		uv_loop_init(&loop);
		sbx_signals_init(&loop, &sig, on_stop_ignore, NULL);
		uv_timer_init(&loop, &t);
		uv_timer_start(&t, send_term, 10, 10);
		uv_run(&loop, UV_RUN_DEFAULT);
		_exit(0); /* not reached: the second SIGTERM exits with 143 */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 128 + SIGTERM);
}

static void loop_close_releases_open_handles(void **state)
{
	uv_loop_t loop;
	uv_timer_t t1, t2;
	uv_idle_t idle;
	struct sbx_signals sig;

	uv_loop_init(&loop);
	uv_timer_init(&loop, &t1);
	uv_timer_init(&loop, &t2);
	uv_timer_start(&t2, send_term, 100000, 0);
	uv_idle_init(&loop, &idle);
	sbx_signals_init(&loop, &sig, NULL, NULL);
	/* Without closing the handles first, uv_loop_close would fail with EBUSY. */
	assert_int_equal(sbx_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(first_signal_stops_gracefully),
		cmocka_unit_test(second_signal_exits_at_once),
		cmocka_unit_test(loop_close_releases_open_handles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
