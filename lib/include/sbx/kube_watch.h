/* Kubernetes watch streams.
 *
 * The splitter turns the bytes of a watch response, cut anywhere, into
 * events ({"type": ..., "object": ...}, one JSON document per line). The
 * watch keeps one stream open on a collection: it resumes from the last
 * resourceVersion seen (events and bookmarks) after the server ends the
 * stream or the connection drops, with exponential backoff on errors, and
 * hands a 410 Gone ("resourceVersion too old") to its owner, who relists.
 */
#ifndef SBX_KUBE_WATCH_H
#define SBX_KUBE_WATCH_H

#include "sbx/buf.h"

#include <jansson.h>
#include <stdint.h>

struct sbx_kube;

/* ---- splitter ----------------------------------------------------------- */

/* Called per event; object is borrowed. A negative return stops feeding. */
typedef int (*sbx_watch_event_fn)(const char *type, json_t *object, void *arg);

struct sbx_watch_splitter {
	struct sbx_buf line; /* the partial line carried between chunks */
	sbx_watch_event_fn on_event;
	void *arg;
	char error[160]; /* why feed failed */
};

void sbx_watch_splitter_init(struct sbx_watch_splitter *s, size_t max_event_bytes,
			     sbx_watch_event_fn on_event, void *arg);
void sbx_watch_splitter_release(struct sbx_watch_splitter *s);
/* 0; -E2BIG for an event over the limit; -EBADMSG for bytes that are not a
 * watch event; or the callback's negative code. */
int sbx_watch_splitter_feed(struct sbx_watch_splitter *s, const char *data, size_t len);
/* Bytes of an unfinished event held back (0 between events). */
size_t sbx_watch_splitter_pending(const struct sbx_watch_splitter *s);

/* ---- watch -------------------------------------------------------------- */

enum sbx_watch_type {
	SBX_WATCH_ADDED,
	SBX_WATCH_MODIFIED,
	SBX_WATCH_DELETED,
	SBX_WATCH_BOOKMARK,
};

struct sbx_watch_opts {
	const char *path;	    /* collection path */
	const char *label_selector; /* optional */
	const char *field_selector; /* optional */
	size_t max_event_bytes;	    /* (8 MiB) */
	unsigned timeout_s;	    /* server-side stream length, randomised up to 2x (300) */
	uint64_t backoff_min_ms;    /* (500) */
	uint64_t backoff_max_ms;    /* (30000) */
};

struct sbx_watch_handlers {
	/* ADDED, MODIFIED, DELETED; BOOKMARKs only move the resourceVersion. */
	void (*on_event)(enum sbx_watch_type type, json_t *object, void *arg);
	/* The resourceVersion is too old (410). The watch has stopped; call
	 * sbx_watch_start with a fresh one after relisting. */
	void (*on_gone)(void *arg);
};

struct sbx_watch;

int sbx_watch_new(struct sbx_kube *k, const struct sbx_watch_opts *opts,
		  const struct sbx_watch_handlers *h, void *arg, struct sbx_watch **out);
/* Starts (or restarts) watching from resource_version ("" or NULL: now). */
int sbx_watch_start(struct sbx_watch *w, const char *resource_version);
void sbx_watch_stop(struct sbx_watch *w);
/* Stops and frees (after the loop closes its timer). */
void sbx_watch_free(struct sbx_watch *w);

const char *sbx_watch_resource_version(const struct sbx_watch *w);
/* Streams opened after the first one (reconnects), for tests and metrics. */
unsigned long sbx_watch_reconnects(const struct sbx_watch *w);

#endif
