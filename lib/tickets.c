/* Single-use tickets (see sbx/tickets.h). */
#include "sbx/tickets.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <uv.h>

struct sbx_ticket_entry {
	uint64_t expires_ms; /* loop time */
	void *value;
};

/* The monotonic clock, not a loop's cached time: a store may be used from
 * several loops (under its user's lock). */
static uint64_t now_ms(void)
{
	return uv_hrtime() / 1000000;
}

void sbx_tickets_init(struct sbx_tickets *t, size_t max, void (*free_value)(void *value))
{
	t->free_value = free_value;
	sbx_map_init(&t->map, max);
}

static void entry_free(struct sbx_tickets *t, struct sbx_ticket_entry *e)
{
	if (!e)
		return;
	if (e->value && t->free_value)
		t->free_value(e->value);
	sbx_free(e);
}

void sbx_tickets_release(struct sbx_tickets *t)
{
	struct sbx_ticket_entry *e;

	while ((e = sbx_map_pop(&t->map)))
		entry_free(t, e);
	sbx_map_release(&t->map);
}

struct expired {
	uint64_t now;
	const char *keys[64];
	size_t n;
};

static void find_expired(const char *key, void *value, void *arg)
{
	struct expired *x = arg;

	if (((struct sbx_ticket_entry *)value)->expires_ms <= x->now && x->n < 64)
		x->keys[x->n++] = key;
}

static void purge(struct sbx_tickets *t)
{
	struct expired x = { .now = now_ms() };

	do {
		x.n = 0;
		sbx_map_foreach(&t->map, find_expired, &x);
		for (size_t i = 0; i < x.n; i++)
			entry_free(t, sbx_map_remove(&t->map, x.keys[i]));
	} while (x.n == 64);
}

int sbx_tickets_issue(struct sbx_tickets *t, uint64_t ttl_ms, void *value,
		      char out[SBX_TICKET_SIZE])
{
	unsigned char raw[(SBX_TICKET_SIZE - 1) / 2];
	struct sbx_ticket_entry *e;
	int rc;

	purge(t);
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EAGAIN;
	if (!(e = sbx_malloc(sizeof(*e))))
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	e->expires_ms = now_ms() + ttl_ms;
	e->value = value;
	if ((rc = sbx_map_put(&t->map, out, e, NULL))) {
		sbx_free(e); /* the value stays the caller's */
		return rc;
	}
	return 0;
}

bool sbx_tickets_take(struct sbx_tickets *t, const char *ticket, void **value)
{
	struct sbx_ticket_entry *e = sbx_map_remove(&t->map, ticket);
	bool ok = e && e->expires_ms > now_ms();

	if (ok && value) {
		*value = e->value;
		e->value = NULL;
	}
	entry_free(t, e);
	return ok;
}

size_t sbx_tickets_count(const struct sbx_tickets *t)
{
	return t->map.count;
}
