/* The transport of one server connection: reading (paused while any reason
 * in the pause mask is set), writing (copied, through TLS when attached),
 * one timer for the codec's deadline, the write-progress deadline and the
 * drain deadline, and the close: a FIN after what is queued, then lingering
 * so that unread client bytes do not turn the close into a reset that could
 * destroy the answer before the client reads it.
 *
 * The connection owns its handles; the codec owns codec_data and frees it
 * in its gone callback.
 */
#include "http_types.h"

#include "sbx/alloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define LINGER_MS 1000
/* One thread-pool job sends at most this much, then the loop has a turn. */
#define FILE_SLICE (16u << 20)

static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

void conn_set_state(struct http_conn *c, enum conn_state to)
{
	static const unsigned legal[] = {
		[CONN_OPEN] = 1u << CONN_DRAINING | 1u << CONN_SHUTTING | 1u << CONN_CLOSED,
		[CONN_DRAINING] = 1u << CONN_SHUTTING | 1u << CONN_CLOSED,
		[CONN_SHUTTING] = 1u << CONN_LINGERING | 1u << CONN_CLOSED,
		[CONN_LINGERING] = 1u << CONN_CLOSED,
		[CONN_CLOSED] = 0,
	};

	assert(legal[c->state] & (1u << to));
	c->state = to;
}

bool conn_alive(const struct http_conn *c)
{
	return c->state == CONN_OPEN || c->state == CONN_DRAINING;
}

size_t conn_queued(const struct http_conn *c)
{
	return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

bool conn_congested(const struct http_conn *c)
{
	return conn_queued(c) > c->s->o.write_high_water;
}

/* The one timer runs to the earliest of the three deadlines, lazily: a
 * deadline that moves later (every request moves the idle one) leaves the
 * armed timer as it is, and the timer, when it fires early, arms itself
 * again for what is due then. Most requests so touch no timer at all (a
 * start or stop is a heap update in libuv). */
void conn_arm(struct http_conn *c)
{
	uint64_t at = 0, now;

	if (c->state == CONN_CLOSED)
		return;
	if (c->timer_at)
		at = c->timer_at;
	if (c->write_at && (!at || c->write_at < at))
		at = c->write_at;
	if (c->drain_at && (!at || c->drain_at < at))
		at = c->drain_at;
	if (!at || (uv_is_active((uv_handle_t *)&c->timer) && c->armed_at <= at))
		return;
	now = uv_now(c->s->loop);
	c->armed_at = at;
	uv_timer_start(&c->timer, on_timer, at > now ? at - now : 0, 0);
}

void conn_set_timer(struct http_conn *c, enum conn_timer which, uint64_t ms)
{
	c->timer_kind = which;
	c->timer_at = which == TIMER_NONE ? 0 : uv_now(c->s->loop) + (ms ? ms : 1);
	conn_arm(c);
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	uint64_t now = uv_now(c->s->loop);
	bool stopped = c->drain_at && now >= c->drain_at, stuck = c->write_at && now >= c->write_at;

	if (!stopped && !stuck && !(c->timer_at && now >= c->timer_at)) {
		conn_arm(c); /* early (armed for an earlier deadline): nothing due yet */
		return;
	}
	if (stopped || stuck || c->state == CONN_SHUTTING || c->state == CONN_LINGERING) {
		/* Stopped long enough, a client that does not read what it is
		 * sent, or the end of lingering. */
		conn_close(c);
		return;
	}
	if (c->timer_at && now >= c->timer_at) {
		enum conn_timer which = c->timer_kind;

		c->timer_at = 0;
		c->timer_kind = TIMER_NONE;
		c->codec->timeout(c, which);
		return;
	}
	conn_arm(c);
}

static void update_reading(struct http_conn *c)
{
	bool want = c->pause == 0 && (conn_alive(c) || c->state == CONN_LINGERING);

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

void conn_pause(struct http_conn *c, unsigned reason)
{
	c->pause |= reason;
	update_reading(c);
}

void conn_resume(struct http_conn *c, unsigned reason)
{
	c->pause &= ~reason;
	update_reading(c);
}

void conn_set_codec(struct http_conn *c, const struct http_codec *codec, void *data)
{
	c->codec = codec;
	c->codec_data = data;
}

/* ---- writing -------------------------------------------------------------------- */

static void file_queued_out(struct http_conn *c);

void conn_written(struct http_conn *c, int status)
{
	if (status < 0) {
		conn_close(c);
		return;
	}
	if (c->state == CONN_CLOSED)
		return;
	/* Progress: the client reads. */
	c->write_at = conn_queued(c) ? uv_now(c->s->loop) + c->s->o.write_timeout_ms : 0;
	conn_arm(c);
	if (c->file && !conn_queued(c))
		file_queued_out(c);
	if (conn_alive(c) && conn_queued(c) < c->s->o.write_high_water / 2)
		c->codec->drained(c);
}

ssize_t http_write(uv_stream_t *stream, const uv_buf_t *bufs, unsigned n, uv_write_cb cb,
		   void *owner)
{
	size_t total = 0, done = 0, off = 0;
	struct http_wreq *wr;
	uv_buf_t buf;
	int rc;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	if (!total)
		return 0;
	/* Straight to the socket when nothing is queued before: no copy, no
	 * request, and no completion to come back for (libuv's completion
	 * also rewrites the socket's epoll registration every time). A
	 * failure is left to the queued write, which reports it through cb
	 * like any other. */
	if (total <= INT_MAX && !uv_stream_get_write_queue_size(stream)) {
		rc = uv_try_write(stream, bufs, n);
		done = rc > 0 ? (size_t)rc : 0;
		if (done == total)
			return 0;
	}
	wr = sbx_malloc(sizeof(*wr) + total - done);
	if (!wr)
		return -ENOMEM;
	wr->owner = owner;
	wr->len = total - done;
	for (unsigned i = 0; i < n; i++) {
		size_t skip = done > bufs[i].len ? bufs[i].len : done;

		done -= skip;
		memcpy(wr->data + off, bufs[i].base + skip, bufs[i].len - skip);
		off += bufs[i].len - skip;
	}
	buf = uv_buf_init(wr->data, (unsigned)wr->len);
	if ((rc = uv_write(&wr->w, stream, &buf, 1, cb))) {
		sbx_free(wr);
		return rc;
	}
	return (ssize_t)wr->len;
}

static void on_written(uv_write_t *w, int status)
{
	struct http_wreq *wr = (struct http_wreq *)w;
	struct http_conn *c = wr->owner;

	sbx_free(wr);
	conn_written(c, status);
}

static int tcp_send(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	ssize_t queued = http_write((uv_stream_t *)&c->tcp, bufs, n, on_written, c);

	if (queued < 0)
		return (int)queued;
	if (queued && !c->write_at) {
		c->write_at = uv_now(c->s->loop) + c->s->o.write_timeout_ms;
		conn_arm(c);
	}
	return 0;
}

static void tcp_input(struct http_conn *c, const char *data, size_t len)
{
	conn_input(c, data, len);
}

static void tcp_shutdown(struct http_conn *c)
{
	(void)c;
}

static const struct http_xprt tcp_xprt = {
	.send = tcp_send,
	.input = tcp_input,
	.shutdown = tcp_shutdown,
};

int conn_send(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	size_t total = 0;
	int rc;

	if (!conn_alive(c))
		return -ECONNRESET;
	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	rc = c->xprt->send(c, bufs, n);
	if (!rc)
		c->s->stats.bytes_out += total;
	return rc;
}

int conn_send1(struct http_conn *c, const void *data, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

	return conn_send(c, &b, 1);
}

/* ---- sending a file --------------------------------------------------------------- *
 *
 * sendfile(2) runs on the thread pool, on duplicates of the socket and the
 * file: the job may outlive the connection (a close only detaches it) and
 * the caller's file descriptor. The socket is non-blocking, so a job sends
 * until the socket is full (then a uv_poll on the duplicate waits for room:
 * epoll watches a duplicate apart from the original, which libuv owns) or a
 * slice is out; only the disk can make it wait. libuv's own write queue is
 * empty before a job starts and stays so: nothing else is sent meanwhile. */

struct conn_file {
	struct http_conn *c; /* NULL once the connection is gone */
	void (*sent)(struct http_conn *c, int status);
	uv_work_t work;
	uv_poll_t poll;
	int sock, fd;
	off_t off;
	uint64_t left;
	/* the last job's outcome */
	uint64_t moved;
	int err;
	bool full;
	bool busy; /* a job is on the thread pool */
};

static void file_poll_closed(uv_handle_t *h)
{
	struct conn_file *f = h->data;

	close(f->sock);
	close(f->fd);
	sbx_free(f);
}

static void file_free(struct conn_file *f)
{
	uv_close((uv_handle_t *)&f->poll, file_poll_closed);
}

static void file_work(uv_work_t *w)
{
	struct conn_file *f = w->data;

	f->moved = 0;
	f->err = 0;
	f->full = false;
	while (f->left && f->moved < FILE_SLICE) {
		size_t want = f->left < FILE_SLICE - f->moved ? (size_t)f->left
							      : (size_t)(FILE_SLICE - f->moved);
		ssize_t n = sendfile(f->sock, f->fd, &f->off, want);

		if (n > 0) {
			f->left -= (uint64_t)n;
			f->moved += (uint64_t)n;
		} else if (n == 0) {
			f->err = -ENODATA; /* the file is shorter than promised */
			break;
		} else if (errno == EAGAIN) {
			f->full = true;
			break;
		} else if (errno != EINTR) {
			f->err = -errno;
			break;
		}
	}
}

static void file_start(struct conn_file *f);

static void file_finish(struct conn_file *f, int status)
{
	struct http_conn *c = f->c;
	void (*sent)(struct http_conn *, int) = f->sent;

	c->file = NULL;
	file_free(f);
	c->write_at = conn_queued(c) ? c->write_at : 0;
	conn_arm(c);
	sent(c, status);
}

static void file_writable(uv_poll_t *p, int status, int events)
{
	struct conn_file *f = p->data;

	uv_poll_stop(p);
	if (status < 0)
		file_finish(f, status);
	else
		file_start(f);
}

static void file_done(uv_work_t *w, int status)
{
	struct conn_file *f = w->data;
	struct http_conn *c = f->c;

	f->busy = false;
	if (!c) {
		file_free(f);
		return;
	}
	c->s->stats.bytes_out += f->moved;
	if (f->moved) /* progress: the client reads */
		c->write_at = uv_now(c->s->loop) + c->s->o.write_timeout_ms;
	conn_arm(c);
	if (status < 0 || f->err || !f->left) {
		file_finish(f, status < 0 ? status : f->err);
		return;
	}
	if (!f->full) {
		file_start(f); /* a slice is out: again, after the loop's turn */
		return;
	}
	if ((status = uv_poll_start(&f->poll, UV_WRITABLE, file_writable)))
		file_finish(f, status);
}

static void file_start(struct conn_file *f)
{
	int rc;

	f->work.data = f;
	if ((rc = uv_queue_work(f->c->s->loop, &f->work, file_work, file_done))) {
		file_finish(f, rc);
		return;
	}
	f->busy = true;
}

/* libuv's queue (the head, say) is out: the file's turn. */
static void file_queued_out(struct http_conn *c)
{
	struct conn_file *f = c->file;

	if (!f->busy && !uv_is_active((uv_handle_t *)&f->poll))
		file_start(f);
}

int conn_send_file(struct http_conn *c, int fd, uint64_t off, uint64_t len,
		   void (*sent)(struct http_conn *c, int status))
{
	struct conn_file *f;
	uv_os_fd_t sock;
	int rc;

	if (c->ssl || c->file || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return c->ssl ? -ENOTSUP : -EINVAL;
	if (!conn_alive(c))
		return -ECONNRESET;
	if ((rc = uv_fileno((uv_handle_t *)&c->tcp, &sock)))
		return rc;
	if (!(f = sbx_calloc(1, sizeof(*f))))
		return -ENOMEM;
	f->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
	f->fd = f->sock < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (f->fd < 0 || (rc = uv_poll_init(c->s->loop, &f->poll, f->sock))) {
		rc = f->fd < 0 ? -errno : rc;
		if (f->sock >= 0)
			close(f->sock);
		if (f->fd >= 0)
			close(f->fd);
		sbx_free(f);
		return rc;
	}
	f->poll.data = f;
	f->c = c;
	f->sent = sent;
	f->off = (off_t)off;
	f->left = len;
	c->file = f;
	if (!c->write_at)
		c->write_at = uv_now(c->s->loop) + c->s->o.write_timeout_ms;
	conn_arm(c);
	if (!conn_queued(c))
		file_start(f);
	return 0;
}

/* The connection goes: a job under way finishes on its own. */
static void file_detach(struct http_conn *c)
{
	struct conn_file *f = c->file;

	c->file = NULL;
	f->c = NULL;
	if (!f->busy)
		file_free(f);
}

/* ---- reading --------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->s->read_buf, sizeof(c->s->read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = stream->data;

	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0 || c->state == CONN_LINGERING)
		return;
	c->xprt->input(c, buf->base, (size_t)nread);
}

void conn_input(struct http_conn *c, const char *data, size_t len)
{
	if (!conn_alive(c))
		return;
	c->s->stats.bytes_in += len;
	c->codec->input(c, data, len);
}

/* ---- closing ---------------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *sh, int status)
{
	struct http_conn *c = sh->data;

	if (status < 0 || c->state == CONN_CLOSED) {
		conn_close(c);
		return;
	}
	conn_set_state(c, CONN_LINGERING);
	c->write_at = 0;
	c->pause = 0;
	conn_set_timer(c, TIMER_NONE, 0);
	c->drain_at = uv_now(c->s->loop) + LINGER_MS;
	conn_arm(c);
	update_reading(c);
}

void conn_shutdown(struct http_conn *c)
{
	if (!conn_alive(c))
		return;
	c->xprt->shutdown(c);
	conn_set_state(c, CONN_SHUTTING);
	update_reading(c);
	/* What is queued must go out within the write timeout. */
	c->timer_at = 0;
	c->write_at = uv_now(c->s->loop) + c->s->o.write_timeout_ms;
	conn_arm(c);
	c->shutdown.data = c;
	if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown))
		conn_close(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;

	if (--c->handles > 0)
		return;
	SSL_free(c->ssl);
	http_server_conn_gone(c->s, c);
	sbx_free(c);
}

void conn_close(struct http_conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	conn_set_state(c, CONN_CLOSED);
	if (c->file)
		file_detach(c);
	if (c->codec)
		c->codec->gone(c);
	c->codec = NULL;
	c->codec_data = NULL;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* ---- starting -------------------------------------------------------------------- */

struct http_conn *conn_new(struct sbx_http_server *s)
{
	struct http_conn *c = sbx_calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->s = s;
	c->xprt = &tcp_xprt;
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.connections_open++;
	return c;
}

static void peer_name(struct http_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	c->peer[0] = '\0';
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET6)
		uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
	else if (ss.ss_family == AF_INET)
		uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
}

extern const struct http_xprt http_tls_xprt;

void conn_start(struct http_conn *c)
{
	peer_name(c);
	if (c->ssl)
		c->xprt = &http_tls_xprt;
	conn_set_codec(c, &http1_codec, http1_new(c));
	if (!c->codec_data) {
		c->codec = NULL;
		conn_close(c);
		return;
	}
	conn_set_timer(c, TIMER_HEADER, c->s->o.header_timeout_ms);
	update_reading(c);
}
