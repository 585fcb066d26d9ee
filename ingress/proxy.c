/* Proxying one request to a sandbox's port (see ingress.h).
 *
 * A proxied request moves HELD -> EXCHANGING -> RESPONDING -> freed, only
 * through set_state. The request body is taken only once the connection to
 * the pod is up (the client's 'connected'), so a request whose connect is
 * refused has sent nothing and can be held and tried again; from there the
 * body streams to the pod and the answer back, each side paced by the
 * other. A protocol switch (WebSocket) is handed to the core's tunnel.
 */
#include "ingress.h"

#include "sbx/alloc.h"
#include "sbx/log.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOLD_TICK_MS   50
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define MAX_FIELDS     128

const double ingress_latency_bounds[INGRESS_LATENCY_BUCKETS] = { 0.001, 0.0025, 0.005, 0.01,
								 0.025, 0.05,	0.1,   0.25,
								 0.5,	1,	2.5,   10 };

enum proxy_state { P_NEW, P_HELD, P_EXCHANGING, P_RESPONDING };

struct proxy {
	struct ingress *in;
	struct sbx_http_req *req;
	struct sbx_http_client *x;
	struct ingress_target t;
	enum proxy_state state;
	char backend[64];
	struct sbx_buf target; /* the pod's request target */
	struct sbx_buf extra;  /* the header lines the proxy adds */
	size_t n_fields;
	uint64_t started_ms, deadline_ms, retry_at_ms;
	unsigned backoff_ms;
	int hold_status; /* the answer if the hold ends without success */
	char hold_why[192];
	bool body_started, body_ended;
	bool listed;		   /* in the held list */
	struct proxy *prev, *next; /* the held list */
	/* The pod's answer head, until it goes out (see ingress.h). */
	bool head_pending;
	int status;
	long long length; /* -1: chunked */
	char *type;	  /* type_space, or a copy of a longer one */
	struct proxy *head_prev, *head_next;
	/* Not zeroed at the start (see ingress_proxy): the fields in use are
	 * counted, and the spaces are where the usual target, added lines
	 * and content type fit without allocations of their own. */
	struct sbx_http_field fields[MAX_FIELDS];
	char target_space[256], extra_space[384], type_space[64];
};

const size_t ingress_proxy_size = sizeof(struct proxy);

static void set_state(struct proxy *p, enum proxy_state to)
{
	assert((p->state == P_NEW && (to == P_HELD || to == P_EXCHANGING)) ||
	       (p->state == P_HELD && to == P_EXCHANGING) ||
	       (p->state == P_EXCHANGING && (to == P_HELD || to == P_RESPONDING)));
	p->state = to;
}

/* ---- the held list ---------------------------------------------------------------------- */

static void hold_tick(uv_timer_t *t);

static void unhold(struct proxy *p)
{
	struct ingress *in = p->in;

	if (!p->listed)
		return;
	p->listed = false;
	if (p->prev)
		p->prev->next = p->next;
	else
		in->held = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->prev = p->next = NULL;
	in->st.held_now--;
	if (!in->held)
		uv_timer_stop(&in->hold_timer);
}

static void head_unlink(struct proxy *p)
{
	struct ingress *in = p->in;

	if (!p->head_pending)
		return;
	p->head_pending = false;
	if (p->head_prev)
		p->head_prev->head_next = p->head_next;
	else
		in->heads = p->head_next;
	if (p->head_next)
		p->head_next->head_prev = p->head_prev;
	p->head_prev = p->head_next = NULL;
}

static void proxy_free(struct proxy *p)
{
	head_unlink(p);
	if (p->type != p->type_space)
		sbx_free(p->type);
	unhold(p);
	p->in->st.proxied_now--;
	sbx_buf_release(&p->target);
	sbx_buf_release(&p->extra);
	sbx_spares_put(&p->in->proxies, p);
}

/* ---- answers ------------------------------------------------------------------------------- */

void ingress_count(struct ingress *in, int form, int status, uint64_t started_ms)
{
	double s = (double)(uv_now(in->loop) - started_ms) / 1000.0;
	size_t i = 0;

	if (status >= 100 && status < 600)
		in->st.requests[form][status / 100]++;
	while (i < INGRESS_LATENCY_BUCKETS && s > ingress_latency_bounds[i])
		i++;
	in->st.latency[i]++;
	in->st.latency_sum += s;
}

static void log_request(struct proxy *p, int status, const char *note)
{
	if (!p->in->o.access_log)
		return;
	sbx_log_info("request", SBX_LS("method", sbx_http_method(p->req)),
		     SBX_LS("path", sbx_http_path(p->req)), SBX_LI("status", status),
		     SBX_LS("sandbox", p->t.id), SBX_LI("port", p->t.port),
		     SBX_LS("form", ingress_form_name(p->t.form)),
		     SBX_LD("ms", (double)(uv_now(p->in->loop) - p->started_ms)),
		     SBX_LS("peer", sbx_http_peer(p->req)), SBX_LS("upstream", p->backend),
		     SBX_LS("note", note ?: ""));
}

/* Answers with an error of the ingress's own and ends the proxy. */
static void answer(struct proxy *p, int status, const char *message)
{
	struct sbx_http_req *req = p->req;

	sbx_http_on_abort(req, NULL, NULL);
	ingress_count(p->in, (int)p->t.form, status, p->started_ms);
	log_request(p, status, message);
	sbx_http_respond_error(req, status, message); /* message may be p's */
	proxy_free(p);
}

static void client_gone(struct sbx_http_req *req, void *arg)
{
	struct proxy *p = arg;

	(void)req;
	if (p->x)
		sbx_http_client_abort(p->x);
	ingress_count(p->in, (int)p->t.form, 499, p->started_ms);
	log_request(p, 499, "the client went away");
	proxy_free(p);
}

/* ---- headers ------------------------------------------------------------------------------- */

/* Headers that end at this hop, or that the proxy writes itself. */
static bool not_passed_on(const struct proxy *p, const char *name, size_t len,
			  const char *connection)
{
	static const struct sbx_http_name names[] = {
		SBX_HTTP_NAME("host"),
		SBX_HTTP_NAME("content-length"),
		SBX_HTTP_NAME("expect"),
		SBX_HTTP_NAME("x-forwarded-prefix"),
		SBX_HTTP_NAME("forwarded"),
		SBX_HTTP_NAME("x-forwarded-for"), /* rebuilt, from the client's when trusted */
		SBX_HTTP_NAME(INGRESS_TO_HEADER),
	};

	if (sbx_http_hop_by_hop(name, len) ||
	    sbx_http_name_in(name, len, names, sizeof(names) / sizeof(names[0])))
		return true;
	if (!p->in->o.trust_forwarded && (SBX_HTTP_NAME_IS(name, len, "x-forwarded-proto") ||
					  SBX_HTTP_NAME_IS(name, len, "x-forwarded-host")))
		return true;
	if (p->in->o.strip_credentials && SBX_HTTP_NAME_IS(name, len, "authorization"))
		return true;
	return connection && sbx_http_list_has(connection, name);
}

/* The request's headers for the pod, and the forwarding lines. Those go to
 * the client as they are (sbx_http_client_request.lines): their names are
 * constants, and their values come from the request's own header values
 * (which the server has checked: no CR, LF or NUL), the peer's address and
 * the route's prefix (a checked id and port). */
static int build_fields(struct proxy *p)
{
	struct sbx_http_req *req = p->req;
	const char *connection = sbx_http_header(req, "Connection");
	const char *host = sbx_http_header(req, "Host") ?: "";
	const char *proto = sbx_http_secure(req) ? "https" : "http";
	const char *xff = p->in->o.trust_forwarded ? sbx_http_header(req, "X-Forwarded-For") : NULL;
	const char *peer = sbx_http_peer(req);
	bool v6 = strchr(peer, ':') != NULL;
	const char *name, *value;
	size_t len;
	int rc;

	if (p->in->o.trust_forwarded && sbx_http_header(req, "X-Forwarded-Proto"))
		proto = sbx_http_header(req, "X-Forwarded-Proto");
	for (unsigned i = 0; sbx_http_header_at(req, i, &name, &len, &value); i++) {
		if (not_passed_on(p, name, len, connection))
			continue;
		if (p->n_fields == MAX_FIELDS)
			return -E2BIG;
		p->fields[p->n_fields++] =
			(struct sbx_http_field){ .name = name, .value = value, .name_len = len };
	}
	rc = sbx_buf_cat(&p->extra, "X-Forwarded-For: ", xff ?: "", xff ? ", " : "", peer, "\r\n");
	if (!rc && !(p->in->o.trust_forwarded && sbx_http_header(req, "X-Forwarded-Host")))
		rc = sbx_buf_cat(&p->extra, "X-Forwarded-Host: ", host, "\r\n");
	if (!rc && !(p->in->o.trust_forwarded && sbx_http_header(req, "X-Forwarded-Proto")))
		rc = sbx_buf_cat(&p->extra, "X-Forwarded-Proto: ", proto, "\r\n");
	if (!rc && p->t.prefix_len) {
		rc = sbx_buf_append_str(&p->extra, "X-Forwarded-Prefix: ");
		if (!rc)
			rc = sbx_buf_append(&p->extra, sbx_http_path(req), p->t.prefix_len);
		if (!rc)
			rc = sbx_buf_append(&p->extra, "\r\n", 2);
	}
	if (!rc)
		rc = sbx_buf_cat(&p->extra, "Forwarded: for=\"", v6 ? "[" : "", peer, v6 ? "]" : "",
				 "\";host=\"", host, "\";proto=", proto, "\r\n");
	return rc;
}

/* What follows the prefix, and the query without the gateway's ticket. */
static int build_target(struct proxy *p)
{
	const char *q = sbx_http_query_string(p->req);
	struct sbx_buf *b = &p->target;
	bool first = true;
	int rc;

	rc = sbx_buf_append_str(b, *p->t.rest ? p->t.rest : "/");
	while (!rc && q && *q) {
		size_t n = strcspn(q, "&");

		if (n && !(p->in->o.strip_credentials &&
			   (!strncmp(q, "ticket=", 7) || (n == 6 && !strncmp(q, "ticket", 6))))) {
			rc = sbx_buf_append(b, first ? "?" : "&", 1);
			if (!rc)
				rc = sbx_buf_append(b, q, n);
			first = false;
		}
		q += n + (q[n] == '&');
	}
	return rc ? rc : sbx_buf_append(b, "", 1);
}

/* ---- the exchange with the pod ------------------------------------------------------------ */

/* "ip:port" or "[ip6]:port", the pool's key (no snprintf: per request). */
static void backend_key(struct proxy *p, const char *address)
{
	bool v6 = strchr(address, ':') != NULL;
	size_t n = strlen(address), at = 0;
	char port[8], *digits = port + sizeof(port) - 1;
	unsigned v = p->t.port;

	*digits = '\0';
	do {
		*--digits = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (n + strlen(digits) + 4 > sizeof(p->backend)) {
		p->backend[0] = '\0'; /* cannot happen: addresses are checked IPs */
		return;
	}
	if (v6)
		p->backend[at++] = '[';
	memcpy(p->backend + at, address, n);
	at += n;
	if (v6)
		p->backend[at++] = ']';
	p->backend[at++] = ':';
	strcpy(p->backend + at, digits);
}

static void attempt(struct proxy *p);

/* Waits for the sandbox (or its port) until the hold deadline; past it,
 * answers status with why. */
static void hold(struct proxy *p, int status, const char *why, uint64_t retry_in_ms)
{
	struct ingress *in = p->in;
	uint64_t now = uv_now(in->loop);

	if (now >= p->deadline_ms) {
		if (p->state == P_HELD)
			in->st.hold_expired++;
		answer(p, status, why);
		return;
	}
	p->hold_status = status;
	snprintf(p->hold_why, sizeof(p->hold_why), "%s", why);
	p->retry_at_ms = retry_in_ms ? now + retry_in_ms : p->deadline_ms;
	if (p->listed)
		return;
	if (p->state != P_HELD)
		set_state(p, P_HELD);
	p->listed = true;
	p->next = in->held;
	if (in->held)
		in->held->prev = p;
	in->held = p;
	in->st.held_now++;
	in->st.held_total++;
	if (!uv_is_active((uv_handle_t *)&in->hold_timer))
		uv_timer_start(&in->hold_timer, hold_tick, HOLD_TICK_MS, HOLD_TICK_MS);
}

static int sink_data(struct sbx_http_req *req, const char *at, size_t len, void *arg)
{
	struct proxy *p = arg;
	int rc = p->x ? sbx_http_client_write(p->x, at, len) : -EPIPE;

	if (rc < 0)
		return rc; /* the exchange has failed: its end answers */
	if (rc == 1)
		sbx_http_pause_body(req);
	return 0;
}

static void sink_end(struct sbx_http_req *req, int status, void *arg)
{
	struct proxy *p = arg;

	(void)req;
	p->body_ended = true;
	if (!p->x)
		return; /* the exchange has failed: its end answers */
	if (status == 0) {
		if (sbx_http_client_end(p->x) == 0)
			return;
		status = -EPIPE;
	}
	sbx_http_client_abort(p->x);
	p->x = NULL;
	if (p->state == P_RESPONDING) {
		sbx_http_on_abort(p->req, NULL, NULL);
		log_request(p, 499, "the request body was cut");
		req = p->req;
		proxy_free(p);
		sbx_http_abort(req);
		return;
	}
	answer(p, status == -EFBIG ? 413 : 400,
	       status == -EFBIG ? "the request body is larger than --max-body-bytes"
				: "the request body was cut");
}

static const struct sbx_http_body_sink sink = { sink_data, sink_end };

static void up_connected(struct sbx_http_client *x, void *arg)
{
	struct proxy *p = arg;

	p->x = x;
	if (p->body_started || sbx_http_content_length(p->req) == 0)
		return;
	p->body_started = true;
	sbx_http_stream_body(p->req, &sink, p);
}

static void up_drained(struct sbx_http_client *x, void *arg)
{
	struct proxy *p = arg;

	(void)x;
	if (p->body_started && !p->body_ended)
		sbx_http_resume_body(p->req);
}

static void resume_up(struct sbx_http_req *req, void *arg)
{
	struct proxy *p = arg;

	(void)req;
	if (p->x)
		sbx_http_client_resume(p->x);
}

/* The head goes out now, with the body's first bytes when there are some:
 * 0, 1 (the client is behind) or a negative errno. */
static int send_head(struct proxy *p, const char *data, size_t len)
{
	head_unlink(p);
	return sbx_http_start_with(p->req, p->status, p->type, p->length, data, len);
}

static void heads_due(uv_timer_t *t)
{
	struct ingress *in = t->data;

	while (in->heads)
		send_head(in->heads, NULL, 0); /* a client gone is seen by its abort */
}

static void up_head(struct sbx_http_client *x, int status, const struct sbx_http_field *f, size_t n,
		    void *arg)
{
	struct proxy *p = arg;
	const char *type, *length;
	struct ingress *in = p->in;

	(void)x;
	sbx_http_pass_answer_fields(p->req, f, n, &type, &length);
	set_state(p, P_RESPONDING);
	p->status = status;
	if (!type)
		p->type = NULL;
	else if (strlen(type) < sizeof(p->type_space))
		p->type = strcpy(p->type_space, type);
	else
		p->type = sbx_strdup(type);
	p->length = -1;
	if (status == 204 || status == 304)
		p->length = 0;
	else if (length)
		p->length = (long long)strtoull(length, NULL, 10);
	/* The head waits for the body's first bytes, which usually came in
	 * the same read, so that both go in one write; at the latest it goes
	 * at the start of the next loop turn. */
	p->head_pending = true;
	p->head_next = in->heads;
	if (in->heads)
		in->heads->head_prev = p;
	in->heads = p;
	if (!uv_is_active((uv_handle_t *)&in->heads_timer))
		uv_timer_start(&in->heads_timer, heads_due, 0, 0);
	sbx_http_on_drain(p->req, resume_up, p);
	ingress_count(p->in, (int)p->t.form, status, p->started_ms);
	log_request(p, status, NULL);
}

static void up_data(struct sbx_http_client *x, const char *data, size_t len, void *arg)
{
	struct proxy *p = arg;
	int rc = p->head_pending ? send_head(p, data, len) : sbx_http_write(p->req, data, len);

	if (rc == 1) {
		sbx_http_client_pause(x); /* the client is behind */
		sbx_http_on_drain(p->req, resume_up, p);
	}
}

static enum ingress_backend_error error_kind(int err)
{
	switch (err) {
	case -ECONNREFUSED:
		return BACKEND_REFUSED;
	case -ETIMEDOUT:
		return BACKEND_TIMEOUT;
	case -ECONNRESET:
		return BACKEND_RESET;
	case -EPROTO:
	case -E2BIG:
		return BACKEND_PROTOCOL;
	default:
		return BACKEND_OTHER;
	}
}

static void up_done(struct sbx_http_client *x, int err, void *arg)
{
	struct proxy *p = arg;
	struct sbx_http_req *req = p->req;
	char why[192];

	(void)x;
	p->x = NULL;
	if (err)
		p->in->st.backend_errors[error_kind(err)]++;
	if (p->state == P_RESPONDING) {
		if (p->head_pending)
			send_head(p, NULL, 0);
		sbx_http_on_abort(req, NULL, NULL);
		proxy_free(p);
		if (err)
			sbx_http_abort(req); /* the client sees the answer cut */
		else
			sbx_http_end(req);
		return;
	}

	if (err == -ECONNREFUSED && !p->body_started) {
		/* Nothing of the request went: it may go again. */
		snprintf(why, sizeof(why), "sandbox '%s' refused the connection on port %u",
			 p->t.id, p->t.port);
		p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (p->backoff_ms > BACKOFF_MAX_MS)
			p->backoff_ms = BACKOFF_MAX_MS;
		hold(p, 502, why, p->backoff_ms);
		return;
	}
	if (err == -ETIMEDOUT)
		snprintf(why, sizeof(why), "sandbox '%s' did not answer on port %u in time",
			 p->t.id, p->t.port);
	else if (err == -EPROTO || err == -E2BIG)
		snprintf(why, sizeof(why),
			 "sandbox '%s' answered on port %u with something that is not HTTP/1.1",
			 p->t.id, p->t.port);
	else if (err == -ECONNRESET)
		snprintf(why, sizeof(why),
			 "sandbox '%s' closed the connection on port %u unanswered", p->t.id,
			 p->t.port);
	else
		snprintf(why, sizeof(why), "cannot reach sandbox '%s' on port %u: %s", p->t.id,
			 p->t.port, strerror(err < 0 ? -err : EIO));
	answer(p, err == -ETIMEDOUT ? 504 : 502, why);
}

static const struct sbx_http_client_callbacks up_cb = {
	.head = up_head,
	.data = up_data,
	.drained = up_drained,
	.done = up_done,
	.connected = up_connected,
};

/* A protocol switch goes to the core's tunnel; the proxy ends here. */
static void tunnel(struct proxy *p)
{
	const char *drop[] = { INGRESS_TO_HEADER, "Forwarded", "X-Forwarded-Prefix",
			       p->in->o.strip_credentials ? "Authorization" : NULL, NULL };
	const char *add[2 * 6 + 1];
	struct sbx_http_tunnel_opts o = { .upstream = p->backend,
					  .path = p->target.data,
					  .host = sbx_http_header(p->req, "Host"),
					  .drop_headers = drop,
					  .add_headers = add };
	struct sbx_http_req *req = p->req;
	size_t n = 0;

	/* The forwarding lines as name and value pairs, split in place (the
	 * proxy ends here): a name is a token, so its ": " is the first. */
	for (char *at = p->extra.data, *end = at + p->extra.len; at < end && n < 12;) {
		char *colon = strstr(at, ": "), *eol = strstr(colon, "\r\n");

		*colon = *eol = '\0';
		add[n++] = at;
		add[n++] = colon + 2;
		at = eol + 2;
	}
	add[n] = NULL;
	sbx_http_on_abort(req, NULL, NULL);
	p->in->st.tunnels_total++;
	ingress_count(p->in, (int)p->t.form, 101, p->started_ms);
	log_request(p, 101, "tunnel");
	sbx_http_tunnel(req, &o);
	proxy_free(p);
}

static void attempt(struct proxy *p)
{
	struct ingress *in = p->in;
	const struct ingress_sandbox *s = ingress_table_get(in->table, p->t.id);
	struct sbx_http_client_request r = { 0 };
	char why[192];
	int rc;

	if (!s) {
		snprintf(why, sizeof(why), "no sandbox '%s'", p->t.id);
		answer(p, 404, why);
		return;
	}
	if (!ingress_sandbox_has_port(s, p->t.port)) {
		snprintf(why, sizeof(why), "sandbox '%s' does not expose port %u", p->t.id,
			 p->t.port);
		answer(p, 404, why);
		return;
	}
	if (!s->ready) {
		snprintf(why, sizeof(why), "sandbox '%s' is not ready (phase %s)", p->t.id,
			 *s->phase ? s->phase : "unknown");
		hold(p, 503, why, 0);
		return;
	}
	backend_key(p, s->address);
	unhold(p);
	if (sbx_http_upgrade(p->req)) {
		tunnel(p);
		return;
	}
	set_state(p, P_EXCHANGING);
	r.backend = p->backend;
	r.method = sbx_http_method(p->req);
	r.target = p->target.data;
	r.host = sbx_http_header(p->req, "Host");
	r.headers = p->fields;
	r.n_headers = p->n_fields;
	r.lines = p->extra.data;
	r.lines_len = p->extra.len;
	r.content_length = sbx_http_content_length(p->req);
	rc = sbx_http_client_start(in->pool, &r, &up_cb, p, &p->x);
	if (rc == -EINVAL)
		answer(p, 400,
		       "the request cannot be passed on (a header or the host is malformed)");
	else if (rc)
		answer(p, 503, "out of memory");
}

static void hold_tick(uv_timer_t *t)
{
	struct ingress *in = t->data;
	uint64_t now = uv_now(in->loop);
	struct proxy *p, *next;

	for (p = in->held; p; p = next) {
		next = p->next;
		if (now >= p->deadline_ms) {
			in->st.hold_expired++;
			answer(p, p->hold_status, p->hold_why);
		} else if (now >= p->retry_at_ms) {
			attempt(p);
		}
	}
}

void ingress_set_table(struct ingress *in, struct ingress_table *t)
{
	struct proxy *p, *next;

	ingress_table_ref(t);
	ingress_table_unref(in->table);
	in->table = t;
	/* The sandbox a request waits for may be there now. */
	for (p = in->held; p; p = next) {
		next = p->next;
		attempt(p);
	}
}

void ingress_proxy(struct ingress *in, struct sbx_http_req *req, const struct ingress_target *t)
{
	struct proxy *p = sbx_spares_get(&in->proxies);

	if (!p) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	memset(p, 0, offsetof(struct proxy, fields));
	p->in = in;
	p->req = req;
	p->t = *t;
	p->started_ms = uv_now(in->loop);
	p->deadline_ms = p->started_ms + in->o.hold_timeout_ms;
	sbx_buf_init_on(&p->target, 1u << 20, p->target_space, sizeof(p->target_space));
	sbx_buf_init_on(&p->extra, 1u << 20, p->extra_space, sizeof(p->extra_space));
	in->st.proxied_now++;
	if (build_target(p) || build_fields(p)) {
		answer(p, 431, "the request head is too large to pass on");
		return;
	}
	sbx_http_on_abort(req, client_gone, p);
	attempt(p);
}
