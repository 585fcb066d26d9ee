/* Fuzz target: the client side's parsing of a backend's answer. A real
 * exchange goes to a listener on 127.0.0.1; the input is what the backend
 * answers before it closes. The first byte picks the request (GET, HEAD, an
 * Upgrade, a chunked POST) and whether the caller pauses and resumes the
 * answer. Any crash, leak or hang is a finding; every exchange must end. */
#include "sbx/http_client.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct run {
	struct sbx_http_client *x;
	uv_timer_t resume;
	bool pause, done;
};

static void on_resume(uv_timer_t *t)
{
	struct run *r = t->data;

	if (r->x)
		sbx_http_client_resume(r->x);
}

static void on_head(struct sbx_http_client *x, int status, const struct sbx_http_field *f, size_t n,
		    void *arg)
{
	struct run *r = arg;

	(void)f;
	(void)n;
	if (r->pause) {
		sbx_http_client_pause(x);
		uv_timer_start(&r->resume, on_resume, 1, 0);
	}
	(void)status;
}

static void on_done(struct sbx_http_client *x, int err, void *arg)
{
	struct run *r = arg;

	(void)x;
	(void)err;
	r->done = true;
	r->x = NULL;
}

static const struct sbx_http_client_callbacks cb = { .head = on_head, .done = on_done };

static int listener = -1;
static char addr[32];

static void listen_once(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	listener = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(listener, 64) || getsockname(listener, (struct sockaddr *)&sa, &len))
		abort();
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = { "GET", "HEAD", "GET", "POST" };
	struct sbx_http_pool_opts o = { .max_header_bytes = 2048, .read_timeout_ms = 1000 };
	struct sbx_http_client_request req = { .target = "/", .host = "backend" };
	struct sbx_http_pool *p;
	struct run r = { 0 };
	uv_loop_t loop;
	int fd;

	if (!size)
		return 0;
	if (listener < 0)
		listen_once();
	uv_loop_init(&loop);
	sbx_http_pool_new(&loop, &o, &p);
	uv_timer_init(&loop, &r.resume);
	r.resume.data = &r;
	r.pause = data[0] & 4;
	req.backend = addr;
	req.method = methods[data[0] & 3];
	req.upgrade = (data[0] & 3) == 2 ? "websocket" : NULL;
	req.content_length = (data[0] & 3) == 3 ? -1 : 0;
	if (sbx_http_client_start(p, &req, &cb, &r, &r.x))
		abort();
	if (req.content_length) {
		sbx_http_client_write(r.x, "body", 4);
		sbx_http_client_end(r.x);
	}
	fd = accept(listener, NULL, NULL);
	if (fd < 0)
		abort();
	/* The backend: the answer, then a close. */
	for (size_t off = 1; off < size;) {
		ssize_t n = write(fd, data + off, size - off);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	while (!r.done && uv_run(&loop, UV_RUN_ONCE))
		;
	if (!r.done)
		__builtin_trap(); /* an exchange that never ended */
	close(fd);
	uv_close((uv_handle_t *)&r.resume, NULL);
	sbx_http_pool_free(p);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return 0;
}
