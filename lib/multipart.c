/* Streaming multipart/form-data parser (see sbx/multipart.h).
 *
 * Part bodies end at the delimiter "\r\n--" + boundary. A boundary may not
 * hold CR or LF (RFC 2046 bchars), so within the delimiter CR occurs only
 * at its start: after a partial match fails, the only place a new match can
 * begin is the failing byte itself, if it is a CR. That keeps the search
 * linear without a look-behind buffer (the matched bytes are the
 * delimiter's own prefix, handed out from it when they turn out to be data).
 */
#define _GNU_SOURCE
#include "sbx/multipart.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BOUNDARY	 70
#define MAX_HEADER_BLOCK (16 * 1024)
#define MAX_VALUE	 1024

enum state {
	S_PREAMBLE,
	S_AFTER_DELIM,	    /* "--" (the end) or padding then CRLF */
	S_AFTER_DELIM_DASH, /* one '-' seen */
	S_AFTER_DELIM_CR,   /* CR seen, LF due */
	S_HEADERS,
	S_DATA,
	S_END,
	S_ERROR,
};

struct sbx_multipart {
	struct sbx_multipart_callbacks cb;
	void *arg;
	unsigned max_parts, n_parts;
	char delim[4 + MAX_BOUNDARY + 1]; /* "\r\n--" boundary */
	size_t dlen;
	size_t matched; /* bytes of delim matched so far */
	enum state state;
	struct sbx_buf hdr;
	int error;
	char message[160];
	char name[MAX_VALUE], filename[MAX_VALUE], content_type[MAX_VALUE];
};

static int fail(struct sbx_multipart *mp, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct sbx_multipart *mp, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(mp->message, sizeof(mp->message), fmt, ap);
	va_end(ap);
	mp->state = S_ERROR;
	mp->error = err;
	return err;
}

/* ---- header parameters ------------------------------------------------------ */

static const char *skip_ows(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Finds parameter key in "type; k=v; k2=\"v 2\"" (from just after the type)
 * and copies its value, unquoted, to out. Returns its length, -ENOENT when
 * absent, -EBADMSG when the parameters are malformed, -E2BIG when too long. */
static int get_param(const char *p, const char *end, const char *key, char *out, size_t size)
{
	size_t klen = strlen(key);

	while (p < end) {
		const char *k, *kend;
		size_t n = 0;
		bool want;

		p = skip_ows(p, end);
		if (p < end && *p == ';') {
			p++;
			continue;
		}
		k = p;
		while (p < end && *p != '=' && *p != ';')
			p++;
		kend = p;
		while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t'))
			kend--;
		want = (size_t)(kend - k) == klen && strncasecmp(k, key, klen) == 0;
		if (p == end || *p == ';') {
			if (want)
				return -EBADMSG; /* a key without a value */
			continue;
		}
		p = skip_ows(p + 1, end);
		if (p < end && *p == '"') {
			for (p++;; p++) {
				if (p == end)
					return -EBADMSG; /* unterminated quoted string */
				if (*p == '"')
					break;
				if (*p == '\\' && p + 1 < end)
					p++;
				if (want) {
					if (n + 1 >= size)
						return -E2BIG;
					out[n++] = *p;
				}
			}
			p++;
		} else {
			const char *v = p;

			while (p < end && *p != ';')
				p++;
			if (want) {
				const char *vend = p;

				while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
					vend--;
				if ((size_t)(vend - v) >= size)
					return -E2BIG;
				n = (size_t)(vend - v);
				memcpy(out, v, n);
			}
		}
		if (want) {
			out[n] = '\0';
			return (int)n;
		}
	}
	return -ENOENT;
}

/* RFC 8187 ext-value "UTF-8'lang'percent-encoded" decoded in place. */
static int decode_ext_value(char *v)
{
	char *q1 = strchr(v, '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
	char *in, *out = v;

	if (!q2 || (size_t)(q1 - v) != 5 || strncasecmp(v, "utf-8", 5) != 0)
		return -EBADMSG;
	for (in = q2 + 1; *in; in++) {
		if (*in == '%') {
			int hi = hexval((unsigned char)in[1]),
			    lo = hi < 0 ? -1 : hexval((unsigned char)in[2]);

			if (lo < 0)
				return -EBADMSG;
			*out++ = (char)(hi * 16 + lo);
			in += 2;
		} else {
			*out++ = *in;
		}
	}
	*out = '\0';
	return 0;
}

/* ---- part headers ----------------------------------------------------------- */

static int parse_disposition(struct sbx_multipart *mp, const char *v, const char *end,
			     bool *has_filename)
{
	char ext[MAX_VALUE];
	const char *p = v;
	int rc;

	while (p < end && *p != ';')
		p++; /* the disposition type ("form-data") */
	rc = get_param(p, end, "name", mp->name, sizeof(mp->name));
	if (rc == -ENOENT)
		mp->name[0] = '\0';
	else if (rc < 0)
		return fail(mp, rc == -E2BIG ? -E2BIG : -EBADMSG,
			    "malformed Content-Disposition name");
	rc = get_param(p, end, "filename*", ext, sizeof(ext));
	if (rc >= 0 && decode_ext_value(ext) == 0) {
		memcpy(mp->filename, ext, strlen(ext) + 1);
		*has_filename = true;
		return 0;
	}
	rc = get_param(p, end, "filename", mp->filename, sizeof(mp->filename));
	if (rc >= 0)
		*has_filename = true;
	else if (rc != -ENOENT)
		return fail(mp, rc == -E2BIG ? -E2BIG : -EBADMSG,
			    "malformed Content-Disposition filename");
	return 0;
}

/* The header block (without its final empty line) into the part's fields,
 * then part_begin. */
static int begin_part(struct sbx_multipart *mp)
{
	const char *p = mp->hdr.data, *end = mp->hdr.data + mp->hdr.len;
	struct sbx_multipart_part part = { .name = mp->name };
	bool has_filename = false, has_type = false;
	int rc;

	mp->name[0] = mp->filename[0] = mp->content_type[0] = '\0';
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		const char *colon, *v, *vend;

		if (!eol)
			eol = end;
		if (eol == p)
			break;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon || colon == p || *p == ' ' || *p == '\t')
			return fail(mp, -EBADMSG, "malformed part header line");
		v = skip_ows(colon + 1, eol);
		vend = eol;
		while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		if (colon - p == 19 && strncasecmp(p, "Content-Disposition", 19) == 0) {
			if ((rc = parse_disposition(mp, v, vend, &has_filename)))
				return rc;
		} else if (colon - p == 12 && strncasecmp(p, "Content-Type", 12) == 0) {
			size_t n = (size_t)(vend - v);

			if (n >= sizeof(mp->content_type))
				return fail(mp, -E2BIG, "part Content-Type too long");
			memcpy(mp->content_type, v, n);
			mp->content_type[n] = '\0';
			has_type = true;
		}
		p = eol + 2;
	}
	part.filename = has_filename ? mp->filename : NULL;
	part.content_type = has_type ? mp->content_type : NULL;
	if (mp->cb.part_begin && (rc = mp->cb.part_begin(mp->arg, &part)))
		return fail(mp, rc, "stopped at the start of part \"%.80s\"", mp->name);
	return 0;
}

/* ---- the byte stream ---------------------------------------------------------- */

static int emit(struct sbx_multipart *mp, const char *at, size_t len)
{
	int rc;

	if (!len || !mp->cb.part_data)
		return 0;
	if ((rc = mp->cb.part_data(mp->arg, at, len)))
		return fail(mp, rc, "stopped in part \"%.80s\"", mp->name);
	return 0;
}

/* Body bytes from data[*i]: returns once the delimiter is complete or the
 * input is used up. */
static int scan_data(struct sbx_multipart *mp, const char *data, size_t len, size_t *i)
{
	while (*i < len) {
		if (mp->matched == 0) {
			const char *cr = memchr(data + *i, '\r', len - *i);
			size_t upto = cr ? (size_t)(cr - data) : len;
			int rc = emit(mp, data + *i, upto - *i);

			*i = upto;
			if (rc || !cr)
				return rc;
			mp->matched = 1;
			(*i)++;
			continue;
		}
		if (data[*i] == mp->delim[mp->matched]) {
			(*i)++;
			if (++mp->matched == mp->dlen)
				return 0;
			continue;
		}
		/* Not the delimiter after all: what matched was data. */
		if (emit(mp, mp->delim, mp->matched))
			return mp->error;
		mp->matched = 0; /* the byte is looked at again from scratch */
	}
	return 0;
}

int sbx_multipart_feed(struct sbx_multipart *mp, const char *data, size_t len)
{
	size_t i = 0;
	int rc;

	while (i < len) {
		char c = data[i];

		switch (mp->state) {
		case S_ERROR:
			return mp->error;
		case S_END:
			return 0; /* the epilogue is ignored */
		case S_PREAMBLE:
			i++;
			if (c == mp->delim[mp->matched]) {
				if (++mp->matched == mp->dlen) {
					mp->matched = 0;
					mp->state = S_AFTER_DELIM;
				}
			} else {
				mp->matched = c == '\r';
			}
			break;
		case S_AFTER_DELIM:
			i++;
			if (c == '-')
				mp->state = S_AFTER_DELIM_DASH;
			else if (c == '\r')
				mp->state = S_AFTER_DELIM_CR;
			else if (c != ' ' && c != '\t')
				return fail(mp, -EBADMSG, "malformed boundary line");
			break;
		case S_AFTER_DELIM_DASH:
			i++;
			if (c != '-')
				return fail(mp, -EBADMSG, "malformed closing boundary");
			mp->state = S_END;
			break;
		case S_AFTER_DELIM_CR:
			i++;
			if (c != '\n')
				return fail(mp, -EBADMSG, "malformed boundary line");
			if (++mp->n_parts > mp->max_parts)
				return fail(mp, -E2BIG, "more than %u parts", mp->max_parts);
			sbx_buf_reset(&mp->hdr);
			mp->state = S_HEADERS;
			break;
		case S_HEADERS:
			i++;
			if (sbx_buf_append(&mp->hdr, &c, 1))
				return fail(mp, -E2BIG, "part headers over %d bytes",
					    MAX_HEADER_BLOCK);
			if (mp->hdr.len == 2 && memcmp(mp->hdr.data, "\r\n", 2) == 0) {
				mp->hdr.len = 0; /* no headers at all */
			} else if (mp->hdr.len >= 4 &&
				   memcmp(mp->hdr.data + mp->hdr.len - 4, "\r\n\r\n", 4) == 0) {
				mp->hdr.len -= 2;
			} else {
				break;
			}
			if ((rc = begin_part(mp)))
				return rc;
			mp->matched = 0;
			mp->state = S_DATA;
			break;
		case S_DATA:
			if ((rc = scan_data(mp, data, len, &i)))
				return rc;
			if (mp->matched == mp->dlen) {
				mp->matched = 0;
				mp->state = S_AFTER_DELIM;
				if (mp->cb.part_end && (rc = mp->cb.part_end(mp->arg)))
					return fail(mp, rc, "stopped at the end of part \"%.80s\"",
						    mp->name);
			}
			break;
		}
	}
	return mp->state == S_ERROR ? mp->error : 0;
}

int sbx_multipart_finish(struct sbx_multipart *mp)
{
	if (mp->state == S_ERROR)
		return mp->error;
	if (mp->state != S_END)
		return fail(mp, -EBADMSG, "the body ended before the closing boundary");
	return 0;
}

const char *sbx_multipart_error(const struct sbx_multipart *mp)
{
	return mp->state == S_ERROR ? mp->message : "";
}

struct sbx_multipart *sbx_multipart_new(const char *content_type,
					const struct sbx_multipart_callbacks *cb, void *arg,
					unsigned max_parts, char *err, size_t err_size)
{
	static const char form[] = "multipart/form-data";
	char boundary[MAX_BOUNDARY + 2];
	struct sbx_multipart *mp;
	const char *end;
	int n;

	if (!content_type || strncasecmp(content_type, form, sizeof(form) - 1) != 0 ||
	    (content_type[sizeof(form) - 1] && content_type[sizeof(form) - 1] != ';' &&
	     content_type[sizeof(form) - 1] != ' ')) {
		snprintf(err, err_size, "Content-Type must be multipart/form-data");
		return NULL;
	}
	end = content_type + strlen(content_type);
	n = get_param(content_type + sizeof(form) - 1, end, "boundary", boundary, sizeof(boundary));
	if (n <= 0 || n > MAX_BOUNDARY || strpbrk(boundary, "\r\n")) {
		snprintf(err, err_size, "%s",
			 n == -ENOENT ? "the multipart Content-Type has no boundary"
				      : "the multipart boundary is malformed (1 to 70 characters)");
		return NULL;
	}
	mp = sbx_calloc(1, sizeof(*mp));
	if (!mp) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	mp->cb = *cb;
	mp->arg = arg;
	mp->max_parts = max_parts ? max_parts : 64;
	mp->dlen = (size_t)snprintf(mp->delim, sizeof(mp->delim), "\r\n--%s", boundary);
	mp->matched = 2; /* the first delimiter may open the body without a CRLF */
	mp->state = S_PREAMBLE;
	sbx_buf_init(&mp->hdr, MAX_HEADER_BLOCK);
	return mp;
}

void sbx_multipart_free(struct sbx_multipart *mp)
{
	if (!mp)
		return;
	sbx_buf_release(&mp->hdr);
	sbx_free(mp);
}
