/* Unit tests for the watch-stream splitter in lib/kube_watch.c: events cut
 * at every byte boundary come out whole and in order. */
#include "unit.h"

#include "sbx/buf.h"
#include "sbx/kube_watch.h"

#include <errno.h>

struct seen {
	struct sbx_buf log; /* "TYPE:name:rv;" per event */
	int stop_after;	    /* return -ECANCELED after this many (0: never) */
	int count;
};

static int on_event(const char *type, json_t *obj, void *arg)
{
	struct seen *s = arg;
	json_t *md = json_object_get(obj, "metadata");

	sbx_buf_printf(&s->log, "%s:%s:%s;", type, json_string_value(json_object_get(md, "name")),
		       json_string_value(json_object_get(md, "resourceVersion")));
	s->count++;
	return s->stop_after && s->count >= s->stop_after ? -ECANCELED : 0;
}

static const char *stream(void)
{
	static char text[4096];
	char big[600];

	if (!text[0]) {
		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		snprintf(
			text, sizeof(text),
			"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\"}}}\n"
			"\n"
			"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"2\"},"
			"\"data\":{\"k\":\"%s\",\"nl\":\"line\\nbreak\",\"u\":\"\\u00e9\xc3\xa9\"}}}\r\n"
			"{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"7\"}}}\n"
			"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"8\"}}}\n",
			big);
	}
	return text;
}

static const char *expected = "ADDED:a:1;MODIFIED:a:2;BOOKMARK:(null):7;DELETED:a:8;";

static void check_split(const char *text, size_t len, size_t cut)
{
	struct sbx_watch_splitter sp;
	struct seen s = { 0 };

	sbx_buf_init(&s.log, 4096);
	sbx_watch_splitter_init(&sp, 4096, on_event, &s);
	assert_int_equal(sbx_watch_splitter_feed(&sp, text, cut), 0);
	assert_int_equal(sbx_watch_splitter_feed(&sp, text + cut, len - cut), 0);
	assert_int_equal(sbx_watch_splitter_pending(&sp), 0);
	if (!s.log.data || strcmp(s.log.data, expected) != 0)
		fail_msg("cut at %zu: got %s", cut, s.log.data ? s.log.data : "(nothing)");
	sbx_watch_splitter_release(&sp);
	sbx_buf_release(&s.log);
}

static void every_byte_boundary(void **state)
{
	const char *text = stream();
	size_t len = strlen(text);

	for (size_t cut = 0; cut <= len; cut++)
		check_split(text, len, cut);
}

static void one_byte_at_a_time(void **state)
{
	const char *text = stream();
	struct sbx_watch_splitter sp;
	struct seen s = { 0 };

	sbx_buf_init(&s.log, 4096);
	sbx_watch_splitter_init(&sp, 4096, on_event, &s);
	for (size_t i = 0; text[i]; i++)
		assert_int_equal(sbx_watch_splitter_feed(&sp, text + i, 1), 0);
	assert_string_equal(s.log.data, expected);
	sbx_watch_splitter_release(&sp);
	sbx_buf_release(&s.log);
}

static void three_way_splits(void **state)
{
	const char *text = stream();
	size_t len = strlen(text);

	/* Every pair of cuts over a shorter prefix (two whole events). */
	size_t short_len = (size_t)(strstr(text, "{\"type\":\"MODIFIED\"") - text);

	for (size_t a = 0; a <= short_len; a++) {
		for (size_t b = a; b <= short_len; b += 3) {
			struct sbx_watch_splitter sp;
			struct seen s = { 0 };

			sbx_buf_init(&s.log, 4096);
			sbx_watch_splitter_init(&sp, 4096, on_event, &s);
			assert_int_equal(sbx_watch_splitter_feed(&sp, text, a), 0);
			assert_int_equal(sbx_watch_splitter_feed(&sp, text + a, b - a), 0);
			assert_int_equal(sbx_watch_splitter_feed(&sp, text + b, len - b), 0);
			assert_string_equal(s.log.data, expected);
			sbx_watch_splitter_release(&sp);
			sbx_buf_release(&s.log);
		}
	}
}

static int feed_all(const char *text, size_t max, struct seen *s, char *error)
{
	struct sbx_watch_splitter sp;
	int rc;

	sbx_buf_init(&s->log, 4096);
	sbx_watch_splitter_init(&sp, max, on_event, s);
	rc = sbx_watch_splitter_feed(&sp, text, strlen(text));
	strcpy(error, sp.error);
	sbx_watch_splitter_release(&sp);
	sbx_buf_release(&s->log);
	return rc;
}

static void oversized_event_is_refused(void **state)
{
	struct seen s = { 0 };
	char error[160];
	const char *text = stream();

	/* Whole in one chunk, and across chunks. */
	assert_int_equal(feed_all(text, 100, &s, error), -E2BIG);
	assert_contains(error, "larger than 100 bytes");

	struct sbx_watch_splitter sp;

	sbx_watch_splitter_init(&sp, 100, on_event, &s);
	assert_int_equal(sbx_watch_splitter_feed(&sp, "{\"type\":", 8), 0);
	char filler[200];
	memset(filler, ' ', sizeof(filler));
	assert_int_equal(sbx_watch_splitter_feed(&sp, filler, sizeof(filler)), -E2BIG);
	sbx_watch_splitter_release(&sp);
}

static void malformed_events_are_refused(void **state)
{
	struct seen s = { 0 };
	char error[160];

	assert_int_equal(feed_all("not json\n", 1000, &s, error), -EBADMSG);
	assert_contains(error, "not JSON");
	assert_int_equal(feed_all("{\"type\":\"ADDED\"}\n", 1000, &s, error), -EBADMSG);
	assert_contains(error, "lacks type or object");
	assert_int_equal(feed_all("{\"object\":{}}\n", 1000, &s, error), -EBADMSG);
	assert_int_equal(feed_all("[1,2]\n", 1000, &s, error), -EBADMSG);
}

static void callback_can_stop_the_stream(void **state)
{
	struct seen s = { .stop_after = 1 };
	char error[160];

	assert_int_equal(feed_all(stream(), 4096, &s, error), -ECANCELED);
	assert_int_equal(s.count, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_byte_boundary),
		cmocka_unit_test(one_byte_at_a_time),
		cmocka_unit_test(three_way_splits),
		cmocka_unit_test(oversized_event_is_refused),
		cmocka_unit_test(malformed_events_are_refused),
		cmocka_unit_test(callback_can_stop_the_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
