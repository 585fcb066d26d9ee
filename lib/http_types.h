/* Types shared by the layers of the HTTP core (private to libsbx).
 *
 *   server     http_server.c  listeners, accept, connection slots, graceful stop
 *   transport  http_conn.c    one TCP connection: reads, writes, one timer, pause mask
 *              http_tls.c     TLS on memory BIOs, under the same transport
 *   codec      http1.c        HTTP/1.1 (http-parser)       } struct http_codec for the
 *              http2.c        HTTP/2 (nghttp2)             } connection, struct
 *              http_call.c    in-process calls (no conn)   } http_req_ops for requests
 *   request    http_req.c     the protocol-neutral request and the response API
 *              http_route.c   match, authorize, dispatch
 *   streams    ws.c           WebSocket (wslay) on a struct http_stream
 *              http_tunnel.c  byte tunnels to another server on a struct http_stream
 *
 * A codec never looks at another codec's state: the layers above call
 * through the two operations tables below, and a codec provides a
 * struct http_stream when a request switches protocols (HTTP/1 Upgrade, or
 * an HTTP/2 extended CONNECT), so that WebSocket and tunnels work the same
 * over both.
 */
#ifndef SBX_HTTP_TYPES_H
#define SBX_HTTP_TYPES_H

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct http_conn;
struct http_stream;

/* ---- transport --------------------------------------------------------------- */

/* A connection's life. Moved only by conn_set_state, which asserts the
 * edges: OPEN -> DRAINING (server stopping) -> SHUTTING (our side ends after
 * what is queued) -> LINGERING (FIN sent; the client's rest is read and
 * dropped) -> CLOSED, with CLOSED reachable from every state. */
enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_SHUTTING, CONN_LINGERING, CONN_CLOSED };

/* Why reading is paused; reading goes on only when no reason is left. */
enum {
	PAUSE_HANDLER = 1u << 0, /* a request is with its handler: pipelined bytes wait */
	PAUSE_BODY = 1u << 1,	 /* a streamed body's sink asked for a pause */
	PAUSE_PEER = 1u << 2,	 /* a stream's other side is behind (tunnel, WebSocket) */
	PAUSE_FULL = 1u << 3,	 /* the codec holds as much unparsed input as it may */
};

/* What the codec's timer is waiting for. */
enum conn_timer {
	TIMER_NONE,
	TIMER_HEADER, /* a request's head must be in by now (408) */
	TIMER_IDLE,   /* no request (HTTP/1 keep-alive, HTTP/2 without streams) */
	TIMER_BODY,   /* a request body stalled */
	TIMER_CHECK,  /* HTTP/2 with streams: look at each stream's progress */
	TIMER_STREAM, /* an upgraded connection without traffic */
};

/* The codec running on a connection (h2o's h2o_conn_callbacks_t). */
struct http_codec {
	const char *name;
	/* Bytes from the client (decrypted under TLS). */
	void (*input)(struct http_conn *c, const char *data, size_t len);
	/* What was queued for the client fell below half the high water mark. */
	void (*drained)(struct http_conn *c);
	/* The codec's timer ran out. */
	void (*timeout)(struct http_conn *c, enum conn_timer which);
	/* The server stops: finish what is in flight, take nothing new. */
	void (*shutdown)(struct http_conn *c);
	/* The connection closes: abort what is open and free the codec's data. */
	void (*gone)(struct http_conn *c);
	/* Output asked for with conn_flush_soon is due (optional). */
	void (*flush)(struct http_conn *c);
};

/* Under the codec: cleartext TCP or TLS (HAProxy's xprt_ops). */
struct http_xprt {
	int (*send)(struct http_conn *c, const uv_buf_t *bufs, unsigned n);
	void (*input)(struct http_conn *c, const char *data, size_t len);
	void (*shutdown)(struct http_conn *c); /* before our FIN (TLS close_notify) */
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutdown;
	struct sbx_http_server *s;
	struct http_conn *next, *prev;
	struct http_conn *flush_next; /* on the server's flush list */
	bool flush_listed;
	const struct http_codec *codec;
	void *codec_data;
	const struct http_xprt *xprt;
	SSL *ssl;
	enum conn_state state;
	unsigned pause;
	bool reading;
	bool reserved; /* holds a health slot: only health routes are served */
	enum conn_timer timer_kind;
	uint64_t timer_at;	/* the codec's deadline (loop time, ms); 0: none */
	uint64_t armed_at;	/* what the timer is set for, while active */
	uint64_t write_at;	/* queued bytes must move by then; 0: nothing queued */
	uint64_t drain_at;	/* the server stops: closed by then */
	int handles;		/* libuv handles still open */
	struct conn_file *file; /* a file going out by sendfile */
	char peer[64];
};

int conn_send(struct http_conn *c, const uv_buf_t *bufs, unsigned n);
int conn_send1(struct http_conn *c, const void *data, size_t len);
/* Sends len bytes of fd from off after what is queued, by sendfile(2) on the
 * thread pool; sent(c, status) follows on the loop thread (status 0, or
 * < 0: the file ended early or could not be read, or the socket failed).
 * Nothing else may be sent meanwhile. -ENOTSUP on TLS. If the connection
 * closes first, sent is not called. */
int conn_send_file(struct http_conn *c, int fd, uint64_t off, uint64_t len,
		   void (*sent)(struct http_conn *c, int status));
size_t conn_queued(const struct http_conn *c);
bool conn_congested(const struct http_conn *c); /* above the high water mark */
void conn_pause(struct http_conn *c, unsigned reason);
void conn_resume(struct http_conn *c, unsigned reason);
void conn_set_timer(struct http_conn *c, enum conn_timer which, uint64_t ms);
void conn_arm(struct http_conn *c); /* after a deadline changed */
void conn_set_state(struct http_conn *c, enum conn_state to);
void conn_set_codec(struct http_conn *c, const struct http_codec *codec, void *data);
bool conn_alive(const struct http_conn *c); /* OPEN or DRAINING */
/* Ends the connection after what is queued (lingering after our FIN). */
void conn_shutdown(struct http_conn *c);
/* Ends it now (the client sees a reset or a cut response). */
void conn_close(struct http_conn *c);
/* Plain bytes from the transport, for the codec. */
void conn_input(struct http_conn *c, const char *data, size_t len);
void conn_written(struct http_conn *c, int status);
/* The codec's flush is to run once this loop turn's callbacks are done, so
 * that what they answered goes out in one write (before the loop sleeps:
 * from a timer's callback too). */
void conn_flush_soon(struct http_conn *c);

/* A write that could not go at once: the rest of the bytes, copied. */
struct http_wreq {
	uv_write_t w;
	void *owner;
	size_t len;
	char data[];
};
/* Writes bufs: what the socket takes now goes at once, the rest is copied
 * into one http_wreq whose cb is called when it is written. Returns the
 * bytes left queued (0: all written, no cb to come) or a negative errno. */
ssize_t http_write(uv_stream_t *stream, const uv_buf_t *bufs, unsigned n, uv_write_cb cb,
		   void *owner);
/* Accepts on a listener or adopts a connected socket: links, starts reading. */
struct http_conn *conn_new(struct sbx_http_server *s);
void conn_start(struct http_conn *c);

/* TLS (http_tls.c). */
int tls_attach(struct http_conn *c, SSL_CTX *ctx);
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_size);

/* ---- the server --------------------------------------------------------------- */

#define HTTP_MAX_LISTENERS 4
#define HTTP_HEALTH_SLOTS  8

struct http_listener {
	uv_tcp_t tcp;
	struct sbx_http_server *s;
	SSL_CTX *tls; /* NULL: cleartext */
	bool failed;  /* could not listen: closing, its slot spent */
};

struct sbx_http_server {
	uv_loop_t *loop;
	struct sbx_spares h1_reqs; /* freed HTTP/1.1 requests, for the next ones */
	struct sbx_http_server_opts o;
	const struct sbx_http_route *routes;
	size_t n_routes;
	struct http_listener listeners[HTTP_MAX_LISTENERS];
	int n_listeners;
	int open_listeners;
	struct http_conn *conns;
	unsigned reserved_open;
	size_t body_bytes_buffered;	    /* in request bodies, across connections */
	struct sbx_http_pool *pool;	    /* tunnels' upstream connections, made on first use */
	struct sbx_http_pool *forward_pool; /* sbx_http_forward's, the same */
	struct sbx_http_stats stats;
	bool closing;
	void (*done)(void *);
	void *done_arg;
	char date[40];
	time_t date_at;
	char read_buf[65536]; /* one loop, one read at a time: shared */
	/* HTTP/2 frames gathered for one write; a flush nested in another's
	 * (from a callback) writes its frames one by one instead. */
	char batch[65536];
	bool batch_busy;
	/* Connections whose codec flushes at the end of this loop turn: after
	 * the I/O callbacks (check) or before sleeping (prepare). */
	struct http_conn *flush_due;
	uv_check_t flush_check;
	uv_prepare_t flush_prepare;
	int open_flushers;
};

const char *http_date(struct sbx_http_server *s);
/* The server's pools of upstream connections, made on first use: the
 * tunnels' (sbx_http_tunnel) or the forwarded requests' (sbx_http_forward),
 * which differ in how long an answer may take. NULL without memory. */
struct sbx_http_pool *http_server_pool(struct sbx_http_server *s, bool forwarding);
void http_server_conn_gone(struct sbx_http_server *s, struct http_conn *c);
int http_parse_addr(const char *addr, struct sockaddr_storage *ss);
/* The request's method, cut to its field's size. */
void req_set_method(struct sbx_http_req *r, const char *method);
/* v in decimal, in out (at least 21 bytes); returns out. For heads, where
 * snprintf's format machinery costs more than the rest of the head. */
char *http_utoa(unsigned long long v, char *out);
/* A token (RFC 9110 5.6.2): header names, methods. len 0 passes. */
bool http_is_token(const char *at, size_t len);
/* Adopts a connected socket as a server connection, TLS on it when tls is
 * given (tests, fuzzers). */
int http_server_adopt(struct sbx_http_server *s, uv_os_sock_t fd, SSL_CTX *tls);
void http_count_response(struct sbx_http_server *s, int status);

/* ---- requests ------------------------------------------------------------------- */

/* A request's life, moved only by req_set_state: HEAD (headers arriving) ->
 * BODY (a buffered body arriving) -> HANDLER (with its handler, nothing
 * sent) -> RESPONDING (head sent, body going out) -> DONE. A streamed body
 * reaches HANDLER from HEAD; an answer may come in any state before DONE. */
enum req_state { REQ_HEAD, REQ_BODY, REQ_HANDLER, REQ_RESPONDING, REQ_DONE };

/* What a codec does for a request (HAProxy's mux_ops for one stream). */
struct http_req_ops {
	/* The response head, and body[0..len) with it: the whole body, or
	 * (not whole) the first bytes of a streamed one, sent with the head;
	 * then 0, or 1 above the write high water mark. length is the
	 * Content-Length, or -1 for a body of unknown length. */
	int (*respond)(struct sbx_http_req *r, int status, const char *content_type,
		       long long length, const void *body, size_t len, bool whole);
	int (*write)(struct sbx_http_req *r, const void *data, size_t len);
	int (*end)(struct sbx_http_req *r);
	void (*abort)(struct sbx_http_req *r);
	void (*pause_body)(struct sbx_http_req *r);
	void (*resume_body)(struct sbx_http_req *r);
	/* Switches protocols (answers 101 on HTTP/1, 200 to an HTTP/2
	 * extended CONNECT) and hands over the stream; the request is done. */
	int (*upgrade)(struct sbx_http_req *r, struct http_stream **out);
	const char *(*peer)(const struct sbx_http_req *r);
	/* Sends len bytes of fd from off as body (sbx_http_send_file); NULL
	 * where the transport cannot. */
	int (*send_file)(struct sbx_http_req *r, int fd, uint64_t off, uint64_t len);
};

struct http_hdr {
	size_t name, value; /* offsets into the arena */
	size_t name_len;
};

struct sbx_http_req {
	const struct http_req_ops *ops;
	struct sbx_http_server *s;
	enum req_state state;
	struct sbx_buf arena;	  /* target first, then names and values, NUL-ended */
	struct http_hdr *headers; /* header_space until it outgrows it */
	unsigned n_headers, headers_cap;
	struct http_hdr header_space[8];
	const char *target, *path, *query;
	char *authority;     /* absolute-form or CONNECT target's host[:port] (owned) */
	bool absolute_https; /* the absolute-form target said https:// */
	char method[16];
	const struct sbx_http_route *route;
	int early_status; /* decided before the handler (404, 405, 413, ...) */
	const char *early_message;
	char early_text[96];
	const char *param_names[SBX_HTTP_MAX_PARAMS];
	char *param_values[SBX_HTTP_MAX_PARAMS];
	size_t n_params;
	struct sbx_buf body; /* a buffered body; counted in the server's total */
	struct sbx_buf resp_headers;
	/* The protocol the client asks to switch to ("websocket"), and how:
	 * by HTTP/1 Upgrade (with a key handshake) or by HTTP/2 CONNECT. */
	const char *upgrade;
	bool upgrade_by_connect;
	bool connect;  /* a CONNECT to a forward proxy: a byte tunnel once answered */
	bool reserved; /* arrived on a health slot */
	bool secure;   /* over TLS */
	bool head;
	bool streamed;	 /* the route takes its body as a stream */
	bool body_ended; /* streamed: the sink had its end (or an error) */
	bool sized;
	long long content_length; /* announced by the client; -1: unknown */
	uint64_t body_received;
	uint64_t length_left;
	int status;
	const struct sbx_http_body_sink *sink;
	void *sink_arg;
	void (*on_abort)(struct sbx_http_req *, void *);
	void *abort_arg;
	void (*on_drain)(struct sbx_http_req *, void *);
	void *drain_arg;
	sbx_http_file_cb file_done; /* a sbx_http_send_file in progress */
	void *file_arg;
};

void req_init(struct sbx_http_req *r, struct sbx_http_server *s, const struct http_req_ops *ops,
	      size_t arena_max);
void req_release(struct sbx_http_req *r);
void req_set_state(struct sbx_http_req *r, enum req_state to);
/* Adds to a buffered body: 0, -EFBIG past the route's limit, -ENOBUFS past
 * the server's total. */
int req_body_append(struct sbx_http_req *r, const char *data, size_t len);
/* Adds a request header (name and value copied into the arena). */
int req_add_header(struct sbx_http_req *r, const char *name, size_t nlen, const char *value,
		   size_t vlen);
/* Room for one more header (the array grows by doubling): the slot, not
 * counted yet, or NULL (-E2BIG past max_headers in *err, else -ENOMEM). */
struct http_hdr *req_header_slot(struct sbx_http_req *r, int *err);
void req_split_target(struct sbx_http_req *r);
void req_early(struct sbx_http_req *r, int status, const char *message);
/* "Name: value\r\n" lines of the handler's response headers, one at a time. */
bool req_next_resp_header(const struct sbx_http_req *r, size_t *off, const char **name,
			  size_t *nlen, const char **value, size_t *vlen);
bool http_has_token(const char *value, const char *token);
bool http_valid_header(const char *name, const char *value);

/* Routing (http_route.c). */
enum route_verdict {
	ROUTE_ANSWERED, /* authorize or an early status answered: the body is not wanted */
	ROUTE_STREAM,	/* the handler has the request; its body follows as a stream */
	ROUTE_BUFFER,	/* read the body, then http_route_dispatch */
};
/* The head is in: picks the route, runs the authorize check, answers
 * what can be answered before the body. */
enum route_verdict http_route_head(struct sbx_http_req *r);
/* The whole request is in: runs the handler (or the early answer). */
void http_route_dispatch(struct sbx_http_req *r);
void http_route_pick(struct sbx_http_server *s, struct sbx_http_req *r);

/* ---- byte streams after a protocol switch ------------------------------------------ */

struct http_stream_cb {
	void (*data)(void *arg, const char *data, size_t len);
	void (*drained)(void *arg);
	/* The server stops (WebSocket: close 1001; a tunnel waits for the
	 * drain timeout). */
	void (*shutdown)(void *arg);
	/* Gone (either side ended, or the connection failed); the stream is
	 * freed after this returns. */
	void (*closed)(void *arg);
};

struct http_stream_ops {
	/* Queues bytes: 0, 1 above the high water mark, or a negative errno. */
	int (*send)(struct http_stream *st, const void *data, size_t len);
	bool (*congested)(const struct http_stream *st);
	void (*pause)(struct http_stream *st);
	void (*resume)(struct http_stream *st);
	/* Ends our side after what is queued; closed follows. */
	void (*close)(struct http_stream *st);
};

struct http_stream {
	const struct http_stream_ops *ops;
	const struct http_stream_cb *cb; /* NULL until attached: input is held */
	void *arg;
	struct sbx_http_server *s;
	char peer[64];
};

/* Attaches the user of a stream; input held so far is delivered. */
void http_stream_attach(struct http_stream *st, const struct http_stream_cb *cb, void *arg);
/* Its user lets *stp go: no more callbacks, our side ends after what is
 * queued, and *stp is NULL. */
void http_stream_detach(struct http_stream **stp);

/* Codec entry points. */
void *http1_new(struct http_conn *c);
extern const struct http_codec http1_codec;
/* The size of an HTTP/1.1 request's state (for the server's h1_reqs). */
extern const size_t http1_req_size;
/* Answers status with a JSON error and closes (no slot for the connection). */
void http1_refuse(struct http_conn *c, int status, const char *message);
/* Starts HTTP/2 on c with bytes already read (the preface first). */
int http2_start(struct http_conn *c, const char *data, size_t len);

#endif
