/* Reading what egress sidecars enforce (see egress_probe.h). */
#include "egress_probe.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/json.h"
#include "sbx/log.h"
#include "sbx/map.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MIN_INTERVAL_MS	 5000  /* between GETs to one sidecar that answered */
#define FAIL_INTERVAL_MS 20000 /* after one that did not */
#define TIMEOUT_MS	 2000
#define MAX_SANDBOXES	 1000000

struct entry {
	char pod_uid[64];
	bool inflight, have;
	uint64_t last_ms;
	struct sandbox_egress_seen seen;
};

struct job {
	uv_work_t work;
	struct egress_probe *ep;
	char key[320], pod_uid[64], url[128];
	struct sbx_buf body;
	long status;
	bool ok;
};

struct egress_probe {
	uv_loop_t *loop;
	void (*answered)(const char *key, void *arg);
	void *arg;
	struct sbx_map entries; /* key -> struct entry */
	unsigned inflight;
	bool closing;
	unsigned long requests;
};

int egress_probe_new(uv_loop_t *loop, void (*answered)(const char *key, void *arg), void *arg,
		     struct egress_probe **out)
{
	struct egress_probe *ep = sbx_calloc(1, sizeof(*ep));

	if (!ep)
		return -ENOMEM;
	ep->loop = loop;
	ep->answered = answered;
	ep->arg = arg;
	sbx_map_init(&ep->entries, MAX_SANDBOXES);
	*out = ep;
	return 0;
}

static void destroy(struct egress_probe *ep)
{
	void *v;

	while ((v = sbx_map_pop(&ep->entries)))
		sbx_free(v);
	sbx_map_release(&ep->entries);
	sbx_free(ep);
}

void egress_probe_free(struct egress_probe *ep)
{
	if (!ep)
		return;
	ep->closing = true;
	if (!ep->inflight)
		destroy(ep);
}

static uint64_t now_ms(const struct egress_probe *ep)
{
	return uv_now(ep->loop);
}

const struct sandbox_egress_seen *egress_probe_seen(struct egress_probe *ep, const char *key,
						    const char *pod_uid)
{
	struct entry *e = sbx_map_get(&ep->entries, key);

	return e && e->have && strcmp(e->pod_uid, pod_uid) == 0 ? &e->seen : NULL;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct job *j = arg;

	return sbx_buf_append(&j->body, data, size * n) ? 0 : size * n;
}

/* In the pool: one GET, nothing shared touched. */
static void fetch(uv_work_t *w)
{
	struct job *j = w->data;
	CURL *c = curl_easy_init();

	if (!c)
		return;
	curl_easy_setopt(c, CURLOPT_URL, j->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, j);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &j->status);
	curl_easy_cleanup(c);
}

static void fetched(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct egress_probe *ep = j->ep;
	struct entry *e = sbx_map_get(&ep->entries, j->key);
	struct sandbox_egress_seen seen = { 0 };
	json_t *doc = NULL;

	ep->inflight--;
	if (status == 0 && j->status == 200 && j->body.data)
		doc = json_loads(j->body.data, 0, NULL);
	if (doc && json_is_integer(json_object_get(doc, "policyGeneration"))) {
		seen.reachable = true;
		snprintf(seen.hash, sizeof(seen.hash), "%s",
			 sbx_json_str(doc, "policyHash") ? sbx_json_str(doc, "policyHash") : "");
		seen.generation =
			(long)json_integer_value(json_object_get(doc, "policyGeneration"));
		seen.from_api = strcmp(sbx_json_str(doc, "policySource") ?: "", "api") == 0;
	}
	json_decref(doc);
	if (e && !ep->closing && strcmp(e->pod_uid, j->pod_uid) == 0) {
		e->inflight = false;
		e->have = true;
		e->seen = seen;
		if (!seen.reachable)
			sbx_log_debug("egress sidecar did not answer", SBX_LS("sandbox", j->key),
				      SBX_LS("url", j->url), SBX_LI("status", j->status));
		ep->answered(j->key, ep->arg);
	} else if (e && strcmp(e->pod_uid, j->pod_uid) == 0) {
		e->inflight = false;
	}
	sbx_buf_release(&j->body);
	sbx_free(j);
	if (ep->closing && !ep->inflight)
		destroy(ep);
}

uint64_t egress_probe_ask(struct egress_probe *ep, const char *key, const char *pod_uid,
			  const char *ip)
{
	struct entry *e = sbx_map_get(&ep->entries, key);
	uint64_t now = now_ms(ep), wait;
	struct job *j;

	if (!e) {
		if (!(e = sbx_calloc(1, sizeof(*e))))
			return MIN_INTERVAL_MS;
		if (sbx_map_put(&ep->entries, key, e, NULL)) {
			sbx_free(e);
			return MIN_INTERVAL_MS;
		}
	}
	if (strcmp(e->pod_uid, pod_uid) != 0) {
		/* A new pod: nothing known, and it may be asked at once. */
		snprintf(e->pod_uid, sizeof(e->pod_uid), "%s", pod_uid);
		e->have = false;
		e->last_ms = 0;
	}
	if (e->inflight)
		return 0;
	wait = e->have && !e->seen.reachable ? FAIL_INTERVAL_MS : MIN_INTERVAL_MS;
	if (e->last_ms && now < e->last_ms + wait)
		return e->last_ms + wait - now;
	if (!(j = sbx_calloc(1, sizeof(*j))))
		return MIN_INTERVAL_MS;
	j->ep = ep;
	j->work.data = j;
	snprintf(j->key, sizeof(j->key), "%s", key);
	snprintf(j->pod_uid, sizeof(j->pod_uid), "%s", pod_uid);
	snprintf(j->url, sizeof(j->url),
		 strchr(ip, ':') ? "http://[%s]:%d/readyz" : "http://%s:%d/readyz", ip,
		 SANDBOX_EGRESS_HEALTH_PORT);
	sbx_buf_init(&j->body, 4096);
	if (uv_queue_work(ep->loop, &j->work, fetch, fetched)) {
		sbx_free(j);
		return MIN_INTERVAL_MS;
	}
	e->inflight = true;
	e->last_ms = now;
	ep->inflight++;
	ep->requests++;
	return 0;
}

void egress_probe_forget(struct egress_probe *ep, const char *key)
{
	struct entry *e = sbx_map_get(&ep->entries, key);

	/* A GET in flight finds no entry and is dropped. */
	if (e && !e->inflight)
		sbx_free(sbx_map_remove(&ep->entries, key));
}

unsigned long egress_probe_requests(const struct egress_probe *ep)
{
	return ep->requests;
}
