/* A hash map from NUL-terminated string keys to pointers.
 *
 * Chained buckets, grown by doubling at load factor 1; the map copies keys
 * and never owns values. 'max' bounds the number of entries (sbx_map_put
 * returns -E2BIG past it) so input can never grow a map without limit.
 */
#ifndef SBX_MAP_H
#define SBX_MAP_H

#include <stddef.h>

struct sbx_map_entry;

struct sbx_map {
	struct sbx_map_entry **buckets;
	size_t n_buckets;
	size_t count;
	size_t max;
};

void sbx_map_init(struct sbx_map *m, size_t max_entries);
/* Frees the map's own memory; values are the caller's (free them first, e.g.
 * with sbx_map_foreach). */
void sbx_map_release(struct sbx_map *m);

void *sbx_map_get(const struct sbx_map *m, const char *key);
/* Inserts or replaces; *old (if not NULL) gets the replaced value or NULL.
 * 0, -E2BIG (full), -ENOMEM. */
int sbx_map_put(struct sbx_map *m, const char *key, void *value, void **old);
/* Removes the key; returns its value or NULL. */
void *sbx_map_remove(struct sbx_map *m, const char *key);
/* Removes some entry and returns its value; NULL when empty. For tearing a
 * map down: while ((v = sbx_map_pop(m))) destroy(v); */
void *sbx_map_pop(struct sbx_map *m);

/* Calls fn for every entry; fn may not change the map. Order is unspecified. */
void sbx_map_foreach(const struct sbx_map *m, void (*fn)(const char *key, void *value, void *arg),
		     void *arg);

#endif
