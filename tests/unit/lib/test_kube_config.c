/* Unit tests for lib/kube_config.c: kubeconfig forms and bad files. */
#include "unit.h"

#include "sbx/kube_config.h"

#include <errno.h>
#include <sys/stat.h>

static char dir[64];
static char path[128];
static char err[512];
static struct sbx_kube_config c;

/* "hello-ca" etc. in base64 */
#define CA_B64	 "aGVsbG8tY2E="
#define CERT_B64 "aGVsbG8tY2VydA=="
#define KEY_B64	 "aGVsbG8ta2V5"

static int setup(void **state)
{
	strcpy(dir, "/tmp/sbx-kc-test-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/config", dir);
	memset(&c, 0, sizeof(c));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	sbx_kube_config_release(&c);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static int load(const char *yaml, const char *context)
{
	write_file(path, yaml);
	return sbx_kube_config_load_file(&c, path, context, err, sizeof(err));
}

static const char *two_contexts =
	"apiVersion: v1\nkind: Config\ncurrent-context: one\n"
	"clusters:\n"
	"- name: c1\n  cluster:\n    server: https://10.0.0.1:6443/\n"
	"    certificate-authority-data: " CA_B64 "\n"
	"- name: c2\n  cluster:\n    server: https://[::1]:8443\n    insecure-skip-tls-verify: true\n"
	"    tls-server-name: api.example\n"
	"users:\n"
	"- name: u1\n  user:\n    client-certificate-data: |\n      aGVsbG8t\n      Y2VydA==\n"
	"    client-key-data: " KEY_B64 "\n"
	"- name: u2\n  user:\n    token: abc.def\n"
	"contexts:\n"
	"- name: one\n  context: {cluster: c1, user: u1}\n"
	"- name: two\n  context: {cluster: c2, user: u2, namespace: team-a}\n";

static void current_context_with_embedded_data(void **state)
{
	assert_int_equal(load(two_contexts, NULL), 0);
	assert_string_equal(c.server, "https://10.0.0.1:6443");
	assert_int_equal(c.ca_len, 8);
	assert_memory_equal(c.ca_pem, "hello-ca", 8);
	/* Wrapped base64 (a block scalar with newlines) decodes too. */
	assert_int_equal(c.cert_len, 10);
	assert_memory_equal(c.cert_pem, "hello-cert", 10);
	assert_memory_equal(c.key_pem, "hello-key", 9);
	assert_null(c.token);
	assert_false(c.insecure);
	assert_string_equal(c.namespace, "default");
	assert_contains(c.source, "(context one)");
}

static void named_context_with_token(void **state)
{
	assert_int_equal(load(two_contexts, "two"), 0);
	assert_string_equal(c.server, "https://[::1]:8443");
	assert_string_equal(c.token, "abc.def");
	assert_true(c.insecure);
	assert_string_equal(c.tls_server_name, "api.example");
	assert_string_equal(c.namespace, "team-a");
	assert_null(c.ca_pem);
}

static void files_relative_to_the_kubeconfig(void **state)
{
	char f[160];

	snprintf(f, sizeof(f), "%s/ca.pem", dir);
	write_file(f, "CA FROM FILE");
	snprintf(f, sizeof(f), "%s/tok", dir);
	write_file(f, "tok-from-file\n");
	assert_int_equal(load("current-context: x\n"
			      "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1', "
			      "certificate-authority: ca.pem}}]\n"
			      "users: [{name: u, user: {tokenFile: tok}}]\n"
			      "contexts: [{name: x, context: {cluster: c, user: u}}]\n",
			      NULL),
			 0);
	assert_string_equal(c.ca_pem, "CA FROM FILE");
	assert_string_equal(c.token, "tok-from-file");
	assert_contains(c.token_file, "/tok");
}

static void bad_files_are_named(void **state)
{
	static const struct {
		const char *yaml, *context, *expect;
		int rc;
	} cases[] = {
		{ "clusters: [", NULL, "line 2", -EINVAL },
		{ "- a\n", NULL, "expected a mapping at the top", -EINVAL },
		{ "contexts: []\n", NULL, "no context given and current-context is not set",
		  -EINVAL },
		{ "current-context: x\ncontexts: []\n", NULL, "no context named 'x'", -ENOENT },
		{ "current-context: x\ncontexts: [{name: x, context: {user: u}}]\n", NULL,
		  "contexts[name=x].context.cluster: missing", -EINVAL },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n", NULL,
		  "no cluster named 'c'", -ENOENT },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
		  "clusters: [{name: c, cluster: {server: 'api:6443'}}]\n",
		  NULL, "clusters[name=c].cluster.server: expected an http(s) URL", -EINVAL },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://a'}}]\n",
		  NULL, "no user named 'u'", -ENOENT },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://a'}}]\n"
		  "users: [{name: u, user: {client-key-data: '%%%%'}}]\n",
		  NULL, "users[name=u].user.client-key-data: not valid base64", -EINVAL },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://a'}}]\n"
		  "users: [{name: u, user: {client-certificate-data: " CERT_B64 "}}]\n",
		  NULL, "client-certificate and client-key go together", -EINVAL },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://a', certificate-authority: nope.pem}}]\n"
		  "users: [{name: u, user: {}}]\n",
		  NULL, "clusters[name=c].cluster.certificate-authority: cannot read", -ENOENT },
		{ "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
		  "clusters: [{name: c, cluster: {server: 'https://a'}}]\n"
		  "users: [{name: u, user: {exec: {command: aws}}}]\n",
		  NULL, "exec and auth-provider credentials are not supported", -ENOTSUP },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = load(cases[i].yaml, cases[i].context);

		if (rc != cases[i].rc)
			fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, err);
		assert_contains(err, cases[i].expect);
		assert_contains(err, path);
		assert_null(c.server);
	}
	assert_int_equal(
		sbx_kube_config_load_file(&c, "/nonexistent/kubeconfig", NULL, err, sizeof(err)),
		-EINVAL);
	assert_contains(err, "/nonexistent/kubeconfig: No such file or directory");
}

static void in_cluster(void **state)
{
	char f[160];

	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_int_equal(sbx_kube_config_load_incluster(&c, dir, err, sizeof(err)), -ENOENT);
	assert_contains(err, "not in a cluster");

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(sbx_kube_config_load_incluster(&c, dir, err, sizeof(err)), -ENOENT);
	assert_contains(err, "in-cluster token");

	snprintf(f, sizeof(f), "%s/token", dir);
	write_file(f, "sa-token\n");
	snprintf(f, sizeof(f), "%s/ca.crt", dir);
	write_file(f, "CA");
	snprintf(f, sizeof(f), "%s/namespace", dir);
	write_file(f, "sbx-system\n");
	assert_int_equal(sbx_kube_config_load_incluster(&c, dir, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://[fd00::1]:443");
	assert_string_equal(c.token, "sa-token");
	assert_string_equal(c.namespace, "sbx-system");
	assert_string_equal(c.source, "in-cluster");
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}

static void search_order(void **state)
{
	write_file(path, two_contexts);
	setenv("KUBECONFIG", path, 1);
	assert_int_equal(sbx_kube_config_load(&c, NULL, "two", err, sizeof(err)), 0);
	assert_string_equal(c.token, "abc.def");
	sbx_kube_config_release(&c);
	/* An explicit path wins over $KUBECONFIG. */
	setenv("KUBECONFIG", "/nonexistent", 1);
	assert_int_equal(sbx_kube_config_load(&c, path, NULL, err, sizeof(err)), 0);
	unsetenv("KUBECONFIG");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(current_context_with_embedded_data, setup,
						teardown),
		cmocka_unit_test_setup_teardown(named_context_with_token, setup, teardown),
		cmocka_unit_test_setup_teardown(files_relative_to_the_kubeconfig, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_files_are_named, setup, teardown),
		cmocka_unit_test_setup_teardown(in_cluster, setup, teardown),
		cmocka_unit_test_setup_teardown(search_order, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
