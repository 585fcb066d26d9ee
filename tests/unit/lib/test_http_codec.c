/* The HTTP core's codecs driven over a socketpair, one behaviour per test:
 * HTTP/1.1 with the exact bytes that go out (the Date header aside), HTTP/2
 * through an nghttp2 client session frame by frame. Each fault found in the
 * single-file core has its test here, named after it. */
#define _GNU_SOURCE
#include "unit.h"

#include "http_types.h"

#include "sbx/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

struct harness {
	uv_loop_t loop;
	struct sbx_http_server *s;
	int fd;
	char out[1 << 16];
	size_t out_len;
	bool eof;
	unsigned handled;	   /* handlers that ran */
	struct sbx_http_req *held; /* a request /held keeps unanswered */
	nghttp2_session *h2;	   /* the HTTP/2 client, when used */
	int h2_status[16];	   /* :status by stream id / 2 */
	bool h2_goaway, h2_reset[16];
};

static struct harness *current;

static void hello(struct sbx_http_req *req, void *arg)
{
	current->handled++;
	sbx_http_respond(req, 200, "text/plain", "hello", 5);
}

static void held(struct sbx_http_req *req, void *arg)
{
	current->handled++;
	current->held = req;
}

static void ws(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_ws_callbacks cb = { 0 };
	struct sbx_ws *w;

	current->handled++;
	sbx_http_websocket(req, &cb, NULL, 1024, &w);
}

/* The values the handler finds by name, or "-" for none. */
static void lookup(struct sbx_http_req *req, void *arg)
{
	static const char *const names[] = { "X-Empty", "X-Next", "X-Nex", "X-Last", "host" };
	char body[256] = "";
	const char *name, *value;
	size_t len;
	unsigned i, whole = 0;

	current->handled++;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = sbx_http_header(req, names[i]);

		snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s%s=%s%s%s",
			 i ? " " : "", names[i], v ? "[" : "-", v ? v : "", v ? "]" : "");
	}
	/* Each name's length as the server gives it, against strlen. */
	for (i = 0; sbx_http_header_at(req, i, &name, &len, &value); i++)
		whole += len == strlen(name);
	snprintf(body + strlen(body), sizeof(body) - strlen(body), " lengths=%u/%u", whole, i);
	sbx_http_respond(req, 200, "text/plain", body, strlen(body));
}

static bool refuse_unless_key(struct sbx_http_req *req, void *arg)
{
	if (sbx_http_header(req, "X-Key"))
		return true;
	sbx_http_respond_error(req, 401, "no key");
	return false;
}

static const struct sbx_http_route routes[] = {
	{ .method = "GET", .pattern = "/hello", .fn = hello },
	{ .method = "POST", .pattern = "/hello", .fn = hello },
	{ .method = "GET", .pattern = "/held", .fn = held },
	{ .method = "GET", .pattern = "/ws", .fn = ws },
	{ .method = "GET", .pattern = "/lookup", .fn = lookup },
};

static void start(struct harness *h, struct sbx_http_server_opts *o)
{
	int fds[2];

	memset(h, 0, sizeof(*h));
	current = h;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(uv_loop_init(&h->loop), 0);
	o->server_name = "t";
	assert_int_equal(
		sbx_http_server_new(&h->loop, o, routes, sizeof(routes) / sizeof(routes[0]), &h->s),
		0);
	assert_int_equal(http_server_adopt(h->s, fds[0], NULL), 0);
	h->fd = fds[1];
	fcntl(h->fd, F_SETFL, O_NONBLOCK);
}

static void put(struct harness *h, const void *data, size_t len)
{
	assert_int_equal(write(h->fd, data, len), (ssize_t)len);
}

static void put_str(struct harness *h, const char *s)
{
	put(h, s, strlen(s));
}

/* Runs the loop and reads what the server sends until want() holds, the
 * server closes, or 3 s pass. */
static void run_until(struct harness *h, bool (*want)(struct harness *))
{
	uint64_t deadline = uv_hrtime() + 3000000000ull;

	while (!(want && want(h)) && !h->eof && uv_hrtime() < deadline) {
		struct pollfd p = { .fd = h->fd, .events = POLLIN };
		ssize_t n;

		uv_run(&h->loop, UV_RUN_NOWAIT);
		if (poll(&p, 1, 1) <= 0)
			continue;
		n = read(h->fd, h->out + h->out_len, sizeof(h->out) - h->out_len - 1);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			h->eof = true;
		} else if (n > 0) {
			if (h->h2)
				assert_true(nghttp2_session_mem_recv(h->h2,
								     (uint8_t *)h->out + h->out_len,
								     (size_t)n) >= 0);
			h->out_len += (size_t)n;
			h->out[h->out_len] = '\0';
		}
	}
}

static bool got_answer(struct harness *h)
{
	const char *end = strstr(h->out, "\r\n\r\n");
	const char *cl = strcasestr(h->out, "Content-Length: ");

	return end && cl && h->out_len >= (size_t)(end + 4 - h->out) + strtoul(cl + 16, NULL, 10);
}

static void stop(struct harness *h)
{
	if (h->h2)
		nghttp2_session_del(h->h2);
	close(h->fd);
	sbx_http_server_close(h->s, NULL, NULL);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h->loop), 0);
}

/* What the server sent, without its Date line. */
static const char *sent(struct harness *h)
{
	char *date = strstr(h->out, "Date: ");

	if (date) {
		char *eol = strstr(date, "\r\n");

		memmove(date, eol + 2, strlen(eol + 2) + 1);
		h->out_len = strlen(h->out);
	}
	return h->out;
}

/* ---- HTTP/1.1 ---------------------------------------------------------------- */

static void h1_answer_exact_bytes(void **state)
{
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	start(&h, &o);
	put_str(&h, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	run_until(&h, got_answer);
	assert_string_equal(sent(&h), "HTTP/1.1 200 OK\r\nServer: t\r\n"
				      "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
	stop(&h);
}

static bool two_answers(struct harness *h)
{
	const char *second = strstr(h->out, "hello");

	return second && strstr(second + 5, "hello");
}

static void h1_pipelined_answers_in_order(void **state)
{
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	start(&h, &o);
	put_str(&h, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
		    "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	run_until(&h, two_answers);
	assert_non_null(strstr(h.out, "404 Not Found"));
	assert_true(strstr(h.out, "200 OK") < strstr(h.out, "404 Not Found"));
	assert_true(strstr(h.out, "404 Not Found") < strrchr(h.out, 'h'));
	assert_false(h.eof);
	stop(&h);
}

/* Headers are found by whole name in any case: empty values (in the
 * middle and last), a name that another one starts with, and a name that
 * arrives in two reads. */
static void h1_headers_found_by_whole_name(void **state)
{
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	start(&h, &o);
	put_str(&h, "GET /lookup HTTP/1.1\r\nHo");
	for (int i = 0; i < 10; i++)
		uv_run(&h.loop, UV_RUN_NOWAIT);
	put_str(&h, "st: t\r\nX-Empty:\r\nx-nextt: w\r\nx-next: v\r\nX-Last:\r\n\r\n");
	run_until(&h, got_answer);
	assert_non_null(strstr(
		h.out, "\r\n\r\nX-Empty=[] X-Next=[v] X-Nex=- X-Last=[] host=[t] lengths=5/5"));
	stop(&h);
}

static void expect_400_and_close(const char *request)
{
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	start(&h, &o);
	put_str(&h, request);
	run_until(&h, NULL);
	assert_true(h.eof);
	assert_memory_equal(h.out, "HTTP/1.1 400 Bad Request\r\n", 26);
	assert_non_null(strstr(h.out, "Connection: close\r\n"));
	assert_int_equal(h.handled, 0);
	stop(&h);
}

static void h1_whitespace_before_colon_is_400(void **state)
{
	/* Was accepted: "Transfer-Encoding " became some other header. */
	expect_400_and_close("POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n"
			     "Content-Length: 3\r\n\r\nabc");
}

static void h1_smuggling_framings_are_400(void **state)
{
	expect_400_and_close("POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
			     "Content-Length: 3\r\n\r\n0\r\n\r\n");
	expect_400_and_close("POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
			     "Content-Length: 4\r\n\r\nabcd");
	expect_400_and_close("POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
	expect_400_and_close("POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n");
	expect_400_and_close("GET /hello HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n");
}

static void h1_authorize_runs_before_the_body(void **state)
{
	struct sbx_http_server_opts o = { .authorize = refuse_unless_key };
	struct harness h;

	start(&h, &o);
	/* The body is announced and never sent: the answer cannot wait for it. */
	put_str(&h, "POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
	run_until(&h, got_answer);
	assert_memory_equal(h.out, "HTTP/1.1 401 Unauthorized\r\n", 27);
	assert_non_null(strstr(h.out, "Connection: close\r\n"));
	assert_int_equal(h.handled, 0);
	assert_int_equal(h.s->body_bytes_buffered, 0);
	stop(&h);
}

static void h1_expect_continue_only_once_accepted(void **state)
{
	struct sbx_http_server_opts o = { .authorize = refuse_unless_key };
	struct harness h;

	start(&h, &o);
	put_str(&h, "POST /hello HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
		    "Content-Length: 3\r\n\r\n");
	run_until(&h, got_answer);
	assert_null(strstr(h.out, "100 Continue"));
	assert_memory_equal(h.out, "HTTP/1.1 401", 12);
	stop(&h);
}

static void h1_header_limit_is_431(void **state)
{
	struct sbx_http_server_opts o = { .max_header_bytes = 1024 };
	char request[4096];
	struct harness h;

	snprintf(request, sizeof(request), "GET /hello HTTP/1.1\r\nX-Big: %02000d\r\n\r\n", 0);
	start(&h, &o);
	put_str(&h, request);
	run_until(&h, NULL);
	assert_memory_equal(h.out, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46);
	stop(&h);
}

static void h1_slow_head_is_408(void **state)
{
	struct sbx_http_server_opts o = { .header_timeout_ms = 30 };
	struct harness h;

	start(&h, &o);
	put_str(&h, "GET /hello HTTP/1.1\r\nHo");
	run_until(&h, NULL);
	assert_memory_equal(h.out, "HTTP/1.1 408 Request Timeout\r\n", 30);
	stop(&h);
}

static void h1_graceful_stop_finishes_the_answer(void **state)
{
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	start(&h, &o);
	put_str(&h, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
	while (!h.held)
		uv_run(&h.loop, UV_RUN_ONCE);
	sbx_http_server_close(h.s, NULL, NULL);
	sbx_http_respond(h.held, 200, "text/plain", "late", 4);
	run_until(&h, NULL);
	assert_string_equal(sent(&h), "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Type: text/plain\r\n"
				      "Content-Length: 4\r\nConnection: close\r\n\r\nlate");
	assert_true(h.eof);
	close(h.fd);
	uv_run(&h.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h.loop), 0);
}

static void h1_health_slots_serve_health_routes_only(void **state)
{
	struct sbx_http_server_opts o = { .max_connections = 1 };
	struct harness h;
	int extra[2];

	start(&h, &o);
	/* A second connection takes a health slot: /hello is not a health route. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, extra), 0);
	assert_int_equal(http_server_adopt(h.s, extra[0], NULL), 0);
	assert_int_equal(write(extra[1], "GET /hello HTTP/1.1\r\n\r\n", 23), 23);
	close(h.fd);
	h.fd = extra[1];
	fcntl(h.fd, F_SETFL, O_NONBLOCK);
	run_until(&h, got_answer);
	assert_memory_equal(h.out, "HTTP/1.1 503", 12);
	assert_non_null(strstr(h.out, "health endpoints only"));
	stop(&h);
}

/* ---- HTTP/2, through an nghttp2 client ------------------------------------------- */

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		       void *user)
{
	struct harness *h = user;

	if (namelen == 7 && !memcmp(name, ":status", 7) && f->hd.stream_id / 2 < 16)
		h->h2_status[f->hd.stream_id / 2] = atoi((const char *)value);
	return 0;
}

static int c_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct harness *h = user;

	if (f->hd.type == NGHTTP2_GOAWAY)
		h->h2_goaway = true;
	return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user)
{
	struct harness *h = user;

	if (code && id / 2 < 16)
		h->h2_reset[id / 2] = true;
	return 0;
}

static void h2_start(struct harness *h, struct sbx_http_server_opts *o)
{
	nghttp2_session_callbacks *cb;

	start(h, o);
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
	assert_int_equal(nghttp2_session_client_new(&h->h2, cb, h), 0);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(h->h2, NGHTTP2_FLAG_NONE, NULL, 0);
}

static void h2_flush(struct harness *h)
{
	const uint8_t *data;
	ssize_t n;

	while ((n = nghttp2_session_mem_send(h->h2, &data)) > 0)
		put(h, data, (size_t)n);
}

#define NV(N, V)                                                                               \
	{                                                                                      \
		(uint8_t *)(N), (uint8_t *)(V), sizeof(N) - 1, strlen(V), NGHTTP2_NV_FLAG_NONE \
	}

static int32_t h2_get(struct harness *h, const char *path, const nghttp2_nv *extra, size_t n_extra)
{
	nghttp2_nv nva[8] = { NV(":method", "GET"), NV(":scheme", "http"), NV(":path", path),
			      NV(":authority", "t") };

	if (n_extra)
		memcpy(nva + 4, extra, n_extra * sizeof(*nva));
	return nghttp2_submit_request(h->h2, NULL, nva, 4 + n_extra, NULL, NULL);
}

static int32_t want_id;

static bool got_status(struct harness *h)
{
	return h->h2_status[want_id / 2] != 0 || h->h2_reset[want_id / 2];
}

static void h2_oversized_headers_get_431_on_their_stream(void **state)
{
	/* Was: the stream reset with INTERNAL_ERROR. */
	struct sbx_http_server_opts o = { .max_header_bytes = 1024 };
	static char big[2048];
	struct harness h;

	memset(big, 'a', sizeof(big) - 1);
	nghttp2_nv extra[] = { NV("x-big", big) };
	h2_start(&h, &o);
	want_id = h2_get(&h, "/hello", extra, 1);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 431);
	want_id = h2_get(&h, "/hello", NULL, 0);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 200);
	stop(&h);
}

static void h2_connect_without_path_keeps_the_connection(void **state)
{
	/* Was: the whole connection closed. */
	struct sbx_http_server_opts o = { 0 };
	nghttp2_nv nva[] = { NV(":method", "CONNECT"), NV(":authority", "example.test:443") };
	struct harness h;

	h2_start(&h, &o);
	want_id = nghttp2_submit_request(h.h2, NULL, nva, 2, NULL, NULL);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 405);
	want_id = h2_get(&h, "/hello", NULL, 0);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 200);
	assert_false(h.eof);
	stop(&h);
}

static void h2_websocket_route_without_extended_connect_is_400(void **state)
{
	/* Was a heap use-after-free (the request freed under nghttp2). */
	struct sbx_http_server_opts o = { 0 };
	nghttp2_nv extra[] = { NV("sec-websocket-version", "13") };
	struct harness h;

	h2_start(&h, &o);
	want_id = h2_get(&h, "/ws", extra, 1);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 400);
	stop(&h);
}

static bool connect_enabled(struct harness *h)
{
	return nghttp2_session_get_remote_settings(h->h2, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL);
}

static void h2_extended_connect_websocket_is_200(void **state)
{
	struct sbx_http_server_opts o = { 0 };
	nghttp2_nv nva[] = { NV(":method", "CONNECT"), NV(":protocol", "websocket"),
			     NV(":scheme", "http"),    NV(":path", "/ws"),
			     NV(":authority", "t"),    NV("sec-websocket-version", "13") };
	struct harness h;

	h2_start(&h, &o);
	/* The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) first. */
	h2_flush(&h);
	run_until(&h, connect_enabled);
	want_id = nghttp2_submit_request(h.h2, NULL, nva, 6, NULL, NULL);
	h2_flush(&h);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 200);
	assert_false(h.h2_reset[want_id / 2]);
	stop(&h);
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *user)
{
	size_t *left = src->ptr, n = len < *left ? len : *left;

	memset(buf, 'x', n);
	*left -= n;
	if (!*left)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static void h2_first_read_filling_the_buffer_keeps_reading(void **state)
{
	/* Was: a first read that filled the read buffer (the preface, a
	 * request and a window's worth of body in one go) left the
	 * connection paused for good, and the request never answered. */
	struct sbx_http_server_opts o = { 0 };
	nghttp2_nv nva[] = { NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/hello"),
			     NV(":authority", "t") };
	size_t left = 65535;
	nghttp2_data_provider body = { .source.ptr = &left, .read_callback = body_read };
	struct harness h;

	h2_start(&h, &o);
	want_id = nghttp2_submit_request(h.h2, NULL, nva, 4, &body, NULL);
	h2_flush(&h);
	assert_int_equal(left, 0);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 200);
	stop(&h);
}

static bool got_goaway(struct harness *h)
{
	return h->h2_goaway;
}

static void h2_idle_connection_gets_goaway_and_closes(void **state)
{
	/* Was: idle HTTP/2 connections never timed out. */
	struct sbx_http_server_opts o = { .idle_timeout_ms = 30 };
	struct harness h;

	h2_start(&h, &o);
	h2_flush(&h);
	run_until(&h, NULL);
	assert_true(h.h2_goaway);
	assert_true(h.eof);
	stop(&h);
}

static void h2_graceful_stop_sends_goaway_and_finishes_streams(void **state)
{
	/* Was: in-flight streams cut without an answer or a GOAWAY. */
	struct sbx_http_server_opts o = { 0 };
	struct harness h;

	h2_start(&h, &o);
	want_id = h2_get(&h, "/held", NULL, 0);
	h2_flush(&h);
	while (!h.held)
		uv_run(&h.loop, UV_RUN_ONCE);
	sbx_http_server_close(h.s, NULL, NULL);
	run_until(&h, got_goaway);
	assert_true(h.h2_goaway);
	sbx_http_respond(h.held, 200, "text/plain", "late", 4);
	run_until(&h, got_status);
	assert_int_equal(h.h2_status[want_id / 2], 200);
	run_until(&h, NULL);
	assert_true(h.eof);
	nghttp2_session_del(h.h2);
	close(h.fd);
	uv_run(&h.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h.loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(h1_answer_exact_bytes),
		cmocka_unit_test(h1_pipelined_answers_in_order),
		cmocka_unit_test(h1_headers_found_by_whole_name),
		cmocka_unit_test(h1_whitespace_before_colon_is_400),
		cmocka_unit_test(h1_smuggling_framings_are_400),
		cmocka_unit_test(h1_authorize_runs_before_the_body),
		cmocka_unit_test(h1_expect_continue_only_once_accepted),
		cmocka_unit_test(h1_header_limit_is_431),
		cmocka_unit_test(h1_slow_head_is_408),
		cmocka_unit_test(h1_graceful_stop_finishes_the_answer),
		cmocka_unit_test(h1_health_slots_serve_health_routes_only),
		cmocka_unit_test(h2_oversized_headers_get_431_on_their_stream),
		cmocka_unit_test(h2_connect_without_path_keeps_the_connection),
		cmocka_unit_test(h2_websocket_route_without_extended_connect_is_400),
		cmocka_unit_test(h2_extended_connect_websocket_is_200),
		cmocka_unit_test(h2_first_read_filling_the_buffer_keeps_reading),
		cmocka_unit_test(h2_idle_connection_gets_goaway_and_closes),
		cmocka_unit_test(h2_graceful_stop_sends_goaway_and_finishes_streams),
	};

	signal(SIGPIPE,
	       SIG_IGN); /* as every program does: a closed peer is an error, not a death */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
