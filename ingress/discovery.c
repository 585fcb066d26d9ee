/* Routing from Sandbox objects (see discovery.h). */
#include "discovery.h"

#include "sbx/alloc.h"
#include "sbx/informer.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define LIST_PAGE 500

struct discovery {
	uv_loop_t *loop;
	struct sbx_kube *kube;
	struct sbx_informer **inf;
	size_t n_inf;
	size_t synced;		    /* informers that have listed once */
	struct ingress_table *work; /* changed in place; cloned to publish */
	uv_timer_t flush;
	bool dirty;
	discovery_publish publish;
	void *arg;
};

/* What routing needs of a Sandbox, nothing more: the cache stays small. */
static json_t *trim(json_t *obj, void *arg)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const json_t *st = json_object_get(obj, "status"), *e;
	json_t *out, *status, *ports, *conds;
	size_t i;

	(void)arg;
	status = json_pack("{s:O?, s:O?, s:O?}", "id", json_object_get(st, "id"), "podIP",
			   json_object_get(st, "podIP"), "phase", json_object_get(st, "phase"));
	ports = json_array();
	conds = json_array();
	json_array_foreach(json_object_get(st, "endpoints"), i, e) json_array_append_new(
		ports, json_pack("{s:O?}", "port", json_object_get(e, "port")));
	json_array_foreach(json_object_get(st, "conditions"), i, e)
	{
		if (!strcmp(sbx_json_str(e, "type") ?: "", "Ready"))
			json_array_append_new(conds,
					      json_pack("{s:s, s:O?}", "type", "Ready", "status",
							json_object_get(e, "status")));
	}
	json_object_set_new(status, "endpoints", ports);
	json_object_set_new(status, "conditions", conds);
	out = json_pack("{s:{s:O?, s:O?, s:O?}, s:o}", "metadata", "name",
			json_object_get(meta, "name"), "namespace",
			json_object_get(meta, "namespace"), "resourceVersion",
			json_object_get(meta, "resourceVersion"), "status", status);
	return out;
}

static void flush(uv_timer_t *t);

static void changed(struct discovery *d)
{
	d->dirty = true;
	/* The rest of this read's events first: one snapshot for the burst. */
	if (!uv_is_active((uv_handle_t *)&d->flush))
		uv_timer_start(&d->flush, flush, 0, 0);
}

static void put(struct discovery *d, const json_t *obj)
{
	struct ingress_sandbox_spec s;
	uint16_t ports[INGRESS_MAX_PORTS];
	int rc = ingress_sandbox_from_object(obj, &s, ports);

	if (rc == -ENOENT)
		return; /* no id yet: the operator has not seen it */
	if ((rc = ingress_table_put(d->work, &s))) {
		sbx_log_warn("Sandbox not routable", SBX_LS("namespace", s.ns),
			     SBX_LS("name", sbx_json_str(obj, "metadata.name")), SBX_LS("id", s.id),
			     SBX_LERR(rc));
		return;
	}
	changed(d);
}

static void drop(struct discovery *d, const json_t *obj)
{
	const char *id = sbx_json_str(obj, "status.id");

	if (id && ingress_table_get(d->work, id)) {
		ingress_table_remove(d->work, id);
		changed(d);
	}
}

static void on_add(json_t *obj, void *arg)
{
	put(arg, obj);
}

static void on_update(json_t *old_obj, json_t *new_obj, void *arg)
{
	const char *was = sbx_json_str(old_obj, "status.id");
	const char *now = sbx_json_str(new_obj, "status.id");

	if (was && (!now || strcmp(was, now) != 0))
		drop(arg, old_obj);
	put(arg, new_obj);
}

static void on_delete(json_t *obj, void *arg)
{
	drop(arg, obj);
}

static void on_synced(void *arg)
{
	struct discovery *d = arg;

	if (d->synced < d->n_inf)
		d->synced++;
	changed(d); /* even an empty list is a table */
}

static void flush(uv_timer_t *t)
{
	struct discovery *d = t->data;
	struct ingress_table *snap;

	if (!d->dirty || d->synced < d->n_inf)
		return; /* not before every namespace has listed: no 404s for a half table */
	if (!(snap = ingress_table_clone(d->work))) {
		uv_timer_start(&d->flush, flush, 100, 0); /* out of memory: try again */
		return;
	}
	d->dirty = false;
	d->publish(snap, d->arg);
	ingress_table_unref(snap);
}

int discovery_new(uv_loop_t *loop, struct sbx_kube *kube, const char *const *namespaces,
		  size_t n_namespaces, discovery_publish publish, void *arg, struct discovery **out)
{
	static const struct sbx_informer_handlers h = { on_add, on_update, on_delete, on_synced };
	struct discovery *d = sbx_calloc(1, sizeof(*d));
	size_t n = n_namespaces ? n_namespaces : 1;
	char path[512];
	int rc = 0;

	if (!d || !(d->inf = sbx_calloc(n, sizeof(*d->inf))) || !(d->work = ingress_table_new())) {
		discovery_free(d);
		return -ENOMEM;
	}
	d->loop = loop;
	d->kube = kube;
	d->publish = publish;
	d->arg = arg;
	uv_timer_init(loop, &d->flush);
	d->flush.data = d;
	for (size_t i = 0; i < n && !rc; i++) {
		sbx_kube_path(path, sizeof(path), "sbx.dev", "v1alpha1",
			      n_namespaces ? namespaces[i] : NULL, "sandboxes", NULL, NULL);
		rc = sbx_informer_new(kube,
				      &(struct sbx_informer_opts){ .path = path,
								   .trim = trim,
								   .compact = true,
								   .page_size = LIST_PAGE },
				      &h, d, &d->inf[i]);
		if (!rc)
			d->n_inf++;
	}
	if (rc) {
		discovery_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

int discovery_start(struct discovery *d)
{
	int rc;

	for (size_t i = 0; i < d->n_inf; i++)
		if ((rc = sbx_informer_start(d->inf[i])))
			return rc;
	return 0;
}

static void timer_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

void discovery_free(struct discovery *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_inf; i++)
		sbx_informer_free(d->inf[i]);
	sbx_free(d->inf);
	ingress_table_unref(d->work);
	if (d->loop)
		uv_close((uv_handle_t *)&d->flush, timer_closed);
	else
		sbx_free(d);
}

bool discovery_synced(const struct discovery *d)
{
	return d->synced >= d->n_inf;
}
