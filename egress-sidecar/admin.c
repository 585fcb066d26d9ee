/* The admin API (see sidecar.h and docs/egress.md): the policy in force,
 * changed by a platform at run time, and the recent decisions.
 *
 *   GET    /policy     the policy in force, its origin and generation (ETag)
 *   PUT    /policy     {defaultAction, rules}: replaces the file's
 *   PATCH  /policy     {defaultAction?, rules?}: these rules go first, and
 *                      replace the rules of the same targets
 *   DELETE /policy     back to the policy file
 *   GET    /decisions  ?after=SEQ&limit=N&name=PATTERN&verdict=allow|deny
 *
 * Every route needs "Authorization: Bearer <token>", the token being the
 * content of --admin-token-file, read at each request (so a rotated Secret
 * applies at once). Changes honor If-Match with the ETag of GET /policy.
 */
#include "sidecar.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/kube_config.h"
#include "sbx/log.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MAX_BYTES	 4096
#define POLICY_MAX_BYTES (4u << 20)

static bool refuse(struct sbx_http_req *req, int status, const char *why)
{
	sbx_log_info("admin request refused", SBX_LS("method", sbx_http_method(req)),
		     SBX_LS("path", sbx_http_path(req)), SBX_LS("peer", sbx_http_peer(req)),
		     SBX_LS("reason", why));
	if (status == 401)
		sbx_http_add_header(req, "WWW-Authenticate", "Bearer");
	sbx_http_respond_error(req, status, why);
	return false;
}

static bool authorize(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;
	const char *h = sbx_http_header(req, "Authorization"), *given = NULL;
	char *token = NULL;
	size_t len = 0;
	bool ok;

	if (sbx_read_file(e->admin_token_file, TOKEN_MAX_BYTES, &token, &len))
		return refuse(req, 503, "the admin token file cannot be read");
	while (len && isspace((unsigned char)token[len - 1]))
		token[--len] = '\0';
	if (!len) {
		sbx_free(token);
		return refuse(req, 503, "the admin token file is empty");
	}
	if (h && strncasecmp(h, "Bearer ", 7) == 0)
		given = h + 7 + strspn(h + 7, " ");
	/* Constant time in the content; the length may show. */
	ok = given && strlen(given) == len && CRYPTO_memcmp(given, token, len) == 0;
	sbx_free(token);
	return ok ? true : refuse(req, 401, given ? "invalid token" : "missing bearer token");
}

static json_t *rules_of(const json_t *doc)
{
	json_t *r = json_object_get(doc, "rules");

	return r ? r : json_object_get(doc, "egress");
}

/* The file's list and the flags' list together, as the policy applies them. */
static json_t *always_list(const json_t *file, const char *key, const char *const *flags,
			   size_t n_flags)
{
	json_t *out = json_array(), *v;
	size_t i;

	json_array_foreach(json_object_get(file, key), i, v) json_array_append(out, v);
	for (i = 0; i < n_flags; i++)
		json_array_append_new(out, json_string(flags[i]));
	return out;
}

static void etag(const struct egress *e, char out[32])
{
	snprintf(out, 32, "\"%lu\"", e->generation);
}

static void respond_view(struct egress *e, struct sbx_http_req *req, int status)
{
	json_t *file = egress_file_doc(e), *api = egress_api_doc(e), *rules, *view = NULL;
	char tag[32];

	rules = rules_of(api ? api : file);
	if (file)
		view = json_pack(
			"{s:{s:s, s:o}, s:o, s:o, s:I, s:s, s:s, s:s, s:I}", "policy",
			"defaultAction", egress_action_name(egress_policy_default(e->policy)),
			"rules", rules ? json_incref(rules) : json_array(), "alwaysAllow",
			always_list(file, "alwaysAllow", e->flag_allow, e->n_flag_allow),
			"alwaysDeny", always_list(file, "alwaysDeny", e->flag_deny, e->n_flag_deny),
			"generation", (json_int_t)e->generation, "source", api ? "api" : "file",
			"file", e->policy_file, "fileHash", e->policy_hash, "compiledRules",
			(json_int_t)egress_policy_count(e->policy));
	json_decref(file);
	json_decref(api);
	etag(e, tag);
	sbx_http_add_header(req, "ETag", tag);
	if (view)
		sbx_http_respond_json(req, status, view);
	else
		sbx_http_respond_error(req, 500, "out of memory");
	json_decref(view);
}

/* A change must match If-Match when the client sent one (no lost updates
 * between two platforms' read-modify-write). */
static bool precondition(struct egress *e, struct sbx_http_req *req)
{
	const char *want = sbx_http_header(req, "If-Match");
	char tag[32];

	etag(e, tag);
	if (!want || strcmp(want, "*") == 0 || strcmp(want, tag) == 0)
		return true;
	e->api_refused++;
	sbx_http_add_header(req, "ETag", tag);
	sbx_http_respond_error(req, 412, "the policy changed since that ETag (GET /policy again)");
	return false;
}

/* The request's policy document: a mapping of the fields the API sets. */
static json_t *body_doc(struct egress *e, struct sbx_http_req *req, bool patch)
{
	char err[512];
	size_t len = 0;
	const char *body = sbx_http_body(req, &len), *key;
	json_t *doc, *v;

	if (!(doc = egress_policy_load(body, len, err, sizeof(err)))) {
		e->api_refused++;
		sbx_http_respond_error(req, 400, err);
		return NULL;
	}
	if (!json_is_object(doc)) {
		snprintf(err, sizeof(err), "the body must be a mapping {defaultAction, rules}");
		goto refused;
	}
	json_object_foreach(doc, key, v)
	{
		if (strcmp(key, "alwaysAllow") == 0 || strcmp(key, "alwaysDeny") == 0) {
			snprintf(err, sizeof(err),
				 "%s is the operator's (the policy file and flags); the API sets "
				 "defaultAction and rules",
				 key);
			goto refused;
		}
		if (strcmp(key, "defaultAction") != 0 && strcmp(key, "rules") != 0 &&
		    strcmp(key, "egress") != 0) {
			snprintf(err, sizeof(err), "unknown field \"%s\"", key);
			goto refused;
		}
	}
	if (json_object_get(doc, "rules") && json_object_get(doc, "egress")) {
		snprintf(err, sizeof(err), "rules and egress are the same list; give one");
		goto refused;
	}
	if (patch && rules_of(doc) && !json_is_array(rules_of(doc))) {
		snprintf(err, sizeof(err), "rules: must be a list of {action, target}");
		goto refused;
	}
	return doc;
refused:
	e->api_refused++;
	json_decref(doc);
	sbx_http_respond_error(req, 422, err);
	return NULL;
}

static void apply(struct egress *e, struct sbx_http_req *req, json_t *api)
{
	char err[512];
	json_t *file = egress_file_doc(e);
	int rc;

	if (!file) {
		json_decref(api);
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	if ((rc = egress_set_policy(e, file, api, err, sizeof(err)))) {
		e->api_refused++;
		sbx_log_error("policy refused; the previous one stays", SBX_LS("source", "api"),
			      SBX_LS("method", sbx_http_method(req)),
			      SBX_LS("peer", sbx_http_peer(req)), SBX_LS("error", err),
			      SBX_LI("generation", (long long)e->generation));
		sbx_http_respond_error(req, rc == -EINVAL ? 422 : 503, err);
		return;
	}
	e->api_changes++;
	sbx_log_info("policy applied", SBX_LS("source", e->api_text ? "api" : "file"),
		     SBX_LS("method", sbx_http_method(req)), SBX_LS("peer", sbx_http_peer(req)),
		     SBX_LI("generation", (long long)e->generation),
		     SBX_LI("rules", (long long)egress_policy_count(e->policy)));
	respond_view(e, req, 200);
}

static void get_policy(struct sbx_http_req *req, void *arg)
{
	respond_view(arg, req, 200);
}

static void put_policy(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;
	json_t *doc;

	if (precondition(e, req) && (doc = body_doc(e, req, false)))
		apply(e, req, doc);
}

/* A rule's target as compared for replacement: case and trailing dot aside. */
static bool same_target(const json_t *a, const json_t *b)
{
	const char *x = json_string_value(json_object_get(a, "target"));
	const char *y = json_string_value(json_object_get(b, "target"));
	size_t lx, ly;

	if (!x || !y)
		return false;
	lx = strlen(x) - (*x && x[strlen(x) - 1] == '.');
	ly = strlen(y) - (*y && y[strlen(y) - 1] == '.');
	return lx == ly && strncasecmp(x, y, lx) == 0;
}

static void patch_policy(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;
	json_t *patch, *cur, *doc, *rules, *r, *old;
	size_t i, j;

	if (!precondition(e, req) || !(patch = body_doc(e, req, true)))
		return;
	if (!(cur = e->api_text ? egress_api_doc(e) : egress_file_doc(e))) {
		json_decref(patch);
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	rules = json_array();
	json_array_foreach(rules_of(patch), i, r) json_array_append(rules, r);
	json_array_foreach(rules_of(cur), i, old)
	{
		bool replaced = false;

		json_array_foreach(rules_of(patch), j, r) replaced =
			replaced || same_target(old, r);
		if (!replaced)
			json_array_append(rules, old);
	}
	doc = json_pack("{s:O*, s:o}", "defaultAction",
			json_object_get(patch, "defaultAction")
				?: json_object_get(cur, "defaultAction"),
			"rules", rules);
	json_decref(patch);
	json_decref(cur);
	if (!doc) {
		sbx_http_respond_error(req, 500, "out of memory");
		return;
	}
	apply(e, req, doc);
}

static void delete_policy(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;

	if (!precondition(e, req))
		return;
	if (!e->api_text) {
		respond_view(e, req, 200);
		return;
	}
	apply(e, req, NULL);
}

/* A query parameter into out: 1 when given, 0 when not, -1 after answering
 * 400 for one too long to be valid. */
static int param(struct sbx_http_req *req, const char *name, char *out, size_t size)
{
	int rc = sbx_http_query(req, name, out, size);

	if (rc == -ENOENT)
		return 0;
	if (rc < 0) {
		char why[64];

		snprintf(why, sizeof(why), "%s: too long", name);
		sbx_http_respond_error(req, 400, why);
		return -1;
	}
	return 1;
}

static void get_decisions(struct sbx_http_req *req, void *arg)
{
	struct egress *e = arg;
	struct audit_query q = { .denied = -1 };
	char after[32], limit[16], name[300], verdict[16], *end;
	int has_after, has_limit, has_name, has_verdict;
	struct sbx_buf b;

	if ((has_after = param(req, "after", after, sizeof(after))) < 0 ||
	    (has_limit = param(req, "limit", limit, sizeof(limit))) < 0 ||
	    (has_name = param(req, "name", name, sizeof(name))) < 0 ||
	    (has_verdict = param(req, "verdict", verdict, sizeof(verdict))) < 0)
		return;
	if (has_after) {
		errno = 0;
		q.after = strtoull(after, &end, 10);
		if (errno || end == after || *end || *after == '-') {
			sbx_http_respond_error(req, 400, "after: the seq of a decision");
			return;
		}
	}
	if (has_limit) {
		long n = strtol(limit, &end, 10);

		if (end == limit || *end || n < 1 || n > 100000) {
			sbx_http_respond_error(req, 400, "limit: 1 to 100000");
			return;
		}
		q.limit = (size_t)n;
	}
	if (has_name) {
		if (!audit_pattern_valid(name)) {
			sbx_http_respond_error(req, 400, "name: a name, *.name or *");
			return;
		}
		q.pattern = name;
	}
	if (has_verdict) {
		if (strcmp(verdict, "allow") != 0 && strcmp(verdict, "deny") != 0) {
			sbx_http_respond_error(req, 400, "verdict: allow or deny");
			return;
		}
		q.denied = strcmp(verdict, "deny") == 0;
	}
	sbx_buf_init(&b, 64u << 20);
	if (audit_query(&e->audit, &q, &b))
		sbx_http_respond_error(req, 500, "out of memory");
	else
		sbx_http_respond(req, 200, "application/json", b.data, b.len);
	sbx_buf_release(&b);
}

int admin_start(struct egress *e, const char *addr, char *err, size_t err_size)
{
	/* The server keeps the table: static, with the state set here. */
	static struct sbx_http_route routes[] = {
		{ .method = "GET", .pattern = "/policy", .fn = get_policy },
		{ .method = "PUT",
		  .pattern = "/policy",
		  .fn = put_policy,
		  .max_body_bytes = POLICY_MAX_BYTES },
		{ .method = "PATCH",
		  .pattern = "/policy",
		  .fn = patch_policy,
		  .max_body_bytes = POLICY_MAX_BYTES },
		{ .method = "DELETE", .pattern = "/policy", .fn = delete_policy },
		{ .method = "GET", .pattern = "/decisions", .fn = get_decisions },
	};
	struct sbx_http_server_opts so = { .server_name = "sbx-egress",
					   .max_connections = 64,
					   .authorize = authorize,
					   .authorize_arg = e };
	int rc;

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		routes[i].arg = e;
	if (e->http_flags) {
		/* The admin API keeps its own, smaller, connection limit. */
		sbx_http_flags_apply(e->http_flags, &so);
		so.max_connections = 64;
	}
	if ((rc = sbx_http_server_new(e->loop, &so, routes, sizeof(routes) / sizeof(routes[0]),
				      &e->admin))) {
		snprintf(err, err_size, "admin API: %s", strerror(-rc));
		return rc;
	}
	if ((rc = sbx_http_server_listen(e->admin, addr))) {
		snprintf(err, err_size, "admin API: cannot listen on %s: %s", addr,
			 uv_strerror(rc));
		return rc;
	}
	return 0;
}
