/* Unit tests for lib/map.c: the bounded string-keyed hash map. */
#include "unit.h"

#include "sbx/alloc.h"
#include "sbx/map.h"

#include <stdio.h>

#include <errno.h>

static void put_get_replace_remove(void **state)
{
	struct sbx_map m;
	int a = 1, b = 2;
	void *old = &a;

	sbx_map_init(&m, 10);
	assert_null(sbx_map_get(&m, "x"));
	assert_null(sbx_map_remove(&m, "x"));
	assert_int_equal(sbx_map_put(&m, "x", &a, &old), 0);
	assert_null(old);
	assert_ptr_equal(sbx_map_get(&m, "x"), &a);
	assert_int_equal(sbx_map_put(&m, "x", &b, &old), 0);
	assert_ptr_equal(old, &a);
	assert_ptr_equal(sbx_map_get(&m, "x"), &b);
	assert_int_equal(m.count, 1);
	assert_ptr_equal(sbx_map_remove(&m, "x"), &b);
	assert_null(sbx_map_get(&m, "x"));
	assert_int_equal(m.count, 0);
	sbx_map_release(&m);
}

static void count_cb(const char *key, void *value, void *arg)
{
	size_t *n = arg;

	assert_int_equal(atoi(key + 1), (int)(intptr_t)value);
	(*n)++;
}

static void many_keys_survive_growth(void **state)
{
	struct sbx_map m;
	char key[32];
	size_t n = 0;

	sbx_map_init(&m, 100000);
	for (intptr_t i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "k%ld", (long)i);
		assert_int_equal(sbx_map_put(&m, key, (void *)i, NULL), 0);
	}
	for (intptr_t i = 0; i < 20000; i += 2) {
		snprintf(key, sizeof(key), "k%ld", (long)i);
		assert_ptr_equal(sbx_map_remove(&m, key), (void *)i);
	}
	assert_int_equal(m.count, 10000);
	for (intptr_t i = 1; i < 20000; i += 2) {
		snprintf(key, sizeof(key), "k%ld", (long)i);
		assert_ptr_equal(sbx_map_get(&m, key), (void *)i);
	}
	sbx_map_foreach(&m, count_cb, &n);
	assert_int_equal(n, 10000);
	sbx_map_release(&m);
}

static void full_map_refuses_new_keys_but_replaces(void **state)
{
	struct sbx_map m;
	int v;

	sbx_map_init(&m, 2);
	assert_int_equal(sbx_map_put(&m, "a", &v, NULL), 0);
	assert_int_equal(sbx_map_put(&m, "b", &v, NULL), 0);
	assert_int_equal(sbx_map_put(&m, "c", &v, NULL), -E2BIG);
	assert_int_equal(sbx_map_put(&m, "a", NULL, NULL), 0);
	assert_null(sbx_map_get(&m, "c"));
	sbx_map_release(&m);
}

static void pop_empties_the_map_one_value_at_a_time(void **state)
{
	struct sbx_map m;
	int values[300] = { 0 };
	char key[16];
	void *v;
	size_t popped = 0;

	sbx_map_init(&m, 1000);
	assert_null(sbx_map_pop(&m));
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(sbx_map_put(&m, key, &values[i], NULL), 0);
	}
	while ((v = sbx_map_pop(&m))) {
		assert_int_equal(*(int *)v, 0); /* each value comes out once */
		*(int *)v = 1;
		popped++;
		/* Removing another entry while popping is fine too. */
		if (popped == 10 && !values[299]) {
			assert_ptr_equal(sbx_map_remove(&m, "k299"), &values[299]);
			values[299] = 1;
		}
	}
	assert_int_equal(m.count, 0);
	for (int i = 0; i < 300; i++)
		assert_int_equal(values[i], 1);
	sbx_map_release(&m);
}

static void allocation_failures_leave_map_consistent(void **state)
{
	struct sbx_map m;
	char key[16];

	sbx_map_init(&m, 1000);
	for (long fail = 0; fail < 40; fail++) {
		snprintf(key, sizeof(key), "f%ld", fail);
		sbx_alloc_fail_after(fail % 3);
		int rc = sbx_map_put(&m, key, key, NULL);
		sbx_alloc_fail_reset();
		assert_true(rc == 0 || rc == -ENOMEM);
		if (rc == 0)
			assert_non_null(sbx_map_get(&m, key));
		else
			assert_null(sbx_map_get(&m, key));
	}
	sbx_map_release(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(put_get_replace_remove),
		cmocka_unit_test(many_keys_survive_growth),
		cmocka_unit_test(full_map_refuses_new_keys_but_replaces),
		cmocka_unit_test(pop_empties_the_map_one_value_at_a_time),
		cmocka_unit_test(allocation_failures_leave_map_consistent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
