/* The pod's egress firewall: one nftables table of sbx-egress's own
 * (libnftables), in the pod's network namespace.
 *
 *   - nat output: DNS (UDP and TCP port 53) to the proxy's port, except the
 *     proxy's own upstream queries (their sockets carry the mark);
 *   - filter output, policy drop (or accept with defaultAction allow):
 *     loopback, the mark, established flows; DoT (853) dropped; the learned
 *     addresses (sets with per-element timeouts) accepted; DNS over HTTPS to
 *     known resolvers' addresses dropped; then the policy's address rules and
 *     "*" in their order.
 *
 * The table stays when the process dies (traffic stays blocked: fail closed)
 * and goes only with firewall_cleanup (`sbx-egress cleanup`).
 */
#ifndef SBX_EGRESS_FIREWALL_H
#define SBX_EGRESS_FIREWALL_H

#include "dns.h"
#include "policy.h"

#include <stddef.h>
#include <stdint.h>

#define FIREWALL_TABLE "sbx_egress"

struct firewall;

struct firewall_opts {
	uint16_t dns_port; /* where DNS is redirected: the proxy's port on loopback */
	uint32_t mark;	   /* the proxy's upstream sockets' SO_MARK (nonzero) */
	/* A learned address lives for its TTL plus grace_s, within [min_s, max_s]. */
	unsigned grace_s, min_s, max_s;
	/* Addresses of known DNS-over-HTTPS services ("1.1.1.1", "2620:fe::/48"):
	 * port 443 to them is dropped unless an answer to an allowed name gave
	 * them. */
	const char *const *doh_nets;
	size_t n_doh_nets;
};

/* Checks that the kernel does what the table needs (an inet table, sets
 * with timeouts, nat redirect in output, conntrack), with a scratch table
 * that is removed again. 0, or -EOPNOTSUPP / -EPERM with what is missing in
 * err. */
int firewall_check(char *err, size_t err_size);

/* Installs the table for policy (replacing one left by an earlier run, so a
 * restart keeps traffic blocked until the new rules are in: one
 * transaction). */
int firewall_new(const struct firewall_opts *opts, const struct egress_policy *policy,
		 struct firewall **out, char *err, size_t err_size);
/* A new policy: the address rules and the default are replaced, and the
 * learned addresses forgotten (clients resolve again), in one transaction. */
int firewall_update(struct firewall *fw, const struct egress_policy *policy, char *err,
		    size_t err_size);
/* Admits the addresses of an answer; returns when the kernel has them. */
int firewall_learn(struct firewall *fw, const struct dns_answer *a);
/* Addresses currently learned (both families), or -1 when it cannot be read. */
long firewall_learned(struct firewall *fw);
/* Drops what libnftables holds between changes (a cache of the table, its
 * parser's buffers); the next update makes a context for itself. */
void firewall_trim(struct firewall *fw);
/* Frees the handle; the table stays. */
void firewall_free(struct firewall *fw);
/* Deletes the table: everything is allowed again. 0 also when it is not there. */
int firewall_cleanup(char *err, size_t err_size);

#endif
