/* The DNS proxy: UDP and TCP on one address. A denied name is answered
 * NXDOMAIN (or REFUSED) at once; an allowed one is forwarded upstream, and
 * its answer is released only when every name of its CNAME chain is allowed,
 * none of its addresses is in a range placed before the rule that allowed it,
 * and the learn hook has admitted its addresses (the firewall's allow sets).
 */
#ifndef SBX_EGRESS_PROXY_H
#define SBX_EGRESS_PROXY_H

#include "dns.h"
#include "policy.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct proxy;

struct proxy_opts {
	const char *listen;	  /* "127.0.0.1:15353", "[::1]:15353" */
	unsigned max_inflight;	  /* queries forwarded at once (default 1024) */
	unsigned tcp_idle_ms;	  /* a TCP client with nothing in flight (default 10000) */
	unsigned max_tcp_clients; /* default 256 */
	int deny_rcode;		  /* DNS_NXDOMAIN (default) or DNS_REFUSED */
};

/* What happened to a query, for the decision log and the counters. */
enum proxy_outcome {
	PROXY_ALLOWED,	   /* answered from upstream */
	PROXY_DENIED,	   /* the name's verdict */
	PROXY_CHAIN,	   /* a name of the CNAME chain, or an address, is denied */
	PROXY_UPSTREAM,	   /* the upstream failed or answered nonsense: SERVFAIL */
	PROXY_NOT_LEARNED, /* the learn hook refused: SERVFAIL */
	PROXY_NOT_QUERY,   /* not a standard query: REFUSED / NOTIMP */
	PROXY_OUTCOMES
};

struct proxy_decision {
	const struct dns_question *q;
	enum proxy_outcome outcome;
	const char *verdict;		 /* "allow" or "deny" */
	const char *rule;		 /* "rules[3]", "alwaysDeny[0]", "defaultAction" */
	const char *target;		 /* the deciding rule's target, or NULL */
	const char *denied_name;	 /* PROXY_CHAIN: the name or address that was denied */
	const struct dns_answer *answer; /* PROXY_ALLOWED, PROXY_CHAIN */
	double upstream_ms;
};

struct proxy_hooks {
	/* The addresses of an answer about to be released (n may be 0). Return
	 * 0 once they are admitted; a negative errno refuses the answer. */
	int (*learn)(void *arg, const struct dns_question *q, const struct dns_answer *a);
	void (*decided)(void *arg, const struct proxy_decision *d);
	void *arg;
};

struct proxy_stats {
	unsigned long outcomes[PROXY_OUTCOMES];
	unsigned long malformed; /* dropped */
	unsigned long busy;	 /* dropped: max_inflight reached */
	unsigned long inflight;
	unsigned long tcp_clients;
};

/* policy points at the owner's current policy: a new one applies to the next
 * query, and to the answers of queries in flight. */
int proxy_new(uv_loop_t *loop, const struct proxy_opts *opts, struct egress_policy *const *policy,
	      struct upstream *up, const struct proxy_hooks *hooks, struct proxy **out, char *err,
	      size_t err_size);
const struct proxy_stats *proxy_stats(const struct proxy *p);
/* Stops listening and closes clients. Free the upstream first: that ends
 * every query in flight (their answers are dropped). */
void proxy_free(struct proxy *p);

const char *proxy_outcome_name(enum proxy_outcome o);

#endif
