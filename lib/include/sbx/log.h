/* Structured logging to stderr, as human text or JSON lines.
 *
 *   sbx_log_info("watch reconnect", SBX_LS("path", path), SBX_LI("attempt", n));
 *
 * text: 2026-11-22T05:48:01.123Z INFO watch reconnect path=/api/v1/pods attempt=2
 * json: {"ts":"2026-11-22T05:48:01.123Z","level":"info","component":"sbx-operator",
 *        "msg":"watch reconnect","path":"/api/v1/pods","attempt":2}
 *
 * Fields are typed so that JSON output keeps numbers and booleans as such.
 * Messages below the configured level cost one comparison.
 */
#ifndef SBX_LOG_H
#define SBX_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum sbx_log_level {
	SBX_LOG_DEBUG,
	SBX_LOG_INFO,
	SBX_LOG_WARN,
	SBX_LOG_ERROR,
	SBX_LOG_OFF,
};

enum sbx_log_format {
	SBX_LOG_TEXT,
	SBX_LOG_JSON,
};

enum sbx_log_field_type {
	SBX_LOG_FIELD_END,
	SBX_LOG_FIELD_STR,
	SBX_LOG_FIELD_INT,
	SBX_LOG_FIELD_BOOL,
	SBX_LOG_FIELD_DOUBLE,
};

struct sbx_log_field {
	const char *key;
	enum sbx_log_field_type type;
	union {
		const char *s;
		long long i;
		bool b;
		double d;
	};
};

#define SBX_LS(k, v) ((struct sbx_log_field){ .key = (k), .type = SBX_LOG_FIELD_STR, .s = (v) })
#define SBX_LI(k, v) ((struct sbx_log_field){ .key = (k), .type = SBX_LOG_FIELD_INT, .i = (v) })
#define SBX_LB(k, v) ((struct sbx_log_field){ .key = (k), .type = SBX_LOG_FIELD_BOOL, .b = (v) })
#define SBX_LD(k, v) ((struct sbx_log_field){ .key = (k), .type = SBX_LOG_FIELD_DOUBLE, .d = (v) })
/* An errno-style code as both number and text: err=-111 error="Connection refused". */
#define SBX_LERR(rc) SBX_LI("err", (rc)), SBX_LS("error", sbx_strerror(rc))

/* Process-wide settings; 'component' is copied by pointer (use a literal). */
void sbx_log_setup(const char *component, enum sbx_log_level level, enum sbx_log_format format);
void sbx_log_set_stream(FILE *stream);
enum sbx_log_level sbx_log_get_level(void);

/* Parses "debug", "info", "warn"/"warning", "error", "off"; -EINVAL otherwise. */
int sbx_log_level_parse(const char *s, enum sbx_log_level *out);
int sbx_log_format_parse(const char *s, enum sbx_log_format *out);

/* Text for a negative errno-style code (also for sbx's own codes). */
const char *sbx_strerror(int rc);

void sbx_log_emit(enum sbx_log_level level, const char *msg, const struct sbx_log_field *fields);

#define sbx_log_(level, msg, ...)                                                \
	do {                                                                     \
		if ((level) >= sbx_log_get_level())                              \
			sbx_log_emit((level), (msg),                             \
				     (const struct sbx_log_field[]){             \
					     __VA_ARGS__ __VA_OPT__(, ){ 0 } }); \
	} while (0)

#define sbx_log_debug(msg, ...) sbx_log_(SBX_LOG_DEBUG, msg, __VA_ARGS__)
#define sbx_log_info(msg, ...)	sbx_log_(SBX_LOG_INFO, msg, __VA_ARGS__)
#define sbx_log_warn(msg, ...)	sbx_log_(SBX_LOG_WARN, msg, __VA_ARGS__)
#define sbx_log_error(msg, ...) sbx_log_(SBX_LOG_ERROR, msg, __VA_ARGS__)

#endif
