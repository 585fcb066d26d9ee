/* sbx-httptool: an HTTP server on libsbx's server core with routes that
 * exercise its features, for tests/integration/test_http_server.py.
 *
 *   GET  /hello                      "hello"
 *   POST /echo                       the body back, same Content-Type
 *   GET  /items/{id}/parts/{part}    the captured parameters as JSON
 *   GET  /query?q=...                the decoded parameter
 *   GET  /stream?n=N&size=S          N chunks of S bytes, paced by backpressure
 *   GET  /slow?ms=M                  answers after M ms; counts aborts
 *   POST /small                      a route whose body limit is 16 bytes
 *   POST /sink?pause_ms=M&reject=1   a streamed body (--sink-max-bytes, 8 MiB): answers its
 *                                    length and FNV-1a hash; pause_ms pauses
 *                                    reading after each piece; reject answers
 *                                    401 before reading any of it; delay_ms
 *                                    asks for the body only after M ms
 *   GET  /stats                      server counters, pauses, aborts
 *   GET  /ws                         WebSocket echo (max message 1 MiB); the text
 *                                    "close" makes the server close with 1000,
 *                                    "flood N" sends N 64 KiB binary messages;
 *                                    also over HTTP/2 extended CONNECT
 *   GET  /tunnel/{port}?path=P       a tunnel to 127.0.0.1:{port}, path P (/ws);
 *                                    --connect-timeout-ms bounds its connect and answer
 *   GET  /file?path=P&off=O&len=L    L bytes of file P from O (default: all), by
 *                                    sbx_http_send_file, or read and written
 *                                    where the connection cannot (TLS, HTTP/2);
 *                                    a length past the file's end is cut short
 *   GET  /healthz                    "ok", a health route (served on the slots
 *                                    kept beyond --max-connections)
 *
 * Prints {"port": P} on stdout once listening; SIGTERM closes gracefully.
 */
#include "sbx/alloc.h"
#include "sbx/config.h"
#include "sbx/http.h"
#include "sbx/log.h"
#include "sbx/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *listen_addr = "127.0.0.1:0";
static char *tls_cert, *tls_key;
static long max_body_bytes = 1 << 20;
static long ws_ping_interval_ms = 30000;
static long connect_timeout_ms = 10000;
static long sink_max_bytes = 8L << 20;
static struct sbx_http_flags http_flags = SBX_HTTP_FLAGS_DEFAULT;

static struct sbx_http_server *server;
static struct sbx_signals signals;
static unsigned long pauses, aborts, streams_done;
static unsigned long files_sent, files_written, files_failed;

static void hello(struct sbx_http_req *req, void *arg)
{
	sbx_http_respond(req, 200, "text/plain", "hello", 5);
}

static void echo(struct sbx_http_req *req, void *arg)
{
	const char *ct = sbx_http_header(req, "Content-Type");
	size_t len;
	const char *body = sbx_http_body(req, &len);

	sbx_http_add_header(req, "X-Echo-Length", ct ? "set" : "none");
	sbx_http_respond(req, 200, ct ? ct : "application/octet-stream", body, len);
}

static void items(struct sbx_http_req *req, void *arg)
{
	json_t *o = json_pack("{s:s, s:s}", "id", sbx_http_param(req, "id"), "part",
			      sbx_http_param(req, "part"));

	sbx_http_respond_json(req, 200, o);
	json_decref(o);
}

static void query(struct sbx_http_req *req, void *arg)
{
	char q[256];
	int n = sbx_http_query(req, "q", q, sizeof(q));
	json_t *o = n < 0 ? json_pack("{s:n}", "q") : json_pack("{s:s}", "q", q);

	sbx_http_respond_json(req, n == -ENAMETOOLONG ? 414 : 200, o);
	json_decref(o);
}

/* ---- streaming with backpressure ---------------------------------------- */

struct stream {
	long left, size;
	char *chunk;
};

static void stream_free(struct stream *st)
{
	sbx_free(st->chunk);
	sbx_free(st);
}

static void stream_abort(struct sbx_http_req *req, void *arg)
{
	aborts++;
	stream_free(arg);
}

static void stream_more(struct sbx_http_req *req, void *arg)
{
	struct stream *st = arg;

	while (st->left > 0) {
		int rc = sbx_http_write(req, st->chunk, (size_t)st->size);

		st->left--;
		if (rc < 0)
			return; /* the abort callback frees */
		if (rc == 1 && st->left > 0) {
			pauses++;
			sbx_http_on_drain(req, stream_more, st);
			return;
		}
	}
	streams_done++;
	stream_free(st);
	sbx_http_on_abort(req, NULL, NULL);
	sbx_http_end(req);
}

static void stream(struct sbx_http_req *req, void *arg)
{
	char v[32];
	struct stream *st = sbx_calloc(1, sizeof(*st));

	st->left = sbx_http_query(req, "n", v, sizeof(v)) > 0 ? atol(v) : 10;
	st->size = sbx_http_query(req, "size", v, sizeof(v)) > 0 ? atol(v) : 1024;
	st->chunk = sbx_malloc((size_t)st->size);
	/* A pattern the client can verify: byte i of the stream is i % 251. */
	for (long i = 0; i < st->size; i++)
		st->chunk[i] = (char)(i % 251);
	sbx_http_on_abort(req, stream_abort, st);
	sbx_http_start(req, 200, "application/octet-stream");
	stream_more(req, st);
}

/* ---- files ------------------------------------------------------------------ */

static void file_sent(struct sbx_http_req *req, void *arg, int status)
{
	sbx_http_on_abort(req, NULL, NULL);
	if (status < 0) {
		files_failed++;
		sbx_http_abort(req);
		return;
	}
	files_sent++;
	sbx_http_end(req);
}

static void file_gone(struct sbx_http_req *req, void *arg)
{
	aborts++;
}

static void file(struct sbx_http_req *req, void *arg)
{
	char path[4096], v[32];
	struct stat st;
	long long off = 0, len;
	int fd, rc;

	if (sbx_http_query(req, "path", path, sizeof(path)) < 0 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		sbx_http_respond_error(req, 404, "no such file");
		return;
	}
	fstat(fd, &st);
	if (sbx_http_query(req, "off", v, sizeof(v)) > 0)
		off = atoll(v);
	len = sbx_http_query(req, "len", v, sizeof(v)) > 0 ? atoll(v) : st.st_size - off;
	sbx_http_start_sized(req, 200, "application/octet-stream", (uint64_t)len);
	sbx_http_on_abort(req, file_gone, NULL);
	rc = sbx_http_send_file(req, fd, (uint64_t)off, (uint64_t)len, file_sent, NULL);
	if (rc == -ENOTSUP) {
		/* A test tool: a blocking read loop is fine here. */
		char buf[65536];
		ssize_t n;

		while (len > 0 && (n = pread(fd, buf, sizeof(buf), off)) > 0) {
			n = n > len ? (ssize_t)len : n;
			if (sbx_http_write(req, buf, (size_t)n) < 0)
				break;
			off += n;
			len -= n;
		}
		files_written++;
		sbx_http_on_abort(req, NULL, NULL);
		if (len)
			sbx_http_abort(req);
		else
			sbx_http_end(req);
	} else if (rc < 0) {
		files_failed++;
		sbx_http_on_abort(req, NULL, NULL);
		sbx_http_abort(req);
	}
	close(fd); /* the server holds its own reference while it sends */
}

/* ---- slow answers --------------------------------------------------------- */

struct slow {
	uv_timer_t timer;
	struct sbx_http_req *req;
};

static void slow_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
	struct slow *sl = t->data;

	sbx_http_on_abort(sl->req, NULL, NULL);
	sbx_http_respond(sl->req, 200, "text/plain", "slow", 4);
	uv_close((uv_handle_t *)&sl->timer, slow_closed);
}

static void slow_abort(struct sbx_http_req *req, void *arg)
{
	struct slow *sl = arg;

	aborts++;
	uv_timer_stop(&sl->timer);
	uv_close((uv_handle_t *)&sl->timer, slow_closed);
}

static void slow(struct sbx_http_req *req, void *arg)
{
	char v[32];
	struct slow *sl = sbx_calloc(1, sizeof(*sl));
	long ms = sbx_http_query(req, "ms", v, sizeof(v)) > 0 ? atol(v) : 100;

	sl->req = req;
	uv_timer_init(uv_default_loop(), &sl->timer);
	sl->timer.data = sl;
	uv_timer_start(&sl->timer, slow_fire, (uint64_t)ms, 0);
	sbx_http_on_abort(req, slow_abort, sl);
}

/* ---- streamed request bodies -------------------------------------------- */

struct sink {
	uv_timer_t timer;
	struct sbx_http_req *req;
	uint64_t hash, bytes, pieces;
	long pause_ms;
	bool done;
};

static unsigned long sink_max_pending; /* most bytes taken while paused */

static void sink_closed(uv_handle_t *h)
{
	sbx_free(h->data);
}

static void sink_release(struct sink *sk)
{
	uv_timer_stop(&sk->timer);
	uv_close((uv_handle_t *)&sk->timer, sink_closed);
}

static void sink_resume(uv_timer_t *t)
{
	struct sink *sk = t->data;

	sk->pieces = 0;
	sbx_http_resume_body(sk->req);
}

static int sink_data(struct sbx_http_req *req, const char *at, size_t len, void *arg)
{
	struct sink *sk = arg;

	for (size_t i = 0; i < len; i++) {
		sk->hash ^= (unsigned char)at[i];
		sk->hash *= 1099511628211ull;
	}
	sk->bytes += len;
	if (sk->pause_ms) {
		/* Count what still arrives after the pause. */
		sk->pieces += len;
		if (sk->pieces > sink_max_pending)
			sink_max_pending = sk->pieces;
		if (!uv_is_active((uv_handle_t *)&sk->timer)) {
			sbx_http_pause_body(req);
			uv_timer_start(&sk->timer, sink_resume, (uint64_t)sk->pause_ms, 0);
		}
	}
	return 0;
}

static void sink_end(struct sbx_http_req *req, int status, void *arg)
{
	struct sink *sk = arg;
	char hash[24];
	json_t *o;

	snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)sk->hash);
	o = json_pack("{s:I, s:s}", "bytes", (json_int_t)sk->bytes, "fnv1a", hash);
	sbx_http_on_abort(req, NULL, NULL);
	if (status == -EFBIG)
		sbx_http_respond_error(req, 413, "body over the limit of /sink (--sink-max-bytes)");
	else
		sbx_http_respond_json(req, 200, o);
	json_decref(o);
	sink_release(sk);
}

static void sink_abort(struct sbx_http_req *req, void *arg)
{
	aborts++;
	sink_release(arg);
}

static const struct sbx_http_body_sink sink_ops = { .data = sink_data, .end = sink_end };

static void sink_start(uv_timer_t *t)
{
	struct sink *sk = t->data;

	sbx_http_stream_body(sk->req, &sink_ops, sk);
}

static void sink(struct sbx_http_req *req, void *arg)
{
	char v[32];
	struct sink *sk;

	if (sbx_http_query(req, "reject", v, sizeof(v)) > 0) {
		sbx_http_respond_error(req, 401, "rejected before the body");
		return;
	}
	sk = sbx_calloc(1, sizeof(*sk));
	sk->req = req;
	sk->hash = 14695981039346656037ull;
	sk->pause_ms = sbx_http_query(req, "pause_ms", v, sizeof(v)) > 0 ? atol(v) : 0;
	uv_timer_init(uv_default_loop(), &sk->timer);
	sk->timer.data = sk;
	sbx_http_on_abort(req, sink_abort, sk);
	if (sbx_http_query(req, "delay_ms", v, sizeof(v)) > 0) {
		/* The body waits until the handler asks for it (as a proxy does,
		 * once its upstream connection is up). */
		uv_timer_start(&sk->timer, sink_start, (uint64_t)atol(v), 0);
		return;
	}
	sbx_http_stream_body(req, &sink_ops, sk);
}

/* ---- WebSocket ------------------------------------------------------------- */

static unsigned long ws_open, ws_closed, ws_drains;

static void ws_message(struct sbx_ws *ws, int opcode, const char *data, size_t len, void *arg)
{
	if (opcode == SBX_WS_TEXT && len == 5 && memcmp(data, "close", 5) == 0) {
		sbx_ws_close(ws, 1000, "asked to");
		return;
	}
	if (opcode == SBX_WS_TEXT && len > 6 && memcmp(data, "flood ", 6) == 0) {
		static char chunk[65536];
		char count[16] = { 0 };
		long n;

		/* Messages are not NUL-terminated. */
		memcpy(count, data + 6, len - 6 < sizeof(count) - 1 ? len - 6 : sizeof(count) - 1);
		n = atol(count);

		for (long i = 0; i < n; i++) {
			memset(chunk, (int)('a' + i % 26), sizeof(chunk));
			if (sbx_ws_send(ws, SBX_WS_BINARY, chunk, sizeof(chunk)) < 0)
				return;
		}
		sbx_ws_send(ws, SBX_WS_TEXT, "flood done", 10);
		return;
	}
	sbx_ws_send(ws, opcode, data, len);
}

static void ws_gone_cb(struct sbx_ws *ws, void *arg)
{
	ws_closed++;
}

static void ws_drain_cb(struct sbx_ws *ws, void *arg)
{
	ws_drains++;
}

static void websocket(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_ws_callbacks cb = { ws_message, ws_gone_cb, ws_drain_cb };
	struct sbx_ws *ws;

	if (sbx_http_websocket(req, &cb, NULL, 1u << 20, &ws) == 0)
		ws_open++;
}

/* A byte tunnel to 127.0.0.1:{port}/ws (another server's WebSocket), or
 * to ?path=. */
static void tunnel(struct sbx_http_req *req, void *arg)
{
	char upstream[64], path[256] = "/ws";
	struct sbx_http_tunnel_opts o = { .upstream = upstream, .path = path };

	sbx_http_query(req, "path", path, sizeof(path));
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%s", sbx_http_param(req, "port"));
	sbx_http_tunnel(req, &o);
}

static void stats(struct sbx_http_req *req, void *arg)
{
	const struct sbx_http_stats *s = sbx_http_server_stats(server);
	json_t *o = json_pack(
		"{s:I, s:I, s:i, s:I, s:[I,I,I,I,I], s:I, s:I, s:I, s:I, s:I}", "accepted",
		(json_int_t)s->connections_accepted, "rejected",
		(json_int_t)s->connections_rejected, "open", (int)s->connections_open, "requests",
		(json_int_t)s->requests, "responses", (json_int_t)s->responses_by_class[1],
		(json_int_t)s->responses_by_class[2], (json_int_t)s->responses_by_class[3],
		(json_int_t)s->responses_by_class[4], (json_int_t)s->responses_by_class[5],
		"pauses", (json_int_t)pauses, "aborts", (json_int_t)aborts, "streams_done",
		(json_int_t)streams_done, "bytes_out", (json_int_t)s->bytes_out, "sink_max_pending",
		(json_int_t)sink_max_pending);

	json_object_set_new(o, "files_sent", json_integer((json_int_t)files_sent));
	json_object_set_new(o, "files_written", json_integer((json_int_t)files_written));
	json_object_set_new(o, "files_failed", json_integer((json_int_t)files_failed));
	json_object_set_new(o, "ws_open", json_integer((json_int_t)ws_open));
	json_object_set_new(o, "ws_closed", json_integer((json_int_t)ws_closed));

	sbx_http_respond_json(req, 200, o);
	json_decref(o);
}

static void healthz(struct sbx_http_req *req, void *arg)
{
	sbx_http_respond(req, 200, "text/plain", "ok", 2);
}

static struct sbx_http_route routes[] = {
	{ .method = "GET", .pattern = "/hello", .fn = hello },
	{ .method = "GET", .pattern = "/healthz", .fn = healthz, .public = true, .health = true },
	{ .method = "POST", .pattern = "/echo", .fn = echo },
	{ .method = "GET", .pattern = "/items/{id}/parts/{part}", .fn = items },
	{ .method = "GET", .pattern = "/query", .fn = query },
	{ .method = "GET", .pattern = "/stream", .fn = stream },
	{ .method = "GET", .pattern = "/file", .fn = file },
	{ .method = "GET", .pattern = "/slow", .fn = slow },
	{ .method = "POST", .pattern = "/small", .fn = echo, .max_body_bytes = 16 },
	{ .method = "GET", .pattern = "/stats", .fn = stats },
	{ .method = "GET", .pattern = "/ws", .fn = websocket },
	{ .method = "GET", .pattern = "/tunnel/{port}", .fn = tunnel },
	{ .method = "POST", .pattern = "/sink", .fn = sink, .stream_body = true },
};

static void on_closed(void *arg)
{
	sbx_signals_close(&signals);
}

static void on_stop(void *arg)
{
	sbx_http_server_close(server, on_closed, NULL);
}

int main(int argc, char **argv)
{
	const struct sbx_opt opts[] = {
		{ .name = "listen",
		  .type = SBX_OPT_STRING,
		  .dest = &listen_addr,
		  .metavar = "ADDR",
		  .help = "address to listen on" },
		{ .name = "tls-cert",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_cert,
		  .metavar = "FILE",
		  .help = "serve TLS with this certificate chain (PEM)" },
		{ .name = "tls-key",
		  .type = SBX_OPT_STRING,
		  .dest = &tls_key,
		  .metavar = "FILE",
		  .help = "the certificate's private key (PEM)" },
		SBX_HTTP_FLAG_OPTS(&http_flags),
		{ .name = "ws-ping-interval-ms",
		  .type = SBX_OPT_INT,
		  .dest = &ws_ping_interval_ms,
		  .metavar = "MS",
		  .help = "WebSocket pings",
		  .min = 1,
		  .max = 3600000 },
		{ .name = "sink-max-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &sink_max_bytes,
		  .metavar = "N",
		  .help = "the body limit of /sink",
		  .min = 1,
		  .max = 1L << 40 },
		{ .name = "connect-timeout-ms",
		  .type = SBX_OPT_INT,
		  .dest = &connect_timeout_ms,
		  .metavar = "MS",
		  .help = "a tunnel's upstream must connect, then answer, within this",
		  .min = 1,
		  .max = 3600000 },
		{ .name = "max-body-bytes",
		  .type = SBX_OPT_INT,
		  .dest = &max_body_bytes,
		  .metavar = "N",
		  .help = "default body limit",
		  .min = 1,
		  .max = 1L << 32 },
	};
	struct sbx_config cfg = { .program = "sbx-httptool",
				  .summary = "Serves test routes on libsbx's HTTP server core.",
				  .env_prefix = "SBX_HTTPTOOL_",
				  .opts = opts,
				  .n_opts = sizeof(opts) / sizeof(opts[0]) };
	struct sbx_http_server_opts so = { 0 };
	uv_loop_t *loop = uv_default_loop();
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	sbx_alloc_install_jansson();
	sbx_http_flags_apply(&http_flags, &so);
	so.max_body_bytes = (size_t)max_body_bytes;
	so.ws_ping_interval_ms = (uint64_t)ws_ping_interval_ms;
	so.connect_timeout_ms = (uint64_t)connect_timeout_ms;
	so.server_name = "sbx-httptool";
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (!strcmp(routes[i].pattern, "/sink"))
			routes[i].max_body_bytes = (size_t)sink_max_bytes;
	sbx_http_server_new(loop, &so, routes, sizeof(routes) / sizeof(routes[0]), &server);
	if (tls_cert) {
		char err[512];

		if ((rc = sbx_http_server_listen_tls(server, listen_addr, tls_cert,
						     tls_key ?: tls_cert, err, sizeof(err))))
			fprintf(stderr, "sbx-httptool: %s\n", err);
	} else if ((rc = sbx_http_server_listen(server, listen_addr))) {
		fprintf(stderr, "sbx-httptool: cannot listen on %s: %s\n", listen_addr,
			uv_strerror(rc));
	}
	if (rc) {
		sbx_http_server_close(server, NULL, NULL);
		uv_run(loop, UV_RUN_DEFAULT);
		sbx_config_release(&cfg);
		return 1;
	}
	printf("{\"port\": %d}\n", sbx_http_server_port(server));
	fflush(stdout);
	sbx_signals_init(loop, &signals, on_stop, NULL);
	/* The signal handles do not keep the loop alive; the server does. */
	uv_run(loop, UV_RUN_DEFAULT);
	sbx_loop_close(loop);
	sbx_config_release(&cfg);
	return 0;
}
