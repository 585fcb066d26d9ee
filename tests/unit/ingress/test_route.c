/* Unit tests for ingress/route.c: which sandbox and port a request names,
 * and what it refuses to pass on. */
#include "unit.h"

#include "route.h"

#include <errno.h>

#define BASE "sbx.example.com"

/* Routes and expects success: the target. */
static struct ingress_target ok(const char *path, const char *host, const char *to)
{
	struct ingress_target t;
	const char *why = "unset";

	assert_int_equal(ingress_route(path, host, to, BASE, &t, &why), 0);
	assert_null(why);
	return t;
}

/* Routes and expects a refusal whose reason holds 'reason'. */
static void refused(const char *path, const char *host, const char *to, const char *reason)
{
	struct ingress_target t;
	const char *why = NULL;

	assert_int_equal(ingress_route(path, host, to, BASE, &t, &why), -EINVAL);
	assert_non_null(why);
	if (!strstr(why, reason))
		fail_msg("%s: '%s' does not say '%s'", path, why, reason);
}

static void none(const char *path, const char *host, const char *to)
{
	struct ingress_target t;
	const char *why = "unset";

	assert_int_equal(ingress_route(path, host, to, BASE, &t, &why), -ENOENT);
	assert_null(why);
}

static void path_form_strips_the_prefix(void **state)
{
	struct ingress_target t = ok("/sandboxes/demo-1a2b3/port/8080/v1/ping", "gw", NULL);

	assert_int_equal(t.form, INGRESS_FORM_PATH);
	assert_string_equal(t.id, "demo-1a2b3");
	assert_int_equal(t.port, 8080);
	assert_string_equal(t.rest, "/v1/ping");
	assert_int_equal(t.prefix_len, strlen("/sandboxes/demo-1a2b3/port/8080"));
	t = ok("/sandboxes/a/port/1", NULL, NULL);
	assert_string_equal(t.rest, "");
	assert_int_equal(t.port, 1);
	t = ok("/sandboxes/a/port/65535/", NULL, NULL);
	assert_string_equal(t.rest, "/");
	/* What follows the prefix is the app's, slashes and encodings kept. */
	t = ok("/sandboxes/a/port/80//x/a%2Fb/%2e%2e.txt", NULL, NULL);
	assert_string_equal(t.rest, "//x/a%2Fb/%2e%2e.txt");
}

static void path_form_is_strict_about_where_it_goes(void **state)
{
	char id[80], path[128];

	refused("/sandboxes/a/ports/80/x", NULL, NULL, "expected /sandboxes/<id>/port/<port>");
	refused("/sandboxes/a", NULL, NULL, "expected");
	refused("/sandboxes//port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/A/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/-a/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/a-/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/a%2fb/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/%61/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/../port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/a.b/port/80/", NULL, NULL, "not a sandbox id");
	refused("/sandboxes/a/port/0/", NULL, NULL, "not a port");
	refused("/sandboxes/a/port/080/", NULL, NULL, "not a port");
	refused("/sandboxes/a/port/65536/", NULL, NULL, "not a port");
	refused("/sandboxes/a/port/+80/", NULL, NULL, "not a port");
	refused("/sandboxes/a/port/80abc", NULL, NULL, "not a port");
	refused("/sandboxes/a/port//80", NULL, NULL, "not a port");
	/* Ids are DNS labels: 63 characters at most. */
	memset(id, 'a', 64);
	id[64] = '\0';
	snprintf(path, sizeof(path), "/sandboxes/%s/port/80/", id);
	refused(path, NULL, NULL, "not a sandbox id");
	id[63] = '\0';
	snprintf(path, sizeof(path), "/sandboxes/%s/port/80/", id);
	assert_string_equal(ok(path, NULL, NULL).id, id);
}

static void dot_segments_backslashes_and_nul_are_refused(void **state)
{
	static const char *const dot[] = {
		"/sandboxes/a/port/80/..",
		"/sandboxes/a/port/80/../../b/port/80/",
		"/sandboxes/a/port/80/x/./y",
		"/sandboxes/a/port/80/%2e%2e/x",
		"/sandboxes/a/port/80/%2E%2e/x",
		"/sandboxes/a/port/80/.%2e/x",
		"/sandboxes/a/port/80/..;jsessionid",
		"/sandboxes/a/port/80/%2e",
	};

	for (size_t i = 0; i < sizeof(dot) / sizeof(dot[0]); i++)
		refused(dot[i], NULL, NULL, "'.' or '..' segment");
	refused("/sandboxes/a/port/80/x\\..\\y", NULL, NULL, "backslash");
	refused("/sandboxes/a/port/80/x%00.html", NULL, NULL, "encoded NUL");
	/* The same for the other forms, whose whole path goes on. */
	refused("/x/../y", "a-80." BASE, NULL, "'.' or '..' segment");
	refused("/x/%2e%2e/y", NULL, "a-80", "'.' or '..' segment");
	/* Dots inside a name are a name. */
	assert_string_equal(ok("/sandboxes/a/port/80/...x/a..b/.well-known", NULL, NULL).rest,
			    "/...x/a..b/.well-known");
}

static void header_form_names_id_and_port(void **state)
{
	struct ingress_target t = ok("/v1/ping", "gw", "my-box-1a2b3-8080");

	assert_int_equal(t.form, INGRESS_FORM_HEADER);
	assert_string_equal(t.id, "my-box-1a2b3");
	assert_int_equal(t.port, 8080);
	assert_string_equal(t.rest, "/v1/ping");
	assert_int_equal(t.prefix_len, 0);
	/* The header wins over a path that looks like a route: the app's. */
	t = ok("/sandboxes/b/port/9/x", NULL, "a-80");
	assert_string_equal(t.id, "a");
	assert_string_equal(t.rest, "/sandboxes/b/port/9/x");
	refused("/", NULL, "a", "must be <id>-<port>");
	refused("/", NULL, "a-", "must be <id>-<port>");
	refused("/", NULL, "-80", "must be <id>-<port>");
	refused("/", NULL, "a-b", "must be <id>-<port>");
	refused("/", NULL, "A-80", "must be <id>-<port>");
	refused("/", NULL, "a--80", "must be <id>-<port>");
	refused("/", NULL, "a-80 ", "must be <id>-<port>");
	refused("/", NULL, "", "must be <id>-<port>");
}

static void host_form_under_the_base_domain(void **state)
{
	struct ingress_target t = ok("/websockify", "demo-1a2b3-6080." BASE, NULL);

	assert_int_equal(t.form, INGRESS_FORM_HOST);
	assert_string_equal(t.id, "demo-1a2b3");
	assert_int_equal(t.port, 6080);
	assert_string_equal(t.rest, "/websockify");
	/* Case, a port and the root's dot do not change the name. */
	assert_string_equal(ok("/", "Demo-6080.SBX.Example.COM:443", NULL).id, "demo");
	assert_string_equal(ok("/", "demo-6080." BASE ".", NULL).id, "demo");
	/* The host form wins over the header and the path. */
	t = ok("/sandboxes/b/port/9/", "a-80." BASE, "c-70");
	assert_string_equal(t.id, "a");
	assert_int_equal(t.port, 80);
	refused("/", "x.a-80." BASE, NULL, "<id>-<port>.<base domain>");
	refused("/", "a." BASE, NULL, "<id>-<port>.<base domain>");
	/* Not under the base domain: another form, or none. */
	none("/", BASE, NULL);
	none("/", "a-80.sbx.example.com.evil.test", NULL);
	none("/", "a-80.xsbx.example.com", NULL);
	none("/", "[::1]:8080", NULL);
	assert_int_equal(ok("/x", "a-80.evil.test", "b-90").form, INGRESS_FORM_HEADER);
}

static void host_form_is_off_without_a_base_domain(void **state)
{
	struct ingress_target t;
	const char *why;

	assert_int_equal(ingress_route("/", "a-80." BASE, NULL, NULL, &t, &why), -ENOENT);
	assert_int_equal(ingress_route("/", "a-80." BASE, NULL, "", &t, &why), -ENOENT);
}

static void paths_of_the_ingress_itself_name_no_sandbox(void **state)
{
	none("/healthz", "gw", NULL);
	none("/tickets", NULL, NULL);
	none("/sandboxes", NULL, NULL);
	none("/Sandboxes/a/port/80/", NULL, NULL);
	none("//sandboxes/a/port/80/", NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(path_form_strips_the_prefix),
		cmocka_unit_test(path_form_is_strict_about_where_it_goes),
		cmocka_unit_test(dot_segments_backslashes_and_nul_are_refused),
		cmocka_unit_test(header_form_names_id_and_port),
		cmocka_unit_test(host_form_under_the_base_domain),
		cmocka_unit_test(host_form_is_off_without_a_base_domain),
		cmocka_unit_test(paths_of_the_ingress_itself_name_no_sandbox),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
