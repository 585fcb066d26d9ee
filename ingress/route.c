/* Which sandbox and port a request names (see route.h). */
#include "route.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define PREFIX "/sandboxes/"

const char *ingress_form_name(enum ingress_form f)
{
	switch (f) {
	case INGRESS_FORM_HOST:
		return "host";
	case INGRESS_FORM_HEADER:
		return "header";
	case INGRESS_FORM_PATH:
		return "path";
	}
	return "?";
}

int ingress_valid_id(const char *s, size_t len)
{
	if (len == 0 || len > INGRESS_ID_MAX || s[0] == '-' || s[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 1;
}

/* A port in plain decimal (no sign, no leading zero): 1-65535, or 0. */
static unsigned parse_port(const char *s, size_t len)
{
	unsigned v = 0;

	if (len == 0 || len > 5 || s[0] == '0')
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= 65535 ? v : 0;
}

/* "<id>-<port>", split at the last '-' (ids hold dashes, ports do not). */
static int parse_id_port(const char *s, size_t len, struct ingress_target *out)
{
	const char *dash = NULL;

	for (size_t i = len; i > 0; i--) {
		if (s[i - 1] == '-') {
			dash = s + i - 1;
			break;
		}
	}
	if (!dash || !ingress_valid_id(s, (size_t)(dash - s)))
		return -EINVAL;
	out->port = parse_port(dash + 1, len - (size_t)(dash - s) - 1);
	if (!out->port)
		return -EINVAL;
	memcpy(out->id, s, (size_t)(dash - s));
	out->id[dash - s] = '\0';
	return 0;
}

/* Whether a segment is "." or ".." in any spelling: percent-encoded, or
 * with path parameters after a ';' (which some servers drop). 0 none, '.'
 * for one dot, 'd' for two. */
static int dots(const char *s, size_t len)
{
	size_t n = 0;
	const char *semi = memchr(s, ';', len);

	if (semi)
		len = (size_t)(semi - s);

	for (size_t i = 0; i < len; n++) {
		if (s[i] == '.')
			i++;
		else if (len - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
			 (s[i + 2] == 'e' || s[i + 2] == 'E'))
			i += 3;
		else
			return 0;
	}
	return n == 1 ? '.' : n == 2 ? 'd' : 0;
}

/* The path passed on must mean the same to every backend. */
static const char *check_path(const char *p)
{
	const char *seg = p;

	for (const char *c = p;; c++) {
		if (*c == '/' || *c == '\0') {
			if (c > seg && dots(seg, (size_t)(c - seg)))
				return "the path has a '.' or '..' segment";
			if (!*c)
				return NULL;
			seg = c + 1;
		} else if (*c == '\\') {
			return "the path has a backslash";
		} else if (*c == '%' && c[1] == '0' && c[2] == '0') {
			return "the path has an encoded NUL";
		}
	}
}

/* The length of the segment at s (up to '/' or the end). */
static size_t seg_len(const char *s)
{
	return strcspn(s, "/");
}

static int route_path(const char *path, struct ingress_target *out, const char **why)
{
	const char *p = path + strlen(PREFIX), *id = p, *port;
	size_t id_len = seg_len(id), port_len;

	*why = "expected /sandboxes/<id>/port/<port>/...";
	if (id[id_len] != '/' || strncmp(id + id_len, "/port/", 6) != 0)
		return -EINVAL;
	if (!ingress_valid_id(id, id_len)) {
		*why = "not a sandbox id (a DNS label: a-z, 0-9 and '-')";
		return -EINVAL;
	}
	port = id + id_len + 6;
	port_len = seg_len(port);
	out->port = parse_port(port, port_len);
	if (!out->port) {
		*why = "not a port (1-65535, in decimal)";
		return -EINVAL;
	}
	memcpy(out->id, id, id_len);
	out->id[id_len] = '\0';
	out->form = INGRESS_FORM_PATH;
	out->prefix_len = (size_t)(port + port_len - path);
	out->rest = path + out->prefix_len;
	return 0;
}

/* The host without a port, lower-cased into buf; NULL if it does not fit. */
static const char *bare_host(const char *host, char *buf, size_t size)
{
	size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");

	if (n >= size)
		return NULL;
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(host[i] >= 'A' && host[i] <= 'Z' ? host[i] - 'A' + 'a' : host[i]);
	buf[n] = '\0';
	if (n && buf[n - 1] == '.')
		buf[n - 1] = '\0'; /* the root's dot: the same name */
	return buf;
}

/* 1 when host is <label>.<base> (label set), 0 otherwise. */
static int under(const char *host, const char *base, const char **label, size_t *label_len)
{
	size_t hl = strlen(host), bl = strlen(base);

	while (bl && base[bl - 1] == '.')
		bl--;
	if (hl < bl + 2 || host[hl - bl - 1] != '.' || strncasecmp(host + hl - bl, base, bl) != 0)
		return 0;
	*label = host;
	*label_len = hl - bl - 1;
	return 1;
}

int ingress_route(const char *path, const char *host, const char *to_header,
		  const char *base_domain, struct ingress_target *out, const char **why)
{
	char buf[256];
	const char *label, *h;
	size_t label_len;
	int rc = -ENOENT;

	memset(out, 0, sizeof(*out));
	*why = NULL;
	if (base_domain && *base_domain && host && (h = bare_host(host, buf, sizeof(buf))) &&
	    under(h, base_domain, &label, &label_len)) {
		out->form = INGRESS_FORM_HOST;
		out->rest = path;
		rc = memchr(label, '.', label_len) ? -EINVAL : parse_id_port(label, label_len, out);
		if (rc)
			*why = "the host must be <id>-<port>.<base domain>";
	} else if (to_header) {
		out->form = INGRESS_FORM_HEADER;
		out->rest = path;
		rc = parse_id_port(to_header, strlen(to_header), out);
		if (rc)
			*why = INGRESS_TO_HEADER " must be <id>-<port>";
	} else if (!strncmp(path, PREFIX, strlen(PREFIX))) {
		rc = route_path(path, out, why);
	}
	if (!rc && (*why = check_path(out->rest)))
		rc = -EINVAL;
	return rc;
}
