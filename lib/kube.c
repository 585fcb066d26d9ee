/* Kubernetes API client (see sbx/kube.h).
 *
 * libcurl's multi_socket interface on libuv: curl tells us which sockets to
 * watch (on_socket) and when to wake it (on_curl_timer); we tell curl when a
 * socket is ready (on_poll) or the timer fired (on_timeout), then collect
 * finished transfers (check_done). curl forbids calling multi functions from
 * inside its callbacks, and watch events reach user code from curl's write
 * callback, so adding and cancelling requests are deferred to a zero-delay
 * timer ('kick') that runs outside curl.
 */
#include "sbx/kube.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/json.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#define TOKEN_REREAD_MS 60000

struct sbx_kube_req {
	struct sbx_kube *k;
	struct sbx_kube_req *next, *prev; /* k->pending or k->active */
	CURL *easy;
	struct curl_slist *headers;
	struct curl_slist *connect_to;
	sbx_kube_cb done;
	sbx_kube_data_cb data;
	void *arg;
	struct sbx_buf body;
	long status;  /* known once the first body byte arrives */
	int abort_rc; /* why on_write stopped the transfer */
	bool cancelled;
	bool active; /* added to the multi handle */
	char errbuf[CURL_ERROR_SIZE];
};

/* The methods counted by sbx_kube_requests; a stream is a WATCH. */
static const char *const method_names[] = { "GET", "POST", "PUT", "PATCH", "DELETE", "WATCH" };
#define N_METHODS (sizeof(method_names) / sizeof(method_names[0]))

static int method_index(const char *method)
{
	for (size_t i = 0; i < N_METHODS; i++)
		if (strcmp(method, method_names[i]) == 0)
			return (int)i;
	return -1;
}

struct sbx_kube {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer; /* curl's own timeouts */
	uv_timer_t kick;  /* deferred add/cancel */
	int open_handles;
	bool freeing;
	struct sbx_kube_opts opts;
	char *server;	  /* URL prefix */
	char *connect_to; /* tls-server-name redirect, see set_tls */
	struct curl_blob ca, cert, key;
	char *token;
	char *token_file;
	uint64_t token_read_ms;
	bool insecure;
	struct sbx_kube_req *pending; /* waiting for the kick */
	struct sbx_kube_req *active;
	int http_version;
	long connects;
	unsigned long sent[N_METHODS]; /* requests by method_names */
};

struct sock_ctx {
	uv_poll_t poll;
	curl_socket_t fd;
	struct sbx_kube *k;
};

static void list_push(struct sbx_kube_req **head, struct sbx_kube_req *r)
{
	r->prev = NULL;
	r->next = *head;
	if (*head)
		(*head)->prev = r;
	*head = r;
}

static void list_unlink(struct sbx_kube_req **head, struct sbx_kube_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		*head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

static void req_free(struct sbx_kube_req *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	curl_slist_free_all(r->connect_to);
	sbx_buf_release(&r->body);
	sbx_free(r);
}

static int curl_to_errno(CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		return -EPROTO;
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

/* ---- finishing ---------------------------------------------------------- */

static void finish(struct sbx_kube *k, struct sbx_kube_req *r, CURLcode code)
{
	struct sbx_kube_response resp = { 0 };
	long version = 0, connects = 0;

	curl_multi_remove_handle(k->multi, r->easy);
	list_unlink(&k->active, r);
	r->active = false;
	curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects);
	k->connects += connects;
	if (r->cancelled) {
		req_free(r);
		return;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	if (curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version) == CURLE_OK && version)
		k->http_version = version >= CURL_HTTP_VERSION_2_0 ? 2 : 1;
	resp.rc = r->abort_rc ? r->abort_rc : curl_to_errno(code);
	if (resp.rc)
		resp.error = r->errbuf[0]  ? r->errbuf
			     : r->abort_rc ? sbx_strerror(r->abort_rc)
					   : curl_easy_strerror(code);
	resp.raw = r->body.data ? r->body.data : "";
	resp.raw_len = r->body.len;
	if (r->body.len)
		resp.body = json_loadb(r->body.data, r->body.len, 0, NULL);
	if (r->done)
		r->done(&resp, r->arg);
	json_decref(resp.body);
	req_free(r);
}

static void check_done(struct sbx_kube *k)
{
	struct sbx_kube_req *r;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(k->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		finish(k, r, msg->data.result);
	}
}

/* ---- curl <-> libuv ----------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
	struct sbx_kube *k = h->data;

	if (--k->open_handles == 0 && k->freeing) {
		sbx_free(k->server);
		sbx_free(k->connect_to);
		sbx_free(k->ca.data);
		sbx_free(k->cert.data);
		sbx_free(k->key.data);
		sbx_free(k->token);
		sbx_free(k->token_file);
		sbx_free(k);
	}
}

static void on_sock_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct sock_ctx *ctx = h->data;
	struct sbx_kube *k = ctx->k;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(k->multi, ctx->fd, flags, &running);
	check_done(k);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct sbx_kube *k = userp;
	struct sock_ctx *ctx = socketp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ctx) {
			uv_poll_stop(&ctx->poll);
			uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
			curl_multi_assign(k->multi, fd, NULL);
		}
		return 0;
	}
	if (!ctx) {
		ctx = sbx_calloc(1, sizeof(*ctx));
		if (!ctx)
			return -1;
		ctx->fd = fd;
		ctx->k = k;
		if (uv_poll_init_socket(k->loop, &ctx->poll, fd)) {
			sbx_free(ctx);
			return -1;
		}
		ctx->poll.data = ctx;
		curl_multi_assign(k->multi, fd, ctx);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&ctx->poll, events, on_poll);
	return 0;
}

static void on_timeout(uv_timer_t *t)
{
	struct sbx_kube *k = t->data;
	int running;

	curl_multi_socket_action(k->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(k);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct sbx_kube *k = userp;

	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&k->timer);
	else
		uv_timer_start(&k->timer, on_timeout, (uint64_t)timeout_ms, 0);
	return 0;
}

/* Adds new requests and drops cancelled ones, outside any curl callback. */
static void on_kick(uv_timer_t *t)
{
	struct sbx_kube *k = t->data;
	struct sbx_kube_req *r, *next;
	CURLMcode mc;

	for (r = k->active; r; r = next) {
		next = r->next;
		if (r->cancelled) {
			curl_multi_remove_handle(k->multi, r->easy);
			list_unlink(&k->active, r);
			req_free(r);
		}
	}
	while ((r = k->pending)) {
		list_unlink(&k->pending, r);
		if (r->cancelled) {
			req_free(r);
			continue;
		}
		mc = curl_multi_add_handle(k->multi, r->easy);
		if (mc != CURLM_OK) {
			struct sbx_kube_response resp = { .rc = -ENOMEM,
							  .error = curl_multi_strerror(mc),
							  .raw = "" };

			if (r->done)
				r->done(&resp, r->arg);
			req_free(r);
			continue;
		}
		r->active = true;
		list_push(&k->active, r);
	}
}

static void kick(struct sbx_kube *k)
{
	if (!uv_is_active((uv_handle_t *)&k->kick))
		uv_timer_start(&k->kick, on_kick, 0, 0);
}

/* ---- client lifecycle --------------------------------------------------- */

static int copy_blob(struct curl_blob *b, const char *data, size_t len)
{
	b->data = NULL;
	b->len = 0;
	b->flags = CURL_BLOB_NOCOPY;
	if (!data)
		return 0;
	b->data = sbx_malloc(len + 1);
	if (!b->data)
		return -ENOMEM;
	memcpy(b->data, data, len);
	((char *)b->data)[len] = '\0';
	b->len = len;
	return 0;
}

/* tls-server-name: the URL's host must be the name the certificate carries
 * (curl sends it as SNI and verifies it), and CONNECT_TO sends the connection
 * to the real host:port. */
static int set_server(struct sbx_kube *k, const struct sbx_kube_config *cfg)
{
	const char *host = strstr(cfg->server, "://") + 3, *end, *port;
	size_t host_len, port_len;
	struct sbx_buf b;

	if (!cfg->tls_server_name) {
		k->server = sbx_strdup(cfg->server);
		return k->server ? 0 : -ENOMEM;
	}
	end = host + strcspn(host, "/");
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));

		port = close && close + 1 < end && close[1] == ':' ? close + 2 : NULL;
		host_len = close ? (size_t)(close + 1 - host) : (size_t)(end - host);
	} else {
		port = memchr(host, ':', (size_t)(end - host));
		host_len = port ? (size_t)(port - host) : (size_t)(end - host);
		port = port ? port + 1 : NULL;
	}
	if (!port) {
		port = "443";
		port_len = 3;
	} else {
		port_len = (size_t)(end - port);
	}
	sbx_buf_init(&b, 4096);
	if (sbx_buf_printf(&b, "%s:%.*s:%.*s:%.*s", cfg->tls_server_name, (int)port_len, port,
			   (int)host_len, host, (int)port_len, port) ||
	    !(k->connect_to = sbx_buf_steal(&b)))
		return -ENOMEM;
	sbx_buf_init(&b, 4096);
	if (sbx_buf_printf(&b, "https://%s:%.*s%s", cfg->tls_server_name, (int)port_len, port,
			   end) ||
	    !(k->server = sbx_buf_steal(&b)))
		return -ENOMEM;
	return 0;
}

int sbx_kube_new(uv_loop_t *loop, const struct sbx_kube_config *cfg,
		 const struct sbx_kube_opts *opts, struct sbx_kube **out)
{
	static bool curl_ready;
	struct sbx_kube *k;
	int rc = -ENOMEM;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT))
			return -EIO;
		curl_ready = true;
	}
	k = sbx_calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->loop = loop;
	k->opts = opts ? *opts : (struct sbx_kube_opts){ 0 };
	if (!k->opts.max_body_bytes)
		k->opts.max_body_bytes = 64u << 20;
	if (!k->opts.timeout_ms)
		k->opts.timeout_ms = 30000;
	if (!k->opts.connect_timeout_ms)
		k->opts.connect_timeout_ms = 10000;
	if (!k->opts.user_agent)
		k->opts.user_agent = "sbx/" SBX_VERSION;
	k->insecure = cfg->insecure;
	if (set_server(k, cfg) || copy_blob(&k->ca, cfg->ca_pem, cfg->ca_len) ||
	    copy_blob(&k->cert, cfg->cert_pem, cfg->cert_len) ||
	    copy_blob(&k->key, cfg->key_pem, cfg->key_len) ||
	    (cfg->token && !(k->token = sbx_strdup(cfg->token))) ||
	    (cfg->token_file && !(k->token_file = sbx_strdup(cfg->token_file))))
		goto out_free;
	k->token_read_ms = uv_now(loop);
	k->multi = curl_multi_init();
	if (!k->multi)
		goto out_free;
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETDATA, k);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERDATA, k);
	curl_multi_setopt(k->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	uv_timer_init(loop, &k->timer);
	uv_timer_init(loop, &k->kick);
	k->timer.data = k;
	k->kick.data = k;
	k->open_handles = 2;
	*out = k;
	return 0;
out_free:
	k->freeing = true;
	k->open_handles = 1;
	on_handle_closed(&(uv_handle_t){ .data = k });
	return rc;
}

void sbx_kube_free(struct sbx_kube *k)
{
	struct sbx_kube_req *r;

	if (!k)
		return;
	k->freeing = true;
	while ((r = k->active)) {
		curl_multi_remove_handle(k->multi, r->easy);
		list_unlink(&k->active, r);
		req_free(r);
	}
	while ((r = k->pending)) {
		list_unlink(&k->pending, r);
		req_free(r);
	}
	curl_multi_cleanup(k->multi);
	k->multi = NULL;
	uv_close((uv_handle_t *)&k->timer, on_handle_closed);
	uv_close((uv_handle_t *)&k->kick, on_handle_closed);
}

/* ---- requests ----------------------------------------------------------- */

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct sbx_kube_req *r = arg;
	size_t len = size * n;
	int rc;

	if (r->cancelled)
		return 0;
	if (r->data && !r->status)
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->data && r->status / 100 == 2) {
		rc = r->data(p, len, r->arg);
		if (rc) {
			r->abort_rc = rc;
			return 0;
		}
		return len;
	}
	rc = sbx_buf_append(&r->body, p, len);
	if (rc) {
		r->abort_rc = rc;
		return 0;
	}
	return len;
}

/* Service-account tokens rotate: re-read the file now and then. The read is
 * a small file on tmpfs, once a minute, so it stays on the loop thread. */
static void refresh_token(struct sbx_kube *k)
{
	char *t;
	size_t len;

	if (!k->token_file || uv_now(k->loop) - k->token_read_ms < TOKEN_REREAD_MS)
		return;
	k->token_read_ms = uv_now(k->loop);
	if (sbx_read_file(k->token_file, 1u << 20, &t, &len)) {
		sbx_log_warn("cannot re-read the API token; keeping the old one",
			     SBX_LS("file", k->token_file));
		return;
	}
	while (len > 0 && isspace((unsigned char)t[len - 1]))
		t[--len] = '\0';
	sbx_free(k->token);
	k->token = t;
}

static int add_header(struct sbx_kube_req *r, const char *h)
{
	struct curl_slist *l = curl_slist_append(r->headers, h);

	if (!l)
		return -ENOMEM;
	r->headers = l;
	return 0;
}

static int setup_easy(struct sbx_kube *k, struct sbx_kube_req *r, const char *method,
		      const char *path, const char *content_type, const char *body, size_t body_len,
		      long timeout_ms)
{
	struct sbx_buf url, auth;
	CURL *e;
	int rc = 0;

	e = r->easy = curl_easy_init();
	if (!e)
		return -ENOMEM;
	sbx_buf_init(&url, 16384);
	if (sbx_buf_printf(&url, "%s%s", k->server, path)) {
		sbx_buf_release(&url);
		return -ENAMETOOLONG;
	}
	curl_easy_setopt(e, CURLOPT_URL, url.data);
	sbx_buf_release(&url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, k->opts.user_agent);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, k->opts.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Wait for the existing connection's protocol rather than opening a
	 * second one, so multiplexing really shares one connection. */
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
			 k->opts.http1_only ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS);
	if (k->ca.data)
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &k->ca);
	if (k->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (k->cert.data) {
		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &k->cert);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &k->key);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (k->connect_to) {
		r->connect_to = curl_slist_append(NULL, k->connect_to);
		if (!r->connect_to)
			return -ENOMEM;
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, r->connect_to);
	}
	if ((rc = add_header(r, "Accept: application/json")))
		return rc;
	refresh_token(k);
	if (k->token) {
		sbx_buf_init(&auth, 1u << 20);
		rc = sbx_buf_printf(&auth, "Authorization: Bearer %s", k->token);
		if (!rc)
			rc = add_header(r, auth.data);
		if (auth.data)
			OPENSSL_cleanse(auth.data, auth.len);
		sbx_buf_release(&auth);
		if (rc)
			return rc;
	}
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		char ct_header[128];

		snprintf(ct_header, sizeof(ct_header), "Content-Type: %s",
			 content_type ? content_type : "application/json");
		if ((rc = add_header(r, ct_header)))
			return rc;
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	return 0;
}

static int submit(struct sbx_kube *k, const char *method, const char *path,
		  const char *content_type, const char *body, size_t body_len, long timeout_ms,
		  sbx_kube_data_cb data, sbx_kube_cb done, void *arg, struct sbx_kube_req **out)
{
	struct sbx_kube_req *r;
	int rc;

	if (k->freeing)
		return -ESHUTDOWN;
	r = sbx_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->k = k;
	r->done = done;
	r->data = data;
	r->arg = arg;
	sbx_buf_init(&r->body, k->opts.max_body_bytes);
	rc = setup_easy(k, r, method, path, content_type, body, body_len, timeout_ms);
	if (rc) {
		req_free(r);
		return rc;
	}
	list_push(&k->pending, r);
	kick(k);
	if (out)
		*out = r;
	if ((rc = method_index(data ? "WATCH" : method)) >= 0)
		k->sent[rc]++;
	return 0;
}

unsigned long sbx_kube_requests(const struct sbx_kube *k, const char *method)
{
	int i = method_index(method);

	return i >= 0 ? k->sent[i] : 0;
}

int sbx_kube_request(struct sbx_kube *k, const char *method, const char *path,
		     const char *content_type, const char *body, size_t body_len, sbx_kube_cb cb,
		     void *arg, struct sbx_kube_req **req)
{
	return submit(k, method, path, content_type, body, body_len, k->opts.timeout_ms, NULL, cb,
		      arg, req);
}

int sbx_kube_stream(struct sbx_kube *k, const char *path, long timeout_ms, sbx_kube_data_cb data,
		    sbx_kube_cb done, void *arg, struct sbx_kube_req **req)
{
	return submit(k, "GET", path, NULL, NULL, 0, timeout_ms, data, done, arg, req);
}

void sbx_kube_cancel(struct sbx_kube_req *req)
{
	if (!req || req->cancelled)
		return;
	req->cancelled = true;
	kick(req->k);
}

/* Sends obj as the body of method on path. */
static int send_json(struct sbx_kube *k, const char *method, const char *path,
		     const char *content_type, const json_t *obj, sbx_kube_cb cb, void *arg)
{
	char *body = sbx_json_dumps(obj);
	int rc;

	if (!body)
		return -ENOMEM;
	rc = sbx_kube_request(k, method, path, content_type, body, strlen(body), cb, arg, NULL);
	sbx_free(body);
	return rc;
}

int sbx_kube_get(struct sbx_kube *k, const char *path, sbx_kube_cb cb, void *arg)
{
	return sbx_kube_request(k, "GET", path, NULL, NULL, 0, cb, arg, NULL);
}

int sbx_kube_create(struct sbx_kube *k, const char *collection, const json_t *obj, sbx_kube_cb cb,
		    void *arg)
{
	return send_json(k, "POST", collection, NULL, obj, cb, arg);
}

int sbx_kube_replace(struct sbx_kube *k, const char *path, const json_t *obj, sbx_kube_cb cb,
		     void *arg)
{
	return send_json(k, "PUT", path, NULL, obj, cb, arg);
}

int sbx_kube_merge_patch(struct sbx_kube *k, const char *path, const json_t *patch, sbx_kube_cb cb,
			 void *arg)
{
	return send_json(k, "PATCH", path, "application/merge-patch+json", patch, cb, arg);
}

int sbx_kube_apply(struct sbx_kube *k, const char *path, const json_t *obj,
		   const char *field_manager, bool force, sbx_kube_cb cb, void *arg)
{
	char full[4096];
	char *fm = curl_easy_escape(NULL, field_manager, 0);
	int n, rc;

	if (!fm)
		return -ENOMEM;
	n = snprintf(full, sizeof(full), "%s?fieldManager=%s%s", path, fm,
		     force ? "&force=true" : "");
	curl_free(fm);
	if (n < 0 || (size_t)n >= sizeof(full))
		return -ENAMETOOLONG;
	rc = send_json(k, "PATCH", full, "application/apply-patch+yaml", obj, cb, arg);
	return rc;
}

int sbx_kube_delete(struct sbx_kube *k, const char *path, const char *propagation, sbx_kube_cb cb,
		    void *arg)
{
	json_t *opts;
	int rc;

	if (!propagation)
		return sbx_kube_request(k, "DELETE", path, NULL, NULL, 0, cb, arg, NULL);
	opts = json_pack("{s:s, s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1",
			 "propagationPolicy", propagation);
	if (!opts)
		return -ENOMEM;
	rc = send_json(k, "DELETE", path, NULL, opts, cb, arg);
	json_decref(opts);
	return rc;
}

int sbx_kube_update_status(struct sbx_kube *k, const char *path, const json_t *obj, sbx_kube_cb cb,
			   void *arg)
{
	char full[4096];
	int n = snprintf(full, sizeof(full), "%s/status", path);

	if (n < 0 || (size_t)n >= sizeof(full))
		return -ENAMETOOLONG;
	return send_json(k, "PUT", full, NULL, obj, cb, arg);
}

uv_loop_t *sbx_kube_loop(const struct sbx_kube *k)
{
	return k->loop;
}

int sbx_kube_http_version(const struct sbx_kube *k)
{
	return k->http_version;
}

long sbx_kube_connects(const struct sbx_kube *k)
{
	return k->connects;
}

int sbx_kube_path(char *out, size_t size, const char *group, const char *version, const char *ns,
		  const char *resource, const char *name, const char *sub)
{
	struct sbx_buf b;
	int rc;

	sbx_buf_init(&b, size ? size - 1 : 0);
	if (group && *group)
		rc = sbx_buf_printf(&b, "/apis/%s/%s", group, version);
	else
		rc = sbx_buf_printf(&b, "/api/%s", version);
	if (!rc && ns && *ns)
		rc = sbx_buf_printf(&b, "/namespaces/%s", ns);
	if (!rc)
		rc = sbx_buf_printf(&b, "/%s", resource);
	if (!rc && name && *name)
		rc = sbx_buf_printf(&b, "/%s", name);
	if (!rc && sub && *sub)
		rc = sbx_buf_printf(&b, "/%s", sub);
	if (!rc)
		memcpy(out, b.data, b.len + 1);
	rc = rc ? -ENAMETOOLONG : (int)b.len;
	sbx_buf_release(&b);
	return rc;
}

const char *sbx_kube_status_message(const struct sbx_kube_response *r)
{
	const char *m = r->body ? sbx_json_str(r->body, "message") : NULL;

	if (r->rc)
		return r->error ? r->error : sbx_strerror(r->rc);
	return m ? m : "unexpected response from the API server";
}
