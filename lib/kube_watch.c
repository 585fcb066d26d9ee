/* Watch splitter and reconnecting watch (see sbx/kube_watch.h). */
#include "sbx/kube_watch.h"

#include "sbx/alloc.h"
#include "sbx/json.h"
#include "sbx/kube.h"
#include "sbx/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- splitter ----------------------------------------------------------- */

void sbx_watch_splitter_init(struct sbx_watch_splitter *s, size_t max_event_bytes,
			     sbx_watch_event_fn on_event, void *arg)
{
	sbx_buf_init(&s->line, max_event_bytes);
	s->on_event = on_event;
	s->arg = arg;
	s->error[0] = '\0';
}

void sbx_watch_splitter_release(struct sbx_watch_splitter *s)
{
	sbx_buf_release(&s->line);
}

size_t sbx_watch_splitter_pending(const struct sbx_watch_splitter *s)
{
	return s->line.len;
}

/* Parses one complete line. Blank lines (keep-alive newlines) are skipped. */
static int parse_line(struct sbx_watch_splitter *s, const char *p, size_t n)
{
	char jerr[120];
	const char *type;
	json_t *ev, *obj;
	int rc;

	if (strspn(p, " \t\r") >= n)
		return 0;
	ev = sbx_json_loadb(p, n, s->line.max, jerr, sizeof(jerr));
	if (!ev) {
		snprintf(s->error, sizeof(s->error), "watch event is not JSON: %s", jerr);
		return -EBADMSG;
	}
	type = sbx_json_str(ev, "type");
	obj = json_object_get(ev, "object");
	if (!type || !json_is_object(obj)) {
		snprintf(s->error, sizeof(s->error), "watch event lacks type or object");
		json_decref(ev);
		return -EBADMSG;
	}
	rc = s->on_event(type, obj, s->arg);
	json_decref(ev);
	return rc < 0 ? rc : 0;
}

int sbx_watch_splitter_feed(struct sbx_watch_splitter *s, const char *data, size_t len)
{
	const char *nl;
	size_t n;
	int rc;

	while (len) {
		nl = memchr(data, '\n', len);
		n = nl ? (size_t)(nl - data) : len;
		if (!nl || s->line.len) {
			/* A line cut by the chunk boundary is gathered in the buffer. */
			if (sbx_buf_append(&s->line, data, n)) {
				snprintf(s->error, sizeof(s->error),
					 "watch event larger than %zu bytes", s->line.max);
				sbx_buf_reset(&s->line);
				return -E2BIG;
			}
			if (!nl)
				return 0;
			rc = parse_line(s, s->line.data, s->line.len);
			sbx_buf_reset(&s->line);
		} else {
			if (n > s->line.max) {
				snprintf(s->error, sizeof(s->error),
					 "watch event larger than %zu bytes", s->line.max);
				return -E2BIG;
			}
			rc = parse_line(s, data, n);
		}
		if (rc)
			return rc;
		data += n + 1;
		len -= n + 1;
	}
	return 0;
}

/* ---- watch -------------------------------------------------------------- */

struct sbx_watch {
	struct sbx_kube *k;
	struct sbx_watch_opts opts;
	char *path, *label_selector, *field_selector;
	struct sbx_watch_handlers h;
	void *arg;
	struct sbx_watch_splitter split;
	struct sbx_kube_req *req;
	uv_timer_t retry;
	char rv[64];
	bool running;
	bool gone;	/* the current stream reported 410 */
	bool got_event; /* the current stream delivered something */
	unsigned failures;
	unsigned long streams;
};

static void open_stream(struct sbx_watch *w);

static int parse_type(const char *s, enum sbx_watch_type *t)
{
	static const char *const names[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK" };

	for (int i = 0; i < 4; i++) {
		if (strcmp(s, names[i]) == 0) {
			*t = (enum sbx_watch_type)i;
			return 0;
		}
	}
	return -EINVAL;
}

static void note_rv(struct sbx_watch *w, json_t *obj)
{
	const char *rv = sbx_json_str(obj, "metadata.resourceVersion");

	if (rv && strlen(rv) < sizeof(w->rv))
		strcpy(w->rv, rv);
}

/* One event of the current stream. */
static int on_split_event(const char *type, json_t *obj, void *arg)
{
	struct sbx_watch *w = arg;
	enum sbx_watch_type t;
	long long code = 0;

	if (strcmp(type, "ERROR") == 0) {
		sbx_json_int(obj, "code", &code);
		if (code == 410) {
			w->gone = true;
			return -ESTALE;
		}
		sbx_log_warn("watch error event", SBX_LS("path", w->path), SBX_LI("code", code),
			     SBX_LS("message", sbx_json_str(obj, "message")));
		return -EPROTO;
	}
	if (parse_type(type, &t)) {
		sbx_log_warn("unknown watch event type", SBX_LS("path", w->path),
			     SBX_LS("type", type));
		return 0;
	}
	w->got_event = true;
	note_rv(w, obj);
	if (t != SBX_WATCH_BOOKMARK && w->h.on_event)
		w->h.on_event(t, obj, w->arg);
	return 0;
}

static int on_stream_data(const char *data, size_t len, void *arg)
{
	struct sbx_watch *w = arg;
	int rc = sbx_watch_splitter_feed(&w->split, data, len);

	if (rc && rc != -ESTALE && w->split.error[0])
		sbx_log_warn("watch stream broken", SBX_LS("path", w->path),
			     SBX_LS("reason", w->split.error));
	return rc;
}

static void on_retry(uv_timer_t *t)
{
	open_stream(t->data);
}

/* Full jitter on an exponential backoff keeps many watchers from
 * reconnecting in lockstep after an apiserver restart. */
static uint64_t next_delay(struct sbx_watch *w)
{
	uint64_t d = w->opts.backoff_min_ms;

	for (unsigned i = 0; i < w->failures && d < w->opts.backoff_max_ms; i++)
		d *= 2;
	if (d > w->opts.backoff_max_ms)
		d = w->opts.backoff_max_ms;
	return d / 2 + (uint64_t)rand() % (d / 2 + 1);
}

static void gone(struct sbx_watch *w)
{
	sbx_log_info("watch resourceVersion expired; relist needed", SBX_LS("path", w->path),
		     SBX_LS("resourceVersion", w->rv));
	w->running = false;
	w->rv[0] = '\0';
	if (w->h.on_gone)
		w->h.on_gone(w->arg);
}

static void on_stream_done(const struct sbx_kube_response *r, void *arg)
{
	struct sbx_watch *w = arg;
	uint64_t delay = 0;

	w->req = NULL;
	sbx_buf_reset(&w->split.line);
	if (w->gone || r->status == 410) {
		gone(w);
		return;
	}
	if (r->rc == 0 && r->status == 200) {
		/* The server closed the stream (timeoutSeconds): resume at once. */
		w->failures = 0;
	} else {
		if (w->got_event)
			w->failures = 0;
		delay = next_delay(w);
		w->failures++;
		sbx_log_warn("watch interrupted; reconnecting", SBX_LS("path", w->path),
			     SBX_LI("status", r->status),
			     SBX_LS("reason", sbx_kube_status_message(r)),
			     SBX_LI("retry_ms", (long long)delay));
	}
	uv_timer_start(&w->retry, on_retry, delay, 0);
}

static void open_stream(struct sbx_watch *w)
{
	char path[8192];
	char *ls = NULL, *fs = NULL;
	unsigned timeout = w->opts.timeout_s + (unsigned)rand() % (w->opts.timeout_s + 1);
	int n, rc;

	if (!w->running)
		return;
	if (w->label_selector)
		ls = curl_easy_escape(NULL, w->label_selector, 0);
	if (w->field_selector)
		fs = curl_easy_escape(NULL, w->field_selector, 0);
	n = snprintf(path, sizeof(path),
		     "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%u%s%s%s%s%s%s", w->path,
		     timeout, w->rv[0] ? "&resourceVersion=" : "", w->rv,
		     ls ? "&labelSelector=" : "", ls ? ls : "", fs ? "&fieldSelector=" : "",
		     fs ? fs : "");
	curl_free(ls);
	curl_free(fs);
	w->gone = false;
	w->got_event = false;
	if (n < 0 || (size_t)n >= sizeof(path)) {
		sbx_log_error("watch path too long", SBX_LS("path", w->path));
		w->running = false;
		return;
	}
	if (w->streams++)
		sbx_log_debug("watch reconnect", SBX_LS("path", w->path),
			      SBX_LS("resourceVersion", w->rv));
	/* The client-side limit is a backstop for a silently dead connection. */
	rc = sbx_kube_stream(w->k, path, (long)(timeout + 30) * 1000, on_stream_data,
			     on_stream_done, w, &w->req);
	if (rc) {
		sbx_log_warn("cannot open watch; retrying", SBX_LS("path", w->path), SBX_LERR(rc));
		uv_timer_start(&w->retry, on_retry, next_delay(w), 0);
		w->failures++;
	}
}

static char *dup_opt(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = sbx_strdup(s);
	if (!d)
		*oom = true;
	return d;
}

int sbx_watch_new(struct sbx_kube *k, const struct sbx_watch_opts *opts,
		  const struct sbx_watch_handlers *h, void *arg, struct sbx_watch **out)
{
	struct sbx_watch *w = sbx_calloc(1, sizeof(*w));
	bool oom = false;

	if (!w)
		return -ENOMEM;
	w->k = k;
	w->opts = *opts;
	if (!w->opts.max_event_bytes)
		w->opts.max_event_bytes = 8u << 20;
	if (!w->opts.timeout_s)
		w->opts.timeout_s = 300;
	if (!w->opts.backoff_min_ms)
		w->opts.backoff_min_ms = 500;
	if (!w->opts.backoff_max_ms)
		w->opts.backoff_max_ms = 30000;
	w->path = dup_opt(opts->path, &oom);
	w->label_selector = dup_opt(opts->label_selector, &oom);
	w->field_selector = dup_opt(opts->field_selector, &oom);
	if (oom || !w->path) {
		sbx_free(w->path);
		sbx_free(w->label_selector);
		sbx_free(w->field_selector);
		sbx_free(w);
		return -ENOMEM;
	}
	w->h = *h;
	w->arg = arg;
	sbx_watch_splitter_init(&w->split, w->opts.max_event_bytes, on_split_event, w);
	uv_timer_init(sbx_kube_loop(k), &w->retry);
	w->retry.data = w;
	*out = w;
	return 0;
}

int sbx_watch_start(struct sbx_watch *w, const char *resource_version)
{
	if (resource_version && strlen(resource_version) >= sizeof(w->rv))
		return -EINVAL;
	sbx_watch_stop(w);
	snprintf(w->rv, sizeof(w->rv), "%s", resource_version ? resource_version : "");
	w->running = true;
	w->failures = 0;
	open_stream(w);
	return 0;
}

void sbx_watch_stop(struct sbx_watch *w)
{
	w->running = false;
	uv_timer_stop(&w->retry);
	if (w->req) {
		sbx_kube_cancel(w->req);
		w->req = NULL;
	}
	sbx_buf_reset(&w->split.line);
}

static void on_watch_closed(uv_handle_t *h)
{
	struct sbx_watch *w = h->data;

	sbx_watch_splitter_release(&w->split);
	sbx_free(w->path);
	sbx_free(w->label_selector);
	sbx_free(w->field_selector);
	sbx_free(w);
}

void sbx_watch_free(struct sbx_watch *w)
{
	if (!w)
		return;
	sbx_watch_stop(w);
	uv_close((uv_handle_t *)&w->retry, on_watch_closed);
}

const char *sbx_watch_resource_version(const struct sbx_watch *w)
{
	return w->rv;
}

unsigned long sbx_watch_reconnects(const struct sbx_watch *w)
{
	return w->streams ? w->streams - 1 : 0;
}
