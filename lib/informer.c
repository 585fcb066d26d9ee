/* Informer (see sbx/informer.h). Owns its cache (a map of key -> json_t
 * reference, or -> struct packed with opts.compact), its watch and a retry
 * timer for failed lists.
 *
 * Compact mode keeps each object as its JSON text, deflated (raw deflate,
 * zlib) against a preset dictionary: the text of the first object the cache
 * stored. Objects of one kind share most of their text (keys, labels,
 * owner references, a NetworkPolicy's rules), so each compresses to the few
 * bytes in which it differs from that first one. The dictionary is fixed for
 * the informer's life, so every stored object can always be inflated. */
#include "sbx/informer.h"

#include "sbx/alloc.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/kube_watch.h"
#include "sbx/log.h"
#include "sbx/map.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>
#include <zlib.h>

#define KEY_MAX 512
/* Deflate's window (2^13 = 8 KiB) bounds how far back a match may reach, so
 * the dictionary is at most DICT_MAX bytes; memLevel 6 keeps each stream's
 * state near 64 KiB. */
#define WINDOW_BITS 13
#define MEM_LEVEL   6
#define DICT_MAX    6144

/* The compact cache's codec: one deflate and one inflate stream, reset per
 * object, and the dictionary (empty until the first object is stored). */
struct codec {
	z_stream def, inf;
	bool def_ready, inf_ready;
	unsigned char *dict;
	unsigned dict_len;
	unsigned char *scratch; /* deflate's output, grown as needed */
	size_t scratch_cap;
	size_t stored; /* bytes of the packed objects in the cache */
};

struct sbx_informer {
	struct sbx_kube *k;
	struct sbx_informer_opts opts;
	char *path, *label_selector, *field_selector;
	struct sbx_informer_handlers h;
	void *arg;
	struct sbx_map cache;
	struct sbx_map next; /* the list being gathered, page by page */
	struct sbx_watch *watch;
	struct sbx_kube_req *list_req; /* the page request in flight */
	uv_timer_t retry;
	char item_kind[128]; /* list items carry no kind/apiVersion; restore them */
	char item_api_version[128];
	char list_rv[64];
	unsigned failures;
	bool synced;
	bool listing;
	unsigned long lists;
	struct codec *z; /* compact mode */
};

/* A cached object in compact mode: its text (deflated when that is
 * smaller), and its resourceVersion so that a relist can compare without
 * inflating. */
struct packed {
	uint32_t len;  /* the text's length */
	uint32_t zlen; /* its bytes in data: deflated, or len when stored as is */
	char rv[];     /* the resourceVersion, NUL-terminated; then the text's bytes */
};

static const unsigned char *packed_data(const struct packed *p)
{
	return (const unsigned char *)p->rv + strlen(p->rv) + 1;
}

static size_t packed_size(const struct packed *p)
{
	return sizeof(*p) + strlen(p->rv) + 1 + p->zlen;
}

static void list_page(struct sbx_informer *inf, const char *cont);

/* ---- the cache's values ---------------------------------------------------- */

static void codec_free(struct codec *z)
{
	if (!z)
		return;
	if (z->def_ready)
		deflateEnd(&z->def);
	if (z->inf_ready)
		inflateEnd(&z->inf);
	sbx_free(z->dict);
	sbx_free(z->scratch);
	sbx_free(z);
}

/* Deflates text against the dictionary into z->scratch; returns the
 * compressed length, or 0 when it would not be smaller (or on failure: the
 * text is then stored as it is, which is never wrong). */
static size_t deflate_text(struct codec *z, const char *text, size_t len)
{
	size_t bound;

	if (!z->dict_len || len < 64 || len > UINT32_MAX)
		return 0;
	if (!z->def_ready) {
		if (deflateInit2(&z->def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -WINDOW_BITS,
				 MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
			return 0;
		z->def_ready = true;
	} else if (deflateReset(&z->def) != Z_OK) {
		return 0;
	}
	if (deflateSetDictionary(&z->def, z->dict, z->dict_len) != Z_OK)
		return 0;
	bound = deflateBound(&z->def, len);
	if (bound > z->scratch_cap) {
		unsigned char *p = sbx_realloc(z->scratch, bound);

		if (!p)
			return 0;
		z->scratch = p;
		z->scratch_cap = bound;
	}
	z->def.next_in = (unsigned char *)text;
	z->def.avail_in = (uInt)len;
	z->def.next_out = z->scratch;
	z->def.avail_out = (uInt)bound;
	if (deflate(&z->def, Z_FINISH) != Z_STREAM_END || z->def.total_out >= len)
		return 0;
	return z->def.total_out;
}

/* The text of a packed object, NUL-terminated, into a new buffer (sbx_free
 * it), or NULL. */
static char *inflate_text(struct codec *z, const struct packed *p)
{
	char *out = sbx_malloc((size_t)p->len + 1);
	int rc;

	if (!out)
		return NULL;
	if (p->zlen == p->len) {
		memcpy(out, packed_data(p), p->len);
		out[p->len] = '\0';
		return out;
	}
	if (!z->inf_ready) {
		if (inflateInit2(&z->inf, -WINDOW_BITS) != Z_OK)
			goto fail;
		z->inf_ready = true;
	} else if (inflateReset(&z->inf) != Z_OK) {
		goto fail;
	}
	/* A raw stream takes its dictionary before the first byte. */
	if (inflateSetDictionary(&z->inf, z->dict, z->dict_len) != Z_OK)
		goto fail;
	z->inf.next_in = (unsigned char *)packed_data(p);
	z->inf.avail_in = p->zlen;
	z->inf.next_out = (unsigned char *)out;
	z->inf.avail_out = p->len;
	rc = inflate(&z->inf, Z_FINISH);
	if (rc != Z_STREAM_END || z->inf.total_out != p->len)
		goto fail;
	out[p->len] = '\0';
	return out;
fail:
	sbx_free(out);
	return NULL;
}

/* What the cache stores for obj (a new reference, or a packed copy). */
static void *store(const struct sbx_informer *inf, json_t *obj)
{
	const char *rv = sbx_json_str(obj, "metadata.resourceVersion");
	struct codec *z = inf->z;
	struct packed *p;
	char *text;
	size_t len, zlen, rv_len;

	if (!inf->opts.compact)
		return json_incref(obj);
	if (!rv)
		rv = "";
	if ((rv_len = strlen(rv)) > 64)
		return NULL; /* resourceVersions are short; this one is not one */
	if (!(text = json_dumps(obj, JSON_COMPACT)))
		return NULL;
	len = strlen(text);
	if (len > UINT32_MAX) {
		free(text);
		return NULL;
	}
	if (!z->dict_len && len >= 64) {
		/* The first object's text becomes the dictionary. */
		size_t n = len < DICT_MAX ? len : DICT_MAX;

		if ((z->dict = sbx_malloc(n))) {
			memcpy(z->dict, text, n);
			z->dict_len = (unsigned)n;
		}
	}
	zlen = deflate_text(z, text, len);
	if ((p = sbx_malloc(sizeof(*p) + rv_len + 1 + (zlen ? zlen : len)))) {
		p->len = (uint32_t)len;
		p->zlen = (uint32_t)(zlen ? zlen : len);
		memcpy(p->rv, rv, rv_len + 1);
		memcpy((unsigned char *)p->rv + rv_len + 1,
		       zlen ? (const void *)z->scratch : (const void *)text, p->zlen);
		z->stored += packed_size(p);
	}
	free(text);
	return p;
}

/* A new reference to the object a cache value holds. */
static json_t *load(const struct sbx_informer *inf, void *value)
{
	const struct packed *p = value;
	json_t *obj;
	char *text;

	if (!value)
		return NULL;
	if (!inf->opts.compact)
		return json_incref(value);
	if (!(text = inflate_text(inf->z, p))) {
		sbx_log_error("informer could not inflate a cached object",
			      SBX_LS("path", inf->path), SBX_LS("resourceVersion", p->rv));
		return NULL;
	}
	obj = json_loadb(text, p->len, 0, NULL);
	sbx_free(text);
	return obj;
}

static const char *stored_rv(const struct sbx_informer *inf, void *value)
{
	const char *rv;

	if (inf->opts.compact)
		return ((const struct packed *)value)->rv;
	rv = sbx_json_str(value, "metadata.resourceVersion");
	return rv ? rv : "";
}

static void drop_stored(const struct sbx_informer *inf, void *value)
{
	if (inf->opts.compact) {
		inf->z->stored -= packed_size(value);
		sbx_free(value);
	} else {
		json_decref(value);
	}
}

int sbx_informer_key(const json_t *obj, char *out, size_t size)
{
	const char *ns = sbx_json_str(obj, "metadata.namespace");
	const char *name = sbx_json_str(obj, "metadata.name");
	int n;

	if (!name || !*name)
		return -EINVAL;
	n = ns && *ns ? snprintf(out, size, "%s/%s", ns, name) : snprintf(out, size, "%s", name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static const char *rv_of(const json_t *obj)
{
	const char *rv = sbx_json_str(obj, "metadata.resourceVersion");

	return rv ? rv : "";
}

/* ---- applying changes --------------------------------------------------- */

/* A new reference to what the cache keeps of obj: the trim's object, or obj. */
static json_t *keep(struct sbx_informer *inf, json_t *obj)
{
	json_t *kept = inf->opts.trim ? inf->opts.trim(obj, inf->arg) : NULL;

	return kept ? kept : json_incref(obj);
}

static void apply_upsert(struct sbx_informer *inf, json_t *obj)
{
	char key[KEY_MAX];
	void *value, *old = NULL;
	int rc = -ENOMEM;

	if (sbx_informer_key(obj, key, sizeof(key)))
		return;
	value = store(inf, obj);
	if (!value || (rc = sbx_map_put(&inf->cache, key, value, &old))) {
		/* Losing an object silently would break every controller above us. */
		sbx_log_error("informer cache full; object not cached", SBX_LS("path", inf->path),
			      SBX_LS("key", key),
			      SBX_LI("max_objects", (long long)inf->opts.max_objects),
			      SBX_LERR(rc));
		if (value)
			drop_stored(inf, value);
		return;
	}
	if (old && inf->h.on_update) {
		json_t *was = load(inf, old);

		inf->h.on_update(was, obj, inf->arg);
		json_decref(was);
	} else if (!old && inf->h.on_add) {
		inf->h.on_add(obj, inf->arg);
	}
	if (old)
		drop_stored(inf, old);
}

static void apply_delete(struct sbx_informer *inf, json_t *obj)
{
	char key[KEY_MAX];
	json_t *old;

	if (sbx_informer_key(obj, key, sizeof(key)))
		return;
	old = sbx_map_remove(&inf->cache, key);
	/* Report the final state the server sent, which is newer than ours. */
	if (inf->h.on_delete)
		inf->h.on_delete(obj, inf->arg);
	if (old)
		drop_stored(inf, old);
}

static void on_watch_event(enum sbx_watch_type t, json_t *obj, void *arg)
{
	struct sbx_informer *inf = arg;

	if (t == SBX_WATCH_DELETED) {
		apply_delete(inf, obj);
	} else {
		obj = keep(inf, obj);
		apply_upsert(inf, obj);
		json_decref(obj);
	}
}

static void on_watch_gone(void *arg)
{
	struct sbx_informer *inf = arg;

	list_page(inf, NULL);
}

/* ---- relist ------------------------------------------------------------- */

struct diff {
	struct sbx_informer *inf;
	void **gone; /* cached values missing from the new list */
	size_t n_gone;
};

static void collect_gone(const char *key, void *value, void *arg)
{
	struct diff *d = arg;

	if (!sbx_map_get(&d->inf->next, key))
		d->gone[d->n_gone++] = value;
}

static void collect_all(const char *key, void *value, void *arg)
{
	json_t ***out = arg;

	(void)key;
	*(*out)++ = value;
}

/* Makes the gathered list the cache and reports the differences. */
static void finish_list(struct sbx_informer *inf)
{
	struct diff d = { .inf = inf };
	json_t **fresh, **p;
	size_t n_fresh = inf->next.count;

	d.gone = sbx_calloc(inf->cache.count + 1, sizeof(*d.gone));
	fresh = sbx_calloc(n_fresh + 1, sizeof(*fresh));
	if (!d.gone || !fresh) {
		sbx_free(d.gone);
		sbx_free(fresh);
		sbx_log_error("informer out of memory applying a list", SBX_LS("path", inf->path));
		return;
	}
	sbx_map_foreach(&inf->cache, collect_gone, &d);
	p = fresh;
	sbx_map_foreach(&inf->next, collect_all, &p);
	sbx_map_release(&inf->next);
	sbx_map_init(&inf->next, inf->opts.max_objects);
	for (size_t i = 0; i < d.n_gone; i++) {
		json_t *obj = load(inf, d.gone[i]);

		if (obj)
			apply_delete(inf, obj);
		json_decref(obj);
	}
	for (size_t i = 0; i < n_fresh; i++) {
		char key[KEY_MAX];
		void *old = NULL;

		if (!sbx_informer_key(fresh[i], key, sizeof(key)))
			old = sbx_map_get(&inf->cache, key);
		/* Unchanged objects are not reported again. */
		if (!old || strcmp(stored_rv(inf, old), rv_of(fresh[i])) != 0)
			apply_upsert(inf, fresh[i]);
		json_decref(fresh[i]);
	}
	sbx_free(d.gone);
	sbx_free(fresh);
	inf->lists++;
	inf->synced = true;
	inf->listing = false;
	inf->failures = 0;
	sbx_log_debug("informer synced", SBX_LS("path", inf->path),
		      SBX_LI("objects", (long long)inf->cache.count),
		      SBX_LS("resourceVersion", inf->list_rv));
	if (inf->h.on_synced)
		inf->h.on_synced(inf->arg);
	sbx_watch_start(inf->watch, inf->list_rv);
}

static void on_retry(uv_timer_t *t)
{
	list_page(t->data, NULL);
}

static void drop_next(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	json_decref(value);
}

static void list_failed(struct sbx_informer *inf, const struct sbx_kube_response *r)
{
	uint64_t delay = 500;

	for (unsigned i = 0; i < inf->failures && delay < inf->opts.backoff_max_ms; i++)
		delay *= 2;
	if (delay > inf->opts.backoff_max_ms)
		delay = inf->opts.backoff_max_ms;
	inf->failures++;
	sbx_map_foreach(&inf->next, drop_next, NULL);
	sbx_map_release(&inf->next);
	sbx_map_init(&inf->next, inf->opts.max_objects);
	sbx_log_warn("list failed; retrying", SBX_LS("path", inf->path),
		     SBX_LI("status", r->status), SBX_LS("reason", sbx_kube_status_message(r)),
		     SBX_LI("retry_ms", (long long)delay));
	uv_timer_start(&inf->retry, on_retry, delay, 0);
}

static void set_item_type(struct sbx_informer *inf, const json_t *list)
{
	const char *kind = sbx_json_str(list, "kind");
	const char *av = sbx_json_str(list, "apiVersion");
	size_t n;

	if (kind && (n = strlen(kind)) > 4 && strcmp(kind + n - 4, "List") == 0)
		snprintf(inf->item_kind, sizeof(inf->item_kind), "%.*s", (int)(n - 4), kind);
	if (av)
		snprintf(inf->item_api_version, sizeof(inf->item_api_version), "%s", av);
}

static void on_list(const struct sbx_kube_response *r, void *arg)
{
	struct sbx_informer *inf = arg;
	const char *rv, *cont;
	json_t *items, *it;
	char key[KEY_MAX];
	size_t i;

	inf->list_req = NULL;
	items = r->body ? json_object_get(r->body, "items") : NULL;
	if (r->rc || r->status != 200 || !json_is_array(items)) {
		list_failed(inf, r);
		return;
	}
	set_item_type(inf, r->body);
	json_array_foreach(items, i, it)
	{
		if (inf->item_kind[0] && !json_object_get(it, "kind"))
			json_object_set_new(it, "kind", json_string(inf->item_kind));
		if (inf->item_api_version[0] && !json_object_get(it, "apiVersion"))
			json_object_set_new(it, "apiVersion", json_string(inf->item_api_version));
		if (sbx_informer_key(it, key, sizeof(key)))
			continue;
		it = keep(inf, it);
		if (sbx_map_put(&inf->next, key, it, NULL)) {
			json_decref(it);
			sbx_log_error("informer cache full; object not cached",
				      SBX_LS("path", inf->path), SBX_LS("key", key));
		}
	}
	rv = sbx_json_str(r->body, "metadata.resourceVersion");
	cont = sbx_json_str(r->body, "metadata.continue");
	snprintf(inf->list_rv, sizeof(inf->list_rv), "%s", rv ? rv : "");
	if (cont && *cont)
		list_page(inf, cont);
	else
		finish_list(inf);
}

static void list_page(struct sbx_informer *inf, const char *cont)
{
	char path[8192];
	char *c = NULL, *ls = NULL, *fs = NULL;
	int n, rc;

	if (!cont)
		sbx_watch_stop(inf->watch);
	inf->listing = true;
	if (cont)
		c = curl_easy_escape(NULL, cont, 0);
	if (inf->label_selector)
		ls = curl_easy_escape(NULL, inf->label_selector, 0);
	if (inf->field_selector)
		fs = curl_easy_escape(NULL, inf->field_selector, 0);
	n = snprintf(path, sizeof(path), "%s?limit=%u%s%s%s%s%s%s", inf->path, inf->opts.page_size,
		     c ? "&continue=" : "", c ? c : "", ls ? "&labelSelector=" : "", ls ? ls : "",
		     fs ? "&fieldSelector=" : "", fs ? fs : "");
	curl_free(c);
	curl_free(ls);
	curl_free(fs);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		sbx_log_error("list path too long", SBX_LS("path", inf->path));
		return;
	}
	rc = sbx_kube_request(inf->k, "GET", path, NULL, NULL, 0, on_list, inf, &inf->list_req);
	if (rc) {
		struct sbx_kube_response r = { .rc = rc, .error = sbx_strerror(rc) };

		list_failed(inf, &r);
	}
}

/* ---- lifecycle ---------------------------------------------------------- */

int sbx_informer_new(struct sbx_kube *k, const struct sbx_informer_opts *opts,
		     const struct sbx_informer_handlers *h, void *arg, struct sbx_informer **out)
{
	struct sbx_informer *inf = sbx_calloc(1, sizeof(*inf));
	struct sbx_watch_handlers wh = { .on_event = on_watch_event, .on_gone = on_watch_gone };
	struct sbx_watch_opts wo = { 0 };
	int rc = -ENOMEM;

	if (!inf)
		return -ENOMEM;
	inf->k = k;
	inf->opts = *opts;
	if (!inf->opts.page_size)
		inf->opts.page_size = 500;
	if (!inf->opts.max_objects)
		inf->opts.max_objects = 100000;
	if (!inf->opts.backoff_max_ms)
		inf->opts.backoff_max_ms = 30000;
	inf->h = *h;
	inf->arg = arg;
	if (inf->opts.compact && !(inf->z = sbx_calloc(1, sizeof(*inf->z)))) {
		sbx_free(inf);
		return -ENOMEM;
	}
	sbx_map_init(&inf->cache, inf->opts.max_objects);
	sbx_map_init(&inf->next, inf->opts.max_objects);
	if (!(inf->path = sbx_strdup(opts->path)) ||
	    (opts->label_selector && !(inf->label_selector = sbx_strdup(opts->label_selector))) ||
	    (opts->field_selector && !(inf->field_selector = sbx_strdup(opts->field_selector))))
		goto out_free;
	wo.path = inf->path;
	wo.label_selector = inf->label_selector;
	wo.field_selector = inf->field_selector;
	wo.timeout_s = opts->watch_timeout_s;
	wo.backoff_max_ms = inf->opts.backoff_max_ms;
	if ((rc = sbx_watch_new(k, &wo, &wh, inf, &inf->watch)))
		goto out_free;
	uv_timer_init(sbx_kube_loop(k), &inf->retry);
	inf->retry.data = inf;
	*out = inf;
	return 0;
out_free:
	sbx_free(inf->path);
	sbx_free(inf->label_selector);
	sbx_free(inf->field_selector);
	codec_free(inf->z);
	sbx_free(inf);
	return rc;
}

int sbx_informer_start(struct sbx_informer *inf)
{
	list_page(inf, NULL);
	return 0;
}

static void drop_cached(const char *key, void *value, void *arg)
{
	(void)key;
	drop_stored(arg, value);
}

static void on_informer_closed(uv_handle_t *h)
{
	struct sbx_informer *inf = h->data;

	sbx_map_foreach(&inf->cache, drop_cached, inf);
	sbx_map_release(&inf->cache);
	sbx_map_foreach(&inf->next, drop_next, NULL);
	sbx_map_release(&inf->next);
	sbx_free(inf->path);
	sbx_free(inf->label_selector);
	sbx_free(inf->field_selector);
	codec_free(inf->z);
	sbx_free(inf);
}

void sbx_informer_free(struct sbx_informer *inf)
{
	if (!inf)
		return;
	sbx_watch_free(inf->watch);
	inf->watch = NULL;
	uv_timer_stop(&inf->retry);
	sbx_kube_cancel(inf->list_req);
	inf->list_req = NULL;
	uv_close((uv_handle_t *)&inf->retry, on_informer_closed);
}

json_t *sbx_informer_get(const struct sbx_informer *inf, const char *ns, const char *name)
{
	char key[KEY_MAX];
	int n = ns && *ns ? snprintf(key, sizeof(key), "%s/%s", ns, name)
			  : snprintf(key, sizeof(key), "%s", name);

	if (n < 0 || (size_t)n >= sizeof(key))
		return NULL;
	return load(inf, sbx_map_get(&inf->cache, key));
}

size_t sbx_informer_cache_bytes(const struct sbx_informer *inf)
{
	return inf->opts.compact ? inf->z->stored : 0;
}

size_t sbx_informer_count(const struct sbx_informer *inf)
{
	return inf->cache.count;
}

bool sbx_informer_synced(const struct sbx_informer *inf)
{
	return inf->synced;
}

unsigned long sbx_informer_lists(const struct sbx_informer *inf)
{
	return inf->lists;
}

const char *sbx_informer_resource_version(const struct sbx_informer *inf)
{
	return sbx_watch_resource_version(inf->watch);
}
