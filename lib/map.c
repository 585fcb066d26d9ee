/* String-keyed hash map (see sbx/map.h). */
#include "sbx/map.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

struct sbx_map_entry {
	struct sbx_map_entry *next;
	uint64_t hash;
	void *value;
	char key[];
};

/* FNV-1a: keys are short names chosen by our own programs or the apiserver,
 * and the map is bounded, so a keyed hash buys nothing here. */
static uint64_t hash_key(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void sbx_map_init(struct sbx_map *m, size_t max_entries)
{
	m->buckets = NULL;
	m->n_buckets = 0;
	m->count = 0;
	m->max = max_entries;
}

void sbx_map_release(struct sbx_map *m)
{
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct sbx_map_entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			sbx_free(e);
		}
	}
	sbx_free(m->buckets);
	m->buckets = NULL;
	m->n_buckets = 0;
	m->count = 0;
}

static struct sbx_map_entry **find(const struct sbx_map *m, const char *key, uint64_t h)
{
	struct sbx_map_entry **p;

	if (!m->n_buckets)
		return NULL;
	for (p = &m->buckets[h & (m->n_buckets - 1)]; *p; p = &(*p)->next) {
		if ((*p)->hash == h && strcmp((*p)->key, key) == 0)
			return p;
	}
	return p;
}

void *sbx_map_get(const struct sbx_map *m, const char *key)
{
	struct sbx_map_entry **p = find(m, key, hash_key(key));

	return p && *p ? (*p)->value : NULL;
}

static int grow(struct sbx_map *m)
{
	size_t n = m->n_buckets ? m->n_buckets * 2 : 16;
	struct sbx_map_entry **b = sbx_calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct sbx_map_entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	sbx_free(m->buckets);
	m->buckets = b;
	m->n_buckets = n;
	return 0;
}

int sbx_map_put(struct sbx_map *m, const char *key, void *value, void **old)
{
	uint64_t h = hash_key(key);
	struct sbx_map_entry **p = find(m, key, h), *e;
	size_t len;
	int rc;

	if (p && *p) {
		if (old)
			*old = (*p)->value;
		(*p)->value = value;
		return 0;
	}
	if (old)
		*old = NULL;
	if (m->count >= m->max)
		return -E2BIG;
	if (m->count >= m->n_buckets && (rc = grow(m)))
		return rc;
	len = strlen(key);
	e = sbx_malloc(sizeof(*e) + len + 1);
	if (!e)
		return -ENOMEM;
	memcpy(e->key, key, len + 1);
	e->hash = h;
	e->value = value;
	e->next = m->buckets[h & (m->n_buckets - 1)];
	m->buckets[h & (m->n_buckets - 1)] = e;
	m->count++;
	return 0;
}

void *sbx_map_remove(struct sbx_map *m, const char *key)
{
	struct sbx_map_entry **p = find(m, key, hash_key(key)), *e;
	void *value;

	if (!p || !*p)
		return NULL;
	e = *p;
	*p = e->next;
	value = e->value;
	sbx_free(e);
	m->count--;
	return value;
}

void sbx_map_foreach(const struct sbx_map *m, void (*fn)(const char *key, void *value, void *arg),
		     void *arg)
{
	for (size_t i = 0; i < m->n_buckets; i++) {
		for (struct sbx_map_entry *e = m->buckets[i]; e; e = e->next)
			fn(e->key, e->value, arg);
	}
}

void *sbx_map_pop(struct sbx_map *m)
{
	for (size_t i = 0; m->count && i < m->n_buckets; i++) {
		struct sbx_map_entry *e = m->buckets[i];
		void *value;

		if (!e)
			continue;
		m->buckets[i] = e->next;
		value = e->value;
		sbx_free(e);
		m->count--;
		return value;
	}
	return NULL;
}
