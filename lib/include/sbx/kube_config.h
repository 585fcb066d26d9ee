/* Where the Kubernetes API is and how to authenticate to it.
 *
 * Sources, in the order sbx_kube_config_load tries them when no file is
 * named: $KUBECONFIG (first file of the list), the in-cluster service
 * account, ~/.kube/config. Kubeconfig forms supported: server + CA (file or
 * -data) or insecure-skip-tls-verify, client certificate + key (file or
 * -data), bearer token (inline or tokenFile). Files named in a kubeconfig are
 * read at load time, relative to the kubeconfig's folder.
 */
#ifndef SBX_KUBE_CONFIG_H
#define SBX_KUBE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct sbx_kube_config {
	char *server; /* "https://host:port", no trailing slash */
	char *ca_pem; /* PEM bytes, or NULL for the system store */
	size_t ca_len;
	char *cert_pem; /* client certificate + key, PEM */
	size_t cert_len;
	char *key_pem;
	size_t key_len;
	char *token;	  /* bearer token, or NULL */
	char *token_file; /* re-read periodically when set (rotating tokens) */
	char *tls_server_name;
	bool insecure;	 /* insecure-skip-tls-verify */
	char *namespace; /* context's namespace, or "default" */
	char *source;	 /* "path (context NAME)" or "in-cluster", for messages */
};

/* Loads a kubeconfig file; context NULL means current-context. 0 or a
 * negative code with the reason (naming the file and key) in err. */
int sbx_kube_config_load_file(struct sbx_kube_config *c, const char *path, const char *context,
			      char *err, size_t err_size);

/* Loads the in-cluster configuration from the service-account folder (NULL:
 * $SBX_KUBE_SA_DIR, else /var/run/secrets/kubernetes.io/serviceaccount) and the
 * KUBERNETES_SERVICE_HOST/PORT variables. -ENOENT when not in a cluster. */
int sbx_kube_config_load_incluster(struct sbx_kube_config *c, const char *sa_dir, char *err,
				   size_t err_size);

/* path, else $KUBECONFIG, else in-cluster, else ~/.kube/config. */
int sbx_kube_config_load(struct sbx_kube_config *c, const char *path, const char *context,
			 char *err, size_t err_size);

void sbx_kube_config_release(struct sbx_kube_config *c);

/* Reads a whole small file into memory (caller frees). 0 or negative errno. */
int sbx_read_file(const char *path, size_t max_bytes, char **data, size_t *len);

#endif
