/* The forward proxy and /v1/proxy (see fwdproxy.h). */
#define _GNU_SOURCE /* FNM_CASEFOLD */
#include "fwdproxy.h"

#include "api.h"
#include "files.h"
#include "ptyspawn.h"
#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/config.h"
#include "sbx/http.h"
#include "sbx/log.h"
#include "sbx/metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <http_parser.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_MAPPINGS	 256
#define MAX_EXCLUDES	 256
#define MAX_PATTERN	 512
#define PROBE_TIMEOUT_MS 3000
#define AUTH_CMD_TIMEOUT 10000
#define AUTH_CMD_MAX_OUT 4096
#define MAX_UPLOAD_BYTES (1ull << 40)

enum route { ROUTE_MAPPING, ROUTE_BYPASS, ROUTE_UPSTREAM, ROUTE_DIRECT };
static const char *const route_names[] = { "mapping", "bypass", "upstream", "direct" };

/* ---- names, ports and patterns --------------------------------------------------------- */

static bool is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* A host name (letters, digits, '.', '-', '_'), with '*' where wildcard,
 * or an IP address; lowercased in place. */
static bool host_ok(char *h, bool wildcard)
{
	size_t n = strlen(h);

	if (!n || n > 253)
		return false;
	if (strchr(h, ':'))
		return is_ip(h); /* IPv6, brackets already taken off */
	for (char *p = h; *p; p++) {
		*p = (char)tolower((unsigned char)*p);
		if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' ||
		      (wildcard && *p == '*')))
			return false;
	}
	return true;
}

/* "1" to "65535" exactly; -1 otherwise. */
static int port_of(const char *s, size_t len)
{
	long v = 0;

	if (!len || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v >= 1 && v <= 65535 ? (int)v : -1;
}

/* "host", "host:port", "[v6]", "[v6]:port" into host (no brackets) and
 * port (default_port if none; -1 makes it required). 0 or -1. */
static int split_hostport(const char *s, size_t len, char *host, size_t hsize, int *port,
			  int default_port, bool wildcard)
{
	const char *end = s + len, *hs = s, *he, *colon = NULL;
	bool bracketed = len && s[0] == '[';

	if (bracketed) {
		if (!(he = memchr(s, ']', len)))
			return -1;
		hs = s + 1;
		if (he + 1 < end) {
			if (he[1] != ':')
				return -1;
			colon = he + 1;
		}
	} else {
		colon = memchr(s, ':', len);
		he = colon ? colon : end;
	}
	if ((size_t)(he - hs) >= hsize)
		return -1;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if (colon) {
		if ((*port = port_of(colon + 1, (size_t)(end - colon - 1))) < 0)
			return -1;
	} else {
		if (default_port < 0)
			return -1;
		*port = default_port;
	}
	if (bracketed != (strchr(host, ':') != NULL))
		return -1; /* brackets are for IPv6 addresses, and those need them */
	return host_ok(host, wildcard) ? 0 : -1;
}

/* Characters a path may carry here: visible ASCII but quotes and
 * backslashes (it ends up in JSON and in request lines). */
static bool path_ok(const char *p)
{
	if (*p != '/')
		return false;
	for (; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\')
			return false;
	return true;
}

static void mapping_free(struct fwd_mapping *m)
{
	sbx_free(m->source);
	sbx_free(m->target);
	sbx_free(m->host);
	sbx_free(m->path);
	sbx_free(m->to_host);
	sbx_free(m->to_path);
	memset(m, 0, sizeof(*m));
}

/* source: [http(s)://]host[:port][/path[*]]; target: [http://][host:]port[/path]. */
static int mapping_parse(const char *source, const char *target, struct fwd_mapping *m,
			 const char **why_src, const char **why_dst)
{
	char host[256];
	const char *s = source, *t = target, *sep, *slash;

	memset(m, 0, sizeof(*m));
	*why_src = *why_dst = NULL;
	if (!*source || strlen(source) > MAX_PATTERN) {
		*why_src = "Source should be 1 to 512 characters";
		return -1;
	}
	if ((sep = strstr(s, "://"))) {
		if ((size_t)(sep - s) == 4 && !strncasecmp(s, "http", 4))
			strcpy(m->scheme, "http");
		else if ((size_t)(sep - s) == 5 && !strncasecmp(s, "https", 5))
			strcpy(m->scheme, "https");
		else {
			*why_src = "The source's protocol should be http:// or https://";
			return -1;
		}
		s = sep + 3;
	}
	slash = strchr(s, '/');
	if (split_hostport(s, slash ? (size_t)(slash - s) : strlen(s), host, sizeof(host), &m->port,
			   0, true)) {
		*why_src = "The source should be [protocol://]host[:port][/path]: a host name "
			   "(* for any characters), a port from 1 to 65535";
		return -1;
	}
	m->host = sbx_strdup(host);
	if (slash) {
		size_t n = strlen(slash);

		if (!path_ok(slash) || strchr(slash, '?') ||
		    (strchr(slash, '*') && strchr(slash, '*') != slash + n - 1)) {
			*why_src =
				"The source's path should be /visible/characters, with * only at "
				"its end";
			goto fail;
		}
		m->path = sbx_strndup(slash, slash[n - 1] == '*' ? n - 1 : n);
		if (!strcmp(m->scheme, "https") && strcmp(m->path, "/")) {
			*why_src = "An https source cannot have a path: the proxy sees only the "
				   "host of a TLS connection";
			goto fail;
		}
	} else {
		m->path = sbx_strdup("/");
	}
	/* The target. */
	if (!*target || strlen(target) > MAX_PATTERN) {
		*why_dst = "Target should be 1 to 512 characters";
		goto fail;
	}
	if (!strncasecmp(t, "http://", 7))
		t += 7;
	slash = strchr(t, '/');
	{
		size_t len = slash ? (size_t)(slash - t) : strlen(t);
		char hp[300];

		/* ":3000" and "3000" are ports on 127.0.0.1 */
		if (len && len < sizeof(hp) && (t[0] == ':' || port_of(t, len) > 0)) {
			snprintf(hp, sizeof(hp), "127.0.0.1%s%.*s", t[0] == ':' ? "" : ":",
				 (int)len, t);
		} else if (len < sizeof(hp)) {
			memcpy(hp, t, len);
			hp[len] = '\0';
		} else {
			hp[0] = '\0';
		}
		if (split_hostport(hp, strlen(hp), host, sizeof(host), &m->to_port, -1, false)) {
			*why_dst = "The target should be [host:]port[/path] (the host defaults to "
				   "127.0.0.1)";
			goto fail;
		}
	}
	m->to_host = sbx_strdup(host);
	if (slash) {
		if (!path_ok(slash) || strchr(slash, '?') || strchr(slash, '*')) {
			*why_dst = "The target's path should be /visible/characters";
			goto fail;
		}
		m->to_path = sbx_strdup(slash);
	}
	m->source = sbx_strdup(source);
	m->target = sbx_strdup(target);
	if (!m->source || !m->target || !m->host || !m->path || !m->to_host ||
	    (slash && !m->to_path)) {
		*why_dst = "out of memory";
		goto fail;
	}
	return 0;
fail:
	mapping_free(m);
	return -1;
}

/* An exclude: ".domain" (it and its subdomains), a host pattern (* for any
 * characters), an IP address, or a CIDR block (v4 or v6). */
static bool exclude_ok(const char *p)
{
	char host[256];
	const char *slash = strchr(p, '/');

	if (!*p || strlen(p) > 255)
		return false;
	if (slash) {
		unsigned char buf[sizeof(struct in6_addr)];
		int bits = port_of(slash + 1, strlen(slash + 1));
		size_t n = (size_t)(slash - p);
		bool v6;

		if (n >= sizeof(host) || (bits < 0 && strcmp(slash + 1, "0")))
			return false;
		memcpy(host, p, n);
		host[n] = '\0';
		v6 = strchr(host, ':') != NULL;
		return inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) == 1 &&
		       (bits < 0 ? 0 : bits) <= (v6 ? 128 : 32);
	}
	snprintf(host, sizeof(host), "%s", p[0] == '.' ? p + 1 : p);
	return host_ok(host, true);
}

static bool in_cidr(const char *host, const char *cidr)
{
	unsigned char a[16], b[16];
	char net[64];
	const char *slash = strchr(cidr, '/');
	size_t n = (size_t)(slash - cidr);
	int bits = atoi(slash + 1), family;

	if (n >= sizeof(net))
		return false;
	memcpy(net, cidr, n);
	net[n] = '\0';
	family = strchr(net, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(family, host, a) != 1 || inet_pton(family, net, b) != 1)
		return false;
	for (int i = 0; bits > 0; i++, bits -= 8) {
		unsigned mask = bits >= 8 ? 0xffu : (0xffu << (8 - bits)) & 0xffu;

		if ((a[i] & mask) != (b[i] & mask))
			return false;
	}
	return true;
}

static bool excluded(const struct fwdproxy *f, const char *host)
{
	size_t hl = strlen(host);

	for (size_t i = 0; i < f->n_excludes; i++) {
		const char *p = f->excludes[i];

		if (strchr(p, '/')) {
			if (in_cidr(host, p))
				return true;
		} else if (p[0] == '.') {
			size_t pl = strlen(p);

			if (!strcasecmp(host, p + 1) || (hl > pl && !strcasecmp(host + hl - pl, p)))
				return true;
		} else if (!fnmatch(p, host, FNM_CASEFOLD)) {
			return true;
		}
	}
	return false;
}

/* Appends a valid pattern, lowercased: 0, -E2BIG past MAX_EXCLUDES, or
 * -ENOMEM. */
static int exclude_push(struct fwdproxy *f, const char *pattern)
{
	char **grown, *p;

	if (f->n_excludes == MAX_EXCLUDES)
		return -E2BIG;
	if (!(grown = sbx_realloc(f->excludes, (f->n_excludes + 1) * sizeof(*grown))))
		return -ENOMEM;
	f->excludes = grown;
	if (!(p = sbx_strdup(pattern)))
		return -ENOMEM;
	for (char *c = p; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	f->excludes[f->n_excludes++] = p;
	return 0;
}

/* The best mapping for a request: an exact host before a pattern, then the
 * longest path. connect: a CONNECT (no path; https or either scheme). */
static const struct fwd_mapping *find_mapping(const struct fwdproxy *f, const char *host, int port,
					      const char *path, bool connect)
{
	const struct fwd_mapping *best = NULL;
	size_t best_score = 0;

	for (size_t i = 0; i < f->n_maps; i++) {
		const struct fwd_mapping *m = &f->maps[i];
		size_t score;

		if ((connect && !strcmp(m->scheme, "http")) ||
		    (!connect && !strcmp(m->scheme, "https")) || (m->port && m->port != port) ||
		    fnmatch(m->host, host, FNM_CASEFOLD))
			continue;
		if (connect ? strcmp(m->path, "/") != 0 : strncmp(path, m->path, strlen(m->path)))
			continue;
		score = (strchr(m->host, '*') ? 1 : 1u << 16) + strlen(m->path);
		if (score > best_score) {
			best = m;
			best_score = score;
		}
	}
	return best;
}

/* The path a mapping sends: the target's path in place of the matched
 * source path, or the request's own. */
static char *mapped_path(const struct fwd_mapping *m, const char *path, const char *query)
{
	struct sbx_buf b;
	const char *rest = path + strlen(m->path);

	sbx_buf_init(&b, 64 << 10);
	if (m->to_path) {
		size_t tl = strlen(m->to_path);

		if (sbx_buf_append_str(&b, m->to_path) ||
		    sbx_buf_append_str(
			    &b, tl && m->to_path[tl - 1] == '/' && *rest == '/' ? rest + 1 : rest))
			goto fail;
	} else if (sbx_buf_append_str(&b, path)) {
		goto fail;
	}
	if (query && *query && (sbx_buf_append_str(&b, "?") || sbx_buf_append_str(&b, query)))
		goto fail;
	if (sbx_buf_append(&b, "", 1))
		goto fail;
	return b.data;
fail:
	sbx_buf_release(&b);
	return NULL;
}

/* ---- the upstream proxy --------------------------------------------------------------- */

static void upstream_free(struct fwd_upstream *u)
{
	sbx_free(u->server);
	sbx_free(u->auth_cmd);
	sbx_free(u->host);
	sbx_free(u->user);
	sbx_free(u->pass);
	sbx_free(u->authorization);
	memset(u, 0, sizeof(*u));
}

static int upstream_set_credentials(struct fwd_upstream *u, const char *user, size_t ul,
				    const char *pass)
{
	struct sbx_buf b;
	char *enc = NULL;
	size_t enc_len;

	sbx_free(u->user);
	sbx_free(u->pass);
	sbx_free(u->authorization);
	u->user = u->pass = u->authorization = NULL;
	if (!user)
		return 0;
	u->user = sbx_strndup(user, ul);
	u->pass = sbx_strdup(pass);
	sbx_buf_init(&b, 4096);
	if (!u->user || !u->pass || sbx_buf_append(&b, user, ul) || sbx_buf_append_str(&b, ":") ||
	    sbx_buf_append_str(&b, pass) || sbx_base64_encode(b.data, b.len, &enc, &enc_len)) {
		sbx_buf_release(&b);
		return -ENOMEM;
	}
	sbx_buf_release(&b);
	u->authorization = sbx_malloc(enc_len + 7);
	if (u->authorization)
		snprintf(u->authorization, enc_len + 7, "Basic %s", enc);
	sbx_free(enc);
	return u->authorization ? 0 : -ENOMEM;
}

/* "[http://][user:pass@]host:port" */
static int upstream_parse(const char *server, const char *auth_cmd, struct fwd_upstream *u)
{
	const char *s = server, *at;
	char host[256];

	memset(u, 0, sizeof(*u));
	if (!*server || strlen(server) > MAX_PATTERN || strpbrk(server, " \t\r\n/"))
		if (strncasecmp(server, "http://", 7) || strpbrk(server + 7, " \t\r\n/"))
			return -1;
	if (!strncasecmp(s, "http://", 7))
		s += 7;
	at = strrchr(s, '@');
	if (split_hostport(at ? at + 1 : s, strlen(at ? at + 1 : s), host, sizeof(host), &u->port,
			   -1, false))
		return -1;
	u->server = sbx_strdup(server);
	u->host = sbx_strdup(host);
	u->auth_cmd = auth_cmd && *auth_cmd ? sbx_strdup(auth_cmd) : NULL;
	if (!u->server || !u->host || (auth_cmd && *auth_cmd && !u->auth_cmd))
		goto fail;
	if (at) {
		const char *colon = memchr(s, ':', (size_t)(at - s));
		char pass[512];

		if (!colon || colon == s || (size_t)(at - colon) > sizeof(pass))
			goto fail;
		snprintf(pass, sizeof(pass), "%.*s", (int)(at - colon - 1), colon + 1);
		if (upstream_set_credentials(u, s, (size_t)(colon - s), pass))
			goto fail;
	}
	return 0;
fail:
	upstream_free(u);
	return -1;
}

static json_t *upstream_json(const struct fwd_upstream *u)
{
	char addr[300];

	if (!u->server)
		return json_null();
	snprintf(addr, sizeof(addr), strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host, u->port);
	return json_pack("{s:s, s:s?, s:s?}", "addr", addr, "username", u->user, "password",
			 u->pass);
}

/* A handled failure with its HTTP status, in AIO's envelope. */
static void respond_failure(struct sbx_http_req *req, int status, const char *message)
{
	json_t *env = api_envelope(false, message, NULL);

	if (!env)
		sbx_http_respond_error(req, 503, "out of memory");
	else
		sbx_http_respond_json(req, status, env);
	json_decref(env);
}

/* ---- saving -------------------------------------------------------------------------- */

struct fwd_waiter {
	struct fwd_waiter *next;
	struct fwdproxy *f;
	struct sbx_http_req *req;
	uint64_t version;
	json_t *data;
	char message[96];
};

struct fwd_save {
	uv_work_t work;
	struct fwdproxy *f;
	char *path, *text;
	uint64_t version;
	int err;
};

static json_t *state_json(const struct fwdproxy *f)
{
	json_t *maps = json_array(), *ex = json_array(), *st;

	for (size_t i = 0; i < f->n_maps; i++)
		json_array_append_new(maps, json_pack("{s:s, s:s}", "source", f->maps[i].source,
						      "target", f->maps[i].target));
	for (size_t i = 0; i < f->n_excludes; i++)
		json_array_append_new(ex, json_string(f->excludes[i]));
	st = json_pack("{s:i, s:o, s:o}", "version", 1, "mappings", maps, "excludes", ex);
	if (st && f->up.server)
		json_object_set_new(st, "upstream",
				    json_pack("{s:s, s:s?}", "server", f->up.server, "auth_cmd",
					      f->up.auth_cmd));
	return st;
}

static void save_work(uv_work_t *w)
{
	struct fwd_save *s = w->data;
	char tmp[PATH_MAX + 8];
	size_t len = strlen(s->text);
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
	if ((s->err = files_make_parents_mode(s->path, 0700)))
		return;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		s->err = -errno;
		return;
	}
	if (write(fd, s->text, len) != (ssize_t)len || fsync(fd))
		s->err = -(errno ? errno : EIO);
	close(fd);
	if (!s->err && rename(tmp, s->path))
		s->err = -errno;
	if (s->err)
		unlink(tmp);
}

static void answer_waiters(struct fwdproxy *f, uint64_t upto, const char *error)
{
	struct fwd_waiter **pp = &f->waiters;

	while (*pp) {
		struct fwd_waiter *w = *pp;

		if (w->version > upto) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		sbx_http_on_abort(w->req, NULL, NULL);
		if (error) {
			char msg[400];

			snprintf(msg, sizeof(msg), "the change is in effect but was not saved: %s",
				 error);
			respond_failure(w->req, 500, msg);
			json_decref(w->data);
		} else {
			api_ok(w->req, w->message, w->data);
		}
		sbx_free(w);
	}
}

static void schedule_save(struct fwdproxy *f);

static void save_done(uv_work_t *w, int status)
{
	struct fwd_save *s = w->data;
	struct fwdproxy *f = s->f;

	f->saving = false;
	if (status == UV_ECANCELED)
		s->err = -ECANCELED;
	if (s->err) {
		snprintf(f->save_error, sizeof(f->save_error), "cannot write %s: %s", s->path,
			 strerror(-s->err));
		sbx_log_error("cannot save the proxy configuration", SBX_LS("path", s->path),
			      SBX_LERR(s->err));
		answer_waiters(f, s->version, f->save_error);
	} else {
		f->save_error[0] = '\0';
		f->saved_version = s->version;
		answer_waiters(f, s->version, NULL);
	}
	sbx_free(s->path);
	free(s->text);
	sbx_free(s);
	if (f->version > f->saved_version && !f->save_error[0])
		schedule_save(f);
}

static void schedule_save(struct fwdproxy *f)
{
	struct fwd_save *s;
	json_t *st;

	if (f->saving)
		return; /* save_done saves again */
	s = sbx_calloc(1, sizeof(*s));
	st = state_json(f);
	if (!s || !st || !(s->path = sbx_strdup(f->state_path)) ||
	    !(s->text = json_dumps(st, JSON_INDENT(2)))) {
		json_decref(st);
		if (s)
			sbx_free(s->path);
		sbx_free(s);
		snprintf(f->save_error, sizeof(f->save_error), "out of memory");
		answer_waiters(f, f->version, f->save_error);
		return;
	}
	json_decref(st);
	s->f = f;
	s->version = f->version;
	s->work.data = s;
	f->saving = true;
	if (uv_queue_work(f->loop, &s->work, save_work, save_done)) {
		f->saving = false;
		sbx_free(s->path);
		free(s->text);
		sbx_free(s);
		snprintf(f->save_error, sizeof(f->save_error), "cannot queue the write");
		answer_waiters(f, f->version, f->save_error);
	}
}

static void waiter_gone(struct sbx_http_req *req, void *arg)
{
	struct fwd_waiter *w = arg, **pp = &w->f->waiters;

	(void)req;
	while (*pp && *pp != w)
		pp = &(*pp)->next;
	if (*pp)
		*pp = w->next;
	json_decref(w->data);
	sbx_free(w);
}

/* The configuration changed: the answer (message, data stolen) goes once
 * the change is on disk. */
static void commit(struct fwdproxy *f, struct sbx_http_req *req, const char *message, json_t *data)
{
	struct fwd_waiter *w = sbx_calloc(1, sizeof(*w));

	f->version++;
	if (!w) {
		json_decref(data);
		sbx_http_respond_error(req, 503, "out of memory");
		schedule_save(f);
		return;
	}
	w->f = f;
	w->req = req;
	w->version = f->version;
	w->data = data;
	snprintf(w->message, sizeof(w->message), "%s", message);
	w->next = f->waiters;
	f->waiters = w;
	sbx_http_on_abort(req, waiter_gone, w);
	schedule_save(f);
}

/* ---- the PAC file ------------------------------------------------------------------------ */

static char *pac_text(const struct fwdproxy *f)
{
	struct sbx_buf b;
	char proxy[96];
	int rc;

	snprintf(proxy, sizeof(proxy), "PROXY %s", f->http ? f->addr : "127.0.0.1:0");
	sbx_buf_init(&b, 1 << 20);
	rc = sbx_buf_printf(&b,
			    "// sbx-agent: mapped hosts go through the sandbox's forward proxy,\n"
			    "// excluded ones go direct, the rest %s.\n"
			    "function FindProxyForURL(url, host) {\n"
			    "\thost = host.toLowerCase();\n",
			    f->up.server ? "through the proxy to the upstream proxy" : "direct");
	for (size_t i = 0; !rc && i < f->n_maps; i++)
		rc = sbx_buf_printf(&b, "\tif (shExpMatch(host, \"%s\")) return \"%s\";\n",
				    f->maps[i].host, proxy);
	for (size_t i = 0; !rc && i < f->n_excludes; i++) {
		const char *p = f->excludes[i], *slash = strchr(p, '/');

		if (slash && !strchr(p, ':')) {
			struct in_addr mask = { htonl(
				atoi(slash + 1) ? ~0u << (32 - atoi(slash + 1)) : 0) };
			char m[INET_ADDRSTRLEN];

			inet_ntop(AF_INET, &mask, m, sizeof(m));
			rc = sbx_buf_printf(
				&b,
				"\tif (/^[0-9.]+$/.test(host) && isInNet(host, \"%.*s\", "
				"\"%s\")) return \"DIRECT\";\n",
				(int)(slash - p), p, m);
		} else if (slash) {
			continue; /* IPv6 blocks: PAC has no portable test; the proxy applies them
				   */
		} else if (p[0] == '.') {
			rc = sbx_buf_printf(
				&b,
				"\tif (host == \"%s\" || dnsDomainIs(host, \"%s\")) return "
				"\"DIRECT\";\n",
				p + 1, p);
		} else {
			rc = sbx_buf_printf(
				&b, "\tif (shExpMatch(host, \"%s\")) return \"DIRECT\";\n", p);
		}
	}
	if (!rc)
		rc = sbx_buf_printf(&b, "\treturn \"%s\";\n}\n",
				    f->up.server && f->http ? proxy : "DIRECT");
	if (rc || sbx_buf_append(&b, "", 1)) {
		sbx_buf_release(&b);
		return NULL;
	}
	return b.data;
}

void fwdproxy_handle_pac(struct sbx_http_req *req, void *arg)
{
	char *pac = pac_text(arg);

	if (!pac) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	sbx_http_add_header(req, "Cache-Control", "no-store");
	sbx_http_respond(req, 200, "application/x-ns-proxy-autoconfig", pac, strlen(pac));
	sbx_free(pac);
}

/* ---- resolving and probing ---------------------------------------------------------------- */

/* "ip:port" or "[ip6]:port" from a sockaddr. */
static void addr_text(const struct sockaddr *sa, int port, char *out, size_t size)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
		snprintf(out, size, "[%s]:%d", ip, port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
		snprintf(out, size, "%s:%d", ip, port);
	}
}

static void literal_text(const char *host, int port, char *out, size_t size)
{
	snprintf(out, size, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* ---- proxying ---------------------------------------------------------------------------- */

struct fwd_call {
	struct fwdproxy *f;
	struct sbx_http_req *req; /* NULL once the client has gone */
	uv_getaddrinfo_t gai;
	bool resolving;
	int port;	     /* to connect to */
	char *target;	     /* what to ask for (HTTP) */
	char *via_head;	     /* CONNECT to the upstream proxy */
	char *authorization; /* Proxy-Authorization to add */
	char authority[300]; /* the Host to send */
	char host[256];	     /* to resolve */
	char *via;	     /* the Via to send: the client's, then this proxy */
};

static void call_free(struct fwd_call *c)
{
	sbx_free(c->via);
	sbx_free(c->target);
	sbx_free(c->via_head);
	sbx_free(c->authorization);
	sbx_free(c);
}

static void call_send(struct fwd_call *c, const char *addr)
{
	struct sbx_http_req *req = c->req;
	const char *drop[] = { "Proxy-Authorization", NULL };
	const char *add[] = { "Via", c->via, "Proxy-Authorization", c->authorization, NULL };
	struct sbx_http_tunnel_opts o = {
		.upstream = addr,
		.path = c->target,
		.host = c->authority,
		.drop_headers = drop,
		.add_headers = c->authorization ? add : (const char *[]){ "Via", c->via, NULL },
	};

	sbx_http_on_abort(req, NULL, NULL);
	if (sbx_http_authority(req) && strcmp(sbx_http_method(req), "CONNECT") == 0)
		sbx_http_connect(req, addr, c->via_head);
	else
		sbx_http_forward(req, &o);
	call_free(c);
}

static void call_gone(struct sbx_http_req *req, void *arg)
{
	struct fwd_call *c = arg;

	(void)req;
	c->req = NULL; /* only while resolving: resolved() frees it */
	if (c->resolving)
		uv_cancel((uv_req_t *)&c->gai);
}

static void resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai)
{
	struct fwd_call *c = g->data;
	char addr[INET6_ADDRSTRLEN + 16], msg[400];

	c->resolving = false;
	if (!c->req) {
		uv_freeaddrinfo(ai);
		call_free(c);
		return;
	}
	if (status < 0 || !ai) {
		sbx_http_on_abort(c->req, NULL, NULL);
		snprintf(msg, sizeof(msg), "cannot resolve %s: %s", c->host, uv_strerror(status));
		c->f->refused++;
		sbx_http_respond_error(c->req, 502, msg);
		uv_freeaddrinfo(ai);
		call_free(c);
		return;
	}
	addr_text(ai->ai_addr, c->port, addr, sizeof(addr));
	uv_freeaddrinfo(ai);
	call_send(c, addr);
}

static void call_start(struct fwd_call *c)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	char addr[INET6_ADDRSTRLEN + 16], port[8];
	int rc;

	if (is_ip(c->host)) {
		literal_text(c->host, c->port, addr, sizeof(addr));
		call_send(c, addr);
		return;
	}
	snprintf(port, sizeof(port), "%d", c->port);
	c->gai.data = c;
	c->resolving = true;
	sbx_http_on_abort(c->req, call_gone, c);
	if ((rc = uv_getaddrinfo(c->f->loop, &c->gai, resolved, c->host, port, &hints))) {
		c->resolving = false;
		sbx_http_on_abort(c->req, NULL, NULL);
		sbx_http_respond_error(c->req, 502, "cannot start a name lookup");
		call_free(c);
	}
}

/* The forward proxy's route: absolute-form requests and CONNECT. */
static void proxy_request(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	const char *authority = sbx_http_authority(req);
	bool connect = strcmp(sbx_http_method(req), "CONNECT") == 0;
	const char *via = sbx_http_header(req, "Via");
	const struct fwd_mapping *m;
	struct fwd_call *c;
	char host[256], me[64];
	int port;
	enum route route;

	if (!authority ||
	    split_hostport(authority, strlen(authority), host, sizeof(host), &port,
			   connect ? -1 : 80, false) ||
	    (!connect && strcmp(sbx_http_scheme(req), "http") != 0)) {
		f->refused++;
		sbx_http_respond_error(req, 400,
				       connect ? "CONNECT takes host:port"
					       : "the target should be http://host[:port]/path "
						 "(https goes through CONNECT)");
		return;
	}
	/* Via names this proxy by its port: a request that carries it has
	 * come back (an upstream or a mapping that leads here). */
	snprintf(me, sizeof(me), "1.1 sbx-agent-%d", f->port);
	if (via && sbx_http_list_has(via, me)) {
		f->refused++;
		sbx_http_respond_error(req, 508,
				       "the request came back to this proxy: an upstream or a "
				       "mapping leads here");
		return;
	}
	if (!(c = sbx_calloc(1, sizeof(*c)))) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	c->f = f;
	c->req = req;
	if (via) {
		size_t n = strlen(via) + strlen(me) + 3;

		if ((c->via = sbx_malloc(n)))
			snprintf(c->via, n, "%s, %s", via, me);
	} else {
		c->via = sbx_strdup(me);
	}
	literal_text(host, port, c->authority, sizeof(c->authority));
	if (!connect && port == 80)
		snprintf(c->authority, sizeof(c->authority), strchr(host, ':') ? "[%s]" : "%s",
			 host);
	m = find_mapping(f, host, port, sbx_http_path(req), connect);
	route = m		    ? ROUTE_MAPPING
		: excluded(f, host) ? ROUTE_BYPASS
		: f->up.server	    ? ROUTE_UPSTREAM
				    : ROUTE_DIRECT;
	f->routed[route]++;
	switch (route) {
	case ROUTE_MAPPING:
		snprintf(c->host, sizeof(c->host), "%s", m->to_host);
		c->port = m->to_port;
		if (!connect)
			c->target = mapped_path(m, sbx_http_path(req), sbx_http_query_string(req));
		break;
	case ROUTE_BYPASS:
	case ROUTE_DIRECT:
		snprintf(c->host, sizeof(c->host), "%s", host);
		c->port = port;
		if (!connect)
			c->target = mapped_path(&(struct fwd_mapping){ .path = "" },
						sbx_http_path(req), sbx_http_query_string(req));
		break;
	case ROUTE_UPSTREAM: {
		struct sbx_buf b;
		const char *q = sbx_http_query_string(req);

		snprintf(c->host, sizeof(c->host), "%s", f->up.host);
		c->port = f->up.port;
		c->authorization = f->up.authorization ? sbx_strdup(f->up.authorization) : NULL;
		sbx_buf_init(&b, 64 << 10);
		if (connect) {
			/* The next proxy's own CONNECT, credentials in it. */
			sbx_buf_printf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nVia: %s\r\n",
				       c->authority, c->authority, c->via ? c->via : me);
			if (f->up.authorization)
				sbx_buf_printf(&b, "Proxy-Authorization: %s\r\n",
					       f->up.authorization);
			sbx_buf_append_str(&b, "\r\n");
			sbx_buf_append(&b, "", 1);
			c->via_head = b.data;
		} else {
			/* absolute-form, to a proxy */
			sbx_buf_printf(&b, "http://%s%s%s%s", c->authority, sbx_http_path(req),
				       q && *q ? "?" : "", q && *q ? q : "");
			sbx_buf_append(&b, "", 1);
			c->target = b.data;
		}
		break;
	}
	}
	if (!c->via || (!connect && !c->target) ||
	    (route == ROUTE_UPSTREAM && connect && !c->via_head) ||
	    (route == ROUTE_UPSTREAM && f->up.authorization && !c->authorization)) {
		call_free(c);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	call_start(c);
}

/* ---- /v1/proxy/diagnose --------------------------------------------------------------------- */

struct fwd_probe {
	struct fwdproxy *f;
	struct sbx_http_req *req; /* NULL once the client has gone */
	json_t *result;
	uv_getaddrinfo_t gai;
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_timer_t timer;
	int handles, port;
	bool resolving, answered;
	char host[256];
};

static void probe_closed(uv_handle_t *h)
{
	struct fwd_probe *p = h->data;

	if (--p->handles == 0) {
		json_decref(p->result);
		sbx_free(p);
	}
}

static void probe_answer(struct fwd_probe *p, bool reachable)
{
	if (p->answered)
		return;
	p->answered = true;
	if (p->req) {
		sbx_http_on_abort(p->req, NULL, NULL);
		json_object_set_new(p->result, "target_reachable", json_boolean(reachable));
		api_ok(p->req, reachable ? "Target reachable" : "Target not reachable",
		       json_incref(p->result));
		p->req = NULL;
	}
	if (p->handles) {
		uv_close((uv_handle_t *)&p->timer, probe_closed);
		if (p->handles == 2)
			uv_close((uv_handle_t *)&p->tcp, probe_closed);
	} else {
		json_decref(p->result);
		sbx_free(p);
	}
}

static void probe_connected(uv_connect_t *c, int status)
{
	struct fwd_probe *p = c->data;

	if (status != UV_ECANCELED)
		probe_answer(p, status == 0);
}

static void probe_timeout(uv_timer_t *t)
{
	probe_answer(t->data, false);
}

static void probe_connect(struct fwd_probe *p, const struct sockaddr *sa)
{
	uv_timer_init(p->f->loop, &p->timer);
	uv_tcp_init(p->f->loop, &p->tcp);
	p->timer.data = p->tcp.data = p->connect.data = p;
	p->handles = 2;
	uv_timer_start(&p->timer, probe_timeout, PROBE_TIMEOUT_MS, 0);
	if (uv_tcp_connect(&p->connect, &p->tcp, sa, probe_connected))
		probe_answer(p, false);
}

static void probe_gone(struct sbx_http_req *req, void *arg)
{
	struct fwd_probe *p = arg;

	(void)req;
	p->req = NULL;
	if (p->resolving)
		uv_cancel((uv_req_t *)&p->gai); /* its callback ends it */
	else
		probe_answer(p, false);
}

static void probe_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai)
{
	struct fwd_probe *p = g->data;

	p->resolving = false;
	if (status < 0 || !ai || !p->req) {
		uv_freeaddrinfo(ai);
		probe_answer(p, false);
		return;
	}
	probe_connect(p, ai->ai_addr);
	uv_freeaddrinfo(ai);
}

static void probe_start(struct fwd_probe *p)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct sockaddr_storage ss;
	char port[8];

	sbx_http_on_abort(p->req, probe_gone, p);
	if (uv_ip4_addr(p->host, p->port, (struct sockaddr_in *)&ss) == 0 ||
	    uv_ip6_addr(p->host, p->port, (struct sockaddr_in6 *)&ss) == 0) {
		probe_connect(p, (struct sockaddr *)&ss);
		return;
	}
	snprintf(port, sizeof(port), "%d", p->port);
	p->gai.data = p;
	p->resolving = true;
	if (uv_getaddrinfo(p->f->loop, &p->gai, probe_resolved, p->host, port, &hints)) {
		p->resolving = false;
		probe_answer(p, false);
	}
}

static json_t *mapping_json(const struct fwdproxy *f, const struct fwd_mapping *m)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:i}", "source", m->source, "target", m->target,
			 "source_host", m->host, "source_path", m->path, "internal_port", f->port);
}

void fwdproxy_handle_diagnose(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	char url[2048], host[256], target[2400], path[2048];
	struct http_parser_url u;
	const struct fwd_mapping *m;
	struct fwd_probe *p;
	enum route route;
	bool https;
	int port;

	if (sbx_http_query(req, "url", url, sizeof(url)) < 0 || !*url) {
		api_invalid(req, "query.url", "Field required: the URL to diagnose", "missing");
		return;
	}
	http_parser_url_init(&u);
	if (http_parser_parse_url(url, strlen(url), 0, &u) || !(u.field_set & (1 << UF_SCHEMA)) ||
	    !(u.field_set & (1 << UF_HOST)) || u.field_data[UF_HOST].len >= sizeof(host)) {
		api_invalid(req, "query.url", "Input should be an absolute http:// or https:// URL",
			    "url_parsing");
		return;
	}
	https = u.field_data[UF_SCHEMA].len == 5 &&
		!strncasecmp(url + u.field_data[UF_SCHEMA].off, "https", 5);
	if (!https && !(u.field_data[UF_SCHEMA].len == 4 &&
			!strncasecmp(url + u.field_data[UF_SCHEMA].off, "http", 4))) {
		api_invalid(req, "query.url", "The URL's scheme should be http or https",
			    "url_scheme");
		return;
	}
	snprintf(host, sizeof(host), "%.*s", (int)u.field_data[UF_HOST].len,
		 url + u.field_data[UF_HOST].off);
	if (!host_ok(host, false)) {
		api_invalid(req, "query.url", "The URL's host is not a host name or IP address",
			    "url_parsing");
		return;
	}
	port = u.field_set & (1 << UF_PORT) ? u.port : https ? 443 : 80;
	snprintf(path, sizeof(path), "%.*s",
		 u.field_set & (1 << UF_PATH) ? (int)u.field_data[UF_PATH].len : 1,
		 u.field_set & (1 << UF_PATH) ? url + u.field_data[UF_PATH].off : "/");
	m = find_mapping(f, host, port, path, https);
	route = m		    ? ROUTE_MAPPING
		: excluded(f, host) ? ROUTE_BYPASS
		: f->up.server	    ? ROUTE_UPSTREAM
				    : ROUTE_DIRECT;
	if (!(p = sbx_calloc(1, sizeof(*p)))) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	p->f = f;
	p->req = req;
	if (route == ROUTE_MAPPING) {
		char *mp = https ? NULL : mapped_path(m, path, NULL);

		snprintf(p->host, sizeof(p->host), "%s", m->to_host);
		p->port = m->to_port;
		if (https)
			literal_text(m->to_host, m->to_port, target, sizeof(target));
		else
			snprintf(target, sizeof(target),
				 strchr(m->to_host, ':') ? "http://[%s]:%d%s" : "http://%s:%d%s",
				 m->to_host, m->to_port, mp ? mp : path);
		sbx_free(mp);
	} else if (route == ROUTE_UPSTREAM) {
		snprintf(p->host, sizeof(p->host), "%s", f->up.host);
		p->port = f->up.port;
		literal_text(f->up.host, f->up.port, target, sizeof(target));
	} else {
		snprintf(p->host, sizeof(p->host), "%s", host);
		p->port = port;
		literal_text(host, port, target, sizeof(target));
	}
	p->result = json_pack("{s:s, s:o, s:s, s:b, s:s}", "url", url, "matched_mapping",
			      m ? mapping_json(f, m) : json_null(), "resolved_target", target,
			      "target_reachable", 0, "route", route_names[route]);
	if (!p->result) {
		sbx_free(p);
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	probe_start(p);
}

/* ---- the upstream's auth_cmd ------------------------------------------------------------- */

struct fwd_auth_run {
	struct fwdproxy *f;
	struct sbx_http_req *req; /* a PUT waiting, or NULL (at start) */
	struct fwd_upstream pending;
	uv_process_t proc;
	uv_pipe_t out;
	uv_timer_t timer;
	struct sbx_buf output;
	int handles;
	int64_t status;
	int signal;
	bool exited, eof, timed_out;
};

static void upstream_apply(struct fwdproxy *f, struct sbx_http_req *req, struct fwd_upstream *u)
{
	upstream_free(&f->up);
	f->up = *u;
	memset(u, 0, sizeof(*u));
	if (req)
		commit(f, req, "Upstream proxy set", upstream_json(&f->up));
}

static void auth_closed(uv_handle_t *h)
{
	struct fwd_auth_run *r = h->data;

	if (--r->handles)
		return;
	upstream_free(&r->pending);
	sbx_buf_release(&r->output);
	sbx_free(r);
}

static void auth_finish(struct fwd_auth_run *r)
{
	struct fwdproxy *f = r->f;
	char msg[400] = "";
	const char *colon;
	size_t len;

	if (!r->exited || !r->eof)
		return;
	f->auth_run = NULL;
	if (r->req)
		sbx_http_on_abort(r->req, NULL, NULL);
	len = r->output.len;
	while (len && isspace((unsigned char)r->output.data[len - 1]))
		len--;
	colon = r->output.data ? memchr(r->output.data, ':', len) : NULL;
	if (r->timed_out)
		snprintf(msg, sizeof(msg), "auth_cmd did not finish in %d s",
			 AUTH_CMD_TIMEOUT / 1000);
	else if (r->status || r->signal)
		snprintf(msg, sizeof(msg), "auth_cmd failed (exit status %lld, signal %d)",
			 (long long)r->status, r->signal);
	else if (!colon || colon == r->output.data || memchr(r->output.data, '\n', len))
		snprintf(msg, sizeof(msg), "auth_cmd should print one line, username:password");
	if (!msg[0]) {
		char pass[AUTH_CMD_MAX_OUT + 1];

		snprintf(pass, sizeof(pass), "%.*s",
			 (int)(len - (size_t)(colon + 1 - r->output.data)), colon + 1);
		if (upstream_set_credentials(&r->pending, r->output.data,
					     (size_t)(colon - r->output.data), pass))
			snprintf(msg, sizeof(msg), "out of memory");
	}
	if (msg[0]) {
		snprintf(f->auth_error, sizeof(f->auth_error), "%s", msg);
		sbx_log_warn("the upstream proxy's auth_cmd failed", SBX_LS("error", msg));
		if (r->req)
			api_invalid(r->req, "body.auth_cmd", msg, "value_error");
	} else {
		f->auth_error[0] = '\0';
		if (r->req || !f->up.server || strcmp(f->up.server, r->pending.server) == 0)
			upstream_apply(f, r->req, &r->pending);
	}
	r->req = NULL;
	uv_close((uv_handle_t *)&r->proc, auth_closed);
	uv_close((uv_handle_t *)&r->out, auth_closed);
	uv_close((uv_handle_t *)&r->timer, auth_closed);
}

static void auth_exit(uv_process_t *p, int64_t status, int sig)
{
	struct fwd_auth_run *r = p->data;

	kill(-p->pid, SIGKILL); /* what it left in its group */
	r->exited = true;
	r->status = status;
	r->signal = sig;
	uv_timer_stop(&r->timer);
	auth_finish(r);
}

static void auth_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	static char buf[AUTH_CMD_MAX_OUT];

	(void)h;
	(void)hint;
	*b = uv_buf_init(buf, sizeof(buf));
}

static void auth_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct fwd_auth_run *r = s->data;

	if (n < 0) {
		uv_read_stop(s);
		r->eof = true;
		auth_finish(r);
		return;
	}
	if (sbx_buf_append(&r->output, b->base, (size_t)n)) {
		r->status = r->status ? r->status : 1;
		kill(-r->proc.pid, SIGKILL); /* too much output */
	}
}

static void auth_timeout(uv_timer_t *t)
{
	struct fwd_auth_run *r = t->data;

	r->timed_out = true;
	kill(-r->proc.pid, SIGKILL);
}

static void auth_req_gone(struct sbx_http_req *req, void *arg)
{
	struct fwd_auth_run *r = arg;

	(void)req;
	r->req = NULL; /* the result is still applied when it comes */
}

/* Runs u's auth_cmd; the credentials it prints go into u, then u becomes
 * the upstream (and req, if any, gets the answer). */
static int auth_start(struct fwdproxy *f, struct sbx_http_req *req, struct fwd_upstream *u)
{
	char *args[] = { "/bin/sh", "-c", u->auth_cmd, NULL };
	uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE },
					  { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE },
					  { .flags = UV_INHERIT_FD, .data.fd = 2 } };
	uv_process_options_t o = { .file = "/bin/sh",
				   .args = args,
				   .cwd = f->workspace,
				   .exit_cb = auth_exit,
				   .stdio = stdio,
				   .stdio_count = 3,
				   .flags = UV_PROCESS_DETACHED };
	struct fwd_auth_run *r = sbx_calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	r->f = f;
	sbx_buf_init(&r->output, AUTH_CMD_MAX_OUT);
	uv_pipe_init(f->loop, &r->out, 0);
	uv_timer_init(f->loop, &r->timer);
	r->proc.data = r->out.data = r->timer.data = r;
	stdio[1].data.stream = (uv_stream_t *)&r->out;
	if ((rc = uv_spawn(f->loop, &r->proc, &o))) {
		r->handles = 3;
		uv_close((uv_handle_t *)&r->proc, auth_closed);
		uv_close((uv_handle_t *)&r->out, auth_closed);
		uv_close((uv_handle_t *)&r->timer, auth_closed);
		return rc;
	}
	r->handles = 3;
	r->pending = *u;
	memset(u, 0, sizeof(*u));
	r->req = req;
	f->auth_run = r;
	if (req)
		sbx_http_on_abort(req, auth_req_gone, r);
	uv_read_start((uv_stream_t *)&r->out, auth_alloc, auth_read);
	uv_timer_start(&r->timer, auth_timeout, AUTH_CMD_TIMEOUT, 0);
	return 0;
}

/* ---- the API -------------------------------------------------------------------------------- */

void fwdproxy_handle_mappings(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	json_t *list = json_array();

	for (size_t i = 0; i < f->n_maps; i++)
		json_array_append_new(list, mapping_json(f, &f->maps[i]));
	api_ok(req, "Mappings", list);
}

void fwdproxy_handle_mapping_add(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	json_t *body = api_body_object(req);
	const char *source, *target, *why_src, *why_dst;
	struct fwd_mapping m;
	bool added;
	size_t i;

	if (!body)
		return;
	source = json_string_value(json_object_get(body, "source"));
	target = json_string_value(json_object_get(body, "target"));
	if (!source || !target) {
		api_invalid(req, !source ? "body.source" : "body.target", "Field required",
			    "missing");
		goto out;
	}
	if (mapping_parse(source, target, &m, &why_src, &why_dst)) {
		api_invalid(req, why_src ? "body.source" : "body.target",
			    why_src ? why_src : why_dst, "value_error");
		goto out;
	}
	for (i = 0; i < f->n_maps && strcmp(f->maps[i].source, source); i++)
		;
	added = i == f->n_maps;
	if (added) {
		struct fwd_mapping *grown;

		if (f->n_maps == MAX_MAPPINGS) {
			mapping_free(&m);
			api_invalid(req, "body.source", "There are 256 mappings already",
				    "too_long");
			goto out;
		}
		grown = sbx_realloc(f->maps, (f->n_maps + 1) * sizeof(*grown));
		if (!grown) {
			mapping_free(&m);
			sbx_http_respond_error(req, 503, "out of memory");
			goto out;
		}
		f->maps = grown;
		f->maps[f->n_maps++] = m;
	} else {
		mapping_free(&f->maps[i]);
		f->maps[i] = m;
	}
	commit(f, req, added ? "Mapping added" : "Mapping updated", mapping_json(f, &f->maps[i]));
out:
	json_decref(body);
}

/* The source in /v1/proxy/mappings/{source}: the rest of the path,
 * percent-decoded (the SDKs put a source's slashes in the path as they
 * are). */
static int source_of(struct sbx_http_req *req, char *out, size_t size)
{
	const char *raw = sbx_http_path(req) + strlen("/v1/proxy/mappings/");
	char q[MAX_PATTERN * 3 + 8];

	if (!*raw || strlen(raw) > MAX_PATTERN * 3)
		return -1;
	snprintf(q, sizeof(q), "v=%s", raw);
	return sbx_http_query_param(q, "v", out, size) <= 0 ? -1 : 0;
}

/* A source as a client named it for removal: exactly, or with the "//"
 * of its protocol collapsed (as a path it may have been normalised). */
static bool same_source(const char *stored, const char *given)
{
	const char *sep = strstr(stored, "://");

	if (!strcmp(stored, given))
		return true;
	return sep && !strncmp(stored, given, (size_t)(sep - stored) + 2) &&
	       !strcmp(sep + 3, given + (sep - stored) + 2);
}

void fwdproxy_handle_mapping_remove(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	char source[MAX_PATTERN + 1];
	size_t i;

	if (source_of(req, source, sizeof(source))) {
		api_invalid(req, "path.source", "The source should be 1 to 512 characters",
			    "string_too_long");
		return;
	}
	for (i = 0; i < f->n_maps && !same_source(f->maps[i].source, source); i++)
		;
	if (i == f->n_maps) {
		char msg[600];

		snprintf(msg, sizeof(msg), "no mapping has the source %s", source);
		respond_failure(req, 404, msg);
		return;
	}
	mapping_free(&f->maps[i]);
	memmove(&f->maps[i], &f->maps[i + 1], (f->n_maps - i - 1) * sizeof(f->maps[0]));
	f->n_maps--;
	commit(f, req, "Mapping removed", NULL);
}

void fwdproxy_handle_excludes(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	json_t *list = json_array();

	for (size_t i = 0; i < f->n_excludes; i++)
		json_array_append_new(list, json_string(f->excludes[i]));
	api_ok(req, "Excludes", list);
}

/* The body's pattern, valid; NULL when a 422 has been sent. */
static char *pattern_of(struct sbx_http_req *req)
{
	json_t *body = api_body_object(req);
	const char *p;
	char *out = NULL;

	if (!body)
		return NULL;
	p = json_string_value(json_object_get(body, "pattern"));
	if (!p)
		api_invalid(req, "body.pattern", "Field required", "missing");
	else if (!exclude_ok(p))
		api_invalid(req, "body.pattern",
			    "The pattern should be a domain (*.example.com, .example.com), a host "
			    "or IP address, or a CIDR block (10.0.0.0/8)",
			    "value_error");
	else if (!(out = sbx_strdup(p)))
		sbx_http_respond_error(req, 503, "out of memory");
	if (out) /* compared and kept lowercased */
		for (char *c = out; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	json_decref(body);
	return out;
}

void fwdproxy_handle_exclude_add(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	char *p = pattern_of(req);
	int rc;

	if (!p)
		return;
	for (size_t i = 0; i < f->n_excludes; i++) {
		if (!strcmp(f->excludes[i], p)) {
			sbx_free(p);
			api_ok(req, "The pattern is there already", NULL);
			return;
		}
	}
	rc = exclude_push(f, p);
	sbx_free(p);
	if (rc == -E2BIG)
		api_invalid(req, "body.pattern", "There are 256 patterns already", "too_long");
	else if (rc)
		sbx_http_respond_error(req, 503, "out of memory");
	else
		commit(f, req, "Exclude added", NULL);
}

void fwdproxy_handle_exclude_remove(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	char *p = pattern_of(req);
	size_t i;

	if (!p)
		return;
	for (i = 0; i < f->n_excludes && strcmp(f->excludes[i], p); i++)
		;
	if (i == f->n_excludes) {
		char msg[400];

		snprintf(msg, sizeof(msg), "%s is not an exclude pattern", p);
		sbx_free(p);
		respond_failure(req, 404, msg);
		return;
	}
	sbx_free(p);
	sbx_free(f->excludes[i]);
	memmove(&f->excludes[i], &f->excludes[i + 1], (f->n_excludes - i - 1) * sizeof(char *));
	f->n_excludes--;
	commit(f, req, "Exclude removed", NULL);
}

void fwdproxy_handle_health(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	json_t *problems = json_array();
	bool listening = f->http != NULL;

	if (!listening)
		json_array_append_new(problems,
				      json_string("the forward proxy is not listening (see the "
						  "agent's log for --forward-proxy)"));
	if (f->save_error[0])
		json_array_append_new(problems, json_string(f->save_error));
	if (f->auth_error[0])
		json_array_append_new(problems, json_string(f->auth_error));
	/* One process is both of AIO's (GOST's forwarding, nginx's mappings). */
	api_ok(req, json_array_size(problems) ? "Unhealthy" : "Healthy",
	       json_pack("{s:b, s:b, s:b, s:b, s:o, s:s?, s:i}", "healthy",
			 json_array_size(problems) == 0, "gost_alive", listening, "nginx_alive",
			 listening, "config_consistent",
			 !f->save_error[0] && f->version == f->saved_version, "inconsistencies",
			 problems, "listen", listening ? f->addr : NULL, "mappings",
			 (int)f->n_maps));
}

void fwdproxy_handle_upstream(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;

	api_ok(req, f->up.server ? "Upstream proxy" : "No upstream proxy: direct",
	       upstream_json(&f->up));
}

void fwdproxy_handle_upstream_set(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	json_t *body = api_body_object(req);
	const char *server, *auth_cmd = NULL;
	struct fwd_upstream u;
	int rc;

	if (!body)
		return;
	server = json_string_value(json_object_get(body, "server"));
	if (!server) {
		api_invalid(req, "body.server", "Field required", "missing");
		goto out;
	}
	if (!api_opt_string(req, body, "auth_cmd", &auth_cmd))
		goto out;
	if (auth_cmd && strlen(auth_cmd) > 4096) {
		api_invalid(req, "body.auth_cmd", "The command should be up to 4096 characters",
			    "string_too_long");
		goto out;
	}
	if (upstream_parse(server, auth_cmd, &u)) {
		api_invalid(req, "body.server",
			    "The server should be host:port or user:pass@host:port", "value_error");
		goto out;
	}
	if (u.port == f->port && (!strcmp(u.host, "localhost") || !strcmp(u.host, "::1") ||
				  !strncmp(u.host, "127.", 4))) {
		upstream_free(&u);
		api_invalid(req, "body.server", "That is this proxy itself: it would loop",
			    "value_error");
		goto out;
	}
	if (!u.auth_cmd) {
		f->auth_error[0] = '\0';
		upstream_apply(f, req, &u);
		goto out;
	}
	if (f->auth_run) {
		upstream_free(&u);
		respond_failure(req, 409, "another auth_cmd is running; try again");
		goto out;
	}
	if ((rc = auth_start(f, req, &u))) {
		char msg[200];

		snprintf(msg, sizeof(msg), "cannot run auth_cmd: %s", uv_strerror(rc));
		upstream_free(&u);
		api_invalid(req, "body.auth_cmd", msg, "value_error");
	}
out:
	json_decref(body);
}

void fwdproxy_handle_upstream_remove(struct sbx_http_req *req, void *arg)
{
	struct fwdproxy *f = arg;
	bool had = f->up.server != NULL;

	upstream_free(&f->up);
	f->auth_error[0] = '\0';
	commit(f, req, had ? "Upstream proxy removed: direct" : "No upstream proxy was set", NULL);
}

/* ---- the listener ------------------------------------------------------------------------- */

static void proxy_healthz(struct sbx_http_req *req, void *arg)
{
	(void)arg;
	sbx_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void collect(struct sbx_buf *b, void *arg)
{
	struct fwdproxy *f = arg;
	char labels[64];

	for (int i = 0; i < 4; i++) {
		snprintf(labels, sizeof(labels), "route=\"%s\"", route_names[i]);
		if (i == 0)
			sbx_metrics_sample(
				b, "sbx_agent_forward_proxy_requests_total", "counter",
				"Requests and CONNECTs through the forward proxy, by the "
				"route taken",
				labels, (double)f->routed[i]);
		else
			sbx_metrics_more(b, "sbx_agent_forward_proxy_requests_total", labels,
					 (double)f->routed[i]);
	}
	sbx_metrics_sample(b, "sbx_agent_forward_proxy_refused_total", "counter",
			   "Forward proxy requests refused (malformed, or a name that did not "
			   "resolve)",
			   "", (double)f->refused);
	sbx_metrics_sample(b, "sbx_agent_forward_proxy_mappings", "gauge", "Mappings configured",
			   "", (double)f->n_maps);
	if (f->http)
		sbx_metrics_http_server(b, f->http, "sbx_agent_forward_proxy");
}

/* The saved configuration: true if there was one (even a damaged one,
 * kept aside). */
static bool load_state(struct fwdproxy *f)
{
	json_error_t jerr;
	json_t *st, *v;
	size_t i;
	struct stat sb;

	if (stat(f->state_path, &sb))
		return false; /* nothing saved yet */
	st = json_load_file(f->state_path, 0, &jerr);
	if (!st || !json_is_object(st)) {
		char aside[PATH_MAX + 32];

		snprintf(aside, sizeof(aside), "%s.bad-%lld", f->state_path, (long long)time(NULL));
		rename(f->state_path, aside);
		snprintf(
			f->save_error, sizeof(f->save_error),
			"the saved configuration could not be read (%.100s); it was kept as %.800s",
			jerr.text, aside);
		sbx_log_error("cannot read the proxy configuration", SBX_LS("path", f->state_path),
			      SBX_LS("error", jerr.text), SBX_LS("kept_as", aside));
		json_decref(st);
		return true;
	}
	json_array_foreach(json_object_get(st, "mappings"), i, v)
	{
		struct fwd_mapping m, *grown;
		const char *a, *b;
		const char *src = json_string_value(json_object_get(v, "source"));
		const char *dst = json_string_value(json_object_get(v, "target"));

		if (!src || !dst || f->n_maps == MAX_MAPPINGS ||
		    mapping_parse(src, dst, &m, &a, &b))
			continue;
		if (!(grown = sbx_realloc(f->maps, (f->n_maps + 1) * sizeof(*grown)))) {
			mapping_free(&m);
			continue;
		}
		f->maps = grown;
		f->maps[f->n_maps++] = m;
	}
	json_array_foreach(json_object_get(st, "excludes"), i, v)
	{
		const char *p = json_string_value(v);

		if (p && exclude_ok(p))
			exclude_push(f, p);
	}
	if ((v = json_object_get(st, "upstream"))) {
		struct fwd_upstream u;
		const char *server = json_string_value(json_object_get(v, "server"));
		const char *cmd = json_string_value(json_object_get(v, "auth_cmd"));

		if (server && !upstream_parse(server, cmd, &u)) {
			f->up = u;
			if (u.auth_cmd) {
				/* Fresh credentials, in the background. */
				struct fwd_upstream again;

				if (!upstream_parse(server, cmd, &again) &&
				    auth_start(f, NULL, &again))
					upstream_free(&again);
			}
		}
	}
	json_decref(st);
	sbx_log_debug("proxy configuration loaded", SBX_LS("path", f->state_path),
		      SBX_LI("mappings", f->n_maps), SBX_LI("excludes", f->n_excludes),
		      SBX_LB("upstream", f->up.server != NULL));
	return true;
}

/* The configuration the agent was started with (AIO's PROXY_SERVER and
 * PROXY_EXCLUDE), for a first start: 0, or -EINVAL with err set. */
static int apply_defaults(struct fwdproxy *f, const char *upstream, const struct sbx_strv *excludes,
			  char *err, size_t err_size)
{
	for (size_t i = 0; excludes && i < excludes->n; i++) {
		int rc;

		if (!exclude_ok(excludes->v[i]) || f->n_excludes == MAX_EXCLUDES) {
			snprintf(err, err_size,
				 "--proxy-exclude %s: should be a domain (.example.com, "
				 "*.example.com), a host or IP address, or a CIDR block",
				 excludes->v[i]);
			return -EINVAL;
		}
		if ((rc = exclude_push(f, excludes->v[i])))
			return rc;
	}
	if (upstream && *upstream && upstream_parse(upstream, NULL, &f->up)) {
		snprintf(err, err_size,
			 "--upstream-proxy %s: should be host:port or user:pass@host:port",
			 upstream);
		return -EINVAL;
	}
	return 0;
}

/* Is addr ("ip:port", "[ip6]:port") on a loopback address? Its host,
 * bracketed if IPv6, goes to host. */
static bool loopback(const char *addr, char *host, size_t size)
{
	const char *colon = strrchr(addr, ':');
	unsigned char a[16];
	char ip[INET6_ADDRSTRLEN];
	size_t n = colon ? (size_t)(colon - addr) : 0;

	if (!colon || !n || n >= sizeof(ip) + 2 || port_of(colon + 1, strlen(colon + 1)) < 0) {
		if (!colon || strcmp(colon + 1, "0"))
			return false; /* port 0: any free one */
	}
	if (addr[0] == '[' && n >= 2 && addr[n - 1] == ']')
		snprintf(ip, sizeof(ip), "%.*s", (int)(n - 2), addr + 1);
	else if (n < sizeof(ip))
		snprintf(ip, sizeof(ip), "%.*s", (int)n, addr);
	else
		return false;
	snprintf(host, size, "%.*s", (int)n, addr);
	if (inet_pton(AF_INET, ip, a) == 1)
		return a[0] == 127;
	return inet_pton(AF_INET6, ip, a) == 1 && !memcmp(a, &in6addr_loopback, 16);
}

int fwdproxy_init(struct fwdproxy *f, uv_loop_t *loop, const char *addr, const char *state_path,
		  const char *upstream, const struct sbx_strv *excludes, const char *workspace,
		  char *err, size_t err_size)
{
	static const struct sbx_http_route routes[] = {
		{ .method = "GET", .pattern = "/healthz", .fn = proxy_healthz, .public = true },
	};
	const char *home = getenv("HOME");
	struct sbx_http_server_opts so = { .server_name = "sbx-agent", .idle_timeout_ms = 75000 };
	struct sbx_http_route *r;
	char path[PATH_MAX], host[INET6_ADDRSTRLEN + 2];
	int rc;

	memset(f, 0, sizeof(*f));
	f->loop = loop;
	f->workspace = workspace;
	if (!addr || !*addr)
		addr = "127.0.0.1:0";
	if (!loopback(addr, host, sizeof(host))) {
		snprintf(err, err_size,
			 "--forward-proxy takes a loopback address (127.0.0.1:PORT or [::1]:PORT), "
			 "not %s: the sandbox's forward proxy is for its own processes",
			 addr);
		return -EINVAL;
	}
	if (state_path && *state_path)
		snprintf(path, sizeof(path), "%s", state_path);
	else
		snprintf(path, sizeof(path), "%s/.sbx/proxy.json",
			 home && *home ? home : workspace);
	if (!(f->state_path = sbx_strdup(path)))
		return -ENOMEM;
	if (!load_state(f) && (rc = apply_defaults(f, upstream, excludes, err, err_size)))
		return rc;
	/* Its own routes and a proxy route; the PAC file needs f. */
	f->routes = r = sbx_calloc(3, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r[0] = routes[0];
	r[1] = (struct sbx_http_route){ .method = "GET",
					.pattern = "/proxy.pac",
					.fn = fwdproxy_handle_pac,
					.arg = f,
					.public = true };
	r[2] = (struct sbx_http_route){ .fn = proxy_request,
					.arg = f,
					.public = true,
					.stream_body = true,
					.max_body_bytes = MAX_UPLOAD_BYTES };
	so.proxy = &r[2];
	if ((rc = sbx_http_server_new(loop, &so, r, 2, &f->http)) ||
	    (rc = sbx_http_server_listen(f->http, addr))) {
		snprintf(err, err_size, "cannot listen on %s for the forward proxy: %s", addr,
			 uv_strerror(rc));
		if (f->http)
			sbx_http_server_close(f->http, NULL, NULL);
		f->http = NULL;
		return rc;
	}
	f->port = sbx_http_server_port(f->http);
	snprintf(f->addr, sizeof(f->addr), "%s:%d", host, f->port);
	sbx_metrics_register(collect, f);
	return 0;
}

const char *fwdproxy_url(const struct fwdproxy *f, char *buf, size_t size)
{
	if (!f->http)
		return NULL;
	snprintf(buf, size, "http://%s", f->addr);
	return buf;
}

void fwdproxy_close(struct fwdproxy *f)
{
	if (f->closing)
		return;
	f->closing = true;
	if (f->http)
		sbx_http_server_close(f->http, NULL, NULL);
}

void fwdproxy_release(struct fwdproxy *f)
{
	for (size_t i = 0; i < f->n_maps; i++)
		mapping_free(&f->maps[i]);
	sbx_free(f->maps);
	for (size_t i = 0; i < f->n_excludes; i++)
		sbx_free(f->excludes[i]);
	sbx_free(f->excludes);
	upstream_free(&f->up);
	sbx_free(f->state_path);
	sbx_free(f->routes);
	f->maps = NULL;
	f->excludes = NULL;
	f->n_maps = f->n_excludes = 0;
	f->state_path = NULL;
	f->routes = NULL;
}
