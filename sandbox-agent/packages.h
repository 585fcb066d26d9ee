/* GET /v1/sandbox/packages/python and /v1/sandbox/packages/nodejs (arg: the
 * uv_loop_t). The answer's data is a list of {name, version}. */
#ifndef SBX_AGENT_PACKAGES_H
#define SBX_AGENT_PACKAGES_H

struct sbx_http_req;

void packages_handle_python(struct sbx_http_req *req, void *arg);
void packages_handle_nodejs(struct sbx_http_req *req, void *arg);

#endif
