/* Unit tests for lib/tickets.c: single use, lifetime, bound, and what a
 * ticket carries. */
#include "unit.h"

#include "sbx/tickets.h"

#include <errno.h>

static int freed;

static void count_free(void *v)
{
	(void)v;
	freed++;
}

static void ticket_works_once_and_hands_over_its_value(void **state)
{
	struct sbx_tickets t;
	char a[SBX_TICKET_SIZE], b[SBX_TICKET_SIZE];
	int value = 7;
	void *got = NULL;

	sbx_tickets_init(&t, 10, count_free);
	freed = 0;
	assert_int_equal(sbx_tickets_issue(&t, 60000, &value, a), 0);
	assert_int_equal(sbx_tickets_issue(&t, 60000, NULL, b), 0);
	assert_int_equal(strlen(a), SBX_TICKET_SIZE - 1);
	assert_string_not_equal(a, b);
	assert_true(sbx_tickets_take(&t, a, &got));
	assert_ptr_equal(got, &value); /* the caller's now: not freed */
	assert_false(sbx_tickets_take(&t, a, &got));
	assert_false(sbx_tickets_take(&t, "not-a-ticket", NULL));
	assert_int_equal(freed, 0);
	assert_int_equal(sbx_tickets_count(&t), 1);
	sbx_tickets_release(&t);
}

static void expired_tickets_are_refused_and_freed(void **state)
{
	struct sbx_tickets t;
	char a[SBX_TICKET_SIZE], b[SBX_TICKET_SIZE];
	static int v1, v2;

	sbx_tickets_init(&t, 10, count_free);
	freed = 0;
	assert_int_equal(sbx_tickets_issue(&t, 0, &v1, a), 0); /* expires at once */
	assert_false(sbx_tickets_take(&t, a, NULL));
	assert_int_equal(freed, 1);
	assert_int_equal(sbx_tickets_issue(&t, 0, &v2, a), 0);
	/* Making a ticket drops the expired ones. */
	assert_int_equal(sbx_tickets_issue(&t, 60000, NULL, b), 0);
	assert_int_equal(freed, 2);
	assert_int_equal(sbx_tickets_count(&t), 1);
	sbx_tickets_release(&t);
}

static void outstanding_tickets_are_bounded(void **state)
{
	struct sbx_tickets t;
	char a[SBX_TICKET_SIZE];
	int v;

	sbx_tickets_init(&t, 3, count_free);
	freed = 0;
	for (int i = 0; i < 3; i++)
		assert_int_equal(sbx_tickets_issue(&t, 60000, NULL, a), 0);
	assert_int_equal(sbx_tickets_issue(&t, 60000, &v, a), -E2BIG);
	assert_int_equal(freed, 0); /* refused: the value stays the caller's */
	sbx_tickets_release(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ticket_works_once_and_hands_over_its_value),
		cmocka_unit_test(expired_tickets_are_refused_and_freed),
		cmocka_unit_test(outstanding_tickets_are_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
