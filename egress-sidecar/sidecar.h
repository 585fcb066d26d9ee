/* The running sidecar's state, shared by main.c (start, reloads, metrics)
 * and admin.c (the admin API).
 *
 * The policy in force comes from two places: the policy file (the source of
 * truth: a Kubernetes ConfigMap the operator writes) and, when a platform
 * pushes one, the admin API. An API policy sets defaultAction and rules and
 * keeps the file's alwaysAllow and alwaysDeny lists; a change of the file
 * replaces it (the file wins whenever it changes), and DELETE /policy goes
 * back to the file.
 */
#ifndef SBX_EGRESS_SIDECAR_H
#define SBX_EGRESS_SIDECAR_H

#include "audit.h"
#include "firewall.h"
#include "policy.h"
#include "proxy.h"
#include "upstream.h"

#include "sbx/http.h"
#include "sbx/loop.h"

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

struct egress {
	uv_loop_t *loop;
	const struct sbx_http_flags *http_flags; /* the core's limits, from the flags */
	const char *policy_file;
	struct egress_policy *policy;
	/* The documents are kept as text (a parsed policy of 4,096 rules would
	 * take megabytes) and parsed again when the API needs them. */
	char *policy_text;    /* the file's text in force, to skip unchanged reloads */
	char *api_text;	      /* {defaultAction, rules} set through the API (JSON), or NULL */
	char *refused_text;   /* the last text refused, to refuse (and log) it once */
	char policy_hash[33]; /* of the file's text, as the operator's annotation */
	struct upstream *up;
	struct proxy *proxy;
	struct proxy *proxy6; /* IPv6 DNS, redirected to ::1; NULL without IPv6 */
	struct firewall *fw;
	struct sbx_http_server *http;
	struct sbx_http_server *admin; /* NULL without --admin-listen */
	const char *admin_token_file;
	struct audit audit;
	struct sbx_signals signals;
	uv_fs_event_t watch;
	bool watching;
	unsigned long generation;
	unsigned long reloads_failed;
	unsigned long api_changes, api_refused;
	unsigned long learned, learn_failures;
	double ready_ms;
	/* the operator-level lists given as flags, for GET /policy */
	const char *const *flag_allow, *const *flag_deny;
	size_t n_flag_allow, n_flag_deny;
};

/* Puts in force the policy of file (the policy file's document) with, when
 * api is not NULL, api's defaultAction and rules instead of the file's.
 * Takes both references. On success the state keeps api's text (the
 * caller keeps the file's) and the generation grows; on failure nothing
 * changes and err says why: -EINVAL for a policy that does not compile,
 * another errno when the firewall did not take it. */
int egress_set_policy(struct egress *e, json_t *file, json_t *api, char *err, size_t err_size);
/* The documents in force, parsed again (NULL: out of memory, or no API
 * policy). The reference is the caller's. */
json_t *egress_file_doc(const struct egress *e);
json_t *egress_api_doc(const struct egress *e);

/* The admin API's routes (admin.c), served on --admin-listen with the
 * bearer token of e->admin_token_file. */
int admin_start(struct egress *e, const char *addr, char *err, size_t err_size);

#endif
