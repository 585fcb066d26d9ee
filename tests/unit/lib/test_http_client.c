/* The client side against a scripted backend on 127.0.0.1: the test reads
 * the exact bytes the client sends and writes the exact bytes it answers,
 * one behaviour per test (framing, reuse, expiry, retry, errors, upgrade,
 * backpressure). */
#define _GNU_SOURCE
#include "unit.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

struct t {
	uv_loop_t loop;
	struct sbx_http_pool *p;
	int lfd;
	char addr[32];
	/* What the exchange heard. */
	int status, heads, err;
	bool done, pause_at_head;
	char fields[512];
	struct sbx_buf body;
	struct sbx_http_client *x;
};

static void on_head(struct sbx_http_client *x, int status, const struct sbx_http_field *f, size_t n,
		    void *arg)
{
	struct t *t = arg;

	t->status = status;
	t->heads++;
	t->fields[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(f[i].name_len, strlen(f[i].name));
		strcat(t->fields, f[i].name);
		strcat(t->fields, "=");
		strcat(t->fields, f[i].value);
		strcat(t->fields, ";");
	}
	if (t->pause_at_head)
		sbx_http_client_pause(x);
}

static void on_data(struct sbx_http_client *x, const char *data, size_t len, void *arg)
{
	struct t *t = arg;

	assert_int_equal(sbx_buf_append(&t->body, data, len), 0);
}

static void on_done(struct sbx_http_client *x, int err, void *arg)
{
	struct t *t = arg;

	t->done = true;
	t->err = err;
	t->x = NULL;
}

static const struct sbx_http_client_callbacks cb = {
	.head = on_head,
	.data = on_data,
	.done = on_done,
};

static void setup(struct t *t, const struct sbx_http_pool_opts *o)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	memset(t, 0, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	assert_int_equal(sbx_http_pool_new(&t->loop, o, &t->p), 0);
	sbx_buf_init(&t->body, 64u << 20);
	t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_int_equal(bind(t->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(t->lfd, 16), 0);
	getsockname(t->lfd, (struct sockaddr *)&sa, &len);
	snprintf(t->addr, sizeof(t->addr), "127.0.0.1:%u", ntohs(sa.sin_port));
}

static void teardown(struct t *t)
{
	if (t->x)
		sbx_http_client_abort(t->x);
	sbx_http_pool_free(t->p);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	close(t->lfd);
	sbx_buf_release(&t->body);
}

/* Runs the loop until cond holds (or 3 s). */
static void spin(struct t *t, bool (*cond)(struct t *, int), int fd)
{
	uint64_t deadline = uv_hrtime() + 3000000000ull;
	bool met;

	while (!(met = cond(t, fd)) && uv_hrtime() < deadline) {
		uv_run(&t->loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	assert_true(met);
}

static int accepted;

static bool can_accept(struct t *t, int fd)
{
	(void)fd;
	accepted = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK);
	return accepted >= 0;
}

static int be_accept(struct t *t)
{
	spin(t, can_accept, -1);
	return accepted;
}

static bool no_accept(struct t *t)
{
	int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK);

	if (fd >= 0)
		close(fd);
	return fd < 0;
}

static char got[1 << 16];
static size_t got_len;
static const char *want_end;

static bool read_to_end(struct t *t, int fd)
{
	ssize_t n = read(fd, got + got_len, sizeof(got) - got_len - 1);

	(void)t;
	if (n > 0) {
		got_len += (size_t)n;
		got[got_len] = '\0';
	}
	return got_len >= strlen(want_end) && !strcmp(got + got_len - strlen(want_end), want_end);
}

/* What the client sent, up to and including 'end'. */
static const char *be_read(struct t *t, int fd, const char *end)
{
	got_len = 0;
	got[0] = '\0';
	want_end = end;
	spin(t, read_to_end, fd);
	return got;
}

static void be_write(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static bool is_done(struct t *t, int fd)
{
	(void)fd;
	return t->done;
}

static bool saw_eof(struct t *t, int fd)
{
	char b;

	(void)t;
	return read(fd, &b, 1) == 0;
}

static bool has_body(struct t *t, int len);

static bool got_head(struct t *t, int fd)
{
	(void)fd;
	return t->heads > 0;
}

static void get(struct t *t, const char *target)
{
	struct sbx_http_client_request r = {
		.backend = t->addr, .method = "GET", .target = target, .host = "h"
	};

	t->done = false;
	t->heads = 0;
	sbx_buf_reset(&t->body);
	assert_int_equal(sbx_http_client_start(t->p, &r, &cb, t, &t->x), 0);
}

/* ---- requests and answers ------------------------------------------------------------ */

static void client_request_and_answer_exact_bytes(void **state)
{
	/* A name with its length given, and names the client measures. */
	struct sbx_http_field h[] = { { "X-A", "1", 3 },
				      { "Connection", "close", 0 },
				      { "Content-Length", "9", 0 },
				      { "Host", "evil", 4 } };
	struct sbx_http_client_request r = { .backend = NULL,
					     .method = "GET",
					     .target = "/a?b",
					     .host = "h",
					     .headers = h,
					     .n_headers = 4,
					     .lines = "X-C: 3\r\nX-D: 4\r\n",
					     .lines_len = 16 };
	struct t t;
	int fd;

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	fd = be_accept(&t);
	/* The framing is the client's: the caller's Connection, Content-Length
	 * and Host are not passed on. Its own lines follow the fields. */
	assert_string_equal(be_read(&t, fd, "\r\n\r\n"),
			    "GET /a?b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-C: 3\r\nX-D: 4\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-B: 2\r\n\r\nhello");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.status, 200);
	assert_string_equal(t.fields, "Content-Length=5;X-B=2;");
	assert_string_equal(t.body.data, "hello");
	close(fd);
	teardown(&t);
}

static void client_chunked_upload_exact_bytes(void **state)
{
	struct sbx_http_client_request r = {
		.method = "POST", .target = "/up", .host = "h", .content_length = -1
	};
	struct t t;
	int fd;

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	/* Written before the connection is up: kept and sent after the head. */
	assert_int_equal(sbx_http_client_write(t.x, "abc", 3), 0);
	fd = be_accept(&t);
	assert_int_equal(sbx_http_client_write(t.x, "defghijklmnopqrs", 16), 0);
	assert_int_equal(sbx_http_client_end(t.x), 0);
	assert_string_equal(be_read(&t, fd, "0\r\n\r\n"),
			    "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "3\r\nabc\r\n10\r\ndefghijklmnopqrs\r\n0\r\n\r\n");
	be_write(fd, "HTTP/1.1 204 No Content\r\n\r\n");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.status, 204);
	close(fd);
	teardown(&t);
}

static void client_sized_upload_refuses_more_than_declared(void **state)
{
	struct sbx_http_client_request r = {
		.method = "PUT", .target = "/f", .host = "h", .content_length = 4
	};
	struct t t;
	int fd;

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	assert_int_equal(sbx_http_client_end(t.x), -EINVAL); /* 0 of 4 */
	assert_int_equal(sbx_http_client_write(t.x, "abcde", 5), -EINVAL);
	assert_int_equal(sbx_http_client_write(t.x, "abcd", 4), 0);
	assert_int_equal(sbx_http_client_end(t.x), 0);
	fd = be_accept(&t);
	assert_string_equal(be_read(&t, fd, "abcd"),
			    "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd");
	be_write(fd, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
	spin(&t, is_done, fd);
	assert_int_equal(t.status, 201);
	close(fd);
	teardown(&t);
}

static void client_request_splitting_is_refused(void **state)
{
	struct sbx_http_field bad_value[] = { { "X-A", "1\r\nX-Injected: 1", 0 } };
	struct sbx_http_field bad_name[] = { { "X A", "1", 0 } };
	struct sbx_http_client_request r = { .method = "GET", .target = "/", .host = "h" };
	struct sbx_http_client *x;
	struct t t;

	setup(&t, NULL);
	r.backend = t.addr;
	r.headers = bad_value;
	r.n_headers = 1;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &x), -EINVAL);
	r.headers = bad_name;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &x), -EINVAL);
	r.n_headers = 0;
	r.target = "/ HTTP/1.1\r\nX: y";
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &x), -EINVAL);
	r.target = "/";
	r.host = "h\r\nX: y";
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &x), -EINVAL);
	r.host = "h";
	r.backend = "not-an-address";
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &x), -EINVAL);
	assert_true(no_accept(&t));
	teardown(&t);
}

static void expect_answer_error(const char *answer, int err, size_t max_header_bytes)
{
	struct sbx_http_pool_opts o = { .max_header_bytes = max_header_bytes };
	struct t t;
	int fd;

	setup(&t, &o);
	get(&t, "/");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, answer);
	spin(&t, is_done, fd);
	assert_int_equal(t.err, err);
	assert_int_equal(t.heads, 0);
	close(fd);
	teardown(&t);
}

static void client_ambiguous_answer_framing_is_eproto(void **state)
{
	expect_answer_error(
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
		"0\r\n\r\n",
		-EPROTO, 0);
	expect_answer_error("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
			    -EPROTO, 0);
	expect_answer_error("HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n", -EPROTO, 0);
	expect_answer_error("SSH-2.0-OpenSSH\r\n\r\n", -EPROTO, 0);
	/* A switch the request did not ask for. */
	expect_answer_error("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", -EPROTO, 0);
}

static void client_oversized_answer_head_is_e2big(void **state)
{
	char answer[2048];

	snprintf(answer, sizeof(answer), "HTTP/1.1 200 OK\r\nX-Big: %01000d\r\n\r\n", 0);
	expect_answer_error(answer, -E2BIG, 512);
}

static void client_interim_answers_are_skipped(void **state)
{
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
		     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.heads, 1);
	assert_int_equal(t.status, 200);
	assert_string_equal(t.body.data, "ok");
	close(fd);
	teardown(&t);
}

static void client_close_delimited_answer_ends_at_eof(void **state)
{
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
	close(fd);
	spin(&t, is_done, -1);
	assert_int_equal(t.err, 0);
	assert_string_equal(t.body.data, "all of it");
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.idle, 0);
	teardown(&t);
}

static void client_cut_answer_is_econnreset(void **state)
{
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
	close(fd);
	spin(&t, is_done, -1);
	assert_int_equal(t.err, -ECONNRESET);
	assert_int_equal(t.status, 200);
	teardown(&t);
}

static void client_answer_to_head_has_no_body(void **state)
{
	struct sbx_http_client_request r = { .method = "HEAD", .target = "/", .host = "h" };
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.body.len, 0);
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.idle, 1);
	close(fd);
	teardown(&t);
}

/* ---- errors and timeouts --------------------------------------------------------------- */

static void client_refused_connect_is_econnrefused(void **state)
{
	struct t t;

	setup(&t, NULL);
	close(t.lfd);
	t.lfd = -1;
	get(&t, "/");
	spin(&t, is_done, -1);
	assert_int_equal(t.err, -ECONNREFUSED);
	teardown(&t);
}

static void client_silent_backend_is_etimedout(void **state)
{
	struct sbx_http_pool_opts o = { .read_timeout_ms = 50 };
	struct t t;
	int fd;

	setup(&t, &o);
	get(&t, "/");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, -ETIMEDOUT);
	spin(&t, saw_eof, fd); /* the connection is not kept */
	close(fd);
	teardown(&t);
}

/* ---- the pool ------------------------------------------------------------------------- */

static void answer(struct t *t, int fd)
{
	be_read(t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	spin(t, is_done, fd);
	assert_int_equal(t->err, 0);
}

static void on_done_free_pool(struct sbx_http_client *x, int err, void *arg)
{
	struct t *t = arg;

	on_done(x, err, arg);
	if (t->p) {
		struct sbx_http_pool *p = t->p;

		t->p = NULL;
		sbx_http_pool_free(p); /* from inside its own exchange's callback */
	}
}

/* Freeing the pool ends the exchanges in flight (-ECANCELED), also when the
 * free comes from an exchange's own done callback; the pool and the kept
 * exchange states go once the last exchange and connection have (the
 * sanitizer run checks that nothing is used after it or leaks). */
static void client_pool_free_cancels_exchanges_in_flight(void **state)
{
	static const struct sbx_http_client_callbacks free_cb = { .head = on_head,
								  .data = on_data,
								  .done = on_done_free_pool };
	struct sbx_http_client_request r = { .method = "GET", .target = "/" };
	struct sbx_http_client *second = NULL;
	struct t t, u = { 0 };
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd); /* one exchange done: its state is kept for reuse */
	get(&t, "/");
	be_read(&t, fd, "\r\n\r\n");
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &u, &second), 0);
	sbx_http_pool_free(t.p);
	t.p = NULL;
	assert_true(t.done && u.done);
	assert_int_equal(t.err, -ECANCELED);
	assert_int_equal(u.err, -ECANCELED);
	uv_run(&t.loop, UV_RUN_DEFAULT);
	close(fd);
	teardown(&t);

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &free_cb, &t, &t.x), 0);
	fd = be_accept(&t);
	u.done = false;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &u, &second), 0);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_null(t.p);
	assert_true(u.done);
	assert_int_equal(u.err, -ECANCELED);
	close(fd);
	teardown(&t);
}

static void client_pool_reuses_an_idle_connection(void **state)
{
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/1");
	fd = be_accept(&t);
	answer(&t, fd);
	get(&t, "/2");
	assert_true(sbx_http_client_reused(t.x));
	answer(&t, fd);
	assert_true(no_accept(&t));
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.connects, 1);
	assert_int_equal(st.reuses, 1);
	assert_int_equal(st.idle, 1);
	assert_int_equal(st.active, 0);
	close(fd);
	teardown(&t);
}

static bool expired(struct t *t, int fd)
{
	struct sbx_http_pool_stats st;

	(void)fd;
	sbx_http_pool_stats(t->p, &st);
	return st.expired == 1 && st.idle == 0;
}

static void client_pool_closes_idle_connections_after_the_timeout(void **state)
{
	struct sbx_http_pool_opts o = { .idle_timeout_ms = 30 };
	struct t t;
	int fd;

	setup(&t, &o);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd);
	spin(&t, expired, fd);
	spin(&t, saw_eof, fd);
	close(fd);
	teardown(&t);
}

static bool dropped(struct t *t, int fd)
{
	struct sbx_http_pool_stats st;

	(void)fd;
	sbx_http_pool_stats(t->p, &st);
	return st.dropped == 1 && st.idle == 0;
}

static void client_pool_notices_a_backend_closing_an_idle_connection(void **state)
{
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd);
	close(fd);
	spin(&t, dropped, -1);
	get(&t, "/");
	assert_false(sbx_http_client_reused(t.x));
	fd = be_accept(&t);
	answer(&t, fd);
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.connects, 2);
	close(fd);
	teardown(&t);
}

static void client_pool_checks_a_connection_when_taking_it(void **state)
{
	struct sbx_http_client_request r = {
		.method = "PUT", .target = "/f", .host = "h", .content_length = 4
	};
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd);
	/* Closed, and taken before the loop has seen it, by an exchange with
	 * a body (which could not be sent again). */
	close(fd);
	poll(NULL, 0, 20);
	r.backend = t.addr;
	t.done = false;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	assert_false(sbx_http_client_reused(t.x));
	assert_int_equal(sbx_http_client_write(t.x, "abcd", 4), 0);
	assert_int_equal(sbx_http_client_end(t.x), 0);
	fd = be_accept(&t);
	assert_string_equal(be_read(&t, fd, "abcd"),
			    "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd");
	be_write(fd, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
	spin(&t, is_done, fd);
	assert_int_equal(t.status, 201);
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.retries, 0);
	close(fd);
	teardown(&t);
}

static void client_without_a_body_on_a_closed_idle_connection_is_retried(void **state)
{
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd);
	/* Closed, and taken before the loop has seen it: no check, the
	 * request goes on the closed connection and again on a new one. */
	close(fd);
	poll(NULL, 0, 20);
	get(&t, "/again");
	assert_true(sbx_http_client_reused(t.x));
	fd = be_accept(&t);
	assert_string_equal(be_read(&t, fd, "\r\n\r\n"), "GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.status, 200);
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.retries, 1);
	assert_int_equal(st.dropped, 0);
	close(fd);
	teardown(&t);
}

static void client_retries_once_when_a_reused_connection_closes_unanswered(void **state)
{
	struct sbx_http_pool_stats st;
	struct t t;
	int fd;

	setup(&t, NULL);
	get(&t, "/");
	fd = be_accept(&t);
	answer(&t, fd);
	get(&t, "/again");
	assert_true(sbx_http_client_reused(t.x));
	be_read(&t, fd, "\r\n\r\n");
	close(fd); /* as a backend's keep-alive timeout would, in the same instant */
	fd = be_accept(&t);
	assert_string_equal(be_read(&t, fd, "\r\n\r\n"), "GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	spin(&t, is_done, fd);
	assert_int_equal(t.err, 0);
	sbx_http_pool_stats(t.p, &st);
	assert_int_equal(st.retries, 1);
	close(fd);
	teardown(&t);
}

static void client_pool_keeps_at_most_max_idle_per_backend(void **state)
{
	struct sbx_http_pool_opts o = { .max_idle_per_backend = 1 };
	struct sbx_http_client_request r = { .method = "GET", .target = "/", .host = "h" };
	struct sbx_http_pool_stats st;
	struct t a, *t = &a;
	struct t other;
	int fd1, fd2;

	setup(t, &o);
	memset(&other, 0, sizeof(other));
	sbx_buf_init(&other.body, 1024);
	r.backend = t->addr;
	assert_int_equal(sbx_http_client_start(t->p, &r, &cb, t, &t->x), 0);
	assert_int_equal(sbx_http_client_start(t->p, &r, &cb, &other, &other.x), 0);
	fd1 = be_accept(t);
	fd2 = be_accept(t);
	be_read(t, fd1, "\r\n\r\n");
	be_read(t, fd2, "\r\n\r\n");
	be_write(fd1, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	be_write(fd2, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	spin(t, is_done, -1);
	spin(&other, is_done, -1);
	sbx_http_pool_stats(t->p, &st);
	assert_int_equal(st.idle, 1);
	assert_int_equal(st.evicted, 1);
	sbx_buf_release(&other.body);
	close(fd1);
	close(fd2);
	teardown(t);
}

/* ---- upgrade and backpressure ------------------------------------------------------------ */

static void client_upgrade_hands_over_the_connection(void **state)
{
	struct sbx_http_client_request r = {
		.method = "GET", .target = "/ws", .host = "h", .upgrade = "websocket"
	};
	struct t t;
	int fd;

	setup(&t, NULL);
	r.backend = t.addr;
	assert_int_equal(sbx_http_client_start(t.p, &r, &cb, &t, &t.x), 0);
	fd = be_accept(&t);
	assert_string_equal(be_read(&t, fd, "\r\n\r\n"),
			    "GET /ws HTTP/1.1\r\nHost: h\r\n"
			    "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
	/* The other protocol's first bytes in the same packet as the 101. */
	be_write(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		     "Connection: Upgrade\r\n\r\nraw-from-backend");
	spin(&t, has_body, 16);
	assert_int_equal(t.status, 101);
	assert_string_equal(t.body.data, "raw-from-backend");
	assert_int_equal(sbx_http_client_write(t.x, "raw-to-backend", 14), 0);
	assert_string_equal(be_read(&t, fd, "raw-to-backend"), "raw-to-backend");
	close(fd);
	spin(&t, is_done, -1);
	assert_int_equal(t.err, 0);
	teardown(&t);
}

/* Starts a WebSocket upgrade with 'c' and reads its head at the backend:
 * the backend's end of the connection. */
static int start_upgrade(struct t *t, const struct sbx_http_client_callbacks *c)
{
	struct sbx_http_client_request r = { .backend = t->addr,
					     .method = "GET",
					     .target = "/ws",
					     .host = "h",
					     .upgrade = "websocket" };
	int fd;

	assert_int_equal(sbx_http_client_start(t->p, &r, c, t, &t->x), 0);
	fd = be_accept(t);
	be_read(t, fd, "\r\n\r\n");
	return fd;
}

static void client_101_without_upgrade_is_eproto(void **state)
{
	struct t t;
	int fd;

	setup(&t, NULL);
	fd = start_upgrade(&t, &cb);
	/* A switch that does not say to what: not a switch. */
	be_write(fd, "HTTP/1.1 101 Switching Protocols\r\n\r\nraw");
	spin(&t, is_done, -1);
	assert_int_equal(t.err, -EPROTO);
	assert_int_equal(t.heads, 0);
	close(fd);
	teardown(&t);
}

/* What the caller writes from inside 'head' on a 101 is the new
 * protocol's: raw bytes, not a request body (which, with no body declared,
 * would be refused). */
static void on_head_write(struct sbx_http_client *x, int status, const struct sbx_http_field *f,
			  size_t n, void *arg)
{
	on_head(x, status, f, n, arg);
	assert_int_equal(sbx_http_client_write(x, "hello-from-head", 15), 0);
}

static void client_write_inside_the_101_head_goes_raw(void **state)
{
	static const struct sbx_http_client_callbacks wcb = {
		.head = on_head_write,
		.data = on_data,
		.done = on_done,
	};
	struct t t;
	int fd;

	setup(&t, NULL);
	fd = start_upgrade(&t, &wcb);
	be_write(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		     "Connection: Upgrade\r\n\r\n");
	assert_string_equal(be_read(&t, fd, "hello-from-head"), "hello-from-head");
	assert_int_equal(t.status, 101);
	assert_false(t.done);
	close(fd);
	spin(&t, is_done, -1);
	assert_int_equal(t.err, 0);
	teardown(&t);
}

static bool has_body(struct t *t, int len)
{
	return t->body.len >= (size_t)len;
}

static size_t be_pump(int fd, size_t *left)
{
	static char block[65536];
	size_t sent = 0;
	ssize_t n;

	memset(block, 'b', sizeof(block));
	while (*left && (n = write(fd, block, *left < sizeof(block) ? *left : sizeof(block))) > 0) {
		*left -= (size_t)n;
		sent += (size_t)n;
	}
	return sent;
}

static void client_pause_stops_reading_the_answer(void **state)
{
	const size_t total = 16u << 20;
	size_t left = total, held;
	uint64_t until;
	struct t t;
	int fd;

	setup(&t, NULL);
	t.pause_at_head = true;
	get(&t, "/big");
	fd = be_accept(&t);
	be_read(&t, fd, "\r\n\r\n");
	be_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n");
	spin(&t, got_head, -1);
	/* Paused at the head: the backend fills the sockets' buffers and no
	 * more; nothing reaches the caller. */
	until = uv_hrtime() + 200000000ull;
	while (uv_hrtime() < until) {
		be_pump(fd, &left);
		uv_run(&t.loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	assert_int_equal(t.heads, 1);
	held = t.body.len;
	assert_true(left > 0);
	assert_true(held < total);
	uv_run(&t.loop, UV_RUN_NOWAIT);
	assert_int_equal(t.body.len, held);
	sbx_http_client_resume(t.x);
	until = uv_hrtime() + 10000000000ull;
	while (!t.done && uv_hrtime() < until) {
		be_pump(fd, &left);
		uv_run(&t.loop, UV_RUN_NOWAIT);
	}
	assert_int_equal(t.err, 0);
	assert_int_equal(t.body.len, total);
	close(fd);
	teardown(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(client_request_and_answer_exact_bytes),
		cmocka_unit_test(client_chunked_upload_exact_bytes),
		cmocka_unit_test(client_sized_upload_refuses_more_than_declared),
		cmocka_unit_test(client_request_splitting_is_refused),
		cmocka_unit_test(client_ambiguous_answer_framing_is_eproto),
		cmocka_unit_test(client_oversized_answer_head_is_e2big),
		cmocka_unit_test(client_interim_answers_are_skipped),
		cmocka_unit_test(client_close_delimited_answer_ends_at_eof),
		cmocka_unit_test(client_cut_answer_is_econnreset),
		cmocka_unit_test(client_answer_to_head_has_no_body),
		cmocka_unit_test(client_refused_connect_is_econnrefused),
		cmocka_unit_test(client_silent_backend_is_etimedout),
		cmocka_unit_test(client_pool_free_cancels_exchanges_in_flight),
		cmocka_unit_test(client_pool_reuses_an_idle_connection),
		cmocka_unit_test(client_pool_closes_idle_connections_after_the_timeout),
		cmocka_unit_test(client_pool_notices_a_backend_closing_an_idle_connection),
		cmocka_unit_test(client_pool_checks_a_connection_when_taking_it),
		cmocka_unit_test(client_without_a_body_on_a_closed_idle_connection_is_retried),
		cmocka_unit_test(client_retries_once_when_a_reused_connection_closes_unanswered),
		cmocka_unit_test(client_pool_keeps_at_most_max_idle_per_backend),
		cmocka_unit_test(client_upgrade_hands_over_the_connection),
		cmocka_unit_test(client_101_without_upgrade_is_eproto),
		cmocka_unit_test(client_write_inside_the_101_head_goes_raw),
		cmocka_unit_test(client_pause_stops_reading_the_answer),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
