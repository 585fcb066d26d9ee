/* Single-use tickets: random values that stand for a credential for a short
 * while, for URLs that cannot carry headers (?ticket=...). Each works once
 * and only within its lifetime; expired ones are dropped as new ones are
 * made, and their number is bounded. Time is the monotonic clock; a store
 * shared by threads needs its user's lock around each call.
 */
#ifndef SBX_TICKETS_H
#define SBX_TICKETS_H

#include "sbx/map.h"

#include <stdbool.h>
#include <stdint.h>

#define SBX_TICKET_SIZE 49 /* 24 random bytes in hex, and a NUL */

struct sbx_tickets {
	struct sbx_map map; /* ticket -> struct sbx_ticket_entry */
	void (*free_value)(void *value);
};

/* free_value (may be NULL) frees what a ticket carries when it expires or
 * the store goes. */
void sbx_tickets_init(struct sbx_tickets *t, size_t max, void (*free_value)(void *value));
void sbx_tickets_release(struct sbx_tickets *t);
/* A new ticket valid for ttl_ms, carrying value (the store's until taken):
 * 0, -E2BIG (too many outstanding), -EAGAIN (no randomness), -ENOMEM. */
int sbx_tickets_issue(struct sbx_tickets *t, uint64_t ttl_ms, void *value,
		      char out[SBX_TICKET_SIZE]);
/* Uses a ticket up: true when it was valid, with its value in *value (the
 * caller's now; freed here when value is NULL). */
bool sbx_tickets_take(struct sbx_tickets *t, const char *ticket, void **value);
size_t sbx_tickets_count(const struct sbx_tickets *t);

#endif
