/* The pod's egress firewall in nftables (see firewall.h).
 *
 * The table and the policy's rules are written in nft's own language and
 * handed to libnftables, which checks and sends each batch as one netlink
 * transaction. Learning an answer's addresses is the hot path (every allowed
 * query waits on it) and takes a shorter one: the element messages are built
 * with libnftnl and sent on a netlink socket of our own. libnftables would
 * first refresh its cache of the table, and for a set with timeouts that
 * means reading every element back: the cost of each learn would grow with
 * the addresses already learned.
 */
#include "firewall.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SCRIPT_MAX (8u << 20)
/* A batch holds DNS_MAX_ADDRS addresses three times (about 16 KiB); libmnl
 * lets one message pass the limit, so the buffer is twice as large. */
#define BATCH_MAX (64u << 10)

struct firewall {
	struct nft_ctx *nft; /* the one that installed the table, until firewall_trim */
	struct firewall_opts opts;
	struct mnl_socket *nl; /* for the element messages */
	uint32_t portid, seq;
	char *batch; /* 2 * BATCH_MAX bytes */
};

static struct nft_ctx *context(void)
{
	struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);

	if (nft) {
		nft_ctx_buffer_output(nft);
		nft_ctx_buffer_error(nft);
	}
	return nft;
}

/* Runs script; on failure copies nft's first error line into err. */
static int run(struct nft_ctx *nft, const char *script, char *err, size_t err_size)
{
	const char *e;
	size_t n;

	if (nft_run_cmd_from_buffer(nft, script) == 0)
		return 0;
	e = nft_ctx_get_error_buffer(nft);
	if (err && err_size) {
		n = e ? strcspn(e, "\n") : 0;
		snprintf(err, err_size, "nftables: %.*s", (int)n, n ? e : "refused the rules");
	}
	return e && (strstr(e, "Operation not permitted") || strstr(e, "Permission denied"))
		       ? -EPERM
		       : -EOPNOTSUPP;
}

/* run() in a context of its own: libnftables keeps a cache of the table
 * and its parser's buffers in a context, which a sidecar that changes its
 * rules rarely need not hold between changes. */
static int run_once(const char *script, char *err, size_t err_size)
{
	struct nft_ctx *nft = context();
	int rc;

	if (!nft) {
		snprintf(err, err_size, "nftables: cannot make a context");
		return -ENOMEM;
	}
	rc = run(nft, script, err, err_size);
	nft_ctx_free(nft);
	return rc;
}

int firewall_check(char *err, size_t err_size)
{
	static const char *const probes[][2] = {
		{ "an inet table", "add table inet sbx_egress_probe\n" },
		{ "sets with timeouts",
		  "add set inet sbx_egress_probe t { type ipv4_addr; flags timeout; }\n"
		  "add element inet sbx_egress_probe t { 192.0.2.1 timeout 5s }\n" },
		{ "interval sets",
		  "add set inet sbx_egress_probe i { type ipv6_addr; flags interval; }\n"
		  "add element inet sbx_egress_probe i { 2001:db8::/32 }\n" },
		{ "nat redirect in output",
		  "add chain inet sbx_egress_probe n { type nat hook output priority -100; }\n"
		  "add rule inet sbx_egress_probe n udp dport 53 redirect to :15353\n" },
		{ "conntrack and marks",
		  "add chain inet sbx_egress_probe f { type filter hook output priority 0; }\n"
		  "add rule inet sbx_egress_probe f ct state established,related accept\n"
		  "add rule inet sbx_egress_probe f meta mark 0x1 accept\n"
		  "add chain inet sbx_egress_probe r { type filter hook output priority -300; }\n"
		  "add rule inet sbx_egress_probe r meta mark 0x1 notrack\n" },
	};
	struct nft_ctx *nft = context();
	int rc = 0;

	if (!nft) {
		snprintf(err, err_size, "nftables: cannot make a context");
		return -ENOMEM;
	}
	run(nft, "delete table inet sbx_egress_probe\n", NULL, 0);
	for (size_t i = 0; !rc && i < sizeof(probes) / sizeof(probes[0]); i++) {
		char e[256];

		if ((rc = run(nft, probes[i][1], e, sizeof(e))))
			snprintf(err, err_size, "the kernel lacks %s (%s)%s", probes[i][0], e,
				 rc == -EPERM ? "; sbx-egress needs CAP_NET_ADMIN" : "");
	}
	run(nft, "delete table inet sbx_egress_probe\n", NULL, 0);
	nft_ctx_free(nft);
	return rc;
}

/* The address rules of policy, in order, into the chain "rules". */
static int policy_rules(struct sbx_buf *b, const struct egress_policy *p)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < egress_policy_count(p); i++) {
		const struct egress_rule *r = egress_policy_rule(p, i);
		const char *verdict = r->action == EGRESS_ALLOW ? "accept" : "drop";
		char ip[INET6_ADDRSTRLEN];

		if (r->kind == EGRESS_ANY) {
			rc = sbx_buf_printf(b, "add rule inet %s rules %s\n", FIREWALL_TABLE,
					    verdict);
			break; /* nothing after "*" is reached */
		}
		if (r->kind != EGRESS_NET || !inet_ntop(r->net.family, r->net.addr, ip, sizeof(ip)))
			continue;
		rc = sbx_buf_printf(b, "add rule inet %s rules %s daddr %s/%u %s\n", FIREWALL_TABLE,
				    r->net.family == AF_INET ? "ip" : "ip6", ip, r->net.prefix,
				    verdict);
	}
	return rc;
}

/* The output chain's rules (the chain is empty or new): what always passes,
 * DoT, the learned addresses, the policy's address rules, the default. */
static int output_rules(struct sbx_buf *b, const struct firewall_opts *o,
			const struct egress_policy *p)
{
	int rc = sbx_buf_printf(
		b,
		"add rule inet %1$s output oifname \"lo\" accept\n"
		/* DNS redirected to the proxy still has the oif it was routed to
		 * before the redirect; its new destination is loopback. */
		"add rule inet %1$s output ip daddr 127.0.0.0/8 accept\n"
		"add rule inet %1$s output ip6 daddr ::1 accept\n"
		"add rule inet %1$s output meta mark 0x%2$x accept\n"
		/* IPv6 finds its neighbours and routers with ICMPv6. */
		"add rule inet %1$s output icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, "
		"nd-router-solicit, mld2-listener-report } accept\n"
		"add rule inet %1$s output ct state established,related accept\n"
		"add rule inet %1$s output meta l4proto { tcp, udp } th dport 853 drop\n"
		"add rule inet %1$s output ip daddr @learned4 accept\n"
		"add rule inet %1$s output ip6 daddr @learned6 accept\n"
		"add rule inet %1$s output ip daddr @doh4 meta l4proto { tcp, udp } th dport 443 drop\n"
		"add rule inet %1$s output ip6 daddr @doh6 meta l4proto { tcp, udp } th dport 443 "
		"drop\n"
		"add rule inet %1$s output jump rules\n"
		"add rule inet %1$s output %3$s\n",
		FIREWALL_TABLE, o->mark,
		egress_policy_default(p) == EGRESS_ALLOW ? "accept" : "drop");

	return rc ? rc : policy_rules(b, p);
}

/* The whole table, replacing any earlier one, as one script. */
static int table_script(struct sbx_buf *b, const struct firewall_opts *o,
			const struct egress_policy *p)
{
	/* "add" then "delete" removes a table whether or not it was there; the
	 * new one follows in the same transaction, so nothing passes between. */
	int rc = sbx_buf_printf(
		b,
		"add table inet %1$s\n"
		"delete table inet %1$s\n"
		"add table inet %1$s\n"
		"add set inet %1$s learned4 { type ipv4_addr; flags timeout; size 65536; }\n"
		"add set inet %1$s learned6 { type ipv6_addr; flags timeout; size 65536; }\n"
		"add set inet %1$s doh4 { type ipv4_addr; flags interval; auto-merge; }\n"
		"add set inet %1$s doh6 { type ipv6_addr; flags interval; auto-merge; }\n"
		/* The proxy's own queries are not tracked: a client's finished
		 * query leaves a conntrack entry, redirected to the proxy, that a
		 * new upstream socket on the same port would otherwise match and
		 * be sent back to the proxy by. Their answers neither. */
		"add chain inet %1$s raw { type filter hook output priority -300; }\n"
		"add rule inet %1$s raw meta mark 0x%2$x notrack\n"
		"add chain inet %1$s rawin { type filter hook prerouting priority -300; }\n"
		"add rule inet %1$s rawin meta l4proto { tcp, udp } th sport 53 notrack\n"
		"add chain inet %1$s dns { type nat hook output priority -100; policy accept; }\n"
		"add rule inet %1$s dns meta mark 0x%2$x return\n"
		"add rule inet %1$s dns udp dport 53 redirect to :%3$u\n"
		"add rule inet %1$s dns tcp dport 53 redirect to :%3$u\n"
		"add chain inet %1$s rules\n"
		"add chain inet %1$s output { type filter hook output priority 0; policy drop; }\n",
		FIREWALL_TABLE, o->mark, o->dns_port);

	for (size_t i = 0; !rc && i < o->n_doh_nets; i++)
		rc = sbx_buf_printf(b, "add element inet %s %s { %s }\n", FIREWALL_TABLE,
				    strchr(o->doh_nets[i], ':') ? "doh6" : "doh4", o->doh_nets[i]);
	return rc ? rc : output_rules(b, o, p);
}

int firewall_new(const struct firewall_opts *opts, const struct egress_policy *policy,
		 struct firewall **out, char *err, size_t err_size)
{
	struct firewall *fw = sbx_calloc(1, sizeof(*fw));
	struct sbx_buf b;
	int rc;

	if (!fw || !(fw->nft = context())) {
		sbx_free(fw);
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	fw->opts = *opts;
	if (!fw->opts.max_s)
		fw->opts.max_s = 86400;
	if (!(fw->batch = sbx_malloc(2 * BATCH_MAX)) ||
	    !(fw->nl = mnl_socket_open(NETLINK_NETFILTER)) ||
	    mnl_socket_bind(fw->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		snprintf(err, err_size, "nftables: netlink socket: %s", strerror(errno));
		firewall_free(fw);
		return -errno;
	}
	fw->portid = mnl_socket_get_portid(fw->nl);
	fw->seq = (uint32_t)time(NULL);
	sbx_buf_init(&b, SCRIPT_MAX);
	rc = table_script(&b, &fw->opts, policy);
	if (!rc)
		rc = run(fw->nft, b.data, err, err_size);
	else
		snprintf(err, err_size, "the rules do not fit in %u bytes", SCRIPT_MAX);
	sbx_buf_release(&b);
	if (rc) {
		firewall_free(fw);
		return rc;
	}
	*out = fw;
	return 0;
}

int firewall_update(struct firewall *fw, const struct egress_policy *policy, char *err,
		    size_t err_size)
{
	struct sbx_buf b;
	int rc;

	sbx_buf_init(&b, SCRIPT_MAX);
	/* The learned addresses were learned under the old policy: forgotten. */
	rc = sbx_buf_printf(&b,
			    "flush chain inet %1$s rules\n"
			    "flush chain inet %1$s output\n"
			    "flush set inet %1$s learned4\n"
			    "flush set inet %1$s learned6\n",
			    FIREWALL_TABLE);
	if (!rc)
		rc = output_rules(&b, &fw->opts, policy);
	if (!rc)
		rc = fw->nft ? run(fw->nft, b.data, err, err_size)
			     : run_once(b.data, err, err_size);
	sbx_buf_release(&b);
	return rc;
}

/* One element message on the set of family, for the answer's addresses of
 * that family: with timeout_ms (or none, 0), or a deletion. false when the
 * batch buffer is full. */
static bool put_elems(struct firewall *fw, struct mnl_nlmsg_batch *b, int family, int type,
		      uint16_t flags, const struct dns_answer *a, bool timeout)
{
	struct nftnl_set *set = nftnl_set_alloc();
	struct nlmsghdr *nlh;
	bool ok = set != NULL;

	if (!ok)
		return false;
	nftnl_set_set_str(set, NFTNL_SET_TABLE, FIREWALL_TABLE);
	nftnl_set_set_str(set, NFTNL_SET_NAME, family == AF_INET ? "learned4" : "learned6");
	for (size_t i = 0; ok && i < a->n_addrs; i++) {
		const struct dns_addr *d = &a->addrs[i];
		struct nftnl_set_elem *e;
		unsigned long t = (unsigned long)d->ttl + fw->opts.grace_s;

		if (d->family != family)
			continue;
		if (!(e = nftnl_set_elem_alloc())) {
			ok = false;
			break;
		}
		nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, d->addr, family == AF_INET ? 4 : 16);
		if (timeout) {
			if (t < fw->opts.min_s)
				t = fw->opts.min_s;
			if (t > fw->opts.max_s)
				t = fw->opts.max_s;
			nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT,
					       (uint64_t)(t ? t : 1) * 1000);
		}
		nftnl_set_elem_add(set, e);
	}
	if (ok) {
		nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b),
					    (uint16_t)((NFNL_SUBSYS_NFTABLES << 8) | type),
					    NFPROTO_INET, flags, fw->seq++);
		nftnl_set_elems_nlmsg_build_payload(nlh, set);
		mnl_nlmsg_batch_next(b);
	}
	nftnl_set_free(set);
	return ok;
}

int firewall_learn(struct firewall *fw, const struct dns_answer *a)
{
	struct mnl_nlmsg_batch *b;
	bool has[2] = { false, false }, ok = true;
	char reply[MNL_SOCKET_BUFFER_SIZE];
	ssize_t n;
	int rc = 0;

	for (size_t i = 0; i < a->n_addrs; i++)
		has[a->addrs[i].family == AF_INET6] = true;
	if (!has[0] && !has[1])
		return 0;
	if (!(b = mnl_nlmsg_batch_start(fw->batch, BATCH_MAX)))
		return -ENOMEM;
	nftnl_batch_begin(mnl_nlmsg_batch_current(b), fw->seq++);
	mnl_nlmsg_batch_next(b);
	/* A new element's timeout is set by adding it; an element already
	 * there keeps its own, so it is added (without a timeout: a no-op if
	 * present), deleted and added again, in the same transaction. */
	for (int f = 0; ok && f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;

		if (!has[f])
			continue;
		ok = put_elems(fw, b, family, NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, a,
			       false) &&
		     put_elems(fw, b, family, NFT_MSG_DELSETELEM, NLM_F_REQUEST, a, false) &&
		     put_elems(fw, b, family, NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, a,
			       true);
	}
	if (!ok) {
		mnl_nlmsg_batch_stop(b);
		return -ENOMEM;
	}
	nftnl_batch_end(mnl_nlmsg_batch_current(b), fw->seq++);
	mnl_nlmsg_batch_next(b);
	/* The kernel runs the transaction within the send: when it returns,
	 * the addresses are in, or an error message waits on the socket. */
	if (mnl_socket_sendto(fw->nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0)
		rc = -errno;
	mnl_nlmsg_batch_stop(b);
	while (!rc && (n = recv(mnl_socket_get_fd(fw->nl), reply, sizeof(reply), MSG_DONTWAIT)) > 0)
		if (mnl_cb_run(reply, (size_t)n, 0, fw->portid, NULL, NULL) < 0)
			rc = errno ? -errno : -EIO;
	return rc;
}

static int count_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct nftnl_set *set = nftnl_set_alloc();
	struct nftnl_set_elems_iter *it;
	long *n = arg;

	if (!set)
		return MNL_CB_ERROR;
	if (nftnl_set_elems_nlmsg_parse(nlh, set) == 0 && (it = nftnl_set_elems_iter_create(set))) {
		while (nftnl_set_elems_iter_next(it))
			(*n)++;
		nftnl_set_elems_iter_destroy(it);
	}
	nftnl_set_free(set);
	return MNL_CB_OK;
}

/* The elements of a learned set, read back from the kernel (a dump). */
static long count_elements(struct firewall *fw, const char *name)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nftnl_set *set = nftnl_set_alloc();
	struct nlmsghdr *nlh;
	uint32_t seq = fw->seq++;
	long n = 0;
	ssize_t r;
	int rc = MNL_CB_OK;

	if (!set)
		return -1;
	nlh = nftnl_nlmsg_build_hdr(buf, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
				    NFPROTO_INET, NLM_F_DUMP | NLM_F_REQUEST, seq);
	nftnl_set_set_str(set, NFTNL_SET_TABLE, FIREWALL_TABLE);
	nftnl_set_set_str(set, NFTNL_SET_NAME, name);
	nftnl_set_elems_nlmsg_build_payload(nlh, set);
	nftnl_set_free(set);
	if (mnl_socket_sendto(fw->nl, nlh, nlh->nlmsg_len) < 0)
		return -1;
	while (rc > MNL_CB_STOP && (r = mnl_socket_recvfrom(fw->nl, buf, sizeof(buf))) > 0)
		rc = mnl_cb_run(buf, (size_t)r, seq, fw->portid, count_cb, &n);
	return rc < 0 ? -1 : n;
}

long firewall_learned(struct firewall *fw)
{
	long a = count_elements(fw, "learned4"), b = count_elements(fw, "learned6");

	return a < 0 || b < 0 ? -1 : a + b;
}

void firewall_trim(struct firewall *fw)
{
	if (fw->nft)
		nft_ctx_free(fw->nft);
	fw->nft = NULL;
}

void firewall_free(struct firewall *fw)
{
	if (!fw)
		return;
	firewall_trim(fw);
	if (fw->nl)
		mnl_socket_close(fw->nl);
	sbx_free(fw->batch);
	sbx_free(fw);
}

int firewall_cleanup(char *err, size_t err_size)
{
	struct nft_ctx *nft = context();
	char script[128];
	int rc;

	if (!nft) {
		snprintf(err, err_size, "nftables: cannot make a context");
		return -ENOMEM;
	}
	snprintf(script, sizeof(script), "add table inet %1$s\ndelete table inet %1$s\n",
		 FIREWALL_TABLE);
	rc = run(nft, script, err, err_size);
	nft_ctx_free(nft);
	return rc;
}
