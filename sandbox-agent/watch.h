/* File watching (/v1/file/watch): inotify on a file or a folder tree
 * (new subfolders are watched as they appear), events named create, write,
 * remove, rename and chmod, kept in a numbered log per watcher (the last
 * 10,000) and read by cursor (poll, with long-polling), as a Server-Sent
 * Events stream, or waited for on one path. Writes and chmods are
 * debounced: a burst on one path gives one event when it settles. */
#ifndef SBX_AGENT_WATCH_H
#define SBX_AGENT_WATCH_H

#include "sbx/map.h"

#include <stdbool.h>
#include <uv.h>

struct sbx_http_req;

struct watches {
	uv_loop_t *loop;
	const char *workspace;
	unsigned max;
	struct sbx_map all; /* id -> struct watcher */
	bool closing;
};

int watches_init(struct watches *w, uv_loop_t *loop, const char *workspace, unsigned max);
void watches_close(struct watches *w);

void watches_handle_list(struct sbx_http_req *req, void *arg);
void watches_handle_create(struct sbx_http_req *req, void *arg);
void watches_handle_events(struct sbx_http_req *req, void *arg);
void watches_handle_poll(struct sbx_http_req *req, void *arg);
void watches_handle_wait(struct sbx_http_req *req, void *arg);
void watches_handle_stop(struct sbx_http_req *req, void *arg);

#endif
