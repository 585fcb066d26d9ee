/* The HTTP server core shared by every sbx program (the agent's API, the
 * ingress, each program's /healthz and /metrics).
 *
 * HTTP/1.1 (http-parser) and HTTP/2 (nghttp2; h2c with prior knowledge, and
 * h2 by ALPN under TLS) on libuv: keep-alive and pipelining (responses in
 * request order), chunked and Content-Length request bodies, Expect:
 * 100-continue, streaming responses with backpressure, WebSocket over HTTP/1.1
 * Upgrade and over HTTP/2 extended CONNECT (RFC 8441), and hard limits on
 * everything a client controls (header bytes, header count, body size, bytes
 * buffered across all bodies, connections, time to send headers, idle time,
 * time to read what it is sent). Every limit hit answers with the matching
 * status (400, 408, 413, 431, 503) and a JSON body saying which.
 *
 * The authorize check runs as soon as a request's headers are in: the body
 * of a refused request is never read into memory. A request is dispatched
 * to its route's handler once its body is complete (or at once, for routes
 * that stream their body).
 * The handler answers at once or later (after a process ran, say) with
 * sbx_http_respond* or sbx_http_start/write/end. Until then the request stays
 * valid; if the client goes away first, the abort callback (if set) runs and
 * the request is freed right after it.
 */
#ifndef SBX_HTTP_H
#define SBX_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <uv.h>

struct sbx_http_server;
struct sbx_http_req;

typedef void (*sbx_http_handler)(struct sbx_http_req *req, void *arg);

#define SBX_HTTP_MAX_PARAMS 4

struct sbx_http_route {
	const char *method; /* "GET", "POST", ...; NULL matches any */
	/* "/v1/ping" exactly; "{name}" matches one segment and captures it;
	 * a final "*" matches any rest (including nothing). */
	const char *pattern;
	sbx_http_handler fn;
	void *arg;
	size_t max_body_bytes; /* 0: the server's default */
	bool public;	       /* served without the authorize check */
	/* A health route (/healthz, /readyz, /metrics): still served on the
	 * few connection slots kept beyond max_connections. */
	bool health;
	/* The handler runs once the headers are in (after the authorize
	 * check) and takes the body as it arrives with sbx_http_stream_body;
	 * max_body_bytes then bounds the whole stream. A protocol switch
	 * (WebSocket) has no body: its handler runs once it is complete, ready
	 * for sbx_http_websocket or sbx_http_tunnel. */
	bool stream_body;
	const char *summary; /* one line for the API description (OpenAPI) */
};

struct sbx_http_server_opts {
	size_t max_header_bytes; /* request line + headers (65536) */
	unsigned max_headers;	 /* (100) */
	size_t max_body_bytes;	 /* default per route (1 MiB) */
	/* Bytes held in buffered request bodies across all connections; a
	 * request that would go beyond gets 503 (256 MiB). */
	size_t max_buffered_body_bytes;
	/* Open connections (1024); 8 more slots serve health routes only;
	 * beyond those: 503 and close. */
	unsigned max_connections;
	uint64_t header_timeout_ms; /* to receive a request's headers (30000) */
	/* A connection without a request (HTTP/1 keep-alive, HTTP/2 with no
	 * open stream), and a request body that stalls (75000). */
	uint64_t idle_timeout_ms;
	uint64_t write_timeout_ms; /* queued response bytes must move (60000) */
	/* sbx_http_server_close: in-flight requests, streams and tunnels get
	 * this long before their connections are closed (10000). */
	uint64_t drain_timeout_ms;
	uint64_t ws_ping_interval_ms; /* WebSocket pings; a peer silent for two is gone (30000) */
	uint64_t stream_idle_timeout_ms; /* tunnels and WebSockets without traffic (600000) */
	uint64_t connect_timeout_ms; /* a tunnel's upstream: to connect, then to answer (10000) */
	size_t write_high_water;     /* sbx_http_write says "pause" above (256 KiB) */
	const char *server_name;     /* Server header ("sbx") */
	/* Listeners set SO_REUSEPORT: other processes (a new version started
	 * beside this one) or loops may listen on the same port, and the port
	 * stays served while this server drains. */
	bool reuse_port;
	/* called when no route matches; NULL answers 404 with a JSON body */
	sbx_http_handler not_found;
	void *not_found_arg;
	/* Runs before every handler of a non-public route, and before the
	 * not-found answer (so unknown paths reveal nothing either). Returns
	 * true to go on; otherwise it has answered the request itself. */
	bool (*authorize)(struct sbx_http_req *req, void *arg);
	void *authorize_arg;
	/* A forward proxy's requests go to this route, not the table: those
	 * with an absolute-form target ("GET http://host/x", for an HTTP/1.1
	 * client configured to use this server as its proxy) and CONNECT
	 * host:port (RFC 9110 9.3.6; the handler calls sbx_http_connect).
	 * Origin-form requests ("GET /x") are still routed by the table. NULL:
	 * an absolute-form target is served by its path, as an origin server
	 * must, and CONNECT is refused. */
	const struct sbx_http_route *proxy;
	/* Called with each request's head before the table is looked at: a
	 * route it returns serves the request instead (a request routed by a
	 * header rather than its path). NULL: the table alone. */
	const struct sbx_http_route *(*pick)(struct sbx_http_req *req, void *arg);
	void *pick_arg;
};

int sbx_http_server_new(uv_loop_t *loop, const struct sbx_http_server_opts *opts,
			const struct sbx_http_route *routes, size_t n_routes,
			struct sbx_http_server **out);
/* Listens on "host:port" ("127.0.0.1:8080", "[::1]:0", ":8080" for all).
 * May be called more than once. 0 or a negative uv error. */
int sbx_http_server_listen(struct sbx_http_server *s, const char *addr);
/* The same with TLS (1.2 and later): cert_file holds the certificate chain
 * (PEM), key_file its private key. ALPN offers h2 and http/1.1; a client
 * that picks h2 speaks HTTP/2 on it. 0, or a negative errno with the
 * reason in err (an unusable certificate or key, say). */
int sbx_http_server_listen_tls(struct sbx_http_server *s, const char *addr, const char *cert_file,
			       const char *key_file, char *err, size_t err_size);
/* Loads a new certificate and key for every TLS listener: new connections
 * get it, open ones keep theirs. The number of listeners changed, or a
 * negative errno with the reason in err (the old certificate stays). */
int sbx_http_server_reload_tls(struct sbx_http_server *s, const char *cert_file,
			       const char *key_file, char *err, size_t err_size);
/* The port of the first listener (useful after ":0"). */
int sbx_http_server_port(const struct sbx_http_server *s);
/* Stops accepting and drains: idle connections close at once; HTTP/1
 * requests in flight finish and their connections close; HTTP/2 connections
 * get a GOAWAY and close when their open streams have finished; WebSockets
 * get a close frame (1001); whatever is still open after drain_timeout_ms
 * is closed. Then the server is freed; done (may be NULL) runs when the last
 * connection is gone. */
void sbx_http_server_close(struct sbx_http_server *s, void (*done)(void *arg), void *arg);

/* The core's limits as program flags, with the same names in every program
 * that serves (--idle-timeout-ms, SBX_AGENT_IDLE_TIMEOUT_MS, idle-timeout-ms:
 * in its config file). Put SBX_HTTP_FLAG_OPTS(&flags) in the program's
 * option table, then sbx_http_flags_apply into its server options. */
struct sbx_http_flags {
	long idle_timeout_ms, header_timeout_ms, max_connections, drain_timeout_ms;
	long max_header_bytes, max_buffered_body_bytes, write_timeout_ms;
};

#define SBX_HTTP_FLAGS_DEFAULT                                      \
	{                                                           \
		75000, 30000, 1024, 10000, 65536, 256L << 20, 60000 \
	}

#define SBX_HTTP_FLAG_OPTS(f)                                                           \
	{ .name = "idle-timeout-ms",                                                    \
	  .type = SBX_OPT_INT,                                                          \
	  .dest = &(f)->idle_timeout_ms,                                                \
	  .metavar = "MS",                                                              \
	  .help = "close a connection without a request after this long",               \
	  .min = 1,                                                                     \
	  .max = 86400000 },                                                            \
		{ .name = "header-timeout-ms",                                          \
		  .type = SBX_OPT_INT,                                                  \
		  .dest = &(f)->header_timeout_ms,                                      \
		  .metavar = "MS",                                                      \
		  .help = "a request's headers must arrive within this (408)",          \
		  .min = 1,                                                             \
		  .max = 3600000 },                                                     \
		{ .name = "max-connections",                                            \
		  .type = SBX_OPT_INT,                                                  \
		  .dest = &(f)->max_connections,                                        \
		  .metavar = "N",                                                       \
		  .help = "open connections (8 more serve health routes only)",         \
		  .min = 1,                                                             \
		  .max = 1000000 },                                                     \
		{ .name = "drain-timeout-ms",                                           \
		  .type = SBX_OPT_INT,                                                  \
		  .dest = &(f)->drain_timeout_ms,                                       \
		  .metavar = "MS",                                                      \
		  .help = "on stop, time for requests and streams in flight to finish", \
		  .min = 1,                                                             \
		  .max = 3600000 },                                                     \
		{ .name = "max-header-bytes",                                           \
		  .type = SBX_OPT_INT,                                                  \
		  .dest = &(f)->max_header_bytes,                                       \
		  .metavar = "N",                                                       \
		  .help = "request line and headers (431 beyond)",                      \
		  .min = 1024,                                                          \
		  .max = 16777216 },                                                    \
		{ .name = "write-timeout-ms",                                           \
		  .type = SBX_OPT_INT,                                                  \
		  .dest = &(f)->write_timeout_ms,                                       \
		  .metavar = "MS",                                                      \
		  .help = "cut off a client that reads nothing this long",              \
		  .min = 1,                                                             \
		  .max = 3600000 },                                                     \
	{                                                                               \
		.name = "max-buffered-body-bytes", .type = SBX_OPT_INT,                 \
		.dest = &(f)->max_buffered_body_bytes, .metavar = "N",                  \
		.help = "request body bytes held across all connections (503 beyond)",  \
		.min = 65536, .max = 1L << 40                                           \
	}

struct sbx_http_server_opts;
void sbx_http_flags_apply(const struct sbx_http_flags *f, struct sbx_http_server_opts *o);

struct sbx_http_stats {
	uint64_t connections_accepted;
	uint64_t connections_rejected; /* over max_connections */
	unsigned connections_open;
	uint64_t requests;
	uint64_t responses_by_class[6]; /* index status/100: 1xx..5xx */
	uint64_t bytes_in;
	uint64_t bytes_out;
	unsigned tunnels_open; /* sbx_http_tunnel: switched and passing bytes */
};
const struct sbx_http_stats *sbx_http_server_stats(const struct sbx_http_server *s);

/* ---- the request --------------------------------------------------------- */

const char *sbx_http_method(const struct sbx_http_req *req);
/* The path part of the target, as sent (not percent-decoded). */
const char *sbx_http_path(const struct sbx_http_req *req);
/* The query string after '?', or "". */
const char *sbx_http_query_string(const struct sbx_http_req *req);
/* A forward proxy's request: the "host[:port]" of an absolute-form target,
 * or of a CONNECT, as the client wrote it (RFC 9112 3.2.2, 3.2.3). NULL
 * for an origin-form target. */
const char *sbx_http_authority(const struct sbx_http_req *req);
/* The scheme of an absolute-form target ("http" or "https"), else NULL. */
const char *sbx_http_scheme(const struct sbx_http_req *req);
/* First header with this name (case-insensitive), or NULL. */
const char *sbx_http_header(const struct sbx_http_req *req, const char *name);
/* Are two header names the same, in any case? Inline, and the first
 * letters compared before the whole names (most names differ there), for
 * the lookups made on every request. */
static inline bool sbx_http_name_eq(const char *a, const char *b)
{
	return ((unsigned char)*a | 0x20) == ((unsigned char)*b | 0x20) && !strcasecmp(a, b);
}
/* A header name and its length, for the fixed sets a proxy holds every
 * field against: lengths are compared first, so the comparison in any case
 * runs only where a name can match. SBX_HTTP_NAME("te") makes one. */
struct sbx_http_name {
	const char *name;
	size_t len;
};
#define SBX_HTTP_NAME(lit)              \
	{                               \
		"" lit, sizeof(lit) - 1 \
	}
/* Is name, len bytes long, the literal lit in any case? */
#define SBX_HTTP_NAME_IS(name, len, lit) \
	((len) == sizeof(lit) - 1 && sbx_http_name_eq((name), "" lit))
/* Is a header name, len bytes long, one of names (both in any case)? */
bool sbx_http_name_in(const char *name, size_t len, const struct sbx_http_name *names, size_t n);
/* Is a header name one of those that describe one connection and end at
 * each hop (RFC 9110 7.6.1): Connection, Keep-Alive, Proxy-Connection, TE,
 * Trailer, Transfer-Encoding, Upgrade? Names that a Connection header lists
 * end there too: see sbx_http_list_has. */
bool sbx_http_hop_by_hop(const char *name, size_t len);
/* Does a comma-separated header value ("keep-alive, Upgrade") list token
 * (in any case)? */
bool sbx_http_list_has(const char *value, const char *token);
/* The i-th header as received (0, 1, ...), its name's length in name_len:
 * false past the last. */
bool sbx_http_header_at(const struct sbx_http_req *req, unsigned i, const char **name,
			size_t *name_len, const char **value);
/* The protocol the client asks to switch to ("websocket", by HTTP/1.1
 * Upgrade or an HTTP/2 extended CONNECT), or NULL. */
const char *sbx_http_upgrade(const struct sbx_http_req *req);
/* The body's length as the client announced it: 0 for none, -1 when it is
 * known only at its end (chunked; HTTP/2 DATA without content-length). */
long long sbx_http_content_length(const struct sbx_http_req *req);
/* Whether the request came over TLS. */
bool sbx_http_secure(const struct sbx_http_req *req);
/* A "{name}" captured by the route, or NULL. */
const char *sbx_http_param(const struct sbx_http_req *req, const char *name);
/* A query parameter, percent-decoded into out: its length, -ENOENT, or
 * -ENAMETOOLONG. */
int sbx_http_query(const struct sbx_http_req *req, const char *name, char *out, size_t size);
/* The same for a query string of one's own ("a=1&b=2", without the '?'). */
int sbx_http_query_param(const char *query, const char *name, char *out, size_t size);
/* The request body (NUL-terminated; may contain NULs). */
const char *sbx_http_body(const struct sbx_http_req *req, size_t *len);
/* The body parsed as JSON, within a memory budget (three times the body
 * and 4 MiB, at most 256 MiB): NULL if it is not JSON (with a 422-worthy
 * reason in err) or would take more (*too_large set, if given: 413). The
 * reference is the caller's. */
json_t *sbx_http_body_json(const struct sbx_http_req *req, char *err, size_t err_size,
			   bool *too_large);
/* The peer address as text ("127.0.0.1"). */
const char *sbx_http_peer(const struct sbx_http_req *req);

/* ---- streamed request bodies (routes with stream_body) ------------------- */

struct sbx_http_body_sink {
	/* Body bytes in order. Returns 0, or a negative errno to stop the
	 * body (the handler then answers; the connection closes after it).
	 * After sbx_http_pause_body, bytes already read may still arrive: at
	 * most one read's worth plus what was pending (about 130 KiB). */
	int (*data)(struct sbx_http_req *req, const char *at, size_t len, void *arg);
	/* The body ended: 0 when complete, -EFBIG past max_body_bytes. Not
	 * called if the client goes away first (the abort callback is). */
	void (*end)(struct sbx_http_req *req, int status, void *arg);
};

/* Starts delivering the body to sink. Until it is called, the body waits
 * unread (the handler may answer at once instead, say with 401 or 422). */
void sbx_http_stream_body(struct sbx_http_req *req, const struct sbx_http_body_sink *sink,
			  void *arg);
/* Stops and restarts reading the body (backpressure for slow sinks). */
void sbx_http_pause_body(struct sbx_http_req *req);
void sbx_http_resume_body(struct sbx_http_req *req);
/* Bytes of body delivered so far. */
uint64_t sbx_http_body_received(const struct sbx_http_req *req);

/* Client gone before the response ended: cb runs, then req is freed. */
void sbx_http_on_abort(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg);

/* ---- the response -------------------------------------------------------- */

/* Adds a response header before the response starts. 0, -EINVAL (bad
 * characters), -EALREADY (started), -ENOMEM. */
int sbx_http_add_header(struct sbx_http_req *req, const char *name, const char *value);
struct sbx_http_field; /* sbx/http_client.h */
/* The head of an answer from upstream, as a proxy passes it on: adds to
 * req's answer every field that is not hop-by-hop, not named by the
 * answer's Connection header, and not one the server writes itself
 * (Content-Type, Content-Length, Date, Server); the values of the first two
 * go to *type and *length, NULL when the answer has none. */
void sbx_http_pass_answer_fields(struct sbx_http_req *req, const struct sbx_http_field *f, size_t n,
				 const char **type, const char **length);

/* A whole response with Content-Length. Ends the request. */
int sbx_http_respond(struct sbx_http_req *req, int status, const char *content_type,
		     const void *body, size_t len);
/* A JSON response (body is not consumed). */
int sbx_http_respond_json(struct sbx_http_req *req, int status, const json_t *body);
/* {"error": {"status": N, "message": "..."}} */
int sbx_http_respond_error(struct sbx_http_req *req, int status, const char *message);

/* A streamed response: chunked on HTTP/1.1, close-delimited on 1.0. */
int sbx_http_start(struct sbx_http_req *req, int status, const char *content_type);
/* A streamed response of a known length (Content-Length): writes must add
 * up to exactly length bytes, or the connection closes at the end so the
 * client sees a short body rather than a complete one. */
int sbx_http_start_sized(struct sbx_http_req *req, int status, const char *content_type,
			 uint64_t length);
/* sbx_http_start (length < 0) or sbx_http_start_sized, with the body's
 * first bytes sent together with the head (one write instead of two, for
 * a proxy that has them at hand). Returns as sbx_http_write. */
int sbx_http_start_with(struct sbx_http_req *req, int status, const char *content_type,
			long long length, const void *first, size_t first_len);
/* Queues data. Returns 0, 1 when more than write_high_water bytes wait (the
 * producer should pause until the drain callback), or -ECONNRESET once the
 * client is gone (-EBUSY while a sbx_http_send_file is going out). Data is
 * copied. */
int sbx_http_write(struct sbx_http_req *req, const void *data, size_t len);
/* Called once when the queued bytes fall below half the high water mark. */
void sbx_http_on_drain(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg);
/* Called when a file sent by sbx_http_send_file has gone out (status 0: end
 * the response, or write more), or could not be sent (status < 0: the file
 * ended early or could not be read, or the socket failed; the handler should
 * sbx_http_abort). */
typedef void (*sbx_http_file_cb)(struct sbx_http_req *req, void *arg, int status);
/* Sends len bytes of the file fd from off as (the rest of) a response body
 * started with sbx_http_start_sized: the kernel copies them from the page
 * cache to the socket (sendfile(2), on the thread pool, so a cold disk does
 * not stall the loop), at the pace the client reads. fd may be closed as soon
 * as this returns. Returns 0 (done follows, unless the client goes first: then
 * the abort callback runs), -ENOTSUP where the connection cannot (TLS, HTTP/2,
 * an in-process call, a HEAD or chunked response: write the bytes instead),
 * -EMSGSIZE past the announced length, -ECONNRESET once the client is gone. */
int sbx_http_send_file(struct sbx_http_req *req, int fd, uint64_t off, uint64_t len,
		       sbx_http_file_cb done, void *arg);
/* Ends a streamed response; the request is freed after it (-EBUSY while a
 * sbx_http_send_file is going out). */
int sbx_http_end(struct sbx_http_req *req);

/* Gives up on the response: the connection closes at once (the client sees
 * a cut response) and req is freed; the abort callback does not run. */
void sbx_http_abort(struct sbx_http_req *req);

/* ---- WebSocket (RFC 6455, framing by wslay) ----------------------------------- */

struct sbx_ws;

#define SBX_WS_TEXT   1
#define SBX_WS_BINARY 2

struct sbx_ws_callbacks {
	/* A whole text or binary message (control frames are handled:
	 * pings are answered, a close is answered and ends the connection). */
	void (*message)(struct sbx_ws *ws, int opcode, const char *data, size_t len, void *arg);
	/* The connection is gone (closed by either side, or failed); ws is
	 * freed right after. */
	void (*closed)(struct sbx_ws *ws, void *arg);
	/* Optional: what was queued fell below half the high water mark. */
	void (*drain)(struct sbx_ws *ws, void *arg);
};

/* Answers req's upgrade handshake with 101 and turns its connection into a
 * WebSocket: 0 with *out set (req is freed), or -EINVAL after answering 400
 * (426 for a wrong version) itself. max_message bounds one incoming message
 * (beyond: closed with 1009). */
int sbx_http_websocket(struct sbx_http_req *req, const struct sbx_ws_callbacks *cb, void *arg,
		       size_t max_message, struct sbx_ws **out);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2), for both
 * ends of a handshake. */
#define SBX_WS_ACCEPT_SIZE 29 /* base64 of a SHA-1, and a NUL */
void sbx_ws_accept_key(const char *key, char out[SBX_WS_ACCEPT_SIZE]);
/* Queues a message: 0, 1 above the write high water mark (wait for drain),
 * -ECONNRESET once closed, -ENOMEM. */
int sbx_ws_send(struct sbx_ws *ws, int opcode, const void *data, size_t len);
/* Starts the closing handshake (code 1000 normal, 1011 server error...). */
void sbx_ws_close(struct sbx_ws *ws, uint16_t code, const char *reason);
/* The peer address. */
const char *sbx_ws_peer(const struct sbx_ws *ws);

/* ---- tunnels (upgrades passed through to another server) --------------------- */

struct sbx_http_tunnel_opts {
	const char *upstream;		 /* "host:port" (an IP address) */
	const char *path;		 /* the target to ask upstream for ("/x?y") */
	const char *host;		 /* Host header to send (NULL: upstream) */
	const char *const *drop_headers; /* NULL-terminated; not passed on */
	/* NULL-terminated name, value pairs sent after the request's own
	 * (X-Forwarded-For, say); a name here drops the request's of that name. */
	const char *const *add_headers;
};

/* Sends req's request head upstream as an HTTP/1.1 Upgrade (method,
 * o->path, headers but Host and the dropped ones; an RFC 8441 request is
 * translated) on a connection of the server's client pool and, on a 101,
 * turns both sides into a byte tunnel: whatever either side sends reaches
 * the other (a WebSocket's frames, say), paced by the slower side, until
 * either closes. Any other answer is passed back (body up to 1 MiB).
 * req is done once upstream has answered. 0 when started; otherwise the
 * client got an answer (431, 502, 503) and a negative errno is returned.
 * Upstream failures later answer 502, and 504 past connect_timeout_ms. */
int sbx_http_tunnel(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o);

/* Passes req on to o->upstream as an HTTP/1.1 request for o->path (a
 * protocol switch goes to sbx_http_tunnel) on a pool of the server's own,
 * and its answer back: headers but the hop-by-hop ones and o's dropped
 * ones, then o's added ones; the body streams both ways with backpressure
 * (the route should be stream_body, so that nothing is buffered). The
 * upstream has connect_timeout_ms to connect and stream_idle_timeout_ms
 * of silence at most. Errors before the answer starts are the client's
 * answer (502 refused or broken, 504 timed out, 413 or 400 for a body too
 * large or cut, 431); after, the client's answer is cut. 0 when started,
 * or a negative errno once the client has its error. */
int sbx_http_forward(struct sbx_http_req *req, const struct sbx_http_tunnel_opts *o);

/* Opens the byte tunnel a CONNECT asks for (on a server with a proxy
 * route): connects to upstream ("IP:port", or "[IPv6]:port") within the
 * server's connect_timeout_ms, and, when via_head is set, sends it first
 * (a CONNECT to a next proxy, its whole head) and waits for a 2xx answer
 * head. Then the client gets 200 and bytes flow both ways, paced by the
 * slower side, until either side closes; the client's stream idle timeout
 * and the server's drain deadline apply. req is done once the tunnel is
 * open or refused. 0 when started; otherwise the client has its answer
 * (400, 503) and a negative errno is returned. Failures later answer 502
 * (refused, the next proxy said no: its status is in the message) or 504
 * (no connection or answer in time). */
int sbx_http_connect(struct sbx_http_req *req, const char *upstream, const char *via_head);

/* ---- internal calls -------------------------------------------------------- */

/* The answer to an internal call: status, Content-Type ("" if none) and the
 * whole body (streamed responses are gathered, up to 64 MiB). */
typedef void (*sbx_http_call_done)(int status, const char *content_type, const char *body,
				   size_t len, void *arg);

/* Runs the route for method and target ("/v1/x?q=1") as if a client had
 * sent it with this body, without a connection and without the authorize
 * check (the caller has been authorized already). done runs once, maybe
 * before this returns. Routes with stream_body answer 405. 0 or -ENOMEM. */
int sbx_http_call(struct sbx_http_server *s, const char *method, const char *target,
		  const char *content_type, const void *body, size_t len, sbx_http_call_done done,
		  void *arg);

/* "Not Found" for 404, etc. ("Unknown" for codes it does not know). */
const char *sbx_http_reason(int status);

/* Route pattern matching, exposed for tests: 1 on match (params filled). */
int sbx_http_match(const char *pattern, const char *path, const char *names[], const char *values[],
		   size_t value_lens[], size_t *n_params);

#endif
