/* A data-plane worker (see worker.h): its thread, its loop, its public
 * listeners, and the one route that takes every request. */
#include "worker.h"

#include "sbx/alloc.h"
#include "sbx/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct worker {
	int index;
	struct worker_config c;
	uv_thread_t thread;
	uv_loop_t loop;
	struct ingress in;
	struct sbx_http_route route;
	uv_async_t wake;
	bool closing; /* the server is draining */

	/* Under lock: what the control loop asks, and what the worker says. */
	uv_mutex_t lock;
	uv_cond_t cond;
	bool started;
	int start_rc;
	char start_err[256];
	struct ingress_table *next; /* a snapshot to route by */
	bool reload_tls, stop, finished;
	uint64_t snap_wanted, snap_gen;
	struct ingress_snapshot snap;
};

/* ---- the public listeners' one route ---------------------------------------------------- */

static void respond_own(struct ingress *in, struct sbx_http_req *req, int status,
			const char *message)
{
	ingress_count(in, INGRESS_FORMS - 1, status, uv_now(in->loop));
	sbx_http_respond_error(req, status, message);
}

void ingress_dispatch(struct sbx_http_req *req, void *arg)
{
	struct ingress *in = arg;
	const char *path = sbx_http_path(req), *why;
	struct ingress_target t;
	int rc =
		ingress_route(path, sbx_http_header(req, "Host"),
			      sbx_http_header(req, INGRESS_TO_HEADER), in->o.base_domain, &t, &why);

	if (rc == 0) {
		ingress_proxy(in, req, &t);
		return;
	}
	if (rc == -EINVAL) {
		respond_own(in, req, 400, why);
		return;
	}
	if (!strcmp(path, "/tickets") && !strcmp(sbx_http_method(req), "POST")) {
		ingress_auth_tickets(in->auth, req);
		return;
	}
	if (!strcmp(path, "/healthz")) {
		ingress_count(in, INGRESS_FORMS - 1, 200, uv_now(in->loop));
		sbx_http_respond(req, 200, "text/plain", "ok\n", 3);
		return;
	}
	respond_own(in, req, 404,
		    "not a sandbox route: use /sandboxes/<id>/port/<port>/..., the "
		    "OpenSandbox-Ingress-To header, or <id>-<port>.<base domain>");
}

/* Runs at the head, before any of the body is read: a request for a
 * sandbox needs a credential that names it. The ingress's own paths go on
 * (POST /tickets checks its token itself; 400s and 404s reveal nothing).
 * Without a key there is nothing to check, and the route is left to the
 * dispatch. */
bool ingress_authorize(struct sbx_http_req *req, void *arg)
{
	struct ingress *in = arg;
	struct ingress_target t;
	const char *why;

	if (!ingress_auth_enabled(in->auth))
		return true;
	if (ingress_route(sbx_http_path(req), sbx_http_header(req, "Host"),
			  sbx_http_header(req, INGRESS_TO_HEADER), in->o.base_domain, &t, &why))
		return true;
	return ingress_auth_check(in->auth, req, &t, in->table);
}

/* ---- the thread ------------------------------------------------------------------------- */

static void finished(void *arg)
{
	struct worker *w = arg;
	struct ingress_snapshot last;

	/* The server is gone: its counters stay as last taken. */
	w->in.http = NULL;
	uv_mutex_lock(&w->lock);
	last = w->snap;
	uv_mutex_unlock(&w->lock);
	ingress_snapshot(&w->in, &last);
	ingress_release(&w->in);
	uv_close((uv_handle_t *)&w->wake, NULL);
	uv_mutex_lock(&w->lock);
	w->snap = last;
	w->finished = true;
	uv_mutex_unlock(&w->lock);
	uv_async_send(w->c.notify);
}

static void on_wake(uv_async_t *h)
{
	struct worker *w = h->data;
	struct ingress_table *next;
	struct ingress_snapshot snap;
	bool reload, stop;
	uint64_t wanted;
	char err[512];

	uv_mutex_lock(&w->lock);
	next = w->next;
	w->next = NULL;
	reload = w->reload_tls;
	w->reload_tls = false;
	stop = w->stop;
	wanted = w->snap_wanted > w->snap_gen ? w->snap_wanted : 0;
	uv_mutex_unlock(&w->lock);
	if (next) {
		ingress_set_table(&w->in, next);
		ingress_table_unref(next);
	}
	if (reload && sbx_http_server_reload_tls(w->in.http, w->c.tls_cert,
						 *w->c.tls_key ? w->c.tls_key : w->c.tls_cert, err,
						 sizeof(err)) < 0)
		sbx_log_error("certificate not reloaded; the old one stays", SBX_LS("error", err),
			      SBX_LI("worker", w->index));
	if (wanted) {
		ingress_snapshot(&w->in, &snap);
		uv_mutex_lock(&w->lock);
		w->snap = snap;
		w->snap_gen = wanted;
		uv_mutex_unlock(&w->lock);
		uv_async_send(w->c.notify);
	}
	if (stop && !w->closing) {
		w->closing = true;
		sbx_http_server_close(w->in.http, finished, w);
	}
}

static int listen_all(struct worker *w, char *err, size_t err_size)
{
	int rc;

	if (*w->c.listen && (rc = sbx_http_server_listen(w->in.http, w->c.listen))) {
		snprintf(err, err_size, "cannot listen on %s: %s", w->c.listen, uv_strerror(rc));
		return rc;
	}
	if (*w->c.tls_listen) {
		if (!*w->c.tls_cert) {
			snprintf(err, err_size, "--tls-listen needs --tls-cert (and --tls-key)");
			return -EINVAL;
		}
		return sbx_http_server_listen_tls(w->in.http, w->c.tls_listen, w->c.tls_cert,
						  *w->c.tls_key ? w->c.tls_key : w->c.tls_cert, err,
						  err_size);
	}
	return 0;
}

static void started(struct worker *w, int rc, const char *err)
{
	uv_mutex_lock(&w->lock);
	w->start_rc = rc;
	snprintf(w->start_err, sizeof(w->start_err), "%s", err);
	w->started = true;
	uv_cond_signal(&w->cond);
	uv_mutex_unlock(&w->lock);
}

static void run(void *arg)
{
	struct worker *w = arg;
	struct sbx_http_server_opts so = w->c.server;
	char err[512] = "";
	int rc;

	uv_loop_init(&w->loop);
	if ((rc = ingress_init(&w->in, &w->loop, &w->c.ingress, &w->c.pool))) {
		snprintf(err, sizeof(err), "%s", strerror(-rc));
		started(w, rc, err);
		uv_loop_close(&w->loop);
		return;
	}
	w->in.auth = w->c.auth;
	w->route = (struct sbx_http_route){
		.pattern = "/*",
		.fn = ingress_dispatch,
		.arg = &w->in,
		.stream_body = true,
		.max_body_bytes = w->c.max_body_bytes,
		.summary = "every request: to a sandbox's port, or the ingress's own paths",
	};
	so.authorize = ingress_authorize;
	so.authorize_arg = &w->in;
	uv_async_init(&w->loop, &w->wake, on_wake);
	w->wake.data = w;
	if (sbx_http_server_new(&w->loop, &so, &w->route, 1, &w->in.http)) {
		snprintf(err, sizeof(err), "out of memory");
		rc = -ENOMEM;
	} else {
		rc = listen_all(w, err, sizeof(err));
	}
	if (rc) {
		/* Close what was made; the loop ends when it is gone. */
		if (w->in.http) {
			struct sbx_http_server *s = w->in.http;

			w->in.http = NULL;
			sbx_http_server_close(s, NULL, NULL);
		}
		ingress_release(&w->in);
		uv_close((uv_handle_t *)&w->wake, NULL);
		uv_run(&w->loop, UV_RUN_DEFAULT);
		uv_loop_close(&w->loop);
		started(w, rc, err);
		return;
	}
	started(w, 0, "");
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
}

/* ---- the control loop's side --------------------------------------------------------- */

int worker_start(const struct worker_config *c, int index, struct worker **out, char *err,
		 size_t err_size)
{
	struct worker *w = sbx_calloc(1, sizeof(*w));
	int rc;

	if (!w) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	w->index = index;
	w->c = *c;
	uv_mutex_init(&w->lock);
	uv_cond_init(&w->cond);
	if ((rc = uv_thread_create(&w->thread, run, w))) {
		snprintf(err, err_size, "cannot start a worker thread: %s", uv_strerror(rc));
		uv_cond_destroy(&w->cond);
		uv_mutex_destroy(&w->lock);
		sbx_free(w);
		return rc;
	}
	uv_mutex_lock(&w->lock);
	while (!w->started)
		uv_cond_wait(&w->cond, &w->lock);
	rc = w->start_rc;
	snprintf(err, err_size, "%s", w->start_err);
	uv_mutex_unlock(&w->lock);
	if (rc) {
		uv_thread_join(&w->thread);
		uv_cond_destroy(&w->cond);
		uv_mutex_destroy(&w->lock);
		sbx_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

void worker_publish(struct worker *w, struct ingress_table *t)
{
	uv_mutex_lock(&w->lock);
	if (w->next)
		ingress_table_unref(w->next); /* never routed by: a newer one came */
	w->next = ingress_table_ref(t);
	uv_mutex_unlock(&w->lock);
	uv_async_send(&w->wake);
}

static void ask(struct worker *w, bool *flag)
{
	bool send;

	uv_mutex_lock(&w->lock);
	*flag = true;
	send = !w->finished;
	uv_mutex_unlock(&w->lock);
	if (send)
		uv_async_send(&w->wake);
}

void worker_reload_tls(struct worker *w)
{
	ask(w, &w->reload_tls);
}

void worker_stop(struct worker *w)
{
	ask(w, &w->stop);
}

void worker_request_snapshot(struct worker *w, uint64_t gen)
{
	bool send;

	uv_mutex_lock(&w->lock);
	w->snap_wanted = gen;
	send = !w->finished;
	uv_mutex_unlock(&w->lock);
	if (send)
		uv_async_send(&w->wake);
}

bool worker_snapshot(struct worker *w, uint64_t gen, struct ingress_snapshot *out)
{
	bool in;

	uv_mutex_lock(&w->lock);
	in = w->finished || w->snap_gen >= gen;
	if (in)
		*out = w->snap;
	uv_mutex_unlock(&w->lock);
	return in;
}

bool worker_finished(struct worker *w)
{
	bool f;

	uv_mutex_lock(&w->lock);
	f = w->finished;
	uv_mutex_unlock(&w->lock);
	return f;
}

void worker_join(struct worker *w)
{
	uv_thread_join(&w->thread);
	if (w->next)
		ingress_table_unref(w->next);
	uv_cond_destroy(&w->cond);
	uv_mutex_destroy(&w->lock);
	sbx_free(w);
}
