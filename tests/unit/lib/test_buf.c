/* Unit tests for lib/buf.c: the bounded buffer. */
#include "unit.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <errno.h>

static void append_within_limit(void **state)
{
	struct sbx_buf b;

	sbx_buf_init(&b, 16);
	assert_int_equal(sbx_buf_append(&b, "hello ", 6), 0);
	assert_int_equal(sbx_buf_append_str(&b, "world"), 0);
	assert_int_equal(b.len, 11);
	assert_string_equal(b.data, "hello world");
	sbx_buf_release(&b);
	assert_null(b.data);
}

static void append_past_limit_fails_and_keeps_content(void **state)
{
	/* A length the compiler cannot see, as one off the network would be. */
	volatile size_t huge = SIZE_MAX;
	struct sbx_buf b;

	sbx_buf_init(&b, 8);
	assert_int_equal(sbx_buf_append(&b, "12345678", 8), 0);
	assert_int_equal(sbx_buf_append(&b, "9", 1), -E2BIG);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	assert_int_equal(sbx_buf_printf(&b, "%d", 1), -E2BIG);
	/* A length that would overflow size_t arithmetic is refused too. */
	assert_int_equal(sbx_buf_append(&b, "x", huge), -E2BIG);
	sbx_buf_release(&b);
}

static void cat_joins_strings_within_the_limit(void **state)
{
	struct sbx_buf b;

	sbx_buf_init(&b, 12);
	assert_int_equal(sbx_buf_cat(&b, ""), 0);
	assert_string_equal(b.data, "");
	assert_int_equal(sbx_buf_cat(&b, "GET", " ", "/a"), 0);
	assert_string_equal(b.data, "GET /a");
	assert_int_equal(sbx_buf_cat(&b, " HTTP/1.1"), -E2BIG); /* 15 > 12 */
	assert_string_equal(b.data, "GET /a");
	assert_int_equal(sbx_buf_cat(&b, "", "\r\n"), 0);
	assert_int_equal(b.len, 8);
	sbx_buf_release(&b);
	/* More strings than the inline path takes: the same result. */
	sbx_buf_init(&b, 64);
	assert_int_equal(sbx_buf_cat(&b, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l",
				     "m", "n", "o", "p", "q", "r"),
			 0);
	assert_string_equal(b.data, "abcdefghijklmnopqr");
	assert_int_equal(sbx_buf_cat(&b, "s", "t", "u", "v", "w", "x", "y", "z", "0", "1", "2", "3",
				     "4", "5", "6", "7", "8", "9",
				     "0123456789012345678901234567890"),
			 -E2BIG);
	assert_string_equal(b.data, "abcdefghijklmnopqr");
	sbx_buf_release(&b);
}

static void printf_and_consume(void **state)
{
	struct sbx_buf b;

	sbx_buf_init(&b, 1024);
	assert_int_equal(sbx_buf_printf(&b, "%s=%d;", "a", 1), 0);
	assert_int_equal(sbx_buf_printf(&b, "%s=%d;", "bb", 22), 0);
	assert_string_equal(b.data, "a=1;bb=22;");
	sbx_buf_consume(&b, 4);
	assert_string_equal(b.data, "bb=22;");
	assert_int_equal(b.len, 6);
	sbx_buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	sbx_buf_release(&b);
}

static void grows_through_many_appends(void **state)
{
	struct sbx_buf b;
	char expect[10001];

	sbx_buf_init(&b, 10000);
	for (int i = 0; i < 10000; i++) {
		assert_int_equal(sbx_buf_append(&b, (char[]){ (char)('a' + i % 26) }, 1), 0);
		expect[i] = (char)('a' + i % 26);
	}
	expect[10000] = '\0';
	assert_string_equal(b.data, expect);
	assert_int_equal(sbx_buf_append(&b, "x", 1), -E2BIG);
	sbx_buf_release(&b);
}

static void steal_hands_over_memory(void **state)
{
	struct sbx_buf b;
	char *s;

	sbx_buf_init(&b, 64);
	s = sbx_buf_steal(&b);
	assert_string_equal(s, "");
	sbx_free(s);
	sbx_buf_append_str(&b, "mine");
	s = sbx_buf_steal(&b);
	assert_string_equal(s, "mine");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	sbx_free(s);
}

static void allocation_failure_is_reported(void **state)
{
	struct sbx_buf b;

	sbx_buf_init(&b, 1024);
	sbx_alloc_fail_after(0);
	assert_int_equal(sbx_buf_append(&b, "x", 1), -ENOMEM);
	sbx_alloc_fail_reset();
	assert_int_equal(b.len, 0);
	assert_int_equal(sbx_buf_append(&b, "x", 1), 0);
	sbx_buf_release(&b);
}

/* A buffer on the caller's storage: used in place while it fits, moved to
 * the heap (content kept) when it outgrows it, never freed itself. */
static void borrowed_storage(void **state)
{
	char storage[8], many[64];
	struct sbx_buf b;
	char *s;

	sbx_buf_init_on(&b, 64, storage, sizeof(storage));
	assert_int_equal(sbx_buf_append_str(&b, "1234567"), 0);
	assert_ptr_equal(b.data, storage);
	assert_string_equal(storage, "1234567");
	/* An allocation failure leaves it where it was. */
	sbx_alloc_fail_after(0);
	assert_int_equal(sbx_buf_append(&b, "8", 1), -ENOMEM);
	sbx_alloc_fail_reset();
	assert_ptr_equal(b.data, storage);
	assert_int_equal(sbx_buf_append_str(&b, "89"), 0);
	assert_ptr_not_equal(b.data, storage);
	assert_string_equal(b.data, "123456789");
	memset(many, 'x', sizeof(many));
	assert_int_equal(sbx_buf_append(&b, many, sizeof(many)), -E2BIG);
	sbx_buf_release(&b); /* the heap copy is freed (ASan would say) */

	sbx_buf_init_on(&b, 64, storage, sizeof(storage));
	sbx_buf_printf(&b, "%d", 42);
	s = sbx_buf_steal(&b); /* a copy: the storage is the caller's */
	assert_ptr_not_equal(s, storage);
	assert_string_equal(s, "42");
	assert_null(b.data);
	sbx_free(s);
	sbx_buf_init_on(&b, 64, storage, sizeof(storage));
	sbx_buf_release(&b); /* nothing to free */
	assert_null(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(borrowed_storage),
		cmocka_unit_test(append_within_limit),
		cmocka_unit_test(append_past_limit_fails_and_keeps_content),
		cmocka_unit_test(cat_joins_strings_within_the_limit),
		cmocka_unit_test(printf_and_consume),
		cmocka_unit_test(grows_through_many_appends),
		cmocka_unit_test(steal_hands_over_memory),
		cmocka_unit_test(allocation_failure_is_reported),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
