/* Recent decisions and name patterns (see audit.h). */
#include "audit.h"

#include "policy.h"

#include "sbx/alloc.h"
#include "sbx/json.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define NAME_SIZE 256

int audit_init(struct audit *a, size_t cap)
{
	*a = (struct audit){ .cap = cap ? cap : 1, .next_seq = 1 };
	a->ring = sbx_calloc(a->cap, sizeof(*a->ring));
	return a->ring ? 0 : -ENOMEM;
}

static void entry_release(struct audit_entry *e)
{
	sbx_free(e->strings);
	*e = (struct audit_entry){ 0 };
}

void audit_release(struct audit *a)
{
	for (size_t i = 0; a->ring && i < a->cap; i++)
		entry_release(&a->ring[i]);
	sbx_free(a->ring);
	*a = (struct audit){ 0 };
}

uint64_t audit_add(struct audit *a, const struct audit_record *r)
{
	struct audit_entry *e = &a->ring[a->head];
	const char *parts[4] = { r->rule ? r->rule : "", r->target ? r->target : "",
				 r->denied ? r->denied : "", r->addresses ? r->addresses : "" };
	char norm[NAME_SIZE], *strings, *w;
	size_t len;

	if (!egress_name_normalize(r->name, norm, sizeof(norm)))
		snprintf(norm, sizeof(norm), "%s", r->name);
	len = strlen(norm) + 1;
	for (int i = 0; i < 4; i++)
		len += strlen(parts[i]) + 1;
	if (!(strings = sbx_malloc(len))) {
		a->dropped++;
		return 0;
	}
	w = stpcpy(strings, norm) + 1;
	for (int i = 0; i < 4; i++)
		w = stpcpy(w, parts[i]) + 1;
	entry_release(e);
	*e = (struct audit_entry){ .seq = a->next_seq,
				   .time = r->time,
				   .upstream_ms = (float)r->upstream_ms,
				   .qtype = (uint16_t)r->qtype,
				   .refused = r->refused,
				   .has_target = r->target != NULL,
				   .has_denied = r->denied != NULL,
				   .outcome = r->outcome,
				   .verdict = r->verdict,
				   .strings = strings };
	a->head = (a->head + 1) % a->cap;
	if (a->n < a->cap)
		a->n++;
	return a->next_seq++;
}

/* The entry's JSON object onto b. */
static int entry_json(const struct audit_entry *e, struct sbx_buf *b)
{
	const char *name = e->strings, *rule = name + strlen(name) + 1;
	const char *target = rule + strlen(rule) + 1, *denied = target + strlen(target) + 1;
	const char *addresses = denied + strlen(denied) + 1;
	json_t *o = json_pack("{s:f, s:s, s:i, s:s, s:s, s:s, s:s, s:f, s:I}", "time", e->time,
			      "name", name, "qtype", (int)e->qtype, "outcome", e->outcome,
			      "verdict", e->verdict, "rule", rule, "addresses", addresses,
			      "upstream_ms", (double)e->upstream_ms, "seq", (json_int_t)e->seq);
	int rc = -ENOMEM;

	if (o && e->has_target)
		json_object_set_new(o, "target", json_string(target));
	if (o && e->has_denied)
		json_object_set_new(o, "denied", json_string(denied));
	if (o)
		rc = sbx_json_dump_buf(o, b);
	json_decref(o);
	return rc;
}

static bool wanted(const struct audit_entry *e, const struct audit_query *q)
{
	return e->seq > q->after && (q->denied < 0 || e->refused == (q->denied == 1)) &&
	       (!q->pattern || audit_name_matches(q->pattern, e->strings));
}

int audit_query(const struct audit *a, const struct audit_query *q, struct sbx_buf *b)
{
	size_t oldest = (a->head + a->cap - a->n) % a->cap, skip = 0, matched = 0, written = 0;
	uint64_t last = q->after;
	int rc;

	/* With a limit, the newest entries that match: count, then skip the rest. */
	for (size_t i = 0; i < a->n; i++)
		matched += wanted(&a->ring[(oldest + i) % a->cap], q);
	if (q->limit && matched > q->limit)
		skip = matched - q->limit;
	if ((rc = sbx_buf_append_str(b, "{\"decisions\":[")))
		return rc;
	for (size_t i = 0; i < a->n; i++) {
		const struct audit_entry *e = &a->ring[(oldest + i) % a->cap];

		if (!wanted(e, q) || (skip && skip--))
			continue;
		if ((written++ && (rc = sbx_buf_append_str(b, ","))) || (rc = entry_json(e, b)))
			return rc;
		last = e->seq;
	}
	return sbx_buf_printf(b, "],\"next\":%llu,\"kept\":%zu}", (unsigned long long)last, a->n);
}

bool audit_pattern_valid(const char *pattern)
{
	char norm[NAME_SIZE];

	if (strcmp(pattern, "*") == 0)
		return true;
	if (strncmp(pattern, "*.", 2) == 0)
		pattern += 2;
	return !strchr(pattern, '*') && egress_name_normalize(pattern, norm, sizeof(norm));
}

bool audit_name_matches(const char *pattern, const char *name)
{
	char p[NAME_SIZE], n[NAME_SIZE];
	bool wildcard = strncmp(pattern, "*.", 2) == 0;
	size_t pl, nl;

	if (strcmp(pattern, "*") == 0)
		return true;
	if (!egress_name_normalize(pattern + (wildcard ? 2 : 0), p, sizeof(p)) ||
	    !egress_name_normalize(name, n, sizeof(n)))
		return false;
	if (!wildcard)
		return strcmp(p, n) == 0;
	pl = strlen(p);
	nl = strlen(n);
	return nl > pl + 1 && n[nl - pl - 1] == '.' && strcmp(n + nl - pl, p) == 0;
}
