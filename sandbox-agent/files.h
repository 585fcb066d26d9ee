/* The /v1/file group: read, write, list, replace, search, find, glob, grep
 * and str_replace_editor (upload, download and watch are still to come). Blocking file work
 * runs on libuv's thread pool; the loop thread only parses and answers.
 *
 * Failures are answers, not HTTP errors: HTTP 200 with success false and a
 * FileOperationError as data ({path, operation, message, error_type, errno,
 * errno_name, retryable}), error_type one of not_found, permission_denied,
 * invalid_target, already_exists, invalid_path, read_only_filesystem,
 * no_space_left, decode_error, io_error. */
#ifndef SBX_AGENT_FILES_H
#define SBX_AGENT_FILES_H

#include <stddef.h>
#include <uv.h>

struct sbx_http_req;

struct files {
	uv_loop_t *loop;
	const char *workspace; /* relative paths resolve here */
	size_t max_read_bytes; /* read and write larger than this: an error */
	size_t max_list_entries;
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

/* error_type for an errno value (exposed for tests). */
const char *files_error_type(int err);

#endif
