/* Recent decisions and name patterns (see audit.h). */
#include "audit.h"

#include "policy.h"

#include "sbx/alloc.h"
#include "sbx/json.h"

#include <errno.h>
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
	sbx_free(e->name);
	sbx_free(e->json);
	*e = (struct audit_entry){ 0 };
}

void audit_release(struct audit *a)
{
	for (size_t i = 0; a->ring && i < a->cap; i++)
		entry_release(&a->ring[i]);
	sbx_free(a->ring);
	*a = (struct audit){ 0 };
}

uint64_t audit_add(struct audit *a, json_t *entry, const char *name, bool denied)
{
	struct audit_entry *e = &a->ring[a->head];
	char norm[NAME_SIZE];
	uint64_t seq = a->next_seq;
	char *json, *copy;

	if (!egress_name_normalize(name, norm, sizeof(norm)))
		snprintf(norm, sizeof(norm), "%s", name);
	if (json_object_set_new(entry, "seq", json_integer((json_int_t)seq)) ||
	    !(json = sbx_json_dumps(entry))) {
		a->dropped++;
		return 0;
	}
	if (!(copy = sbx_strdup(norm))) {
		sbx_free(json);
		a->dropped++;
		return 0;
	}
	entry_release(e);
	*e = (struct audit_entry){ .seq = seq, .denied = denied, .name = copy, .json = json };
	a->head = (a->head + 1) % a->cap;
	if (a->n < a->cap)
		a->n++;
	a->next_seq++;
	return seq;
}

static bool wanted(const struct audit_entry *e, const struct audit_query *q)
{
	return e->seq > q->after && (q->denied < 0 || e->denied == (q->denied == 1)) &&
	       (!q->pattern || audit_name_matches(q->pattern, e->name));
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
		if ((written++ && (rc = sbx_buf_append_str(b, ","))) ||
		    (rc = sbx_buf_append_str(b, e->json)))
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
