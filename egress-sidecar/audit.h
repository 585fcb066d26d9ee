/* The recent decisions, for `GET /decisions`, and the name patterns whose
 * decisions stay out of the log.
 *
 * A ring of the last N decisions, each kept as its compact JSON text (a few
 * hundred bytes), numbered from 1 so a poller can ask for what came after
 * the last number it saw. Memory is bounded by N and the 253-byte name.
 */
#ifndef SBX_EGRESS_AUDIT_H
#define SBX_EGRESS_AUDIT_H

#include "sbx/buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_entry {
	uint64_t seq;
	bool denied;
	char *name; /* lower case, without the trailing dot */
	char *json; /* the entry, with its seq */
};

struct audit {
	struct audit_entry *ring;
	size_t cap, n, head; /* head: where the next entry goes */
	uint64_t next_seq;   /* from 1 */
	uint64_t dropped;    /* entries that did not fit in memory */
};

struct audit_query {
	uint64_t after;	     /* entries with a larger seq */
	size_t limit;	     /* at most this many, the newest (0: all kept) */
	const char *pattern; /* name, *.suffix or * (NULL: any) */
	int denied;	     /* 1: denied only, 0: allowed only, -1: either */
};

/* 0 or -ENOMEM. cap >= 1. */
int audit_init(struct audit *a, size_t cap);
void audit_release(struct audit *a);
/* Keeps entry (an object; the reference is the caller's) with "seq" added,
 * evicting the oldest when full. Returns the seq, or 0 when it could not be
 * kept (out of memory; counted in dropped). */
uint64_t audit_add(struct audit *a, json_t *entry, const char *name, bool denied);
/* {"decisions": [...oldest first], "next": S, "kept": N} into b, where S is
 * the seq of the last entry written (or q->after when none): what to pass
 * as `after` next time. 0 or -ENOMEM. */
int audit_query(const struct audit *a, const struct audit_query *q, struct sbx_buf *b);

/* Whether name (as asked: any case, maybe with the trailing dot) matches
 * pattern: "*" any name, "*.example.com" names below example.com (not the
 * apex), else the name itself. */
bool audit_name_matches(const char *pattern, const char *name);
/* A pattern this module understands: "*", "*.name" or a name. */
bool audit_pattern_valid(const char *pattern);

#endif
