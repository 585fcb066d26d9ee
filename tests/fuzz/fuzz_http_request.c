/* Fuzz target: the request path of HTTP/1.1 and (with the preface first) HTTP/2 (bytes from any
 * client). Each input is written into one end of a socketpair whose other end is a server
 * connection with real routes (echo, params, streaming, 404/405 paths); the
 * loop runs until the server has answered and closed. Any crash, leak or
 * hang is a finding. */
#include "http_types.h"

#include "sbx/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <fcntl.h>

#include <sys/socket.h>

static void echo(struct sbx_http_req *req, void *arg)
{
	size_t len;
	const char *body = sbx_http_body(req, &len);
	char q[64];

	sbx_http_query(req, "q", q, sizeof(q));
	sbx_http_add_header(req, "X-Param", sbx_http_param(req, "id") ? "1" : "0");
	sbx_http_respond(req, 200, "application/octet-stream", body, len);
}

static void streamed(struct sbx_http_req *req, void *arg)
{
	sbx_http_start(req, 200, "text/plain");
	sbx_http_write(req, "a", 1);
	sbx_http_write(req, "bc", 2);
	sbx_http_end(req);
}

/* A streamed body: a piece starting with 'P' pauses reading until the next
 * loop turn, one starting with 'E' answers at once, mid-body. */
struct fsink {
	uv_timer_t timer;
	struct sbx_http_req *req;
	size_t bytes;
};

static void fsink_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void fsink_release(struct fsink *f)
{
	uv_close((uv_handle_t *)&f->timer, fsink_closed);
}

static void fsink_resume(uv_timer_t *t)
{
	struct fsink *f = t->data;

	sbx_http_resume_body(f->req);
}

static int fsink_data(struct sbx_http_req *req, const char *at, size_t len, void *arg)
{
	struct fsink *f = arg;

	f->bytes += len;
	if (at[0] == 'E') {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_respond_error(req, 400, "early");
		fsink_release(f);
		return -EINVAL;
	}
	if (at[0] == 'P') {
		sbx_http_pause_body(req);
		uv_timer_start(&f->timer, fsink_resume, 0, 0);
	}
	return 0;
}

static void fsink_end(struct sbx_http_req *req, int status, void *arg)
{
	struct fsink *f = arg;

	sbx_http_on_abort(req, NULL, NULL);
	sbx_http_respond(req, status ? 413 : 200, "text/plain", "done", 4);
	fsink_release(f);
}

static void fsink_abort(struct sbx_http_req *req, void *arg)
{
	fsink_release(arg);
}

static void sink(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_http_body_sink ops = { .data = fsink_data, .end = fsink_end };
	struct fsink *f = sbx_calloc(1, sizeof(*f));

	if (sbx_http_header(req, "X-Reject")) {
		sbx_free(f);
		sbx_http_respond_error(req, 401, "rejected");
		return;
	}
	f->req = req;
	uv_timer_init(req->s->loop, &f->timer);
	f->timer.data = f;
	sbx_http_on_abort(req, fsink_abort, f);
	sbx_http_stream_body(req, &ops, f);
}

/* WebSocket: echo, and "c" closes. */
static void ws_msg(struct sbx_ws *ws, int opcode, const char *data, size_t len, void *arg)
{
	if (len == 1 && data[0] == 'c')
		sbx_ws_close(ws, 1000, "bye");
	else
		sbx_ws_send(ws, opcode, data, len);
}

static void ws_route(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_ws_callbacks cb = { .message = ws_msg };
	struct sbx_ws *ws;

	sbx_http_websocket(req, &cb, NULL, 256, &ws);
}

/* Tunnels: to an upstream on this loop that answers as the request's
 * X-Up header says (101 then echo, 404, garbage, or a close), so that
 * tunnel set-up, answers relayed and bytes both ways are all reached. */
static char up_addr[32];

struct upc {
	uv_tcp_t tcp;
	char head[2048];
	size_t len;
	bool switched;
};

struct upw {
	uv_write_t w;
	char data[];
};

static void upc_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void upc_written(uv_write_t *w, int status)
{
	sbx_free(w);
}

static void upc_send(struct upc *u, const char *data, size_t len)
{
	struct upw *w = sbx_malloc(sizeof(*w) + len);
	uv_buf_t b;

	memcpy(w->data, data, len);
	b = uv_buf_init(w->data, (unsigned)len);
	if (uv_write(&w->w, (uv_stream_t *)&u->tcp, &b, 1, upc_written))
		sbx_free(w);
}

static void upc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char block[65536];

	*buf = uv_buf_init(block, sizeof(block));
}

static void upc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct upc *u = st->data;
	char *end;

	if (n < 0) {
		uv_close((uv_handle_t *)st, upc_closed);
		return;
	}
	if (u->switched) {
		upc_send(u, buf->base, (size_t)n);
		return;
	}
	if ((size_t)n > sizeof(u->head) - 1 - u->len)
		n = (ssize_t)(sizeof(u->head) - 1 - u->len);
	memcpy(u->head + u->len, buf->base, (size_t)n);
	u->len += (size_t)n;
	u->head[u->len] = '\0';
	if (!(end = strstr(u->head, "\r\n\r\n")))
		return;
	if (strstr(u->head, "X-Up: 404")) {
		static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop";

		upc_send(u, nf, sizeof(nf) - 1);
	} else if (strstr(u->head, "X-Up: junk")) {
		static const char junk[] = "HTTP/1.1 20x\r\n\r\n";

		upc_send(u, junk, sizeof(junk) - 1);
	} else if (strstr(u->head, "X-Up: close")) {
		uv_close((uv_handle_t *)st, upc_closed);
	} else if (!strstr(u->head, "\nUpgrade:")) {
		/* A plain request (through the ingress): a kept-alive answer. */
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

		upc_send(u, ok, sizeof(ok) - 1);
		u->len = 0;
	} else {
		static const char ok[] =
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			"Connection: Upgrade\r\n\r\n";

		u->switched = true;
		upc_send(u, ok, sizeof(ok) - 1);
		if (end + 4 < u->head + u->len)
			upc_send(u, end + 4, (size_t)(u->head + u->len - end - 4));
	}
}

static void up_accept(uv_stream_t *l, int status)
{
	struct upc *u = sbx_calloc(1, sizeof(*u));

	uv_tcp_init(l->loop, &u->tcp);
	u->tcp.data = u;
	if (status < 0 || uv_accept(l, (uv_stream_t *)&u->tcp)) {
		uv_close((uv_handle_t *)&u->tcp, upc_closed);
		return;
	}
	uv_read_start((uv_stream_t *)&u->tcp, upc_alloc, upc_read);
}

static void tunnel(struct sbx_http_req *req, void *arg)
{
	const struct sbx_http_tunnel_opts o = { .upstream = up_addr, .path = "/up" };

	sbx_http_tunnel(req, &o);
}

/* A forward proxy's requests: CONNECT opens a tunnel to the upstream (asked
 * with a CONNECT of its own, carrying X-Up, when the request has one), an
 * absolute-form request is forwarded to it. */
static void proxied(struct sbx_http_req *req, void *arg)
{
	const struct sbx_http_tunnel_opts o = { .upstream = up_addr, .path = "/up" };
	const char *x_up = sbx_http_header(req, "X-Up");
	char via[256];

	if (strcmp(sbx_http_method(req), "CONNECT") != 0) {
		sbx_http_forward(req, &o);
		return;
	}
	snprintf(via, sizeof(via), "CONNECT %.100s HTTP/1.1\r\nX-Up: %.64s\r\n\r\n",
		 sbx_http_authority(req), x_up ? x_up : "");
	sbx_http_connect(req, up_addr, x_up ? via : NULL);
}

static const struct sbx_http_route proxy_route = { .fn = proxied, .stream_body = true };

static const struct sbx_http_route routes[] = {
	{ .method = "GET", .pattern = "/tunnel", .fn = tunnel },
	{ .method = "GET", .pattern = "/ws", .fn = ws_route },
	{ .method = "POST",
	  .pattern = "/sink",
	  .fn = sink,
	  .stream_body = true,
	  .max_body_bytes = 1024 },
	{ .method = "POST", .pattern = "/echo", .fn = echo },
	{ .method = "GET", .pattern = "/items/{id}/x/*", .fn = echo },
	{ .method = "GET", .pattern = "/stream", .fn = streamed },
	{ .method = "PUT", .pattern = "/small", .fn = echo, .max_body_bytes = 8 },
};

struct drain {
	uv_poll_t poll;
	int fd;
	bool eof;
};

static void on_peer(uv_poll_t *p, int status, int events)
{
	struct drain *d = p->data;
	char buf[65536];
	ssize_t n;

	while ((n = read(d->fd, buf, sizeof(buf))) > 0)
		;
	if (n == 0 || status < 0) {
		d->eof = true;
		uv_poll_stop(p);
	}
}

#ifndef UP_PORT
#define UP_PORT 0
#endif

/* UP_PORT when it is free (another fuzzing process may hold it), else any. */
static int up_port(void)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, free_ = 0;

	uv_ip4_addr("127.0.0.1", UP_PORT, &sa);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		free_ = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
	}
	return free_ ? UP_PORT : 0;
}

static void up_listen(uv_loop_t *loop, uv_tcp_t *up)
{
	struct sockaddr_in sa;
	int len = sizeof(sa);

	uv_ip4_addr("127.0.0.1", UP_PORT ? up_port() : 0, &sa);
	uv_tcp_init(loop, up);
	if (uv_tcp_bind(up, (struct sockaddr *)&sa, 0) ||
	    uv_listen((uv_stream_t *)up, 16, up_accept) ||
	    uv_tcp_getsockname(up, (struct sockaddr *)&sa, &len))
		abort();
	snprintf(up_addr, sizeof(up_addr), "127.0.0.1:%u", ntohs(sa.sin_port));
}

static void on_closed(void *arg)
{
	*(bool *)arg = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_http_server_opts o = { .max_header_bytes = 2048,
					  .max_headers = 16,
					  .max_body_bytes = 4096,
					  .header_timeout_ms = 1000,
					  .idle_timeout_ms = 50,
					  .connect_timeout_ms = 1000 };
	struct sbx_http_server *s;
	struct drain d = { 0 };
	bool closed = false;
	uv_tcp_t up;
	uv_loop_t loop;
	int fds[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
		return 0;
	uv_loop_init(&loop);
	up_listen(&loop, &up);
#ifdef FUZZ_INGRESS
	fuzz_ingress_start(&loop, &o, &s, data, size);
#else
	o.proxy = &proxy_route;
	sbx_http_server_new(&loop, &o, routes, sizeof(routes) / sizeof(routes[0]), &s);
#endif
#ifdef FUZZ_TLS_RECORDS
	http_server_adopt(s, fds[0], fuzz_tls_ctx());
#else
	http_server_adopt(s, fds[0], NULL);
#endif
	/* The client: send everything, half-close, read all answers. */
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
#ifdef FUZZ_HTTP2_FRAMES
	/* The connection preface and an empty SETTINGS: the input is frames. */
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";

	if (write(fds[1], preface, sizeof(preface) - 1) != sizeof(preface) - 1)
		return 0;
#endif
	for (size_t off = 0; off < size;) {
		ssize_t n = write(fds[1], data + off, size - off);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(fds[1], SHUT_WR);
	d.fd = fds[1];
	uv_poll_init(&loop, &d.poll, fds[1]);
	d.poll.data = &d;
	uv_poll_start(&d.poll, UV_READABLE, on_peer);
	while (!d.eof && uv_run(&loop, UV_RUN_ONCE))
		;
	sbx_http_server_close(s, on_closed, &closed);
	uv_close((uv_handle_t *)&d.poll, NULL);
	uv_close((uv_handle_t *)&up, NULL);
#ifdef FUZZ_INGRESS
	fuzz_ingress_stop();
#endif
	uv_run(&loop, UV_RUN_DEFAULT);
	if (!closed)
		__builtin_trap();
	uv_loop_close(&loop);
	close(fds[1]);
	return 0;
}
