/* POST /v1/file/upload and GET /v1/file/download (see files.h).
 *
 * Both stream: an upload's multipart body goes from the socket through the
 * multipart parser into a temporary file next to its destination, with at
 * most a few hundred KiB in memory whatever its size (reading pauses while
 * the disk is behind); a download of a regular file goes from the page
 * cache to the socket by sendfile(2) on plain HTTP/1.1 (sbx_http_send_file),
 * and elsewhere (TLS, HTTP/2, special files) is read piece by piece, the
 * next piece only when the client has taken the last. File I/O runs on
 * libuv's thread pool (uv_fs_*), never on the loop thread, apart from open
 * and rename-sized metadata calls.
 */
#define _GNU_SOURCE
#include "api.h"
#include "files.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/log.h"
#include "sbx/multipart.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUEUE_MAX      (4u << 20)   /* bytes parsed but not yet written */
#define QUEUE_PAUSE    (1u << 20)   /* pause reading the body above this */
#define QUEUE_RESUME   (256u << 10) /* and resume below this */
#define DOWNLOAD_PIECE (256u << 10)

/* ---- upload ------------------------------------------------------------------ */

enum part { PART_NONE, PART_PATH, PART_FILE, PART_OTHER };

struct upload {
	struct files *f;
	struct sbx_http_req *req; /* NULL once answered or gone */
	struct sbx_multipart *mp;
	enum part part;
	struct sbx_buf path; /* the "path" field */
	bool have_path;	     /* its part has ended */
	bool file_seen;	     /* the "file" part has begun */
	bool file_done;	     /* and ended */
	bool body_done;	     /* the whole body is in */
	char filename[NAME_MAX + 1];
	char dest[PATH_MAX]; /* where the file goes (provisional until the end) */
	char tmp[PATH_MAX];  /* the temporary file being written */
	int fd;
	struct sbx_buf queue;  /* parsed, waiting for the disk */
	struct sbx_buf flight; /* being written */
	size_t flight_off;     /* of flight, written so far */
	uv_fs_t wreq;
	bool writing;
	bool finalizing; /* the rename runs on the thread pool */
	uv_work_t final;
	int final_err;
	const char *final_what;
	uint64_t size;
};

static void upload_free(struct upload *up)
{
	if (up->fd >= 0)
		close(up->fd);
	if (up->tmp[0])
		unlink(up->tmp);
	sbx_multipart_free(up->mp);
	sbx_buf_release(&up->path);
	sbx_buf_release(&up->queue);
	sbx_buf_release(&up->flight);
	sbx_free(up);
}

/* Frees the upload once nothing refers to it any more. */
static void upload_maybe_free(struct upload *up)
{
	if (!up->req && !up->writing && !up->finalizing)
		upload_free(up);
}

/* Answers with a FileOperationError (HTTP 200, success false). */
static void upload_fail(struct upload *up, int err, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void upload_fail(struct upload *up, int err, const char *type, const char *fmt, ...)
{
	char message[PATH_MAX + 128];
	va_list ap;

	if (!up->req)
		return;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	sbx_http_on_abort(up->req, NULL, NULL);
	api_fail(up->req, message,
		 files_error_data(up->dest[0] ? up->dest : "", "upload", err, type, message));
	up->req = NULL;
}

/* Answers 422 (a request the API cannot take as it is). */
static void upload_invalid(struct upload *up, const char *loc, const char *msg, const char *type)
{
	if (!up->req)
		return;
	sbx_http_on_abort(up->req, NULL, NULL);
	api_invalid(up->req, loc, msg, type);
	up->req = NULL;
}

/* dest from the path field (a folder, or ending in '/': the file's own
 * name inside it), or the workspace plus the file's name. */
static int upload_dest(struct upload *up)
{
	char joined[PATH_MAX];
	const char *name = up->filename[0] ? up->filename : "upload";
	struct stat st;
	int rc;

	if (!up->have_path || !up->path.len) {
		rc = snprintf(up->dest, sizeof(up->dest), "%s/%s", up->f->workspace, name);
		return rc < 0 || (size_t)rc >= sizeof(up->dest) ? -ENAMETOOLONG : 0;
	}
	rc = files_resolve(up->f, up->path.data, up->path.len, up->dest, sizeof(up->dest));
	if (rc)
		return rc;
	if (up->dest[strlen(up->dest) - 1] == '/' ||
	    (stat(up->dest, &st) == 0 && S_ISDIR(st.st_mode))) {
		rc = snprintf(joined, sizeof(joined), "%s%s%s", up->dest,
			      up->dest[strlen(up->dest) - 1] == '/' ? "" : "/", name);
		if (rc < 0 || (size_t)rc >= sizeof(joined))
			return -ENAMETOOLONG;
		memcpy(up->dest, joined, (size_t)rc + 1);
	}
	return 0;
}

/* The temporary file, hidden, in dest's folder (so the final rename does
 * not cross file systems). */
static int upload_open(struct upload *up)
{
	char dir[PATH_MAX];
	int rc;

	if ((rc = upload_dest(up))) {
		upload_fail(up, -rc, "invalid_path", "not a usable path: %s", strerror(-rc));
		return rc;
	}
	if ((rc = files_make_parents(up->dest))) {
		upload_fail(up, -rc, NULL, "cannot create the folder of %s: %s", up->dest,
			    strerror(-rc));
		return rc;
	}
	snprintf(dir, sizeof(dir), "%s", up->dest);
	rc = snprintf(up->tmp, sizeof(up->tmp), "%s/.sbx-upload-XXXXXX", dirname(dir));
	if (rc < 0 || (size_t)rc >= sizeof(up->tmp)) {
		up->tmp[0] = '\0';
		upload_fail(up, ENAMETOOLONG, "invalid_path", "path too long: %s", up->dest);
		return -ENAMETOOLONG;
	}
	up->fd = mkostemp(up->tmp, O_CLOEXEC);
	if (up->fd < 0) {
		rc = errno;
		up->tmp[0] = '\0';
		upload_fail(up, rc, NULL, "cannot create a file next to %s: %s", up->dest,
			    strerror(rc));
		return -rc;
	}
	fchmod(up->fd, 0644);
	return 0;
}

static void upload_write_next(struct upload *up);
static void upload_finish(struct upload *up);

static void on_written(uv_fs_t *w)
{
	struct upload *up = w->data;
	ssize_t n = w->result;

	uv_fs_req_cleanup(w);
	up->writing = false;
	if (n < 0) {
		upload_fail(up, (int)-n, NULL, "cannot write %s: %s", up->dest,
			    uv_strerror((int)n));
		sbx_buf_reset(&up->queue);
		upload_maybe_free(up);
		return;
	}
	up->flight_off += (size_t)n;
	up->size += (uint64_t)n;
	if (!up->req) {
		upload_maybe_free(up);
		return;
	}
	upload_write_next(up);
}

/* Starts the next write if none runs: the rest of the piece in flight, or
 * everything queued. Resumes the body when the queue is short again. */
static void upload_write_next(struct upload *up)
{
	struct sbx_buf swap;
	bool resume = false;
	uv_buf_t b;
	int rc;

	if (up->writing || !up->req)
		return;
	if (up->flight_off == up->flight.len) {
		sbx_buf_reset(&up->flight);
		up->flight_off = 0;
		swap = up->flight;
		up->flight = up->queue;
		up->queue = swap;
		resume = up->queue.len < QUEUE_RESUME;
	}
	if (up->flight_off == up->flight.len) {
		if (up->body_done)
			upload_finish(up);
		else if (resume)
			sbx_http_resume_body(up->req);
		return;
	}
	b = uv_buf_init(up->flight.data + up->flight_off,
			(unsigned)(up->flight.len - up->flight_off));
	up->wreq.data = up;
	rc = uv_fs_write(uv_default_loop(), &up->wreq, up->fd, &b, 1, -1, on_written);
	if (rc) {
		upload_fail(up, -rc, NULL, "cannot write %s: %s", up->dest, uv_strerror(rc));
		return;
	}
	up->writing = true;
	/* Last: resuming may hand over body bytes at once (HTTP/2 delivers
	 * what it held), which re-enter here and must find the write running,
	 * not start a second one on the same request. */
	if (resume)
		sbx_http_resume_body(up->req);
}

static void final_work(uv_work_t *w)
{
	struct upload *up = w->data;
	struct stat st;

	up->final_err = 0;
	if (close(up->fd)) {
		up->fd = -1;
		up->final_err = errno;
		up->final_what = "cannot write";
		return;
	}
	up->fd = -1;
	if (rename(up->tmp, up->dest)) {
		up->final_err = errno;
		up->final_what = "cannot move the upload to";
		return;
	}
	up->tmp[0] = '\0';
	if (stat(up->dest, &st) == 0)
		up->size = (uint64_t)st.st_size;
}

static void final_done(uv_work_t *w, int status)
{
	struct upload *up = w->data;

	up->finalizing = false;
	if (up->req) {
		if (status || up->final_err) {
			int err = status ? -status : up->final_err;

			upload_fail(up, err, NULL, "%s %s: %s",
				    up->final_what ? up->final_what : "cannot finish", up->dest,
				    strerror(err));
		} else {
			sbx_http_on_abort(up->req, NULL, NULL);
			api_ok(up->req, "File uploaded successfully",
			       json_pack("{s:s, s:I, s:b}", "file_path", up->dest, "file_size",
					 (json_int_t)up->size, "success", 1));
			up->req = NULL;
		}
	}
	upload_maybe_free(up);
}

/* The body is in and the disk has it all: move the file into place. */
static void upload_finish(struct upload *up)
{
	int rc;

	if (up->finalizing || !up->req)
		return;
	if (up->have_path) {
		/* The path may have come after the file: the destination is
		 * final only now. A temporary file in another folder is moved
		 * (rename) and fails with EXDEV across file systems. */
		char old_dest[PATH_MAX];

		memcpy(old_dest, up->dest, sizeof(old_dest));
		if ((rc = upload_dest(up))) {
			upload_fail(up, -rc, "invalid_path", "not a usable path: %s",
				    strerror(-rc));
			return;
		}
		if (strcmp(old_dest, up->dest) != 0 && (rc = files_make_parents(up->dest))) {
			upload_fail(up, -rc, NULL, "cannot create the folder of %s: %s", up->dest,
				    strerror(-rc));
			return;
		}
	}
	up->final.data = up;
	up->finalizing = true;
	if ((rc = uv_queue_work(uv_default_loop(), &up->final, final_work, final_done))) {
		up->finalizing = false;
		upload_fail(up, -rc, NULL, "cannot finish the upload: %s", uv_strerror(rc));
	}
}

static int part_begin(void *arg, const struct sbx_multipart_part *p)
{
	struct upload *up = arg;

	if (strcmp(p->name, "path") == 0) {
		up->part = PART_PATH;
		sbx_buf_reset(&up->path);
		return 0;
	}
	if (strcmp(p->name, "file") != 0) {
		up->part = PART_OTHER; /* unknown fields are ignored, as FastAPI does */
		return 0;
	}
	if (up->file_seen) {
		upload_invalid(up, "body.file", "Only one file per upload", "value_error");
		return -EINVAL;
	}
	up->file_seen = true;
	up->part = PART_FILE;
	if (p->filename) {
		/* Only the last component of what the client calls it. */
		const char *slash = strrchr(p->filename, '/');
		const char *base = slash ? slash + 1 : p->filename;

		if (strcmp(base, ".") && strcmp(base, ".."))
			snprintf(up->filename, sizeof(up->filename), "%s", base);
	}
	return upload_open(up) ? -EIO : 0;
}

static int part_data(void *arg, const char *at, size_t len)
{
	struct upload *up = arg;

	switch (up->part) {
	case PART_PATH:
		if (sbx_buf_append(&up->path, at, len)) {
			upload_invalid(up, "body.path", "path too long", "string_too_long");
			return -E2BIG;
		}
		return 0;
	case PART_FILE:
		if (sbx_buf_append(&up->queue, at, len)) {
			/* Cannot happen while the pause below works; never
			 * silently drop bytes if it does not. */
			upload_fail(up, ENOBUFS, "io_error", "upload buffer overrun");
			return -ENOBUFS;
		}
		if (up->queue.len >= QUEUE_PAUSE && up->req)
			sbx_http_pause_body(up->req);
		upload_write_next(up);
		return 0;
	default:
		return 0;
	}
}

static int part_end(void *arg)
{
	struct upload *up = arg;

	if (up->part == PART_PATH)
		up->have_path = true;
	else if (up->part == PART_FILE)
		up->file_done = true;
	up->part = PART_NONE;
	return 0;
}

static int body_data(struct sbx_http_req *req, const char *at, size_t len, void *arg)
{
	struct upload *up = arg;
	int rc = sbx_multipart_feed(up->mp, at, len);

	if (rc == -EBADMSG || rc == -E2BIG)
		upload_invalid(up, "body", sbx_multipart_error(up->mp), "value_error");
	if (rc && !up->req)
		upload_maybe_free(up);
	return rc < 0 ? rc : 0;
}

static void body_end(struct sbx_http_req *req, int status, void *arg)
{
	struct upload *up = arg;
	char msg[96];

	if (status == -EFBIG) {
		snprintf(msg, sizeof(msg), "the upload is larger than the limit of %llu bytes",
			 (unsigned long long)up->f->max_upload_bytes);
		upload_fail(up, EFBIG, "no_space_left", "%s", msg);
	} else if (sbx_multipart_finish(up->mp)) {
		upload_invalid(up, "body", sbx_multipart_error(up->mp), "value_error");
	} else if (!up->file_seen || !up->file_done) {
		upload_invalid(up, "body.file", "Field required", "missing");
	} else {
		up->body_done = true;
		upload_write_next(up);
		return;
	}
	upload_maybe_free(up);
}

static void upload_abort(struct sbx_http_req *req, void *arg)
{
	struct upload *up = arg;

	up->req = NULL;
	upload_maybe_free(up);
}

void files_handle_upload(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_multipart_callbacks mcb = { part_begin, part_data, part_end };
	static const struct sbx_http_body_sink sink = { body_data, body_end };
	struct upload *up = sbx_calloc(1, sizeof(*up));
	char err[160];

	if (!up) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	up->f = arg;
	up->req = req;
	up->fd = -1;
	sbx_buf_init(&up->path, PATH_MAX);
	sbx_buf_init(&up->queue, QUEUE_MAX);
	sbx_buf_init(&up->flight, QUEUE_MAX);
	up->mp = sbx_multipart_new(sbx_http_header(req, "Content-Type"), &mcb, up, 16, err,
				   sizeof(err));
	if (!up->mp) {
		upload_invalid(up, "body", err, "value_error");
		upload_free(up);
		return;
	}
	sbx_http_on_abort(req, upload_abort, up);
	sbx_http_stream_body(req, &sink, up);
}

/* ---- download ------------------------------------------------------------------ */

struct download {
	struct sbx_http_req *req; /* NULL once the client has gone */
	uv_file fd;
	uv_fs_t rreq;
	bool reading;
	bool started;
	bool abort_on_change;
	const char *type; /* the answer's Content-Type */
	char path[PATH_MAX];
	struct stat st; /* at open: what "unchanged" means */
	uint64_t off;
	char buf[DOWNLOAD_PIECE];
};

static void download_free(struct download *d)
{
	if (d->fd >= 0)
		close(d->fd);
	sbx_free(d);
}

static bool changed(const struct download *d)
{
	struct stat now, by_path;

	if (fstat(d->fd, &now) || stat(d->path, &by_path))
		return true;
	return now.st_size != d->st.st_size || now.st_mtim.tv_sec != d->st.st_mtim.tv_sec ||
	       now.st_mtim.tv_nsec != d->st.st_mtim.tv_nsec || by_path.st_ino != d->st.st_ino ||
	       by_path.st_dev != d->st.st_dev;
}

static void download_read(struct download *d);

static void download_drained(struct sbx_http_req *req, void *arg)
{
	download_read(arg);
}

static void on_read(uv_fs_t *r)
{
	struct download *d = r->data;
	ssize_t n = r->result;
	int rc;

	uv_fs_req_cleanup(r);
	d->reading = false;
	if (!d->req) {
		download_free(d);
		return;
	}
	if (n < 0 || (n == 0 && d->off < (uint64_t)d->st.st_size) ||
	    (d->abort_on_change && changed(d))) {
		if (!d->started) {
			sbx_http_on_abort(d->req, NULL, NULL);
			if (n < 0)
				sbx_http_respond_error(d->req, 500, uv_strerror((int)n));
			else
				sbx_http_respond_error(d->req, 409,
						       "the file changed before the download");
		} else {
			/* Mid-stream: cutting the connection is the only honest
			 * way left to tell the client. */
			sbx_log_warn(
				"download cut short", SBX_LS("path", d->path),
				SBX_LS("reason", n < 0 ? uv_strerror((int)n) : "file changed"));
			sbx_http_abort(d->req);
		}
		download_free(d);
		return;
	}
	if (!d->started) {
		d->started = true;
		sbx_http_start_sized(d->req, 200, d->type, (uint64_t)d->st.st_size);
	}
	if ((uint64_t)n > (uint64_t)d->st.st_size - d->off)
		n = (ssize_t)((uint64_t)d->st.st_size - d->off); /* grew: send what was promised */
	d->off += (uint64_t)n;
	rc = n ? sbx_http_write(d->req, d->buf, (size_t)n) : 0;
	if (rc < 0) {
		sbx_http_on_abort(d->req, NULL, NULL);
		sbx_http_abort(d->req);
		download_free(d);
		return;
	}
	if (d->off >= (uint64_t)d->st.st_size) {
		sbx_http_on_abort(d->req, NULL, NULL);
		sbx_http_end(d->req);
		download_free(d);
		return;
	}
	if (rc == 1)
		sbx_http_on_drain(d->req, download_drained, d);
	else
		download_read(d);
}

static void download_read(struct download *d)
{
	uv_buf_t b = uv_buf_init(d->buf, sizeof(d->buf));
	int rc;

	d->rreq.data = d;
	rc = uv_fs_read(uv_default_loop(), &d->rreq, d->fd, &b, 1, (int64_t)d->off, on_read);
	if (rc) {
		d->rreq.result = rc;
		on_read(&d->rreq);
		return;
	}
	d->reading = true;
}

/* The kernel has copied the file to the socket (sbx_http_send_file). */
static void download_sent(struct sbx_http_req *req, void *arg, int status)
{
	struct download *d = arg;

	sbx_http_on_abort(req, NULL, NULL);
	if (status < 0) {
		sbx_log_warn("download cut short", SBX_LS("path", d->path),
			     SBX_LS("reason", uv_strerror(status)));
		sbx_http_abort(req);
	} else {
		sbx_http_end(req);
	}
	download_free(d);
}

static void download_abort(struct sbx_http_req *req, void *arg)
{
	struct download *d = arg;

	d->req = NULL;
	if (!d->reading)
		download_free(d);
}

/* attachment; filename="x" plus filename* when the name is not plain ASCII. */
static void disposition(struct sbx_http_req *req, const char *path)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	struct sbx_buf b;
	bool plain = true;

	sbx_buf_init(&b, 4 * PATH_MAX);
	sbx_buf_append_str(&b, "attachment; filename=\"");
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		bool odd = *p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\';

		plain = plain && !odd;
		sbx_buf_append(&b, odd ? "_" : (const char *)p, 1);
	}
	sbx_buf_append_str(&b, "\"");
	if (!plain) {
		sbx_buf_append_str(&b, "; filename*=UTF-8''");
		for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
			if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p))
				sbx_buf_append(&b, p, 1);
			else
				sbx_buf_printf(&b, "%%%02X", *p);
		}
	}
	if (b.data)
		sbx_http_add_header(req, "Content-Disposition", b.data);
	sbx_buf_release(&b);
}

static void download_error(struct sbx_http_req *req, const char *path, int err)
{
	char message[PATH_MAX + 64];
	int status = err == ENOENT ? 404 : err == EACCES || err == EPERM ? 403 : 400;

	snprintf(message, sizeof(message), "cannot download %s: %s", path, strerror(err));
	json_t *env = api_envelope(false, message,
				   files_error_data(path, "download", err, NULL, message));

	sbx_http_respond_json(req, status, env);
	json_decref(env);
}

/* Opens d->path and sends it as the answer; d is the answer's from here.
 * A negative errno when it cannot be opened: nothing answered, d still the
 * caller's. */
static int download_begin(struct sbx_http_req *req, struct download *d)
{
	int rc;

	d->fd = files_open_read(d->path);
	if (d->fd < 0 || fstat(d->fd, &d->st))
		return d->fd < 0 ? d->fd : -errno;
	d->req = req;
	disposition(req, d->path);
	sbx_http_on_abort(req, download_abort, d);
	if (S_ISREG(d->st.st_mode) && d->st.st_size > 0 && !d->abort_on_change) {
		/* A regular file goes from the page cache to the socket, where
		 * the connection allows (plain HTTP/1.1); elsewhere it is read
		 * and written piece by piece. So is a download to be cut when
		 * the file changes: each piece is checked before it goes out,
		 * which the kernel's copy cannot do. */
		d->started = true;
		sbx_http_start_sized(req, 200, d->type, (uint64_t)d->st.st_size);
		rc = sbx_http_send_file(req, d->fd, 0, (uint64_t)d->st.st_size, download_sent, d);
		if (rc == 0)
			return 0;
		if (rc != -ENOTSUP) {
			sbx_http_on_abort(req, NULL, NULL);
			sbx_http_abort(req);
			download_free(d);
			return 0;
		}
	}
	download_read(d);
	return 0;
}

void files_handle_download(struct sbx_http_req *req, void *arg)
{
	struct files *f = arg;
	char raw[PATH_MAX], policy[16];
	struct download *d;
	int n, rc;

	n = sbx_http_query(req, "path", raw, sizeof(raw));
	if (n == -ENOENT) {
		api_invalid(req, "query.path", "Field required", "missing");
		return;
	}
	rc = sbx_http_query(req, "change_policy", policy, sizeof(policy));
	if (rc >= 0 && strcmp(policy, "ignore") && strcmp(policy, "abort")) {
		api_invalid(req, "query.change_policy", "Input should be 'ignore' or 'abort'",
			    "enum");
		return;
	}
	d = sbx_calloc(1, sizeof(*d));
	if (!d) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	d->fd = -1;
	d->abort_on_change = rc >= 0 && strcmp(policy, "abort") == 0;
	if (n < 0 || (rc = files_resolve(f, raw, (size_t)n, d->path, sizeof(d->path)))) {
		download_error(req, n < 0 ? "" : raw, n < 0 ? ENAMETOOLONG : -rc);
		download_free(d);
		return;
	}
	d->type = "application/octet-stream";
	if ((rc = download_begin(req, d)) < 0) {
		download_error(req, d->path, -rc);
		download_free(d);
	}
}

int files_send(struct sbx_http_req *req, const char *path, const char *content_type)
{
	struct download *d = sbx_calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	d->fd = -1;
	d->type = content_type;
	if (snprintf(d->path, sizeof(d->path), "%s", path) >= (int)sizeof(d->path))
		rc = -ENAMETOOLONG;
	else
		rc = download_begin(req, d);
	if (rc < 0)
		download_free(d);
	return rc;
}
