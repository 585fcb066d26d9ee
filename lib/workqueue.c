/* Rate-limited work queue (see sbx/workqueue.h). Owns one item per tracked
 * key; an item lives while it is queued, processing, waiting on a delay or
 * remembering failures, and is freed as soon as none of these holds. */
#include "sbx/workqueue.h"

#include "sbx/alloc.h"
#include "sbx/map.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

struct item {
	struct sbx_workqueue *q;
	struct item *next; /* ready list */
	bool queued;	   /* on the ready list, or to be put there after processing */
	bool processing;
	bool waiting; /* timer armed */
	bool closing; /* timer handle being closed */
	unsigned failures;
	uint64_t due_ms; /* when the armed timer fires */
	uv_timer_t timer;
	char key[];
};

struct sbx_workqueue {
	uv_loop_t *loop;
	struct sbx_workqueue_opts opts;
	sbx_workqueue_process_fn process;
	void *arg;
	struct sbx_map items;
	struct item *head, *tail; /* ready list, FIFO */
	size_t ready;
	unsigned in_flight;
	bool dispatching;
	bool shut_down;
	unsigned closing; /* item timers not yet closed */
	struct sbx_token_bucket bucket;
};

void sbx_token_bucket_init(struct sbx_token_bucket *tb, double qps, double burst, uint64_t now_ms)
{
	tb->qps = qps;
	tb->burst = burst;
	tb->tokens = burst;
	tb->last_ms = now_ms;
}

uint64_t sbx_token_bucket_reserve(struct sbx_token_bucket *tb, uint64_t now_ms)
{
	double wait;

	if (now_ms > tb->last_ms) {
		tb->tokens += (double)(now_ms - tb->last_ms) * tb->qps / 1000.0;
		if (tb->tokens > tb->burst)
			tb->tokens = tb->burst;
		tb->last_ms = now_ms;
	}
	tb->tokens -= 1.0;
	if (tb->tokens >= 0)
		return 0;
	wait = -tb->tokens * 1000.0 / tb->qps;
	return (uint64_t)(wait + 0.999);
}

uint64_t sbx_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t max_ms)
{
	uint64_t d = base_ms;

	for (unsigned i = 0; i < failures; i++) {
		if (d >= max_ms / 2)
			return max_ms;
		d *= 2;
	}
	return d < max_ms ? d : max_ms;
}

int sbx_workqueue_new(uv_loop_t *loop, const struct sbx_workqueue_opts *opts,
		      sbx_workqueue_process_fn process, void *arg, struct sbx_workqueue **out)
{
	struct sbx_workqueue *q = sbx_calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->loop = loop;
	q->opts = opts ? *opts : (struct sbx_workqueue_opts){ 0 };
	if (!q->opts.base_delay_ms)
		q->opts.base_delay_ms = 5;
	if (!q->opts.max_delay_ms)
		q->opts.max_delay_ms = 300000;
	if (q->opts.qps <= 0)
		q->opts.qps = 10;
	if (q->opts.burst < 1)
		q->opts.burst = 100;
	if (!q->opts.concurrency)
		q->opts.concurrency = 1;
	if (!q->opts.max_keys)
		q->opts.max_keys = 100000;
	q->process = process;
	q->arg = arg;
	sbx_map_init(&q->items, q->opts.max_keys);
	sbx_token_bucket_init(&q->bucket, q->opts.qps, q->opts.burst, uv_now(loop));
	*out = q;
	return 0;
}

static void maybe_free_queue(struct sbx_workqueue *q)
{
	if (q->shut_down && q->closing == 0 && q->items.count == 0) {
		sbx_map_release(&q->items);
		sbx_free(q);
	}
}

static void on_item_closed(uv_handle_t *h)
{
	struct item *it = h->data;
	struct sbx_workqueue *q = it->q;

	q->closing--;
	sbx_free(it);
	maybe_free_queue(q);
}

/* Drops an item nobody needs any more. Its timer handle was initialised, so
 * it is closed first and the memory freed in the close callback. */
static void release_item(struct item *it)
{
	struct sbx_workqueue *q = it->q;

	if (it->queued || it->processing || it->waiting || it->failures || it->closing)
		return;
	sbx_map_remove(&q->items, it->key);
	it->closing = true;
	q->closing++;
	uv_close((uv_handle_t *)&it->timer, on_item_closed);
}

static int get_item(struct sbx_workqueue *q, const char *key, struct item **out)
{
	struct item *it = sbx_map_get(&q->items, key);
	size_t len;
	int rc;

	if (it) {
		*out = it;
		return 0;
	}
	len = strlen(key);
	it = sbx_calloc(1, sizeof(*it) + len + 1);
	if (!it)
		return -ENOMEM;
	memcpy(it->key, key, len + 1);
	it->q = q;
	if ((rc = sbx_map_put(&q->items, it->key, it, NULL))) {
		sbx_free(it);
		return rc;
	}
	uv_timer_init(q->loop, &it->timer);
	it->timer.data = it;
	*out = it;
	return 0;
}

static void push_ready(struct sbx_workqueue *q, struct item *it)
{
	it->next = NULL;
	if (q->tail)
		q->tail->next = it;
	else
		q->head = it;
	q->tail = it;
	q->ready++;
}

/* Hands ready keys to 'process' while the concurrency allows. Guarded so a
 * 'process' that calls done or add synchronously does not recurse. */
static void dispatch(struct sbx_workqueue *q)
{
	struct item *it;

	if (q->dispatching)
		return;
	q->dispatching = true;
	while (!q->shut_down && q->head && q->in_flight < q->opts.concurrency) {
		it = q->head;
		q->head = it->next;
		if (!q->head)
			q->tail = NULL;
		q->ready--;
		it->queued = false;
		it->processing = true;
		q->in_flight++;
		q->process(q, it->key, q->arg);
	}
	q->dispatching = false;
}

int sbx_workqueue_add(struct sbx_workqueue *q, const char *key)
{
	struct item *it;
	int rc;

	if (q->shut_down)
		return -ESHUTDOWN;
	if ((rc = get_item(q, key, &it)))
		return rc;
	if (it->queued)
		return 0;
	it->queued = true;
	if (!it->processing) {
		push_ready(q, it);
		dispatch(q);
	}
	return 0;
}

static void on_timer(uv_timer_t *t)
{
	struct item *it = t->data;

	it->waiting = false;
	/* The add can only fail on shutdown; the item exists already. */
	if (sbx_workqueue_add(it->q, it->key))
		release_item(it);
}

int sbx_workqueue_add_after(struct sbx_workqueue *q, const char *key, uint64_t delay_ms)
{
	uint64_t due = uv_now(q->loop) + delay_ms;
	struct item *it;
	int rc;

	if (q->shut_down)
		return -ESHUTDOWN;
	if (delay_ms == 0)
		return sbx_workqueue_add(q, key);
	if ((rc = get_item(q, key, &it)))
		return rc;
	/* An earlier pending add already covers this one. */
	if (it->waiting && it->due_ms <= due)
		return 0;
	it->waiting = true;
	it->due_ms = due;
	uv_timer_start(&it->timer, on_timer, delay_ms, 0);
	return 0;
}

int sbx_workqueue_add_rate_limited(struct sbx_workqueue *q, const char *key)
{
	uint64_t key_delay, bucket_delay;
	struct item *it;
	int rc;

	if (q->shut_down)
		return -ESHUTDOWN;
	if ((rc = get_item(q, key, &it)))
		return rc;
	key_delay = sbx_backoff_ms(it->failures, q->opts.base_delay_ms, q->opts.max_delay_ms);
	it->failures++;
	bucket_delay = sbx_token_bucket_reserve(&q->bucket, uv_now(q->loop));
	return sbx_workqueue_add_after(q, key, key_delay > bucket_delay ? key_delay : bucket_delay);
}

void sbx_workqueue_forget(struct sbx_workqueue *q, const char *key)
{
	struct item *it = sbx_map_get(&q->items, key);

	if (!it)
		return;
	it->failures = 0;
	release_item(it);
}

void sbx_workqueue_done(struct sbx_workqueue *q, const char *key, int rc)
{
	struct item *it = sbx_map_get(&q->items, key);

	assert(it && it->processing);
	if (!it || !it->processing)
		return;
	it->processing = false;
	q->in_flight--;
	if (q->shut_down) {
		it->queued = false;
		release_item(it);
		maybe_free_queue(q);
		return;
	}
	if (rc < 0)
		sbx_workqueue_add_rate_limited(q, key);
	else
		it->failures = 0;
	if (it->queued)
		push_ready(q, it);
	else
		release_item(it);
	dispatch(q);
}

size_t sbx_workqueue_len(const struct sbx_workqueue *q)
{
	return q->ready;
}

unsigned sbx_workqueue_failures(const struct sbx_workqueue *q, const char *key)
{
	struct item *it = sbx_map_get(&q->items, key);

	return it ? it->failures : 0;
}

static void shutdown_item(const char *key, void *value, void *arg)
{
	struct item *it = value;
	struct item **list = arg;

	(void)key;
	it->next = *list;
	*list = it;
}

void sbx_workqueue_free(struct sbx_workqueue *q)
{
	struct item *list = NULL, *it, *next;

	q->shut_down = true;
	q->head = q->tail = NULL;
	q->ready = 0;
	sbx_map_foreach(&q->items, shutdown_item, &list);
	for (it = list; it; it = next) {
		next = it->next;
		uv_timer_stop(&it->timer);
		it->waiting = false;
		it->queued = false;
		it->failures = 0;
		if (!it->processing)
			release_item(it);
	}
	maybe_free_queue(q);
}
