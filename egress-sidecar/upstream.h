/* Forwarding queries upstream: c-ares on the libuv loop. A query is sent as
 * the client wrote it (c-ares gives it an id of its own, retries, and moves
 * to TCP when an answer is truncated); the answer comes back raw, for the
 * proxy to check before it is released.
 */
#ifndef SBX_EGRESS_UPSTREAM_H
#define SBX_EGRESS_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct upstream;

struct upstream_opts {
	/* "10.96.0.10:53,[fd00::10]:53"; NULL or "": the nameservers of
	 * resolv_conf (else /etc/resolv.conf) */
	const char *servers;
	const char *resolv_conf;
	unsigned timeout_ms; /* per try (default 2000) */
	unsigned tries;	     /* per server (default 2) */
	uint32_t mark;	     /* SO_MARK on every upstream socket (0: none) */
};

/* status: 0 with the answer, or a negative errno (-ETIMEDOUT, -ECONNREFUSED,
 * -EIO for any other failure). answer is borrowed for the call. */
typedef void (*upstream_cb)(int status, const uint8_t *answer, size_t len, void *arg);

/* 0, or a negative errno with the reason in err. */
int upstream_new(uv_loop_t *loop, const struct upstream_opts *opts, struct upstream **out,
		 char *err, size_t err_size);
/* Sends query; cb is called exactly once, also when the upstream is freed
 * first (with -ECANCELED). */
void upstream_send(struct upstream *u, const uint8_t *query, size_t len, upstream_cb cb, void *arg);
/* The servers in use, as "ip:port,..." into buf. */
void upstream_servers(const struct upstream *u, char *buf, size_t size);
/* Cancels what is in flight and closes its handles. */
void upstream_free(struct upstream *u);

#endif
