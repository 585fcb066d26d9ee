/* The protocol-neutral request: what a handler reads (method, target,
 * headers, params, query, body) and the response API, which checks the
 * request's state and calls its codec through the operations table.
 *
 * The codec that made a request frees it (req_release, then its own
 * container) once its response has ended or its client is gone.
 */
#define _GNU_SOURCE /* memmem */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/http_client.h"
#include "sbx/json.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void req_init(struct sbx_http_req *r, struct sbx_http_server *s, const struct http_req_ops *ops,
	      size_t arena_max)
{
	r->ops = ops;
	r->s = s;
	r->state = REQ_HEAD;
	sbx_buf_init(&r->arena, arena_max);
	sbx_buf_init(&r->body, s->o.max_body_bytes);
	sbx_buf_init(&r->resp_headers, 64 * 1024);
	r->target = r->path = r->query = "";
	r->content_length = -1;
}

void req_release(struct sbx_http_req *r)
{
	r->s->body_bytes_buffered -= r->body.len;
	sbx_buf_release(&r->arena);
	sbx_buf_release(&r->body);
	sbx_buf_release(&r->resp_headers);
	if (r->headers != r->header_space)
		sbx_free(r->headers);
	r->headers = NULL;
	r->n_headers = r->headers_cap = 0;
	sbx_free(r->authority);
	r->authority = NULL;
	for (size_t i = 0; i < r->n_params; i++)
		sbx_free(r->param_values[i]);
	r->n_params = 0;
}

void req_set_state(struct sbx_http_req *r, enum req_state to)
{
	static const unsigned legal[] = {
		[REQ_HEAD] =
			1u << REQ_BODY | 1u << REQ_HANDLER | 1u << REQ_RESPONDING | 1u << REQ_DONE,
		[REQ_BODY] = 1u << REQ_HANDLER | 1u << REQ_RESPONDING | 1u << REQ_DONE,
		[REQ_HANDLER] = 1u << REQ_RESPONDING | 1u << REQ_DONE,
		[REQ_RESPONDING] = 1u << REQ_DONE,
		[REQ_DONE] = 0,
	};

	assert(legal[r->state] & (1u << to));
	r->state = to;
}

int req_body_append(struct sbx_http_req *r, const char *data, size_t len)
{
	if (r->body.len + len > r->body.max)
		return -EFBIG;
	if (r->s->body_bytes_buffered + len > r->s->o.max_buffered_body_bytes)
		return -ENOBUFS;
	if (sbx_buf_append(&r->body, data, len))
		return -ENOMEM;
	r->s->body_bytes_buffered += len;
	return 0;
}

struct http_hdr *req_header_slot(struct sbx_http_req *r, int *err)
{
	struct http_hdr *grown;
	unsigned cap;

	if (r->n_headers >= r->s->o.max_headers) {
		*err = -E2BIG;
		return NULL;
	}
	if (!r->headers) {
		r->headers = r->header_space;
		r->headers_cap = sizeof(r->header_space) / sizeof(r->header_space[0]);
	}
	if (r->n_headers == r->headers_cap) {
		cap = 2 * r->headers_cap;
		if (cap > r->s->o.max_headers)
			cap = r->s->o.max_headers;
		if (r->headers == r->header_space) {
			if ((grown = sbx_malloc(cap * sizeof(*grown))))
				memcpy(grown, r->headers, r->n_headers * sizeof(*grown));
		} else {
			grown = sbx_realloc(r->headers, cap * sizeof(*grown));
		}
		if (!grown) {
			*err = -ENOMEM;
			return NULL;
		}
		r->headers = grown;
		r->headers_cap = cap;
	}
	return &r->headers[r->n_headers];
}

int req_add_header(struct sbx_http_req *r, const char *name, size_t nlen, const char *value,
		   size_t vlen)
{
	struct http_hdr *h;
	int err;

	if (!req_header_slot(r, &err))
		return err;
	h = r->headers;
	h[r->n_headers].name = r->arena.len;
	h[r->n_headers].name_len = nlen;
	if (sbx_buf_append(&r->arena, name, nlen) || sbx_buf_append(&r->arena, "", 1))
		return -E2BIG;
	h[r->n_headers].value = r->arena.len;
	if (sbx_buf_append(&r->arena, value, vlen) || sbx_buf_append(&r->arena, "", 1))
		return -E2BIG;
	r->n_headers++;
	return 0;
}

/* Splits the target (first in the arena, NUL-ended) into path and query;
 * the arena must not move after this. */
void req_split_target(struct sbx_http_req *r)
{
	char *t = r->arena.data, *q;

	if (!t)
		return;
	/* absolute-form (a client talking to a proxy): the authority apart,
	 * then the path alone */
	if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
		char *host = strstr(t, "://") + 3;
		size_t len = strcspn(host, "/?#");

		sbx_free(r->authority);
		r->absolute_https = (t[4] == 's' || t[4] == 'S');
		if (!(r->authority = sbx_strndup(host, len)))
			req_early(r, 503, "out of memory");
		if (host[len] == '/') {
			t = host + len;
		} else {
			/* "http://h?q": the path is "/", the query stays */
			static const char root[] = "/";

			r->target = r->path = root;
			r->query = host[len] == '?' ? host + len + 1 : NULL;
			return;
		}
	}
	r->target = t;
	q = strchr(t, '?');
	if (q && q >= r->arena.data && q < r->arena.data + r->arena.len) {
		*q = '\0';
		r->query = q + 1;
	}
	r->path = t;
}

void req_early(struct sbx_http_req *r, int status, const char *message)
{
	if (r->early_status)
		return;
	r->early_status = status;
	r->early_message = message;
}

bool req_next_resp_header(const struct sbx_http_req *r, size_t *off, const char **name,
			  size_t *nlen, const char **value, size_t *vlen)
{
	const char *p, *end, *eol, *colon;

	if (!r->resp_headers.len || *off >= r->resp_headers.len)
		return false; /* (no arithmetic on a NULL data) */
	p = r->resp_headers.data + *off;
	end = r->resp_headers.data + r->resp_headers.len;
	eol = memmem(p, (size_t)(end - p), "\r\n", 2);
	colon = memchr(p, ':', (size_t)(end - p));
	if (!eol || !colon || colon > eol)
		return false;
	*name = p;
	*nlen = (size_t)(colon - p);
	colon++;
	while (colon < eol && *colon == ' ')
		colon++;
	*value = colon;
	*vlen = (size_t)(eol - colon);
	*off = (size_t)(eol + 2 - r->resp_headers.data);
	return true;
}

/* Does the comma-separated header value hold token (case-insensitive)? */
bool http_has_token(const char *value, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = value; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, token, n) == 0 &&
		    (!p[n] || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
			return true;
		p = strchr(p, ',');
	}
	return false;
}

/* Header names are tokens; values may not carry CR, LF or NUL. */
bool http_valid_header(const char *name, const char *value)
{
	if (!*name)
		return false;
	for (const char *p = name; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
			return false;
	}
	return !strpbrk(value, "\r\n");
}

/* ---- reading the request ------------------------------------------------------ */

const char *sbx_http_method(const struct sbx_http_req *req)
{
	return req->method;
}

const char *sbx_http_path(const struct sbx_http_req *req)
{
	return req->path;
}

const char *sbx_http_query_string(const struct sbx_http_req *req)
{
	return req->query;
}

const char *sbx_http_authority(const struct sbx_http_req *req)
{
	return req->authority;
}

const char *sbx_http_scheme(const struct sbx_http_req *req)
{
	if (!req->authority || req->connect)
		return NULL;
	return req->absolute_https ? "https" : "http";
}

const char *sbx_http_peer(const struct sbx_http_req *req)
{
	return req->ops->peer(req);
}

bool sbx_http_header_at(const struct sbx_http_req *req, unsigned i, const char **name,
			size_t *name_len, const char **value)
{
	if (i >= req->n_headers)
		return false;
	*name = req->arena.data + req->headers[i].name;
	*name_len = req->headers[i].name_len;
	*value = req->arena.data + req->headers[i].value;
	return true;
}

const char *sbx_http_upgrade(const struct sbx_http_req *req)
{
	return req->upgrade;
}

long long sbx_http_content_length(const struct sbx_http_req *req)
{
	return req->content_length;
}

bool sbx_http_secure(const struct sbx_http_req *req)
{
	return req->secure;
}

const char *sbx_http_header(const struct sbx_http_req *req, const char *name)
{
	size_t len = strlen(name);

	for (unsigned i = 0; i < req->n_headers; i++) {
		const struct http_hdr *h = &req->headers[i];

		if (h->name_len == len && sbx_http_name_eq(req->arena.data + h->name, name))
			return req->arena.data + h->value;
	}
	return NULL;
}

bool sbx_http_name_in(const char *name, size_t len, const struct sbx_http_name *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (names[i].len == len && sbx_http_name_eq(name, names[i].name))
			return true;
	return false;
}

bool sbx_http_hop_by_hop(const char *name, size_t len)
{
	static const struct sbx_http_name names[] = {
		SBX_HTTP_NAME("connection"),	   SBX_HTTP_NAME("keep-alive"),
		SBX_HTTP_NAME("proxy-connection"), SBX_HTTP_NAME("te"),
		SBX_HTTP_NAME("trailer"),	   SBX_HTTP_NAME("transfer-encoding"),
		SBX_HTTP_NAME("upgrade"),
	};

	return sbx_http_name_in(name, len, names, sizeof(names) / sizeof(names[0]));
}

bool sbx_http_list_has(const char *value, const char *token)
{
	size_t n = strlen(token);

	while (value && *value) {
		const char *end;

		value += strspn(value, " \t,");
		end = value + strcspn(value, ",");
		while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t)(end - value) == n && !strncasecmp(value, token, n))
			return true;
		value = strchr(value, ',');
	}
	return false;
}

const char *sbx_http_param(const struct sbx_http_req *req, const char *name)
{
	size_t len = strlen(name);

	/* Names point into the route pattern and end at its '}'. */
	for (size_t i = 0; i < req->n_params; i++) {
		if (strncmp(req->param_names[i], name, len) == 0 && req->param_names[i][len] == '}')
			return req->param_values[i];
	}
	return NULL;
}

const char *sbx_http_body(const struct sbx_http_req *req, size_t *len)
{
	if (len)
		*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

json_t *sbx_http_body_json(const struct sbx_http_req *req, char *err, size_t err_size,
			   bool *too_large)
{
	if (too_large)
		*too_large = false;
	if (req->body.len == 0) {
		snprintf(err, err_size, "the request body is empty; a JSON object was expected");
		return NULL;
	}
	/* Three times the body and 4 MiB (a long string is built in a buffer
	 * that doubles, then copied), at most 256 MiB. */
	size_t memory = req->body.len < (84u << 20) ? 3 * req->body.len + (4u << 20) : 256u << 20;
	bool over;
	json_t *v = sbx_json_loadb_within(req->body.data, req->body.len, req->body.max, memory, err,
					  err_size, &over);

	if (too_large)
		*too_large = over;
	return v;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into out ('+' is a space in query strings). */
static int url_decode(const char *s, size_t n, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];

		if (ch == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			ch = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
			i += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (o + 1 >= size)
			return -ENAMETOOLONG;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return (int)o;
}

int sbx_http_query(const struct sbx_http_req *req, const char *name, char *out, size_t size)
{
	return sbx_http_query_param(req->query, name, out, size);
}

int sbx_http_query_param(const char *query, const char *name, char *out, size_t size)
{
	char key[256];
	const char *p = query;

	while (*p) {
		size_t len = strcspn(p, "&");
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;

		if (url_decode(p, klen, key, sizeof(key)) >= 0 && strcmp(key, name) == 0) {
			if (!eq) {
				if (size)
					out[0] = '\0';
				return 0;
			}
			return url_decode(eq + 1, len - klen - 1, out, size);
		}
		p += len;
		if (*p == '&')
			p++;
	}
	return -ENOENT;
}

void sbx_http_on_abort(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg)
{
	req->on_abort = cb;
	req->abort_arg = arg;
}

void sbx_http_on_drain(struct sbx_http_req *req, void (*cb)(struct sbx_http_req *, void *),
		       void *arg)
{
	req->on_drain = cb;
	req->drain_arg = arg;
}

/* ---- the response ------------------------------------------------------------------ */

static bool answered(const struct sbx_http_req *r)
{
	return r->state == REQ_RESPONDING || r->state == REQ_DONE;
}

int sbx_http_add_header(struct sbx_http_req *req, const char *name, const char *value)
{
	if (answered(req))
		return -EALREADY;
	if (!http_valid_header(name, value))
		return -EINVAL;
	return sbx_buf_cat(&req->resp_headers, name, ": ", value, "\r\n");
}

void sbx_http_pass_answer_fields(struct sbx_http_req *req, const struct sbx_http_field *f, size_t n,
				 const char **type, const char **length)
{
	static const struct sbx_http_name own[] = {
		SBX_HTTP_NAME("content-type"),
		SBX_HTTP_NAME("content-length"),
		SBX_HTTP_NAME("date"),
		SBX_HTTP_NAME("server"),
	};
	const char *connection = NULL;

	*type = *length = NULL;
	for (size_t i = 0; i < n; i++) {
		if (SBX_HTTP_NAME_IS(f[i].name, f[i].name_len, "content-type"))
			*type = f[i].value;
		else if (SBX_HTTP_NAME_IS(f[i].name, f[i].name_len, "content-length"))
			*length = f[i].value;
		else if (SBX_HTTP_NAME_IS(f[i].name, f[i].name_len, "connection"))
			connection = f[i].value;
	}
	for (size_t i = 0; i < n; i++)
		if (!sbx_http_hop_by_hop(f[i].name, f[i].name_len) &&
		    !sbx_http_name_in(f[i].name, f[i].name_len, own,
				      sizeof(own) / sizeof(own[0])) &&
		    !(connection && sbx_http_list_has(connection, f[i].name)))
			sbx_http_add_header(req, f[i].name, f[i].value);
}

int sbx_http_respond(struct sbx_http_req *req, int status, const char *content_type,
		     const void *body, size_t len)
{
	if (answered(req))
		return -EALREADY;
	req->status = status;
	return req->ops->respond(req, status, content_type, (long long)len, body, len, true);
}

int sbx_http_respond_json(struct sbx_http_req *req, int status, const json_t *body)
{
	char *text = sbx_json_dumps(body);
	int rc;

	if (!text)
		return sbx_http_respond_error(req, 500, "out of memory");
	rc = sbx_http_respond(req, status, "application/json", text, strlen(text));
	sbx_free(text);
	return rc;
}

int sbx_http_respond_error(struct sbx_http_req *req, int status, const char *message)
{
	json_t *body = json_pack("{s:{s:i, s:s}}", "error", "status", status, "message", message);
	int rc;

	if (!body)
		return sbx_http_respond(req, status, "text/plain", message, strlen(message));
	rc = sbx_http_respond_json(req, status, body);
	json_decref(body);
	return rc;
}

static int start_stream(struct sbx_http_req *req, int status, const char *content_type,
			long long length, const void *first, size_t first_len)
{
	if (answered(req))
		return -EALREADY;
	req->status = status;
	if (req->head)
		first_len = 0;
	if (length >= 0) {
		if ((uint64_t)length < first_len)
			return -EMSGSIZE;
		req->sized = true;
		req->length_left = (uint64_t)length - first_len;
	}
	return req->ops->respond(req, status, content_type, length, first, first_len, false);
}

int sbx_http_start(struct sbx_http_req *req, int status, const char *content_type)
{
	return start_stream(req, status, content_type, -1, NULL, 0);
}

int sbx_http_start_sized(struct sbx_http_req *req, int status, const char *content_type,
			 uint64_t length)
{
	return start_stream(req, status, content_type, (long long)length, NULL, 0);
}

int sbx_http_start_with(struct sbx_http_req *req, int status, const char *content_type,
			long long length, const void *first, size_t first_len)
{
	return start_stream(req, status, content_type, length < 0 ? -1 : length, first, first_len);
}

int sbx_http_write(struct sbx_http_req *req, const void *data, size_t len)
{
	if (req->state != REQ_RESPONDING)
		return -EINVAL;
	if (req->file_done)
		return -EBUSY; /* a file is going out */
	if (len == 0 || req->head)
		return 0;
	if (req->sized) {
		if (len > req->length_left)
			return -EMSGSIZE;
		req->length_left -= len;
	}
	return req->ops->write(req, data, len);
}

int sbx_http_send_file(struct sbx_http_req *req, int fd, uint64_t off, uint64_t len,
		       sbx_http_file_cb done, void *arg)
{
	int rc;

	if (req->state != REQ_RESPONDING || req->file_done)
		return -EINVAL;
	if (!req->ops->send_file || req->head || !req->sized || !len)
		return -ENOTSUP;
	if (len > req->length_left)
		return -EMSGSIZE;
	req->file_done = done;
	req->file_arg = arg;
	if ((rc = req->ops->send_file(req, fd, off, len))) {
		req->file_done = NULL;
		return rc;
	}
	req->length_left -= len;
	return 0;
}

int sbx_http_end(struct sbx_http_req *req)
{
	if (req->state != REQ_RESPONDING)
		return -EINVAL;
	if (req->file_done)
		return -EBUSY;
	return req->ops->end(req);
}

void sbx_http_abort(struct sbx_http_req *req)
{
	req->ops->abort(req);
}

/* ---- streamed request bodies ----------------------------------------------------------- */

void sbx_http_stream_body(struct sbx_http_req *req, const struct sbx_http_body_sink *sink,
			  void *arg)
{
	req->sink = sink;
	req->sink_arg = arg;
	req->ops->resume_body(req);
}

void sbx_http_pause_body(struct sbx_http_req *req)
{
	req->ops->pause_body(req);
}

void sbx_http_resume_body(struct sbx_http_req *req)
{
	if (req->sink)
		req->ops->resume_body(req);
}

uint64_t sbx_http_body_received(const struct sbx_http_req *req)
{
	return req->body_received;
}

/* ---- streams ---------------------------------------------------------------------------- */

void http_stream_attach(struct http_stream *st, const struct http_stream_cb *cb, void *arg)
{
	st->cb = cb;
	st->arg = arg;
	st->ops->resume(st);
}

void http_stream_detach(struct http_stream **stp)
{
	struct http_stream *st = *stp;

	if (!st)
		return;
	*stp = NULL;
	st->cb = NULL; /* no more calls: its user is going */
	st->ops->close(st);
}

void req_set_method(struct sbx_http_req *r, const char *method)
{
	size_t n = strnlen(method, sizeof(r->method) - 1);

	memcpy(r->method, method, n);
	r->method[n] = '\0';
}

char *http_utoa(unsigned long long v, char *out)
{
	char digits[21];
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = digits[n - 1 - i];
	out[n] = '\0';
	return out;
}

/* RFC 9110's tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~, by byte value (the
 * unit tests check every byte against that list); 128 and up are not (the
 * zeros after these rows). */
static const unsigned char tchar[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
	0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, /* 0x20 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, /* 0x30 */
	0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, /* 0x50 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, /* 0x70 */
};

bool http_is_token(const char *at, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!tchar[(unsigned char)at[i]])
			return false;
	}
	return true;
}
