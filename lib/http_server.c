/* The server: listeners, accepting connections into a bounded number of
 * slots (plus a few kept for health routes), and the graceful stop, which
 * goes through each connection's codec and closes what is left when the
 * drain timeout runs out.
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/http_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const struct {
	int status;
	const char *text;
} reasons[] = {
	{ 100, "Continue" },
	{ 101, "Switching Protocols" },
	{ 200, "OK" },
	{ 201, "Created" },
	{ 202, "Accepted" },
	{ 204, "No Content" },
	{ 206, "Partial Content" },
	{ 301, "Moved Permanently" },
	{ 302, "Found" },
	{ 304, "Not Modified" },
	{ 307, "Temporary Redirect" },
	{ 400, "Bad Request" },
	{ 401, "Unauthorized" },
	{ 403, "Forbidden" },
	{ 404, "Not Found" },
	{ 405, "Method Not Allowed" },
	{ 408, "Request Timeout" },
	{ 409, "Conflict" },
	{ 410, "Gone" },
	{ 411, "Length Required" },
	{ 412, "Precondition Failed" },
	{ 413, "Content Too Large" },
	{ 414, "URI Too Long" },
	{ 415, "Unsupported Media Type" },
	{ 416, "Range Not Satisfiable" },
	{ 417, "Expectation Failed" },
	{ 422, "Unprocessable Content" },
	{ 426, "Upgrade Required" },
	{ 429, "Too Many Requests" },
	{ 431, "Request Header Fields Too Large" },
	{ 499, "Client Closed Request" },
	{ 500, "Internal Server Error" },
	{ 501, "Not Implemented" },
	{ 502, "Bad Gateway" },
	{ 503, "Service Unavailable" },
	{ 504, "Gateway Timeout" },
	{ 508, "Loop Detected" },
};

const char *sbx_http_reason(int status)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		if (reasons[i].status == status)
			return reasons[i].text;
	}
	return "Unknown";
}

const char *http_date(struct sbx_http_server *s)
{
	time_t now = time(NULL);
	struct tm tm;

	if (now != s->date_at) {
		gmtime_r(&now, &tm);
		strftime(s->date, sizeof(s->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		s->date_at = now;
	}
	return s->date;
}

void http_count_response(struct sbx_http_server *s, int status)
{
	s->stats.responses_by_class[status / 100 < 6 && status > 0 ? status / 100 : 5]++;
}

void sbx_http_flags_apply(const struct sbx_http_flags *f, struct sbx_http_server_opts *o)
{
	o->idle_timeout_ms = (uint64_t)f->idle_timeout_ms;
	o->header_timeout_ms = (uint64_t)f->header_timeout_ms;
	o->max_connections = (unsigned)f->max_connections;
	o->drain_timeout_ms = (uint64_t)f->drain_timeout_ms;
	o->max_header_bytes = (size_t)f->max_header_bytes;
	o->max_buffered_body_bytes = (size_t)f->max_buffered_body_bytes;
	o->write_timeout_ms = (uint64_t)f->write_timeout_ms;
}

int sbx_http_server_new(uv_loop_t *loop, const struct sbx_http_server_opts *opts,
			const struct sbx_http_route *routes, size_t n_routes,
			struct sbx_http_server **out)
{
	struct sbx_http_server *s = sbx_calloc(1, sizeof(*s));
	struct sbx_http_server_opts *o;

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	sbx_spares_init(&s->h1_reqs, http1_req_size);
	s->o = opts ? *opts : (struct sbx_http_server_opts){ 0 };
	o = &s->o;
	o->max_header_bytes = o->max_header_bytes ?: 65536;
	o->max_headers = o->max_headers ?: 100;
	o->max_body_bytes = o->max_body_bytes ?: 1u << 20;
	o->max_buffered_body_bytes = o->max_buffered_body_bytes ?: 256u << 20;
	o->max_connections = o->max_connections ?: 1024;
	o->header_timeout_ms = o->header_timeout_ms ?: 30000;
	o->idle_timeout_ms = o->idle_timeout_ms ?: 75000;
	o->write_timeout_ms = o->write_timeout_ms ?: 60000;
	o->drain_timeout_ms = o->drain_timeout_ms ?: 10000;
	o->ws_ping_interval_ms = o->ws_ping_interval_ms ?: 30000;
	o->stream_idle_timeout_ms = o->stream_idle_timeout_ms ?: 600000;
	o->connect_timeout_ms = o->connect_timeout_ms ?: 10000;
	o->write_high_water = o->write_high_water ?: 256 * 1024;
	o->server_name = o->server_name ?: "sbx";
	s->routes = routes;
	s->n_routes = n_routes;
	uv_check_init(loop, &s->flush_check);
	uv_prepare_init(loop, &s->flush_prepare);
	s->flush_check.data = s->flush_prepare.data = s;
	s->open_flushers = 2;
	*out = s;
	return 0;
}

/* "host:port", "[v6]:port" or ":port" into a socket address. */
int http_parse_addr(const char *addr, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(addr, ':');
	long port;
	char *end;
	size_t hlen;

	if (!colon)
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return -EINVAL;
	hlen = (size_t)(colon - addr);
	if (hlen && addr[0] == '[') {
		if (hlen < 2 || addr[hlen - 1] != ']' || hlen - 2 >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr + 1, hlen - 2);
		host[hlen - 2] = '\0';
		return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
	}
	if (hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	return uv_ip4_addr(hlen ? host : "0.0.0.0", (int)port, (struct sockaddr_in *)ss);
}

/* ---- output gathered per loop turn ------------------------------------------------ */

static void maybe_free(struct sbx_http_server *s);
static void on_listener_closed(uv_handle_t *h);

static void run_flushes(struct sbx_http_server *s)
{
	struct http_conn *c;

	/* A flush that asks for another is served in this run too. */
	while ((c = s->flush_due)) {
		s->flush_due = c->flush_next;
		c->flush_listed = false;
		if (conn_alive(c) && c->codec && c->codec->flush)
			c->codec->flush(c);
	}
	uv_check_stop(&s->flush_check);
	uv_prepare_stop(&s->flush_prepare);
}

static void on_flush_check(uv_check_t *h)
{
	run_flushes(h->data);
}

static void on_flush_prepare(uv_prepare_t *h)
{
	run_flushes(h->data);
}

static void on_flusher_closed(uv_handle_t *h)
{
	struct sbx_http_server *s = h->data;

	s->open_flushers--;
	maybe_free(s);
}

void conn_flush_soon(struct http_conn *c)
{
	struct sbx_http_server *s = c->s;

	if (c->flush_listed || !conn_alive(c))
		return;
	if (s->closing) {
		c->codec->flush(c); /* the handles are closed or closing */
		return;
	}
	c->flush_listed = true;
	c->flush_next = s->flush_due;
	s->flush_due = c;
	if (!uv_is_active((uv_handle_t *)&s->flush_check)) {
		uv_check_start(&s->flush_check, on_flush_check);
		uv_prepare_start(&s->flush_prepare, on_flush_prepare);
	}
}

static void maybe_free(struct sbx_http_server *s)
{
	void (*done)(void *) = s->done;
	void *arg = s->done_arg;

	if (!s->closing || s->conns || s->open_listeners || s->open_flushers)
		return;
	sbx_http_pool_free(s->pool);
	sbx_http_pool_free(s->forward_pool);
	sbx_spares_release(&s->h1_reqs);
	sbx_free(s);
	if (done)
		done(arg);
}

void http_server_conn_gone(struct sbx_http_server *s, struct http_conn *c)
{
	if (c->flush_listed) {
		struct http_conn **pp = &s->flush_due;

		while (*pp != c)
			pp = &(*pp)->flush_next;
		*pp = c->flush_next;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->stats.connections_open--;
	if (c->reserved)
		s->reserved_open--;
	maybe_free(s);
}

/* A slot for a new connection: a main one, else one of the health slots
 * (whose requests reach only health routes), else none: 503. */
static void start_in_slot(struct sbx_http_server *s, struct http_conn *c)
{
	unsigned main_open = s->stats.connections_open - s->reserved_open;

	if (main_open > s->o.max_connections) {
		if (s->reserved_open >= HTTP_HEALTH_SLOTS) {
			s->stats.connections_rejected++;
			conn_start(c);
			if (c->state == CONN_OPEN)
				http1_refuse(c, 503, "too many connections");
			return;
		}
		c->reserved = true;
		s->reserved_open++;
	}
	conn_start(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct http_listener *l = server->data;
	struct sbx_http_server *s = l->s;
	struct http_conn *c;

	if (status < 0 || s->closing)
		return;
	c = conn_new(s);
	if (!c)
		return;
	if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
		conn_close(c);
		return;
	}
	s->stats.connections_accepted++;
	uv_tcp_nodelay(&c->tcp, 1);
	if (l->tls && tls_attach(c, l->tls)) {
		conn_close(c);
		return;
	}
	start_in_slot(s, c);
}

int http_server_adopt(struct sbx_http_server *s, uv_os_sock_t fd, SSL_CTX *tls)
{
	struct http_conn *c = conn_new(s);
	int rc;

	if (!c)
		return -ENOMEM;
	if ((rc = uv_tcp_open(&c->tcp, fd))) {
		conn_close(c);
		return rc;
	}
	s->stats.connections_accepted++;
	if (tls && (rc = tls_attach(c, tls))) {
		conn_close(c);
		return rc;
	}
	start_in_slot(s, c);
	return 0;
}

/* A socket other processes (or loops) may listen on beside this one: the
 * kernel spreads new connections among them, and one of them closing its
 * listener leaves the port served. */
static int reuse_port_socket(uv_tcp_t *tcp, int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1, rc;

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if ((rc = uv_tcp_open(tcp, fd)))
		close(fd);
	return rc;
}

int sbx_http_server_listen(struct sbx_http_server *s, const char *addr)
{
	struct sockaddr_storage ss;
	struct http_listener *l;
	int rc;

	if (s->n_listeners >= HTTP_MAX_LISTENERS)
		return -E2BIG;
	if ((rc = http_parse_addr(addr, &ss)))
		return rc;
	l = &s->listeners[s->n_listeners];
	l->s = s;
	uv_tcp_init(s->loop, &l->tcp);
	l->tcp.data = l;
	s->open_listeners++;
	s->n_listeners++;
	if ((s->o.reuse_port && (rc = reuse_port_socket(&l->tcp, ss.ss_family))) ||
	    (rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) ||
	    (rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection))) {
		/* The handle lives in the server: the server stays until it
		 * has closed (a close right after must not free it first). */
		l->failed = true;
		uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
		return rc;
	}
	return 0;
}

int sbx_http_server_reload_tls(struct sbx_http_server *s, const char *cert_file,
			       const char *key_file, char *err, size_t err_size)
{
	SSL_CTX *ctx = tls_ctx_new(cert_file, key_file, err, err_size);
	int n = 0;

	if (!ctx)
		return -EINVAL;
	for (int i = 0; i < s->n_listeners; i++) {
		struct http_listener *l = &s->listeners[i];

		if (!l->tls)
			continue;
		/* Open connections keep the context they started with. */
		SSL_CTX_up_ref(ctx);
		SSL_CTX_free(l->tls);
		l->tls = ctx;
		n++;
	}
	SSL_CTX_free(ctx);
	return n;
}

int sbx_http_server_listen_tls(struct sbx_http_server *s, const char *addr, const char *cert_file,
			       const char *key_file, char *err, size_t err_size)
{
	SSL_CTX *ctx = tls_ctx_new(cert_file, key_file, err, err_size);
	int rc;

	if (!ctx)
		return -EINVAL;
	rc = sbx_http_server_listen(s, addr);
	if (rc) {
		snprintf(err, err_size, "cannot listen on %s: %s", addr, uv_strerror(rc));
		SSL_CTX_free(ctx);
		return rc;
	}
	s->listeners[s->n_listeners - 1].tls = ctx;
	return 0;
}

int sbx_http_server_port(const struct sbx_http_server *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	int i = 0;

	while (i < s->n_listeners && s->listeners[i].failed)
		i++;
	if (i == s->n_listeners ||
	    uv_tcp_getsockname(&s->listeners[i].tcp, (struct sockaddr *)&ss, &len))
		return -1;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
}

const struct sbx_http_stats *sbx_http_server_stats(const struct sbx_http_server *s)
{
	return &s->stats;
}

static void on_listener_closed(uv_handle_t *h)
{
	struct http_listener *l = h->data;
	struct sbx_http_server *s = l->s;

	s->open_listeners--;
	SSL_CTX_free(l->tls); /* connections hold their own references */
	l->tls = NULL;
	maybe_free(s);
}

void sbx_http_server_close(struct sbx_http_server *s, void (*done)(void *arg), void *arg)
{
	struct http_conn *c, *next;
	uint64_t drain_at = uv_now(s->loop) + s->o.drain_timeout_ms;

	s->closing = true;
	s->done = done;
	s->done_arg = arg;
	for (int i = 0; i < s->n_listeners; i++)
		if (!s->listeners[i].failed)
			uv_close((uv_handle_t *)&s->listeners[i].tcp, on_listener_closed);
	run_flushes(s);
	uv_close((uv_handle_t *)&s->flush_check, on_flusher_closed);
	uv_close((uv_handle_t *)&s->flush_prepare, on_flusher_closed);
	/* Each codec finishes what is in flight (or closes at once when
	 * idle); whatever is still open at the drain deadline is closed. */
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->state != CONN_OPEN)
			continue;
		conn_set_state(c, CONN_DRAINING);
		c->drain_at = drain_at;
		conn_arm(c);
		c->codec->shutdown(c);
	}
	maybe_free(s);
}
