/* Skills (/v1/skills): folders holding a SKILL.md whose YAML front matter
 * describes the skill (name, description, ...) and whose body is the skill
 * itself. Registered from a folder in the sandbox (a skill, or a folder of
 * skills; kept where it is) or from an uploaded zip (unpacked under the
 * skills directory, with every entry checked: no absolute paths, no "..",
 * bounded count and size). Listed with their metadata, read, and deleted
 * (an unpacked skill's files go with it; a folder's stay). */
#ifndef SBX_AGENT_SKILLS_H
#define SBX_AGENT_SKILLS_H

#include "sbx/map.h"

#include <uv.h>

struct sbx_http_req;

struct skills {
	uv_loop_t *loop;
	const char *workspace;
	char root[4096];    /* where zips are unpacked */
	struct sbx_map reg; /* name -> struct skill */
};

int skills_init(struct skills *sk, uv_loop_t *loop, const char *workspace, const char *root);
void skills_release(struct skills *sk);

void skills_handle_register(struct sbx_http_req *req, void *arg);
void skills_handle_list(struct sbx_http_req *req, void *arg);
void skills_handle_content(struct sbx_http_req *req, void *arg);
void skills_handle_delete(struct sbx_http_req *req, void *arg);
void skills_handle_clear(struct sbx_http_req *req, void *arg);

#endif
