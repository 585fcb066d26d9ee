/* Program configuration from flags, environment and a YAML file.
 *
 * A program describes its options once, in a table; each option is reachable
 * as a flag (--max-sessions 10, --max-sessions=10), an environment variable
 * (SBX_AGENT_MAX_SESSIONS, or an explicit name) and a key of the YAML file
 * named by --config (max-sessions: 10). Precedence: flags > environment >
 * file > the default already stored in the destination.
 *
 * Every rejected value yields one message naming where it came from (flag,
 * variable, or file:line:column and key) and what was expected.
 */
#ifndef SBX_CONFIG_H
#define SBX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum sbx_opt_type {
	SBX_OPT_STRING, /* char ** (default may be a literal; loaded values are owned by the config)
			 */
	SBX_OPT_INT,	/* long *, bounded by min..max */
	SBX_OPT_BOOL,	/* bool *; true/false, yes/no, on/off, 1/0 */
	SBX_OPT_LIST,	/* struct sbx_strv * (default must be empty); repeat the flag,
			 * comma-separate the env var, YAML sequence */
};

struct sbx_strv {
	char **v;
	size_t n;
};

struct sbx_opt {
	const char *name; /* flag and YAML key, lower-case-with-dashes */
	enum sbx_opt_type type;
	void *dest;
	const char *metavar; /* shown in --help, e.g. "ADDR" */
	const char *help;
	long min, max;	 /* SBX_OPT_INT bounds (both 0: any value) */
	const char *env; /* environment name instead of PREFIX_NAME; "" for none */
};

struct sbx_config {
	/* set by the caller */
	const char *program;	/* "sbx-agent" */
	const char *summary;	/* one line for --help */
	const char *usage;	/* what follows the options, e.g. "[run -- CMD [ARG...]]" */
	const char *env_prefix; /* "SBX_AGENT_" */
	const struct sbx_opt *opts;
	size_t n_opts;
	size_t max_list_items; /* bound for SBX_OPT_LIST (0: 1024) */

	/* results */
	int argi;	   /* index of the first positional argument */
	char *config_file; /* --config, if any */

	/* private: strings the config owns */
	char **owned;
	size_t n_owned;
};

/* Loads the configuration. Returns 0 to go on, 1 when --help or --version was
 * answered (exit 0), or a negative code after printing the reason to stderr
 * (exit 2). Also applies --log-level / --log-format to the logger. */
int sbx_config_load(struct sbx_config *c, int argc, char **argv);

/* Frees the strings the config loaded (destinations then dangle). */
void sbx_config_release(struct sbx_config *c);

/* Parsers shared with other modules; 0 or -EINVAL. */
int sbx_parse_bool(const char *s, bool *out);
int sbx_parse_long(const char *s, long min, long max, long *out);

#endif
