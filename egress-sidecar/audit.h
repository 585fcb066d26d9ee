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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One decision as the proxy reports it. outcome and verdict must be static
 * strings (kept by pointer); the others are copied. */
struct audit_record {
	double time; /* seconds since the epoch */
	const char *name;
	int qtype;
	const char *outcome, *verdict;			/* static */
	const char *rule, *target, *denied, *addresses; /* target, denied: may be NULL */
	double upstream_ms;
	bool refused; /* not answered from upstream: what verdict=deny selects */
};

/* Kept compactly (about 150 bytes): the copied strings in one block. */
struct audit_entry {
	uint64_t seq;
	double time;
	float upstream_ms;
	uint16_t qtype;
	bool refused, has_target, has_denied;
	const char *outcome, *verdict;
	char *strings; /* name (lower case, no trailing dot), rule, target, denied, addresses */
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
/* Keeps a copy of r, evicting the oldest when full. Returns its seq, or 0
 * when it could not be kept (out of memory; counted in dropped). */
uint64_t audit_add(struct audit *a, const struct audit_record *r);
/* {"decisions": [{time, name, qtype, outcome, verdict, rule, target?,
 * denied?, addresses, upstream_ms, seq}...oldest first], "next": S,
 * "kept": N} into b, where S is
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
