/* The HTTP core's client side: HTTP/1.1 exchanges with backends over a pool
 * of keep-alive connections.
 *
 * A pool (sbx_http_pool) keeps idle connections per backend address
 * ("ip:port"), bounded per backend and in total, closes them after an idle
 * timeout or when the backend closes them, and checks a connection is still
 * open before it reuses it. A request that fails on a reused connection
 * before any answer came and before any body byte went is sent again once
 * on a new connection (the backend may have closed it as it was taken).
 *
 * An exchange (sbx_http_client) is one request and its response, both
 * streamed: the request body goes out with sbx_http_client_write (which says
 * when the connection is congested; 'drained' tells when to go on) and the
 * response body comes through 'data' as it arrives, paused and resumed by
 * the caller. The client writes the framing itself (Host, Content-Length
 * or chunked, Connection); the caller's headers of those names are dropped.
 * Every exchange ends with exactly one call of 'done', unless aborted.
 *
 * Errors given to 'done': -ECONNREFUSED (and other connect errors as
 * negative errno values), -ETIMEDOUT (connect, read or write timeout),
 * -EPROTO (the answer is not HTTP/1.1, or its framing is ambiguous),
 * -E2BIG (the response head is larger than max_header_bytes),
 * -ECONNRESET (the backend closed before the answer was complete).
 */
#ifndef SBX_HTTP_CLIENT_H
#define SBX_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_pool;
struct sbx_http_client;

struct sbx_http_pool_opts {
	unsigned max_idle_per_backend; /* 0: 32 */
	unsigned max_idle;	       /* idle connections in all; 0: 1024 */
	uint64_t idle_timeout_ms;      /* an idle connection is closed after; 0: 30 s */
	uint64_t connect_timeout_ms;   /* 0: 5 s */
	uint64_t read_timeout_ms;      /* the backend is silent while awaited; 0: 60 s */
	uint64_t write_timeout_ms;     /* the backend takes nothing of what is queued; 0: 60 s */
	size_t max_header_bytes;       /* of a response head; 0: 64 KiB */
	size_t write_high_water;       /* queued request bytes that make it congested; 0: 256 KiB */
};

struct sbx_http_pool_stats {
	uint64_t connects; /* new connections opened */
	uint64_t reuses;   /* exchanges that went on an idle connection */
	uint64_t retries;  /* exchanges sent again after a reused connection failed */
	uint64_t expired;  /* idle connections closed by the idle timeout */
	uint64_t dropped;  /* idle connections the backend closed, or found dead on reuse */
	uint64_t evicted;  /* idle connections closed to stay within the bounds */
	unsigned idle;	   /* idle connections now */
	unsigned active;   /* connections carrying an exchange now */
};

int sbx_http_pool_new(uv_loop_t *loop, const struct sbx_http_pool_opts *o,
		      struct sbx_http_pool **out);
/* Closes the idle connections and aborts the exchanges in flight (their
 * 'done' is called with -ECANCELED); the memory goes once libuv has closed
 * every handle. */
void sbx_http_pool_free(struct sbx_http_pool *p);
void sbx_http_pool_stats(const struct sbx_http_pool *p, struct sbx_http_pool_stats *out);

struct sbx_http_field {
	const char *name;
	const char *value;
	/* The name's length: always set in a response's fields; a request's
	 * field may leave it 0, and the client measures the name. */
	size_t name_len;
};

struct sbx_http_client_request {
	const char *backend; /* "ip:port" or "[ipv6]:port" */
	const char *method;
	const char *target; /* "/path?query", or "http://host/path" to a proxy */
	const char *host;   /* the Host header; NULL: the backend address */
	const struct sbx_http_field *headers;
	size_t n_headers;
	/* Header lines the caller has formatted and checked itself, sent as
	 * they are after 'headers': "Name: value\r\n" each, every name a token
	 * the client does not write itself (not Host or framing), no CR, LF or
	 * NUL in a value. For what a proxy adds (Forwarded and the like) out
	 * of values that are known to be clean: no second pass over them. */
	const char *lines;
	size_t lines_len;
	/* The request body: 0 none, > 0 exactly that many bytes, -1 chunked
	 * (length not known in advance). */
	int64_t content_length;
	/* A protocol to switch to ("websocket"): sent as Connection: Upgrade.
	 * On a 101 answer the connection is the caller's: bytes flow both ways
	 * through write and data until either side ends, and it never goes back
	 * to the pool. */
	const char *upgrade;
};

struct sbx_http_client_callbacks {
	/* The response head; interim 1xx answers other than 101 are skipped.
	 * 'fields' (with their name_len) are valid during the call. */
	void (*head)(struct sbx_http_client *x, int status, const struct sbx_http_field *fields,
		     size_t n_fields, void *arg);
	/* Response body bytes (after a 101, the other protocol's bytes). */
	void (*data)(struct sbx_http_client *x, const char *data, size_t len, void *arg);
	/* The request may take more bytes again after write returned 1. */
	void (*drained)(struct sbx_http_client *x, void *arg);
	/* The end: 0 for a complete response, or a negative errno (above). The
	 * exchange is freed after this call. */
	void (*done)(struct sbx_http_client *x, int err, void *arg);
	/* Optional: a connection is up and the request head is on its way
	 * (for a reused connection, before sbx_http_client_start returns). A
	 * caller that holds the body back until then can send the request
	 * again elsewhere, or later, when the connect fails. Called again if
	 * the request is sent again on a new connection; it may not abort the
	 * exchange. */
	void (*connected)(struct sbx_http_client *x, void *arg);
};

/* Starts an exchange: 0, or -EINVAL for a header name or value that is not
 * allowed (a CR, LF or NUL in it, a name that is not a token), a backend
 * that is not an address. */
int sbx_http_client_start(struct sbx_http_pool *p, const struct sbx_http_client_request *req,
			  const struct sbx_http_client_callbacks *cb, void *arg,
			  struct sbx_http_client **out);
/* Request body bytes: 0, 1 when the connection is congested (wait for
 * 'drained' before more), -EINVAL past the declared length, -EPIPE once
 * the exchange has failed. */
int sbx_http_client_write(struct sbx_http_client *x, const void *data, size_t len);
/* The request body is complete: 0, or -EINVAL if fewer bytes than declared
 * were written. */
int sbx_http_client_end(struct sbx_http_client *x);
/* Stops and restarts reading the response (the caller's consumer is behind). */
void sbx_http_client_pause(struct sbx_http_client *x);
void sbx_http_client_resume(struct sbx_http_client *x);
/* Ends the exchange without calling 'done'; its connection is closed. */
void sbx_http_client_abort(struct sbx_http_client *x);
/* Whether the exchange went on a connection that served one before. */
bool sbx_http_client_reused(const struct sbx_http_client *x);

#endif
