/* An informer: a local cache of one collection kept current by list + watch.
 *
 * It lists the collection (in pages), reports every object through on_add,
 * then watches from the list's resourceVersion and applies each event to the
 * cache before calling the handler. When the watch reports 410 Gone it lists
 * again and reports only the differences (adds, updates, deletes), so a
 * handler sees every change exactly as the cache does. Programs read the
 * cache (sbx_informer_get) instead of calling the apiserver on hot paths.
 */
#ifndef SBX_INFORMER_H
#define SBX_INFORMER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct sbx_kube;
struct sbx_informer;

struct sbx_informer_opts {
	const char *path; /* collection path, e.g. /api/v1/configmaps */
	const char *label_selector;
	const char *field_selector;
	unsigned page_size;	      /* (500) */
	size_t max_objects;	      /* cache bound (100000) */
	unsigned watch_timeout_s;     /* see sbx_watch_opts (300) */
	unsigned long backoff_max_ms; /* list and watch retry cap (30000) */
	/* What to cache of an object (NULL: all of it): a new reference to a
	 * smaller object, or NULL to keep obj as it is. It must keep
	 * metadata.name, namespace and resourceVersion. Handlers and
	 * sbx_informer_get see only what it kept; called with the handlers' arg. */
	json_t *(*trim)(json_t *obj, void *arg);
	/* Keep each object as compact JSON text, deflated against the text of
	 * the first object cached (objects of one kind share most of theirs):
	 * a tenth to a third of the memory of parsed objects. Each
	 * sbx_informer_get inflates and parses a new copy; for large caches
	 * read a few objects at a time. */
	bool compact;
};

/* Objects are borrowed for the call; keep a reference with json_incref. */
struct sbx_informer_handlers {
	void (*on_add)(json_t *obj, void *arg);
	void (*on_update)(json_t *old_obj, json_t *new_obj, void *arg);
	void (*on_delete)(json_t *obj, void *arg);
	/* After each complete list has been applied (the first: cache ready). */
	void (*on_synced)(void *arg);
};

int sbx_informer_new(struct sbx_kube *k, const struct sbx_informer_opts *opts,
		     const struct sbx_informer_handlers *h, void *arg, struct sbx_informer **out);
int sbx_informer_start(struct sbx_informer *inf);
void sbx_informer_free(struct sbx_informer *inf);

/* Cached object by namespace (NULL for cluster-scoped) and name: a new
 * reference (json_decref it), or NULL. With opts.compact each call parses a
 * new copy. */
json_t *sbx_informer_get(const struct sbx_informer *inf, const char *ns, const char *name);
size_t sbx_informer_count(const struct sbx_informer *inf);
/* Bytes the cached objects take in compact mode (0 otherwise). */
size_t sbx_informer_cache_bytes(const struct sbx_informer *inf);
bool sbx_informer_synced(const struct sbx_informer *inf);
/* Complete lists done so far (1 after start; more after 410s). */
unsigned long sbx_informer_lists(const struct sbx_informer *inf);
const char *sbx_informer_resource_version(const struct sbx_informer *inf);

/* "ns/name" or "name" for obj into out; -ENAMETOOLONG or -EINVAL. */
int sbx_informer_key(const json_t *obj, char *out, size_t size);

#endif
