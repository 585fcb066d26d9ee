/* Unit tests for sandbox-agent/shell.c pieces that need no terminal:
 * truncation and the prompt-marker parser fed in every chunking. (Sessions
 * themselves are tested on real PTYs in tests/integration/test_agent_shell.py.) */
#define _GNU_SOURCE /* before any header: shell.c needs memmem and memrchr */
#include "unit.h"

#include "shell.c"

static void truncation_keeps_head_and_tail(void **state)
{
	char text[100];
	char *t;

	memset(text, 'a', 50);
	memset(text + 50, 'z', 50);
	t = shell_truncate(text, 100, 40);
	assert_true(strncmp(t, "aaaaaaaaaaaaaaaaaaaa", 20) == 0);
	assert_non_null(strstr(t, "[... 60 characters truncated ...]"));
	assert_true(strcmp(t + strlen(t) - 20, "zzzzzzzzzzzzzzzzzzzz") == 0);
	sbx_free(t);
	t = shell_truncate("short", 5, 40);
	assert_string_equal(t, "short");
	sbx_free(t);
	/* Never cuts inside a UTF-8 character. */
	t = shell_truncate("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8, 4);
	json_t *valid = json_string(t); /* NULL if t were not UTF-8 */
	assert_non_null(valid);
	json_decref(valid);
	sbx_free(t);
}

static struct session *fake_session(void)
{
	static struct shell sh;
	struct session *s = sbx_calloc(1, sizeof(*s));

	sh.max_output_bytes = 1 << 20;
	s->sh = &sh;
	s->script = -1; /* no command file to close */
	snprintf(s->nonce, sizeof(s->nonce), "0123456789abcdef");
	snprintf(s->marker, sizeof(s->marker), "\x01SBX%s;", s->nonce);
	s->console = json_array();
	sbx_buf_init(&s->out, 1 << 20);
	sbx_buf_init(&s->scan, 1 << 16);
	s->ready = true;
	s->running = true;
	s->status = ST_RUNNING;
	return s;
}

static void free_session(struct session *s)
{
	sbx_buf_release(&s->out);
	sbx_buf_release(&s->scan);
	json_decref(s->console);
	sbx_free(s->command);
	sbx_free(s);
}

static void marker_parsed_at_every_chunking(void **state)
{
	static const char stream[] =
		"line one\r\n\x01 stray\r\nlast\x01SBX0123456789abcdef;7;/tmp/a;b\x02";
	size_t len = sizeof(stream) - 1;

	for (size_t cut = 0; cut <= len; cut++) {
		struct session *s = fake_session();

		sbx_buf_append(&s->scan, stream, cut);
		parse_scan(s);
		sbx_buf_append(&s->scan, stream + cut, len - cut);
		parse_scan(s);
		if (s->running || s->exit_code != 7 || strcmp(s->cwd, "/tmp/a;b") != 0 ||
		    strcmp(s->out.data, "line one\n\x01 stray\nlast") != 0)
			fail_msg("cut %zu: running=%d rc=%d cwd=%s out=%s", cut, s->running,
				 s->exit_code, s->cwd, s->out.data);
		assert_int_equal(s->status, ST_COMPLETED);
		assert_int_equal(json_array_size(s->console), 1);
		free_session(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(truncation_keeps_head_and_tail),
		cmocka_unit_test(marker_parsed_at_every_chunking),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
