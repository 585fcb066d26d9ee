/* Unit tests for lib/kube.c that need no apiserver: path building, status
 * messages, and transport errors against a closed port on loopback. (The
 * verbs themselves are tested against a real apiserver in
 * tests/integration/test_kube_client.py.) */
#include "unit.h"

#include "sbx/kube.h"
#include "sbx/kube_config.h"
#include "sbx/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

static void paths(void **state)
{
	char p[128];

	assert_int_equal(sbx_kube_path(p, sizeof(p), "", "v1", "default", "configmaps", "x", NULL),
			 (int)strlen("/api/v1/namespaces/default/configmaps/x"));
	assert_string_equal(p, "/api/v1/namespaces/default/configmaps/x");
	sbx_kube_path(p, sizeof(p), "sbx.dev", "v1alpha1", "team", "sandboxes", "s", "status");
	assert_string_equal(p, "/apis/sbx.dev/v1alpha1/namespaces/team/sandboxes/s/status");
	sbx_kube_path(p, sizeof(p), NULL, "v1", NULL, "namespaces", NULL, NULL);
	assert_string_equal(p, "/api/v1/namespaces");
	assert_int_equal(sbx_kube_path(p, 10, "", "v1", NULL, "namespaces", NULL, NULL),
			 -ENAMETOOLONG);
}

static void status_messages(void **state)
{
	json_t *body =
		json_pack("{s:s, s:s}", "kind", "Status", "message", "configmaps \"x\" not found");
	struct sbx_kube_response r = { .status = 404, .body = body };

	assert_string_equal(sbx_kube_status_message(&r), "configmaps \"x\" not found");
	r.body = NULL;
	assert_string_equal(sbx_kube_status_message(&r), "unexpected response from the API server");
	r.rc = -ECONNREFUSED;
	r.error = "Failed to connect";
	assert_string_equal(sbx_kube_status_message(&r), "Failed to connect");
	json_decref(body);
}

/* A port on 127.0.0.1 that nothing listens on (bound, then closed). */
static int closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

struct result {
	int calls;
	struct sbx_kube_response r;
	struct sbx_kube *k;
};

static void on_done(const struct sbx_kube_response *r, void *arg)
{
	struct result *res = arg;

	res->calls++;
	res->r.rc = r->rc;
	res->r.status = r->status;
	sbx_kube_free(res->k);
}

static void refused_connection_is_an_error_not_a_status(void **state)
{
	struct sbx_kube_config cfg = { 0 };
	struct result res = { 0 };
	char server[64];
	uv_loop_t loop;

	snprintf(server, sizeof(server), "http://127.0.0.1:%d", closed_port());
	cfg.server = server;
	uv_loop_init(&loop);
	assert_int_equal(sbx_kube_new(&loop, &cfg, NULL, &res.k), 0);
	assert_int_equal(sbx_kube_get(res.k, "/api", on_done, &res), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(res.calls, 1);
	assert_int_equal(res.r.rc, -ECONNREFUSED);
	assert_int_equal(res.r.status, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void cancelled_requests_never_call_back(void **state)
{
	struct sbx_kube_config cfg = { 0 };
	struct result res = { 0 };
	struct sbx_kube_req *req;
	char server[64];
	uv_loop_t loop;

	snprintf(server, sizeof(server), "http://127.0.0.1:%d", closed_port());
	cfg.server = server;
	uv_loop_init(&loop);
	assert_int_equal(sbx_kube_new(&loop, &cfg, NULL, &res.k), 0);
	assert_int_equal(sbx_kube_request(res.k, "GET", "/api", NULL, NULL, 0, on_done, &res, &req),
			 0);
	sbx_kube_cancel(req);
	/* A second request finishes and frees the client. */
	assert_int_equal(sbx_kube_get(res.k, "/api", on_done, &res), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(res.calls, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void freeing_with_requests_in_flight(void **state)
{
	struct sbx_kube_config cfg = { .server = "http://127.0.0.1:9" };
	struct sbx_kube *k;
	struct result res = { 0 };
	uv_loop_t loop;

	uv_loop_init(&loop);
	assert_int_equal(sbx_kube_new(&loop, &cfg, NULL, &k), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(sbx_kube_get(k, "/api", on_done, &res), 0);
	sbx_kube_free(k);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(res.calls, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(paths),
		cmocka_unit_test(status_messages),
		cmocka_unit_test(refused_connection_is_an_error_not_a_status),
		cmocka_unit_test(cancelled_requests_never_call_back),
		cmocka_unit_test(freeing_with_requests_in_flight),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
