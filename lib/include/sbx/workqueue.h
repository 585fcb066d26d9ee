/* A rate-limited work queue of string keys on a libuv loop.
 *
 * Semantics (those of client-go's workqueue, which controllers rely on):
 * - a key is queued at most once: adding a queued key is a no-op;
 * - a key is never processed twice at once: a key added while it is being
 *   processed is queued again only when its processing is done;
 * - sbx_workqueue_done(key, rc < 0) re-adds the key after a delay that is the
 *   larger of a per-key exponential backoff (base * 2^failures, capped) and
 *   an overall token bucket (qps, burst) shared by all keys; rc == 0 forgets
 *   the key's failures.
 * Processing is asynchronous: 'process' is called with a key and the owner
 * calls sbx_workqueue_done for it later (or from within 'process').
 */
#ifndef SBX_WORKQUEUE_H
#define SBX_WORKQUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_workqueue;

struct sbx_workqueue_opts {
	uint64_t base_delay_ms; /* first retry delay (default 5) */
	uint64_t max_delay_ms;	/* cap of the per-key backoff (default 300000) */
	double qps;		/* overall retry rate (default 10) */
	double burst;		/* overall retry burst (default 100) */
	unsigned concurrency;	/* keys processed at once (default 1) */
	size_t max_keys;	/* distinct keys tracked at most (default 100000) */
};

typedef void (*sbx_workqueue_process_fn)(struct sbx_workqueue *q, const char *key, void *arg);

/* The token bucket and backoff, as pure functions of time so they can be
 * tested without a clock. */
struct sbx_token_bucket {
	double tokens;
	double qps;
	double burst;
	uint64_t last_ms;
};

void sbx_token_bucket_init(struct sbx_token_bucket *tb, double qps, double burst, uint64_t now_ms);
/* Takes one token; returns how long the caller must wait for it (0 if one was
 * available). Tokens may go negative: later callers queue behind. */
uint64_t sbx_token_bucket_reserve(struct sbx_token_bucket *tb, uint64_t now_ms);
/* base * 2^failures, capped at max (failures counts earlier failures). */
uint64_t sbx_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t max_ms);

int sbx_workqueue_new(uv_loop_t *loop, const struct sbx_workqueue_opts *opts,
		      sbx_workqueue_process_fn process, void *arg, struct sbx_workqueue **out);
/* Stops dispatching and cancels delayed adds. Keys being processed stay valid
 * until their sbx_workqueue_done; the memory goes once the last is done and
 * the timers have closed (so keep running the loop). */
void sbx_workqueue_free(struct sbx_workqueue *q);

/* 0, -E2BIG (max_keys reached), -ENOMEM, -ESHUTDOWN. */
int sbx_workqueue_add(struct sbx_workqueue *q, const char *key);
int sbx_workqueue_add_after(struct sbx_workqueue *q, const char *key, uint64_t delay_ms);
int sbx_workqueue_add_rate_limited(struct sbx_workqueue *q, const char *key);
void sbx_workqueue_forget(struct sbx_workqueue *q, const char *key);
void sbx_workqueue_done(struct sbx_workqueue *q, const char *key, int rc);

/* Keys waiting to be processed now (not counting delayed or in-process). */
size_t sbx_workqueue_len(const struct sbx_workqueue *q);
unsigned sbx_workqueue_failures(const struct sbx_workqueue *q, const char *key);

#endif
