/* Configuration loading (see sbx/config.h). YAML is read with libyaml's event
 * API so that every error can name the line and column it came from. */
#include "sbx/config.h"

#include "sbx/alloc.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* Where a value came from, for messages and for list replacement rules. */
enum source { SRC_FILE, SRC_ENV, SRC_FLAG };

struct origin {
	enum source src;
	const char *file;
	size_t line, column; /* 0-based from libyaml; printed 1-based */
	const char *env;
};

static void fail(const struct sbx_config *c, const struct origin *o, const struct sbx_opt *opt,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void fail(const struct sbx_config *c, const struct origin *o, const struct sbx_opt *opt,
		 const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", c->program);
	if (o && o->src == SRC_FILE)
		fprintf(stderr, "%s:%zu:%zu: key '%s': ", o->file, o->line + 1, o->column + 1,
			opt ? opt->name : "?");
	else if (o && o->src == SRC_ENV)
		fprintf(stderr, "environment %s: ", o->env);
	else if (o && opt)
		fprintf(stderr, "flag --%s: ", opt->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int sbx_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int sbx_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno == ERANGE || isspace((unsigned char)*s))
		return -EINVAL;
	if ((min || max) && (v < min || v > max))
		return -ERANGE;
	*out = v;
	return 0;
}

static char *own(struct sbx_config *c, const char *s, size_t n)
{
	char **grown, *copy;

	grown = sbx_realloc(c->owned, (c->n_owned + 1) * sizeof(*grown));
	if (!grown)
		return NULL;
	c->owned = grown;
	copy = sbx_strndup(s, n);
	if (!copy)
		return NULL;
	c->owned[c->n_owned++] = copy;
	return copy;
}

void sbx_config_release(struct sbx_config *c)
{
	for (size_t i = 0; i < c->n_opts; i++) {
		struct sbx_strv *sv = c->opts[i].dest;

		if (c->opts[i].type != SBX_OPT_LIST)
			continue;
		sbx_free(sv->v);
		sv->v = NULL;
		sv->n = 0;
	}
	for (size_t i = 0; i < c->n_owned; i++)
		sbx_free(c->owned[i]);
	sbx_free(c->owned);
	c->owned = NULL;
	c->n_owned = 0;
}

/* List items are owned strings; the vector itself is freed on release. */
static int list_push(struct sbx_config *c, const struct origin *o, const struct sbx_opt *opt,
		     const char *s, size_t n)
{
	struct sbx_strv *sv = opt->dest;
	size_t limit = c->max_list_items ? c->max_list_items : 1024;
	char **grown, *copy;

	if (sv->n >= limit) {
		fail(c, o, opt, "more than %zu items", limit);
		return -E2BIG;
	}
	copy = own(c, s, n);
	grown = copy ? sbx_realloc(sv->v, (sv->n + 2) * sizeof(*grown)) : NULL;
	if (!grown) {
		fail(c, o, opt, "out of memory");
		return -ENOMEM;
	}
	grown[sv->n++] = copy;
	grown[sv->n] = NULL;
	sv->v = grown;
	return 0;
}

/* Stores one scalar value into an option. */
static int set_value(struct sbx_config *c, const struct origin *o, const struct sbx_opt *opt,
		     const char *value)
{
	long l;
	bool b;
	int rc;

	switch (opt->type) {
	case SBX_OPT_STRING:
		*(char **)opt->dest = own(c, value, strlen(value));
		if (!*(char **)opt->dest) {
			fail(c, o, opt, "out of memory");
			return -ENOMEM;
		}
		return 0;
	case SBX_OPT_INT:
		rc = sbx_parse_long(value, opt->min, opt->max, &l);
		if (rc == -ERANGE)
			fail(c, o, opt, "expected an integer from %ld to %ld, got '%s'", opt->min,
			     opt->max, value);
		else if (rc)
			fail(c, o, opt, "expected an integer, got '%s'", value);
		else
			*(long *)opt->dest = l;
		return rc ? -EINVAL : 0;
	case SBX_OPT_BOOL:
		if (sbx_parse_bool(value, &b)) {
			fail(c, o, opt, "expected true or false, got '%s'", value);
			return -EINVAL;
		}
		*(bool *)opt->dest = b;
		return 0;
	case SBX_OPT_LIST:
		return list_push(c, o, opt, value, strlen(value));
	}
	return -EINVAL;
}

static const struct sbx_opt *find_opt(const struct sbx_config *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->n_opts; i++) {
		if (strlen(c->opts[i].name) == len && strncmp(c->opts[i].name, name, len) == 0)
			return &c->opts[i];
	}
	return NULL;
}

/* ---- YAML file ---------------------------------------------------------- */

struct yaml_ctx {
	struct sbx_config *c;
	yaml_parser_t parser;
	struct origin o;
	bool seen[256]; /* duplicate keys, by option index */
};

static int yaml_next(struct yaml_ctx *y, yaml_event_t *ev)
{
	if (yaml_parser_parse(&y->parser, ev))
		return 0;
	fprintf(stderr, "%s: %s:%zu:%zu: invalid YAML: %s\n", y->c->program, y->o.file,
		y->parser.problem_mark.line + 1, y->parser.problem_mark.column + 1,
		y->parser.problem ? y->parser.problem : "parse error");
	return -EINVAL;
}

static void mark(struct yaml_ctx *y, const yaml_event_t *ev)
{
	y->o.line = ev->start_mark.line;
	y->o.column = ev->start_mark.column;
}

/* Reads the value of one key: a scalar, or a sequence of scalars for lists. */
static int yaml_value(struct yaml_ctx *y, const struct sbx_opt *opt)
{
	yaml_event_t ev;
	int rc;

	if ((rc = yaml_next(y, &ev)))
		return rc;
	mark(y, &ev);
	if (ev.type == YAML_SCALAR_EVENT) {
		rc = set_value(y->c, &y->o, opt, (const char *)ev.data.scalar.value);
		yaml_event_delete(&ev);
		return rc;
	}
	if (ev.type != YAML_SEQUENCE_START_EVENT || opt->type != SBX_OPT_LIST) {
		yaml_event_delete(&ev);
		fail(y->c, &y->o, opt, "expected %s",
		     opt->type == SBX_OPT_LIST ? "a list of strings" : "a single value");
		return -EINVAL;
	}
	yaml_event_delete(&ev);
	for (;;) {
		if ((rc = yaml_next(y, &ev)))
			return rc;
		mark(y, &ev);
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			yaml_event_delete(&ev);
			fail(y->c, &y->o, opt, "list items must be strings");
			return -EINVAL;
		}
		rc = set_value(y->c, &y->o, opt, (const char *)ev.data.scalar.value);
		yaml_event_delete(&ev);
		if (rc)
			return rc;
	}
}

/* Walks the top-level mapping; keys name options. */
static int yaml_mapping(struct yaml_ctx *y)
{
	const struct sbx_opt *opt;
	yaml_event_t ev;
	int rc;

	for (;;) {
		if ((rc = yaml_next(y, &ev)))
			return rc;
		mark(y, &ev);
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			yaml_event_delete(&ev);
			fail(y->c, &y->o, NULL, "keys must be plain names");
			return -EINVAL;
		}
		opt = find_opt(y->c, (const char *)ev.data.scalar.value, ev.data.scalar.length);
		if (!opt) {
			fprintf(stderr,
				"%s: %s:%zu:%zu: unknown key '%s' (see --help for the keys)\n",
				y->c->program, y->o.file, y->o.line + 1, y->o.column + 1,
				(const char *)ev.data.scalar.value);
			yaml_event_delete(&ev);
			return -EINVAL;
		}
		yaml_event_delete(&ev);
		if (y->seen[(size_t)(opt - y->c->opts) % 256]) {
			fail(y->c, &y->o, opt, "given twice");
			return -EINVAL;
		}
		y->seen[(size_t)(opt - y->c->opts) % 256] = true;
		if ((rc = yaml_value(y, opt)))
			return rc;
	}
}

/* Expects: stream start, then nothing (empty file) or one document whose root
 * is a mapping. */
static int yaml_document(struct yaml_ctx *y)
{
	yaml_event_t ev;
	int rc;

	for (;;) {
		if ((rc = yaml_next(y, &ev)))
			return rc;
		mark(y, &ev);
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			yaml_event_delete(&ev);
			continue;
		case YAML_STREAM_END_EVENT:
			yaml_event_delete(&ev);
			return 0;
		case YAML_MAPPING_START_EVENT:
			yaml_event_delete(&ev);
			if ((rc = yaml_mapping(y)))
				return rc;
			continue;
		case YAML_SCALAR_EVENT:
			/* An empty document ('---' alone) is an empty scalar: no settings. */
			if (ev.data.scalar.length == 0) {
				yaml_event_delete(&ev);
				continue;
			}
			/* fall through */
		default:
			yaml_event_delete(&ev);
			fprintf(stderr,
				"%s: %s:%zu:%zu: expected a mapping of option names to values\n",
				y->c->program, y->o.file, y->o.line + 1, y->o.column + 1);
			return -EINVAL;
		}
	}
}

static int load_file(struct sbx_config *c, const char *path)
{
	struct yaml_ctx y = { .c = c, .o = { .src = SRC_FILE, .file = path } };
	FILE *f;
	int rc;

	f = fopen(path, "rb");
	if (!f) {
		rc = -errno;
		fprintf(stderr, "%s: config file %s: %s\n", c->program, path, sbx_strerror(rc));
		return rc;
	}
	if (!yaml_parser_initialize(&y.parser)) {
		fclose(f);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&y.parser, f);
	rc = yaml_document(&y);
	yaml_parser_delete(&y.parser);
	fclose(f);
	return rc;
}

/* ---- environment -------------------------------------------------------- */

static void env_name(const struct sbx_config *c, const struct sbx_opt *opt, char *out, size_t size)
{
	size_t n;

	if (opt->env) {
		snprintf(out, size, "%s", opt->env);
		return;
	}
	n = (size_t)snprintf(out, size, "%s", c->env_prefix ? c->env_prefix : "");
	for (const char *p = opt->name; *p && n + 1 < size; p++)
		out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
	out[n < size ? n : size - 1] = '\0';
}

static int load_env(struct sbx_config *c)
{
	char name[128];
	const char *v, *p, *comma;
	int rc;

	for (size_t i = 0; i < c->n_opts; i++) {
		const struct sbx_opt *opt = &c->opts[i];
		struct origin o = { .src = SRC_ENV, .env = name };

		env_name(c, opt, name, sizeof(name));
		if (!name[0] || !(v = getenv(name)))
			continue;
		if (opt->type != SBX_OPT_LIST) {
			if ((rc = set_value(c, &o, opt, v)))
				return rc;
			continue;
		}
		((struct sbx_strv *)opt->dest)->n = 0;
		for (p = v; *p; p = comma ? comma + 1 : p + strlen(p)) {
			comma = strchr(p, ',');
			size_t len = comma ? (size_t)(comma - p) : strlen(p);
			if (len && (rc = list_push(c, &o, opt, p, len)))
				return rc;
			if (!comma)
				break;
		}
	}
	return 0;
}

/* ---- flags and help ----------------------------------------------------- */

static void print_help(const struct sbx_config *c)
{
	char env[128], left[64];

	printf("Usage: %s [OPTIONS]%s%s\n%s\n\nOptions (flag, environment variable):\n", c->program,
	       c->usage ? " " : "", c->usage ? c->usage : "", c->summary);
	for (size_t i = 0; i < c->n_opts; i++) {
		const struct sbx_opt *opt = &c->opts[i];

		env_name(c, opt, env, sizeof(env));
		snprintf(left, sizeof(left), "--%s%s%s", opt->name, opt->metavar ? " " : "",
			 opt->metavar ? opt->metavar : "");
		printf("  %-28s %s", left, opt->help);
		if (opt->type == SBX_OPT_STRING && *(char **)opt->dest)
			printf(" (default: %s)", *(char **)opt->dest);
		else if (opt->type == SBX_OPT_INT)
			printf(" (default: %ld)", *(long *)opt->dest);
		else if (opt->type == SBX_OPT_BOOL)
			printf(" (default: %s)", *(bool *)opt->dest ? "true" : "false");
		if (env[0])
			printf(" [%s]", env);
		putchar('\n');
	}
	printf("  %-28s %s\n  %-28s %s\n\n", "-h, --help", "show this help and exit", "--version",
	       "show the version and exit");
	printf("The file given by --config is YAML: a mapping from option names (as above, without\n"
	       "the dashes in front) to values. Flags override the environment, which overrides\n"
	       "the file. Documentation: docs/configuration.md\n");
}

/* True for --flag / --flag=... at argv[i]; sets *name, *len and *value. */
static bool split_flag(const char *arg, const char **name, size_t *len, const char **value)
{
	const char *eq;

	if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
		return false;
	*name = arg + 2;
	eq = strchr(*name, '=');
	*len = eq ? (size_t)(eq - *name) : strlen(*name);
	*value = eq ? eq + 1 : NULL;
	return true;
}

/* Applies flags. Lists given on the command line replace earlier lists. */
static int load_flags(struct sbx_config *c, int argc, char **argv)
{
	bool list_reset[256] = { false };
	const struct sbx_opt *opt;
	const char *name, *value;
	size_t len;
	int i, rc;

	for (i = 1; i < argc; i++) {
		struct origin o = { .src = SRC_FLAG };

		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (!split_flag(argv[i], &name, &len, &value)) {
			if (argv[i][0] == '-' && argv[i][1] != '\0') {
				fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", c->program,
					argv[i]);
				return -EINVAL;
			}
			break;
		}
		opt = find_opt(c, name, len);
		if (!opt) {
			fprintf(stderr, "%s: unknown flag '--%.*s' (see --help)\n", c->program,
				(int)len, name);
			return -EINVAL;
		}
		if (!value && opt->type == SBX_OPT_BOOL) {
			value = "true";
		} else if (!value) {
			if (i + 1 >= argc) {
				fail(c, &o, opt, "needs a value%s%s", opt->metavar ? " " : "",
				     opt->metavar ? opt->metavar : "");
				return -EINVAL;
			}
			value = argv[++i];
		}
		if (opt->type == SBX_OPT_LIST && !list_reset[(size_t)(opt - c->opts) % 256]) {
			list_reset[(size_t)(opt - c->opts) % 256] = true;
			((struct sbx_strv *)opt->dest)->n = 0;
		}
		if ((rc = set_value(c, &o, opt, value)))
			return rc;
	}
	c->argi = i;
	return 0;
}

/* Looks for --help / --version / --config before anything else is applied. */
static int prescan(struct sbx_config *c, int argc, char **argv, const char **file)
{
	const char *name, *value;
	size_t len;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			print_help(c);
			return 1;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("%s %s\n", c->program, SBX_VERSION);
			return 1;
		}
		if (!split_flag(argv[i], &name, &len, &value))
			continue;
		if (len == 6 && strncmp(name, "config", 6) == 0)
			*file = value ? value : (i + 1 < argc ? argv[i + 1] : NULL);
		/* Skip the value of a flag that takes one, so a value is never taken
		 * for a flag. */
		const struct sbx_opt *opt = find_opt(c, name, len);
		if (opt && !value && opt->type != SBX_OPT_BOOL)
			i++;
	}
	return 0;
}

static int apply_logging(struct sbx_config *c, const char *opt_log_level,
			 const char *opt_log_format)
{
	enum sbx_log_level level;
	enum sbx_log_format format;

	if (sbx_log_level_parse(opt_log_level, &level)) {
		fprintf(stderr, "%s: log level '%s': expected debug, info, warn, error or off\n",
			c->program, opt_log_level);
		return -EINVAL;
	}
	if (sbx_log_format_parse(opt_log_format, &format)) {
		fprintf(stderr, "%s: log format '%s': expected text or json\n", c->program,
			opt_log_format);
		return -EINVAL;
	}
	sbx_log_setup(c->program, level, format);
	return 0;
}

int sbx_config_load(struct sbx_config *c, int argc, char **argv)
{
	/* The logging options live only for the load: the strings they point to
	 * are the config's and go with sbx_config_release. */
	char *opt_log_level = "info", *opt_log_format = "text";
	struct sbx_opt *all;
	const char *file = NULL;
	size_t n = c->n_opts;
	const struct sbx_opt *user = c->opts;
	int rc;

	/* The common options are appended to the program's own table. */
	assert(n < 250);
	all = sbx_calloc(n + 3, sizeof(*all));
	if (!all)
		return -ENOMEM;
	if (n)
		memcpy(all, user, n * sizeof(*all));
	c->config_file = NULL;
	all[n++] = (struct sbx_opt){ .name = "config",
				     .type = SBX_OPT_STRING,
				     .dest = &c->config_file,
				     .metavar = "FILE",
				     .help = "read options from this YAML file" };
	all[n++] = (struct sbx_opt){ .name = "log-level",
				     .type = SBX_OPT_STRING,
				     .dest = &opt_log_level,
				     .metavar = "LEVEL",
				     .help = "debug, info, warn, error or off" };
	all[n++] = (struct sbx_opt){ .name = "log-format",
				     .type = SBX_OPT_STRING,
				     .dest = &opt_log_format,
				     .metavar = "FORMAT",
				     .help = "text or json (one JSON object per line)" };
	c->opts = all;
	c->n_opts = n;

	rc = prescan(c, argc, argv, &file);
	if (rc)
		goto out_restore;
	if (!file) {
		char env[128];

		env_name(c, &all[n - 3], env, sizeof(env));
		file = getenv(env);
	}
	if (file && (rc = load_file(c, file)))
		goto out_restore;
	if ((rc = load_env(c)) || (rc = load_flags(c, argc, argv)))
		goto out_restore;
	rc = apply_logging(c, opt_log_level, opt_log_format);
out_restore:
	c->opts = user;
	c->n_opts -= 3;
	sbx_free(all);
	return rc;
}
