/* GET /v1/openapi.json and GET /v1/docs: the agent describes the operations
 * it serves, generated from its own route table so the description can never
 * drift from what is served. */
#ifndef SBX_AGENT_DOCS_H
#define SBX_AGENT_DOCS_H

#include <jansson.h>
#include <stddef.h>

struct sbx_http_req;
struct sbx_http_route;

struct docs {
	json_t *openapi; /* built once */
	char *html;
	size_t html_len;
};

int docs_init(struct docs *d, const struct sbx_http_route *routes, size_t n, const char *version);
void docs_release(struct docs *d);

void docs_handle_openapi(struct sbx_http_req *req, void *arg);
void docs_handle_page(struct sbx_http_req *req, void *arg);

#endif
