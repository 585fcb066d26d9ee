/* Forwarding queries upstream with c-ares on the libuv loop (see upstream.h).
 *
 * c-ares tells which sockets it wants watched (sock_state_cb): each gets a
 * uv_poll; one timer runs c-ares' own retry and timeout clock. */
#include "upstream.h"

#include "sbx/alloc.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

struct watch {
	uv_poll_t poll;
	ares_socket_t fd;
	struct upstream *u;
	struct watch *next;
};

struct upstream {
	uv_loop_t *loop;
	uint32_t mark;
	ares_channel channel;
	bool channel_ready;
	uv_timer_t timer;
	struct watch *watches;
	unsigned closing; /* handles whose close callback has not run yet */
	bool freeing;
};

struct pending {
	upstream_cb cb;
	void *arg;
};

static void arm_timer(struct upstream *u);

static void process(struct upstream *u, ares_socket_t r, ares_socket_t w)
{
	ares_process_fd(u->channel, r, w);
	arm_timer(u);
}

static void on_timer(uv_timer_t *t)
{
	process(t->data, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void arm_timer(struct upstream *u)
{
	struct timeval tv, *next;

	if (u->freeing)
		return;
	next = ares_timeout(u->channel, NULL, &tv);
	if (!next) {
		uv_timer_stop(&u->timer);
		return;
	}
	uv_timer_start(&u->timer, on_timer,
		       (uint64_t)next->tv_sec * 1000 + (uint64_t)next->tv_usec / 1000 + 1, 0);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct watch *w = p->data;

	/* An error on the socket is c-ares' to notice: let it read and write. */
	if (status < 0)
		events = UV_READABLE | UV_WRITABLE;
	process(w->u, events & UV_READABLE ? w->fd : ARES_SOCKET_BAD,
		events & UV_WRITABLE ? w->fd : ARES_SOCKET_BAD);
}

static void on_closed(uv_handle_t *h)
{
	struct upstream *u;

	if (h->type == UV_POLL) {
		struct watch *w = h->data;

		u = w->u;
		sbx_free(w);
	} else {
		u = h->data;
	}
	if (--u->closing == 0 && u->freeing)
		sbx_free(u);
}

static void close_watch(struct watch *w)
{
	w->u->closing++;
	uv_close((uv_handle_t *)&w->poll, on_closed);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct upstream *u = data;
	struct watch **pp = &u->watches, *w;

	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	w = *pp;
	if (!readable && !writable) {
		if (w) {
			*pp = w->next;
			uv_poll_stop(&w->poll);
			close_watch(w);
		}
		return;
	}
	if (!w) {
		if (!(w = sbx_calloc(1, sizeof(*w))))
			return; /* c-ares times the query out */
		if (uv_poll_init_socket(u->loop, &w->poll, fd) != 0) {
			sbx_free(w);
			return;
		}
		w->fd = fd;
		w->u = u;
		w->poll.data = w;
		w->next = u->watches;
		u->watches = w;
	}
	uv_poll_start(&w->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
		      on_poll);
}

/* Marks the socket, so the firewall lets the proxy's own queries out. */
static int on_socket(ares_socket_t fd, int type, void *arg)
{
	struct upstream *u = arg;

	(void)type;
	if (u->mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &u->mark, sizeof(u->mark)) != 0)
		return -1; /* without the mark the query would loop back to the proxy */
	return 0;
}

int upstream_new(uv_loop_t *loop, const struct upstream_opts *opts, struct upstream **out,
		 char *err, size_t err_size)
{
	struct ares_options o = { 0 };
	struct upstream *u;
	int mask, rc;

	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, err_size, "c-ares: %s", ares_strerror(rc));
		return -EIO;
	}
	if (!(u = sbx_calloc(1, sizeof(*u))))
		return -ENOMEM;
	u->loop = loop;
	o.sock_state_cb = on_sock_state;
	o.sock_state_cb_data = u;
	o.timeout = (int)(opts->timeout_ms ? opts->timeout_ms : 2000);
	o.tries = (int)(opts->tries ? opts->tries : 2);
	/* Forward what the upstream says (SERVFAIL, REFUSED too) as it says it. */
	o.flags = ARES_FLAG_NOCHECKRESP;
	mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
	if (opts->resolv_conf && *opts->resolv_conf) {
		o.resolvconf_path = (char *)opts->resolv_conf;
		mask |= ARES_OPT_RESOLVCONF;
	}
	if ((rc = ares_init_options(&u->channel, &o, mask)) != ARES_SUCCESS) {
		snprintf(err, err_size, "c-ares: %s", ares_strerror(rc));
		sbx_free(u);
		return -EINVAL;
	}
	u->channel_ready = true;
	if (opts->servers && *opts->servers &&
	    (rc = ares_set_servers_ports_csv(u->channel, opts->servers)) != ARES_SUCCESS) {
		snprintf(err, err_size, "upstream \"%s\": %s (want IP:PORT,[IPv6]:PORT)",
			 opts->servers, ares_strerror(rc));
		ares_destroy(u->channel);
		sbx_free(u);
		return -EINVAL;
	}
	u->mark = opts->mark;
	ares_set_socket_configure_callback(u->channel, on_socket, u);
	uv_timer_init(loop, &u->timer);
	u->timer.data = u;
	*out = u;
	return 0;
}

static int errno_of(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return 0;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_ECONNREFUSED:
		return -ECONNREFUSED;
	case ARES_EDESTRUCTION:
	case ARES_ECANCELLED:
		return -ECANCELED;
	case ARES_ENOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct pending *p = arg;

	(void)timeouts;
	if (status == ARES_SUCCESS && (!abuf || alen <= 0))
		status = ARES_EBADRESP;
	p->cb(errno_of(status), status == ARES_SUCCESS ? abuf : NULL,
	      status == ARES_SUCCESS ? (size_t)alen : 0, p->arg);
	sbx_free(p);
}

void upstream_send(struct upstream *u, const uint8_t *query, size_t len, upstream_cb cb, void *arg)
{
	struct pending *p;

	if (u->freeing || len > 65535 || !(p = sbx_malloc(sizeof(*p)))) {
		cb(u->freeing ? -ECANCELED : -ENOMEM, NULL, 0, arg);
		return;
	}
	p->cb = cb;
	p->arg = arg;
	ares_send(u->channel, query, (int)len, on_answer, p);
	arm_timer(u);
}

void upstream_servers(const struct upstream *u, char *buf, size_t size)
{
	struct ares_addr_port_node *servers = NULL;
	size_t n = 0;

	buf[0] = '\0';
	if (ares_get_servers_ports(u->channel, &servers) != ARES_SUCCESS)
		return;
	for (struct ares_addr_port_node *s = servers; s && n < size; s = s->next) {
		char ip[INET6_ADDRSTRLEN];
		int w;

		inet_ntop(s->family, &s->addr, ip, sizeof(ip));
		w = snprintf(buf + n, size - n, s->family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d",
			     n ? "," : "", ip, s->udp_port ? s->udp_port : 53);
		if (w < 0)
			break;
		n += (size_t)w;
	}
	ares_free_data(servers);
}

void upstream_free(struct upstream *u)
{
	if (!u)
		return;
	/* Every pending callback runs now, with -ECANCELED. */
	ares_destroy(u->channel);
	u->freeing = true;
	while (u->watches) {
		struct watch *w = u->watches;

		u->watches = w->next;
		close_watch(w);
	}
	u->closing++;
	uv_close((uv_handle_t *)&u->timer, on_closed);
}
