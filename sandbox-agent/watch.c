/* File watching (see watch.h). One inotify descriptor per watcher, polled
 * by libuv; watch descriptors map to folder paths. */
#define _GNU_SOURCE
#include "watch.h"

#include "api.h"
#include "files.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RING		 10000
#define MAX_DEPTH	 64
#define HEARTBEAT_MS	 15000
#define DEFAULT_DEBOUNCE 300
#define MASK                                                                           \
	(IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | \
	 IN_DELETE_SELF | IN_MOVE_SELF | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

struct wevent {
	uint64_t seq;
	const char *type;
	char *path;
	bool is_dir;
	double ts;
};

struct pending {
	struct pending *next;
	char *path;
	const char *type;
	bool is_dir;
	uint64_t due;
};

struct poller {
	struct poller *next;
	struct watcher *w;
	struct sbx_http_req *req;
	uv_timer_t timer;
	uint64_t cursor;
	long limit;
	/* waits for one path (POST /v1/file/watch/wait) */
	char *path;
	unsigned types; /* bit per event type */
};

struct stream {
	struct stream *next;
	struct watcher *w;
	struct sbx_http_req *req;
	uint64_t cursor;
	bool paused;
};

struct watcher {
	struct watches *ws;
	char id[33];
	char root[PATH_MAX];
	bool recursive, file_mode, temporary, stopping;
	json_t *exclude, *include;
	uint64_t debounce_ms;
	int fd;
	uv_poll_t poll;
	uv_timer_t timer;
	int open_handles;
	struct sbx_map dirs; /* "wd" -> folder path */
	unsigned n_dirs;
	char warning[256];
	struct wevent ring[RING];
	uint64_t next_seq; /* the next event's number (the first is 1) */
	struct pending *pending;
	struct poller *pollers;
	struct stream *streams;
	double created_at;
};

static const char *const type_names[] = { "create", "write", "remove", "rename", "chmod" };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- filters ---------------------------------------------------------------------- */

static const char *relative(const struct watcher *w, const char *path)
{
	size_t n = strlen(w->root);

	if (strncmp(path, w->root, n) == 0 && path[n] == '/')
		return path + n + 1;
	return path;
}

/* Excluded: a pattern matches one of the path's parts below the root. */
static bool excluded(const struct watcher *w, const char *path)
{
	const char *rel = relative(w, path);
	json_t *p;
	size_t i;

	json_array_foreach(w->exclude, i, p)
	{
		const char *pat = json_string_value(p);

		for (const char *s = rel; pat && *s;) {
			size_t n = strcspn(s, "/");
			char part[NAME_MAX + 1];

			snprintf(part, sizeof(part), "%.*s", (int)n, s);
			if (fnmatch(pat, part, 0) == 0)
				return true;
			s += n + (s[n] == '/');
		}
	}
	return false;
}

static bool included(const struct watcher *w, const char *path)
{
	const char *base = strrchr(path, '/'), *rel = relative(w, path);
	json_t *p;
	size_t i;

	if (!json_array_size(w->include))
		return true;
	json_array_foreach(w->include, i, p)
	{
		const char *pat = json_string_value(p);

		if (pat && (fnmatch(pat, base ? base + 1 : path, 0) == 0 ||
			    fnmatch(pat, rel, FNM_PATHNAME) == 0))
			return true;
	}
	return false;
}

/* ---- delivering ---------------------------------------------------------------------- */

static const struct wevent *ring_at(const struct watcher *w, uint64_t seq)
{
	if (seq == 0 || seq >= w->next_seq || w->next_seq - seq > RING)
		return NULL;
	return &w->ring[seq % RING];
}

static uint64_t oldest(const struct watcher *w)
{
	return w->next_seq > RING ? w->next_seq - RING : 1;
}

static json_t *event_json(const struct wevent *e)
{
	return json_pack("{s:I, s:s, s:s, s:b, s:f}", "seq", (json_int_t)e->seq, "type", e->type,
			 "path", e->path, "is_dir", e->is_dir, "timestamp", e->ts);
}

static void poller_free_closed(uv_handle_t *h)
{
	struct poller *p = h->data;

	sbx_free(p->path);
	sbx_free(p);
}

static void poller_remove(struct poller *p)
{
	struct poller **pp;

	for (pp = &p->w->pollers; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	uv_timer_stop(&p->timer);
	uv_close((uv_handle_t *)&p->timer, poller_free_closed);
}

static void watcher_stop(struct watcher *w);

/* Answers a poll (events after its cursor) or a wait (the matching event,
 * or none: timed out). */
static void poller_answer(struct poller *p, const struct wevent *match)
{
	struct watcher *w = p->w;

	if (p->req) {
		sbx_http_on_abort(p->req, NULL, NULL);
		if (p->path) {
			if (match)
				api_ok(p->req, "The file changed",
				       json_pack("{s:s, s:b, s:o}", "path", p->path, "matched", 1,
						 "event", event_json(match)));
			else
				api_fail(p->req, "timed out waiting for the file",
					 json_pack("{s:s, s:b, s:b}", "path", p->path, "matched", 0,
						   "timed_out", 1));
		} else {
			json_t *events = json_array();
			uint64_t from = p->cursor + 1 < oldest(w) ? oldest(w) : p->cursor + 1, seq;
			uint64_t missed = from > p->cursor + 1 ? from - p->cursor - 1 : 0;

			for (seq = from;
			     seq < w->next_seq && (long)json_array_size(events) < p->limit; seq++)
				json_array_append_new(events, event_json(ring_at(w, seq)));
			api_ok(p->req, "Events",
			       json_pack("{s:s, s:o, s:I, s:b, s:I}", "watcher_id", w->id, "events",
					 events, "cursor", (json_int_t)(seq - 1), "has_more",
					 seq < w->next_seq, "missed", (json_int_t)missed));
		}
	}
	poller_remove(p);
	if (w->temporary && !w->pollers)
		watcher_stop(w);
}

static void poller_timeout(uv_timer_t *t)
{
	poller_answer(t->data, NULL);
}

static void poller_gone(struct sbx_http_req *req, void *arg)
{
	struct poller *p = arg;

	p->req = NULL;
	poller_answer(p, NULL);
}

static void stream_pump(struct stream *s);

static void stream_drained(struct sbx_http_req *req, void *arg)
{
	struct stream *s = arg;

	s->paused = false;
	stream_pump(s);
}

/* Sends what the stream has not seen yet, until the socket is full. */
static void stream_pump(struct stream *s)
{
	struct watcher *w = s->w;
	struct sbx_buf b;

	if (s->paused || !s->req)
		return;
	if (s->cursor + 1 < oldest(w)) {
		char note[96];

		snprintf(note, sizeof(note), "event: missed\ndata: {\"missed\": %llu}\n\n",
			 (unsigned long long)(oldest(w) - s->cursor - 1));
		sbx_http_write(s->req, note, strlen(note));
		s->cursor = oldest(w) - 1;
	}
	sbx_buf_init(&b, 1u << 20);
	while (s->cursor + 1 < w->next_seq) {
		const struct wevent *e = ring_at(w, ++s->cursor);
		json_t *j = event_json(e);
		char *text = sbx_json_dumps(j);
		int rc;

		json_decref(j);
		sbx_buf_reset(&b);
		sbx_buf_printf(&b, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)e->seq,
			       e->type, text ? text : "{}");
		sbx_free(text);
		rc = sbx_http_write(s->req, b.data, b.len);
		if (rc < 0)
			break;
		if (rc == 1) {
			s->paused = true;
			sbx_http_on_drain(s->req, stream_drained, s);
			break;
		}
	}
	sbx_buf_release(&b);
}

static void emit(struct watcher *w, const char *type, const char *path, bool is_dir)
{
	struct wevent *e = &w->ring[w->next_seq % RING];
	struct poller *p, *next;
	struct stream *s;

	sbx_free(e->path); /* the event this one replaces */
	e->seq = w->next_seq++;
	e->type = type;
	e->path = sbx_strdup(path);
	e->is_dir = is_dir;
	e->ts = now_s();
	if (!e->path)
		e->path = sbx_strdup("");
	for (p = w->pollers; p; p = next) {
		next = p->next;
		if (!p->path) {
			poller_answer(p, NULL);
		} else if (strcmp(p->path, path) == 0) {
			for (unsigned t = 0; t < 5; t++)
				if ((p->types & (1u << t)) && strcmp(type_names[t], type) == 0) {
					poller_answer(p, e);
					break;
				}
		}
	}
	for (s = w->streams; s; s = s->next)
		stream_pump(s);
}

/* ---- debouncing ---------------------------------------------------------------------- */

static void flush_pending(struct watcher *w, const char *path, bool all)
{
	struct pending **pp = &w->pending, *p;
	uint64_t now = uv_now(w->ws->loop);

	while ((p = *pp)) {
		if (all || (path && strcmp(p->path, path) == 0) || (!path && p->due <= now)) {
			*pp = p->next;
			emit(w, p->type, p->path, p->is_dir);
			sbx_free(p->path);
			sbx_free(p);
		} else {
			pp = &p->next;
		}
	}
}

static void arm_timer(struct watcher *w);

static void on_debounce(uv_timer_t *t)
{
	struct watcher *w = t->data;

	flush_pending(w, NULL, false);
	arm_timer(w);
}

static void arm_timer(struct watcher *w)
{
	uint64_t first = UINT64_MAX, now = uv_now(w->ws->loop);

	for (struct pending *p = w->pending; p; p = p->next)
		if (p->due < first)
			first = p->due;
	if (first != UINT64_MAX)
		uv_timer_start(&w->timer, on_debounce, first > now ? first - now : 0, 0);
}

/* An event seen: debounced kinds wait for the burst to settle; others go
 * out at once, after any pending event of the same path (order holds). */
static void note(struct watcher *w, const char *type, const char *path, bool is_dir)
{
	bool debounced = strcmp(type, "write") == 0 || strcmp(type, "chmod") == 0;

	if (w->file_mode && strcmp(path, w->root) != 0)
		return;
	if (!w->file_mode && (excluded(w, path) || !included(w, path)))
		return;
	if (debounced && w->debounce_ms) {
		struct pending *p;

		for (p = w->pending; p; p = p->next)
			if (p->type == type && strcmp(p->path, path) == 0) {
				p->due = uv_now(w->ws->loop) + w->debounce_ms;
				return;
			}
		p = sbx_calloc(1, sizeof(*p));
		if (!p || !(p->path = sbx_strdup(path))) {
			sbx_free(p);
			emit(w, type, path, is_dir);
			return;
		}
		p->type = type;
		p->is_dir = is_dir;
		p->due = uv_now(w->ws->loop) + w->debounce_ms;
		p->next = w->pending;
		w->pending = p;
		arm_timer(w);
		return;
	}
	flush_pending(w, path, false);
	emit(w, type, path, is_dir);
}

/* ---- inotify ------------------------------------------------------------------------ */

static void add_tree(struct watcher *w, const char *dir, int depth, bool announce);

static void add_dir(struct watcher *w, const char *dir)
{
	int wd = inotify_add_watch(w->fd, dir, MASK | IN_ONLYDIR);
	char key[16];

	if (wd < 0) {
		if (!w->warning[0])
			snprintf(w->warning, sizeof(w->warning), "cannot watch %.180s: %s", dir,
				 strerror(errno));
		return;
	}
	snprintf(key, sizeof(key), "%d", wd);
	if (!sbx_map_get(&w->dirs, key)) {
		char *copy = sbx_strdup(dir);

		if (copy && sbx_map_put(&w->dirs, key, copy, NULL) == 0)
			w->n_dirs++;
		else
			sbx_free(copy);
	}
}

/* Watches dir and (recursive) its subfolders; announce reports what a new
 * folder already holds (it may have filled before its watch existed). */
static void add_tree(struct watcher *w, const char *dir, int depth, bool announce)
{
	DIR *d;
	struct dirent *e;

	add_dir(w, dir);
	if (!w->recursive && !announce)
		return;
	if (depth >= MAX_DEPTH || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		char sub[PATH_MAX];
		bool is_dir;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= (int)sizeof(sub))
			continue;
		is_dir = e->d_type == DT_DIR;
		if (announce)
			note(w, "create", sub, is_dir);
		if (is_dir && w->recursive && !excluded(w, sub))
			add_tree(w, sub, depth + 1, announce);
	}
	closedir(d);
}

static void on_inotify(uv_poll_t *h, int status, int events)
{
	struct watcher *w = h->data;
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while (!w->stopping && (n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n && !w->stopping;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			char key[16], full[PATH_MAX];
			const char *dir;
			bool is_dir = ev->mask & IN_ISDIR;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				emit(w, "overflow", "", false);
				continue;
			}
			snprintf(key, sizeof(key), "%d", ev->wd);
			dir = sbx_map_get(&w->dirs, key);
			if (!dir)
				continue;
			if (ev->mask & IN_IGNORED) {
				sbx_free(sbx_map_remove(&w->dirs, key));
				w->n_dirs--;
				continue;
			}
			if (ev->len && ev->name[0]) {
				if (snprintf(full, sizeof(full), "%s/%s", dir, ev->name) >=
				    (int)sizeof(full))
					continue;
			} else {
				snprintf(full, sizeof(full), "%s", dir);
			}
			if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
				note(w, "create", full, is_dir);
				if (is_dir && w->recursive && !w->file_mode && !excluded(w, full))
					add_tree(w, full, 1, true);
			}
			if (ev->mask & IN_MODIFY)
				note(w, "write", full, is_dir);
			if (ev->mask & IN_ATTRIB)
				note(w, "chmod", full, is_dir);
			if (ev->mask & IN_MOVED_FROM)
				note(w, "rename", full, is_dir);
			if (ev->mask & IN_DELETE)
				note(w, "remove", full, is_dir);
			if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) &&
			    strcmp(full, w->root) == 0)
				note(w, ev->mask & IN_DELETE_SELF ? "remove" : "rename", full,
				     true);
		}
	}
}

/* ---- watchers ------------------------------------------------------------------------- */

static void free_dir(const char *key, void *value, void *arg)
{
	sbx_free(value);
}

static void watcher_closed(uv_handle_t *h)
{
	struct watcher *w = h->data;

	if (--w->open_handles)
		return;
	for (size_t i = 0; i < RING; i++)
		sbx_free(w->ring[i].path);
	sbx_map_foreach(&w->dirs, free_dir, NULL);
	sbx_map_release(&w->dirs);
	json_decref(w->exclude);
	json_decref(w->include);
	sbx_free(w);
}

static void watcher_stop(struct watcher *w)
{
	struct pending *p;

	if (w->stopping)
		return;
	w->stopping = true;
	if (sbx_map_get(&w->ws->all, w->id) == w)
		sbx_map_remove(&w->ws->all, w->id);
	while (w->pollers)
		poller_answer(w->pollers, NULL);
	while (w->streams) {
		struct stream *s = w->streams;

		w->streams = s->next;
		if (s->req) {
			sbx_http_on_abort(s->req, NULL, NULL);
			sbx_http_write(s->req, "event: stopped\ndata: {}\n\n", 25);
			sbx_http_end(s->req);
		}
		sbx_free(s);
	}
	while ((p = w->pending)) {
		w->pending = p->next;
		sbx_free(p->path);
		sbx_free(p);
	}
	uv_poll_stop(&w->poll);
	close(w->fd);
	uv_close((uv_handle_t *)&w->poll, watcher_closed);
	uv_close((uv_handle_t *)&w->timer, watcher_closed);
}

static json_t *watcher_json(const struct watcher *w)
{
	return json_pack("{s:s, s:s, s:b, s:I, s:I, s:i, s:O, s:O, s:f, s:s?}", "watcher_id", w->id,
			 "path", w->root, "recursive", w->recursive, "debounce",
			 (json_int_t)w->debounce_ms, "events", (json_int_t)(w->next_seq - 1),
			 "watched_dirs", (int)w->n_dirs, "exclude", w->exclude, "include_patterns",
			 w->include, "created_at", w->created_at, "warning",
			 w->warning[0] ? w->warning : NULL);
}

/* A watcher on path; *err says why not. */
static struct watcher *watcher_new(struct watches *ws, const char *path, bool recursive,
				   json_t *exclude, json_t *include, uint64_t debounce_ms,
				   bool temporary, const char **err)
{
	struct watcher *w;
	struct stat st;
	char dir[PATH_MAX];

	if (ws->all.count >= ws->max) {
		*err = "too many watchers; stop one first";
		return NULL;
	}
	w = sbx_calloc(1, sizeof(*w));
	if (!w) {
		*err = "out of memory";
		return NULL;
	}
	w->ws = ws;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		sbx_free(w);
		*err = "cannot start inotify (the limit of inotify instances?)";
		return NULL;
	}
	snprintf(w->root, sizeof(w->root), "%s", path);
	w->recursive = recursive;
	w->temporary = temporary;
	w->exclude = exclude ? json_incref(exclude) : json_array();
	w->include = include ? json_incref(include) : json_array();
	w->debounce_ms = debounce_ms;
	w->next_seq = 1;
	w->created_at = now_s();
	sbx_random_hex(w->id, 16);
	sbx_map_init(&w->dirs, 1u << 20);
	uv_poll_init(ws->loop, &w->poll, w->fd);
	uv_timer_init(ws->loop, &w->timer);
	w->poll.data = w->timer.data = w;
	w->open_handles = 2;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		add_tree(w, path, 0, false);
	} else {
		/* A file (existing or not yet): its folder, filtered to it. */
		char *slash;

		w->file_mode = true;
		w->recursive = false;
		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		add_dir(w, dir);
	}
	if (!w->n_dirs) {
		*err = w->warning[0] ? w->warning : "cannot watch that path";
		w->stopping = true; /* never registered */
		close(w->fd);
		uv_close((uv_handle_t *)&w->poll, watcher_closed);
		uv_close((uv_handle_t *)&w->timer, watcher_closed);
		return NULL;
	}
	/* Temporary ones too, so that stopping the agent ends their waits. */
	if (sbx_map_put(&ws->all, w->id, w, NULL)) {
		*err = "out of memory";
		watcher_stop(w);
		return NULL;
	}
	uv_poll_start(&w->poll, UV_READABLE, on_inotify);
	return w;
}

/* ---- handlers -------------------------------------------------------------------------- */

static bool string_array(struct sbx_http_req *req, json_t *body, const char *field, json_t **out)
{
	json_t *v = json_object_get(body, field), *x;
	char loc[64];
	size_t i;

	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	snprintf(loc, sizeof(loc), "body.%s", field);
	if (!json_is_array(v)) {
		api_invalid(req, loc, "Input should be a valid list", "list_type");
		return false;
	}
	json_array_foreach(v, i, x)
	{
		if (!json_is_string(x)) {
			api_invalid(req, loc, "Input should be a list of strings", "string_type");
			return false;
		}
	}
	*out = v;
	return true;
}

void watches_handle_create(struct sbx_http_req *req, void *arg)
{
	static const char *const default_exclude[] = { ".git",	    "node_modules", "__pycache__",
						       ".venv",	    "*.pyc",	    "*.pyo",
						       ".DS_Store", "*.swp",	    "*.swo" };
	struct watches *ws = arg;
	json_t *body = api_body_object(req), *exclude, *include, *v, *defaults = NULL;
	const char *path, *err = NULL;
	char full[PATH_MAX];
	struct watcher *w;
	long debounce = DEFAULT_DEBOUNCE;

	if (!body)
		return;
	path = json_string_value(json_object_get(body, "path"));
	if (!path) {
		api_invalid(req, "body.path",
			    json_object_get(body, "path") ? "Input should be a valid string"
							  : "Field required",
			    json_object_get(body, "path") ? "string_type" : "missing");
		goto out;
	}
	if (!string_array(req, body, "exclude", &exclude) ||
	    !string_array(req, body, "include_patterns", &include))
		goto out;
	v = json_object_get(body, "debounce");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 60000) {
			api_invalid(req, "body.debounce",
				    "Input should be milliseconds, 0 to 60000", "int_type");
			goto out;
		}
		debounce = (long)json_integer_value(v);
	}
	if (files_resolve(&(struct files){ .workspace = ws->workspace }, path,
			  json_string_length(json_object_get(body, "path")), full, sizeof(full))) {
		api_invalid(req, "body.path", "not a usable path", "value_error");
		goto out;
	}
	if (!exclude) {
		defaults = json_array();
		for (size_t i = 0; i < sizeof(default_exclude) / sizeof(default_exclude[0]); i++)
			json_array_append_new(defaults, json_string(default_exclude[i]));
	}
	w = watcher_new(ws, full, !json_is_false(json_object_get(body, "recursive")),
			exclude ? exclude : defaults, include, (uint64_t)debounce, false, &err);
	if (!w)
		api_fail(req, err, NULL);
	else
		api_ok(req, "Watching", watcher_json(w));
	json_decref(defaults);
out:
	json_decref(body);
}

static void list_one(const char *key, void *value, void *arg)
{
	const struct watcher *w = value;

	if (!w->temporary) /* waits are not watchers a client made */
		json_array_append_new(arg, watcher_json(w));
}

void watches_handle_list(struct sbx_http_req *req, void *arg)
{
	json_t *list = json_array();

	sbx_map_foreach(&((struct watches *)arg)->all, list_one, list);
	api_ok(req, "Watchers", json_pack("{s:o}", "watchers", list));
}

static struct watcher *find(struct sbx_http_req *req, struct watches *ws)
{
	struct watcher *w = sbx_map_get(&ws->all, sbx_http_param(req, "watcher_id"));

	if (!w || w->temporary) {
		api_fail(req, "no such watcher", NULL);
		return NULL;
	}
	return w;
}

static struct poller *poller_new(struct watcher *w, struct sbx_http_req *req, uint64_t timeout_ms)
{
	struct poller *p = sbx_calloc(1, sizeof(*p));

	if (!p) {
		sbx_http_respond_error(req, 503, "out of memory");
		return NULL;
	}
	p->w = w;
	p->req = req;
	uv_timer_init(w->ws->loop, &p->timer);
	p->timer.data = p;
	uv_timer_start(&p->timer, poller_timeout, timeout_ms, 0);
	p->next = w->pollers;
	w->pollers = p;
	sbx_http_on_abort(req, poller_gone, p);
	return p;
}

void watches_handle_poll(struct sbx_http_req *req, void *arg)
{
	struct watcher *w = find(req, arg);
	json_t *body, *v;
	long cursor = 0, limit = 100, timeout = 0;
	struct poller *p;

	if (!w)
		return;
	body = api_body_object_or_empty(req);
	if (!body)
		return;
	/* "cursor" in the API description; the SDK sends "since". */
	if (((v = json_object_get(body, "cursor")) && !json_is_null(v)) ||
	    ((v = json_object_get(body, "since")) && !json_is_null(v))) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			api_invalid(req, "body.cursor", "Input should be an integer >= 0",
				    "int_type");
			goto out;
		}
		cursor = (long)json_integer_value(v);
	}
	if ((v = json_object_get(body, "limit")) && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 1000) {
			api_invalid(req, "body.limit", "Input should be from 1 to 1000",
				    "int_type");
			goto out;
		}
		limit = (long)json_integer_value(v);
	}
	if ((v = json_object_get(body, "timeout")) && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 60) {
			api_invalid(req, "body.timeout", "Input should be seconds from 0 to 60",
				    "int_type");
			goto out;
		}
		timeout = (long)json_integer_value(v);
	}
	p = poller_new(w, req, timeout ? (uint64_t)timeout * 1000 : 1);
	if (p) {
		p->cursor = (uint64_t)cursor;
		p->limit = limit;
		/* Something to say already, or no waiting wanted: at once. */
		if (p->cursor + 1 < w->next_seq || !timeout)
			poller_answer(p, NULL);
	}
out:
	json_decref(body);
}

static void stream_gone(struct sbx_http_req *req, void *arg)
{
	struct stream *s = arg, **pp;

	for (pp = &s->w->streams; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	sbx_free(s);
}

void watches_handle_events(struct sbx_http_req *req, void *arg)
{
	struct watcher *w = find(req, arg); /* answers (and frees req) if not */
	const char *last;
	char cur[24];
	struct stream *s;

	if (!w)
		return;
	last = sbx_http_header(req, "Last-Event-ID");
	s = sbx_calloc(1, sizeof(*s));
	if (!s) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	s->w = w;
	s->req = req;
	/* From a reconnecting client's last event, or ?cursor=, or the start. */
	if (last)
		s->cursor = strtoull(last, NULL, 10);
	else if (sbx_http_query(req, "cursor", cur, sizeof(cur)) > 0)
		s->cursor = strtoull(cur, NULL, 10);
	s->next = w->streams;
	w->streams = s;
	sbx_http_add_header(req, "Cache-Control", "no-cache");
	sbx_http_on_abort(req, stream_gone, s);
	sbx_http_start(req, 200, "text/event-stream");
	sbx_http_write(req, ": watching\n\n", 12);
	stream_pump(s);
}

void watches_handle_wait(struct sbx_http_req *req, void *arg)
{
	struct watches *ws = arg;
	json_t *body = api_body_object(req), *types, *v;
	const char *path, *err = NULL;
	char full[PATH_MAX];
	struct watcher *w;
	struct poller *p;
	long timeout = 30;
	unsigned mask = 0x1f;
	size_t i;

	if (!body)
		return;
	path = json_string_value(json_object_get(body, "path"));
	if (!path) {
		api_invalid(req, "body.path", "Field required", "missing");
		goto out;
	}
	if ((v = json_object_get(body, "timeout")) && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 300) {
			api_invalid(req, "body.timeout", "Input should be seconds from 1 to 300",
				    "int_type");
			goto out;
		}
		timeout = (long)json_integer_value(v);
	}
	if (!string_array(req, body, "event_types", &types))
		goto out;
	if (types) {
		mask = 0;
		json_array_foreach(types, i, v)
		{
			unsigned t;

			for (t = 0; t < 5 && strcmp(type_names[t], json_string_value(v)); t++)
				;
			if (t == 5) {
				api_invalid(
					req, "body.event_types",
					"Input should be create, write, remove, rename or chmod",
					"enum");
				goto out;
			}
			mask |= 1u << t;
		}
	}
	if (files_resolve(&(struct files){ .workspace = ws->workspace }, path,
			  json_string_length(json_object_get(body, "path")), full, sizeof(full))) {
		api_invalid(req, "body.path", "not a usable path", "value_error");
		goto out;
	}
	/* Its own watcher on the file (its folder), gone with the answer;
	 * no debounce: the first matching event answers. */
	w = watcher_new(ws, full, false, NULL, NULL, 0, true, &err);
	if (!w) {
		api_fail(req, err, NULL);
		goto out;
	}
	w->file_mode = true; /* even for a folder: events on that exact path */
	p = poller_new(w, req, (uint64_t)timeout * 1000);
	if (!p) {
		watcher_stop(w);
		goto out;
	}
	p->path = sbx_strdup(full);
	p->types = mask;
out:
	json_decref(body);
}

void watches_handle_stop(struct sbx_http_req *req, void *arg)
{
	struct watcher *w = find(req, arg);

	if (!w)
		return;
	api_ok(req, "Watcher stopped",
	       json_pack("{s:s, s:I}", "watcher_id", w->id, "events",
			 (json_int_t)(w->next_seq - 1)));
	watcher_stop(w);
}

int watches_init(struct watches *ws, uv_loop_t *loop, const char *workspace, unsigned max)
{
	memset(ws, 0, sizeof(*ws));
	ws->loop = loop;
	ws->workspace = workspace;
	ws->max = max;
	sbx_map_init(&ws->all, max + 1);
	return 0;
}

void watches_close(struct watches *ws)
{
	struct watcher *w;

	if (ws->closing)
		return;
	ws->closing = true;
	while ((w = sbx_map_pop(&ws->all)))
		watcher_stop(w);
	sbx_map_release(&ws->all);
}
