/* Fuzz target: request heads and bodies from any client into sbx-ingress's
 * own route (routing, access control, the head built for the pod, bodies
 * streamed, tunnels), over HTTP/1.1 or (with the preface) HTTP/2, through a
 * socketpair, to an upstream on the same loop that answers 200, 404, junk,
 * a close or a 101 (as the X-Up header says). The routing table names
 * sandbox "s" on the upstream's port, 18999: seeds use
 * /sandboxes/s/port/18999/... If the first byte is 'A', access control is
 * on (no token can be valid: every sandbox request gets 401, tickets
 * included). */
#define FUZZ_INGRESS
#define UP_PORT 18999

#include "ingress.h"

static struct ingress fuzz_in;
static struct ingress_auth fuzz_auth;

/* An RSA public key for access control; its private key was thrown away. */
static const char fuzz_key[] = "-----BEGIN PUBLIC KEY-----\n"
			       "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0jKPhg/xexOdqZ/mKH9s\n"
			       "p5761JEZ+ZkiMVl8kdn9OnFIyHCURGdmZF4PLURoZqxp/Zue0ha2WmNJhusHGZUB\n"
			       "7x1HKj/344f+f6TpUyutWy6BF9VL+w4MNUDhl7R+Fye88lS3J2wVl5HgoiTDf15V\n"
			       "DDqF4eAKIa72o+RJibea+WOCJEAw+JZW4msgvoPbrXVhu/3pnVjuqTjF3tWqXAog\n"
			       "AMpUlOOLsymsd7EW0T42AMQO4G4jLekxnOJeeuyxOtvLrlzx6NiEI5+axic4skcJ\n"
			       "50uV1+pADpeBxzJCx6mpfo5uA9rDH+lN8lLvkUa3EAZ1eiIvQo/Yb76/Scewyn9Y\n"
			       "sQIDAQAB\n"
			       "-----END PUBLIC KEY-----\n";

static struct sbx_http_route fuzz_route = {
	.pattern = "/*",
	.fn = ingress_dispatch,
	.arg = &fuzz_in,
	.stream_body = true,
	.max_body_bytes = 1 << 16,
};

static void fuzz_ingress_start(uv_loop_t *loop, struct sbx_http_server_opts *o,
			       struct sbx_http_server **s, const uint8_t *data, size_t size);
static void fuzz_ingress_stop(void);

#include "fuzz_http_request.c"

static void fuzz_ingress_start(uv_loop_t *loop, struct sbx_http_server_opts *o,
			       struct sbx_http_server **s, const uint8_t *data, size_t size)
{
	struct ingress_opts io = { .base_domain = "sbx.test",
				   .hold_timeout_ms = 20,
				   .connect_timeout_ms = 200,
				   .response_timeout_ms = 200,
				   .access_log = false };
	struct sbx_http_pool_opts po = { .connect_timeout_ms = 200, .read_timeout_ms = 200 };
	uint16_t ports[] = { UP_PORT };
	struct ingress_sandbox_spec sb = {
		.id = "s", .address = "127.0.0.1", .ready = true, .ports = ports, .n_ports = 1
	};
	struct ingress_table *t;
	char err[256];

	if (ingress_auth_init(&fuzz_auth, size && data[0] == 'A' ? fuzz_key : "", 5, err,
			      sizeof(err)))
		abort();
	io.strip_credentials = ingress_auth_enabled(&fuzz_auth);
	if (ingress_init(&fuzz_in, loop, &io, &po))
		abort();
	fuzz_in.auth = &fuzz_auth;
	t = ingress_table_new();
	if (!t || ingress_table_put(t, &sb))
		abort();
	ingress_set_table(&fuzz_in, t);
	ingress_table_unref(t);
	o->authorize = ingress_authorize;
	o->authorize_arg = &fuzz_in;
	sbx_http_server_new(loop, o, &fuzz_route, 1, s);
	fuzz_in.http = *s;
}

static void fuzz_ingress_stop(void)
{
	/* After the server's close: nothing is held or proxied any more. */
	fuzz_in.http = NULL;
	ingress_release(&fuzz_in);
	ingress_auth_release(&fuzz_auth);
}
