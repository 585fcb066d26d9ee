/* Browser automation (see automation.h).
 *
 * Each request is a job: a preparation (the target list, a page if there is
 * none, the active page attached with its domains enabled), then the
 * operation's own steps, each a DevTools command whose answer calls the
 * operation again with its step advanced, or an event it waits for. A job
 * whose client has gone runs to its end without answering.
 */
#define _GNU_SOURCE
#include "automation.h"

#include "api.h"
#include "cdp.h"
#include "record.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CALL_TIMEOUT_MS 30000
#define DEFAULT_WAIT_MS 30000
#define MAX_FILE	(64u << 20)
#define NETWORK_IDLE_MS 500

static const char no_browser[] =
	"no browser in this sandbox: start sbx-agent with --cdp ADDR, the address of a "
	"Chromium running with --remote-debugging-port";

/* The interactive elements of a page, in document order, and the element a
 * request names (a CSS selector, or an index into that list). */
static const char find_js[] =
	"const __sbx={list(){const q='a[href],button,input:not([type=hidden]),select,textarea,"
	"summary,[role=button],[role=link],[role=checkbox],[role=radio],[role=tab],"
	"[role=menuitem],[onclick],[contenteditable=\"\"],[contenteditable=true]';"
	"return [...document.querySelectorAll(q)].filter(e=>{const r=e.getBoundingClientRect(),"
	"s=getComputedStyle(e);return r.width>0&&r.height>0&&s.visibility!=='hidden'&&"
	"s.display!=='none';});},"
	"find(sel,idx){if(sel!==null){const e=document.querySelector(sel);"
	"if(!e)throw new Error('no element matches '+sel);return e;}const l=this.list();"
	"if(idx===null||idx<0||idx>=l.length)throw new Error('no interactive element has index '"
	"+idx+' ('+l.length+' on the page)');return l[idx];},"
	"point(e){e.scrollIntoView({block:'center',inline:'center'});"
	"const r=e.getBoundingClientRect();return [r.left+r.width/2,r.top+r.height/2];}};";

struct auto_job;
typedef void (*job_fn)(struct auto_job *j, json_t *result, const char *error);

struct auto_job {
	struct automation *a;
	struct auto_job *next;
	struct sbx_http_req *req; /* NULL once the client has gone */
	json_t *body;
	job_fn fn;
	int step;
	int prep;	  /* the preparation's step; -1 once the operation runs */
	unsigned pending; /* DevTools calls not answered yet */
	bool ended;
	char session[64];
	char target[64];
	uv_timer_t timer; /* an event's deadline, or a pause */
	bool timer_open;
	char waiting_for[64]; /* an event on session, or "" */
	bool arrived;	      /* it came while a command was out */
	json_t *acc;	      /* the operation's scratch */
	double x, y;
	char path[PATH_MAX];
};

static void prep_step(struct auto_job *j, json_t *result, const char *error);
static void job_path(struct auto_job *j, const char *path);
static void job_write_json(struct auto_job *j, json_t *doc);

/* ---- answering --------------------------------------------------------------------- */

static void job_free(struct auto_job *j)
{
	json_decref(j->body);
	json_decref(j->acc);
	sbx_free(j);
}

static void job_timer_closed(uv_handle_t *h)
{
	job_free(h->data);
}

static void job_unlink(struct auto_job *j)
{
	for (struct auto_job **p = &j->a->jobs; *p; p = &(*p)->next) {
		if (*p == j) {
			*p = j->next;
			return;
		}
	}
}

/* Freed once nothing of it is outstanding. */
static void job_reap(struct auto_job *j)
{
	if (!j->ended || j->pending)
		return;
	job_unlink(j);
	uv_close((uv_handle_t *)&j->timer, job_timer_closed);
}

/* The client's request, no longer the job's (the answer frees it). */
static struct sbx_http_req *job_take_req(struct auto_job *j)
{
	struct sbx_http_req *req = j->req;

	if (req)
		sbx_http_on_abort(req, NULL, NULL);
	j->req = NULL;
	return req;
}

static void job_end(struct auto_job *j)
{
	if (j->ended)
		return;
	j->ended = true;
	j->waiting_for[0] = '\0';
	uv_timer_stop(&j->timer);
	job_take_req(j);
	job_reap(j);
}

static void job_ok(struct auto_job *j, const char *message, json_t *data)
{
	struct sbx_http_req *req = job_take_req(j);

	if (req)
		api_ok(req, message, data);
	else
		json_decref(data);
	job_end(j);
}

/* A failure of the operation: HTTP 200 with success false, as AIO does for
 * what the page refused; status for what is wrong around it. */
static void job_fail(struct auto_job *j, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void job_fail(struct auto_job *j, int status, const char *fmt, ...)
{
	char message[600];
	va_list ap;

	struct sbx_http_req *req = job_take_req(j);

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (req) {
		json_t *env = api_envelope(false, message, NULL);

		sbx_http_respond_json(req, status, env);
		json_decref(env);
	}
	job_end(j);
}

static void job_gone(struct sbx_http_req *req, void *arg)
{
	((struct auto_job *)arg)->req = NULL;
}

/* ---- DevTools calls and events --------------------------------------------------- */

static void job_reply(json_t *result, const char *error, void *arg)
{
	struct auto_job *j = arg;

	j->pending--;
	if (j->ended) {
		job_reap(j);
		return;
	}
	if (j->prep >= 0)
		prep_step(j, result, error);
	else
		j->fn(j, result, error);
}

/* A command to the job's page (browser: to the browser itself). */
static void job_call(struct auto_job *j, bool browser, const char *method, json_t *params)
{
	j->pending++;
	j->step++;
	cdp_call(j->a->cdp, browser ? NULL : j->session, method, params, CALL_TIMEOUT_MS, job_reply,
		 j);
}

/* Runtime.evaluate of expression on the page, its value returned. */
static void job_eval(struct auto_job *j, const char *expression)
{
	job_call(j, false, "Runtime.evaluate",
		 json_pack("{s:s, s:b, s:b, s:b}", "expression", expression, "returnByValue", 1,
			   "awaitPromise", 1, "userGesture", 1));
}

/* An evaluation's value, or NULL with *why set (an exception on the page). */
static json_t *eval_value(json_t *result, const char *error, char *why, size_t size)
{
	json_t *ex;

	if (!result) {
		snprintf(why, size, "%s", error);
		return NULL;
	}
	if ((ex = json_object_get(result, "exceptionDetails"))) {
		const char *d =
			sbx_json_str(ex, "exception.description") ?: sbx_json_str(ex, "text");

		snprintf(why, size, "%s", d ?: "the page threw an exception");
		/* "Error: message\n    at ..." -> "message" */
		if (strncmp(why, "Error: ", 7) == 0)
			memmove(why, why + 7, strlen(why + 7) + 1);
		why[strcspn(why, "\n")] = '\0';
		return NULL;
	}
	return json_object_get(json_object_get(result, "result"), "value") ?: json_null();
}

static void job_timeout(uv_timer_t *t)
{
	struct auto_job *j = t->data;

	if (j->ended)
		return;
	if (j->pending) { /* the command's own answer first */
		uv_timer_start(&j->timer, job_timeout, 50, 0);
		return;
	}
	if (j->waiting_for[0]) {
		char why[128];

		snprintf(why, sizeof(why), "timed out waiting for %s", j->waiting_for);
		j->waiting_for[0] = '\0';
		j->step++;
		j->fn(j, NULL, why);
		return;
	}
	j->step++;
	j->fn(j, NULL, NULL); /* a pause is over */
}

/* The job goes on when event arrives on its page, or with an error after ms. */
static void job_wait_event(struct auto_job *j, const char *event, uint64_t ms)
{
	snprintf(j->waiting_for, sizeof(j->waiting_for), "%s", event);
	j->arrived = false;
	uv_timer_start(&j->timer, job_timeout, ms, 0);
}

static void job_stop_waiting(struct auto_job *j)
{
	j->waiting_for[0] = '\0';
	uv_timer_stop(&j->timer);
}

static void job_pause(struct auto_job *j, uint64_t ms)
{
	uv_timer_start(&j->timer, job_timeout, ms, 0);
}

/* ---- the logs ----------------------------------------------------------------------- */

static void log_push(json_t *log, json_t *entry)
{
	if (!entry)
		return;
	if (json_array_size(log) >= AUTOMATION_LOG)
		json_array_remove(log, 0);
	json_array_append_new(log, entry);
}

static const char *tab_url_of_session(struct automation *a, const char *session)
{
	for (unsigned i = 0; i < a->n_tabs; i++)
		if (!strcmp(a->tabs[i].session, session))
			return a->tabs[i].url;
	return "";
}

static void on_console(struct automation *a, const char *session, json_t *p)
{
	struct sbx_buf text;
	json_t *arg;
	size_t i;

	sbx_buf_init(&text, 64 * 1024);
	json_array_foreach(json_object_get(p, "args"), i, arg)
	{
		json_t *v = json_object_get(arg, "value");
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		char *dumped = NULL;

		if (!s && v)
			s = dumped = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		if (!s)
			s = sbx_json_str(arg, "description") ?: sbx_json_str(arg, "type") ?: "";
		if (i)
			sbx_buf_append_str(&text, " ");
		sbx_buf_append_str(&text, s);
		free(dumped);
	}
	log_push(a->console,
		 json_pack("{s:s, s:s, s:f, s:s}", "type", sbx_json_str(p, "type") ?: "log", "text",
			   text.data ? text.data : "", "timestamp",
			   json_number_value(json_object_get(p, "timestamp")) / 1000.0, "url",
			   tab_url_of_session(a, session)));
	sbx_buf_release(&text);
}

static json_t *request_entry(struct automation *a, const char *id)
{
	json_t *e;
	size_t i;

	/* Newest first: the request an event is about is usually recent. */
	for (i = json_array_size(a->requests); i-- > 0;) {
		e = json_array_get(a->requests, i);
		if (!strcmp(sbx_json_str(e, "request_id") ?: "", id))
			return e;
	}
	return NULL;
}

static void on_network(struct automation *a, const char *method, json_t *p)
{
	const char *id = sbx_json_str(p, "requestId");
	json_t *e;

	if (!id)
		return;
	a->network_at = uv_now(a->loop);
	if (!strcmp(method, "Network.requestWillBeSent")) {
		json_t *rq = json_object_get(p, "request");

		log_push(a->requests,
			 json_pack("{s:s, s:s, s:s, s:O?, s:s?, s:s, s:f, s:f, s:n, s:n, s:b}",
				   "request_id", id, "url", sbx_json_str(rq, "url") ?: "", "method",
				   sbx_json_str(rq, "method") ?: "GET", "request_headers",
				   json_object_get(rq, "headers"), "post_data",
				   sbx_json_str(rq, "postData"), "resource_type",
				   sbx_json_str(p, "type") ?: "Other", "wall_time",
				   json_number_value(json_object_get(p, "wallTime")), "started",
				   json_number_value(json_object_get(p, "timestamp")), "status",
				   "mime_type", "failed", 0));
		return;
	}
	if (!(e = request_entry(a, id)))
		return;
	if (!strcmp(method, "Network.responseReceived")) {
		json_t *rs = json_object_get(p, "response");

		json_object_set(e, "status", json_object_get(rs, "status") ?: json_null());
		json_object_set(e, "status_text", json_object_get(rs, "statusText") ?: json_null());
		json_object_set(e, "mime_type", json_object_get(rs, "mimeType") ?: json_null());
		json_object_set(e, "response_headers",
				json_object_get(rs, "headers") ?: json_object());
		json_object_set(e, "protocol", json_object_get(rs, "protocol") ?: json_null());
	} else if (!strcmp(method, "Network.loadingFinished")) {
		json_object_set(e, "size", json_object_get(p, "encodedDataLength") ?: json_null());
		json_object_set(e, "finished", json_object_get(p, "timestamp") ?: json_null());
	} else if (!strcmp(method, "Network.loadingFailed")) {
		json_object_set_new(e, "failed", json_true());
		json_object_set(e, "error", json_object_get(p, "errorText") ?: json_null());
		json_object_set(e, "finished", json_object_get(p, "timestamp") ?: json_null());
	}
}

/* ---- routes ------------------------------------------------------------------------- */

static void route_answered(json_t *result, const char *error, void *arg)
{
	(void)result;
	(void)error;
	(void)arg;
}

/* "scheme://host[:port]" of url into out: its length, or 0. */
static size_t origin_of(const char *url, char *out, size_t size)
{
	const char *host = strstr(url, "://");
	size_t n;

	if (!host)
		return 0;
	n = (size_t)(host + 3 - url) + strcspn(host + 3, "/?#");
	if (n >= size)
		return 0;
	memcpy(out, url, n);
	out[n] = '\0';
	return n;
}

/* Fetch.continueRequest's parameters: the request's own headers with its
 * origin's scoped ones set over them, when it has some. */
static json_t *continue_params(struct automation *a, const char *id, json_t *p)
{
	const char *url = sbx_json_str(p, "request.url") ?: "", *name, *have;
	json_t *scoped, *headers, *v, *own, *value;
	char origin[2048];

	if (!origin_of(url, origin, sizeof(origin)) ||
	    !(scoped = json_object_get(a->scoped, origin)))
		return json_pack("{s:s}", "requestId", id);
	headers = json_array();
	own = json_object_get(json_object_get(p, "request"), "headers");
	json_object_foreach(own, have, value)
	{
		bool replaced = false;

		json_object_foreach(scoped, name, v) replaced = replaced || !strcasecmp(name, have);
		if (!replaced && json_is_string(value))
			json_array_append_new(
				headers, json_pack("{s:s, s:O}", "name", have, "value", value));
	}
	json_object_foreach(scoped, name, v)
		json_array_append_new(headers, json_pack("{s:s, s:O}", "name", name, "value", v));
	return json_pack("{s:s, s:o}", "requestId", id, "headers", headers);
}

/* A request the Fetch domain paused: blocked, answered, or let through by
 * the first route whose pattern (a glob: * and ?) matches its URL. */
static void on_paused(struct automation *a, const char *session, json_t *p)
{
	const char *id = sbx_json_str(p, "requestId"), *url = sbx_json_str(p, "request.url") ?: "";
	json_t *r, *answer;
	size_t i;

	if (!id)
		return;
	json_array_foreach(a->routes, i, r)
	{
		if (fnmatch(sbx_json_str(r, "url_pattern") ?: "", url, 0) != 0)
			continue;
		if (json_is_true(json_object_get(r, "abort"))) {
			cdp_call(a->cdp, session, "Fetch.failRequest",
				 json_pack("{s:s, s:s}", "requestId", id, "errorReason",
					   "BlockedByClient"),
				 CALL_TIMEOUT_MS, route_answered, NULL);
			return;
		}
		if (json_is_object(answer = json_object_get(r, "response"))) {
			const char *body = sbx_json_str(answer, "body") ?: "";
			json_t *headers = json_array(), *h;
			const char *name;
			char *b64 = NULL;
			size_t n;

			json_object_foreach(json_object_get(answer, "headers"), name, h)
			{
				if (json_is_string(h))
					json_array_append_new(
						headers,
						json_pack("{s:s, s:O}", "name", name, "value", h));
			}
			if (!json_object_get(json_object_get(answer, "headers"), "content-type") &&
			    !json_object_get(json_object_get(answer, "headers"), "Content-Type"))
				json_array_append_new(headers,
						      json_pack("{s:s, s:s}", "name",
								"Content-Type", "value",
								sbx_json_str(answer, "content_type")
									?: "text/plain"));
			sbx_base64_encode(body, strlen(body), &b64, &n);
			cdp_call(a->cdp, session, "Fetch.fulfillRequest",
				 json_pack("{s:s, s:I, s:o, s:s}", "requestId", id, "responseCode",
					   json_integer_value(json_object_get(answer, "status"))
						   ?: (json_int_t)200,
					   "responseHeaders", headers, "body", b64 ? b64 : ""),
				 CALL_TIMEOUT_MS, route_answered, NULL);
			sbx_free(b64);
			return;
		}
	}
	cdp_call(a->cdp, session, "Fetch.continueRequest", continue_params(a, id, p),
		 CALL_TIMEOUT_MS, route_answered, NULL);
}

/* Fetch.enable with the routes' patterns and the scoped origins' on one
 * page (disable when none). */
static json_t *fetch_patterns(struct automation *a)
{
	json_t *patterns = json_array(), *r;
	const char *origin;
	char glob[2100];
	size_t i;

	json_array_foreach(a->routes, i, r) json_array_append_new(
		patterns, json_pack("{s:s}", "urlPattern", sbx_json_str(r, "url_pattern") ?: "*"));
	json_object_foreach(a->scoped, origin, r)
	{
		snprintf(glob, sizeof(glob), "%s/*", origin);
		json_array_append_new(patterns, json_pack("{s:s}", "urlPattern", glob));
	}
	return patterns;
}

static bool intercepting(const struct automation *a)
{
	return json_array_size(a->routes) || json_object_size(a->scoped);
}

/* ---- page recording: frames ----------------------------------------------------------- */

static void rec_finish(struct automation *a);

static void frame_acked(json_t *result, const char *error, void *arg)
{
	(void)result;
	(void)error;
	(void)arg;
}

/* A screencast frame: acknowledged (the browser sends the next one only
 * then), and the recording's latest picture if it is its page's. */
static void on_frame(struct automation *a, const char *session, json_t *p)
{
	const char *data = sbx_json_str(p, "data");
	char *jpeg;
	size_t len;

	if (a->cdp)
		cdp_call(a->cdp, session, "Page.screencastFrameAck",
			 json_pack("{s:O}", "sessionId", json_object_get(p, "sessionId")),
			 CALL_TIMEOUT_MS, frame_acked, NULL);
	if (!a->rec || a->rec_finishing || strcmp(a->rec_session, session) || !data ||
	    sbx_base64_decode(data, strlen(data), &jpeg, &len))
		return;
	recording_frame(a->rec, jpeg, len);
	sbx_free(jpeg);
}

/* ---- events -------------------------------------------------------------------------- */

static void on_event(const char *method, const char *session, json_t *params, void *arg)
{
	struct automation *a = arg;

	if (!strcmp(method, "Runtime.consoleAPICalled")) {
		on_console(a, session, params);
	} else if (!strcmp(method, "Runtime.exceptionThrown")) {
		const char *d = sbx_json_str(params, "exceptionDetails.exception.description")
					?: sbx_json_str(params, "exceptionDetails.text") ?: "";

		log_push(a->console,
			 json_pack("{s:s, s:s, s:f, s:s}", "type", "error", "text", d, "timestamp",
				   json_number_value(json_object_get(params, "timestamp")) / 1000.0,
				   "url", tab_url_of_session(a, session)));
	} else if (!strncmp(method, "Network.", 8)) {
		on_network(a, method, params);
	} else if (!strcmp(method, "Fetch.requestPaused")) {
		on_paused(a, session, params);
	} else if (!strcmp(method, "Page.screencastFrame")) {
		on_frame(a, session, params);
	} else if (!strcmp(method, "Page.frameNavigated") &&
		   !json_object_get(json_object_get(params, "frame"), "parentId")) {
		for (unsigned i = 0; i < a->n_tabs; i++)
			if (!strcmp(a->tabs[i].session, session))
				snprintf(a->tabs[i].url, sizeof(a->tabs[i].url), "%s",
					 sbx_json_str(params, "frame.url") ?: "");
	} else if (!strcmp(method, "Target.detachedFromTarget")) {
		const char *s = sbx_json_str(params, "sessionId") ?: "";

		for (unsigned i = 0; i < a->n_tabs; i++)
			if (!strcmp(a->tabs[i].session, s))
				a->tabs[i].session[0] = '\0';
		if (a->rec && !strcmp(a->rec_session, s))
			rec_finish(a); /* its page is gone */
	}
	/* Jobs waiting for this event on this page. */
	for (struct auto_job *j = a->jobs, *next; j; j = next) {
		next = j->next;
		if (j->ended || !j->waiting_for[0] || strcmp(j->waiting_for, method) ||
		    strcmp(j->session, session))
			continue;
		job_stop_waiting(j);
		if (j->pending) {
			/* Before the answer to the command that caused it: the
			 * operation sees it when the answer comes. */
			j->arrived = true;
			continue;
		}
		j->step++;
		j->fn(j, params, NULL);
	}
}

static void on_lost(void *arg)
{
	struct automation *a = arg;

	a->rec_session[0] = '\0'; /* nothing to tell a browser that is gone */
	rec_finish(a);

	/* Sessions die with the connection. */
	for (unsigned i = 0; i < a->n_tabs; i++)
		a->tabs[i].session[0] = '\0';
}

/* ---- tabs and the preparation --------------------------------------------------------- */

static struct auto_tab *tab_by_target(struct automation *a, const char *target)
{
	for (unsigned i = 0; i < a->n_tabs; i++)
		if (!strcmp(a->tabs[i].target, target))
			return &a->tabs[i];
	return NULL;
}

/* Target.getTargets' pages: known ones keep their place, new ones go last,
 * closed ones go. */
static void tabs_update(struct automation *a, json_t *infos)
{
	json_t *t;
	size_t i;
	unsigned k = 0;

	for (unsigned n = 0; n < a->n_tabs; n++)
		a->tabs[n].seen = false;
	json_array_foreach(infos, i, t)
	{
		const char *id = sbx_json_str(t, "targetId");
		struct auto_tab *tab;

		if (!id || strcmp(sbx_json_str(t, "type") ?: "", "page"))
			continue;
		if (!(tab = tab_by_target(a, id))) {
			if (a->n_tabs == AUTOMATION_MAX_TABS)
				continue;
			tab = &a->tabs[a->n_tabs++];
			memset(tab, 0, sizeof(*tab));
			snprintf(tab->target, sizeof(tab->target), "%s", id);
		}
		tab->seen = true;
		snprintf(tab->url, sizeof(tab->url), "%s", sbx_json_str(t, "url") ?: "");
		snprintf(tab->title, sizeof(tab->title), "%s", sbx_json_str(t, "title") ?: "");
	}
	for (unsigned n = 0; n < a->n_tabs; n++)
		if (a->tabs[n].seen)
			a->tabs[k++] = a->tabs[n];
	a->n_tabs = k;
	if (!tab_by_target(a, a->active))
		snprintf(a->active, sizeof(a->active), "%s", k ? a->tabs[0].target : "");
}

static json_t *tabs_json(struct automation *a)
{
	json_t *list = json_array();

	for (unsigned i = 0; i < a->n_tabs; i++)
		json_array_append_new(list,
				      json_pack("{s:i, s:s, s:s, s:s, s:b}", "index", (int)i,
						"target_id", a->tabs[i].target, "url",
						a->tabs[i].url, "title", a->tabs[i].title, "active",
						!strcmp(a->tabs[i].target, a->active)));
	return list;
}

/* The resolution POST /v1/browser/config set, as a page's viewport. */
static json_t *metrics_params(const struct automation *a)
{
	return json_pack("{s:i, s:i, s:i, s:b}", "width", (int)a->res_width, "height",
			 (int)a->res_height, "deviceScaleFactor", 0, "mobile", 0);
}

/* Steps: 1 the targets, 2 a page created (then the targets again), 3 the
 * active page attached, 4.. its domains enabled; then the operation. */
static void prep_step(struct auto_job *j, json_t *result, const char *error)
{
	struct automation *a = j->a;
	struct auto_tab *tab;

	if (error) {
		job_fail(j, 502, "the browser did not answer: %s", error);
		return;
	}
	switch (j->prep++) {
	case 0:
		job_call(j, true, "Target.getTargets", NULL);
		return;
	case 1:
		tabs_update(a, json_object_get(result, "targetInfos"));
		if (a->n_tabs) {
			j->prep = 3;
			prep_step(j, NULL, NULL);
			return;
		}
		job_call(j, true, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"));
		return;
	case 2:
		j->prep = 1;
		job_call(j, true, "Target.getTargets", NULL);
		return;
	case 3:
		tab = tab_by_target(a, a->active);
		snprintf(j->target, sizeof(j->target), "%s", a->active);
		if (tab && tab->session[0]) {
			snprintf(j->session, sizeof(j->session), "%s", tab->session);
			break;
		}
		job_call(j, true, "Target.attachToTarget",
			 json_pack("{s:s, s:b}", "targetId", j->target, "flatten", 1));
		return;
	case 4:
		if (!(tab = tab_by_target(a, j->target)) || !sbx_json_str(result, "sessionId")) {
			job_fail(j, 502, "the browser's page went away");
			return;
		}
		snprintf(tab->session, sizeof(tab->session), "%s",
			 sbx_json_str(result, "sessionId"));
		snprintf(j->session, sizeof(j->session), "%s", tab->session);
		job_call(j, false, "Page.enable", NULL);
		return;
	case 5:
		job_call(j, false, "Runtime.enable", NULL);
		return;
	case 6:
		job_call(j, false, "Network.enable", NULL);
		return;
	case 7:
		job_call(j, false, "Network.setExtraHTTPHeaders",
			 json_pack("{s:O}", "headers", a->headers));
		return;
	case 8:
		if (intercepting(a)) {
			job_call(j, false, "Fetch.enable",
				 json_pack("{s:o}", "patterns", fetch_patterns(a)));
			return;
		}
		j->prep++;
		__attribute__((fallthrough));
	case 9:
		if (a->res_width) {
			job_call(j, false, "Emulation.setDeviceMetricsOverride", metrics_params(a));
			return;
		}
		break;
	default:
		break;
	}
	j->prep = -1;
	j->step = 0;
	j->fn(j, NULL, NULL);
}

/* A job for req running fn; with_page: on the active page (prepared). */
static void job_start(struct automation *a, struct sbx_http_req *req, json_t *body, job_fn fn,
		      bool with_page)
{
	struct auto_job *j;

	if (!a->cdp_addr) {
		json_t *env = api_envelope(false, no_browser, NULL);

		sbx_http_respond_json(req, 503, env);
		json_decref(env);
		json_decref(body);
		return;
	}
	if (!a->cdp && !(a->cdp = cdp_new(a->loop, a->cdp_addr, on_event, on_lost, a))) {
		sbx_http_respond_error(req, 503, "out of memory");
		json_decref(body);
		return;
	}
	if (!(j = sbx_calloc(1, sizeof(*j)))) {
		sbx_http_respond_error(req, 503, "out of memory");
		json_decref(body);
		return;
	}
	j->a = a;
	j->req = req;
	j->body = body ? body : json_object();
	j->fn = fn;
	j->prep = with_page ? 0 : -1;
	uv_timer_init(a->loop, &j->timer);
	j->timer.data = j;
	j->next = a->jobs;
	a->jobs = j;
	sbx_http_on_abort(req, job_gone, j);
	if (with_page)
		prep_step(j, NULL, NULL);
	else
		fn(j, NULL, NULL);
}

/* ---- request fields ------------------------------------------------------------------ */

/* The body's string field, or NULL (422 sent) when required and missing or
 * not a string. */
static bool field_string(struct sbx_http_req *req, json_t *body, const char *name, bool required,
			 const char **out)
{
	json_t *v = json_object_get(body, name);
	char loc[64];

	snprintf(loc, sizeof(loc), "body.%s", name);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			api_invalid(req, loc, "Field required", "missing");
		return !required;
	}
	if (!json_is_string(v)) {
		api_invalid(req, loc, "Input should be a valid string", "string_type");
		return false;
	}
	*out = json_string_value(v);
	return true;
}

/* selector or index: the element a request names; false (422 sent) if
 * neither, or mistyped. */
static bool element_args(struct sbx_http_req *req, json_t *body, bool coordinates_too)
{
	json_t *sel = json_object_get(body, "selector"), *idx = json_object_get(body, "index");
	bool has_sel = sel && !json_is_null(sel), has_idx = idx && !json_is_null(idx);
	bool has_xy = coordinates_too && json_is_number(json_object_get(body, "x")) &&
		      json_is_number(json_object_get(body, "y"));

	if (has_sel && !json_is_string(sel)) {
		api_invalid(req, "body.selector", "Input should be a valid string", "string_type");
		return false;
	}
	if (has_idx && !json_is_integer(idx)) {
		api_invalid(req, "body.index", "Input should be a valid integer", "int_type");
		return false;
	}
	if (!has_sel && !has_idx && !has_xy) {
		api_invalid(req, "body",
			    coordinates_too ? "Give a selector, an index, or x and y"
					    : "Give a selector or an index",
			    "missing");
		return false;
	}
	return true;
}

/* "__sbx.find(<selector JSON>, <index>)" for the body's element. */
static void element_expr(json_t *body, struct sbx_buf *out)
{
	json_t *sel = json_object_get(body, "selector"), *idx = json_object_get(body, "index");
	char *s = json_is_string(sel) ? json_dumps(sel, JSON_ENCODE_ANY) : NULL;
	char num[32];

	snprintf(num, sizeof(num), "%lld",
		 json_is_integer(idx) ? (long long)json_integer_value(idx) : -1LL);
	sbx_buf_cat(out, "__sbx.find(", s ? s : "null", ",", json_is_integer(idx) ? num : "null",
		    ")");
	free(s);
}

/* ---- navigation ------------------------------------------------------------------------ */

/* The event a wait_until names ("commit": none). */
static const char *load_event(const char *wait_until)
{
	if (!wait_until || !strcmp(wait_until, "load") || !strcmp(wait_until, "networkidle"))
		return "Page.loadEventFired";
	if (!strcmp(wait_until, "domcontentloaded"))
		return "Page.domContentEventFired";
	return NULL;
}

/* The page's URL and title as the operation's answer. */
static void answer_location(struct auto_job *j, json_t *result, const char *error,
			    const char *message)
{
	char why[300];
	json_t *v = eval_value(result, error, why, sizeof(why));

	if (!v) {
		job_fail(j, 502, "%s", why);
		return;
	}
	job_ok(j, message,
	       json_pack("{s:O?, s:O?}", "url", json_array_get(v, 0), "title",
			 json_array_get(v, 1)));
}

static uint64_t timeout_ms(json_t *body, uint64_t dflt)
{
	json_t *t = json_object_get(body, "timeout");
	double s = json_number_value(t);

	if (!json_is_number(t) || !isfinite(s) || s <= 0)
		return dflt;
	/* AIO's timeouts are seconds; beyond an hour it must be milliseconds. */
	return s > 3600 ? (uint64_t)s : (uint64_t)(s * 1000);
}

#define STEP_LOCATION 100

static void location_step(struct auto_job *j)
{
	j->step = STEP_LOCATION;
	job_eval(j, "[location.href, document.title]");
}

/* The command that starts a navigation has answered (result, error); its
 * load event is awaited (or has come: j->arrived). */
static void navigation_answered(struct auto_job *j, json_t *result, const char *error,
				const char *what)
{
	if (error || sbx_json_str(result, "errorText")) {
		job_stop_waiting(j);
		job_fail(j, 200, "%s failed: %s", what,
			 error ? error : sbx_json_str(result, "errorText"));
		return;
	}
	if (!j->waiting_for[0]) {
		/* The load came first, or none was asked for. */
		if (j->arrived || !load_event(sbx_json_str(j->body, "wait_until")) ||
		    !strcmp(sbx_json_str(j->body, "wait_until") ?: "", "commit"))
			location_step(j);
		return;
	}
	if (result && !json_object_get(result, "loaderId") && json_object_get(result, "frameId")) {
		/* A same-document navigation: no load follows. */
		job_stop_waiting(j);
		location_step(j);
	}
	/* else: the load event is the next step */
}

/* The load event came (or its wait timed out: error). */
static void navigation_loaded(struct auto_job *j, const char *error, const char *what)
{
	if (error) {
		job_fail(j, 200, "%s: %s", what, error);
		return;
	}
	if (!strcmp(sbx_json_str(j->body, "wait_until") ?: "", "networkidle")) {
		/* The load, then a moment without new requests. */
		j->step = STEP_LOCATION - 2;
		job_pause(j, NETWORK_IDLE_MS);
		return;
	}
	location_step(j);
}

static void op_navigate(struct auto_job *j, json_t *result, const char *error)
{
	const char *url = sbx_json_str(j->body, "url"), *wait = sbx_json_str(j->body, "wait_until"),
		   *event = load_event(wait);
	char what[300];

	snprintf(what, sizeof(what), "navigation to %.250s", url);
	switch (j->step) {
	case 0:
		/* The wait begins before the command: the event may come first. */
		if (event && strcmp(wait ? wait : "", "commit"))
			job_wait_event(j, event, timeout_ms(j->body, DEFAULT_WAIT_MS));
		job_call(j, false, "Page.navigate", json_pack("{s:s}", "url", url));
		return;
	case 1:
		navigation_answered(j, result, error, what);
		return;
	case 2:
		navigation_loaded(j, error, what);
		return;
	case STEP_LOCATION - 1: /* the pause after the load */
		location_step(j);
		return;
	default:
		answer_location(j, result, error, "Navigated");
	}
}

void automation_navigate(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *url, *wait = NULL;

	if (!body)
		return;
	if (!field_string(req, body, "url", true, &url) ||
	    !field_string(req, body, "wait_until", false, &wait)) {
		json_decref(body);
		return;
	}
	if (wait && strcmp(wait, "load") && strcmp(wait, "domcontentloaded") &&
	    strcmp(wait, "networkidle") && strcmp(wait, "commit")) {
		api_invalid(req, "body.wait_until",
			    "Input should be 'load', 'domcontentloaded', 'networkidle' or 'commit'",
			    "enum");
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_navigate, true);
}

/* reload: the command, then the load. back and forward: a move to the
 * history entry, then the page polled until it is that entry's and
 * complete (a page restored from the back/forward cache fires no load). */
static void op_history(struct auto_job *j, json_t *result, const char *error)
{
	const char *how = sbx_json_str(j->body, "_how");
	char why[300];
	json_t *v;

	switch (j->step) {
	case 0:
		j->x = (double)(uv_now(j->a->loop) + DEFAULT_WAIT_MS);
		if (!strcmp(how, "reload")) {
			job_wait_event(j, "Page.loadEventFired", DEFAULT_WAIT_MS);
			j->step = 1;
			job_call(j, false, "Page.reload", NULL);
			return;
		}
		job_call(j, false, "Page.getNavigationHistory", NULL);
		return;
	case 1: {
		json_t *entries = json_object_get(result, "entries"), *entry;
		json_int_t at = json_integer_value(json_object_get(result, "currentIndex"));
		json_int_t to = at + (!strcmp(how, "back") ? -1 : 1);

		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		if (to < 0 || (size_t)to >= json_array_size(entries)) {
			job_fail(j, 200, "there is no page to go %s to", how);
			return;
		}
		entry = json_array_get(entries, (size_t)to);
		j->acc = json_incref(json_object_get(entry, "url"));
		j->step = 10;
		job_call(j, false, "Page.navigateToHistoryEntry",
			 json_pack("{s:O}", "entryId", json_object_get(entry, "id")));
		return;
	}
	case 2: /* reload answered */
		navigation_answered(j, result, error, how);
		return;
	case 3: /* reload's load */
		navigation_loaded(j, error, how);
		return;
	case 11: /* the move answered, or a poll's pause is over */
	case 13:
		if (error) {
			job_fail(j, 200, "%s failed: %s", how, error);
			return;
		}
		{
			char *url = json_dumps(j->acc, JSON_ENCODE_ANY);
			struct sbx_buf e;

			sbx_buf_init(&e, 8192);
			sbx_buf_cat(&e, "location.href===", url ? url : "''",
				    "&&document.readyState==='complete'");
			free(url);
			j->step = 11;
			job_eval(j, e.data ? e.data : "false");
			sbx_buf_release(&e);
		}
		return;
	case 12: /* the poll's answer */
		if (!(v = eval_value(result, error, why, sizeof(why)))) {
			job_fail(j, 200, "%s: %s", how, why);
			return;
		}
		if (json_is_true(v)) {
			location_step(j);
			return;
		}
		if ((double)uv_now(j->a->loop) >= j->x) {
			job_fail(j, 200, "%s: the page did not load in time", how);
			return;
		}
		job_pause(j, 50);
		return;
	default:
		answer_location(j, result, error, !strcmp(how, "reload") ? "Reloaded" : "Moved");
	}
}

static void history(struct sbx_http_req *req, void *arg, const char *how)
{
	json_t *body = json_pack("{s:s}", "_how", how);

	job_start(arg, req, body, op_history, true);
}

void automation_back(struct sbx_http_req *req, void *arg)
{
	history(req, arg, "back");
}

void automation_forward(struct sbx_http_req *req, void *arg)
{
	history(req, arg, "forward");
}

void automation_reload(struct sbx_http_req *req, void *arg)
{
	history(req, arg, "reload");
}

/* An operation of one command: body's "_method" with "_params" (to the
 * browser when "_browser"), answered with "_message"; a refusal is
 * success false with "_refused" before the browser's reason. */
static void op_one(struct auto_job *j, json_t *result, const char *error)
{
	if (j->step == 0) {
		json_t *params = json_object_get(j->body, "_params");

		job_call(j, json_is_true(json_object_get(j->body, "_browser")),
			 sbx_json_str(j->body, "_method"), params ? json_incref(params) : NULL);
		return;
	}
	if (error)
		job_fail(j, 200, "%s: %s",
			 sbx_json_str(j->body, "_refused") ?: "the browser refused", error);
	else
		job_ok(j, sbx_json_str(j->body, "_message"), NULL);
}

static void one_command(struct sbx_http_req *req, void *arg, bool browser, const char *method,
			json_t *params, const char *message, const char *refused)
{
	job_start(arg, req,
		  json_pack("{s:s, s:o?, s:b, s:s, s:s?}", "_method", method, "_params", params,
			    "_browser", browser, "_message", message, "_refused", refused),
		  op_one, true);
}

/* ---- input ------------------------------------------------------------------------------ */

static void mouse(struct auto_job *j, const char *type, int clicks)
{
	const char *button = sbx_json_str(j->body, "button") ?: "left";

	job_call(j, false, "Input.dispatchMouseEvent",
		 json_pack("{s:s, s:f, s:f, s:s, s:i}", "type", type, "x", j->x, "y", j->y,
			   "button", strcmp(type, "mouseMoved") ? button : "none", "clickCount",
			   clicks));
}

static void op_click(struct auto_job *j, json_t *result, const char *error)
{
	json_int_t clicks = json_integer_value(json_object_get(j->body, "click_count")) ?: 1;
	char why[300];
	json_t *v;

	switch (j->step) {
	case 0:
		if (json_is_number(json_object_get(j->body, "x")) &&
		    !json_is_string(json_object_get(j->body, "selector")) &&
		    !json_is_integer(json_object_get(j->body, "index"))) {
			j->x = json_number_value(json_object_get(j->body, "x"));
			j->y = json_number_value(json_object_get(j->body, "y"));
			j->step = 1;
			mouse(j, "mouseMoved", 0);
			return;
		} else {
			struct sbx_buf e;

			sbx_buf_init(&e, 1 << 20);
			sbx_buf_cat(&e, "(()=>{", find_js, "return __sbx.point(");
			element_expr(j->body, &e);
			sbx_buf_append_str(&e, ");})()");
			job_eval(j, e.data ? e.data : "");
			sbx_buf_release(&e);
		}
		return;
	case 1:
		if (!(v = eval_value(result, error, why, sizeof(why)))) {
			job_fail(j, 200, "cannot click: %s", why);
			return;
		}
		j->x = json_number_value(json_array_get(v, 0));
		j->y = json_number_value(json_array_get(v, 1));
		mouse(j, "mouseMoved", 0);
		return;
	case 2:
		if (json_is_true(json_object_get(j->body, "_hover"))) {
			if (error)
				job_fail(j, 502, "%s", error);
			else
				job_ok(j, "Hovered", json_pack("{s:f, s:f}", "x", j->x, "y", j->y));
			return;
		}
		mouse(j, "mousePressed", (int)clicks);
		return;
	case 3:
		mouse(j, "mouseReleased", (int)clicks);
		return;
	default:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		job_ok(j, "Clicked", json_pack("{s:f, s:f}", "x", j->x, "y", j->y));
	}
}

void automation_click(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);

	if (!body)
		return;
	if (!element_args(req, body, true)) {
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_click, true);
}

void automation_hover(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);

	if (!body)
		return;
	if (!element_args(req, body, true)) {
		json_decref(body);
		return;
	}
	json_object_set_new(body, "_hover", json_true());
	job_start(arg, req, body, op_click, true);
}

/* Focus the element item names and select what it holds: the typed text
 * replaces it, through the page's own input events (an empty text is a
 * cleared value). */
static void fill_expr(json_t *item, bool have_text, struct sbx_buf *e)
{
	sbx_buf_cat(e, "(()=>{", find_js, "const e=");
	element_expr(item, e);
	sbx_buf_cat(e,
		    ";e.scrollIntoView({block:'center'});e.focus();"
		    "if(typeof e.select==='function')e.select();else{const r=document."
		    "createRange();r.selectNodeContents(e);const s=getSelection();"
		    "s.removeAllRanges();s.addRange(r);}",
		    have_text
			    ? ""
			    : "if('value' in e){e.value='';e.dispatchEvent(new Event('input',"
			      "{bubbles:true}));e.dispatchEvent(new Event('change',{bubbles:true}))"
			      ";}else{e.textContent='';}",
		    "return true;})()");
}

static void op_fill(struct auto_job *j, json_t *result, const char *error)
{
	const char *text = sbx_json_str(j->body, "text");
	char why[300];
	struct sbx_buf e;

	switch (j->step) {
	case 0:
		sbx_buf_init(&e, 1 << 20);
		fill_expr(j->body, *text, &e);
		job_eval(j, e.data ? e.data : "");
		sbx_buf_release(&e);
		return;
	case 1:
		if (!eval_value(result, error, why, sizeof(why))) {
			job_fail(j, 200, "cannot fill: %s", why);
			return;
		}
		if (!*text) {
			job_ok(j, "Filled", NULL);
			return;
		}
		job_call(j, false, "Input.insertText", json_pack("{s:s}", "text", text));
		return;
	default:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		job_ok(j, "Filled", NULL);
	}
}

void automation_fill(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *text;

	if (!body)
		return;
	if (!field_string(req, body, "text", true, &text) || !element_args(req, body, false)) {
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_fill, true);
}

void automation_type(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *text;

	if (!body)
		return;
	if (field_string(req, body, "text", true, &text))
		one_command(req, arg, false, "Input.insertText", json_pack("{s:s}", "text", text),
			    "Typed", NULL);
	json_decref(body);
}

struct key {
	const char *name, *key, *code, *text;
	int vk;
};

static const struct key keys_table[] = {
	{ "Enter", "Enter", "Enter", "\r", 13 },
	{ "Tab", "Tab", "Tab", NULL, 9 },
	{ "Escape", "Escape", "Escape", NULL, 27 },
	{ "Backspace", "Backspace", "Backspace", NULL, 8 },
	{ "Delete", "Delete", "Delete", NULL, 46 },
	{ "ArrowUp", "ArrowUp", "ArrowUp", NULL, 38 },
	{ "ArrowDown", "ArrowDown", "ArrowDown", NULL, 40 },
	{ "ArrowLeft", "ArrowLeft", "ArrowLeft", NULL, 37 },
	{ "ArrowRight", "ArrowRight", "ArrowRight", NULL, 39 },
	{ "Home", "Home", "Home", NULL, 36 },
	{ "End", "End", "End", NULL, 35 },
	{ "PageUp", "PageUp", "PageUp", NULL, 33 },
	{ "PageDown", "PageDown", "PageDown", NULL, 34 },
	{ "Space", " ", "Space", " ", 32 },
};

static void op_key(struct auto_job *j, json_t *result, const char *error)
{
	const char *name = sbx_json_str(j->body, "key");
	struct key k = { name, name, "", NULL, 0 };
	char text[8] = "";
	json_t *ev;

	for (size_t i = 0; i < sizeof(keys_table) / sizeof(keys_table[0]); i++)
		if (!strcasecmp(keys_table[i].name, name))
			k = keys_table[i];
	if (!k.vk && strlen(name) == 1) {
		snprintf(text, sizeof(text), "%s", name);
		k.text = text;
		k.vk = toupper((unsigned char)name[0]);
	}
	if (j->step >= 2 || (j->step == 1 && error)) {
		if (error)
			job_fail(j, 502, "%s", error);
		else
			job_ok(j, "Pressed", NULL);
		return;
	}
	ev = json_pack("{s:s, s:s, s:s, s:i, s:i}", "type",
		       j->step == 0 ? (k.text ? "keyDown" : "rawKeyDown") : "keyUp", "key", k.key,
		       "code", k.code, "windowsVirtualKeyCode", k.vk, "nativeVirtualKeyCode", k.vk);
	if (j->step == 0 && k.text)
		json_object_set_new(ev, "text", json_string(k.text));
	job_call(j, false, "Input.dispatchKeyEvent", ev);
}

void automation_press_key(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *key;

	if (!body)
		return;
	if (!field_string(req, body, "key", true, &key)) {
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_key, true);
}

/* Fills several fields, one after another: items [{selector or index,
 * value or text}]. */
static void op_fill_form(struct auto_job *j, json_t *result, const char *error)
{
	json_t *items = json_object_get(j->body, "items"), *item;
	size_t at = (size_t)j->y;
	const char *text;
	char why[300];
	struct sbx_buf e;

	if (j->step > 0 && (j->step % 2) == 1) { /* the focus answered */
		if (!eval_value(result, error, why, sizeof(why))) {
			job_fail(j, 200, "cannot fill item %zu: %s", at, why);
			return;
		}
		item = json_array_get(items, at);
		text = sbx_json_str(item, "value") ?: sbx_json_str(item, "text") ?: "";
		if (*text) {
			job_call(j, false, "Input.insertText", json_pack("{s:s}", "text", text));
			return;
		}
		j->step++;
	}
	if (j->step > 0) { /* an item is done */
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		at = (size_t)++j->y;
	}
	if (at >= json_array_size(items)) {
		job_ok(j, "Form filled", json_pack("{s:i}", "filled", (int)at));
		return;
	}
	item = json_array_get(items, at);
	text = sbx_json_str(item, "value") ?: sbx_json_str(item, "text") ?: "";
	sbx_buf_init(&e, 1 << 20);
	fill_expr(item, *text, &e);
	job_eval(j, e.data ? e.data : "");
	sbx_buf_release(&e);
}

void automation_fill_form(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *item;
	size_t i;

	if (!body)
		return;
	if (!json_is_array(json_object_get(body, "items"))) {
		api_invalid(req, "body.items", "Input should be a valid list", "list_type");
		goto bad;
	}
	json_array_foreach(json_object_get(body, "items"), i, item)
	{
		json_t *v = json_object_get(item, "value") ?: json_object_get(item, "text");

		if (!json_is_object(item) || !element_args(req, item, false))
			goto bad;
		if (v && !json_is_string(v)) {
			api_invalid(req, "body.items", "value should be a string", "string_type");
			goto bad;
		}
	}
	job_start(arg, req, body, op_fill_form, true);
	return;
bad:
	json_decref(body);
}

/* Keys held together (["Control", "a"]): each pressed with the modifiers
 * before it, then released in reverse. */
static void op_hot_key(struct auto_job *j, json_t *result, const char *error)
{
	json_t *keys = json_object_get(j->body, "keys");
	size_t n = json_array_size(keys), at = (size_t)j->step;
	int modifiers = 0;
	bool down = at < n;
	const char *name;
	size_t k;

	if (error) {
		job_fail(j, 502, "%s", error);
		return;
	}
	if (at >= 2 * n) {
		job_ok(j, "Pressed", NULL);
		return;
	}
	k = down ? at : 2 * n - 1 - at;
	for (size_t i = 0; i < (down ? k + 1 : k); i++) {
		const char *m = json_string_value(json_array_get(keys, i));

		modifiers |= !strcasecmp(m, "Alt")				   ? 1
			     : !strcasecmp(m, "Control") || !strcasecmp(m, "Ctrl") ? 2
			     : !strcasecmp(m, "Meta") || !strcasecmp(m, "Command") ? 4
			     : !strcasecmp(m, "Shift")				   ? 8
										   : 0;
	}
	name = json_string_value(json_array_get(keys, k));
	{
		struct key key = { name, name, name, NULL, 0 };
		char code[16] = "";

		for (size_t i = 0; i < sizeof(keys_table) / sizeof(keys_table[0]); i++)
			if (!strcasecmp(keys_table[i].name, name))
				key = keys_table[i];
		if (!strcasecmp(name, "Ctrl"))
			key = (struct key){ "Control", "Control", "ControlLeft", NULL, 17 };
		else if (!key.vk && strlen(name) == 1) {
			snprintf(code, sizeof(code), "Key%c", toupper((unsigned char)name[0]));
			key.code = code;
			key.vk = toupper((unsigned char)name[0]);
		}
		job_call(j, false, "Input.dispatchKeyEvent",
			 json_pack("{s:s, s:s, s:s, s:i, s:i, s:i}", "type",
				   down ? "rawKeyDown" : "keyUp", "key", key.key, "code", key.code,
				   "windowsVirtualKeyCode", key.vk, "nativeVirtualKeyCode", key.vk,
				   "modifiers", modifiers));
	}
}

void automation_hot_key(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *k;
	size_t i;

	if (!body)
		return;
	if (!json_array_size(json_object_get(body, "keys"))) {
		api_invalid(req, "body.keys", "Give at least one key", "too_short");
		json_decref(body);
		return;
	}
	json_array_foreach(json_object_get(body, "keys"), i, k)
	{
		if (!json_is_string(k) || !*json_string_value(k)) {
			api_invalid(req, "body.keys", "Each key should be a name", "string_type");
			json_decref(body);
			return;
		}
	}
	job_start(arg, req, body, op_hot_key, true);
}

static void op_upload(struct auto_job *j, json_t *result, const char *error)
{
	const char *id;
	json_t *files, *f;
	size_t i;

	switch (j->step) {
	case 0: {
		json_t *sel = json_object_get(j->body, "selector");
		char *q = json_dumps(sel, JSON_ENCODE_ANY);
		struct sbx_buf e;

		sbx_buf_init(&e, 1 << 16);
		sbx_buf_cat(&e, "document.querySelector(", q ? q : "''", ")");
		free(q);
		job_call(j, false, "Runtime.evaluate",
			 json_pack("{s:s}", "expression", e.data ? e.data : ""));
		sbx_buf_release(&e);
		return;
	}
	case 1:
		if (error || !(id = sbx_json_str(result, "result.objectId"))) {
			job_fail(j, 200, "cannot upload: no element matches %s",
				 sbx_json_str(j->body, "selector"));
			return;
		}
		files = json_array();
		json_array_foreach(json_object_get(j->body, "files"), i, f)
		{
			job_path(j, json_string_value(f));
			json_array_append_new(files, json_string(j->path));
		}
		job_call(j, false, "DOM.setFileInputFiles",
			 json_pack("{s:o, s:s}", "files", files, "objectId", id));
		return;
	default:
		if (error)
			job_fail(j, 200, "cannot upload: %s", error);
		else
			job_ok(j, "Files set",
			       json_pack("{s:O}", "files", json_object_get(j->body, "files")));
	}
}

void automation_upload_file(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *f;
	const char *sel;
	size_t i;

	if (!body)
		return;
	if (!field_string(req, body, "selector", true, &sel))
		goto bad;
	if (!json_array_size(json_object_get(body, "files"))) {
		api_invalid(req, "body.files", "Give at least one file", "too_short");
		goto bad;
	}
	json_array_foreach(json_object_get(body, "files"), i, f)
	{
		if (!json_is_string(f) || !*json_string_value(f)) {
			api_invalid(req, "body.files", "Each file should be a path", "string_type");
			goto bad;
		}
	}
	job_start(arg, req, body, op_upload, true);
	return;
bad:
	json_decref(body);
}

/* ---- reading the page ------------------------------------------------------------------ */

static void op_read(struct auto_job *j, json_t *result, const char *error)
{
	char why[300];
	json_t *v;

	if (j->step == 0) {
		job_eval(j, sbx_json_str(j->body, "_expression"));
		return;
	}
	if (!(v = eval_value(result, error, why, sizeof(why)))) {
		job_fail(j, 200, "%s", why);
		return;
	}
	job_ok(j, sbx_json_str(j->body, "_message"), json_incref(v));
}

static void read_page(struct sbx_http_req *req, void *arg, const char *expression,
		      const char *message)
{
	job_start(arg, req, json_pack("{s:s, s:s}", "_expression", expression, "_message", message),
		  op_read, true);
}

void automation_text(struct sbx_http_req *req, void *arg)
{
	read_page(req, arg, "document.body ? document.body.innerText : ''", "Page text");
}

void automation_html(struct sbx_http_req *req, void *arg)
{
	read_page(req, arg, "document.documentElement.outerHTML", "Page HTML");
}

/* The page as Markdown: the visible DOM walked by the browser (headings,
 * paragraphs, emphasis, code, links, images, lists, quotes, tables); what
 * is hidden, scripts and styles are left out. */
static const char markdown_js[] =
	"(()=>{const skip=new Set(['SCRIPT','STYLE','NOSCRIPT','TEMPLATE','SVG','CANVAS',"
	"'IFRAME','HEAD','BUTTON','SELECT','INPUT','TEXTAREA']);"
	"const block=new Set(['P','DIV','SECTION','ARTICLE','MAIN','HEADER','FOOTER','NAV',"
	"'ASIDE','FORM','FIGURE','FIGCAPTION','DL','DT','DD','ADDRESS','DETAILS','SUMMARY']);"
	"function md(n){if(n.nodeType===3)return n.textContent.replace(/\\s+/g,' ');"
	"if(n.nodeType!==1)return '';const t=n.tagName;if(skip.has(t))return '';"
	"const st=getComputedStyle(n);if(st.display==='none'||st.visibility==='hidden')return '';"
	"const kids=()=>[...n.childNodes].map(md).join('');"
	"if(/^H[1-6]$/.test(t))return '\\n\\n'+'#'.repeat(+t[1])+' '+kids().trim()+'\\n\\n';"
	"if(block.has(t))return '\\n\\n'+kids().trim()+'\\n\\n';"
	"switch(t){case 'BR':return '\\n';case 'HR':return '\\n\\n---\\n\\n';"
	"case 'STRONG':case 'B':{const k=kids().trim();return k?'**'+k+'**':'';}"
	"case 'EM':case 'I':{const k=kids().trim();return k?'*'+k+'*':'';}"
	"case 'CODE':return n.parentElement&&n.parentElement.tagName==='PRE'?n.textContent:"
	"'`'+n.textContent+'`';"
	"case 'PRE':return '\\n\\n```\\n'+n.textContent.replace(/\\n$/,'')+'\\n```\\n\\n';"
	"case 'A':{const k=kids().trim();return n.getAttribute('href')&&k?'['+k+']('+n.href+')':k;}"
	"case 'IMG':return n.src?'!['+(n.getAttribute('alt')||'')+']('+n.src+')':'';"
	"case 'UL':case 'OL':{let i=0;return '\\n\\n'+[...n.children].filter(c=>c.tagName==="
	"'LI').map(li=>(t==='OL'?(++i)+'. ':'- ')+md(li).trim().replace(/\\n+/g,'\\n   '))"
	".join('\\n')+'\\n\\n';}"
	"case 'BLOCKQUOTE':return '\\n\\n'+kids().trim().split('\\n').map(l=>'> '+l)"
	".join('\\n')+'\\n\\n';"
	"case 'TABLE':{const rows=[...n.rows].map(r=>[...r.cells].map(c=>md(c).trim()"
	".replace(/\\|/g,'\\\\|').replace(/\\s*\\n\\s*/g,' ')));if(!rows.length)return '';"
	"const w=Math.max(...rows.map(r=>r.length)),line=r=>'| '+[...r,...Array(w-r.length)"
	".fill('')].join(' | ')+' |';return '\\n\\n'+[line(rows[0]),'|'+' --- |'.repeat(w),"
	"...rows.slice(1).map(line)].join('\\n')+'\\n\\n';}"
	"default:return kids();}}"
	"const out=md(document.body||document.documentElement).replace(/[ \\t]+\\n/g,'\\n')"
	".replace(/\\n[ \\t]+(?![-0-9> ])/g,'\\n').replace(/\\n{3,}/g,'\\n\\n').trim();"
	"return {markdown:out,title:document.title,url:location.href};})()";

void automation_markdown(struct sbx_http_req *req, void *arg)
{
	read_page(req, arg, markdown_js, "Page as Markdown");
}

void automation_elements(struct sbx_http_req *req, void *arg)
{
	struct sbx_buf e;

	sbx_buf_init(&e, 1 << 16);
	sbx_buf_cat(&e, "(()=>{", find_js,
		    "return __sbx.list().map((e,i)=>({index:i,tag:e.tagName.toLowerCase(),"
		    "type:e.type||null,text:(e.innerText||e.value||e.getAttribute('aria-label')||"
		    "e.placeholder||'').trim().slice(0,200),id:e.id||null,name:e.name||null,"
		    "href:e.href||null,placeholder:e.placeholder||null}));})()");
	read_page(req, arg, e.data ? e.data : "[]", "Interactive elements");
	sbx_buf_release(&e);
}

void automation_evaluate(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *expression;

	if (!body)
		return;
	if (!field_string(req, body, "expression", true, &expression)) {
		json_decref(body);
		return;
	}
	json_object_set_new(body, "_expression", json_string(expression));
	json_object_set_new(body, "_message", json_string("Evaluated"));
	job_start(arg, req, body, op_read, true);
}

static void op_screenshot(struct auto_job *j, json_t *result, const char *error)
{
	bool full = json_is_true(json_object_get(j->body, "full_page"));
	const char *format = sbx_json_str(j->body, "format") ?: "png";
	json_t *params;
	char *image = NULL;
	size_t len;

	switch (j->step) {
	case 0:
		if (full) {
			job_call(j, false, "Page.getLayoutMetrics", NULL);
			return;
		}
		j->step = 1;
		/* fall through */
	case 1:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		params = json_pack("{s:s, s:b}", "format", format, "captureBeyondViewport", full);
		if (json_is_integer(json_object_get(j->body, "quality")) && strcmp(format, "png"))
			json_object_set(params, "quality", json_object_get(j->body, "quality"));
		if (full) {
			json_t *size = json_object_get(result, "cssContentSize")
					       ?: json_object_get(result, "contentSize");

			json_object_set_new(
				params, "clip",
				json_pack("{s:i, s:i, s:f, s:f, s:i}", "x", 0, "y", 0, "width",
					  json_number_value(json_object_get(size, "width")),
					  "height",
					  json_number_value(json_object_get(size, "height")),
					  "scale", 1));
		}
		j->step = 1;
		job_call(j, false, "Page.captureScreenshot", params);
		return;
	default:
		if (error || !sbx_json_str(result, "data")) {
			job_fail(j, 502, "the browser did not take the picture: %s",
				 error ? error : "no data");
			return;
		}
		if (sbx_base64_decode(sbx_json_str(result, "data"),
				      strlen(sbx_json_str(result, "data")), &image, &len)) {
			job_fail(j, 502, "the browser sent a picture that is not base64");
			return;
		}
		{
			struct sbx_http_req *req = job_take_req(j);

			if (req)
				sbx_http_respond(req, 200,
						 !strcmp(format, "png") ? "image/png"
									: "image/jpeg",
						 image, len);
		}
		sbx_free(image);
		job_end(j);
	}
}

void automation_screenshot(struct sbx_http_req *req, void *arg)
{
	char v[16];
	json_t *body = json_object();
	int n;

	if ((n = sbx_http_query(req, "full_page", v, sizeof(v))) >= 0)
		json_object_set_new(body, "full_page",
				    json_boolean(!strcmp(v, "true") || !strcmp(v, "1")));
	if (sbx_http_query(req, "format", v, sizeof(v)) > 0) {
		if (strcmp(v, "png") && strcmp(v, "jpeg")) {
			api_invalid(req, "query.format", "Input should be 'png' or 'jpeg'", "enum");
			json_decref(body);
			return;
		}
		json_object_set_new(body, "format", json_string(v));
	}
	if (sbx_http_query(req, "quality", v, sizeof(v)) > 0) {
		char *end;
		long q = strtol(v, &end, 10);

		if (*end || q < 0 || q > 100) {
			api_invalid(req, "query.quality",
				    "Input should be an integer from 0 to 100", "int_parsing");
			json_decref(body);
			return;
		}
		json_object_set_new(body, "quality", json_integer(q));
	}
	job_start(arg, req, body, op_screenshot, true);
}

void automation_console(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	char v[16];
	bool clear = sbx_http_query(req, "clear", v, sizeof(v)) >= 0 &&
		     (!strcmp(v, "true") || !strcmp(v, "1"));

	api_ok(req, "Console messages", json_deep_copy(a->console));
	if (clear)
		json_array_clear(a->console);
}

/* A JSON literal of s for an expression (jansson's string, freed by the
 * caller with free). */
static char *js_str(const char *s)
{
	json_t *v = json_string(s ? s : "");
	char *out = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;

	json_decref(v);
	return out;
}

/* An operation that is one evaluation: the page's answer is the data. */
static void eval_op(struct sbx_http_req *req, void *arg, struct sbx_buf *expression,
		    const char *message)
{
	read_page(req, arg, expression->data ? expression->data : "null", message);
	sbx_buf_release(expression);
}

void automation_scroll(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object_or_empty(req);
	const char *dir = "down";
	json_int_t amount = 300;
	char dx[32], dy[32];
	struct sbx_buf e;

	if (!body)
		return;
	if (!field_string(req, body, "direction", false, &dir)) {
		json_decref(body);
		return;
	}
	dir = dir ? dir : "down";
	if (strcmp(dir, "up") && strcmp(dir, "down") && strcmp(dir, "left") &&
	    strcmp(dir, "right")) {
		api_invalid(req, "body.direction",
			    "Input should be 'up', 'down', 'left' or 'right'", "enum");
		json_decref(body);
		return;
	}
	if (json_is_integer(json_object_get(body, "amount")))
		amount = json_integer_value(json_object_get(body, "amount"));
	snprintf(dx, sizeof(dx), "%lld",
		 !strcmp(dir, "left")	 ? -(long long)amount
		 : !strcmp(dir, "right") ? amount
					 : 0);
	snprintf(dy, sizeof(dy), "%lld",
		 !strcmp(dir, "up")	? -(long long)amount
		 : !strcmp(dir, "down") ? amount
					: 0);
	json_decref(body); /* dir was in it */
	sbx_buf_init(&e, 4096);
	sbx_buf_cat(&e, "(()=>{window.scrollBy(", dx, ",", dy,
		    ");return {x:window.scrollX,y:window.scrollY};})()");
	eval_op(req, arg, &e, "Scrolled");
}

void automation_scroll_to(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object_or_empty(req);
	char x[32], y[32];
	struct sbx_buf e;

	if (!body)
		return;
	snprintf(x, sizeof(x), "%lld", (long long)json_integer_value(json_object_get(body, "x")));
	snprintf(y, sizeof(y), "%lld", (long long)json_integer_value(json_object_get(body, "y")));
	json_decref(body);
	sbx_buf_init(&e, 4096);
	sbx_buf_cat(&e, "(()=>{window.scrollTo(", x, ",", y,
		    ");return {x:window.scrollX,y:window.scrollY};})()");
	eval_op(req, arg, &e, "Scrolled");
}

/* An operation on the element a required selector names: body is the
 * function's body, with e the element. */
static void element_op(struct sbx_http_req *req, void *arg, const char *code, const char *message)
{
	json_t *body = api_body_object(req);
	const char *sel;
	struct sbx_buf e;
	char *q;

	if (!body)
		return;
	if (!field_string(req, body, "selector", true, &sel)) {
		json_decref(body);
		return;
	}
	q = js_str(sel);
	sbx_buf_init(&e, 1 << 16);
	sbx_buf_cat(&e, "(()=>{const e=document.querySelector(", q ? q : "''",
		    ");if(!e)throw new Error('no element matches '+", q ? q : "''", ");", code,
		    "})()");
	free(q);
	json_decref(body);
	eval_op(req, arg, &e, message);
}

void automation_scroll_to_element(struct sbx_http_req *req, void *arg)
{
	element_op(req, arg,
		   "e.scrollIntoView({block:'center',inline:'center'});"
		   "return {x:window.scrollX,y:window.scrollY};",
		   "Scrolled");
}

void automation_check(struct sbx_http_req *req, void *arg)
{
	element_op(req, arg, "if(!e.checked)e.click();return e.checked;", "Checked");
}

void automation_uncheck(struct sbx_http_req *req, void *arg)
{
	element_op(req, arg, "if(e.checked)e.click();return e.checked;", "Unchecked");
}

void automation_select_option(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *sel, *value = NULL, *label = NULL;
	json_t *idx;
	struct sbx_buf e;
	char *q, *v, *l, num[32];

	if (!body)
		return;
	if (!field_string(req, body, "selector", true, &sel) ||
	    !field_string(req, body, "value", false, &value) ||
	    !field_string(req, body, "label", false, &label)) {
		json_decref(body);
		return;
	}
	idx = json_object_get(body, "index");
	if (!value && !label && !json_is_integer(idx)) {
		api_invalid(req, "body", "Give a value, a label or an index", "missing");
		json_decref(body);
		return;
	}
	q = js_str(sel);
	v = value ? js_str(value) : NULL;
	l = label ? js_str(label) : NULL;
	snprintf(num, sizeof(num), "%lld",
		 json_is_integer(idx) ? (long long)json_integer_value(idx) : -1LL);
	sbx_buf_init(&e, 1 << 16);
	sbx_buf_cat(&e, "(()=>{const e=document.querySelector(", q ? q : "''",
		    ");if(!e||!e.options)throw new Error('no select element matches '+",
		    q ? q : "''", ");const o=[...e.options].findIndex((o,i)=>");
	if (v)
		sbx_buf_cat(&e, "o.value===", v);
	else if (l)
		sbx_buf_cat(&e, "o.label===", l, "||o.text===", l);
	else
		sbx_buf_cat(&e, "i===", num);
	sbx_buf_append_str(&e, ");if(o<0)throw new Error('no such option');e.selectedIndex=o;"
			       "e.dispatchEvent(new Event('input',{bubbles:true}));"
			       "e.dispatchEvent(new Event('change',{bubbles:true}));"
			       "return {value:e.value,index:o};})()");
	free(q);
	free(v);
	free(l);
	json_decref(body);
	eval_op(req, arg, &e, "Selected");
}

void automation_find_text(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *keyword;
	struct sbx_buf e;
	char *k;

	if (!body)
		return;
	if (!field_string(req, body, "keyword", true, &keyword)) {
		json_decref(body);
		return;
	}
	k = js_str(keyword);
	sbx_buf_init(&e, 1 << 16);
	/* Each text node holding the keyword (case-insensitive): its text
	 * around the match and its element. */
	sbx_buf_cat(
		&e, "(()=>{const k=", k ? k : "''",
		".toLowerCase(),out=[],w=document.createTreeWalker(document.body||document,"
		"NodeFilter.SHOW_TEXT);let n;while((n=w.nextNode())&&out.length<100){"
		"const t=n.textContent,i=t.toLowerCase().indexOf(k);if(!k||i<0)continue;"
		"const p=n.parentElement;out.push({text:t.slice(Math.max(0,i-40),i+k.length+40)"
		".trim(),tag:p?p.tagName.toLowerCase():null,id:p&&p.id||null});}return out;})()");
	free(k);
	json_decref(body);
	eval_op(req, arg, &e, "Matches");
}

static void op_export_console(struct auto_job *j, json_t *result, const char *error)
{
	if (j->step == 0) {
		job_path(j, sbx_json_str(j->body, "save_path"));
		j->acc = json_integer((json_int_t)json_array_size(j->a->console));
		job_write_json(j, json_deep_copy(j->a->console));
		return;
	}
	if (error) {
		job_fail(j, 200, "%s", error);
		return;
	}
	if (json_is_true(json_object_get(j->body, "clear")))
		json_array_clear(j->a->console);
	job_ok(j, "Console exported", json_pack("{s:s, s:O}", "path", j->path, "entries", j->acc));
}

void automation_export_console(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *path;

	if (!body)
		return;
	if (!field_string(req, body, "save_path", true, &path) || !*path) {
		if (path)
			api_invalid(req, "body.save_path", "Input should not be empty",
				    "string_too_short");
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_export_console, false);
}

/* ---- waiting ------------------------------------------------------------------------------ */

/* Whether the request log has settled: nothing in flight, and nothing new
 * for NETWORK_IDLE_MS. */
static bool network_idle(struct automation *a)
{
	json_t *e;
	size_t i;

	if (uv_now(a->loop) - a->network_at < NETWORK_IDLE_MS)
		return false;
	json_array_foreach(a->requests, i,
			   e) if (!json_object_get(e, "finished") &&
				  !json_is_true(json_object_get(e, "failed"))) return false;
	return true;
}

/* A request (type "request") or an answered one ("response") whose URL
 * matches url_pattern (or is url) in the log. */
static bool logged(struct automation *a, json_t *body, bool answered)
{
	const char *pattern = sbx_json_str(body, "url_pattern"), *url = sbx_json_str(body, "url");
	json_t *e;
	size_t i;

	json_array_foreach(a->requests, i, e)
	{
		const char *u = sbx_json_str(e, "url") ?: "";

		if ((pattern ? fnmatch(pattern, u, 0) == 0 : url && !strcmp(url, u)) &&
		    (!answered || json_is_integer(json_object_get(e, "status"))))
			return true;
	}
	return false;
}

/* type: timeout (a pause), load, selector (state: visible, attached,
 * hidden, detached), url (url, or url_pattern as a glob), function (an
 * expression becomes truthy), network_idle, request and response (the log
 * has one for url or url_pattern); polled every polling ms. */
static void op_wait(struct auto_job *j, json_t *result, const char *error)
{
	const char *type = sbx_json_str(j->body, "type"), *sel = sbx_json_str(j->body, "selector"),
		   *state = sbx_json_str(j->body, "state") ?: "visible";
	uint64_t now = uv_now(j->a->loop);
	double polling = json_number_value(json_object_get(j->body, "polling"));
	char why[300];
	json_t *v;
	bool met = false;

	if (j->step == 0) {
		j->x = (double)(now + timeout_ms(j->body, DEFAULT_WAIT_MS));
		if (!strcmp(type, "timeout")) {
			j->y = 2;
			job_pause(j, timeout_ms(j->body, DEFAULT_WAIT_MS));
			return;
		}
		j->y = 0;
	}
	if (j->y == 2) {
		job_ok(j, "Waited", NULL);
		return;
	}
	if (j->y == 1) { /* an evaluation's answer */
		if (!(v = eval_value(result, error, why, sizeof(why)))) {
			job_fail(j, 200, "cannot wait: %s", why);
			return;
		}
		if (!strcmp(type, "url")) {
			const char *href = json_string_value(v) ?: "",
				   *pattern = sbx_json_str(j->body, "url_pattern");

			met = pattern ? fnmatch(pattern, href, 0) == 0
				      : !strcmp(href, sbx_json_str(j->body, "url") ?: "");
		} else {
			met = json_is_true(v);
		}
	} else if (!strcmp(type, "network_idle")) {
		met = network_idle(j->a);
	} else if (!strcmp(type, "request") || !strcmp(type, "response")) {
		met = logged(j->a, j->body, !strcmp(type, "response"));
	} else {
		struct sbx_buf e;
		json_t *qs = json_string(sel ? sel : ""), *sts = json_string(state);
		char *q = qs ? json_dumps(qs, JSON_ENCODE_ANY) : NULL;
		char *st = sts ? json_dumps(sts, JSON_ENCODE_ANY) : NULL;

		json_decref(qs);
		json_decref(sts);

		sbx_buf_init(&e, 1 << 20);
		if (!strcmp(type, "load"))
			sbx_buf_append_str(&e, "document.readyState==='complete'");
		else if (!strcmp(type, "url"))
			sbx_buf_append_str(&e, "location.href");
		else if (!strcmp(type, "function"))
			sbx_buf_cat(&e, "Promise.resolve((", sbx_json_str(j->body, "expression"),
				    ")).then(v=>!!v)");
		else
			sbx_buf_cat(&e, "(()=>{const e=document.querySelector(", q ? q : "''",
				    "),s=", st ? st : "'visible'",
				    ",v=!!e&&!!(e.offsetWidth||e.offsetHeight||e.getClientRects()."
				    "length);return s==='attached'?!!e:s==='detached'?!e:"
				    "s==='hidden'?!v:v;})()");
		free(q);
		free(st);
		j->y = 1;
		job_eval(j, e.data ? e.data : "false");
		sbx_buf_release(&e);
		return;
	}
	if (met || (double)now >= j->x) {
		if (json_is_true(json_object_get(j->body, "_captcha")))
			job_ok(j, met ? "CAPTCHA resolved" : "the CAPTCHA is still there",
			       json_pack("{s:b}", "resolved", met));
		else if (met)
			job_ok(j, "Waited", NULL);
		else
			job_fail(j, 200, "timed out waiting for %s", type);
		return;
	}
	j->y = 0;
	job_pause(j, polling >= 10 && polling <= 60000 ? (uint64_t)polling : 100);
}

void automation_wait(struct sbx_http_req *req, void *arg)
{
	static const char *const types[] = { "timeout",	 "load",	 "selector", "url",
					     "function", "network_idle", "request",  "response" };
	json_t *body = api_body_object(req);
	const char *type, *x;
	bool known = false;

	if (!body)
		return;
	if (!field_string(req, body, "type", true, &type))
		goto bad;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		known |= !strcmp(type, types[i]);
	if (!known) {
		if (!strcmp(type, "download"))
			api_fail(req, "waiting for a download is not supported by this agent",
				 NULL);
		else
			api_invalid(req, "body.type",
				    "Input should be 'selector', 'load', 'url', 'network_idle', "
				    "'download', 'function', 'response', 'request' or 'timeout'",
				    "enum");
		goto bad;
	}
	if ((!strcmp(type, "selector") && (!field_string(req, body, "selector", true, &x))) ||
	    (!strcmp(type, "function") && !field_string(req, body, "expression", true, &x)))
		goto bad;
	if ((!strcmp(type, "url") || !strcmp(type, "request") || !strcmp(type, "response")) &&
	    !json_is_string(json_object_get(body, "url")) &&
	    !json_is_string(json_object_get(body, "url_pattern"))) {
		api_invalid(req, "body.url", "Give url or url_pattern", "missing");
		goto bad;
	}
	job_start(arg, req, body, op_wait, strcmp(type, "timeout") != 0);
	return;
bad:
	json_decref(body);
}

/* ---- CAPTCHAs: what a page shows, without solving it ----------------------------------- */

/* The CAPTCHA widgets a page carries (reCAPTCHA, hCaptcha, Turnstile,
 * GeeTest, or an element named like one), and whether the token a solved one
 * leaves in its form is there. */
static const char captcha_js[] =
	"(()=>{const q=(s)=>document.querySelector(s),v=(s)=>{const e=q(s);return !!(e&&e.value);};"
	"const kinds=[['recaptcha','iframe[src*=\"recaptcha\"],.g-recaptcha',"
	"'textarea[name=\"g-recaptcha-response\"]'],['hcaptcha','iframe[src*=\"hcaptcha\"],"
	".h-captcha','textarea[name=\"h-captcha-response\"]'],['turnstile',"
	"'iframe[src*=\"challenges.cloudflare.com\"],.cf-turnstile',"
	"'input[name=\"cf-turnstile-response\"]'],['geetest','.geetest_holder,.geetest_panel,"
	"[class*=\"geetest\"]',null],['generic','[id*=\"captcha\" i],[class*=\"captcha\" i],"
	"img[src*=\"captcha\" i]',null]];"
	"for(const [type,sel,token] of kinds){const e=q(sel);if(e)return {detected:true,type,"
	"solved:token?v(token):false,selector:sel.split(',')[0]};}"
	"return {detected:false,type:null,solved:false,selector:null};})()";

void automation_captcha_detect(struct sbx_http_req *req, void *arg)
{
	read_page(req, arg, captcha_js, "CAPTCHA detection");
}

void automation_captcha_wait(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object_or_empty(req), *t, *p;
	struct sbx_buf e;

	if (!body)
		return;
	t = json_object_get(body, "timeout");
	p = json_object_get(body, "poll_interval");
	if ((t && !json_is_null(t) &&
	     (!json_is_number(t) || !(json_number_value(t) > 0) || json_number_value(t) > 3600)) ||
	    (p && !json_is_null(p) &&
	     (!json_is_number(p) || !(json_number_value(p) > 0) || json_number_value(p) > 60))) {
		api_invalid(req, t && !json_is_number(t) ? "body.timeout" : "body.poll_interval",
			    "Input should be a positive number of seconds", "greater_than");
		json_decref(body);
		return;
	}
	sbx_buf_init(&e, sizeof(captcha_js) + 64);
	sbx_buf_cat(&e, "(r=>!r.detected||r.solved)(", captcha_js, ")");
	json_object_set_new(body, "type", json_string("function"));
	json_object_set_new(body, "expression", json_string(e.data ? e.data : "true"));
	json_object_set_new(body, "timeout",
			    json_real(json_is_number(t) ? json_number_value(t) : 60));
	json_object_set_new(body, "polling",
			    json_real(1000 * (json_is_number(p) ? json_number_value(p) : 2)));
	json_object_set_new(body, "_captcha", json_true());
	sbx_buf_release(&e);
	job_start(arg, req, body, op_wait, true);
}

/* ---- tabs ---------------------------------------------------------------------------------- */

static void op_tabs(struct auto_job *j, json_t *result, const char *error)
{
	/* The preparation listed them. */
	job_ok(j, "Tabs", tabs_json(j->a));
}

void automation_tabs(struct sbx_http_req *req, void *arg)
{
	job_start(arg, req, NULL, op_tabs, true);
}

/* A new tab's page loads as a navigation does: the answer is the tabs. */
static void op_tab_load(struct auto_job *j, json_t *result, const char *error)
{
	struct auto_tab *tab;
	char why[300];
	json_t *v;

	if (j->step <= STEP_LOCATION) {
		op_navigate(j, result, error);
		return;
	}
	if (!(v = eval_value(result, error, why, sizeof(why)))) {
		job_fail(j, 502, "%s", why);
		return;
	}
	if ((tab = tab_by_target(j->a, j->target))) {
		snprintf(tab->url, sizeof(tab->url), "%s",
			 json_string_value(json_array_get(v, 0)) ?: "");
		snprintf(tab->title, sizeof(tab->title), "%s",
			 json_string_value(json_array_get(v, 1)) ?: "");
	}
	job_ok(j, "Tab opened", tabs_json(j->a));
}

/* A blank tab, made active and prepared like any page; then its URL is
 * loaded as navigate does. */
static void op_tab_new(struct auto_job *j, json_t *result, const char *error)
{
	const char *url = sbx_json_str(j->body, "url");

	switch (j->step) {
	case 0:
		job_call(j, true, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"));
		return;
	case 1:
		if (error || !sbx_json_str(result, "targetId")) {
			job_fail(j, 502, "the browser did not open a tab: %s", error ? error : "?");
			return;
		}
		snprintf(j->target, sizeof(j->target), "%s", sbx_json_str(result, "targetId"));
		job_call(j, true, "Target.getTargets", NULL);
		return;
	default:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		tabs_update(j->a, json_object_get(result, "targetInfos"));
		snprintf(j->a->active, sizeof(j->a->active), "%s", j->target);
		if (!url || !*url) {
			job_ok(j, "Tab opened", tabs_json(j->a));
			return;
		}
		/* The preparation again, from the attach, on the new tab. */
		j->fn = op_tab_load;
		j->prep = 3;
		prep_step(j, NULL, NULL);
	}
}

void automation_tab_new(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object_or_empty(req);
	const char *url;

	if (!body)
		return;
	if (!field_string(req, body, "url", false, &url)) {
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_tab_new, true);
}

/* The tab a path's {index} names, or NULL (answered). */
static struct auto_tab *tab_of_index(struct auto_job *j)
{
	json_int_t i = json_integer_value(json_object_get(j->body, "_index"));

	if (i < 0 || i >= (json_int_t)j->a->n_tabs) {
		job_fail(j, 404, "no tab has index %lld (%u open)", (long long)i, j->a->n_tabs);
		return NULL;
	}
	return &j->a->tabs[i];
}

static void op_tab_close(struct auto_job *j, json_t *result, const char *error)
{
	struct auto_tab *tab;

	switch (j->step) {
	case 0:
		if (!(tab = tab_of_index(j)))
			return;
		snprintf(j->target, sizeof(j->target), "%s", tab->target);
		j->x = (double)(uv_now(j->a->loop) + 5000);
		job_call(j, true, "Target.closeTarget",
			 json_pack("{s:s}", "targetId", tab->target));
		return;
	case 1:
	case 3: /* closed, or a pause is over: is it gone from the list? */
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		j->step = 1;
		job_call(j, true, "Target.getTargets", NULL);
		return;
	default: /* 2 */
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		tabs_update(j->a, json_object_get(result, "targetInfos"));
		if (tab_by_target(j->a, j->target) && (double)uv_now(j->a->loop) < j->x) {
			job_pause(j, 20); /* closing is asynchronous */
			return;
		}
		job_ok(j, "Tab closed", tabs_json(j->a));
	}
}

static void op_tab_activate(struct auto_job *j, json_t *result, const char *error)
{
	struct auto_tab *tab;

	switch (j->step) {
	case 0:
		if (!(tab = tab_of_index(j)))
			return;
		snprintf(j->a->active, sizeof(j->a->active), "%s", tab->target);
		job_call(j, true, "Target.activateTarget",
			 json_pack("{s:s}", "targetId", tab->target));
		return;
	default:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		job_ok(j, "Tab activated", tabs_json(j->a));
	}
}

static void tab_op(struct sbx_http_req *req, void *arg, job_fn fn)
{
	const char *p = sbx_http_param(req, "index");
	char *end;
	long i = strtol(p ? p : "", &end, 10);

	if (!p || !*p || *end || i < 0) {
		api_invalid(req, "path.index", "Input should be a valid integer", "int_parsing");
		return;
	}
	job_start(arg, req, json_pack("{s:i}", "_index", (int)i), fn, true);
}

void automation_tab_close(struct sbx_http_req *req, void *arg)
{
	tab_op(req, arg, op_tab_close);
}

void automation_tab_activate(struct sbx_http_req *req, void *arg)
{
	tab_op(req, arg, op_tab_activate);
}

/* ---- cookies -------------------------------------------------------------------------------- */

static void op_cookies(struct auto_job *j, json_t *result, const char *error)
{
	json_t *urls = json_object_get(j->body, "urls");

	if (j->step == 0) {
		if (json_array_size(urls))
			job_call(j, false, "Network.getCookies", json_pack("{s:O}", "urls", urls));
		else
			job_call(j, true, "Storage.getCookies", NULL);
		return;
	}
	if (error) {
		job_fail(j, 502, "%s", error);
		return;
	}
	job_ok(j, "Cookies", json_incref(json_object_get(result, "cookies") ?: json_array()));
}

void automation_cookies(struct sbx_http_req *req, void *arg)
{
	char urls[8192];
	json_t *body = json_object();

	if (sbx_http_query(req, "urls", urls, sizeof(urls)) > 0) {
		json_t *list = json_array();
		char *save, *u;

		for (u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save))
			json_array_append_new(list, json_string(u));
		json_object_set_new(body, "urls", list);
	}
	job_start(arg, req, body, op_cookies, true);
}

void automation_cookies_set(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req), *c;
	size_t i;

	if (!body)
		return;
	if (!json_is_array(json_object_get(body, "cookies"))) {
		api_invalid(req, "body.cookies", "Input should be a valid list", "list_type");
		json_decref(body);
		return;
	}
	json_array_foreach(json_object_get(body, "cookies"), i, c)
	{
		if (!json_is_object(c) || !json_is_string(json_object_get(c, "name")) ||
		    !json_is_string(json_object_get(c, "value"))) {
			api_invalid(req, "body.cookies", "Each cookie needs a name and a value",
				    "missing");
			json_decref(body);
			return;
		}
	}
	one_command(req, arg, true, "Storage.setCookies",
		    json_pack("{s:O}", "cookies", json_object_get(body, "cookies")), "Cookies set",
		    "the browser refused the cookies");
	json_decref(body);
}

void automation_cookies_clear(struct sbx_http_req *req, void *arg)
{
	one_command(req, arg, true, "Storage.clearCookies", NULL, "Cookies cleared", NULL);
}

/* ---- files (state, HAR): written and read on the thread pool ------------------------------- */

struct file_io {
	uv_work_t work;
	struct auto_job *j;
	char path[PATH_MAX];
	char *data; /* to write, or what was read */
	size_t len;
	bool reading;
	int err;
};

static void file_work(uv_work_t *w)
{
	struct file_io *io = w->data;
	char tmp[PATH_MAX + 16];
	struct stat st;
	ssize_t n = 0;
	int fd;

	if (io->reading) {
		if ((fd = open(io->path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st)) {
			io->err = errno;
		} else if (st.st_size > (off_t)MAX_FILE) {
			io->err = EFBIG;
		} else if (!(io->data = sbx_malloc((size_t)st.st_size + 1))) {
			io->err = ENOMEM;
		} else {
			while (io->len < (size_t)st.st_size &&
			       (n = read(fd, io->data + io->len, (size_t)st.st_size - io->len)) > 0)
				io->len += (size_t)n;
			io->data[io->len] = '\0';
			io->err = n < 0 ? errno : 0;
		}
		if (fd >= 0)
			close(fd);
		return;
	}
	/* Written beside, then renamed: a reader never sees half a file. */
	snprintf(tmp, sizeof(tmp), "%s.sbx-tmp", io->path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		io->err = errno;
		return;
	}
	for (size_t off = 0; off < io->len && n >= 0; off += (size_t)n)
		n = write(fd, io->data + off, io->len - off);
	if (n < 0 || close(fd) || rename(tmp, io->path)) {
		io->err = errno ? errno : EIO;
		unlink(tmp);
	}
}

static void file_done(uv_work_t *w, int status)
{
	struct file_io *io = w->data;
	struct auto_job *j = io->j;
	char why[PATH_MAX + 64];

	j->pending--;
	if (j->ended) {
		job_reap(j);
	} else if (io->err || status) {
		snprintf(why, sizeof(why), "cannot %s %s: %s", io->reading ? "read" : "write",
			 io->path, strerror(io->err ? io->err : ECANCELED));
		j->step++;
		j->fn(j, NULL, why);
	} else {
		json_t *text = io->reading ? json_stringn(io->data, io->len) : json_null();

		j->step++;
		j->fn(j, text, NULL);
		json_decref(text);
	}
	sbx_free(io->data);
	sbx_free(io);
}

/* A path from a request: relative ones are inside the workspace. */
static void job_path(struct auto_job *j, const char *path)
{
	if (path[0] == '/')
		snprintf(j->path, sizeof(j->path), "%s", path);
	else
		snprintf(j->path, sizeof(j->path), "%s/%s", j->a->workspace, path);
}

static void job_file(struct auto_job *j, char *data, size_t len, bool reading)
{
	struct file_io *io = sbx_calloc(1, sizeof(*io));

	if (!io) {
		sbx_free(data);
		job_fail(j, 503, "out of memory");
		return;
	}
	io->j = j;
	io->work.data = io;
	io->data = data;
	io->len = len;
	io->reading = reading;
	snprintf(io->path, sizeof(io->path), "%s", j->path);
	j->pending++;
	if (uv_queue_work(j->a->loop, &io->work, file_work, file_done)) {
		j->pending--;
		sbx_free(io->data);
		sbx_free(io);
		job_fail(j, 503, "cannot reach the thread pool");
	}
}

static void job_write_json(struct auto_job *j, json_t *doc)
{
	char *text = json_dumps(doc, JSON_INDENT(2));

	json_decref(doc);
	if (!text) {
		job_fail(j, 503, "out of memory");
		return;
	}
	/* jansson's string, handed to sbx_free: copy it into ours. */
	char *copy = sbx_strdup(text);

	free(text);
	if (!copy) {
		job_fail(j, 503, "out of memory");
		return;
	}
	job_file(j, copy, strlen(copy), false);
}

/* ---- state: cookies and the page's localStorage ---------------------------------------------- */

static void op_state_save(struct auto_job *j, json_t *result, const char *error)
{
	char why[300];
	json_t *v;

	switch (j->step) {
	case 0:
		job_call(j, true, "Storage.getCookies", NULL);
		return;
	case 1:
		if (error) {
			job_fail(j, 502, "%s", error);
			return;
		}
		j->acc = json_pack("{s:O, s:[]}", "cookies",
				   json_object_get(result, "cookies") ?: json_array(), "origins");
		job_eval(j,
			 "location.origin && location.origin !== 'null' ? {origin: location.origin,"
			 " localStorage: Object.keys(localStorage).map(k => ({name: k, value: "
			 "localStorage.getItem(k)}))} : null");
		return;
	case 2:
		if (!(v = eval_value(result, error, why, sizeof(why)))) {
			job_fail(j, 200, "cannot read the page's storage: %s", why);
			return;
		}
		if (json_is_object(v))
			json_array_append(json_object_get(j->acc, "origins"), v);
		job_write_json(j, json_incref(j->acc));
		return;
	default:
		if (error) {
			job_fail(j, 200, "%s", error);
			return;
		}
		job_ok(j, "State saved",
		       json_pack("{s:s, s:i, s:i}", "path", j->path, "cookies",
				 (int)json_array_size(json_object_get(j->acc, "cookies")),
				 "origins",
				 (int)json_array_size(json_object_get(j->acc, "origins"))));
	}
}

static void op_state_load(struct auto_job *j, json_t *result, const char *error)
{
	char err[160], why[300];
	struct sbx_buf e;
	json_t *o;
	size_t i;

	switch (j->step) {
	case 0:
		job_file(j, NULL, 0, true);
		return;
	case 1:
		if (error) {
			job_fail(j, 200, "%s", error);
			return;
		}
		j->acc = sbx_json_loadb(json_string_value(result), json_string_length(result),
					MAX_FILE, err, sizeof(err));
		if (!json_is_object(j->acc)) {
			job_fail(j, 200, "%s is not a saved state: %s", j->path, err);
			return;
		}
		job_call(j, true, "Storage.setCookies",
			 json_pack("{s:O}", "cookies",
				   json_object_get(j->acc, "cookies") ?: json_array()));
		return;
	case 2:
		if (error) {
			job_fail(j, 200, "the browser refused the saved cookies: %s", error);
			return;
		}
		/* localStorage of the origin the page is on. */
		sbx_buf_init(&e, MAX_FILE * 2);
		sbx_buf_append_str(&e, "(()=>{const o=");
		{
			char *origins =
				json_dumps(json_object_get(j->acc, "origins") ?: json_array(),
					   JSON_COMPACT | JSON_ENCODE_ANY);

			sbx_buf_append_str(&e, origins ? origins : "[]");
			free(origins);
		}
		sbx_buf_append_str(&e, ";let n=0;for(const x of o){if(x.origin!==location.origin)"
				       "continue;for(const i of x.localStorage||[]){localStorage."
				       "setItem(i.name,i.value);n++;}}return n;})()");
		job_eval(j, e.data ? e.data : "0");
		sbx_buf_release(&e);
		return;
	default:
		o = eval_value(result, error, why, sizeof(why));
		i = json_array_size(json_object_get(j->acc, "cookies"));
		job_ok(j, "State loaded",
		       json_pack("{s:s, s:i, s:I}", "path", j->path, "cookies", (int)i,
				 "local_storage_items", o ? json_integer_value(o) : (json_int_t)0));
	}
}

static void state(struct sbx_http_req *req, void *arg, job_fn fn)
{
	json_t *body = api_body_object(req);
	const char *path;

	if (!body)
		return;
	if (!field_string(req, body, "path", true, &path)) {
		json_decref(body);
		return;
	}
	if (!*path) {
		api_invalid(req, "body.path", "Input should not be empty", "string_too_short");
		json_decref(body);
		return;
	}
	job_start(arg, req, body, fn, true);
}

static void op_state_first(struct auto_job *j, json_t *result, const char *error, job_fn fn)
{
	if (j->step == 0)
		job_path(j, sbx_json_str(j->body, "path"));
	fn(j, result, error);
}

static void op_state_save_p(struct auto_job *j, json_t *result, const char *error)
{
	op_state_first(j, result, error, op_state_save);
}

static void op_state_load_p(struct auto_job *j, json_t *result, const char *error)
{
	op_state_first(j, result, error, op_state_load);
}

void automation_state_save(struct sbx_http_req *req, void *arg)
{
	state(req, arg, op_state_save_p);
}

void automation_state_load(struct sbx_http_req *req, void *arg)
{
	state(req, arg, op_state_load_p);
}

/* A header name: RFC 9110 token characters only. */
static bool http_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

/* ---- network: routes, the request log, HAR ------------------------------------------------- */

/* The next attached page of an operation applied to all of them: true
 * with j->session set to it, false once every page has had its turn. */
static bool next_attached_page(struct auto_job *j)
{
	struct automation *a = j->a;
	unsigned i = (unsigned)json_integer_value(json_object_get(j->body, "_next"));

	for (; i < a->n_tabs && !a->tabs[i].session[0]; i++)
		;
	if (i >= a->n_tabs)
		return false;
	json_object_set_new(j->body, "_next", json_integer(i + 1));
	snprintf(j->session, sizeof(j->session), "%s", a->tabs[i].session);
	return true;
}

/* Fetch.enable (or disable) on every attached page, one after another. */
static void op_apply_routes(struct auto_job *j, json_t *result, const char *error)
{
	struct automation *a = j->a;

	if (error && j->step > 0) {
		job_fail(j, 502, "%s", error);
		return;
	}
	if (!next_attached_page(j)) {
		job_ok(j, sbx_json_str(j->body, "_message"),
		       json_is_true(json_object_get(j->body, "_scoped"))
			       ? json_deep_copy(a->scoped)
			       : json_deep_copy(a->routes));
		return;
	}
	if (intercepting(a))
		job_call(j, false, "Fetch.enable",
			 json_pack("{s:o}", "patterns", fetch_patterns(a)));
	else
		job_call(j, false, "Fetch.disable", NULL);
}

void automation_route(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	json_t *body = api_body_object(req), *r, *resp;
	const char *pattern;
	size_t i;

	if (!body)
		return;
	if (!field_string(req, body, "url_pattern", true, &pattern)) {
		json_decref(body);
		return;
	}
	resp = json_object_get(body, "response");
	if (resp && !json_is_null(resp) && !json_is_object(resp)) {
		api_invalid(req, "body.response", "Input should be a valid dictionary",
			    "dict_type");
		json_decref(body);
		return;
	}
	/* One route per pattern: a new one replaces the old. */
	json_array_foreach(a->routes, i, r)
	{
		if (!strcmp(sbx_json_str(r, "url_pattern") ?: "", pattern)) {
			json_array_remove(a->routes, i);
			break;
		}
	}
	json_array_append_new(a->routes,
			      json_pack("{s:s, s:b, s:O?}", "url_pattern", pattern, "abort",
					json_is_true(json_object_get(body, "abort")), "response",
					json_is_object(resp) ? resp : NULL));
	json_decref(body);
	job_start(a, req, json_pack("{s:s}", "_message", "Route added"), op_apply_routes, true);
}

void automation_route_remove(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	json_t *body = api_body_object(req), *r;
	const char *pattern;
	bool found = false;
	size_t i;

	if (!body)
		return;
	if (!field_string(req, body, "url_pattern", true, &pattern)) {
		json_decref(body);
		return;
	}
	json_array_foreach(a->routes, i, r)
	{
		if (!strcmp(sbx_json_str(r, "url_pattern") ?: "", pattern)) {
			json_array_remove(a->routes, i);
			found = true;
			break;
		}
	}
	json_decref(body);
	if (!found) {
		api_fail(req, "no route has this url_pattern", NULL);
		return;
	}
	job_start(a, req, json_pack("{s:s}", "_message", "Route removed"), op_apply_routes, true);
}

/* Extra headers for every request of every page (Network.setExtraHTTPHeaders
 * on each attached page now, and on each page attached later). */
static void op_apply_headers(struct auto_job *j, json_t *result, const char *error)
{
	struct automation *a = j->a;

	if (error) {
		job_fail(j, 502, "%s", error);
		return;
	}
	if (!next_attached_page(j)) {
		job_ok(j, "Headers set", json_deep_copy(a->headers));
		return;
	}
	job_call(j, false, "Network.setExtraHTTPHeaders",
		 json_pack("{s:O}", "headers", a->headers));
}

void automation_headers(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	json_t *body = api_body_object(req), *headers, *v;
	const char *k;

	if (!body)
		return;
	headers = json_object_get(body, "headers");
	if (!json_is_object(headers)) {
		api_invalid(req, "body.headers", "Input should be a valid dictionary", "dict_type");
		json_decref(body);
		return;
	}
	json_object_foreach(headers, k, v)
	{
		if (!json_is_string(v) || !http_token(k)) {
			api_invalid(req, "body.headers",
				    "Each header needs a name and a string value", "string_type");
			json_decref(body);
			return;
		}
	}
	json_decref(a->headers);
	a->headers = json_incref(headers);
	json_decref(body);
	job_start(a, req, NULL, op_apply_headers, true);
}

/* The resolution on every attached page, one after another. */
static void op_apply_config(struct auto_job *j, json_t *result, const char *error)
{
	struct automation *a = j->a;

	if (error) {
		job_fail(j, 502, "%s", error);
		return;
	}
	if (!next_attached_page(j)) {
		job_ok(j, "Browser configured",
		       json_pack("{s:{s:i, s:i}}", "resolution", "width", (int)a->res_width,
				 "height", (int)a->res_height));
		return;
	}
	job_call(j, false, "Emulation.setDeviceMetricsOverride", metrics_params(a));
}

/* POST /v1/browser/config: the screen resolution, one of those AIO's
 * display offers, as every page's viewport (now and for pages attached
 * later). */
void automation_config(struct sbx_http_req *req, void *arg)
{
	static const int allowed[][2] = { { 1920, 1080 }, { 640, 480 },	  { 1360, 768 },
					  { 1280, 720 },  { 800, 600 },	  { 1024, 768 },
					  { 1280, 800 },  { 1920, 1200 }, { 1280, 960 },
					  { 1400, 1050 }, { 1680, 1050 }, { 1280, 1024 },
					  { 1600, 1200 } };
	struct automation *a = arg;
	json_t *body = api_body_object_or_empty(req), *res;
	json_int_t w, h;
	bool ok = false;

	if (!body)
		return;
	res = json_object_get(body, "resolution");
	if (!res || json_is_null(res)) {
		json_decref(body);
		api_ok(req, "Nothing to change",
		       json_pack("{s:o}", "resolution",
				 a->res_width ? json_pack("{s:i, s:i}", "width", (int)a->res_width,
							  "height", (int)a->res_height)
					      : json_null()));
		return;
	}
	if (json_unpack(res, "{s:I, s:I}", "width", &w, "height", &h)) {
		api_invalid(req, "body.resolution", "width and height are integers", "int_type");
		json_decref(body);
		return;
	}
	json_decref(body);
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		ok = ok || (allowed[i][0] == w && allowed[i][1] == h);
	if (!ok) {
		api_invalid(req, "body.resolution",
			    "Allowed: 1920x1080, 640x480, 1360x768, 1280x720, 800x600, 1024x768, "
			    "1280x800, 1920x1200, 1280x960, 1400x1050, 1680x1050, 1280x1024, "
			    "1600x1200",
			    "value_error");
		return;
	}
	a->res_width = (unsigned)w;
	a->res_height = (unsigned)h;
	job_start(a, req, NULL, op_apply_config, true);
}

/* ---- display actions (POST /v1/browser/actions) -------------------------------------------- */

/* AIO's actions drive a display's pointer and keyboard; here the display is
 * the active page's viewport, and each action becomes Input events (in CSS
 * pixels), run in order as one job. */

#define ACTION_MAX_COORD  1e6
#define ACTION_MAX_WAIT_S 25.0
#define SCROLL_UNIT_PX	  100

static int modifier_bit(const char *m)
{
	return !strcasecmp(m, "Alt")				     ? 1
	       : !strcasecmp(m, "Control") || !strcasecmp(m, "Ctrl") ? 2
	       : !strcasecmp(m, "Meta") || !strcasecmp(m, "Command") ? 4
	       : !strcasecmp(m, "Shift")			     ? 8
								     : 0;
}

/* Input.dispatchKeyEvent's parameters for a key going down or up. */
static json_t *key_params(const char *name, bool down, int modifiers)
{
	struct key k = { name, name, name, NULL, 0 };
	char code[16] = "", text[8] = "";
	json_t *ev;

	for (size_t i = 0; i < sizeof(keys_table) / sizeof(keys_table[0]); i++)
		if (!strcasecmp(keys_table[i].name, name))
			k = keys_table[i];
	if (modifier_bit(name)) {
		static const char *const names[] = { "", "Alt", "Control", "",	   "Meta",
						     "", "",	"",	   "Shift" };
		static const int vks[] = { 0, 18, 17, 0, 91, 0, 0, 0, 16 };
		int bit = modifier_bit(name);

		k = (struct key){ names[bit], names[bit], names[bit], NULL, vks[bit] };
	} else if (!k.vk && strlen(name) == 1) {
		snprintf(code, sizeof(code), "Key%c", toupper((unsigned char)name[0]));
		snprintf(text, sizeof(text), "%s", name);
		k.code = isalpha((unsigned char)name[0]) ? code : "";
		k.text = modifiers & ~8 ? NULL : text; /* a shortcut types nothing */
		k.vk = toupper((unsigned char)name[0]);
	}
	ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i}", "type",
		       down ? (k.text ? "keyDown" : "rawKeyDown") : "keyUp", "key", k.key, "code",
		       k.code, "windowsVirtualKeyCode", k.vk, "nativeVirtualKeyCode", k.vk,
		       "modifiers", modifiers);
	if (down && k.text)
		json_object_set_new(ev, "text", json_string(k.text));
	return ev;
}

static void add_step(json_t *steps, const char *method, json_t *params)
{
	json_array_append_new(steps, json_pack("{s:s, s:o}", "method", method, "params", params));
}

static void add_mouse(json_t *steps, const char *type, double x, double y, const char *button,
		      int clicks, int buttons)
{
	add_step(steps, "Input.dispatchMouseEvent",
		 json_pack("{s:s, s:f, s:f, s:s, s:i, s:i}", "type", type, "x", x, "y", y, "button",
			   button, "clickCount", clicks, "buttons", buttons));
}

static int button_mask(const char *b)
{
	return !strcmp(b, "right") ? 2 : !strcmp(b, "middle") ? 4 : 1;
}

/* A number field: present (or not required), finite, within the bound. */
static bool action_number(struct sbx_http_req *req, json_t *body, const char *field, bool required,
			  double bound, double *out)
{
	json_t *v = json_object_get(body, field);
	char loc[64];

	snprintf(loc, sizeof(loc), "body.%s", field);
	if (!v || json_is_null(v)) {
		if (required)
			api_invalid(req, loc, "Field required", "missing");
		return !required;
	}
	if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
	    fabs(json_number_value(v)) > bound) {
		api_invalid(req, loc, "Input should be a finite number in range", "float_type");
		return false;
	}
	*out = json_number_value(v);
	return true;
}

/* The steps of one action, or NULL with a 422 sent. */
static json_t *action_steps(struct automation *a, struct sbx_http_req *req, json_t *body,
			    const char *type)
{
	json_t *steps = json_array(), *v;
	const char *button = sbx_json_str(body, "button") ?: "left", *key = NULL;
	double x = a->mouse_x, y = a->mouse_y, dx = 0, dy = 0, d = 0;
	json_int_t clicks = 1;
	size_t i;

	if (strcmp(button, "left") && strcmp(button, "right") && strcmp(button, "middle")) {
		api_invalid(req, "body.button", "Input should be 'left', 'right' or 'middle'",
			    "enum");
		goto bad;
	}
	if (!strcmp(type, "MOVE_TO") || !strcmp(type, "DRAG_TO")) {
		if (!action_number(req, body, "x", true, ACTION_MAX_COORD, &x) ||
		    !action_number(req, body, "y", true, ACTION_MAX_COORD, &y))
			goto bad;
	} else if (!strcmp(type, "MOVE_REL") || !strcmp(type, "DRAG_REL")) {
		if (!action_number(req, body, "x_offset", true, ACTION_MAX_COORD, &dx) ||
		    !action_number(req, body, "y_offset", true, ACTION_MAX_COORD, &dy))
			goto bad;
		x += dx;
		y += dy;
	} else if (!strcmp(type, "CLICK") || !strcmp(type, "RIGHT_CLICK") ||
		   !strcmp(type, "DOUBLE_CLICK")) {
		if (!action_number(req, body, "x", false, ACTION_MAX_COORD, &x) ||
		    !action_number(req, body, "y", false, ACTION_MAX_COORD, &y))
			goto bad;
		if ((v = json_object_get(body, "num_clicks")) && !json_is_null(v) &&
		    (!json_is_integer(v) || json_integer_value(v) < 1 ||
		     json_integer_value(v) > 3)) {
			api_invalid(req, "body.num_clicks", "Input should be 1, 2 or 3", "enum");
			goto bad;
		}
		clicks = v && json_is_integer(v) ? json_integer_value(v) : 1;
		if (!strcmp(type, "RIGHT_CLICK"))
			button = "right";
		if (!strcmp(type, "DOUBLE_CLICK"))
			clicks = 2;
	}
	if (x < 0 || y < 0) {
		api_invalid(req, "body.x", "The pointer cannot leave the page (x, y >= 0)",
			    "value_error");
		goto bad;
	}
	if (!strcmp(type, "MOVE_TO") || !strcmp(type, "MOVE_REL")) {
		add_mouse(steps, "mouseMoved", x, y, "none", 0, 0);
	} else if (!strcmp(type, "CLICK") || !strcmp(type, "RIGHT_CLICK") ||
		   !strcmp(type, "DOUBLE_CLICK")) {
		add_mouse(steps, "mouseMoved", x, y, "none", 0, 0);
		for (int n = 1; n <= clicks; n++) {
			add_mouse(steps, "mousePressed", x, y, button, n, button_mask(button));
			add_mouse(steps, "mouseReleased", x, y, button, n, 0);
		}
	} else if (!strcmp(type, "MOUSE_DOWN") || !strcmp(type, "MOUSE_UP")) {
		bool down = !strcmp(type, "MOUSE_DOWN");

		add_mouse(steps, down ? "mousePressed" : "mouseReleased", x, y, button, 1,
			  down ? button_mask(button) : 0);
	} else if (!strcmp(type, "DRAG_TO") || !strcmp(type, "DRAG_REL")) {
		add_mouse(steps, "mousePressed", a->mouse_x, a->mouse_y, "left", 1, 1);
		add_mouse(steps, "mouseMoved", (a->mouse_x + x) / 2, (a->mouse_y + y) / 2, "left",
			  0, 1);
		add_mouse(steps, "mouseMoved", x, y, "left", 0, 1);
		add_mouse(steps, "mouseReleased", x, y, "left", 1, 0);
	} else if (!strcmp(type, "SCROLL")) {
		json_t *sx = json_object_get(body, "dx"), *sy = json_object_get(body, "dy");

		if ((sx && !json_is_null(sx) && !json_is_integer(sx)) ||
		    (sy && !json_is_null(sy) && !json_is_integer(sy)) ||
		    llabs(json_integer_value(sx)) > 10000 ||
		    llabs(json_integer_value(sy)) > 10000) {
			api_invalid(req, "body.dy", "dx and dy are integers (at most 10000)",
				    "int_type");
			goto bad;
		}
		add_step(steps, "Input.dispatchMouseEvent",
			 json_pack("{s:s, s:f, s:f, s:I, s:I}", "type", "mouseWheel", "x", x, "y",
				   y, "deltaX", json_integer_value(sx) * SCROLL_UNIT_PX, "deltaY",
				   json_integer_value(sy) * SCROLL_UNIT_PX));
	} else if (!strcmp(type, "TYPING")) {
		const char *text = sbx_json_str(body, "text");

		if (!text || !*text) {
			api_invalid(req, "body.text", "String should have at least 1 character",
				    "string_too_short");
			goto bad;
		}
		add_step(steps, "Input.insertText", json_pack("{s:s}", "text", text));
	} else if (!strcmp(type, "PRESS") || !strcmp(type, "KEY_DOWN") || !strcmp(type, "KEY_UP")) {
		if (!(key = sbx_json_str(body, "key")) || !*key) {
			api_invalid(req, "body.key", "Field required", "missing");
			goto bad;
		}
		if (strcmp(type, "KEY_UP"))
			add_step(steps, "Input.dispatchKeyEvent", key_params(key, true, 0));
		if (strcmp(type, "KEY_DOWN"))
			add_step(steps, "Input.dispatchKeyEvent", key_params(key, false, 0));
	} else if (!strcmp(type, "HOTKEY")) {
		json_t *keys = json_object_get(body, "keys");
		int modifiers = 0;
		size_t n = json_array_size(keys);

		json_array_foreach(keys, i, v) if (!json_is_string(v) || !*json_string_value(v)) n =
			0;
		if (!n) {
			api_invalid(req, "body.keys", "A list of at least one key name",
				    "list_type");
			goto bad;
		}
		for (i = 0; i < n; i++) {
			key = json_string_value(json_array_get(keys, i));
			modifiers |= modifier_bit(key);
			add_step(steps, "Input.dispatchKeyEvent", key_params(key, true, modifiers));
		}
		for (i = n; i-- > 0;) {
			key = json_string_value(json_array_get(keys, i));
			add_step(steps, "Input.dispatchKeyEvent",
				 key_params(key, false, modifiers));
			modifiers &= ~modifier_bit(key);
		}
	} else if (!strcmp(type, "WAIT")) {
		char expr[96];

		if (!action_number(req, body, "duration", true, ACTION_MAX_WAIT_S, &d) || d <= 0) {
			if (d <= 0 && json_is_number(json_object_get(body, "duration")))
				api_invalid(req, "body.duration",
					    "Input should be greater than 0 (at most 25 s)",
					    "greater_than");
			goto bad;
		}
		snprintf(expr, sizeof(expr), "new Promise(r => setTimeout(r, %.0f))", d * 1000);
		add_step(steps, "Runtime.evaluate",
			 json_pack("{s:s, s:b}", "expression", expr, "awaitPromise", 1));
	} else {
		api_invalid(
			req, "body.action_type",
			"Input should be one of MOVE_TO, MOVE_REL, CLICK, MOUSE_DOWN, MOUSE_UP, "
			"RIGHT_CLICK, DOUBLE_CLICK, DRAG_TO, DRAG_REL, SCROLL, TYPING, PRESS, "
			"KEY_DOWN, KEY_UP, HOTKEY, WAIT",
			"union_tag_invalid");
		goto bad;
	}
	/* Where the pointer ends, for the next relative action. */
	json_object_set_new(body, "_x", json_real(x));
	json_object_set_new(body, "_y", json_real(y));
	return steps;
bad:
	json_decref(steps);
	return NULL;
}

static void op_actions(struct auto_job *j, json_t *result, const char *error)
{
	json_t *steps = json_object_get(j->body, "_steps"), *step;
	const char *type = sbx_json_str(j->body, "action_type") ?: "";

	(void)result;
	if (error) {
		job_fail(j, 200, "%s failed: %s", type, error);
		return;
	}
	if ((size_t)j->step < json_array_size(steps)) {
		step = json_array_get(steps, (size_t)j->step);
		job_call(j, false, sbx_json_str(step, "method"),
			 json_incref(json_object_get(step, "params")));
		return;
	}
	j->a->mouse_x = json_real_value(json_object_get(j->body, "_x"));
	j->a->mouse_y = json_real_value(json_object_get(j->body, "_y"));
	{
		struct sbx_http_req *req = job_take_req(j);

		if (req) {
			/* AIO's ActionResponse: the envelope, and its older fields. */
			json_t *out = json_pack(
				"{s:b, s:s, s:{s:s, s:s}, s:n, s:s, s:s}", "success", 1, "message",
				"Action performed", "data", "status", "success", "action_performed",
				type, "hint", "status", "success", "action_performed", type);

			sbx_http_respond_json(req, 200, out);
			json_decref(out);
		}
		job_end(j);
	}
}

void automation_actions(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	json_t *body = api_body_object(req), *steps;
	const char *type;

	if (!body)
		return;
	if (!(type = sbx_json_str(body, "action_type"))) {
		/* The SDKs' action models have no such field: it must be passed
		 * as an extra one, or an {x, y} could be a move, a click or a drag. */
		api_invalid(req, "body.action_type",
			    "Field required: the action's type (CLICK, MOVE_TO, TYPING, ...)",
			    "missing");
		json_decref(body);
		return;
	}
	if (!(steps = action_steps(a, req, body, type))) {
		json_decref(body);
		return;
	}
	json_object_set_new(body, "_steps", steps);
	job_start(a, req, body, op_actions, true);
}

/* Headers for one origin's requests only: the pages' requests to it are
 * paused (Fetch) and continued with them set; an empty set removes it. */
void automation_scoped_headers(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	json_t *body = api_body_object(req), *headers, *v;
	const char *origin, *k;
	char canon[2048];

	if (!body)
		return;
	if (!field_string(req, body, "origin", true, &origin))
		goto out;
	/* An origin: scheme://host[:port], nothing after. */
	if ((strncmp(origin, "http://", 7) && strncmp(origin, "https://", 8)) ||
	    strlen(origin) == strlen(origin[4] == 's' ? "https://" : "http://") ||
	    origin_of(origin, canon, sizeof(canon)) != strlen(origin) ||
	    strpbrk(origin, "*?@ \t")) {
		api_invalid(req, "body.origin",
			    "An origin is scheme://host[:port] (http or https), without a path",
			    "value_error");
		goto out;
	}
	headers = json_object_get(body, "headers");
	if (!json_is_object(headers)) {
		api_invalid(req, "body.headers", "Input should be a valid dictionary", "dict_type");
		goto out;
	}
	json_object_foreach(headers, k, v)
	{
		if (!json_is_string(v) || !http_token(k)) {
			api_invalid(req, "body.headers",
				    "Each header needs a name and a string value", "string_type");
			goto out;
		}
	}
	if (json_object_size(headers))
		json_object_set(a->scoped, canon, headers);
	else
		json_object_del(a->scoped, canon);
	job_start(a, req,
		  json_pack("{s:s, s:b}", "_message",
			    json_object_size(headers) ? "Scoped headers set"
						      : "Scoped headers removed",
			    "_scoped", 1),
		  op_apply_routes, true);
out:
	json_decref(body);
}

void automation_requests(struct sbx_http_req *req, void *arg)
{
	struct automation *a = arg;
	char filter[2048] = "", v[32];
	long limit = 100;
	json_t *out = json_array(), *e;
	size_t n = json_array_size(a->requests);

	sbx_http_query(req, "filter", filter, sizeof(filter));
	if (sbx_http_query(req, "limit", v, sizeof(v)) > 0) {
		char *end;

		limit = strtol(v, &end, 10);
		if (*end || limit < 1 || limit > AUTOMATION_LOG) {
			json_decref(out);
			api_invalid(req, "query.limit", "Input should be an integer from 1 to 1000",
				    "int_parsing");
			return;
		}
	}
	/* The newest limit entries whose URL holds the filter, oldest first. */
	for (size_t i = n; i-- > 0 && (long)json_array_size(out) < limit;) {
		e = json_array_get(a->requests, i);
		if (!filter[0] || strstr(sbx_json_str(e, "url") ?: "", filter))
			json_array_insert(out, 0, e);
	}
	api_ok(req, "Requests", out);
}

static json_t *har_headers(json_t *h)
{
	json_t *out = json_array(), *v;
	const char *k;

	json_object_foreach(h, k, v) if (json_is_string(v))
		json_array_append_new(out, json_pack("{s:s, s:O}", "name", k, "value", v));
	return out;
}

/* HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) of the log. */
static json_t *har(struct automation *a)
{
	json_t *entries = json_array(), *e;
	size_t i;

	json_array_foreach(a->requests, i, e)
	{
		double started = json_number_value(json_object_get(e, "started")),
		       finished = json_number_value(json_object_get(e, "finished")),
		       wall = json_number_value(json_object_get(e, "wall_time"));
		double ms = finished > started ? (finished - started) * 1000 : 0;
		time_t secs = (time_t)wall;
		struct tm tm;
		char when[64];
		const char *post = sbx_json_str(e, "post_data");

		gmtime_r(&secs, &tm);
		snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (int)((wall - (double)secs) * 1000));
		json_int_t size = (json_int_t)json_number_value(json_object_get(e, "size"));
		json_t *request, *response, *entry;

		request = json_pack("{s:s, s:s, s:s, s:o, s:[], s:[], s:i, s:i}", "method",
				    sbx_json_str(e, "method") ?: "GET", "url",
				    sbx_json_str(e, "url") ?: "", "httpVersion", "HTTP/1.1",
				    "headers", har_headers(json_object_get(e, "request_headers")),
				    "queryString", "cookies", "headersSize", -1, "bodySize",
				    post ? (int)strlen(post) : 0);
		if (request && post)
			json_object_set_new(request, "postData",
					    json_pack("{s:s, s:s}", "mimeType", "", "text", post));
		response = json_pack(
			"{s:i, s:s, s:s, s:o, s:[], s:{s:I, s:s}, s:s, s:i, s:I}", "status",
			(int)json_integer_value(json_object_get(e, "status")), "statusText",
			sbx_json_str(e, "status_text") ?: "", "httpVersion",
			sbx_json_str(e, "protocol") ?: "HTTP/1.1", "headers",
			har_headers(json_object_get(e, "response_headers")), "cookies", "content",
			"size", size, "mimeType", sbx_json_str(e, "mime_type") ?: "", "redirectURL",
			"", "headersSize", -1, "bodySize", size);
		entry = json_pack("{s:s, s:f, s:o, s:o, s:{}, s:{s:f, s:f, s:f}}",
				  "startedDateTime", when, "time", ms, "request", request,
				  "response", response, "cache", "timings", "send", 0.0, "wait", ms,
				  "receive", 0.0);
		if (entry && json_is_true(json_object_get(e, "failed")))
			json_object_set_new(entry, "_error",
					    json_string(sbx_json_str(e, "error") ?: "failed"));
		if (entry)
			json_array_append_new(entries, entry);
	}
	return json_pack("{s:{s:s, s:{s:s, s:s}, s:[], s:o}}", "log", "version", "1.2", "creator",
			 "name", "sbx-agent", "version", "1", "pages", "entries", entries);
}

static void op_export_har(struct auto_job *j, json_t *result, const char *error)
{
	if (j->step == 0) {
		job_path(j, sbx_json_str(j->body, "save_path"));
		j->acc = json_integer((json_int_t)json_array_size(j->a->requests));
		j->step = 0;
		job_write_json(j, har(j->a));
		return;
	}
	if (error) {
		job_fail(j, 200, "%s", error);
		return;
	}
	job_ok(j, "HAR exported", json_pack("{s:s, s:O}", "path", j->path, "entries", j->acc));
}

void automation_export_har(struct sbx_http_req *req, void *arg)
{
	json_t *body = api_body_object(req);
	const char *path;

	if (!body)
		return;
	if (!field_string(req, body, "save_path", true, &path) || !*path) {
		if (path)
			api_invalid(req, "body.save_path", "Input should not be empty",
				    "string_too_short");
		json_decref(body);
		return;
	}
	job_start(arg, req, body, op_export_har, false);
}

/* ---- page recording ------------------------------------------------------------------------ */

#define RECORD_MAX_SECONDS 3600

static json_t *rec_status(struct automation *a)
{
	json_t *s;

	if (!a->rec)
		return json_pack("{s:s, s:O?}", "state", "idle", "last", a->rec_last);
	s = recording_info(a->rec);
	json_object_set_new(s, "state",
			    json_string(a->rec_finishing	   ? "stopping"
					: !a->rec_ready		   ? "starting"
					: recording_paused(a->rec) ? "paused"
								   : "recording"));
	return s;
}

/* The file is complete (or failed): whoever waits for it is answered. */
static void rec_done(json_t *info, const char *error, void *arg)
{
	struct automation *a = arg;
	struct auto_job *waiting[] = { a->rec_job, a->rec_stopper };

	a->rec = NULL;
	a->rec_ready = a->rec_finishing = false;
	a->rec_job = a->rec_stopper = NULL;
	a->rec_session[0] = '\0';
	json_decref(a->rec_last);
	a->rec_last = info ? info : json_pack("{s:s}", "error", error);
	for (size_t i = 0; i < sizeof(waiting) / sizeof(waiting[0]); i++) {
		struct auto_job *j = waiting[i];

		if (!j || j->ended)
			continue;
		if (error)
			job_fail(j, 200, "%s", error);
		else
			job_ok(j, "Recorded", json_deep_copy(info));
	}
}

/* Ends the recording: the screencast stops, the file is completed. */
static void rec_finish(struct automation *a)
{
	if (!a->rec || a->rec_finishing || !a->rec_ready)
		return;
	a->rec_finishing = true;
	if (a->cdp && a->rec_session[0])
		cdp_call(a->cdp, a->rec_session, "Page.stopScreencast", NULL, CALL_TIMEOUT_MS,
			 frame_acked, NULL);
	recording_stop(a->rec, rec_done, a);
}

static void rec_limit(void *arg)
{
	rec_finish(arg);
}

/* The file is open: the screencast starts on the starter's page. */
static void rec_opened(struct recording *r, const char *error, void *arg)
{
	struct automation *a = arg;
	struct auto_job *j = a->rec_starter;
	json_t *body = j->body;

	(void)r;
	if (error) {
		a->rec = NULL;
		a->rec_starter = NULL;
		job_fail(j, 200, "%s", error);
		return;
	}
	snprintf(a->rec_session, sizeof(a->rec_session), "%s", j->session);
	job_call(j, false, "Page.startScreencast",
		 json_pack("{s:s, s:I, s:i}", "format", "jpeg", "quality",
			   json_integer_value(json_object_get(body, "quality")), "everyNthFrame",
			   1));
}

static void op_record(struct auto_job *j, json_t *result, const char *error)
{
	struct automation *a = j->a;
	json_t *body = j->body;
	const char *path = sbx_json_str(body, "save_path");
	double duration = json_number_value(json_object_get(body, "duration"));
	bool once = !strcmp(sbx_json_str(body, "action"), "once");
	int rc;

	switch (j->step) {
	case 0:
		if (a->rec) {
			job_fail(j, 409, "a recording is running: stop it first");
			return;
		}
		if (path && *path) {
			job_path(j, path);
		} else {
			char stamp[32];
			time_t now = time(NULL);
			struct tm tm;

			strftime(stamp, sizeof(stamp), "%Y%m%d_%H%M%S", gmtime_r(&now, &tm));
			snprintf(j->path, sizeof(j->path), "/tmp/recordings/page_%s.avi", stamp);
		}
		a->rec_starter = j;
		rc = recording_open(a->loop, j->path,
				    (unsigned)json_integer_value(json_object_get(body, "fps")),
				    (uint64_t)(duration * 1000), rec_opened, rec_limit, a, &a->rec);
		if (rc) {
			a->rec = NULL;
			a->rec_starter = NULL;
			job_fail(j, 503, "cannot start a recording: %s", uv_strerror(rc));
		}
		return;
	case 1: /* the screencast's answer */
		a->rec_starter = NULL;
		if (!result) {
			/* Nothing recorded: the file is completed, empty. */
			a->rec_ready = true;
			rec_finish(a);
			job_fail(j, 502, "the browser did not start a screencast: %s", error);
			return;
		}
		a->rec_ready = true;
		if (!once) {
			job_ok(j, "Recording", rec_status(a));
			return;
		}
		a->rec_job = j;
		job_pause(j, (uint64_t)(duration * 1000));
		return;
	default: /* a "once" has had its time; rec_done answers */
		rec_finish(a);
		return;
	}
}

static void op_record_stop(struct auto_job *j, json_t *result, const char *error)
{
	(void)result;
	(void)error;
	j->a->rec_stopper = j;
	rec_finish(j->a); /* rec_done answers */
}

void automation_record(struct sbx_http_req *req, void *arg)
{
	static const char *const actions[] = {
		"once", "start", "pause", "resume", "stop", "status"
	};
	struct automation *a = arg;
	json_t *body = api_body_object_or_empty(req), *v;
	const char *action = "once", *path;
	bool known = false, given;
	double n;

	if (!body)
		return;
	if ((v = json_object_get(body, "action")) && !json_is_null(v))
		action = json_string_value(v) ?: "";
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		known = known || !strcmp(action, actions[i]);
	if (!known) {
		api_invalid(
			req, "body.action",
			"Input should be 'once', 'start', 'pause', 'resume', 'stop' or 'status'",
			"enum");
		goto out;
	}
	if (!api_opt_number(req, body, "duration", 0.001, RECORD_MAX_SECONDS, false, &n, &given) ||
	    !api_opt_number(req, body, "fps", 1, 60, true, &n, &given) ||
	    !api_opt_number(req, body, "quality", 0, 100, true, &n, &given) ||
	    !field_string(req, body, "save_path", false, &path))
		goto out;
	if (!strcmp(action, "status")) {
		api_ok(req, "Recording status", rec_status(a));
	} else if (!strcmp(action, "pause") || !strcmp(action, "resume")) {
		if (!a->rec || !a->rec_ready || a->rec_finishing) {
			api_fail(req, "no recording is running", rec_status(a));
			goto out;
		}
		recording_pause(a->rec, !strcmp(action, "pause"));
		api_ok(req, !strcmp(action, "pause") ? "Recording paused" : "Recording resumed",
		       rec_status(a));
	} else if (!strcmp(action, "stop")) {
		if (!a->rec) {
			api_fail(req, "no recording is running", rec_status(a));
		} else if (!a->rec_ready || a->rec_stopper) {
			json_t *env = api_envelope(false,
						   a->rec_stopper ? "the recording is being stopped"
								  : "the recording is starting; "
								    "stop it once it runs",
						   rec_status(a));

			sbx_http_respond_json(req, 409, env);
			json_decref(env);
		} else {
			job_start(a, req, body, op_record_stop, false);
			return; /* the job has the body */
		}
	} else {
		/* once and start: the defaults filled in; start without a
		 * duration runs until stopped (RECORD_MAX_SECONDS at most). */
		if (!json_object_get(body, "fps"))
			json_object_set_new(body, "fps", json_integer(15));
		if (!json_object_get(body, "quality"))
			json_object_set_new(body, "quality", json_integer(80));
		if (!json_object_get(body, "duration"))
			json_object_set_new(
				body, "duration",
				json_real(!strcmp(action, "once") ? 10 : RECORD_MAX_SECONDS));
		json_object_set_new(body, "action", json_string(action));
		job_start(a, req, body, op_record, true);
		return;
	}
out:
	json_decref(body);
}

/* ---- life ------------------------------------------------------------------------------------ */

void automation_init(struct automation *a, uv_loop_t *loop, const char *cdp_addr,
		     const char *workspace)
{
	memset(a, 0, sizeof(*a));
	a->loop = loop;
	a->cdp_addr = cdp_addr;
	a->workspace = workspace;
	a->console = json_array();
	a->requests = json_array();
	a->routes = json_array();
	a->headers = json_object();
	a->scoped = json_object();
}

void automation_close(struct automation *a)
{
	rec_finish(a); /* the file is completed while the loop drains */
	cdp_free(a->cdp);
	a->cdp = NULL;
}

void automation_reconnect(struct automation *a)
{
	automation_close(a);
	on_lost(a);
}

void automation_release(struct automation *a)
{
	automation_close(a);
	json_decref(a->console);
	json_decref(a->requests);
	json_decref(a->routes);
	json_decref(a->headers);
	json_decref(a->scoped);
	json_decref(a->rec_last);
}
