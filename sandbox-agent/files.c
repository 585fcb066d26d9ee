/* The /v1/file group (see files.h). A job carries one request's validated
 * arguments to the thread pool and its answer back; the request itself is
 * touched only on the loop thread. */
#define _GNU_SOURCE
#include "files.h"

#include "api.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum op { OP_READ, OP_WRITE, OP_LIST };

static const char *const op_names[] = { "read", "write", "list" };

struct job {
	uv_work_t work;
	struct files *f;
	struct sbx_http_req *req; /* NULL once the client has gone */
	enum op op;
	json_t *args;	     /* the request body */
	char path[PATH_MAX]; /* resolved */
	bool ok;
	char message[256];
	json_t *data; /* the result, or a FileOperationError */
};

const char *files_error_type(int err)
{
	switch (err) {
	case ENOENT:
		return "not_found";
	case EACCES:
	case EPERM:
		return "permission_denied";
	case EISDIR:
	case ENOTDIR:
	case ELOOP:
		return "invalid_target";
	case EEXIST:
	case ENOTEMPTY:
		return "already_exists";
	case ENAMETOOLONG:
	case EINVAL:
		return "invalid_path";
	case EROFS:
		return "read_only_filesystem";
	case ENOSPC:
	case EDQUOT:
		return "no_space_left";
	case EILSEQ:
		return "decode_error";
	default:
		return "io_error";
	}
}

/* Fills job with a FileOperationError. err 0: no errno (message says why). */
static int fail(struct job *j, int err, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Always returns -1, so that "return fail(...)" ends an operation. */
static int fail(struct job *j, int err, const char *type, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->message, sizeof(j->message), fmt, ap);
	va_end(ap);
	j->ok = false;
	/* A FileOperationError, plus the success shape's required fields left
	 * empty: SDKs generated from the success type alone (agent-sandbox
	 * 0.0.30 parses every 200 as FileReadResult) then still parse the
	 * answer, and their users read success=false and data.error_type. */
	j->data = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:n, s:s, s:s}", "path", j->path,
			    "operation", op_names[j->op], "message", j->message, "error_type",
			    type ? type : files_error_type(err), "retryable",
			    err == EAGAIN || err == EBUSY || err == EINTR, "errno",
			    err ? json_integer(err) : json_null(), "errno_name",
			    err && strerrorname_np(err) ? json_string(strerrorname_np(err))
							: json_null(),
			    "exception_type", "file", j->path, "content", "");
	return -1;
}

static int fail_errno(struct job *j, int err, const char *what)
{
	return fail(j, err, NULL, "%s %s: %s", what, j->path, strerror(err));
}

/* ---- read ------------------------------------------------------------------- */

static int read_all(int fd, size_t max, struct sbx_buf *b)
{
	char chunk[65536];
	ssize_t n;

	sbx_buf_init(b, max);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		int rc = sbx_buf_append(b, chunk, (size_t)n);

		if (rc)
			return rc == -E2BIG ? -EFBIG : rc;
	}
	return n < 0 ? -errno : 0;
}

/* The byte range of lines [start, end) of text (0-based, end exclusive). */
static void line_range(const char *text, size_t len, long start, long end, size_t *from, size_t *to)
{
	size_t off = 0;
	long line = 0;

	*from = len;
	*to = len;
	if (start <= 0)
		*from = 0;
	while (off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		size_t next = nl ? (size_t)(nl - text) + 1 : len;

		line++;
		if (line == start)
			*from = next;
		if (end >= 0 && line == end) {
			*to = next;
			break;
		}
		off = next;
	}
	if (*to < *from)
		*to = *from;
}

static int do_read(struct job *j)
{
	json_t *sl = json_object_get(j->args, "start_line"),
	       *el = json_object_get(j->args, "end_line");
	struct sbx_buf b;
	struct stat st;
	size_t from, to;
	json_t *content;
	int fd, rc;

	fd = open(j->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(j, errno, "cannot open");
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		return fail(j, EISDIR, NULL, "%s is a directory; list it with /v1/file/list",
			    j->path);
	}
	rc = read_all(fd, j->f->max_read_bytes, &b);
	close(fd);
	if (rc == -EFBIG) {
		sbx_buf_release(&b);
		return fail(j, EFBIG, "io_error",
			    "%s is larger than %zu bytes; use /v1/file/download", j->path,
			    j->f->max_read_bytes);
	}
	if (rc) {
		sbx_buf_release(&b);
		return fail_errno(j, -rc, "cannot read");
	}
	line_range(b.data ? b.data : "", b.len,
		   json_is_integer(sl) ? (long)json_integer_value(sl) : 0,
		   json_is_integer(el) ? (long)json_integer_value(el) : -1, &from, &to);
	/* jansson refuses invalid UTF-8: that is the text check. */
	content = json_stringn(b.data ? b.data + from : "", to - from);
	sbx_buf_release(&b);
	if (!content)
		return fail(j, EILSEQ, "decode_error",
			    "%s is not UTF-8 text; fetch it with /v1/file/download", j->path);
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "File read successfully");
	j->data = json_pack("{s:o, s:s}", "content", content, "file", j->path);
	return 0;
}

/* ---- write ------------------------------------------------------------------ */

/* mkdir -p of path's parent folder. */
static int make_parents(const char *path)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int do_write(struct job *j)
{
	const char *content = json_string_value(json_object_get(j->args, "content"));
	const char *enc = json_string_value(json_object_get(j->args, "encoding"));
	bool append = json_is_true(json_object_get(j->args, "append"));
	bool text = !enc || strcmp(enc, "utf-8") == 0;
	struct sbx_buf b;
	char *raw = NULL;
	size_t raw_len = 0;
	int fd, rc = 0;

	sbx_buf_init(&b, j->f->max_read_bytes + 2);
	if (!text) {
		if (sbx_base64_decode(content, strlen(content), &raw, &raw_len))
			return fail(j, 0, "decode_error", "content is not valid base64");
		rc = sbx_buf_append(&b, raw, raw_len);
		sbx_free(raw);
	} else {
		if (json_is_true(json_object_get(j->args, "leading_newline")))
			rc = sbx_buf_append(&b, "\n", 1);
		if (!rc)
			rc = sbx_buf_append(
				&b, content,
				json_string_length(json_object_get(j->args, "content")));
		if (!rc && json_is_true(json_object_get(j->args, "trailing_newline")))
			rc = sbx_buf_append(&b, "\n", 1);
	}
	if (rc) {
		sbx_buf_release(&b);
		return fail(j, rc == -E2BIG ? EFBIG : -rc, "io_error",
			    "content larger than %zu bytes", j->f->max_read_bytes);
	}
	if ((rc = make_parents(j->path))) {
		sbx_buf_release(&b);
		return fail_errno(j, -rc, "cannot create the folder of");
	}
	fd = open(j->path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
	if (fd < 0) {
		sbx_buf_release(&b);
		return fail_errno(j, errno, "cannot open");
	}
	for (size_t off = 0; off < b.len;) {
		ssize_t n = write(fd, b.data + off, b.len - off);

		if (n < 0) {
			rc = errno;
			break;
		}
		off += (size_t)n;
	}
	if (close(fd) && !rc)
		rc = errno;
	if (rc) {
		sbx_buf_release(&b);
		return fail_errno(j, rc, "cannot write");
	}
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "File written successfully");
	j->data = json_pack("{s:s, s:I}", "file", j->path, "bytes_written", (json_int_t)b.len);
	sbx_buf_release(&b);
	return 0;
}

/* ---- list ------------------------------------------------------------------- */

struct lister {
	struct job *j;
	json_t *files;
	bool hidden, sizes, perms;
	json_t *types; /* extensions wanted, or NULL */
	long max_depth;
	size_t dirs, plain;
	bool truncated;
};

static bool type_wanted(const struct lister *l, const char *name, bool is_dir)
{
	const char *dot = strrchr(name, '.');
	json_t *t;
	size_t i;

	if (!l->types || is_dir)
		return true;
	json_array_foreach(l->types, i, t)
	{
		const char *want = json_string_value(t);

		/* ".py" and "py" both name the extension .py */
		if (want && dot && strcmp(want[0] == '.' ? want + 1 : want, dot + 1) == 0)
			return true;
	}
	return false;
}

static json_t *file_info(const struct lister *l, const char *path, const char *name,
			 const struct stat *st)
{
	bool dir = S_ISDIR(st->st_mode);
	const char *dot = strrchr(name, '.');
	char when[64], perms[8];
	struct tm tm;

	localtime_r(&st->st_mtim.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%06ld",
		 st->st_mtim.tv_nsec / 1000);
	snprintf(perms, sizeof(perms), "%03o", st->st_mode & 0777);
	return json_pack(
		"{s:s, s:s, s:b, s:o, s:s, s:o, s:o}", "name", name, "path", path, "is_directory",
		dir, "size", l->sizes && !dir ? json_integer((json_int_t)st->st_size) : json_null(),
		"modified_time", when, "permissions", l->perms ? json_string(perms) : json_null(),
		"extension", !dir && dot && dot != name ? json_string(dot) : json_null());
}

static int walk(struct lister *l, const char *dir, long depth)
{
	char path[PATH_MAX];
	struct dirent *e;
	struct stat st;
	DIR *d = opendir(dir);

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!l->hidden && e->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name) >=
		    (int)sizeof(path))
			continue;
		/* lstat: a link is reported, never followed (no loops). */
		if (lstat(path, &st))
			continue;
		if (type_wanted(l, e->d_name, S_ISDIR(st.st_mode))) {
			if (json_array_size(l->files) >= l->j->f->max_list_entries) {
				l->truncated = true;
				break;
			}
			json_array_append_new(l->files, file_info(l, path, e->d_name, &st));
			S_ISDIR(st.st_mode) ? l->dirs++ : l->plain++;
		}
		if (S_ISDIR(st.st_mode) && (l->max_depth < 0 || depth < l->max_depth))
			walk(l, path, depth + 1);
	}
	closedir(d);
	return 0;
}

static int compare(const void *a, const void *b, void *arg)
{
	const char *key = arg;
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;

	if (!strcmp(key, "size")) {
		json_int_t sx = json_integer_value(json_object_get(x, "size"));
		json_int_t sy = json_integer_value(json_object_get(y, "size"));

		return sx < sy ? -1 : sx > sy;
	}
	if (!strcmp(key, "modified_time") || !strcmp(key, "type")) {
		const char *f = strcmp(key, "type") ? "modified_time" : "extension";
		const char *sx = json_string_value(json_object_get(x, f));
		const char *sy = json_string_value(json_object_get(y, f));

		return strcmp(sx ? sx : "", sy ? sy : "");
	}
	return strcmp(json_string_value(json_object_get(x, "path")),
		      json_string_value(json_object_get(y, "path")));
}

static int do_list(struct job *j)
{
	json_t *a = j->args, *md = json_object_get(a, "max_depth"), *sorted;
	struct lister l = { .j = j, .files = json_array() };
	const char *sort_by = json_string_value(json_object_get(a, "sort_by"));
	json_t **items;
	size_t n;
	struct stat st;
	int rc;

	l.hidden = !json_is_false(json_object_get(a, "show_hidden"));
	l.sizes = !json_is_false(json_object_get(a, "include_size"));
	l.perms = json_is_true(json_object_get(a, "include_permissions"));
	l.types = json_is_array(json_object_get(a, "file_types")) ? json_object_get(a, "file_types")
								  : NULL;
	l.max_depth = json_is_true(json_object_get(a, "recursive"))
			      ? (json_is_integer(md) ? (long)json_integer_value(md) : -1)
			      : 1;
	if (stat(j->path, &st)) {
		json_decref(l.files);
		return fail_errno(j, errno, "cannot list");
	}
	if (!S_ISDIR(st.st_mode)) {
		json_decref(l.files);
		return fail(j, ENOTDIR, NULL, "%s is not a directory", j->path);
	}
	if ((rc = walk(&l, j->path, 1))) {
		json_decref(l.files);
		return fail_errno(j, -rc, "cannot list");
	}
	n = json_array_size(l.files);
	items = sbx_calloc(n + 1, sizeof(*items));
	for (size_t i = 0; items && i < n; i++)
		items[i] = json_incref(json_array_get(l.files, i));
	if (items)
		qsort_r(items, n, sizeof(*items), compare, (void *)(sort_by ? sort_by : "name"));
	sorted = json_array();
	for (size_t i = 0; items && i < n; i++) {
		bool desc = json_is_true(json_object_get(a, "sort_desc"));

		json_array_append_new(sorted, items[desc ? n - 1 - i : i]);
	}
	sbx_free(items);
	json_decref(l.files);
	j->ok = true;
	snprintf(j->message, sizeof(j->message),
		 l.truncated ? "Listing stopped at %zu entries" : "Listed %zu entries", n);
	j->data = json_pack("{s:s, s:o, s:I, s:I, s:I}", "path", j->path, "files", sorted,
			    "total_count", (json_int_t)n, "directory_count", (json_int_t)l.dirs,
			    "file_count", (json_int_t)l.plain);
	return 0;
}

/* ---- jobs ------------------------------------------------------------------- */

static void run_job(uv_work_t *w)
{
	struct job *j = w->data;

	/* Each operation leaves its answer (result or error) in the job. */
	switch (j->op) {
	case OP_READ:
		(void)do_read(j);
		break;
	case OP_WRITE:
		(void)do_write(j);
		break;
	case OP_LIST:
		(void)do_list(j);
		break;
	}
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;

	if (j->req) {
		sbx_http_on_abort(j->req, NULL, NULL);
		if (status || !j->data)
			sbx_http_respond_error(j->req, 500, "file operation failed: out of memory");
		else if (j->ok)
			api_ok(j->req, j->message, json_incref(j->data));
		else
			api_fail(j->req, j->message, json_incref(j->data));
	}
	json_decref(j->data);
	json_decref(j->args);
	sbx_free(j);
}

static void job_abort(struct sbx_http_req *req, void *arg)
{
	struct job *j = arg;

	/* The work goes on (it cannot be stopped halfway safely); the answer
	 * is dropped. */
	j->req = NULL;
}

/* ---- validation (422s) ------------------------------------------------------ */

static bool check_type(struct sbx_http_req *req, json_t *body, const char *field, json_type type,
		       bool required)
{
	static const char *const msgs[] = {
		[JSON_STRING] = "Input should be a valid string",
		[JSON_INTEGER] = "Input should be a valid integer",
		[JSON_TRUE] = "Input should be a valid boolean",
		[JSON_ARRAY] = "Input should be a valid list",
	};
	static const char *const types[] = {
		[JSON_STRING] = "string_type",
		[JSON_INTEGER] = "int_type",
		[JSON_TRUE] = "bool_type",
		[JSON_ARRAY] = "list_type",
	};
	json_t *v = json_object_get(body, field);
	char loc[96];

	snprintf(loc, sizeof(loc), "body.%s", field);
	if (!v || json_is_null(v)) {
		if (!required)
			return true;
		api_invalid(req, loc, "Field required", "missing");
		return false;
	}
	if (json_typeof(v) == type || (type == JSON_TRUE && json_is_boolean(v)))
		return true;
	api_invalid(req, loc, msgs[type], types[type]);
	return false;
}

struct field {
	const char *name;
	json_type type;
	bool required;
	const char *one_of; /* for strings: "a|b" lists the allowed values */
};

static bool check_enum(struct sbx_http_req *req, json_t *body, const struct field *f)
{
	const char *v = json_string_value(json_object_get(body, f->name));
	size_t n = v ? strlen(v) : 0;
	char loc[96], msg[160];

	if (!f->one_of || !v)
		return true;
	for (const char *p = f->one_of; *p;) {
		size_t len = strcspn(p, "|");

		if (len == n && strncmp(p, v, n) == 0)
			return true;
		p += len + (p[len] == '|');
	}
	snprintf(loc, sizeof(loc), "body.%s", f->name);
	snprintf(msg, sizeof(msg), "Input should be one of: %s", f->one_of);
	api_invalid(req, loc, msg, "enum");
	return false;
}

static void start(struct sbx_http_req *req, struct files *f, enum op op, const char *path_field,
		  const struct field *fields, size_t n)
{
	json_t *body = api_body_object(req);
	const char *path;
	struct job *j;
	int len;

	if (!body)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!check_type(req, body, fields[i].name, fields[i].type, fields[i].required) ||
		    !check_enum(req, body, &fields[i])) {
			json_decref(body);
			return;
		}
	}
	j = sbx_calloc(1, sizeof(*j));
	if (!j) {
		json_decref(body);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	j->f = f;
	j->op = op;
	j->args = body;
	j->req = req;
	j->work.data = j;
	path = json_string_value(json_object_get(body, path_field));
	len = path[0] == '/' ? snprintf(j->path, sizeof(j->path), "%s", path)
			     : snprintf(j->path, sizeof(j->path), "%s/%s", f->workspace, path);
	if (!path[0] || len < 0 || (size_t)len >= sizeof(j->path) ||
	    strlen(path) != json_string_length(json_object_get(body, path_field))) {
		snprintf(j->path, sizeof(j->path), "%.200s", path);
		fail(j, path[0] ? ENAMETOOLONG : EINVAL, "invalid_path", "not a usable path");
		job_done(&j->work, 0);
		return;
	}
	sbx_http_on_abort(req, job_abort, j);
	if (uv_queue_work(f->loop, &j->work, run_job, job_done)) {
		sbx_http_on_abort(req, NULL, NULL);
		fail(j, EAGAIN, "io_error", "cannot queue the file operation");
		job_done(&j->work, 0);
	}
}

void files_handle_read(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "file", .type = JSON_STRING, .required = true },
		{ .name = "start_line", .type = JSON_INTEGER, .required = false },
		{ .name = "end_line", .type = JSON_INTEGER, .required = false },
		{ .name = "sudo", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_READ, "file", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_write(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "file", .type = JSON_STRING, .required = true },
		{ .name = "content", .type = JSON_STRING, .required = true },
		{ .name = "encoding",
		  .type = JSON_STRING,
		  .required = false,
		  .one_of = "utf-8|base64" },
		{ .name = "append", .type = JSON_TRUE, .required = false },
		{ .name = "leading_newline", .type = JSON_TRUE, .required = false },
		{ .name = "trailing_newline", .type = JSON_TRUE, .required = false },
		{ .name = "sudo", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_WRITE, "file", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_list(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "path", .type = JSON_STRING, .required = true },
		{ .name = "recursive", .type = JSON_TRUE, .required = false },
		{ .name = "show_hidden", .type = JSON_TRUE, .required = false },
		{ .name = "file_types", .type = JSON_ARRAY, .required = false },
		{ .name = "max_depth", .type = JSON_INTEGER, .required = false },
		{ .name = "include_size", .type = JSON_TRUE, .required = false },
		{ .name = "include_permissions", .type = JSON_TRUE, .required = false },
		{ .name = "sort_by",
		  .type = JSON_STRING,
		  .required = false,
		  .one_of = "name|size|modified_time|type" },
		{ .name = "sort_desc", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_LIST, "path", fields, sizeof(fields) / sizeof(fields[0]));
}
