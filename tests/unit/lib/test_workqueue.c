/* Unit tests for lib/workqueue.c: backoff and bucket arithmetic, and the
 * queue's rules on a real libuv loop (dedup, no double processing, retries). */
#include "unit.h"

#include "sbx/workqueue.h"

#include <errno.h>

static void backoff_doubles_and_caps(void **state)
{
	assert_int_equal(sbx_backoff_ms(0, 5, 1000), 5);
	assert_int_equal(sbx_backoff_ms(1, 5, 1000), 10);
	assert_int_equal(sbx_backoff_ms(4, 5, 1000), 80);
	assert_int_equal(sbx_backoff_ms(8, 5, 1000), 1000);
	assert_int_equal(sbx_backoff_ms(500, 5, 1000), 1000);
	assert_int_equal(sbx_backoff_ms(70, 5, UINT64_MAX), UINT64_MAX);
}

static void token_bucket_allows_burst_then_paces(void **state)
{
	struct sbx_token_bucket tb;

	sbx_token_bucket_init(&tb, 10, 3, 1000);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 1000), 0);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 1000), 0);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 1000), 0);
	/* 10 qps: the next token comes in 100 ms, the one after in 200 ms. */
	assert_int_equal(sbx_token_bucket_reserve(&tb, 1000), 100);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 1000), 200);
	/* After a long pause the bucket is full again, but never over burst. */
	assert_int_equal(sbx_token_bucket_reserve(&tb, 100000), 0);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 100000), 0);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 100000), 0);
	assert_int_equal(sbx_token_bucket_reserve(&tb, 100000), 100);
}

/* A processor that records calls and finishes them when told. */
struct proc {
	uv_loop_t loop;
	struct sbx_workqueue *q;
	char order[64][16];
	uint64_t at_ms[64];
	int calls;
	int in_process; /* keys inside 'process' right now */
	int max_concurrent;
	int fail_times; /* return an error this many times */
	bool finish_inline;
	char pending[8][16]; /* started, not finished (async mode) */
	int n_pending;
};

static void process(struct sbx_workqueue *q, const char *key, void *arg)
{
	struct proc *p = arg;

	for (int i = 0; i < p->n_pending; i++)
		if (strcmp(p->pending[i], key) == 0)
			fail_msg("key %s processed twice at once", key);
	snprintf(p->order[p->calls], 16, "%s", key);
	p->at_ms[p->calls] = uv_now(&p->loop);
	p->calls++;
	if (p->finish_inline) {
		sbx_workqueue_done(q, key, p->fail_times-- > 0 ? -EIO : 0);
		return;
	}
	snprintf(p->pending[p->n_pending++], 16, "%s", key);
	if (p->n_pending > p->max_concurrent)
		p->max_concurrent = p->n_pending;
}

static void finish_first(struct proc *p, int rc)
{
	char key[16];

	assert_true(p->n_pending > 0);
	strcpy(key, p->pending[0]);
	memmove(p->pending[0], p->pending[1], sizeof(p->pending[0]) * (size_t)(p->n_pending - 1));
	p->n_pending--;
	sbx_workqueue_done(p->q, key, rc);
}

static void start(struct proc *p, unsigned concurrency)
{
	struct sbx_workqueue_opts o = { .base_delay_ms = 20,
					.max_delay_ms = 1000,
					.concurrency = concurrency,
					.qps = 1000,
					.burst = 1000 };

	memset(p, 0, sizeof(*p));
	uv_loop_init(&p->loop);
	assert_int_equal(sbx_workqueue_new(&p->loop, &o, process, p, &p->q), 0);
}

static void stop(struct proc *p)
{
	sbx_workqueue_free(p->q);
	uv_run(&p->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&p->loop), 0);
}

static void duplicate_adds_collapse(void **state)
{
	struct proc p;

	start(&p, 1);
	sbx_workqueue_add(p.q, "a"); /* dispatched at once */
	sbx_workqueue_add(p.q, "b");
	sbx_workqueue_add(p.q, "b");
	sbx_workqueue_add(p.q, "c");
	sbx_workqueue_add(p.q, "b");
	assert_int_equal(sbx_workqueue_len(p.q), 2);
	while (p.n_pending)
		finish_first(&p, 0);
	assert_int_equal(p.calls, 3);
	assert_string_equal(p.order[0], "a");
	assert_string_equal(p.order[1], "b");
	assert_string_equal(p.order[2], "c");
	stop(&p);
}

static void key_added_while_processing_waits_for_done(void **state)
{
	struct proc p;

	start(&p, 4);
	sbx_workqueue_add(p.q, "k");
	assert_int_equal(p.n_pending, 1);
	/* Concurrency allows more, but the same key must not run twice at once. */
	sbx_workqueue_add(p.q, "k");
	sbx_workqueue_add(p.q, "k");
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.n_pending, 1);
	finish_first(&p, 0);
	/* Re-queued once, however often it was added meanwhile. */
	assert_int_equal(p.calls, 2);
	finish_first(&p, 0);
	assert_int_equal(p.calls, 2);
	assert_int_equal(p.max_concurrent, 1);
	stop(&p);
}

static void concurrency_limit_holds(void **state)
{
	struct proc p;
	char key[8];

	start(&p, 2);
	for (int i = 0; i < 6; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		sbx_workqueue_add(p.q, key);
	}
	assert_int_equal(p.n_pending, 2);
	while (p.n_pending)
		finish_first(&p, 0);
	assert_int_equal(p.calls, 6);
	assert_int_equal(p.max_concurrent, 2);
	stop(&p);
}

static void failures_back_off_exponentially_then_forget(void **state)
{
	struct proc p;

	start(&p, 1);
	p.finish_inline = true;
	p.fail_times = 3;
	sbx_workqueue_add(p.q, "x");
	uv_run(&p.loop, UV_RUN_DEFAULT);
	/* One try plus three retries: 20, 40, 80 ms apart. */
	assert_int_equal(p.calls, 4);
	for (int i = 1; i < 4; i++) {
		uint64_t gap = p.at_ms[i] - p.at_ms[i - 1];
		uint64_t want = 20u << (i - 1);

		if (gap < want || gap > want + 200)
			fail_msg("retry %d after %lu ms, want about %lu", i, (unsigned long)gap,
				 (unsigned long)want);
	}
	/* Success forgot the failures. */
	assert_int_equal(sbx_workqueue_failures(p.q, "x"), 0);
	stop(&p);
}

static void add_after_keeps_the_earliest(void **state)
{
	struct proc p;
	uint64_t t0;

	start(&p, 1);
	p.finish_inline = true;
	t0 = uv_now(&p.loop);
	sbx_workqueue_add_after(p.q, "d", 200);
	sbx_workqueue_add_after(p.q, "d", 30);
	sbx_workqueue_add_after(p.q, "d", 300);
	uv_run(&p.loop, UV_RUN_DEFAULT);
	assert_int_equal(p.calls, 1);
	assert_true(p.at_ms[0] - t0 >= 30 && p.at_ms[0] - t0 < 150);
	stop(&p);
}

static void max_keys_bounds_tracking(void **state)
{
	struct sbx_workqueue_opts o = { .max_keys = 2 };
	struct proc p;

	memset(&p, 0, sizeof(p));
	uv_loop_init(&p.loop);
	assert_int_equal(sbx_workqueue_new(&p.loop, &o, process, &p, &p.q), 0);
	assert_int_equal(sbx_workqueue_add(p.q, "a"), 0);
	assert_int_equal(sbx_workqueue_add(p.q, "b"), 0);
	assert_int_equal(sbx_workqueue_add(p.q, "c"), -E2BIG);
	/* Freeing with keys still processing: done after free is safe. */
	sbx_workqueue_free(p.q);
	while (p.n_pending)
		finish_first(&p, 0);
	uv_run(&p.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&p.loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backoff_doubles_and_caps),
		cmocka_unit_test(token_bucket_allows_burst_then_paces),
		cmocka_unit_test(duplicate_adds_collapse),
		cmocka_unit_test(key_added_while_processing_waits_for_done),
		cmocka_unit_test(concurrency_limit_holds),
		cmocka_unit_test(failures_back_off_exponentially_then_forget),
		cmocka_unit_test(add_after_keeps_the_earliest),
		cmocka_unit_test(max_keys_bounds_tracking),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
