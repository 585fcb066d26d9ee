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
#include <stdatomic.h>
#include <fnmatch.h>
#include <regex.h>
#include <math.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum op { OP_READ, OP_WRITE, OP_LIST, OP_REPLACE, OP_SEARCH, OP_FIND, OP_GLOB, OP_EDITOR, OP_GREP };

static const char *const op_names[] = { "read",	  "write", "list", "replace",
					"search", "find",  "glob", "str_replace_editor",
					"grep" };

struct job {
	uv_work_t work;
	struct files *f;
	struct sbx_http_req *req; /* NULL once the client has gone */
	enum op op;
	json_t *args;	     /* the request body */
	char path[PATH_MAX]; /* resolved */
	bool ok;
	atomic_bool cancelled; /* the client has gone: walks stop early */
	uint64_t deadline_ms;  /* walks stop here (CLOCK_MONOTONIC) */
	char message[256];
	json_t *data; /* the result, or a FileOperationError */
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A walk (list, find, glob, grep) stops when its client has gone or its
 * time is up; what it found so far is answered, marked truncated. */
static bool walk_must_stop(struct job *j)
{
	return atomic_load(&j->cancelled) || (j->deadline_ms && mono_ms() > j->deadline_ms);
}

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
	case ENODEV: /* a FIFO, a device, a socket: not a file to read */
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

json_t *files_error_data(const char *path, const char *operation, int err, const char *type,
			 const char *message)
{
	json_t *data = json_pack(
		"{s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:n}", "path", path, "operation", operation,
		"message", message, "error_type", type ? type : files_error_type(err), "retryable",
		err == EAGAIN || err == EBUSY || err == EINTR, "errno",
		err ? json_integer(err) : json_null(), "errno_name",
		err && strerrorname_np(err) ? json_string(strerrorname_np(err)) : json_null(),
		"exception_type");

	/* Also the success shapes' required fields (FileReadResult: file,
	 * content; StrReplaceEditorResult: output, prev_exist; FileUploadResult:
	 * file_path, file_size, success): SDKs generated from the success type
	 * alone (agent-sandbox 0.0.30 parses every 200 as the success type) then
	 * still parse the answer, and their users read success=false and
	 * data.error_type. */
	json_object_set_new(data, "file", json_string(path));
	json_object_set_new(data, "content", json_string(""));
	json_object_set_new(data, "output", json_string(message));
	json_object_set_new(data, "prev_exist", json_boolean(access(path, F_OK) == 0));
	json_object_set_new(data, "file_path", json_string(path));
	json_object_set_new(data, "file_size", json_integer(0));
	json_object_set_new(data, "success", json_false());
	return data;
}

int files_resolve(const struct files *f, const char *path, size_t path_len, char *out, size_t size)
{
	int len;

	if (!path_len || strlen(path) != path_len)
		return -EINVAL; /* empty, or a NUL inside */
	len = path[0] == '/' ? snprintf(out, size, "%s", path)
			     : snprintf(out, size, "%s/%s", f->workspace, path);
	if (len < 0 || (size_t)len >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* Always returns -1, so that "return fail(...)" ends an operation. */
static int fail(struct job *j, int err, const char *type, const char *fmt, ...)
{
	const char *pattern;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->message, sizeof(j->message), fmt, ap);
	va_end(ap);
	j->ok = false;
	j->data = files_error_data(j->path, op_names[j->op], err, type, j->message);
	/* FileGrepResult and FileGlobResult require their pattern. */
	pattern = json_string_value(json_object_get(j->args, "pattern"));
	json_object_set_new(j->data, "pattern", json_string(pattern ? pattern : ""));
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
	size_t from, to;
	json_t *content;
	int fd, rc;

	fd = files_open_read(j->path);
	if (fd == -EISDIR)
		return fail(j, EISDIR, NULL, "%s is a directory; list it with /v1/file/list",
			    j->path);
	if (fd == -ENODEV)
		return fail(j, ENODEV, "invalid_target", "%s is not a regular file", j->path);
	if (fd < 0)
		return fail_errno(j, -fd, "cannot open");
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

int files_open_read(const char *path)
{
	/* O_NONBLOCK: a FIFO would otherwise block open() until a writer came. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), err;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = errno;
		close(fd);
		return -err;
	}
	if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -ENODEV;
	}
	/* O_NONBLOCK stays: it changes nothing for files on disk, and a
	 * "regular" file that would block (/proc/kmsg) answers EAGAIN. */
	return fd;
}

int files_make_parents_mode(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

int files_make_parents(const char *path)
{
	return files_make_parents_mode(path, 0755);
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
	if ((rc = files_make_parents(j->path))) {
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
		if (walk_must_stop(l->j)) {
			l->truncated = true;
			break;
		}
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

/* ---- replace, search ------------------------------------------------------------ */

/* Reads a whole text file for an edit; fails the job (and returns -1) if it
 * is missing, too large or not UTF-8. */
static int load_text(struct job *j, struct sbx_buf *b)
{
	int fd = files_open_read(j->path), rc;
	json_t *check;

	if (fd == -EISDIR)
		return fail(j, EISDIR, NULL, "%s is a directory", j->path);
	if (fd == -ENODEV)
		return fail(j, ENODEV, "invalid_target", "%s is not a regular file", j->path);
	if (fd < 0)
		return fail_errno(j, -fd, "cannot open");
	rc = read_all(fd, j->f->max_read_bytes, b);
	close(fd);
	if (rc) {
		sbx_buf_release(b);
		return rc == -EFBIG ? fail(j, EFBIG, "io_error", "%s is larger than %zu bytes",
					   j->path, j->f->max_read_bytes)
				    : fail_errno(j, -rc, "cannot read");
	}
	check = json_stringn(b->data ? b->data : "", b->len);
	if (!check) {
		sbx_buf_release(b);
		return fail(j, EILSEQ, "decode_error", "%s is not UTF-8 text", j->path);
	}
	json_decref(check);
	if (!b->data)
		sbx_buf_append(b, "", 0);
	return 0;
}

static int save_text(struct job *j, const char *data, size_t len)
{
	char tmp[PATH_MAX + 16];
	int fd, rc = 0;
	struct stat st;
	mode_t mode = 0644;

	if (stat(j->path, &st) == 0)
		mode = st.st_mode & 07777;
	/* Write beside and rename: a reader never sees half a file. */
	snprintf(tmp, sizeof(tmp), "%s.sbx-%d", j->path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return fail_errno(j, errno, "cannot write");
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0) {
			rc = errno;
			break;
		}
		off += (size_t)n;
	}
	if (close(fd) && !rc)
		rc = errno;
	if (!rc && rename(tmp, j->path))
		rc = errno;
	if (rc) {
		unlink(tmp);
		return fail_errno(j, rc, "cannot write");
	}
	return 0;
}

/* Occurrences of needle in hay (non-overlapping). */
static size_t count_of(const char *hay, size_t len, const char *needle, size_t nlen)
{
	size_t n = 0;

	for (const char *p = hay; nlen && (p = memmem(p, len - (size_t)(p - hay), needle, nlen));
	     p += nlen)
		n++;
	return n;
}

/* old -> new everywhere; *out is the caller's. */
static int replace_all(const char *text, size_t len, const char *old, size_t olen,
		       const char *new_str, size_t nlen, size_t limit, struct sbx_buf *out)
{
	const char *p = text, *hit;
	int rc = 0;

	sbx_buf_init(out, limit);
	while (!rc && (hit = memmem(p, len - (size_t)(p - text), old, olen))) {
		rc = sbx_buf_append(out, p, (size_t)(hit - p));
		if (!rc)
			rc = sbx_buf_append(out, new_str, nlen);
		p = hit + olen;
	}
	if (!rc)
		rc = sbx_buf_append(out, p, len - (size_t)(p - text));
	return rc;
}

static int do_replace(struct job *j)
{
	json_t *a = j->args;
	const char *old = json_string_value(json_object_get(a, "old_str"));
	const char *new_str = json_string_value(json_object_get(a, "new_str"));
	size_t olen = json_string_length(json_object_get(a, "old_str"));
	size_t nlen = json_string_length(json_object_get(a, "new_str"));
	struct sbx_buf text, out;
	size_t n;

	if (!olen)
		return fail(j, EINVAL, "invalid_target", "old_str is empty");
	if (load_text(j, &text))
		return -1;
	n = count_of(text.data, text.len, old, olen);
	if (n && (replace_all(text.data, text.len, old, olen, new_str, nlen, j->f->max_read_bytes,
			      &out) ||
		  save_text(j, out.data, out.len))) {
		sbx_buf_release(&text);
		sbx_buf_release(&out);
		return j->data ? -1 : fail(j, EFBIG, "io_error", "the result would be too large");
	}
	if (n)
		sbx_buf_release(&out);
	sbx_buf_release(&text);
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "Replaced %zu occurrences", n);
	j->data = json_pack("{s:s, s:I}", "file", j->path, "replaced_count", (json_int_t)n);
	return 0;
}

static int do_search(struct job *j)
{
	const char *pattern = json_string_value(json_object_get(j->args, "regex"));
	json_t *matches = json_array(), *lines = json_array();
	struct sbx_buf text;
	regex_t re;
	char err[160];
	long line = 0;
	int rc = regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB);

	if (rc) {
		regerror(rc, &re, err, sizeof(err));
		json_decref(matches);
		json_decref(lines);
		return fail(j, EINVAL, "invalid_target", "bad regular expression: %s", err);
	}
	if (load_text(j, &text)) {
		regfree(&re);
		json_decref(matches);
		json_decref(lines);
		return -1;
	}
	for (char *p = text.data; *p || p < text.data + text.len;) {
		char *nl = strchr(p, '\n');

		if (nl)
			*nl = '\0';
		line++;
		if (regexec(&re, p, 0, NULL, 0) == 0) {
			json_array_append_new(matches, json_string(p));
			json_array_append_new(lines, json_integer(line));
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	regfree(&re);
	sbx_buf_release(&text);
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "%zu matching lines", json_array_size(lines));
	j->data = json_pack("{s:s, s:o, s:o}", "file", j->path, "matches", matches, "line_numbers",
			    lines);
	return 0;
}

/* ---- find, glob ------------------------------------------------------------------- */

/* Matches a path relative to the base against a pattern whose "**" segments
 * match any number of directories; other segments go to fnmatch. */
static bool match_segments(const char *pat, const char *path, int flags)
{
	char seg[NAME_MAX + 1], name[NAME_MAX + 1];
	size_t pl = strcspn(pat, "/"), nl = strcspn(path, "/");

	if (!*pat)
		return !*path;
	if (pl == 2 && pat[0] == '*' && pat[1] == '*') {
		const char *rest = pat[2] ? pat + 3 : pat + 2;

		for (const char *p = path;; p += strcspn(p, "/") + 1) {
			if (match_segments(rest, p, flags))
				return true;
			if (!p[strcspn(p, "/")])
				return !*rest;
		}
	}
	if (!*path || pl > NAME_MAX || nl > NAME_MAX)
		return false;
	snprintf(seg, sizeof(seg), "%.*s", (int)pl, pat);
	snprintf(name, sizeof(name), "%.*s", (int)nl, path);
	if (fnmatch(seg, name, flags))
		return false;
	return match_segments(pat + pl + (pat[pl] == '/'), path + nl + (path[nl] == '/'), flags);
}

struct finder {
	struct job *j;
	const char *base;
	const char *pattern;
	json_t *exclude;
	bool hidden, files_only, glob;
	size_t max;
	json_t *files;
	bool truncated;
};

static bool excluded(const struct finder *fd, const char *rel)
{
	size_t i;
	json_t *e;

	json_array_foreach(fd->exclude, i, e)
	{
		if (json_is_string(e) && match_segments(json_string_value(e), rel, 0))
			return true;
	}
	return false;
}

static void find_walk(struct finder *fd, const char *dir, const char *rel)
{
	char path[PATH_MAX], sub[PATH_MAX];
	struct dirent *e;
	struct stat st;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d)) && !fd->truncated) {
		if (walk_must_stop(fd->j)) {
			fd->truncated = true;
			break;
		}
		bool is_dir, hit;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!fd->hidden && e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (lstat(path, &st))
			continue;
		is_dir = S_ISDIR(st.st_mode);
		/* find: the name; glob: the path below the base. */
		hit = fd->glob ? match_segments(fd->pattern, sub, fd->hidden ? 0 : FNM_PERIOD)
			       : fnmatch(fd->pattern, e->d_name, 0) == 0;
		if (hit && !(fd->files_only && is_dir) && !(fd->exclude && excluded(fd, sub))) {
			if (json_array_size(fd->files) >= fd->max) {
				fd->truncated = true;
				break;
			}
			json_array_append_new(
				fd->files, fd->glob ? file_info(&(struct lister){ .sizes = true },
								path, e->d_name, &st)
						    : json_string(path));
		}
		if (is_dir)
			find_walk(fd, path, sub);
	}
	closedir(d);
}

static int do_find(struct job *j)
{
	json_t *a = j->args, *mr = json_object_get(a, "max_results");
	struct finder fd = { .j = j, .files = json_array() };
	struct stat st;

	fd.glob = j->op == OP_GLOB;
	fd.pattern = json_string_value(json_object_get(a, fd.glob ? "pattern" : "glob"));
	fd.exclude =
		json_is_array(json_object_get(a, "exclude")) ? json_object_get(a, "exclude") : NULL;
	fd.hidden = fd.glob ? json_is_true(json_object_get(a, "include_hidden")) : true;
	fd.files_only = fd.glob ? !json_is_false(json_object_get(a, "files_only")) : false;
	fd.max = json_is_integer(mr) && json_integer_value(mr) > 0 ? (size_t)json_integer_value(mr)
		 : fd.glob					   ? 5000
								   : j->f->max_list_entries;
	if (fd.max > j->f->max_list_entries)
		fd.max = j->f->max_list_entries;
	if (stat(j->path, &st) || !S_ISDIR(st.st_mode)) {
		json_decref(fd.files);
		return stat(j->path, &st)
			       ? fail_errno(j, errno, "cannot search")
			       : fail(j, ENOTDIR, NULL, "%s is not a directory", j->path);
	}
	find_walk(&fd, j->path, "");
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "%zu matches%s", json_array_size(fd.files),
		 fd.truncated ? " (stopped at the limit)" : "");
	if (fd.glob)
		j->data =
			json_pack("{s:s, s:s, s:o, s:I, s:b}", "path", j->path, "pattern",
				  fd.pattern, "files", fd.files, "total_count",
				  (json_int_t)json_array_size(fd.files), "truncated", fd.truncated);
	else
		j->data = json_pack("{s:s, s:o}", "path", j->path, "files", fd.files);
	return 0;
}

/* ---- str_replace_editor ------------------------------------------------------------- */

#define UNDO_DEPTH 10
#define UNDO_FILES 64

/* Earlier contents of edited files, newest last, per path. Shared by the
 * thread-pool workers, hence the lock; bounded in files and depth. */
struct undo {
	char path[PATH_MAX];
	char *versions[UNDO_DEPTH];
	size_t lens[UNDO_DEPTH];
	unsigned n;
};

static struct undo undo_slots[UNDO_FILES];
static uv_mutex_t undo_lock;
static uv_once_t undo_once = UV_ONCE_INIT;

static void undo_init(void)
{
	uv_mutex_init(&undo_lock);
}

static void undo_push(const char *path, const char *data, size_t len)
{
	struct undo *u = NULL, *oldest = &undo_slots[0];
	char *copy = sbx_malloc(len + 1);

	if (!copy)
		return;
	memcpy(copy, data, len);
	copy[len] = '\0';
	uv_once(&undo_once, undo_init);
	uv_mutex_lock(&undo_lock);
	for (unsigned i = 0; i < UNDO_FILES && !u; i++) {
		if (!strcmp(undo_slots[i].path, path))
			u = &undo_slots[i];
		else if (!undo_slots[i].path[0])
			oldest = &undo_slots[i];
	}
	if (!u) {
		u = oldest;
		for (unsigned i = 0; i < u->n; i++)
			sbx_free(u->versions[i]);
		memset(u, 0, sizeof(*u));
		snprintf(u->path, sizeof(u->path), "%s", path);
	}
	if (u->n == UNDO_DEPTH) {
		sbx_free(u->versions[0]);
		memmove(u->versions, u->versions + 1, sizeof(u->versions[0]) * (UNDO_DEPTH - 1));
		memmove(u->lens, u->lens + 1, sizeof(u->lens[0]) * (UNDO_DEPTH - 1));
		u->n--;
	}
	u->versions[u->n] = copy;
	u->lens[u->n++] = len;
	uv_mutex_unlock(&undo_lock);
}

/* Takes the newest earlier version of path (caller frees), or NULL. */
static char *undo_pop(const char *path, size_t *len)
{
	char *v = NULL;

	uv_once(&undo_once, undo_init);
	uv_mutex_lock(&undo_lock);
	for (unsigned i = 0; i < UNDO_FILES; i++) {
		struct undo *u = &undo_slots[i];

		if (!strcmp(u->path, path) && u->n) {
			v = u->versions[--u->n];
			*len = u->lens[u->n];
			break;
		}
	}
	uv_mutex_unlock(&undo_lock);
	return v;
}

/* Lines [from, to] (1-based, to -1: the end) numbered like `cat -n`. */
static void numbered(struct sbx_buf *out, const char *text, long from, long to)
{
	long line = 1;

	for (const char *p = text; *p; line++) {
		size_t n = strcspn(p, "\n");

		if (line >= from && (to < 0 || line <= to))
			sbx_buf_printf(out, "%6ld\t%.*s\n", line, (int)n, p);
		p += n + (p[n] == '\n');
	}
}

static long line_of(const char *text, const char *at)
{
	long line = 1;

	for (const char *p = text; p < at; p++)
		line += *p == '\n';
	return line;
}

static int editor_done(struct job *j, bool prev_exist, const char *old, const char *new_text,
		       const char *output)
{
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "%s", "Command completed");
	j->data = json_pack("{s:s, s:n, s:s, s:b, s:s?, s:s?}", "output", output, "error", "path",
			    j->path, "prev_exist", prev_exist, "old_content", old, "new_content",
			    new_text);
	return 0;
}

static int editor_view(struct job *j)
{
	json_t *range = json_object_get(j->args, "view_range");
	struct sbx_buf text, out;
	struct stat st;
	long from = 1, to = -1;
	int rc;

	if (stat(j->path, &st))
		return fail_errno(j, errno, "cannot view");
	sbx_buf_init(&out, j->f->max_read_bytes * 2);
	if (S_ISDIR(st.st_mode)) {
		struct lister l = { .j = j, .files = json_array(), .max_depth = 2 };
		size_t i;
		json_t *f;

		walk(&l, j->path, 1);
		sbx_buf_printf(&out, "Files and directories up to 2 levels deep in %s:\n", j->path);
		json_array_foreach(l.files, i, f)
			sbx_buf_printf(&out, "%s\n", json_string_value(json_object_get(f, "path")));
		json_decref(l.files);
		rc = editor_done(j, true, NULL, NULL, out.data ? out.data : "");
		sbx_buf_release(&out);
		return rc;
	}
	if (load_text(j, &text)) {
		sbx_buf_release(&out);
		return -1;
	}
	if (json_array_size(range) == 2) {
		from = (long)json_integer_value(json_array_get(range, 0));
		to = (long)json_integer_value(json_array_get(range, 1));
	}
	sbx_buf_printf(&out, "Here's the result of running `cat -n` on %s:\n", j->path);
	numbered(&out, text.data, from, to);
	rc = editor_done(j, true, NULL, NULL, out.data);
	sbx_buf_release(&out);
	sbx_buf_release(&text);
	return rc;
}

static int editor_create(struct job *j)
{
	json_t *t = json_object_get(j->args, "file_text");
	struct stat st;
	int rc;

	if (!json_is_string(t))
		return fail(j, EINVAL, "invalid_target", "create needs file_text");
	if (stat(j->path, &st) == 0)
		return fail(j, EEXIST, NULL,
			    "%s exists already; edit it with str_replace, or view it", j->path);
	if ((rc = files_make_parents(j->path)))
		return fail_errno(j, -rc, "cannot create the folder of");
	if (save_text(j, json_string_value(t), json_string_length(t)))
		return -1;
	return editor_done(j, false, NULL, json_string_value(t), "File created successfully");
}

static int editor_edit(struct job *j, bool insert)
{
	json_t *a = j->args;
	const char *old = json_string_value(json_object_get(a, "old_str"));
	const char *ns = json_string_value(json_object_get(a, "new_str"));
	size_t olen = json_string_length(json_object_get(a, "old_str"));
	size_t nlen = ns ? json_string_length(json_object_get(a, "new_str")) : 0;
	const char *mode = json_string_value(json_object_get(a, "replace_mode"));
	struct sbx_buf text, out, msg;
	const char *hit;
	size_t n;
	long at;
	int rc;

	if (!ns)
		ns = "";
	if (!insert && (!old || !olen))
		return fail(j, EINVAL, "invalid_target", "str_replace needs a non-empty old_str");
	if (insert && !json_is_integer(json_object_get(a, "insert_line")))
		return fail(j, EINVAL, "invalid_target", "insert needs insert_line");
	if (load_text(j, &text))
		return -1;
	sbx_buf_init(&out, j->f->max_read_bytes);
	if (insert) {
		long after = (long)json_integer_value(json_object_get(a, "insert_line"));
		long lines = text.len ? line_of(text.data, text.data + text.len) -
						(text.data[text.len - 1] == '\n')
				      : 0;
		const char *p = text.data;

		if (after < 0 || after > lines) {
			sbx_buf_release(&text);
			sbx_buf_release(&out);
			return fail(j, EINVAL, "invalid_target",
				    "insert_line %ld is outside 0..%ld", after, lines);
		}
		for (long l = 0; l < after; l++)
			p += strcspn(p, "\n") + (p[strcspn(p, "\n")] == '\n');
		sbx_buf_append(&out, text.data, (size_t)(p - text.data));
		if (p > text.data && p[-1] != '\n')
			sbx_buf_append(&out, "\n", 1);
		sbx_buf_append(&out, ns, nlen);
		if (nlen && ns[nlen - 1] != '\n')
			sbx_buf_append(&out, "\n", 1);
		rc = sbx_buf_append(&out, p, text.len - (size_t)(p - text.data));
		at = after + 1;
	} else {
		n = count_of(text.data, text.len, old, olen);
		if (n == 0 || (n > 1 && !(mode && !strcmp(mode, "ALL")))) {
			sbx_buf_release(&text);
			sbx_buf_release(&out);
			return n == 0 ? fail(j, 0, "invalid_target",
					     "No replacement was performed: old_str does not appear verbatim in %s",
					     j->path)
				      : fail(j, 0, "invalid_target",
					     "No replacement was performed: old_str appears %zu times in %s; "
					     "make it unique, or use replace_mode ALL",
					     n, j->path);
		}
		hit = memmem(text.data, text.len, old, olen);
		at = line_of(text.data, hit);
		sbx_buf_release(&out);
		rc = replace_all(text.data, text.len, old, olen, ns, nlen, j->f->max_read_bytes,
				 &out);
	}
	if (rc || save_text(j, out.data ? out.data : "", out.len)) {
		sbx_buf_release(&text);
		sbx_buf_release(&out);
		return j->data ? -1 : fail(j, EFBIG, "io_error", "the result would be too large");
	}
	undo_push(j->path, text.data, text.len);
	sbx_buf_init(&msg, 256 * 1024);
	sbx_buf_printf(&msg,
		       "The file %s has been edited. Here's the result of running `cat -n` on a "
		       "snippet of %s:\n",
		       j->path, j->path);
	numbered(&msg, out.data ? out.data : "", at > 4 ? at - 4 : 1,
		 at + 4 + (long)count_of(ns, nlen, "\n", 1));
	rc = editor_done(j, true, text.data, out.data ? out.data : "", msg.data);
	sbx_buf_release(&msg);
	sbx_buf_release(&text);
	sbx_buf_release(&out);
	return rc;
}

static int editor_undo(struct job *j)
{
	struct sbx_buf cur;
	size_t len;
	char *prev = undo_pop(j->path, &len);
	int rc;

	if (!prev)
		return fail(j, 0, "invalid_target", "No edit history found for %s", j->path);
	if (load_text(j, &cur)) {
		sbx_free(prev);
		return -1;
	}
	rc = save_text(j, prev, len);
	if (!rc)
		rc = editor_done(j, true, cur.data, prev, "Last edit undone successfully");
	sbx_buf_release(&cur);
	sbx_free(prev);
	return rc;
}

static int do_editor(struct job *j)
{
	const char *cmd = json_string_value(json_object_get(j->args, "command"));

	if (!strcmp(cmd, "view"))
		return editor_view(j);
	if (!strcmp(cmd, "create"))
		return editor_create(j);
	if (!strcmp(cmd, "str_replace"))
		return editor_edit(j, false);
	if (!strcmp(cmd, "insert"))
		return editor_edit(j, true);
	return editor_undo(j);
}

/* ---- grep ---------------------------------------------------------------------------- */

/* ripgrep-style type names, as file name patterns. */
static const struct {
	const char *type;
	const char *globs[4];
} grep_types[] = {
	{ "py", { "*.py", "*.pyi" } },
	{ "js", { "*.js", "*.mjs", "*.cjs", "*.jsx" } },
	{ "ts", { "*.ts", "*.tsx" } },
	{ "go", { "*.go" } },
	{ "rust", { "*.rs" } },
	{ "c", { "*.c", "*.h" } },
	{ "cpp", { "*.cc", "*.cpp", "*.hpp", "*.hh" } },
	{ "java", { "*.java" } },
	{ "md", { "*.md", "*.markdown" } },
	{ "json", { "*.json" } },
	{ "yaml", { "*.yml", "*.yaml" } },
	{ "sh", { "*.sh", "*.bash" } },
	{ "html", { "*.html", "*.htm" } },
	{ "css", { "*.css" } },
};

struct grepper {
	struct job *j;
	const char *pattern;
	bool fixed, icase, multiline, recursive;
	regex_t re;
	json_t *include, *exclude;
	const char *const *type_globs;
	long before, after, offset;
	size_t max_results, max_file;
	json_t *matches;
	size_t found, files_searched, files_matched;
	bool truncated;
};

/* "1M", "500K", "2G" or a plain byte count. */
/* "1M", "500K", "2G", "1048576", "1.5m", a "B" after the unit allowed:
 * 0, or -EINVAL for anything else (negative, not finite, 2^63 or more,
 * trailing bytes). */
static int parse_size(const char *s, size_t fallback, size_t *out)
{
	double v, unit = 1;
	char *end;

	*out = fallback;
	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || !isfinite(v) || v < 0 || isspace((unsigned char)*s))
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		unit = 1024, end++;
		break;
	case 'm':
	case 'M':
		unit = 1024.0 * 1024, end++;
		break;
	case 'g':
	case 'G':
		unit = 1024.0 * 1024 * 1024, end++;
		break;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	v *= unit;
	if (!(v < 0x1p63))
		return -EINVAL; /* 1e30 is not a file size */
	*out = (size_t)v;
	return 0;
}

static bool any_glob(json_t *globs, const char *name, const char *rel)
{
	size_t i;
	json_t *g;

	json_array_foreach(globs, i, g)
	{
		const char *p = json_string_value(g);

		if (p && (fnmatch(p, name, 0) == 0 || (rel && match_segments(p, rel, 0))))
			return true;
	}
	return false;
}

static bool wanted_file(const struct grepper *g, const char *name, const char *rel)
{
	if (g->exclude && any_glob(g->exclude, name, rel))
		return false;
	if (g->include && !any_glob(g->include, name, rel))
		return false;
	if (!g->type_globs)
		return true;
	for (size_t i = 0; i < 4 && g->type_globs[i]; i++) {
		if (fnmatch(g->type_globs[i], name, 0) == 0)
			return true;
	}
	return false;
}

static bool line_matches(struct grepper *g, const char *line)
{
	if (g->fixed)
		return (g->icase ? strcasestr(line, g->pattern) : strstr(line, g->pattern)) != NULL;
	return regexec(&g->re, line, 0, NULL, 0) == 0;
}

/* Cuts text into NUL-terminated lines in place; *out (caller frees) points
 * at each. Returns the count, 0 on -ENOMEM. */
static size_t split_lines(char *text, size_t len, char ***out)
{
	size_t n = 0, cap = 64;
	char **v = sbx_malloc(cap * sizeof(*v)), *p = text;

	while (v && p < text + len) {
		char *nl = memchr(p, '\n', (size_t)(text + len - p));

		if (n == cap) {
			char **grown = sbx_realloc(v, (cap *= 2) * sizeof(*v));

			if (!grown) {
				sbx_free(v);
				v = NULL;
				break;
			}
			v = grown;
		}
		v[n++] = p;
		if (!nl)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	*out = v;
	return v ? n : 0;
}

static void add_match(struct grepper *g, const char *file, char **lines, size_t n, size_t i)
{
	json_t *before, *after;

	g->found++;
	if ((long)g->found <= g->offset)
		return;
	if (json_array_size(g->matches) >= g->max_results) {
		g->truncated = true;
		return;
	}
	before = json_array();
	after = json_array();
	for (size_t k = i > (size_t)g->before ? i - (size_t)g->before : 0; k < i; k++)
		json_array_append_new(before, json_string(lines[k]));
	for (size_t k = i + 1; k < n && k <= i + (size_t)g->after; k++)
		json_array_append_new(after, json_string(lines[k]));
	json_array_append_new(g->matches,
			      json_pack("{s:s, s:I, s:s, s:o, s:o}", "file", file, "line_number",
					(json_int_t)(i + 1), "line_content", lines[i],
					"context_before", before, "context_after", after));
}

/* Multiline: the regex runs over the whole text; each match is reported at
 * the line it starts on. */
static void grep_multiline(struct grepper *g, const char *path, const char *text, size_t len)
{
	char *copy = sbx_strndup(text, len), **lines = NULL;
	size_t n = copy ? split_lines(copy, len, &lines) : 0, off = 0, line = 0, scanned = 0;
	regmatch_t m;

	while (lines && off < len && !g->truncated &&
	       regexec(&g->re, text + off, 1, &m, off ? REG_NOTBOL : 0) == 0) {
		size_t at = off + (size_t)m.rm_so;

		for (; scanned < at; scanned++)
			line += text[scanned] == '\n';
		if (line < n)
			add_match(g, path, lines, n, line);
		off = at + (m.rm_eo > m.rm_so ? (size_t)(m.rm_eo - m.rm_so) : 1);
	}
	sbx_free(lines);
	sbx_free(copy);
}

static void grep_file(struct grepper *g, const char *path)
{
	size_t before = g->found, n;
	struct sbx_buf b;
	char **lines = NULL;
	json_t *check;
	int fd = files_open_read(path); /* FIFOs and devices are skipped */

	if (fd < 0)
		return;
	if (read_all(fd, g->max_file, &b)) {
		close(fd);
		sbx_buf_release(&b);
		return;
	}
	close(fd);
	/* Binary (a NUL early on) and non-UTF-8 files are skipped, as rg does. */
	check = b.len && !memchr(b.data, 0, b.len < 8192 ? b.len : 8192)
			? json_stringn(b.data, b.len)
			: NULL;
	if (!check) {
		sbx_buf_release(&b);
		return;
	}
	json_decref(check);
	g->files_searched++;
	if (g->multiline) {
		grep_multiline(g, path, b.data, b.len);
	} else {
		n = split_lines(b.data, b.len, &lines);
		for (size_t i = 0; lines && i < n && !g->truncated; i++) {
			if (line_matches(g, lines[i]))
				add_match(g, path, lines, n, i);
		}
		sbx_free(lines);
	}
	sbx_buf_release(&b);
	if (g->found > before)
		g->files_matched++;
}

static void grep_walk(struct grepper *g, const char *dir, const char *rel, int depth)
{
	char path[PATH_MAX], sub[PATH_MAX];
	struct dirent *e;
	struct stat st;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d)) && !g->truncated) {
		if (walk_must_stop(g->j)) {
			g->truncated = true;
			break;
		}
		if (e->d_name[0] == '.')
			continue; /* hidden files and folders, and . and .. */
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (lstat(path, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (g->recursive && !(g->exclude && any_glob(g->exclude, e->d_name, sub)))
				grep_walk(g, path, sub, depth + 1);
		} else if (S_ISREG(st.st_mode) && (size_t)st.st_size <= g->max_file &&
			   wanted_file(g, e->d_name, sub)) {
			grep_file(g, path);
		}
	}
	closedir(d);
}

static long clamp(long v, long lo, long hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static int do_grep(struct job *j)
{
	json_t *a = j->args, *mr = json_object_get(a, "max_results");
	struct grepper g = { .j = j, .matches = json_array() };
	const char *type = json_string_value(json_object_get(a, "type"));
	struct stat st;
	char err[160];
	int rc;

	g.pattern = json_string_value(json_object_get(a, "pattern"));
	g.fixed = json_is_true(json_object_get(a, "fixed_strings"));
	g.icase = json_is_true(json_object_get(a, "case_insensitive"));
	g.multiline = json_is_true(json_object_get(a, "multiline")) && !g.fixed;
	g.recursive = !json_is_false(json_object_get(a, "recursive"));
	g.include =
		json_is_array(json_object_get(a, "include")) ? json_object_get(a, "include") : NULL;
	g.exclude =
		json_is_array(json_object_get(a, "exclude")) ? json_object_get(a, "exclude") : NULL;
	g.before = clamp((long)json_integer_value(json_object_get(a, "context_before")), 0, 50);
	g.after = clamp((long)json_integer_value(json_object_get(a, "context_after")), 0, 50);
	g.offset = clamp((long)json_integer_value(json_object_get(a, "offset")), 0, LONG_MAX);
	g.max_results =
		json_is_integer(mr) ? (size_t)clamp((long)json_integer_value(mr), 1, 10000) : 500;
	(void)parse_size(json_string_value(json_object_get(a, "max_file_size")), 1u << 20,
			 &g.max_file); /* checked when the request came */
	if (g.max_file > j->f->max_read_bytes)
		g.max_file = j->f->max_read_bytes;
	for (size_t i = 0; type && i < sizeof(grep_types) / sizeof(grep_types[0]); i++) {
		if (!strcmp(grep_types[i].type, type))
			g.type_globs = grep_types[i].globs;
	}
	if (type && !g.type_globs) {
		json_decref(g.matches);
		return fail(j, EINVAL, "invalid_target", "unknown file type '%s'", type);
	}
	if (!g.fixed && (rc = regcomp(&g.re, g.pattern,
				      REG_EXTENDED | (g.icase ? REG_ICASE : 0) |
					      (g.multiline ? 0 : REG_NEWLINE)))) {
		regerror(rc, &g.re, err, sizeof(err));
		json_decref(g.matches);
		return fail(j, EINVAL, "invalid_target", "bad regular expression: %s", err);
	}
	rc = stat(j->path, &st) ? errno : 0;
	if (!rc && S_ISDIR(st.st_mode))
		grep_walk(&g, j->path, "", 0);
	else if (!rc)
		grep_file(&g, j->path);
	if (!g.fixed)
		regfree(&g.re);
	if (rc) {
		json_decref(g.matches);
		return fail_errno(j, rc, "cannot search");
	}
	j->ok = true;
	snprintf(j->message, sizeof(j->message), "%zu matches in %zu files", g.found,
		 g.files_matched);
	j->data = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:b}", "path", j->path, "pattern",
			    g.pattern, "matches", g.matches, "match_count", (json_int_t)g.found,
			    "files_searched", (json_int_t)g.files_searched, "files_matched",
			    (json_int_t)g.files_matched, "truncated", g.truncated);
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
	case OP_REPLACE:
		(void)do_replace(j);
		break;
	case OP_SEARCH:
		(void)do_search(j);
		break;
	case OP_FIND:
	case OP_GLOB:
		(void)do_find(j);
		break;
	case OP_EDITOR:
		(void)do_editor(j);
		break;
	case OP_GREP:
		(void)do_grep(j);
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

	/* A walk stops at its next entry; other work finishes (it cannot be
	 * stopped halfway safely). The answer is dropped either way. */
	j->req = NULL;
	atomic_store(&j->cancelled, true);
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
	int rc;

	if (!body)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!check_type(req, body, fields[i].name, fields[i].type, fields[i].required) ||
		    !check_enum(req, body, &fields[i])) {
			json_decref(body);
			return;
		}
	}
	if (op == OP_GREP) {
		size_t size;

		if (parse_size(json_string_value(json_object_get(body, "max_file_size")), 0,
			       &size)) {
			json_decref(body);
			api_invalid(req, "body.max_file_size",
				    "Input should be a size such as 1M, 500K or 1048576",
				    "value_error");
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
	rc = files_resolve(f, path, json_string_length(json_object_get(body, path_field)), j->path,
			   sizeof(j->path));
	if (rc) {
		snprintf(j->path, sizeof(j->path), "%.200s", path);
		fail(j, -rc, "invalid_path", "not a usable path");
		job_done(&j->work, 0);
		return;
	}
	if (f->max_walk_ms)
		j->deadline_ms = mono_ms() + f->max_walk_ms;
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

void files_handle_replace(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "file", .type = JSON_STRING, .required = true },
		{ .name = "old_str", .type = JSON_STRING, .required = true },
		{ .name = "new_str", .type = JSON_STRING, .required = true },
		{ .name = "sudo", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_REPLACE, "file", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_search(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "file", .type = JSON_STRING, .required = true },
		{ .name = "regex", .type = JSON_STRING, .required = true },
		{ .name = "sudo", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_SEARCH, "file", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_find(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "path", .type = JSON_STRING, .required = true },
		{ .name = "glob", .type = JSON_STRING, .required = true },
	};

	start(req, arg, OP_FIND, "path", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_glob(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "path", .type = JSON_STRING, .required = true },
		{ .name = "pattern", .type = JSON_STRING, .required = true },
		{ .name = "exclude", .type = JSON_ARRAY, .required = false },
		{ .name = "include_hidden", .type = JSON_TRUE, .required = false },
		{ .name = "files_only", .type = JSON_TRUE, .required = false },
		{ .name = "include_metadata", .type = JSON_TRUE, .required = false },
		{ .name = "max_results", .type = JSON_INTEGER, .required = false },
		{ .name = "sort_by", .type = JSON_STRING, .required = false },
		{ .name = "sort_desc", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_GLOB, "path", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_editor(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "command",
		  .type = JSON_STRING,
		  .required = true,
		  .one_of = "view|create|str_replace|insert|undo_edit" },
		{ .name = "path", .type = JSON_STRING, .required = true },
		{ .name = "file_text", .type = JSON_STRING, .required = false },
		{ .name = "old_str", .type = JSON_STRING, .required = false },
		{ .name = "new_str", .type = JSON_STRING, .required = false },
		{ .name = "insert_line", .type = JSON_INTEGER, .required = false },
		{ .name = "view_range", .type = JSON_ARRAY, .required = false },
		{ .name = "replace_mode", .type = JSON_STRING, .required = false },
	};

	start(req, arg, OP_EDITOR, "path", fields, sizeof(fields) / sizeof(fields[0]));
}

void files_handle_grep(struct sbx_http_req *req, void *arg)
{
	static const struct field fields[] = {
		{ .name = "path", .type = JSON_STRING, .required = true },
		{ .name = "pattern", .type = JSON_STRING, .required = true },
		{ .name = "include", .type = JSON_ARRAY, .required = false },
		{ .name = "exclude", .type = JSON_ARRAY, .required = false },
		{ .name = "case_insensitive", .type = JSON_TRUE, .required = false },
		{ .name = "fixed_strings", .type = JSON_TRUE, .required = false },
		{ .name = "context_before", .type = JSON_INTEGER, .required = false },
		{ .name = "context_after", .type = JSON_INTEGER, .required = false },
		{ .name = "max_results", .type = JSON_INTEGER, .required = false },
		{ .name = "max_file_size", .type = JSON_STRING, .required = false },
		{ .name = "multiline", .type = JSON_TRUE, .required = false },
		{ .name = "offset", .type = JSON_INTEGER, .required = false },
		{ .name = "type", .type = JSON_STRING, .required = false },
		{ .name = "recursive", .type = JSON_TRUE, .required = false },
	};

	start(req, arg, OP_GREP, "path", fields, sizeof(fields) / sizeof(fields[0]));
}
