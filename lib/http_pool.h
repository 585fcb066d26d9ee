/* Private: the connections of the client side (http_pool.c) and the
 * exchanges that run on them (http_client.c). */
#ifndef SBX_HTTP_POOL_PRIVATE_H
#define SBX_HTTP_POOL_PRIVATE_H

#include "sbx/alloc.h"
#include "sbx/http_client.h"
#include "sbx/map.h"

#include <sys/socket.h>

/* A connection's life: CONNECTING -> BUSY <-> IDLE, and CLOSED from any.
 * Only up_set_state moves it, and it asserts the edge is legal. */
enum up_state { UP_CONNECTING, UP_BUSY, UP_IDLE, UP_CLOSED };

struct backend {
	struct sockaddr_storage ss;
	struct upconn *idle; /* most recently used first */
	unsigned n_idle;
	unsigned conns; /* connections to it, open or closing */
	char key[];
};

struct upconn {
	struct sbx_http_pool *p;
	struct backend *b;
	struct sbx_http_client *x; /* while CONNECTING or BUSY */
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_timer_t timer;
	enum up_state state;
	int handles; /* open libuv handles; freed at 0 */
	bool reading;
	bool served;	   /* carried an exchange before: a reuse */
	uint64_t due_at;   /* the deadline (loop time, ms); 0: none */
	uint64_t armed_at; /* what the timer is set for, while active */
	/* The backend's idle list, and the pool's (oldest last), while IDLE. */
	struct upconn *prev, *next, *lru_prev, *lru_next;
};

struct sbx_http_pool {
	uv_loop_t *loop;
	struct sbx_http_pool_opts o;
	struct sbx_map backends;
	struct sbx_http_pool_stats stats;
	struct upconn *lru_head, *lru_tail;
	struct sbx_http_client *active; /* exchanges in flight */
	bool freeing, cancelling;
	unsigned live;			   /* connections not yet freed */
	unsigned exchanges;		   /* exchanges not yet freed: the pool waits for them */
	struct sbx_spares spare_exchanges; /* freed ones (not upgrades), for the next */
	char read_buf[65536];
};

/* A connection for backend 'key': an idle one (state BUSY, *reused set;
 * never when 'fresh'), checked to be still open with the kernel when
 * 'check' (an exchange that could not be retried on another), or a new one
 * being connected (CONNECTING; the exchange hears through
 * client_connected). NULL: -errno in *err. */
struct upconn *pool_take(struct sbx_http_pool *p, const char *key, struct sbx_http_client *x,
			 bool fresh, bool check, bool *reused, int *err);
/* Sends bytes on a busy connection: what the socket does not take at once
 * is copied and queued. Returns the bytes queued (the exchange hears of
 * them, or of a failure, through client_written) or a negative errno. */
ssize_t pool_send(struct upconn *c, const uv_buf_t *bufs, unsigned n);
/* Back to the pool after a clean exchange, or closed when over the bounds. */
void pool_put(struct upconn *c);
/* Closes it; no more calls reach its exchange. */
void pool_close(struct upconn *c);
/* Arms the connection's one timer (0 stops it). */
void pool_timer(struct upconn *c, uint64_t ms);
/* Starts or stops reading on a busy connection. */
void pool_read(struct upconn *c, bool on);

/* The size of an exchange with its head spaces (all but upgrades). */
extern const size_t http_client_size;
/* An exchange has been freed: the pool may go now, if it is closing. */
void pool_exchange_gone(struct sbx_http_pool *p);

/* Calls from the pool into the exchange on a connection. */
void client_connected(struct sbx_http_client *x, int status);
void client_input(struct sbx_http_client *x, const char *data, ssize_t n);
void client_written(struct sbx_http_client *x, int status, size_t len);
void client_timeout(struct sbx_http_client *x);
void client_cancel(struct sbx_http_client *x);

#endif
