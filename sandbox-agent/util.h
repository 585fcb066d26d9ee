/* POST /v1/util/convert_to_markdown: a resource (an http or https URL, a
 * file:// URI or a path, relative to the workspace) as Markdown. The
 * conversion runs as Python code through /v1/code/execute (its process, its
 * timeout, its limits): HTML by the html2text module, plain text and
 * Markdown as they are; another type is refused with its name. */
#ifndef SBX_AGENT_UTIL_H
#define SBX_AGENT_UTIL_H

struct sbx_http_req;
struct sbx_http_server;

struct util {
	struct sbx_http_server *http; /* for the in-process call */
};

void util_handle_markdown(struct sbx_http_req *req, void *arg);

#endif
