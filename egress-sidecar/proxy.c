/* The DNS proxy (see proxy.h). */
#include "proxy.h"

#include "sbx/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define UDP_MAX		 65536
#define TCP_MAX_INFLIGHT 16 /* queries in flight per TCP client */

struct tcp_client {
	uv_tcp_t h;
	uv_timer_t idle;
	struct proxy *p;
	uint8_t *buf; /* length-prefixed messages being read */
	size_t len, cap;
	unsigned inflight;
	unsigned refs; /* the client itself, and each query in flight */
	bool closing;
	struct tcp_client *prev, *next;
};

struct proxy {
	uv_loop_t *loop;
	struct proxy_opts opts;
	struct egress_policy *const *policy;
	struct upstream *up;
	struct proxy_hooks hooks;
	uv_udp_t udp;
	uv_tcp_t tcp;
	uint8_t udp_buf[UDP_MAX];
	struct tcp_client *clients;
	struct proxy_stats stats;
	struct dns_answer answer; /* the answer being checked (one at a time, on the loop) */
	unsigned closing;
	bool freeing;
};

struct query {
	struct proxy *p;
	struct dns_question q;
	uint8_t *head; /* the query's header and question, for refusals */
	struct sockaddr_storage from;
	struct tcp_client *tcp;
	uint64_t t0;
};

const char *proxy_outcome_name(enum proxy_outcome o)
{
	static const char *const names[] = { "allowed",		"denied",      "chain_denied",
					     "upstream_failed", "not_learned", "not_a_query" };

	return o < PROXY_OUTCOMES ? names[o] : "?";
}

/* ---- replies ------------------------------------------------------------ */

struct send_req {
	union {
		uv_udp_send_t udp;
		uv_write_t tcp;
	} r;
	struct tcp_client *client;
	uint8_t data[];
};

static void client_unref(struct tcp_client *c);

static void on_udp_sent(uv_udp_send_t *r, int status)
{
	(void)status;
	sbx_free(r->data);
}

static void on_tcp_written(uv_write_t *r, int status)
{
	struct send_req *s = r->data;

	(void)status;
	client_unref(s->client);
	sbx_free(s);
}

/* An upstream answer goes back with the client's id in place of the one
 * c-ares chose. */
static void client_id(uint8_t *msg, const struct dns_question *q)
{
	msg[0] = (uint8_t)(q->id >> 8);
	msg[1] = (uint8_t)q->id;
}

/* Sends msg to a UDP client; answer_to: msg is an upstream answer to it
 * (its id is set, and it is truncated to the client's buffer). */
static void reply_udp(struct proxy *p, const struct sockaddr *to, const uint8_t *msg, size_t len,
		      const struct dns_question *answer_to)
{
	struct send_req *s = sbx_malloc(sizeof(*s) + len);
	uv_buf_t b;

	if (!s)
		return;
	memcpy(s->data, msg, len);
	if (answer_to) {
		client_id(s->data, answer_to);
		if (len > answer_to->udp_size)
			len = dns_truncate(s->data, len, answer_to);
	}
	b = uv_buf_init((char *)s->data, (unsigned)len);
	s->r.udp.data = s;
	if (uv_udp_send(&s->r.udp, &p->udp, &b, 1, to, on_udp_sent) != 0)
		sbx_free(s);
}

static void reply_tcp(struct tcp_client *c, const uint8_t *msg, size_t len,
		      const struct dns_question *answer_to)
{
	struct send_req *s;
	uv_buf_t b;

	if (c->closing || len > 65535 || !(s = sbx_malloc(sizeof(*s) + 2 + len)))
		return;
	s->data[0] = (uint8_t)(len >> 8);
	s->data[1] = (uint8_t)len;
	memcpy(s->data + 2, msg, len);
	if (answer_to)
		client_id(s->data + 2, answer_to);
	b = uv_buf_init((char *)s->data, (unsigned)(len + 2));
	s->client = c;
	s->r.tcp.data = s;
	c->refs++;
	if (uv_write(&s->r.tcp, (uv_stream_t *)&c->h, &b, 1, on_tcp_written) != 0) {
		c->refs--;
		sbx_free(s);
	}
}

static void reply(struct query *x, const uint8_t *msg, size_t len,
		  const struct dns_question *answer_to)
{
	if (x->tcp)
		reply_tcp(x->tcp, msg, len, answer_to);
	else
		reply_udp(x->p, (const struct sockaddr *)&x->from, msg, len, answer_to);
}

static void refuse(struct query *x, const uint8_t *query, int rcode)
{
	uint8_t out[DNS_HEADER + DNS_MAX_NAME + 8];
	size_t n = dns_refusal(query, &x->q, rcode, out, sizeof(out));

	if (n)
		reply(x, out, n, NULL);
}

/* ---- decisions ---------------------------------------------------------- */

static void describe(const struct egress_verdict v, char *rule, size_t size, const char **target)
{
	if (v.rule) {
		if (v.rule->origin == EGRESS_RULES)
			snprintf(rule, size, "rules[%u]", v.rule->index);
		else
			snprintf(rule, size, "%s[%u]", egress_origin_name(v.rule->origin),
				 v.rule->index);
		*target = v.rule->target;
	} else {
		snprintf(rule, size, "defaultAction");
		*target = NULL;
	}
}

static void decide(struct proxy *p, struct proxy_decision *d, struct egress_verdict v)
{
	char rule[48];

	p->stats.outcomes[d->outcome]++;
	describe(v, rule, sizeof(rule), &d->target);
	d->verdict = egress_action_name(v.action);
	d->rule = rule;
	if (p->hooks.decided)
		p->hooks.decided(p->hooks.arg, d);
	d->rule = NULL; /* rule is this call's */
}

static void query_done(struct query *x)
{
	struct proxy *p = x->p;

	p->stats.inflight--;
	if (x->tcp) {
		x->tcp->inflight--;
		client_unref(x->tcp);
	}
	sbx_free(x->head);
	sbx_free(x);
}

/* The answer of an allowed query: checked, learned, released. */
static void on_upstream(int status, const uint8_t *answer, size_t len, void *arg)
{
	struct query *x = arg;
	struct proxy *p = x->p;
	const struct egress_policy *pol = *p->policy;
	struct proxy_decision d = { .q = &x->q };
	struct dns_answer *a = &p->answer;
	struct egress_verdict v;
	char denied[DNS_MAX_NAME];

	if (status == -ECANCELED || p->freeing) {
		query_done(x);
		return;
	}
	d.upstream_ms = (double)(uv_hrtime() - x->t0) / 1e6;
	v = egress_policy_name(pol, x->q.name);
	if (status || dns_parse_answer(answer, len, &x->q, a)) {
		d.outcome = PROXY_UPSTREAM;
		refuse(x, x->head, DNS_SERVFAIL);
		decide(p, &d, v);
		goto out;
	}
	d.answer = a;
	/* Every name the answer went through, under the current policy. */
	for (size_t i = 0; i < a->n_names && v.action == EGRESS_ALLOW; i++) {
		struct egress_verdict n = egress_policy_name(pol, a->names[i]);

		if (n.action == EGRESS_DENY) {
			snprintf(denied, sizeof(denied), "%s", a->names[i]);
			v = n;
		}
	}
	if (a->chain_cut && v.action == EGRESS_ALLOW) {
		snprintf(denied, sizeof(denied), "%s", "a CNAME chain longer than 16 names");
		v = (struct egress_verdict){ .action = EGRESS_DENY };
	}
	for (size_t i = 0; i < a->n_addrs && v.action == EGRESS_ALLOW; i++) {
		struct egress_verdict n =
			egress_policy_answer(pol, v, a->addrs[i].family, a->addrs[i].addr);

		if (n.action == EGRESS_DENY) {
			inet_ntop(a->addrs[i].family, a->addrs[i].addr, denied, sizeof(denied));
			v = n;
		}
	}
	if (v.action == EGRESS_DENY) {
		d.outcome = PROXY_CHAIN;
		d.denied_name = denied;
		refuse(x, x->head, p->opts.deny_rcode);
		decide(p, &d, v);
		goto out;
	}
	/* The firewall learns the addresses before the client does. */
	if (p->hooks.learn && p->hooks.learn(p->hooks.arg, &x->q, a) != 0) {
		d.outcome = PROXY_NOT_LEARNED;
		refuse(x, x->head, DNS_SERVFAIL);
		decide(p, &d, v);
		goto out;
	}
	reply(x, answer, len, &x->q);
	d.outcome = PROXY_ALLOWED;
	decide(p, &d, v);
out:
	query_done(x);
}

/* One message from a client (UDP: from; TCP: c). */
static void handle(struct proxy *p, const uint8_t *msg, size_t len, const struct sockaddr *from,
		   struct tcp_client *c)
{
	struct query *x;
	struct egress_verdict v;
	struct proxy_decision d = { 0 };
	int rc;

	if (p->stats.inflight >= p->opts.max_inflight || (c && c->inflight >= TCP_MAX_INFLIGHT)) {
		p->stats.busy++;
		return;
	}
	if (!(x = sbx_calloc(1, sizeof(*x))))
		return;
	x->p = p;
	x->tcp = c;
	if (from)
		memcpy(&x->from, from,
		       from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						   : sizeof(struct sockaddr_in));
	rc = dns_parse_query(msg, len, &x->q);
	d.q = &x->q;
	if (rc == -EBADMSG || (rc == -ENOTSUP && !x->q.question_end)) {
		p->stats.malformed++;
		sbx_free(x);
		return;
	}
	v = rc == 0 ? egress_policy_name(*p->policy, x->q.name)
		    : (struct egress_verdict){ .action = EGRESS_DENY };
	if (rc == -ENOTSUP) {
		/* Another opcode: not implemented; another class or shape: refused. */
		refuse(x, msg, ((msg[2] >> 3) & 0xf) != 0 ? DNS_NOTIMP : DNS_REFUSED);
		d.outcome = PROXY_NOT_QUERY;
		decide(p, &d, v);
		sbx_free(x);
		return;
	}
	if (v.action == EGRESS_DENY) {
		refuse(x, msg, p->opts.deny_rcode);
		d.outcome = PROXY_DENIED;
		decide(p, &d, v);
		sbx_free(x);
		return;
	}
	if (!(x->head = sbx_malloc(x->q.question_end))) {
		sbx_free(x);
		return;
	}
	memcpy(x->head, msg, x->q.question_end);
	x->t0 = uv_hrtime();
	p->stats.inflight++;
	if (c) {
		c->inflight++;
		c->refs++;
	}
	upstream_send(p->up, msg, len, on_upstream, x);
}

/* ---- UDP ---------------------------------------------------------------- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct proxy *p = h->data;

	(void)suggested;
	*b = uv_buf_init((char *)p->udp_buf, sizeof(p->udp_buf));
}

static void on_udp(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
		   unsigned flags)
{
	struct proxy *p = h->data;

	if (n <= 0 || !from)
		return;
	if (flags & UV_UDP_PARTIAL) {
		p->stats.malformed++;
		return;
	}
	handle(p, (const uint8_t *)b->base, (size_t)n, from, NULL);
}

/* ---- TCP ---------------------------------------------------------------- */

static void on_client_closed(uv_handle_t *h)
{
	client_unref(h->data);
}

static void client_close(struct tcp_client *c)
{
	struct proxy *p = c->p;

	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->stats.tcp_clients--;
	/* Two handles: the client stays until both are closed and nothing is
	 * in flight (refs: the client, one per handle, one per query). */
	c->refs++;
	uv_close((uv_handle_t *)&c->idle, on_client_closed);
	uv_close((uv_handle_t *)&c->h, on_client_closed);
}

static void client_unref(struct tcp_client *c)
{
	if (--c->refs == 0) {
		struct proxy *p = c->p;

		sbx_free(c->buf);
		sbx_free(c);
		if (--p->closing == 0 && p->freeing)
			sbx_free(p);
	}
}

static void on_idle(uv_timer_t *t)
{
	struct tcp_client *c = t->data;

	if (c->inflight)
		uv_timer_again(t);
	else
		client_close(c);
}

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct tcp_client *c = h->data;
	size_t want = c->len + 4096;

	(void)suggested;
	if (want > 2 + 65535 + 4096)
		want = 2 + 65535 + 4096;
	if (c->cap < want) {
		uint8_t *nb = sbx_realloc(c->buf, want);

		if (!nb) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
		c->buf = nb;
		c->cap = want;
	}
	*b = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct tcp_client *c = s->data;
	size_t off = 0;

	(void)b;
	if (n < 0) {
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	uv_timer_again(&c->idle);
	while (c->len - off >= 2) {
		size_t m = (size_t)c->buf[off] << 8 | c->buf[off + 1];

		if (m < DNS_HEADER) {
			c->p->stats.malformed++;
			client_close(c);
			return;
		}
		if (c->len - off - 2 < m)
			break;
		handle(c->p, c->buf + off + 2, m, NULL, c);
		if (c->closing)
			return;
		off += 2 + m;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
}

static void on_tcp_client(uv_stream_t *server, int status)
{
	struct proxy *p = server->data;
	struct tcp_client *c;

	if (status < 0 || !(c = sbx_calloc(1, sizeof(*c))))
		return;
	c->p = p;
	c->refs = 1;
	uv_tcp_init(p->loop, &c->h);
	uv_timer_init(p->loop, &c->idle);
	c->h.data = c;
	c->idle.data = c;
	p->closing++;
	if (uv_accept(server, (uv_stream_t *)&c->h) != 0 ||
	    p->stats.tcp_clients >= p->opts.max_tcp_clients) {
		c->closing = true;
		c->refs++;
		uv_close((uv_handle_t *)&c->idle, on_client_closed);
		uv_close((uv_handle_t *)&c->h, on_client_closed);
		p->stats.busy++;
		return;
	}
	c->next = p->clients;
	if (c->next)
		c->next->prev = c;
	p->clients = c;
	p->stats.tcp_clients++;
	uv_timer_start(&c->idle, on_idle, p->opts.tcp_idle_ms, p->opts.tcp_idle_ms);
	uv_read_start((uv_stream_t *)&c->h, tcp_alloc, on_tcp_read);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int parse_addr(const char *text, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(text, ':');
	int port;

	if (!colon || (size_t)(colon - text) >= sizeof(host) ||
	    sscanf(colon + 1, "%d", &port) != 1 || port < 0 || port > 65535)
		return -EINVAL;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	if (host[0] == '[') {
		size_t n = strlen(host);

		if (n < 2 || host[n - 1] != ']')
			return -EINVAL;
		host[n - 1] = '\0';
		return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss) ? -EINVAL : 0;
	}
	if (!host[0])
		return uv_ip4_addr("0.0.0.0", port, (struct sockaddr_in *)ss) ? -EINVAL : 0;
	return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) ? -EINVAL : 0;
}

static void on_proxy_closed(uv_handle_t *h)
{
	struct proxy *p = h->data;

	if (--p->closing == 0 && p->freeing)
		sbx_free(p);
}

int proxy_new(uv_loop_t *loop, const struct proxy_opts *opts, struct egress_policy *const *policy,
	      struct upstream *up, const struct proxy_hooks *hooks, struct proxy **out, char *err,
	      size_t err_size)
{
	struct sockaddr_storage ss = { 0 };
	struct proxy *p;
	int rc;

	if (parse_addr(opts->listen, &ss)) {
		snprintf(err, err_size, "listen address \"%s\": want IP:PORT or [IPv6]:PORT",
			 opts->listen);
		return -EINVAL;
	}
	if (!(p = sbx_calloc(1, sizeof(*p))))
		return -ENOMEM;
	p->loop = loop;
	p->opts = *opts;
	if (!p->opts.max_inflight)
		p->opts.max_inflight = 1024;
	if (!p->opts.tcp_idle_ms)
		p->opts.tcp_idle_ms = 10000;
	if (!p->opts.max_tcp_clients)
		p->opts.max_tcp_clients = 256;
	if (p->opts.deny_rcode != DNS_REFUSED)
		p->opts.deny_rcode = DNS_NXDOMAIN;
	p->policy = policy;
	p->up = up;
	if (hooks)
		p->hooks = *hooks;
	uv_udp_init(loop, &p->udp);
	uv_tcp_init(loop, &p->tcp);
	p->udp.data = p;
	p->tcp.data = p;
	if ((rc = uv_udp_bind(&p->udp, (const struct sockaddr *)&ss, 0)) ||
	    (rc = uv_tcp_bind(&p->tcp, (const struct sockaddr *)&ss, 0)) ||
	    (rc = uv_listen((uv_stream_t *)&p->tcp, 128, on_tcp_client)) ||
	    (rc = uv_udp_recv_start(&p->udp, udp_alloc, on_udp))) {
		snprintf(err, err_size, "listen on %s: %s", opts->listen, uv_strerror(rc));
		proxy_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

const struct proxy_stats *proxy_stats(const struct proxy *p)
{
	return &p->stats;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	p->freeing = true;
	while (p->clients)
		client_close(p->clients);
	p->closing += 2;
	uv_close((uv_handle_t *)&p->udp, on_proxy_closed);
	uv_close((uv_handle_t *)&p->tcp, on_proxy_closed);
}
