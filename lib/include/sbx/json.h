/* JSON helpers on jansson: bounded loading with a readable error, dotted-path
 * lookups that never crash on a wrong type, and dumping into a bounded buffer. */
#ifndef SBX_JSON_H
#define SBX_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct sbx_buf;

/* Parses exactly one JSON value from data[0..len). Returns a new reference,
 * or NULL with "line L, column C: what" (or "larger than N bytes") in err. */
json_t *sbx_json_loadb(const char *data, size_t len, size_t max_bytes, char *err, size_t err_size);
/* The same, allowed at most 'memory' bytes for what it builds: beyond,
 * NULL with *over set (and err saying so). */
json_t *sbx_json_loadb_within(const char *data, size_t len, size_t max_bytes, size_t memory,
			      char *err, size_t err_size, bool *over);
/* jansson's allocation functions (installed by sbx_alloc_install_jansson). */
void *sbx_json_malloc(size_t size);
void sbx_json_free(void *ptr);

/* Follows "a.b.c" through nested objects; NULL if any step is missing or not
 * an object. A borrowed reference. */
json_t *sbx_json_path(const json_t *root, const char *path);
/* The string at path, or NULL if absent or not a string (borrowed). */
const char *sbx_json_str(const json_t *root, const char *path);
/* The integer at path: 0, -ENOENT if absent, -EINVAL if not an integer. */
int sbx_json_int(const json_t *root, const char *path, long long *out);
/* The boolean at path, or 'fallback' when absent or not a boolean. */
bool sbx_json_bool(const json_t *root, const char *path, bool fallback);

/* Appends the compact JSON text of v to b: 0, -E2BIG past b's limit, -ENOMEM. */
int sbx_json_dump_buf(const json_t *v, struct sbx_buf *b);
/* Compact JSON text owned by the caller (sbx_free), or NULL on -ENOMEM. */
char *sbx_json_dumps(const json_t *v);

/* A JSON string of bytes that may not be UTF-8 (a program's output): each
 * invalid sequence (stray, overlong, surrogate, past U+10FFFF, cut short)
 * becomes U+FFFD, so the text always serializes. NULL only on -ENOMEM. */
json_t *sbx_json_string_lossy(const char *data, size_t len);
/* Length of the longest valid UTF-8 prefix of data[0..len). */
size_t sbx_utf8_valid_prefix(const char *data, size_t len);

#endif
