/* Kubeconfig and in-cluster configuration (see sbx/kube_config.h). */
#include "sbx/kube_config.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/buf.h"
#include "sbx/log.h"
#include "sbx/yaml.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KUBECONFIG_MAX_BYTES (4u << 20)
#define CREDENTIAL_MAX_BYTES (1u << 20)
#define SA_DIR		     "/var/run/secrets/kubernetes.io/serviceaccount"

static int fail(char *err, size_t err_size, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_size, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
	return rc;
}

int sbx_read_file(const char *path, size_t max_bytes, char **data, size_t *len)
{
	char chunk[8192];
	struct sbx_buf b;
	size_t n;
	FILE *f;
	int rc = 0;

	f = fopen(path, "rb");
	if (!f)
		return -errno;
	sbx_buf_init(&b, max_bytes);
	while (!rc && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = sbx_buf_append(&b, chunk, n);
	if (!rc && ferror(f))
		rc = -EIO;
	fclose(f);
	if (rc) {
		sbx_buf_release(&b);
		return rc;
	}
	*len = b.len;
	*data = sbx_buf_steal(&b);
	return *data ? 0 : -ENOMEM;
}

void sbx_kube_config_release(struct sbx_kube_config *c)
{
	sbx_free(c->server);
	sbx_free(c->ca_pem);
	sbx_free(c->cert_pem);
	if (c->key_pem)
		OPENSSL_cleanse(c->key_pem, c->key_len);
	sbx_free(c->key_pem);
	if (c->token)
		OPENSSL_cleanse(c->token, strlen(c->token));
	sbx_free(c->token);
	sbx_free(c->token_file);
	sbx_free(c->tls_server_name);
	sbx_free(c->namespace);
	sbx_free(c->source);
	memset(c, 0, sizeof(*c));
}

/* The entry of a named list ("clusters", "users", "contexts") whose name
 * matches; NULL if absent. */
static json_t *named(json_t *root, const char *list, const char *name)
{
	json_t *arr = json_object_get(root, list), *it;
	size_t i;

	json_array_foreach(arr, i, it)
	{
		const char *n = json_string_value(json_object_get(it, "name"));

		if (n && strcmp(n, name) == 0)
			return it;
	}
	return NULL;
}

struct loader {
	const char *path;
	char dir[PATH_MAX];
	char *err;
	size_t err_size;
};

/* A file named in the kubeconfig: absolute, or relative to its folder. */
static int join_path(const struct loader *l, const char *file, char *out, size_t size)
{
	int n = file[0] == '/' ? snprintf(out, size, "%s", file)
			       : snprintf(out, size, "%s/%s", l->dir, file);

	if (n < 0 || (size_t)n >= size)
		return fail(l->err, l->err_size, -ENAMETOOLONG, "kubeconfig %s: path too long: %s",
			    l->path, file);
	return 0;
}

/* Reads a credential given as "<key>-data" (base64) or "<key>" (a file
 * path relative to the kubeconfig). Absent: 0 with *out NULL. */
static int credential(struct loader *l, json_t *section, const char *where, const char *key,
		      char **out, size_t *out_len)
{
	char data_key[64], path[PATH_MAX];
	const char *data, *file;
	int rc;

	*out = NULL;
	*out_len = 0;
	snprintf(data_key, sizeof(data_key), "%s-data", key);
	data = json_string_value(json_object_get(section, data_key));
	file = json_string_value(json_object_get(section, key));
	if (data) {
		/* Writers wrap long values; the decoder skips whitespace. */
		rc = sbx_base64_decode(data, strlen(data), out, out_len);
		if (rc == 0 && *out_len == 0) {
			sbx_free(*out);
			*out = NULL;
			rc = -EINVAL;
		}
		if (rc == -EINVAL)
			return fail(l->err, l->err_size, rc,
				    "kubeconfig %s: %s.%s: not valid base64", l->path, where,
				    data_key);
		return rc;
	}
	if (!file)
		return 0;
	if ((rc = join_path(l, file, path, sizeof(path))))
		return rc;
	rc = sbx_read_file(path, CREDENTIAL_MAX_BYTES, out, out_len);
	if (rc)
		return fail(l->err, l->err_size, rc, "kubeconfig %s: %s.%s: cannot read %s: %s",
			    l->path, where, key, path, sbx_strerror(rc));
	return 0;
}

static int load_cluster(struct loader *l, struct sbx_kube_config *c, json_t *root, const char *name)
{
	json_t *entry = named(root, "clusters", name), *cl;
	const char *server;
	char where[300];
	size_t n;
	int rc;

	if (!entry)
		return fail(l->err, l->err_size, -ENOENT, "kubeconfig %s: no cluster named '%s'",
			    l->path, name);
	snprintf(where, sizeof(where), "clusters[name=%s].cluster", name);
	cl = json_object_get(entry, "cluster");
	server = json_string_value(json_object_get(cl, "server"));
	if (!server || (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0))
		return fail(l->err, l->err_size, -EINVAL,
			    "kubeconfig %s: %s.server: expected an http(s) URL", l->path, where);
	c->server = sbx_strdup(server);
	if (!c->server)
		return -ENOMEM;
	n = strlen(c->server);
	while (n > 0 && c->server[n - 1] == '/')
		c->server[--n] = '\0';
	c->insecure = json_is_true(json_object_get(cl, "insecure-skip-tls-verify"));
	if (json_string_value(json_object_get(cl, "tls-server-name")) &&
	    !(c->tls_server_name =
		      sbx_strdup(json_string_value(json_object_get(cl, "tls-server-name")))))
		return -ENOMEM;
	if ((rc = credential(l, cl, where, "certificate-authority", &c->ca_pem, &c->ca_len)))
		return rc;
	return 0;
}

static int load_user(struct loader *l, struct sbx_kube_config *c, json_t *root, const char *name)
{
	json_t *entry = named(root, "users", name), *u;
	const char *token, *token_file;
	char where[300], path[PATH_MAX];
	size_t len;
	int rc;

	if (!entry)
		return fail(l->err, l->err_size, -ENOENT, "kubeconfig %s: no user named '%s'",
			    l->path, name);
	snprintf(where, sizeof(where), "users[name=%s].user", name);
	u = json_object_get(entry, "user");
	if ((rc = credential(l, u, where, "client-certificate", &c->cert_pem, &c->cert_len)) ||
	    (rc = credential(l, u, where, "client-key", &c->key_pem, &c->key_len)))
		return rc;
	if (!c->cert_pem != !c->key_pem)
		return fail(l->err, l->err_size, -EINVAL,
			    "kubeconfig %s: %s: client-certificate and client-key go together",
			    l->path, where);
	token = json_string_value(json_object_get(u, "token"));
	token_file = json_string_value(json_object_get(u, "tokenFile"));
	if (token && !(c->token = sbx_strdup(token)))
		return -ENOMEM;
	if (!token && token_file) {
		if ((rc = join_path(l, token_file, path, sizeof(path))))
			return rc;
		if (!(c->token_file = sbx_strdup(path)))
			return -ENOMEM;
		if ((rc = sbx_read_file(path, CREDENTIAL_MAX_BYTES, &c->token, &len)))
			return fail(l->err, l->err_size, rc,
				    "kubeconfig %s: %s.tokenFile: cannot read %s: %s", l->path,
				    where, path, sbx_strerror(rc));
		while (len > 0 && isspace((unsigned char)c->token[len - 1]))
			c->token[--len] = '\0';
	}
	if (json_object_get(u, "exec") || json_object_get(u, "auth-provider"))
		return fail(
			l->err, l->err_size, -ENOTSUP,
			"kubeconfig %s: %s: exec and auth-provider credentials are not supported; "
			"use a token, a client certificate or a service account",
			l->path, where);
	return 0;
}

static int load_root(struct loader *l, struct sbx_kube_config *c, json_t *root, const char *context)
{
	const char *cluster, *user, *ns;
	json_t *entry, *ctx;
	char src[PATH_MAX + 300];
	int rc;

	if (!json_is_object(root))
		return fail(l->err, l->err_size, -EINVAL,
			    "kubeconfig %s: expected a mapping at the top", l->path);
	if (!context)
		context = json_string_value(json_object_get(root, "current-context"));
	if (!context || !*context)
		return fail(l->err, l->err_size, -EINVAL,
			    "kubeconfig %s: no context given and current-context is not set",
			    l->path);
	entry = named(root, "contexts", context);
	if (!entry)
		return fail(l->err, l->err_size, -ENOENT, "kubeconfig %s: no context named '%s'",
			    l->path, context);
	ctx = json_object_get(entry, "context");
	cluster = json_string_value(json_object_get(ctx, "cluster"));
	user = json_string_value(json_object_get(ctx, "user"));
	ns = json_string_value(json_object_get(ctx, "namespace"));
	if (!cluster)
		return fail(l->err, l->err_size, -EINVAL,
			    "kubeconfig %s: contexts[name=%s].context.cluster: missing", l->path,
			    context);
	if ((rc = load_cluster(l, c, root, cluster)))
		return rc;
	if (user && (rc = load_user(l, c, root, user)))
		return rc;
	snprintf(src, sizeof(src), "%s (context %s)", l->path, context);
	if (!(c->namespace = sbx_strdup(ns && *ns ? ns : "default")) ||
	    !(c->source = sbx_strdup(src)))
		return -ENOMEM;
	return 0;
}

int sbx_kube_config_load_file(struct sbx_kube_config *c, const char *path, const char *context,
			      char *err, size_t err_size)
{
	struct loader l = { .path = path, .err = err, .err_size = err_size };
	char tmp[PATH_MAX], inner[512];
	json_t *root;
	int rc;

	memset(c, 0, sizeof(*c));
	snprintf(tmp, sizeof(tmp), "%s", path);
	snprintf(l.dir, sizeof(l.dir), "%s", dirname(tmp));
	root = sbx_yaml_load_file(path, KUBECONFIG_MAX_BYTES, inner, sizeof(inner));
	if (!root)
		return fail(err, err_size, -EINVAL, "kubeconfig %s", inner);
	rc = load_root(&l, c, root, context);
	json_decref(root);
	if (rc) {
		if (rc == -ENOMEM)
			fail(err, err_size, rc, "kubeconfig %s: out of memory", path);
		sbx_kube_config_release(c);
	}
	return rc;
}

int sbx_kube_config_load_incluster(struct sbx_kube_config *c, const char *sa_dir, char *err,
				   size_t err_size)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	char path[PATH_MAX], *ns = NULL;
	size_t len;
	int rc;

	memset(c, 0, sizeof(*c));
	if (!sa_dir)
		sa_dir = getenv("SBX_KUBE_SA_DIR") ? getenv("SBX_KUBE_SA_DIR") : SA_DIR;
	if (!host || !*host || !port || !*port)
		return fail(err, err_size, -ENOENT,
			    "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
	c->server = sbx_malloc(strlen(host) + strlen(port) + 16);
	if (!c->server)
		goto out_nomem;
	/* An IPv6 service address needs brackets in a URL. */
	sprintf(c->server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
	snprintf(path, sizeof(path), "%s/token", sa_dir);
	if (!(c->token_file = sbx_strdup(path)))
		goto out_nomem;
	if ((rc = sbx_read_file(path, CREDENTIAL_MAX_BYTES, &c->token, &len))) {
		fail(err, err_size, rc, "in-cluster token %s: %s", path, sbx_strerror(rc));
		goto out_release;
	}
	while (len > 0 && isspace((unsigned char)c->token[len - 1]))
		c->token[--len] = '\0';
	snprintf(path, sizeof(path), "%s/ca.crt", sa_dir);
	if ((rc = sbx_read_file(path, CREDENTIAL_MAX_BYTES, &c->ca_pem, &c->ca_len))) {
		fail(err, err_size, rc, "in-cluster CA %s: %s", path, sbx_strerror(rc));
		goto out_release;
	}
	snprintf(path, sizeof(path), "%s/namespace", sa_dir);
	if (sbx_read_file(path, 256, &ns, &len) == 0) {
		while (len > 0 && isspace((unsigned char)ns[len - 1]))
			ns[--len] = '\0';
	}
	c->namespace = ns && *ns ? ns : sbx_strdup("default");
	if (ns && !*ns)
		sbx_free(ns);
	if (!c->namespace || !(c->source = sbx_strdup("in-cluster")))
		goto out_nomem;
	return 0;
out_nomem:
	rc = fail(err, err_size, -ENOMEM, "out of memory");
out_release:
	sbx_kube_config_release(c);
	return rc;
}

int sbx_kube_config_load(struct sbx_kube_config *c, const char *path, const char *context,
			 char *err, size_t err_size)
{
	const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");
	char first[PATH_MAX];
	int rc;

	if (path && *path)
		return sbx_kube_config_load_file(c, path, context, err, err_size);
	if (env && *env) {
		snprintf(first, sizeof(first), "%.*s", (int)strcspn(env, ":"), env);
		return sbx_kube_config_load_file(c, first, context, err, err_size);
	}
	rc = sbx_kube_config_load_incluster(c, NULL, err, err_size);
	if (rc != -ENOENT || !home)
		return rc;
	snprintf(first, sizeof(first), "%s/.kube/config", home);
	return sbx_kube_config_load_file(c, first, context, err, err_size);
}
