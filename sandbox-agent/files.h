/* The /v1/file group: read, write, list, replace, search, find, glob, grep,
 * str_replace_editor, upload and download (watch is still to come). Blocking file work
 * runs on libuv's thread pool; the loop thread only parses and answers.
 *
 * Failures are answers, not HTTP errors: HTTP 200 with success false and a
 * FileOperationError as data ({path, operation, message, error_type, errno,
 * errno_name, retryable}), error_type one of not_found, permission_denied,
 * invalid_target, already_exists, invalid_path, read_only_filesystem,
 * no_space_left, decode_error, io_error. */
#ifndef SBX_AGENT_FILES_H
#define SBX_AGENT_FILES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;

struct files {
	uv_loop_t *loop;
	const char *workspace; /* relative paths resolve here */
	size_t max_read_bytes; /* read and write larger than this: an error */
	size_t max_list_entries;
	uint64_t max_upload_bytes; /* one upload's whole multipart body */
	uint64_t max_walk_ms;	   /* list, find, glob, grep stop after this (0: never) */
};

void files_handle_read(struct sbx_http_req *req, void *arg);
void files_handle_write(struct sbx_http_req *req, void *arg);
void files_handle_list(struct sbx_http_req *req, void *arg);
void files_handle_replace(struct sbx_http_req *req, void *arg);
void files_handle_search(struct sbx_http_req *req, void *arg);
void files_handle_find(struct sbx_http_req *req, void *arg);
void files_handle_glob(struct sbx_http_req *req, void *arg);
void files_handle_editor(struct sbx_http_req *req, void *arg);
void files_handle_grep(struct sbx_http_req *req, void *arg);
/* transfer.c: multipart upload (a route with stream_body) and streamed
 * download. */
void files_handle_upload(struct sbx_http_req *req, void *arg);
void files_handle_download(struct sbx_http_req *req, void *arg);
/* Sends the file at path (absolute) as the whole answer, typed
 * content_type (a static string), as an attachment named after it, from
 * the page cache where the connection allows: 0, or a negative errno when
 * it cannot be opened (then nothing is answered). */
int files_send(struct sbx_http_req *req, const char *path, const char *content_type);

/* error_type for an errno value (exposed for tests). */
const char *files_error_type(int err);
/* A FileOperationError (type NULL: from err; err 0: no errno). */
json_t *files_error_data(const char *path, const char *operation, int err, const char *type,
			 const char *message);
/* path (absolute, or relative to the workspace) into out: 0, -EINVAL (empty
 * or holding a NUL: path_len disagrees with strlen), -ENAMETOOLONG. */
int files_resolve(const struct files *f, const char *path, size_t path_len, char *out, size_t size);
/* Opens a regular file for reading without ever blocking on a FIFO or a
 * device: the descriptor, -EISDIR, -ENODEV (not a regular file), -errno. */
int files_open_read(const char *path);
/* mkdir -p of path's parent folder: 0 or -errno. */
int files_make_parents(const char *path);
/* The same with the folders' mode. */
int files_make_parents_mode(const char *path, mode_t mode);

#endif
