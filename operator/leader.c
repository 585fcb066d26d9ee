/* Leader election on a Lease (leader.h). One request at a time, driven by
 * one timer. */
#define _GNU_SOURCE /* strptime, timegm */
#include "leader.h"

#include "sbx/alloc.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct leader {
	uv_loop_t *loop;
	struct sbx_kube *kube;
	struct leader_opts o;
	struct leader_handlers h;
	void *arg;
	uv_timer_t timer;
	char path[512];
	char *identity;
	bool leading, lost;
	double renewed_at; /* wall time of the last successful write as leader */
};

static double now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* metav1.MicroTime: 2026-12-03T11:30:00.123456Z */
static void micro_time(double t, char *out, size_t size)
{
	time_t s = (time_t)t;
	struct tm tm;
	char base[32];

	gmtime_r(&s, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, size, "%s.%06dZ", base, (int)((t - (double)s) * 1e6));
}

static int parse_micro_time(const char *text, double *out)
{
	struct tm tm = { 0 };
	const char *end;
	double frac = 0, scale = 0.1;

	if (!text || !(end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm)))
		return -1;
	if (*end == '.')
		for (end++; *end >= '0' && *end <= '9'; end++, scale /= 10)
			frac += (*end - '0') * scale;
	if (strcmp(end, "Z") != 0)
		return -1;
	*out = (double)timegm(&tm) + frac;
	return 0;
}

static void on_timer(uv_timer_t *t);

static void schedule(struct leader *l)
{
	unsigned s = l->leading ? l->o.renew_s : l->o.retry_s;

	uv_timer_start(&l->timer, on_timer, (uint64_t)s * 1000, 0);
}

static void lose(struct leader *l, const char *why)
{
	if (l->lost)
		return;
	l->lost = true;
	l->leading = false;
	sbx_log_warn("lost the leader lease", SBX_LS("lease", l->path), SBX_LS("reason", why));
	uv_timer_stop(&l->timer);
	if (l->h.on_lost)
		l->h.on_lost(l->arg);
}

static void written(struct leader *l, const struct sbx_kube_response *r)
{
	if (r->rc == 0 && r->status / 100 == 2) {
		l->renewed_at = now_s();
		if (!l->leading) {
			l->leading = true;
			sbx_log_info("elected leader", SBX_LS("lease", l->path),
				     SBX_LS("identity", l->identity));
			if (l->h.on_elected)
				l->h.on_elected(l->arg);
		}
	} else if (l->leading && now_s() - l->renewed_at >= l->o.lease_s) {
		lose(l, r->status == 409 ? "another candidate holds it"
					 : "could not renew it in time");
		return;
	}
	if (!l->lost)
		schedule(l);
}

static void on_written(const struct sbx_kube_response *r, void *arg)
{
	written(arg, r);
}

/* A Lease object held by us from now, based on old (NULL: a new one). */
static json_t *held_lease(struct leader *l, const json_t *old)
{
	char now[40];
	json_t *lease = old ? json_deep_copy(old) : NULL, *spec;
	const char *holder = sbx_json_str(old, "spec.holderIdentity");
	long long transitions = 0;

	micro_time(now_s(), now, sizeof(now));
	if (!lease)
		lease = json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion",
				  "coordination.k8s.io/v1", "kind", "Lease", "metadata", "name",
				  l->o.name, "namespace", l->o.ns);
	spec = json_object_get(lease, "spec");
	if (!spec) {
		spec = json_object();
		json_object_set_new(lease, "spec", spec);
	}
	sbx_json_int(old, "spec.leaseTransitions", &transitions);
	if (!holder || strcmp(holder, l->identity) != 0) {
		json_object_set_new(spec, "acquireTime", json_string(now));
		json_object_set_new(spec, "leaseTransitions",
				    json_integer(old ? transitions + 1 : 0));
	}
	json_object_set_new(spec, "holderIdentity", json_string(l->identity));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(l->o.lease_s));
	json_object_set_new(spec, "renewTime", json_string(now));
	return lease;
}

static void on_read(const struct sbx_kube_response *r, void *arg)
{
	struct leader *l = arg;
	const char *holder;
	double renew = 0;
	long long dur = l->o.lease_s;
	json_t *lease;
	char coll[512];
	int rc;

	if (r->rc == 0 && r->status == 404) {
		lease = held_lease(l, NULL);
		snprintf(coll, sizeof(coll), "/apis/coordination.k8s.io/v1/namespaces/%s/leases",
			 l->o.ns);
		rc = sbx_kube_create(l->kube, coll, lease, on_written, l);
		json_decref(lease);
		if (rc)
			schedule(l);
		return;
	}
	if (r->rc || r->status != 200 || !r->body) {
		written(l, r); /* a failed read counts as a failed renewal */
		return;
	}
	holder = sbx_json_str(r->body, "spec.holderIdentity");
	parse_micro_time(sbx_json_str(r->body, "spec.renewTime"), &renew);
	sbx_json_int(r->body, "spec.leaseDurationSeconds", &dur);
	if (holder && *holder && strcmp(holder, l->identity) != 0 &&
	    now_s() < renew + (double)dur) {
		if (l->leading) {
			lose(l, "another candidate holds it");
			return;
		}
		schedule(l); /* someone else leads, and renews in time */
		return;
	}
	/* Ours, free, or expired: take it, conditionally on what was read. */
	lease = held_lease(l, r->body);
	rc = sbx_kube_replace(l->kube, l->path, lease, on_written, l);
	json_decref(lease);
	if (rc)
		schedule(l);
}

static void on_timer(uv_timer_t *t)
{
	struct leader *l = t->data;

	if (sbx_kube_get(l->kube, l->path, on_read, l) != 0)
		schedule(l);
}

int leader_new(uv_loop_t *loop, struct sbx_kube *kube, const struct leader_opts *opts,
	       const struct leader_handlers *h, void *arg, struct leader **out)
{
	struct leader *l = sbx_calloc(1, sizeof(*l));

	l->loop = loop;
	l->kube = kube;
	l->o = *opts;
	l->o.lease_s = opts->lease_s ? opts->lease_s : 10;
	l->o.renew_s = opts->renew_s ? opts->renew_s : 3;
	l->o.retry_s = opts->retry_s ? opts->retry_s : 2;
	l->h = *h;
	l->arg = arg;
	l->identity = sbx_strdup(opts->identity);
	sbx_kube_path(l->path, sizeof(l->path), "coordination.k8s.io", "v1", opts->ns, "leases",
		      opts->name, NULL);
	uv_timer_init(loop, &l->timer);
	l->timer.data = l;
	*out = l;
	return 0;
}

int leader_start(struct leader *l)
{
	return uv_timer_start(&l->timer, on_timer, 0, 0);
}

bool leader_is_leader(const struct leader *l)
{
	return l && l->leading;
}

static void on_closed(uv_handle_t *h)
{
	struct leader *l = h->data;

	sbx_free(l->identity);
	sbx_free(l);
}

void leader_free(struct leader *l)
{
	if (!l)
		return;
	uv_timer_stop(&l->timer);
	uv_close((uv_handle_t *)&l->timer, on_closed);
}
