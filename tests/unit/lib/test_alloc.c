/* Allocation-failure sweeps: for every N, fail the Nth allocation of an
 * operation and check that it either succeeds or reports -ENOMEM / an error
 * cleanly (the sanitizer build checks that nothing leaks or crashes). */
#include "unit.h"

#include "sbx/alloc.h"
#include "sbx/kube_config.h"
#include "sbx/yaml.h"

#include <errno.h>

static void yaml_load_under_allocation_failure(void **state)
{
	static const char doc[] =
		"apiVersion: v1\nkind: Config\nitems:\n- {a: 1, b: [x, y, z]}\n- name: n\n  v: 2.5\n";
	char err[256];
	int ok = 0, failed = 0;

	sbx_alloc_install_jansson();
	for (long n = 0; n < 400; n++) {
		sbx_alloc_fail_after(n);
		json_t *v = sbx_yaml_load(doc, sizeof(doc) - 1, 16, err, sizeof(err));
		sbx_alloc_fail_reset();
		if (v) {
			assert_string_equal(json_string_value(json_object_get(v, "kind")),
					    "Config");
			json_decref(v);
			ok++;
		} else {
			assert_true(err[0] != '\0');
			failed++;
		}
	}
	/* Both paths were exercised. */
	assert_true(ok > 0 && failed > 0);
}

static void kubeconfig_load_under_allocation_failure(void **state)
{
	char dir[] = "/tmp/sbx-alloc-XXXXXX", path[64], err[512];
	struct sbx_kube_config c;
	int ok = 0, failed = 0;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/kc", dir);
	write_file(path, "current-context: x\n"
			 "clusters: [{name: c, cluster: {server: 'https://a:1', "
			 "certificate-authority-data: aGVsbG8=}}]\n"
			 "users: [{name: u, user: {token: t, client-certificate-data: aGVsbG8=, "
			 "client-key-data: aGVsbG8=}}]\n"
			 "contexts: [{name: x, context: {cluster: c, user: u, namespace: n}}]\n");
	sbx_alloc_install_jansson();
	for (long n = 0; n < 600; n++) {
		sbx_alloc_fail_after(n);
		int rc = sbx_kube_config_load_file(&c, path, NULL, err, sizeof(err));
		sbx_alloc_fail_reset();
		if (rc == 0) {
			assert_string_equal(c.server, "https://a:1");
			sbx_kube_config_release(&c);
			ok++;
		} else {
			assert_null(c.server);
			failed++;
		}
	}
	unlink(path);
	rmdir(dir);
	assert_true(ok > 0 && failed > 0);
}

/* Spares: a block put back is the next one got (without AddressSanitizer,
 * which wants each block freed at once); past SBX_SPARES the rest are
 * freed, and release frees what is kept (the sanitizer run checks that
 * nothing leaks); a failed allocation is NULL. */
static void spares_reuse_and_release(void **state)
{
	struct sbx_spares s;
	void *blocks[SBX_SPARES + 4], *a, *b;

	sbx_spares_init(&s, 3000);
	a = sbx_spares_get(&s);
	assert_non_null(a);
	memset(a, 1, 3000);
	sbx_spares_put(&s, a);
	b = sbx_spares_get(&s);
	assert_non_null(b);
	if (sbx_spares_kept)
		assert_ptr_equal(a, b);
	memset(b, 2, 3000);
	sbx_spares_put(&s, b);
	sbx_spares_put(&s, NULL);
	for (size_t i = 0; i < SBX_SPARES + 4; i++)
		assert_non_null(blocks[i] = sbx_spares_get(&s));
	for (size_t i = 0; i < SBX_SPARES + 4; i++)
		sbx_spares_put(&s, blocks[i]);
	assert_true(s.n <= SBX_SPARES);
	sbx_spares_release(&s);
	assert_int_equal(s.n, 0);
	sbx_alloc_fail_after(0);
	assert_null(sbx_spares_get(&s));
	sbx_alloc_fail_reset();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(yaml_load_under_allocation_failure),
		cmocka_unit_test(kubeconfig_load_under_allocation_failure),
		cmocka_unit_test(spares_reuse_and_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
