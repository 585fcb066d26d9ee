/* Kubernetes API client on libcurl's multi interface, driven by a libuv loop.
 *
 * One client holds one curl multi handle: requests share its connection
 * (HTTP/2 multiplexing when the server offers it over TLS), so a program's
 * watches and writes ride one TCP connection. Everything is asynchronous;
 * callbacks run on the loop. Callbacks may start and cancel requests (the
 * work is deferred to the next loop turn), but must not free the client.
 *
 * Paths are API paths ("/api/v1/namespaces/default/configmaps/x"); build
 * them with sbx_kube_path.
 */
#ifndef SBX_KUBE_H
#define SBX_KUBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct sbx_kube_config;
struct sbx_kube;
struct sbx_kube_req;

struct sbx_kube_opts {
	size_t max_body_bytes;	 /* response bodies larger than this fail with -E2BIG (64 MiB) */
	long timeout_ms;	 /* whole-request timeout for non-streaming calls (30000) */
	long connect_timeout_ms; /* (10000) */
	const char *user_agent;	 /* ("sbx/<version>") */
	bool http1_only;	 /* never negotiate HTTP/2 */
};

struct sbx_kube_response {
	int rc;		 /* 0 when an HTTP response arrived, else a negative code */
	long status;	 /* HTTP status, 0 when none */
	json_t *body;	 /* parsed JSON body or NULL (borrowed for the callback) */
	const char *raw; /* body bytes (borrowed), NUL-terminated */
	size_t raw_len;
	const char *error; /* transport error text when rc != 0 */
};

typedef void (*sbx_kube_cb)(const struct sbx_kube_response *r, void *arg);
/* Streaming body chunks of a 2xx response (non-2xx bodies are collected and
 * handed to the done callback). Return 0, or a negative code to abort. */
typedef int (*sbx_kube_data_cb)(const char *data, size_t len, void *arg);

int sbx_kube_new(uv_loop_t *loop, const struct sbx_kube_config *cfg,
		 const struct sbx_kube_opts *opts, struct sbx_kube **out);
/* Cancels every pending request (their callbacks are not called) and frees
 * the client once libuv has closed its handles. */
void sbx_kube_free(struct sbx_kube *k);

/* The general call. body may be NULL; content_type defaults to JSON.
 * On success *req (if not NULL) identifies the call until its callback. */
int sbx_kube_request(struct sbx_kube *k, const char *method, const char *path,
		     const char *content_type, const char *body, size_t body_len, sbx_kube_cb cb,
		     void *arg, struct sbx_kube_req **req);

/* A long-lived GET whose body is handed over as it arrives. timeout_ms 0:
 * none (the server's timeoutSeconds ends it). */
int sbx_kube_stream(struct sbx_kube *k, const char *path, long timeout_ms, sbx_kube_data_cb data,
		    sbx_kube_cb done, void *arg, struct sbx_kube_req **req);

/* Stops a request; its callbacks are never called after this returns. */
void sbx_kube_cancel(struct sbx_kube_req *req);

/* Verbs. Paths name an object, or a collection for create/list. */
int sbx_kube_get(struct sbx_kube *k, const char *path, sbx_kube_cb cb, void *arg);
int sbx_kube_create(struct sbx_kube *k, const char *collection, const json_t *obj, sbx_kube_cb cb,
		    void *arg);
int sbx_kube_replace(struct sbx_kube *k, const char *path, const json_t *obj, sbx_kube_cb cb,
		     void *arg);
int sbx_kube_merge_patch(struct sbx_kube *k, const char *path, const json_t *patch, sbx_kube_cb cb,
			 void *arg);
/* Server-side apply; JSON is valid YAML, so the object is sent as JSON. */
int sbx_kube_apply(struct sbx_kube *k, const char *path, const json_t *obj,
		   const char *field_manager, bool force, sbx_kube_cb cb, void *arg);
/* propagation: NULL, "Foreground", "Background" or "Orphan". */
int sbx_kube_delete(struct sbx_kube *k, const char *path, const char *propagation, sbx_kube_cb cb,
		    void *arg);
/* PUT <path>/status with the whole object (optimistic concurrency on
 * metadata.resourceVersion). */
int sbx_kube_update_status(struct sbx_kube *k, const char *path, const json_t *obj, sbx_kube_cb cb,
			   void *arg);

uv_loop_t *sbx_kube_loop(const struct sbx_kube *k);

/* Which HTTP version the client's last completed request used (1, 2). */
int sbx_kube_http_version(const struct sbx_kube *k);
/* Requests sent so far with this method: "GET", "POST", "PUT", "PATCH",
 * "DELETE", or "WATCH" for streams (whose GETs are not counted as GET). */
unsigned long sbx_kube_requests(const struct sbx_kube *k, const char *method);
/* Connections opened so far (for tests and metrics: should stay 1). */
long sbx_kube_connects(const struct sbx_kube *k);

/* Builds "/api/v1/namespaces/NS/RES/NAME/SUB" or "/apis/G/V/..." into out.
 * group "" is the core group; ns, name and sub may be NULL. Returns the
 * length, or -ENAMETOOLONG. Names are not escaped: Kubernetes names are
 * DNS labels/subdomains, which need none. */
int sbx_kube_path(char *out, size_t size, const char *group, const char *version, const char *ns,
		  const char *resource, const char *name, const char *sub);

/* The message of a Kubernetes Status body, or a generic text. */
const char *sbx_kube_status_message(const struct sbx_kube_response *r);

#endif
