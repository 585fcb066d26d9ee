/* Which sandbox and port a request names, in one of three forms:
 *
 *   Host: <id>-<port>.<base-domain>            (with --base-domain)
 *   OpenSandbox-Ingress-To: <id>-<port>
 *   /sandboxes/<id>/port/<port>/<rest>
 *
 * tried in that order: a client that picks the host or header form means it
 * for the whole request, so a path of its app that happens to start with
 * /sandboxes/ is the app's. Only the path form strips a prefix.
 *
 * Parsing is strict where it decides where a request goes (ids are DNS
 * labels, ports plain decimal 1-65535, the prefix's segments exact) and the
 * path passed on may not hold what backends resolve differently (dot
 * segments, raw or percent-encoded; backslashes; an encoded NUL). What is
 * refused is refused with a reason, never routed elsewhere.
 */
#ifndef SBX_INGRESS_ROUTE_H
#define SBX_INGRESS_ROUTE_H

#include <stddef.h>

#define INGRESS_ID_MAX 63

enum ingress_form { INGRESS_FORM_HOST, INGRESS_FORM_HEADER, INGRESS_FORM_PATH };

struct ingress_target {
	enum ingress_form form;
	char id[INGRESS_ID_MAX + 1];
	unsigned port;
	/* The path to ask the pod for: the request's path, or what follows
	 * the prefix ("" stands for "/"). Points into the request's path. */
	const char *rest;
	/* The path form's prefix, "/sandboxes/<id>/port/<port>": its length
	 * in the request's path (0 for the other forms). */
	size_t prefix_len;
};

#define INGRESS_TO_HEADER "OpenSandbox-Ingress-To"

/* 0 with *out filled; -ENOENT when the request names no sandbox (none of
 * the forms applies: the ingress's own paths); -EINVAL when a form applies
 * but is malformed, or the path may not be passed on, with *why set.
 * host and to_header may be NULL; base_domain NULL or "" turns the host
 * form off. path is the raw path (no query), as the client sent it. */
int ingress_route(const char *path, const char *host, const char *to_header,
		  const char *base_domain, struct ingress_target *out, const char **why);

/* Whether s is a sandbox id: a DNS label (RFC 1123: lower-case letters,
 * digits and '-', neither first nor last, 1 to 63 of them). */
int ingress_valid_id(const char *s, size_t len);

const char *ingress_form_name(enum ingress_form f);

#endif
