/* Unit tests for lib/config.c: flags > environment > YAML file, and errors
 * that name their source. */
#include "unit.h"

#include "sbx/config.h"
#include "sbx/log.h"

#include <errno.h>

static char *listen_addr;
static long max_sessions;
static bool verbose;
static struct sbx_strv allow;

static const struct sbx_opt opts[] = {
	{ .name = "listen",
	  .type = SBX_OPT_STRING,
	  .dest = &listen_addr,
	  .metavar = "ADDR",
	  .help = "address" },
	{ .name = "max-sessions",
	  .type = SBX_OPT_INT,
	  .dest = &max_sessions,
	  .metavar = "N",
	  .help = "sessions",
	  .min = 1,
	  .max = 100 },
	{ .name = "verbose", .type = SBX_OPT_BOOL, .dest = &verbose, .help = "more" },
	{ .name = "allow",
	  .type = SBX_OPT_LIST,
	  .dest = &allow,
	  .metavar = "NAME",
	  .help = "names" },
	{ .name = "workspace",
	  .type = SBX_OPT_STRING,
	  .dest = &listen_addr,
	  .help = "dir",
	  .env = "WORKSPACE" },
};

static struct sbx_config cfg;
static char dir[] = "/tmp/sbx-config-test-XXXXXX";
static char file[128];

static int setup(void **state)
{
	listen_addr = "127.0.0.1:8080";
	max_sessions = 10;
	verbose = false;
	allow = (struct sbx_strv){ 0 };
	cfg = (struct sbx_config){ .program = "sbx-test",
				   .summary = "test",
				   .env_prefix = "SBX_T_",
				   .opts = opts,
				   .n_opts = sizeof(opts) / sizeof(opts[0]) };
	unsetenv("SBX_T_LISTEN");
	unsetenv("SBX_T_MAX_SESSIONS");
	unsetenv("SBX_T_ALLOW");
	unsetenv("SBX_T_CONFIG");
	unsetenv("WORKSPACE");
	return 0;
}

static int teardown(void **state)
{
	sbx_config_release(&cfg);
	return 0;
}

static int load(int argc, char **argv, struct capture *c)
{
	int rc;

	capture_start(c);
	rc = sbx_config_load(&cfg, argc, argv);
	capture_stop(c);
	return rc;
}

#define ARGV(...)                             \
	(char *[])                            \
	{                                     \
		"sbx-test", __VA_ARGS__, NULL \
	}
#define ARGC(...)    ((int)(sizeof((char *[]){ "sbx-test", __VA_ARGS__ }) / sizeof(char *)))
#define LOAD(c, ...) load(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (c))

static void defaults_stay_without_input(void **state)
{
	struct capture c;

	assert_int_equal(load(1, (char *[]){ "sbx-test", NULL }, &c), 0);
	assert_string_equal(listen_addr, "127.0.0.1:8080");
	assert_int_equal(max_sessions, 10);
	assert_int_equal(cfg.argi, 1);
}

static void flag_forms_and_positional_stop(void **state)
{
	struct capture c;

	assert_int_equal(LOAD(&c, "--listen", "0.0.0.0:1", "--max-sessions=7", "--verbose",
			      "--allow", "a", "--allow=b", "run", "--listen=ignored"),
			 0);
	assert_string_equal(listen_addr, "0.0.0.0:1");
	assert_int_equal(max_sessions, 7);
	assert_true(verbose);
	assert_int_equal(allow.n, 2);
	assert_string_equal(allow.v[0], "a");
	assert_string_equal(allow.v[1], "b");
	assert_null(allow.v[2]);
	assert_int_equal(cfg.argi, 8);
}

static void double_dash_ends_flags(void **state)
{
	struct capture c;

	assert_int_equal(LOAD(&c, "--verbose=false", "--", "--listen"), 0);
	assert_false(verbose);
	assert_int_equal(cfg.argi, 3);
}

static void precedence_file_env_flag(void **state)
{
	struct capture c;

	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/c.yaml", dir);
	write_file(file, "# comment\nlisten: file:1\nmax-sessions: 3\nallow: [x, y, z]\n");
	assert_int_equal(LOAD(&c, "--config", file), 0);
	assert_string_equal(listen_addr, "file:1");
	assert_int_equal(max_sessions, 3);
	assert_int_equal(allow.n, 3);

	sbx_config_release(&cfg);
	setup(state);
	setenv("SBX_T_LISTEN", "env:2", 1);
	setenv("SBX_T_ALLOW", "p,q", 1);
	setenv("SBX_T_CONFIG", file, 1);
	assert_int_equal(LOAD(&c, "--max-sessions=9"), 0);
	assert_string_equal(listen_addr, "env:2");
	assert_int_equal(max_sessions, 9);
	assert_int_equal(allow.n, 2);
	assert_string_equal(allow.v[1], "q");

	sbx_config_release(&cfg);
	setup(state);
	setenv("WORKSPACE", "/work", 1);
	assert_int_equal(LOAD(&c, "--max-sessions=1"), 0);
	assert_string_equal(listen_addr, "/work");
	unlink(file);
	rmdir(dir);
}

static void bad_values_name_their_source(void **state)
{
	struct capture c;

	assert_int_equal(LOAD(&c, "--max-sessions=lots"), -EINVAL);
	assert_contains(c.text, "sbx-test: flag --max-sessions: expected an integer, got 'lots'");
	assert_int_equal(LOAD(&c, "--max-sessions=1000"), -EINVAL);
	assert_contains(c.text, "expected an integer from 1 to 100, got '1000'");
	assert_int_equal(LOAD(&c, "--verbose=maybe"), -EINVAL);
	assert_contains(c.text, "flag --verbose: expected true or false, got 'maybe'");
	assert_int_equal(LOAD(&c, "--listen"), -EINVAL);
	assert_contains(c.text, "flag --listen: needs a value ADDR");
	assert_int_equal(LOAD(&c, "--nope"), -EINVAL);
	assert_contains(c.text, "unknown flag '--nope'");
	setenv("SBX_T_MAX_SESSIONS", "0", 1);
	assert_int_equal(LOAD(&c, "--verbose"), -EINVAL);
	assert_contains(c.text,
			"environment SBX_T_MAX_SESSIONS: expected an integer from 1 to 100");
}

static void file_errors_name_line_and_key(void **state)
{
	static const struct {
		const char *yaml, *expect;
	} cases[] = {
		{ "listen: a\nmax-sessions: x\n",
		  "c.yaml:2:15: key 'max-sessions': expected an integer" },
		{ "listen: a\nlisten: b\n", "c.yaml:2:1: key 'listen': given twice" },
		{ "lisen: a\n", "c.yaml:1:1: unknown key 'lisen'" },
		{ "- a\n- b\n", "c.yaml:1:1: expected a mapping of option names to values" },
		{ "listen: {a: b}\n", "c.yaml:1:9: key 'listen': expected a single value" },
		{ "allow: [a, [b]]\n", "key 'allow': list items must be strings" },
		{ "allow: [unclosed\n", "invalid YAML" },
	};
	struct capture c;

	assert_non_null(mkdtemp(strcpy(dir, "/tmp/sbx-config-test-XXXXXX")));
	snprintf(file, sizeof(file), "%s/c.yaml", dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(file, cases[i].yaml);
		assert_int_equal(LOAD(&c, "--config", file), -EINVAL);
		assert_contains(c.text, cases[i].expect);
		assert_contains(c.text, file);
		sbx_config_release(&cfg);
		setup(state);
	}
	write_file(file, "");
	assert_int_equal(LOAD(&c, "--config", file), 0);
	unlink(file);
	assert_int_equal(LOAD(&c, "--config", file), -ENOENT);
	assert_contains(c.text, "No such file or directory");
	rmdir(dir);
}

static void help_and_version_answer_and_stop(void **state)
{
	struct capture c;
	char buf[8192];
	FILE *saved = stdout;
	FILE *mem = fmemopen(buf, sizeof(buf), "w");

	stdout = mem;
	assert_int_equal(LOAD(&c, "--max-sessions=bad", "--help"), 1);
	assert_int_equal(LOAD(&c, "--version"), 1);
	fclose(mem);
	stdout = saved;
	assert_contains(buf, "Usage: sbx-test [OPTIONS]");
	assert_contains(buf, "--max-sessions N");
	assert_contains(buf, "(default: 10) [SBX_T_MAX_SESSIONS]");
	assert_contains(buf, "[WORKSPACE]");
	assert_contains(buf, "sbx-test 0.");
}

static void list_items_are_bounded(void **state)
{
	struct capture c;

	cfg.max_list_items = 2;
	assert_int_equal(LOAD(&c, "--allow=a", "--allow=b", "--allow=c"), -E2BIG);
	assert_contains(c.text, "flag --allow: more than 2 items");
}

/* Found by fuzz_config_yaml: a second load after release must not touch the
 * strings the first load owned. */
static void load_release_load_again(void **state)
{
	struct capture c;

	setenv("SBX_T_LOG_LEVEL", "debug", 1);
	assert_int_equal(LOAD(&c, "--log-format=json"), 0);
	sbx_config_release(&cfg);
	unsetenv("SBX_T_LOG_LEVEL");
	assert_int_equal(LOAD(&c, "--listen=x"), 0);
	assert_string_equal(listen_addr, "x");
	assert_int_equal(sbx_log_get_level(), SBX_LOG_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(defaults_stay_without_input, setup, teardown),
		cmocka_unit_test_setup_teardown(flag_forms_and_positional_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(double_dash_ends_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(precedence_file_env_flag, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_values_name_their_source, setup, teardown),
		cmocka_unit_test_setup_teardown(file_errors_name_line_and_key, setup, teardown),
		cmocka_unit_test_setup_teardown(help_and_version_answer_and_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(list_items_are_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(load_release_load_again, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
