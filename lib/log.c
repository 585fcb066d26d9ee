/* Structured logging (see sbx/log.h). Owns the process-wide log settings. */
#include "sbx/log.h"

#include "sbx/buf.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

/* A line longer than this is cut; logging must never grow without bound. */
#define LOG_LINE_MAX (64 * 1024)

static const char *log_component = "sbx";
static enum sbx_log_level log_level = SBX_LOG_INFO;
static enum sbx_log_format log_format = SBX_LOG_TEXT;
static FILE *log_stream;

static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };

void sbx_log_setup(const char *component, enum sbx_log_level level, enum sbx_log_format format)
{
	log_component = component;
	log_level = level;
	log_format = format;
}

void sbx_log_set_stream(FILE *stream)
{
	log_stream = stream;
}

enum sbx_log_level sbx_log_get_level(void)
{
	return log_level;
}

int sbx_log_level_parse(const char *s, enum sbx_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum sbx_log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = SBX_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

int sbx_log_format_parse(const char *s, enum sbx_log_format *out)
{
	if (strcasecmp(s, "text") == 0)
		*out = SBX_LOG_TEXT;
	else if (strcasecmp(s, "json") == 0)
		*out = SBX_LOG_JSON;
	else
		return -EINVAL;
	return 0;
}

const char *sbx_strerror(int rc)
{
	return strerror(rc < 0 ? -rc : rc);
}

/* 2026-11-22T05:48:01.123Z; out must hold 25 bytes. */
static void format_time(char *out, size_t size)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, size - n, ".%03uZ", (unsigned)(tv.tv_usec / 1000) % 1000u);
}

/* Text values are quoted when they would otherwise be ambiguous to read. */
static void text_value(struct sbx_buf *b, const char *s)
{
	if (!s) {
		sbx_buf_append_str(b, "(null)");
		return;
	}
	if (*s && !strpbrk(s, " \t\n\"=")) {
		sbx_buf_append_str(b, s);
		return;
	}
	sbx_buf_append_str(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			sbx_buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			sbx_buf_append_str(b, "\\n");
		else
			sbx_buf_append(b, s, 1);
	}
	sbx_buf_append_str(b, "\"");
}

static void emit_text(struct sbx_buf *b, const char *ts, enum sbx_log_level level, const char *msg,
		      const struct sbx_log_field *f)
{
	char upper[8];
	size_t i;

	for (i = 0; level_names[level][i] && i < sizeof(upper) - 1; i++)
		upper[i] = (char)(level_names[level][i] - 'a' + 'A');
	upper[i] = '\0';
	sbx_buf_printf(b, "%s %-5s %s", ts, upper, msg);
	for (; f->type != SBX_LOG_FIELD_END; f++) {
		sbx_buf_printf(b, " %s=", f->key);
		switch (f->type) {
		case SBX_LOG_FIELD_STR:
			text_value(b, f->s);
			break;
		case SBX_LOG_FIELD_INT:
			sbx_buf_printf(b, "%lld", f->i);
			break;
		case SBX_LOG_FIELD_BOOL:
			sbx_buf_append_str(b, f->b ? "true" : "false");
			break;
		case SBX_LOG_FIELD_DOUBLE:
			sbx_buf_printf(b, "%g", f->d);
			break;
		case SBX_LOG_FIELD_END:
			break;
		}
	}
}

static json_t *field_json(const struct sbx_log_field *f)
{
	switch (f->type) {
	case SBX_LOG_FIELD_STR:
		return f->s ? json_string(f->s) : json_null();
	case SBX_LOG_FIELD_INT:
		return json_integer(f->i);
	case SBX_LOG_FIELD_BOOL:
		return json_boolean(f->b);
	case SBX_LOG_FIELD_DOUBLE:
		return isfinite(f->d) ? json_real(f->d) : json_null();
	case SBX_LOG_FIELD_END:
		break;
	}
	return json_null();
}

static void emit_json(struct sbx_buf *b, const char *ts, enum sbx_log_level level, const char *msg,
		      const struct sbx_log_field *f)
{
	json_t *o = json_object();
	char *s;

	if (!o)
		return;
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(level_names[level]));
	json_object_set_new(o, "component", json_string(log_component));
	json_object_set_new(o, "msg", json_string(msg));
	for (; f->type != SBX_LOG_FIELD_END; f++)
		json_object_set_new(o, f->key, field_json(f));
	/* Invalid UTF-8 in a field makes json_string fail; keep the line. */
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (s) {
		sbx_buf_append_str(b, s);
		free(s);
	}
	json_decref(o);
}

void sbx_log_emit(enum sbx_log_level level, const char *msg, const struct sbx_log_field *fields)
{
	struct sbx_buf b;
	char ts[32];
	FILE *out = log_stream ? log_stream : stderr;

	if (level < log_level || level >= SBX_LOG_OFF)
		return;
	format_time(ts, sizeof(ts));
	sbx_buf_init(&b, LOG_LINE_MAX);
	if (log_format == SBX_LOG_JSON)
		emit_json(&b, ts, level, msg, fields);
	else
		emit_text(&b, ts, level, msg, fields);
	if (b.len == 0) {
		/* Out of memory or a line over the limit: say so rather than drop it. */
		fprintf(out, "%s %s (log line dropped: too long or out of memory)\n", ts, msg);
	} else {
		sbx_buf_append(&b, "\n", 1);
		fwrite(b.data, 1, b.len, out);
	}
	fflush(out);
	sbx_buf_release(&b);
}
