/* The sandbox's forward proxy and AIO's /v1/proxy API: domain mappings,
 * bypass patterns, an upstream proxy, and the PAC file that tells a
 * browser which requests to send through it.
 *
 * The agent listens on a loopback address of its own (--forward-proxy,
 * 127.0.0.1 on an ephemeral port unless given) as an HTTP/1.1 forward
 * proxy: absolute-form requests (GET http://host/...) and CONNECT
 * host:port. Each one takes the first of these routes that applies:
 *   mapping   the host (and port, path) matches a mapping's source: the
 *             request goes to the mapping's target, by default a port on
 *             127.0.0.1 ("myapp.test" -> ":3000"); a target path replaces
 *             the matched source path, as in nginx's proxy_pass;
 *   bypass    the host matches an exclude pattern: straight to it;
 *   upstream  an upstream proxy is set: through it, with its credentials
 *             (CONNECT is chained with a CONNECT of its own);
 *   direct    otherwise straight to the host.
 * Changes apply to the next request: a browser pointed at the proxy
 * (--proxy-server, which the browser command finds in SBX_FORWARD_PROXY)
 * needs no restart. The configuration is kept in a JSON file (mode 0600,
 * --proxy-state) and an answer that changes it waits until it is saved.
 * The listener takes loopback addresses only: the sandbox's own processes
 * may use it, the network may not. It serves /proxy.pac and /healthz to
 * origin-form requests.
 */
#ifndef SBX_AGENT_FWDPROXY_H
#define SBX_AGENT_FWDPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;
struct sbx_http_server;
struct sbx_strv;
struct fwd_waiter;

struct fwd_mapping {
	char *source, *target; /* as given */
	char scheme[8];	       /* "", "http" or "https" */
	char *host;	       /* lowercase; '*' matches any run of characters */
	int port;	       /* 0: any */
	char *path;	       /* a prefix ("/" for all) */
	char *to_host;	       /* a name or an IP address */
	int to_port;
	char *to_path; /* NULL: the request's path unchanged */
};

struct fwd_upstream {
	char *server;	/* as given (with inline credentials) */
	char *auth_cmd; /* NULL, or a command whose stdout is "user:pass" */
	char *host;	/* a name or an IP address */
	int port;
	char *user, *pass;   /* inline, or the command's */
	char *authorization; /* "Basic ..." or NULL */
};

struct fwdproxy {
	uv_loop_t *loop;
	const char *workspace;
	char *state_path;
	struct sbx_http_server *http;  /* the listener; NULL when it could not start */
	struct sbx_http_route *routes; /* its routes (they need f) */
	int port;		       /* where it listens */
	char addr[64];		       /* "127.0.0.1:port" */
	struct fwd_mapping *maps;
	size_t n_maps;
	char **excludes;
	size_t n_excludes;
	struct fwd_upstream up; /* up.server NULL: none */
	/* Saving: changes are numbered; waiters answer once theirs is saved. */
	uint64_t version, saved_version;
	bool saving, closing;
	char save_error[1024]; /* the last save's failure, "" if it worked */
	char auth_error[400];  /* the last auth_cmd's failure, "" if none */
	struct fwd_waiter *waiters;
	struct fwd_auth_run *auth_run; /* an auth_cmd running */
	unsigned long routed[4];       /* by route: mapping, bypass, upstream, direct */
	unsigned long refused;
};

/* Loads the state file, or, when there is none, takes upstream and
 * excludes (the start's configuration: AIO's PROXY_SERVER and
 * PROXY_EXCLUDE), and listens on addr ("127.0.0.1:0" when NULL). 0, or a
 * negative errno with err set (a bad address or default: the agent does
 * not start). */
int fwdproxy_init(struct fwdproxy *f, uv_loop_t *loop, const char *addr, const char *state_path,
		  const char *upstream, const struct sbx_strv *excludes, const char *workspace,
		  char *err, size_t err_size);
/* Stops the listener (in-flight requests drain with the loop). */
void fwdproxy_close(struct fwdproxy *f);
void fwdproxy_release(struct fwdproxy *f);
/* "http://127.0.0.1:port", or NULL when not listening. */
const char *fwdproxy_url(const struct fwdproxy *f, char *buf, size_t size);

void fwdproxy_handle_mappings(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_mapping_add(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_mapping_remove(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_excludes(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_exclude_add(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_exclude_remove(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_diagnose(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_health(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_upstream(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_upstream_set(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_upstream_remove(struct sbx_http_req *req, void *arg);
void fwdproxy_handle_pac(struct sbx_http_req *req, void *arg);

#endif
