/* The reconciler (reconcile.h): informers, the work queue, and one pass per
 * Sandbox key, made of asynchronous steps: the Service, the NetworkPolicy,
 * the Pod, then the status. */
#include "reconcile.h"

#include "sbx/alloc.h"
#include "sbx/informer.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/log.h"
#include "sbx/map.h"
#include "sbx/workqueue.h"

#include "egress_probe.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define COMPONENT "sbx-operator" /* the source of its Events */
/* Objects per list page: the transient peak of a (re)list is a page parsed
 * in full, managedFields and all, per informer. */
#define LIST_PAGE 100

/* In the order a pass writes them: the pod last, after the ConfigMap it mounts. */
enum child_kind { CHILD_SERVICE, CHILD_POLICY, CHILD_CONFIG, CHILD_POD, CHILD_COUNT };

static const struct child_type {
	const char *group, *version, *resource, *kind;
} child_types[CHILD_COUNT] = {
	[CHILD_SERVICE] = { "", "v1", "services", "Service" },
	[CHILD_POLICY] = { "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy" },
	[CHILD_CONFIG] = { "", "v1", "configmaps", "ConfigMap" },
	[CHILD_POD] = { "", "v1", "pods", "Pod" },
};

/* One child request of a pass: what its callback needs to know. */
struct child_op {
	struct pass *p;
	enum child_kind kind;
};

/* One pass over one Sandbox: lives from process() to sbx_workqueue_done. */
struct pass {
	struct reconciler *r;
	struct pass *prev, *next; /* in flight, so shutdown can free it */
	char *key;
	char ns[64], name[254], id[64];
	json_t *sandbox; /* a reference to the cached object */
	int stage;	 /* 0: Service, NetworkPolicy, ConfigMap; 1: Pod; 2: status */
	int inflight;	 /* child requests of this stage not answered yet */
	bool recreate;	 /* the pod was deleted to be made anew (422) */
	struct child_op ops[CHILD_COUNT];
	json_t *written; /* the status being written, for its Event */
	char now[32];
	bool expired;	      /* past its expiry, kept (expiryPolicy Retain) */
	const char *conflict; /* a child kind we may not touch, for the status */
	const char *invalid;  /* why a child cannot be built from the spec */
	json_t *made_pod;     /* the pod this pass created (the cache has not seen it yet) */
	int rc;		      /* what the pass ends with once its status is written */
	char failed[512];     /* why a child could not be written, for the status */
	uint64_t start_us;
};

/* The informers of one watched namespace ("" for all of them). */
struct scope {
	char ns[64];
	struct sbx_informer *sandboxes;
	struct sbx_informer *children[CHILD_COUNT];
};

struct reconciler {
	uv_loop_t *loop;
	struct sbx_kube *kube;
	const struct sandbox_settings *settings;
	struct scope *scopes;
	size_t n_scopes;
	struct sbx_workqueue *queue;
	struct egress_probe *probe;
	struct pass *passes;
	unsigned synced;
	bool stopped;
	struct reconciler_stats stats;
	/* "ns/name" -> the resourceVersion a status write of ours was based on,
	 * until the cache shows the Sandbox past it: a pass on the stale copy
	 * would write the same status again and get a 409. */
	struct sbx_map written;
	/* Each cached Sandbox's phase ("ns/name" -> index + 1), and the counts. */
	struct sbx_map phases;
	size_t phase_counts[RECONCILER_PHASES];
};

const double reconciler_bucket_bounds[RECONCILER_BUCKETS] = { 0.001, 0.0025, 0.005, 0.01, 0.025,
							      0.05,  0.1,    0.5,   2.5 };
const char *const reconciler_phase_names[RECONCILER_PHASES] = { "Pending", "Running", "Paused",
								"Expired", "Failed",  "" };

static void write_status(struct pass *p);
static void post_event(struct pass *p, const json_t *old_status, const json_t *status,
		       const char *now);

/* The scope that watches namespace ns, or NULL when none does. */
static struct scope *scope_of(const struct reconciler *r, const char *ns)
{
	for (size_t i = 0; i < r->n_scopes; i++)
		if (!r->scopes[i].ns[0] || strcmp(r->scopes[i].ns, ns) == 0)
			return &r->scopes[i];
	return NULL;
}

/* A new reference to the cached Sandbox (kind -1) or child, or NULL. */
static json_t *cached(const struct reconciler *r, int kind, const char *ns, const char *name)
{
	struct scope *sc = scope_of(r, ns);

	if (!sc)
		return NULL;
	return sbx_informer_get(kind < 0 ? sc->sandboxes : sc->children[kind], ns, name);
}

static uint64_t now_us(void)
{
	return uv_hrtime() / 1000;
}

/* -- queueing ------------------------------------------------------------- */

static void enqueue_obj(struct reconciler *r, const json_t *sandbox)
{
	char key[320];

	if (sbx_informer_key(sandbox, key, sizeof(key)) == 0)
		sbx_workqueue_add(r->queue, key);
}

/* Counts Sandboxes by phase as the cache changes (a walk of a large compact
 * cache at every scrape would parse every object). */
static void track_phase(struct reconciler *r, const json_t *sandbox, bool gone)
{
	const char *phase = sbx_json_str(sandbox, "status.phase") ?: "";
	uintptr_t i, old;
	char key[320];

	if (sbx_informer_key(sandbox, key, sizeof(key)))
		return;
	if (gone) {
		old = (uintptr_t)sbx_map_remove(&r->phases, key);
	} else {
		void *was = NULL;

		for (i = 0; i < RECONCILER_PHASES - 1; i++)
			if (strcmp(phase, reconciler_phase_names[i]) == 0)
				break;
		if (sbx_map_put(&r->phases, key, (void *)(i + 1), &was))
			return;
		r->phase_counts[i]++;
		old = (uintptr_t)was;
	}
	if (old)
		r->phase_counts[old - 1]--;
}

static void on_sandbox_add(json_t *obj, void *arg)
{
	track_phase(arg, obj, false);
	enqueue_obj(arg, obj);
}

/* The cache has moved past a status write of ours (or the Sandbox is gone). */
static void forget_written(struct reconciler *r, const json_t *sandbox)
{
	char key[320];

	if (r->written.count && sbx_informer_key(sandbox, key, sizeof(key)) == 0)
		sbx_free(sbx_map_remove(&r->written, key));
}

static void on_sandbox_update(json_t *old_obj, json_t *new_obj, void *arg)
{
	(void)old_obj;
	forget_written(arg, new_obj);
	track_phase(arg, new_obj, false);
	enqueue_obj(arg, new_obj);
}

static void on_sandbox_delete(json_t *obj, void *arg)
{
	forget_written(arg, obj);
	track_phase(arg, obj, true);
}

/* A child changed: its Sandbox (named by the label) gets a pass. */
static void enqueue_owner(struct reconciler *r, const json_t *child)
{
	const char *ns = sbx_json_str(child, "metadata.namespace");
	const json_t *labels = json_object_get(json_object_get(child, "metadata"), "labels");
	const char *name = json_string_value(json_object_get(labels, SANDBOX_LABEL));
	char key[320];

	if (!ns || !name || (size_t)snprintf(key, sizeof(key), "%s/%s", ns, name) >= sizeof(key))
		return;
	sbx_workqueue_add(r->queue, key);
}

static void on_child_add(json_t *obj, void *arg)
{
	enqueue_owner(arg, obj);
}

static void on_child_update(json_t *old_obj, json_t *new_obj, void *arg)
{
	(void)old_obj;
	enqueue_owner(arg, new_obj);
}

static void on_synced(void *arg)
{
	struct reconciler *r = arg;

	if (++r->synced == r->n_scopes * (1 + CHILD_COUNT))
		sbx_log_info("caches synced",
			     SBX_LI("sandboxes", (long long)reconciler_sandboxes(r)));
}

bool reconciler_synced(const struct reconciler *r)
{
	if (r->stopped)
		return false;
	for (size_t i = 0; i < r->n_scopes; i++) {
		const struct scope *sc = &r->scopes[i];

		if (!sc->sandboxes || !sbx_informer_synced(sc->sandboxes))
			return false;
		for (int k = 0; k < CHILD_COUNT; k++)
			if (!sc->children[k] || !sbx_informer_synced(sc->children[k]))
				return false;
	}
	return true;
}

/* -- what the caches keep ---------------------------------------------------- */

/* Copies from's fields named in keys (NULL-terminated) into a new object. */
static json_t *pick(const json_t *from, const char *const *keys)
{
	json_t *out = json_object(), *v;

	for (; *keys; keys++)
		if ((v = json_object_get(from, *keys)))
			json_object_set(out, *keys, v);
	return out;
}

/* A child's metadata as the passes use it: identity, labels, the hash
 * annotations and the controller reference. No managedFields (most of a
 * server-side-applied object's size). */
static json_t *child_meta(const json_t *meta)
{
	static const char *const keys[] = {
		"name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "labels", NULL
	};
	json_t *out = pick(meta, keys), *ann = json_object_get(meta, "annotations"), *v;
	json_t *refs = json_array(), *ref;
	size_t i;

	if (ann) {
		json_t *a = json_object();

		if ((v = json_object_get(ann, SANDBOX_HASH_ANNOTATION)))
			json_object_set(a, SANDBOX_HASH_ANNOTATION, v);
		if ((v = json_object_get(ann, SANDBOX_POLICY_HASH_ANNOTATION)))
			json_object_set(a, SANDBOX_POLICY_HASH_ANNOTATION, v);
		json_object_set_new(out, "annotations", a);
	}
	json_array_foreach(json_object_get(meta, "ownerReferences"), i, ref)
	{
		static const char *const rkeys[] = { "uid", "controller", "kind", "name", NULL };

		json_array_append_new(refs, pick(ref, rkeys));
	}
	json_object_set_new(out, "ownerReferences", refs);
	return out;
}

/* A pod's container statuses: name, state (waiting/terminated reasons),
 * readiness, and whether it started (the egress sidecar's startup probe). */
static json_t *container_states(const json_t *list)
{
	static const char *const keys[] = { "name", "state", "ready", "started", NULL };
	json_t *out = json_array(), *c;
	size_t i;

	json_array_foreach(list, i, c) json_array_append_new(out, pick(c, keys));
	return out;
}

static json_t *trim_child(json_t *obj, void *arg)
{
	static const char *const top[] = { "apiVersion", "kind", NULL };
	json_t *out = pick(obj, top), *st = json_object_get(obj, "status");

	(void)arg;
	json_object_set_new(out, "metadata", child_meta(json_object_get(obj, "metadata")));
	/* What the drift check compares (sandbox_child_drifted): a Service's
	 * type, selector and ports, a NetworkPolicy's spec, a ConfigMap's data. */
	if (strcmp(sbx_json_str(obj, "kind") ?: "", "Service") == 0) {
		static const char *const keys[] = { "type", "selector", "ports", NULL };

		json_object_set_new(out, "spec", pick(json_object_get(obj, "spec"), keys));
	} else if (strcmp(sbx_json_str(obj, "kind") ?: "", "NetworkPolicy") == 0) {
		json_object_set(out, "spec", json_object_get(obj, "spec"));
	} else if (json_object_get(obj, "data")) {
		json_object_set(out, "data", json_object_get(obj, "data"));
	}
	if (st && strcmp(sbx_json_str(obj, "kind") ?: "", "Pod") == 0) {
		static const char *const skeys[] = { "phase", "podIP", "conditions", NULL };
		json_t *s = pick(st, skeys);

		if (json_object_get(st, "initContainerStatuses"))
			json_object_set_new(
				s, "initContainerStatuses",
				container_states(json_object_get(st, "initContainerStatuses")));
		if (json_object_get(st, "containerStatuses"))
			json_object_set_new(
				s, "containerStatuses",
				container_states(json_object_get(st, "containerStatuses")));
		json_object_set_new(out, "status", s);
	}
	return out;
}

/* A Sandbox without what the operator never reads: managedFields and kubectl's
 * copy of the last applied object. */
static json_t *trim_sandbox(json_t *obj, void *arg)
{
	json_t *meta = json_object_get(obj, "metadata");
	json_t *out, *ann;

	(void)arg;
	if (!json_object_get(meta, "managedFields") &&
	    !json_object_get(json_object_get(meta, "annotations"),
			     "kubectl.kubernetes.io/last-applied-configuration"))
		return NULL;
	out = json_copy(obj);
	meta = json_copy(meta);
	json_object_del(meta, "managedFields");
	if ((ann = json_object_get(meta, "annotations"))) {
		ann = json_copy(ann);
		json_object_del(ann, "kubectl.kubernetes.io/last-applied-configuration");
		json_object_set_new(meta, "annotations", ann);
	}
	json_object_set_new(out, "metadata", meta);
	return out;
}

/* -- one pass --------------------------------------------------------------- */

static void pass_end(struct pass *p, int rc)
{
	struct reconciler *r = p->r;
	uint64_t took = now_us() - p->start_us;

	r->stats.passes++;
	r->stats.pass_us_total += took;
	for (int i = 0; i < RECONCILER_BUCKETS; i++)
		if ((double)took <= reconciler_bucket_bounds[i] * 1e6)
			r->stats.pass_buckets[i]++;
	if (rc < 0)
		r->stats.failures++;
	if (p->prev)
		p->prev->next = p->next;
	else
		r->passes = p->next;
	if (p->next)
		p->next->prev = p->prev;
	sbx_workqueue_done(r->queue, p->key, rc);
	json_decref(p->made_pod);
	json_decref(p->written);
	json_decref(p->sandbox);
	sbx_free(p->key);
	sbx_free(p);
}

static void child_path(struct pass *p, enum child_kind k, char *out, size_t size)
{
	const struct child_type *t = &child_types[k];

	sbx_kube_path(out, size, t->group, t->version, p->ns, t->resource, p->name, NULL);
}

static void log_failure(struct pass *p, const char *what, const struct sbx_kube_response *res)
{
	sbx_log_warn(what, SBX_LS("sandbox", p->key), SBX_LI("status", res->status),
		     SBX_LS("error", sbx_kube_status_message(res)));
}

static void next_stage(struct pass *p);

/* A child request is answered: the stage goes on when it was the last. */
static void op_done(struct child_op *op)
{
	struct pass *p = op->p;

	if (--p->inflight == 0)
		next_stage(p);
}

/* Records why a child could not be written: told in the status (and an
 * Event) once the stage ends, then the pass is retried with backoff. */
static void child_failed(struct pass *p, enum child_kind kind, const struct sbx_kube_response *res)
{
	log_failure(p, "cannot write a child", res);
	if (!p->failed[0])
		snprintf(p->failed, sizeof(p->failed), "cannot write the %s: %s",
			 child_types[kind].kind, sbx_kube_status_message(res));
	p->rc = res->status == 409 ? -EAGAIN : -EIO;
}

static void on_child_written(const struct sbx_kube_response *res, void *arg)
{
	struct child_op *op = arg;
	struct pass *p = op->p;

	/* 404: deleted already (or by someone else); the cache catches up. */
	if (res->rc || (res->status / 100 != 2 && res->status != 404)) {
		/* A Pod field that cannot change in place: delete, the next pass recreates. */
		if (op->kind == CHILD_POD && res->status == 422 && !p->recreate) {
			char path[512];

			sbx_log_info("pod spec changed in an immutable field; recreating",
				     SBX_LS("sandbox", p->key));
			child_path(p, CHILD_POD, path, sizeof(path));
			p->r->stats.deletes++;
			p->recreate = true;
			if (sbx_kube_delete(p->r->kube, path, "Background", on_child_written, op) ==
			    0)
				return;
		}
		child_failed(p, op->kind, res);
		op_done(op);
		return;
	}
	if (res->status / 100 == 2)
		p->r->stats.writes++;
	/* The status this pass writes describes the pod just made, so the pass
	 * its informer event brings finds nothing new to write. */
	if (op->kind == CHILD_POD && res->status == 201 && json_is_object(res->body))
		p->made_pod = json_incref(res->body);
	op_done(op);
}

static void on_existing_child(const struct sbx_kube_response *res, void *arg)
{
	struct child_op *op = arg;
	struct pass *p = op->p;

	if (res->rc || res->status / 100 != 2) {
		child_failed(p, op->kind, res);
	} else if (!sandbox_child_owned(res->body, sbx_json_str(p->sandbox, "metadata.uid"))) {
		/* Not ours: never touched. (Ours, made by an earlier pass the
		 * cache has not caught up with: its informer event brings the
		 * next pass.) */
		p->conflict = child_types[op->kind].kind;
	}
	op_done(op);
}

static void on_child_created(const struct sbx_kube_response *res, void *arg)
{
	struct child_op *op = arg;
	char path[512];

	if (res->rc == 0 && res->status == 409) {
		child_path(op->p, op->kind, path, sizeof(path));
		if (sbx_kube_get(op->p->r->kube, path, on_existing_child, op) == 0)
			return;
	}
	on_child_written(res, arg);
}

static void on_status_written(const struct sbx_kube_response *res, void *arg)
{
	struct pass *p = arg;

	char *rv;

	if (res->rc || res->status / 100 != 2) {
		/* 409: the Sandbox changed since the cache saw it; its update brings a new pass. */
		if (res->status == 409)
			p->r->stats.conflicts++;
		else
			log_failure(p, "cannot write the status", res);
		pass_end(p, res->status == 409 ? p->rc : -EIO);
		return;
	}
	p->r->stats.status_writes++;
	/* Until the cache shows this write, passes leave the status alone. */
	rv = sbx_strdup(sbx_json_str(p->sandbox, "metadata.resourceVersion") ?: "");
	if (rv) {
		void *old = NULL;

		if (sbx_map_put(&p->r->written, p->key, rv, &old))
			sbx_free(rv);
		sbx_free(old);
	}
	/* Told once written: a refused write tells nothing that did not happen. */
	post_event(p, json_object_get(p->sandbox, "status"), p->written, p->now);
	pass_end(p, p->rc);
}

static void on_event_posted(const struct sbx_kube_response *res, void *arg)
{
	(void)arg;
	if (res->rc || res->status / 100 != 2)
		sbx_log_warn("cannot post an event", SBX_LI("status", res->status),
			     SBX_LS("error", sbx_kube_status_message(res)));
}

/* A Kubernetes Event on the Sandbox when its phase or its Ready reason
 * changes, so `kubectl describe sandbox` tells the story: Warning for a
 * reason that needs the user (a bad image, a crash loop, a conflict). */
static void post_event(struct pass *p, const json_t *old_status, const json_t *status,
		       const char *now)
{
	const json_t *old_ready = json_array_get(json_object_get(old_status, "conditions"), 0);
	const json_t *ready = json_array_get(json_object_get(status, "conditions"), 0);
	const char *phase = sbx_json_str(status, "phase"), *old_phase;
	const char *reason = sbx_json_str(ready, "reason"), *old_reason;
	const char *type = "Normal";
	char path[256], prefix[260];
	json_t *ev;

	old_phase = sbx_json_str(old_status, "phase");
	old_reason = sbx_json_str(old_ready, "reason");
	if (!phase || !reason ||
	    (old_phase && old_reason && !strcmp(phase, old_phase) && !strcmp(reason, old_reason)))
		return;
	if (strcmp(reason, "SandboxReady") && strcmp(reason, "PodNotCreated") &&
	    strcmp(reason, "PodNotReady") && strcmp(reason, "Paused") && strcmp(reason, "Expired"))
		type = "Warning";
	snprintf(prefix, sizeof(prefix), "%s.", p->name);
	ev = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s, s:s, s:s?},"
		       " s:s, s:s, s:s, s:{s:s}, s:s, s:s, s:i, s:s}",
		       "apiVersion", "v1", "kind", "Event", "metadata", "generateName", prefix,
		       "namespace", p->ns, "involvedObject", "apiVersion", SANDBOX_API_VERSION,
		       "kind", "Sandbox", "name", p->name, "namespace", p->ns, "uid",
		       sbx_json_str(p->sandbox, "metadata.uid"), "reason", reason, "message",
		       sbx_json_str(ready, "message") ?: reason, "type", type, "source",
		       "component", COMPONENT, "firstTimestamp", now, "lastTimestamp", now, "count",
		       1, "reportingComponent", COMPONENT);
	if (!ev)
		return;
	sbx_kube_path(path, sizeof(path), "", "v1", p->ns, "events", NULL, NULL);
	if (sbx_kube_create(p->r->kube, path, ev, on_event_posted, NULL) == 0)
		p->r->stats.events++;
	json_decref(ev);
}

/* Sets the Ready condition of status to False with reason and message, and
 * its phase (unless NULL). */
static void not_ready(json_t *status, const char *phase, const char *reason, const char *message)
{
	json_t *ready = json_array_get(json_object_get(status, "conditions"), 0);

	json_object_set_new(ready, "status", json_string("False"));
	json_object_set_new(ready, "reason", json_string(reason));
	json_object_set_new(ready, "message", json_string(message));
	if (phase)
		json_object_set_new(status, "phase", json_string(phase));
}

static void write_status(struct pass *p)
{
	struct reconciler *r = p->r;
	json_t *seen = cached(r, CHILD_POD, p->ns, p->name), *pod = seen;
	const char *uid = sbx_json_str(p->sandbox, "metadata.uid");
	json_t *status, *obj;
	char now[32], path[512];
	const char *written;
	time_t t = time(NULL);
	struct tm tm;

	if (pod && !sandbox_child_owned(pod, uid))
		pod = NULL;
	if (!pod)
		pod = p->made_pod;
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	status = sandbox_status(p->sandbox, p->id, pod, r->settings, now, p->expired);
	if (p->conflict) {
		char msg[512];

		snprintf(msg, sizeof(msg),
			 "a %s named %s exists and is not this Sandbox's; it is left alone",
			 p->conflict, p->name);
		not_ready(status, "Failed", "ChildConflict", msg);
	} else if (p->invalid) {
		not_ready(status, "Failed", "InvalidSpec", p->invalid);
	} else if (p->failed[0]) {
		/* Retried: the phase stays what it was. */
		not_ready(status, NULL, "ChildWriteFailed", p->failed);
	} else if (pod && r->probe) {
		/* Whether the egress sidecar enforces the ConfigMap's policy yet. */
		const char *ip = sandbox_egress_sidecar_ip(pod);
		const char *pod_uid = sbx_json_str(pod, "metadata.uid");
		const struct sandbox_egress_seen *said =
			ip && pod_uid ? egress_probe_seen(r->probe, p->key, pod_uid) : NULL;

		if (sandbox_status_egress(status, p->sandbox, pod, said, now) && ip && pod_uid) {
			uint64_t wait = egress_probe_ask(r->probe, p->key, pod_uid, ip);

			if (wait)
				sbx_workqueue_add_after(r->queue, p->key, wait);
			r->stats.egress_probes = egress_probe_requests(r->probe);
		}
	}
	json_decref(seen); /* pod may be it: used until here */
	written = sbx_map_get(&r->written, p->key);
	if (sandbox_status_equal(status, json_object_get(p->sandbox, "status")) ||
	    (written &&
	     strcmp(written, sbx_json_str(p->sandbox, "metadata.resourceVersion") ?: "") == 0)) {
		/* The same, or the cache has not shown our last write yet (its
		 * update event brings the next pass). */
		json_decref(status);
		pass_end(p, p->rc);
		return;
	}
	snprintf(p->now, sizeof(p->now), "%s", now);
	p->written = json_incref(status);
	/* PUT /status with the cached object: its resourceVersion makes it conditional. */
	obj = json_deep_copy(p->sandbox);
	json_object_set_new(obj, "status", status);
	sbx_kube_path(path, sizeof(path), "sbx.dev", "v1alpha1", p->ns, "sandboxes", p->name, NULL);
	if (sbx_kube_update_status(r->kube, path, obj, on_status_written, p) != 0)
		pass_end(p, -EIO);
	json_decref(obj);
}

static json_t *desired_child(struct pass *p, enum child_kind k, const char **err)
{
	switch (k) {
	case CHILD_SERVICE:
		return sandbox_service(p->sandbox, p->id, p->r->settings);
	case CHILD_POLICY:
		return sandbox_network_policy(p->sandbox, p->id, p->r->settings);
	case CHILD_CONFIG:
		return sandbox_egress_config(p->sandbox, p->id, p->r->settings);
	case CHILD_POD:
		return sandbox_pod(p->sandbox, p->id, p->r->settings, err);
	default:
		return NULL;
	}
}

/* The next child that needs a write, or the status. */
/* Sends what child (the cached one, or NULL) needs, if anything: true when
 * a request is now out for it. */
static bool visit_child(struct pass *p, enum child_kind kind, json_t *child)
{
	struct reconciler *r = p->r;
	const char *uid = sbx_json_str(p->sandbox, "metadata.uid");
	bool paused = sbx_json_bool(p->sandbox, "spec.paused", false);
	bool stopped = kind == CHILD_POD && (paused || p->expired);
	const char *err = NULL;
	struct child_op *op;
	char path[512];
	json_t *desired;
	int rc;

	if (child && !sandbox_child_owned(child, uid)) {
		p->conflict = child_types[kind].kind;
		return false;
	}
	child_path(p, kind, path, sizeof(path));
	/* Not wanted: the pod of a paused or expired Sandbox, the egress
	 * ConfigMap without spec.egress (its builder returns NULL, no error).
	 * An owned one goes. */
	desired = stopped ? NULL : desired_child(p, kind, &err);
	if (!desired && !err && !stopped && kind != CHILD_CONFIG)
		err = "out of memory";
	if (!desired && err) {
		sbx_log_warn("cannot build a child", SBX_LS("sandbox", p->key),
			     SBX_LS("kind", child_types[kind].kind), SBX_LS("error", err));
		p->invalid = err;
		return false;
	}
	if ((!desired && !child) || (desired && sandbox_child_current(child, desired, uid))) {
		json_decref(desired);
		return false;
	}
	op = &p->ops[kind];
	*op = (struct child_op){ p, kind };
	if (!desired) {
		r->stats.deletes++;
		rc = sbx_kube_delete(r->kube, path, "Background", on_child_written, op);
	} else if (child) {
		/* What is ours is updated with a JSON merge patch of the whole
		 * desired object: lists are replaced whole, so a removed port,
		 * rule or init container goes (server-side apply would keep what
		 * the create, a different manager, set), and what the apiserver
		 * defaults stays. */
		rc = sbx_kube_merge_patch(r->kube, path, desired, on_child_written, op);
	} else {
		/* Create what the cache has not seen: a 409 then means someone
		 * else's object (the cache only holds labelled ones), never taken
		 * over. */
		const struct child_type *t = &child_types[kind];

		sbx_kube_path(path, sizeof(path), t->group, t->version, p->ns, t->resource, NULL,
			      NULL);
		rc = sbx_kube_create(r->kube, path, desired, on_child_created, op);
	}
	json_decref(desired);
	if (rc) {
		p->rc = rc;
		return false;
	}
	p->inflight++;
	return true;
}

/* A pass writes its children in two stages, the requests of a stage at
 * once: the Service, the NetworkPolicy and the egress ConfigMap, then the
 * pod (so its NetworkPolicy and its policy exist before it can run), then
 * the status. A stage that failed stops the pass at the status. */
static void next_stage(struct pass *p)
{
	static const enum child_kind stages[2][CHILD_COUNT] = {
		{ CHILD_SERVICE, CHILD_POLICY, CHILD_CONFIG, CHILD_COUNT },
		{ CHILD_POD, CHILD_COUNT },
	};

	while (p->stage < 2 && !p->failed[0] && !p->rc) {
		const enum child_kind *kinds = stages[p->stage++];

		p->inflight = 1; /* held while the stage's requests go out */
		for (int i = 0; kinds[i] != CHILD_COUNT; i++) {
			json_t *child = cached(p->r, (int)kinds[i], p->ns, p->name);

			visit_child(p, kinds[i], child);
			json_decref(child);
		}
		if (--p->inflight > 0)
			return; /* the last answer calls next_stage */
	}
	p->stage = 2;
	write_status(p);
}

static void on_sandbox_deleted(const struct sbx_kube_response *res, void *arg)
{
	struct pass *p = arg;

	if (res->rc || (res->status / 100 != 2 && res->status != 404)) {
		log_failure(p, "cannot delete the expired Sandbox", res);
		pass_end(p, -EIO);
		return;
	}
	sbx_log_info("expired: deleted", SBX_LS("sandbox", p->key));
	p->r->stats.deletes++;
	pass_end(p, 0);
}

/* Past expiry: Delete removes the Sandbox (the garbage collector takes the
 * children); Retain keeps it without a pod. Before: a pass at expiry time.
 * Returns true when the pass is finished here. */
static bool expire(struct pass *p)
{
	const char *policy = sbx_json_str(p->sandbox, "spec.expiryPolicy");
	time_t exp, now = time(NULL);
	char path[512];

	if (sandbox_expiry(p->sandbox, &exp) != 0)
		return false;
	if (now < exp) {
		/* Timers, not polling: one delayed add per Sandbox, re-armed by
		 * every pass (a renewal moves it). */
		sbx_workqueue_add_after(p->r->queue, p->key, (uint64_t)(exp - now) * 1000 + 50);
		return false;
	}
	if (policy && strcmp(policy, "Retain") == 0) {
		p->expired = true;
		return false;
	}
	sbx_kube_path(path, sizeof(path), "sbx.dev", "v1alpha1", p->ns, "sandboxes", p->name, NULL);
	if (sbx_kube_delete(p->r->kube, path, "Background", on_sandbox_deleted, p) != 0)
		pass_end(p, -EIO);
	return true;
}

static void process(struct sbx_workqueue *q, const char *key, void *arg)
{
	struct reconciler *r = arg;
	const char *slash = strchr(key, '/');
	struct pass *p;
	json_t *sbx;
	const char *id;

	(void)q;
	if (!reconciler_synced(r)) {
		/* Until every cache is full, a missing child only means not seen yet. */
		sbx_workqueue_done(r->queue, key, 0);
		sbx_workqueue_add_after(r->queue, key, 200);
		return;
	}
	if (!slash || slash - key >= 64 || strlen(slash + 1) >= 254) {
		sbx_workqueue_done(r->queue, key, 0);
		return;
	}
	p = sbx_calloc(1, sizeof(*p));
	p->r = r;
	p->key = sbx_strdup(key);
	p->start_us = now_us();
	snprintf(p->ns, sizeof(p->ns), "%.*s", (int)(slash - key), key);
	snprintf(p->name, sizeof(p->name), "%s", slash + 1);
	p->next = r->passes;
	if (r->passes)
		r->passes->prev = p;
	r->passes = p;
	sbx = cached(r, -1, p->ns, p->name);
	/* Gone, or going: the garbage collector removes the children it owns. */
	if (!sbx || json_object_get(json_object_get(sbx, "metadata"), "deletionTimestamp")) {
		json_decref(sbx);
		if (r->probe)
			egress_probe_forget(r->probe, key);
		pass_end(p, 0);
		return;
	}
	p->sandbox = sbx;
	id = sbx_json_str(sbx, "status.id");
	if (id && *id && strlen(id) < sizeof(p->id))
		snprintf(p->id, sizeof(p->id), "%s", id);
	/* The cache may not show the status an earlier pass wrote yet; the
	 * children that pass made carry the id too. Only a Sandbox with
	 * neither gets a new one. */
	for (int k = 0; !p->id[0] && k < CHILD_COUNT; k++) {
		json_t *child = cached(r, k, p->ns, p->name);

		id = child && sandbox_child_owned(child, sbx_json_str(sbx, "metadata.uid"))
			     ? json_string_value(json_object_get(
				       json_object_get(json_object_get(child, "metadata"),
						       "labels"),
				       SANDBOX_ID_LABEL))
			     : NULL;
		if (id && *id && strlen(id) < sizeof(p->id))
			snprintf(p->id, sizeof(p->id), "%s", id);
		json_decref(child);
	}
	if (!p->id[0])
		sandbox_new_id(p->name, p->id, sizeof(p->id));
	if (!expire(p))
		next_stage(p);
}

/* -- life ----------------------------------------------------------------- */

static int scope_init(struct reconciler *r, struct scope *sc, const char *ns)
{
	struct sbx_informer_handlers sh = { on_sandbox_add, on_sandbox_update, on_sandbox_delete,
					    on_synced };
	struct sbx_informer_handlers ch = { on_child_add, on_child_update, on_child_add,
					    on_synced };
	char path[256];
	int rc;

	snprintf(sc->ns, sizeof(sc->ns), "%s", ns ? ns : "");
	sbx_kube_path(path, sizeof(path), "sbx.dev", "v1alpha1", ns, "sandboxes", NULL, NULL);
	if ((rc = sbx_informer_new(r->kube,
				   &(struct sbx_informer_opts){ .path = path,
								.trim = trim_sandbox,
								.compact = true,
								.page_size = LIST_PAGE },
				   &sh, r, &sc->sandboxes)))
		return rc;
	for (int k = 0; k < CHILD_COUNT; k++) {
		const struct child_type *t = &child_types[k];

		sbx_kube_path(path, sizeof(path), t->group, t->version, ns, t->resource, NULL,
			      NULL);
		if ((rc = sbx_informer_new(
			     r->kube,
			     &(struct sbx_informer_opts){ .path = path,
							  .label_selector = SANDBOX_LABEL,
							  .trim = trim_child,
							  .compact = true,
							  .page_size = LIST_PAGE },
			     &ch, r, &sc->children[k])))
			return rc;
	}
	return 0;
}

static void scopes_free(struct reconciler *r)
{
	for (size_t i = 0; i < r->n_scopes; i++) {
		sbx_informer_free(r->scopes[i].sandboxes);
		r->scopes[i].sandboxes = NULL;
		for (int k = 0; k < CHILD_COUNT; k++) {
			sbx_informer_free(r->scopes[i].children[k]);
			r->scopes[i].children[k] = NULL;
		}
	}
}

static void free_value(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	sbx_free(value);
}

/* A sidecar answered (or did not): a pass puts it in the status. */
static void on_probe_answered(const char *key, void *arg)
{
	struct reconciler *r = arg;

	if (!r->stopped)
		sbx_workqueue_add(r->queue, key);
}

int reconciler_new(uv_loop_t *loop, struct sbx_kube *kube, const struct sandbox_settings *settings,
		   unsigned workers, const char *const *namespaces, struct reconciler **out)
{
	struct reconciler *r = sbx_calloc(1, sizeof(*r));
	/* A failed write is retried after 5 ms, doubling up to 30 s: a user who
	 * fixes the cause (a quota, say) sees the Sandbox recover soon. */
	struct sbx_workqueue_opts qo = { .concurrency = workers ? workers : 1,
					 .max_delay_ms = 30000 };
	size_t n = 0;
	int rc;

	while (namespaces && namespaces[n])
		n++;
	r->loop = loop;
	r->kube = kube;
	r->settings = settings;
	r->n_scopes = n ? n : 1;
	r->scopes = sbx_calloc(r->n_scopes, sizeof(*r->scopes));
	sbx_map_init(&r->phases, 1000000);
	sbx_map_init(&r->written, 1000000);
	if ((rc = sbx_workqueue_new(loop, &qo, process, r, &r->queue)))
		goto out_free;
	if ((rc = egress_probe_new(loop, on_probe_answered, r, &r->probe)))
		goto out_queue;
	for (size_t i = 0; i < r->n_scopes; i++)
		if ((rc = scope_init(r, &r->scopes[i], n ? namespaces[i] : NULL)))
			goto out_informers;
	*out = r;
	return 0;
out_informers:
	scopes_free(r);
	egress_probe_free(r->probe);
out_queue:
	sbx_workqueue_free(r->queue);
out_free:
	sbx_map_release(&r->phases);
	sbx_map_foreach(&r->written, free_value, NULL);
	sbx_map_release(&r->written);
	sbx_free(r->scopes);
	sbx_free(r);
	return rc;
}

int reconciler_start(struct reconciler *r)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < r->n_scopes; i++) {
		rc = sbx_informer_start(r->scopes[i].sandboxes);
		for (int k = 0; rc == 0 && k < CHILD_COUNT; k++)
			rc = sbx_informer_start(r->scopes[i].children[k]);
	}
	return rc;
}

size_t reconciler_sandboxes(const struct reconciler *r)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n_scopes; i++)
		if (r->scopes[i].sandboxes)
			n += sbx_informer_count(r->scopes[i].sandboxes);
	return n;
}

size_t reconciler_cache_bytes(const struct reconciler *r)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n_scopes; i++) {
		if (r->scopes[i].sandboxes)
			n += sbx_informer_cache_bytes(r->scopes[i].sandboxes);
		for (int k = 0; k < CHILD_COUNT; k++)
			if (r->scopes[i].children[k])
				n += sbx_informer_cache_bytes(r->scopes[i].children[k]);
	}
	return n;
}

void reconciler_phases(const struct reconciler *r, size_t counts[RECONCILER_PHASES])
{
	memcpy(counts, r->phase_counts, sizeof(r->phase_counts));
}

size_t reconciler_queue_len(const struct reconciler *r)
{
	return r->stopped ? 0 : sbx_workqueue_len(r->queue);
}

const struct reconciler_stats *reconciler_stats(const struct reconciler *r)
{
	return &r->stats;
}

void reconciler_stop(struct reconciler *r)
{
	if (r->stopped)
		return;
	r->stopped = true;
	scopes_free(r);
	/* GETs in flight end in the pool; their answers are dropped. */
	egress_probe_free(r->probe);
	r->probe = NULL;
	/* Cancels the delayed adds (expiry timers), so the loop can end; keys in
	 * process stay valid until their sbx_workqueue_done in reconciler_free. */
	sbx_workqueue_free(r->queue);
}

void reconciler_free(struct reconciler *r)
{
	if (!r)
		return;
	reconciler_stop(r);
	/* The client is gone, and with it the passes' requests: free their memory. */
	while (r->passes)
		pass_end(r->passes, 0);
	sbx_map_release(&r->phases);
	sbx_map_foreach(&r->written, free_value, NULL);
	sbx_map_release(&r->written);
	sbx_free(r->scopes);
	sbx_free(r);
}
