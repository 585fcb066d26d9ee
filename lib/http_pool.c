/* The client side's connections: one pool of keep-alive connections per
 * loop, idle ones kept per backend address (most recently used first, so
 * the warm ones serve and the cold ones expire), bounded per backend and in
 * all, each watched while idle so that a backend's close is seen at once,
 * and checked again when taken for an exchange that could not be retried.
 * See sbx/http_client.h.
 */
#include "http_pool.h"

#include "http_types.h" /* http_parse_addr */
#include "sbx/alloc.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT(v, d) ((v) ? (v) : (d))

static void up_set_state(struct upconn *c, enum up_state to)
{
	enum up_state from = c->state;

	assert(from != UP_CLOSED);
	assert(to == UP_CLOSED || (from == UP_CONNECTING && to == UP_BUSY) ||
	       (from == UP_BUSY && to == UP_IDLE) || (from == UP_IDLE && to == UP_BUSY));
	(void)from;
	c->state = to;
}

static void maybe_free_pool(struct sbx_http_pool *p)
{
	struct backend *b;

	if (!p->freeing || p->cancelling || p->live || p->active || p->exchanges)
		return;
	while ((b = sbx_map_pop(&p->backends)))
		sbx_free(b); /* ones no connection was ever made to */
	sbx_map_release(&p->backends);
	sbx_spares_release(&p->spare_exchanges);
	sbx_free(p);
}

void pool_exchange_gone(struct sbx_http_pool *p)
{
	p->exchanges--;
	maybe_free_pool(p);
}

static void handle_closed(uv_handle_t *h)
{
	struct upconn *c = h->data;
	struct sbx_http_pool *p = c->p;

	if (--c->handles)
		return;
	/* A backend goes with its last connection: addresses come and go. */
	if (!--c->b->conns) {
		sbx_map_remove(&p->backends, c->b->key);
		sbx_free(c->b);
	}
	sbx_free(c);
	p->live--;
	maybe_free_pool(p);
}

/* ---- the idle lists -------------------------------------------------------------- */

static void idle_unlink(struct upconn *c)
{
	struct backend *b = c->b;
	struct sbx_http_pool *p = c->p;

	if (c->prev)
		c->prev->next = c->next;
	else
		b->idle = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		p->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		p->lru_tail = c->lru_prev;
	c->prev = c->next = c->lru_prev = c->lru_next = NULL;
	b->n_idle--;
	p->stats.idle--;
}

static void idle_push(struct upconn *c)
{
	struct backend *b = c->b;
	struct sbx_http_pool *p = c->p;

	c->next = b->idle;
	if (b->idle)
		b->idle->prev = c;
	b->idle = c;
	c->lru_next = p->lru_head;
	if (p->lru_head)
		p->lru_head->lru_prev = c;
	else
		p->lru_tail = c;
	p->lru_head = c;
	b->n_idle++;
	p->stats.idle++;
}

void pool_close(struct upconn *c)
{
	if (c->state == UP_CLOSED)
		return;
	if (c->state == UP_IDLE)
		idle_unlink(c);
	else
		c->p->stats.active--;
	up_set_state(c, UP_CLOSED);
	c->x = NULL;
	uv_close((uv_handle_t *)&c->tcp, handle_closed);
	uv_close((uv_handle_t *)&c->timer, handle_closed);
}

/* ---- reading and timing ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upconn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->p->read_buf, sizeof(c->p->read_buf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct upconn *c = st->data;

	if (n == 0 || c->state == UP_CLOSED)
		return;
	if (c->state == UP_IDLE) {
		/* A backend says nothing to an idle connection: a close, or
		 * bytes no request asked for. Either way it is done. */
		c->p->stats.dropped++;
		pool_close(c);
		return;
	}
	client_input(c->x, buf->base, n);
}

void pool_read(struct upconn *c, bool on)
{
	if (on && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!on && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void pool_timer_at(struct upconn *c, uint64_t at);

static void on_timer(uv_timer_t *t)
{
	struct upconn *c = t->data;

	if (!c->due_at)
		return;
	if (uv_now(c->p->loop) < c->due_at) {
		pool_timer_at(c, c->due_at); /* armed for an earlier deadline */
		return;
	}
	c->due_at = 0;
	if (c->state == UP_IDLE) {
		c->p->stats.expired++;
		pool_close(c);
		return;
	}
	if (c->x)
		client_timeout(c->x);
}

/* Lazily, like the server's connections: a deadline that moves later
 * leaves the armed timer be (it arms itself again when it fires early), so
 * that progress on an exchange costs no timer update. */
static void pool_timer_at(struct upconn *c, uint64_t at)
{
	uint64_t now = uv_now(c->p->loop);

	c->due_at = at;
	if (!at || (uv_is_active((uv_handle_t *)&c->timer) && c->armed_at <= at))
		return;
	c->armed_at = at;
	uv_timer_start(&c->timer, on_timer, at > now ? at - now : 0, 0);
}

void pool_timer(struct upconn *c, uint64_t ms)
{
	pool_timer_at(c, ms ? uv_now(c->p->loop) + ms : 0);
}

/* ---- writing ------------------------------------------------------------------------ */

static void on_written(uv_write_t *w, int status)
{
	struct http_wreq *wr = (struct http_wreq *)w;
	struct upconn *c = wr->owner;
	size_t len = wr->len;

	sbx_free(wr);
	if (c->x && c->state != UP_CLOSED)
		client_written(c->x, status, len);
}

ssize_t pool_send(struct upconn *c, const uv_buf_t *bufs, unsigned n)
{
	return http_write((uv_stream_t *)&c->tcp, bufs, n, on_written, c);
}

/* ---- taking and giving back -------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
	struct upconn *c = req->data;

	if (c->state == UP_CLOSED)
		return;
	if (status == 0)
		up_set_state(c, UP_BUSY);
	client_connected(c->x, status);
}

/* Still open, and nothing unasked for waiting in it. An idle connection is
 * read all along, so a close or stray bytes are seen as they come; what
 * this catches is one that arrived in this loop turn (a backend whose idle
 * timeout has just run out), at the cost of a system call. */
static bool healthy(struct upconn *c)
{
	uv_os_fd_t fd;
	char byte;

	if (uv_fileno((uv_handle_t *)&c->tcp, &fd))
		return false;
	return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	       (errno == EAGAIN || errno == EWOULDBLOCK);
}

static struct backend *backend_of(struct sbx_http_pool *p, const char *key, int *err)
{
	struct backend *b = sbx_map_get(&p->backends, key);
	struct sockaddr_storage ss;
	size_t len = strlen(key);

	if (b)
		return b;
	if ((*err = http_parse_addr(key, &ss)))
		return NULL;
	b = sbx_calloc(1, sizeof(*b) + len + 1);
	if (!b) {
		*err = -ENOMEM;
		return NULL;
	}
	b->ss = ss;
	memcpy(b->key, key, len + 1);
	if ((*err = sbx_map_put(&p->backends, b->key, b, NULL))) {
		sbx_free(b);
		return NULL;
	}
	return b;
}

struct upconn *pool_take(struct sbx_http_pool *p, const char *key, struct sbx_http_client *x,
			 bool fresh, bool check, bool *reused, int *err)
{
	struct backend *b = backend_of(p, key, err);
	struct upconn *c;

	if (!b)
		return NULL;
	while (!fresh && (c = b->idle)) {
		if (check && !healthy(c)) {
			p->stats.dropped++;
			pool_close(c);
			continue;
		}
		idle_unlink(c);
		/* It goes on reading (no read stop and start per exchange):
		 * the exchange's answer arrives on the same watch. */
		pool_timer(c, 0);
		up_set_state(c, UP_BUSY);
		c->x = x;
		p->stats.reuses++;
		p->stats.active++;
		*reused = true;
		return c;
	}
	c = sbx_calloc(1, sizeof(*c));
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	c->p = p;
	c->b = b;
	c->x = x;
	c->state = UP_CONNECTING;
	uv_tcp_init(p->loop, &c->tcp);
	uv_timer_init(p->loop, &c->timer);
	uv_tcp_nodelay(&c->tcp, 1);
	c->tcp.data = c->timer.data = c->connect.data = c;
	c->handles = 2;
	b->conns++;
	p->live++;
	p->stats.active++;
	p->stats.connects++;
	*reused = false;
	if ((*err = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&b->ss,
				   on_connect))) {
		c->x = NULL;
		pool_close(c);
		return NULL;
	}
	return c;
}

void pool_put(struct upconn *c)
{
	struct sbx_http_pool *p = c->p;

	if (p->freeing || c->b->n_idle >= p->o.max_idle_per_backend) {
		if (!p->freeing)
			p->stats.evicted++;
		pool_close(c);
		return;
	}
	if (p->stats.idle >= p->o.max_idle && p->lru_tail) {
		p->stats.evicted++;
		pool_close(p->lru_tail);
	}
	up_set_state(c, UP_IDLE);
	c->x = NULL;
	c->served = true;
	p->stats.active--;
	idle_push(c);
	pool_read(c, true);
	pool_timer(c, p->o.idle_timeout_ms);
}

/* ---- the pool ------------------------------------------------------------------------ */

int sbx_http_pool_new(uv_loop_t *loop, const struct sbx_http_pool_opts *o,
		      struct sbx_http_pool **out)
{
	struct sbx_http_pool *p = sbx_calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->loop = loop;
	sbx_spares_init(&p->spare_exchanges, http_client_size);
	if (o)
		p->o = *o;
	p->o.max_idle_per_backend = DEFAULT(p->o.max_idle_per_backend, 32);
	p->o.max_idle = DEFAULT(p->o.max_idle, 1024);
	p->o.idle_timeout_ms = DEFAULT(p->o.idle_timeout_ms, 30000);
	p->o.connect_timeout_ms = DEFAULT(p->o.connect_timeout_ms, 5000);
	p->o.read_timeout_ms = DEFAULT(p->o.read_timeout_ms, 60000);
	p->o.write_timeout_ms = DEFAULT(p->o.write_timeout_ms, 60000);
	p->o.max_header_bytes = DEFAULT(p->o.max_header_bytes, 64 * 1024);
	p->o.write_high_water = DEFAULT(p->o.write_high_water, 256 * 1024);
	sbx_map_init(&p->backends, 65536);
	*out = p;
	return 0;
}

void sbx_http_pool_free(struct sbx_http_pool *p)
{
	if (!p)
		return;
	p->freeing = true;
	while (p->lru_head)
		pool_close(p->lru_head);
	p->cancelling = true; /* each exchange freed would try to free the pool */
	while (p->active)
		client_cancel(p->active);
	p->cancelling = false;
	maybe_free_pool(p);
}

void sbx_http_pool_stats(const struct sbx_http_pool *p, struct sbx_http_pool_stats *out)
{
	*out = p->stats;
}
