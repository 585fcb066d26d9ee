/* A streaming multipart/form-data parser (RFC 7578 over RFC 2046).
 *
 * Bytes go in as they arrive, in pieces of any size; part headers are
 * parsed and handed over whole, part bodies are handed over as they come
 * (never buffered), so a part of any size costs a constant amount of memory.
 * Bounded: part header blocks (16 KiB) and the number of parts (a limit the
 * caller sets).
 */
#ifndef SBX_MULTIPART_H
#define SBX_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

struct sbx_multipart;

struct sbx_multipart_part {
	const char *name;	  /* Content-Disposition name ("" if none) */
	const char *filename;	  /* its filename, or NULL when absent */
	const char *content_type; /* or NULL */
};

struct sbx_multipart_callbacks {
	/* Each returns 0 to go on; anything else stops the parser, and
	 * sbx_multipart_feed returns it. */
	int (*part_begin)(void *arg, const struct sbx_multipart_part *part);
	int (*part_data)(void *arg, const char *at, size_t len);
	int (*part_end)(void *arg);
};

/* content_type is the request's Content-Type ("multipart/form-data;
 * boundary=..."). NULL with a reason in err when it is not usable. */
struct sbx_multipart *sbx_multipart_new(const char *content_type,
					const struct sbx_multipart_callbacks *cb, void *arg,
					unsigned max_parts, char *err, size_t err_size);
void sbx_multipart_free(struct sbx_multipart *mp);

/* 0; -EBADMSG for a malformed body (sbx_multipart_error says what); -E2BIG
 * past a limit; or a callback's nonzero return. After an error, further
 * feeds return the same error. */
int sbx_multipart_feed(struct sbx_multipart *mp, const char *data, size_t len);
/* At the end of the body: 0 if the closing boundary was seen, -EBADMSG if
 * the body stopped short. */
int sbx_multipart_finish(struct sbx_multipart *mp);
const char *sbx_multipart_error(const struct sbx_multipart *mp);

#endif
