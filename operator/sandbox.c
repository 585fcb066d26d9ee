/* What a Sandbox should be made of (sandbox.h): pure functions from the
 * Sandbox object to its children and its status. */
#define _GNU_SOURCE /* strptime, timegm */
#include "sandbox.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"
#include "sbx/json.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define AGENT_VOLUME  "sbx-agent"
#define AGENT_PREFIX  "/opt/sbx"
#define EGRESS_VOLUME "sbx-egress-policy"

/* The first 16 bytes of text's SHA-256, in hex (out: 33 bytes). */
static void digest_hex(const char *text, char out[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	out[0] = '\0';
	EVP_Digest(text, strlen(text), md, &md_len, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < 16 && i < md_len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void sandbox_new_id(const char *name, char *out, size_t size)
{
	char rnd[11];
	size_t n = strlen(name);

	/* Hex is lower case and digits: the suffix keeps the DNS label valid. */
	sbx_random_hex(rnd, 5);
	rnd[5] = '\0';
	if (n > 57)
		n = 57;
	while (n > 0 && name[n - 1] == '-')
		n--;
	snprintf(out, size, "%.*s-%s", (int)n, name, rnd);
}

static json_t *child_metadata(const json_t *sandbox, const char *id)
{
	const char *name = sbx_json_str(sandbox, "metadata.name");
	const char *ns = sbx_json_str(sandbox, "metadata.namespace");
	const char *uid = sbx_json_str(sandbox, "metadata.uid");

	return json_pack("{s:s, s:s?, s:{s:s, s:s, s:s}, s:[{s:s, s:s, s:s, s:s?, s:b, s:b}]}",
			 "name", name, "namespace", ns, "labels", SANDBOX_LABEL, name,
			 SANDBOX_ID_LABEL, id, "app.kubernetes.io/managed-by", "sbx-operator",
			 "ownerReferences", "apiVersion", SANDBOX_API_VERSION, "kind", "Sandbox",
			 "name", name, "uid", uid, "controller", 1, "blockOwnerDeletion", 1);
}

static long agent_port(const json_t *spec)
{
	long long port = 8080;

	sbx_json_int(spec, "agent.port", &port);
	return (long)port;
}

static bool agent_enabled(const json_t *spec)
{
	return sbx_json_bool(spec, "agent.enabled", true);
}

/* [name, port] of every exposed port: the agent's first. */
static json_t *exposed_ports(const json_t *spec)
{
	json_t *out = json_array(), *p;
	size_t i;

	json_array_append_new(out, json_pack("{s:s, s:I}", "name", "agent", "port",
					     (json_int_t)agent_port(spec)));
	json_array_foreach(json_object_get(spec, "ports"), i, p)
	{
		long long port = 0;
		const char *name = sbx_json_str(p, "name");
		char gen[16];

		if (sbx_json_int(p, "port", &port) || port < 1 || port > 65535)
			continue;
		if (!name) {
			snprintf(gen, sizeof(gen), "port-%lld", port);
			name = gen;
		}
		json_array_append_new(
			out, json_pack("{s:s, s:I}", "name", name, "port", (json_int_t)port));
	}
	return out;
}

/* The main container's command: the agent supervising the user's command. */
static json_t *main_command(const json_t *spec)
{
	json_t *cmd = json_array(), *v;
	size_t i;

	json_array_append_new(cmd, json_string(AGENT_PREFIX "/bin/sbx-agent"));
	if (!json_array_size(json_object_get(spec, "command")) &&
	    !json_array_size(json_object_get(spec, "args")))
		return cmd;
	json_array_append_new(cmd, json_string("run"));
	json_array_append_new(cmd, json_string("--"));
	json_array_foreach(json_object_get(spec, "command"), i, v) json_array_append(cmd, v);
	json_array_foreach(json_object_get(spec, "args"), i, v) json_array_append(cmd, v);
	return cmd;
}

static json_t *restricted_security_context(void)
{
	return json_pack("{s:b, s:{s:[s]}}", "allowPrivilegeEscalation", 0, "capabilities", "drop",
			 "ALL");
}

static void copy_field(json_t *to, const char *to_key, const json_t *from, const char *from_key)
{
	json_t *v = json_object_get(from, from_key);

	if (v)
		json_object_set(to, to_key, v);
}

static json_t *main_container(const json_t *spec, bool agent)
{
	json_t *c = json_pack("{s:s, s:o, s:s, s:o}", "name", "sandbox", "image",
			      json_deep_copy(json_object_get(spec, "image")), "imagePullPolicy",
			      "IfNotPresent", "securityContext", restricted_security_context());
	json_t *ports = json_array(), *mounts = json_array(), *env = json_array(), *p, *v;
	json_t *exposed = exposed_ports(spec);
	size_t i;
	char listen[16];

	json_array_foreach(exposed, i, p) json_array_append_new(
		ports, json_pack("{s:O, s:O, s:s}", "name", json_object_get(p, "name"),
				 "containerPort", json_object_get(p, "port"), "protocol", "TCP"));
	json_decref(exposed);
	json_object_set_new(c, "ports", ports);
	json_array_foreach(json_object_get(spec, "env"), i, v) json_array_append(env, v);
	if (agent) {
		json_object_set_new(c, "command", main_command(spec));
		snprintf(listen, sizeof(listen), ":%ld", agent_port(spec));
		json_array_append_new(
			env, json_pack("{s:s, s:s}", "name", "SBX_AGENT_LISTEN", "value", listen));
		if (sbx_json_str(spec, "workingDir"))
			json_array_append_new(env,
					      json_pack("{s:s, s:O}", "name", "WORKSPACE", "value",
							json_object_get(spec, "workingDir")));
		json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", AGENT_VOLUME,
							"mountPath", AGENT_PREFIX, "readOnly", 1));
		json_object_set_new(c, "readinessProbe",
				    json_pack("{s:{s:s, s:I}, s:i, s:i}", "httpGet", "path",
					      "/v1/ping", "port", (json_int_t)agent_port(spec),
					      "periodSeconds", 1, "failureThreshold", 3));
	} else {
		copy_field(c, "command", spec, "command");
		copy_field(c, "args", spec, "args");
	}
	json_object_set_new(c, "env", env);
	json_array_foreach(json_object_get(spec, "volumeMounts"), i, v)
		json_array_append(mounts, v);
	json_object_set_new(c, "volumeMounts", mounts);
	copy_field(c, "workingDir", spec, "workingDir");
	copy_field(c, "resources", spec, "resources");
	return c;
}

static json_t *install_container(const struct sandbox_settings *s)
{
	json_t *sc = restricted_security_context();

	json_object_set_new(sc, "readOnlyRootFilesystem", json_true());
	return json_pack("{s:s, s:s, s:s, s:[s, s], s:[{s:s, s:s}], s:o, s:{s:{s:s, s:s}}}", "name",
			 "sbx-agent-install", "image", s->agent_image, "imagePullPolicy",
			 "IfNotPresent", "args", "install", "/sbx", "volumeMounts", "name",
			 AGENT_VOLUME, "mountPath", "/sbx", "securityContext", sc, "resources",
			 "requests", "cpu", "10m", "memory", "16Mi");
}

/* The egress sidecar: a native sidecar (an init container that keeps
 * running), started before everything else and passed as started only once
 * its rules are in, so no other container runs unfiltered. It alone has
 * NET_ADMIN, and root (capabilities of a non-root process do not survive
 * exec without ambient ones, which Kubernetes does not set). Its policy is
 * the ConfigMap, mounted read-only: a rule change reaches it without a
 * restart. */
static json_t *egress_container(const struct sandbox_settings *s)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:[s, s, s],"
			 " s:{s:b, s:b, s:b, s:i, s:{s:[s], s:[s]}},"
			 " s:[{s:s, s:s, s:b}],"
			 " s:[{s:s, s:i, s:s}],"
			 " s:{s:{s:s, s:s}, s:i, s:i},"
			 " s:{s:{s:s, s:s}, s:{s:s}}}",
			 "name", "sbx-egress", "image", s->egress_image, "imagePullPolicy",
			 "IfNotPresent", "restartPolicy", "Always", "args",
			 "--policy-file=" SANDBOX_EGRESS_DIR "/" SANDBOX_EGRESS_FILE,
			 "--listen=:15380", "--log-format=json", "securityContext",
			 "allowPrivilegeEscalation", 0, "readOnlyRootFilesystem", 1, "runAsNonRoot",
			 0, "runAsUser", 0, "capabilities", "drop", "ALL", "add", "NET_ADMIN",
			 "volumeMounts", "name", EGRESS_VOLUME, "mountPath", SANDBOX_EGRESS_DIR,
			 "readOnly", 1, "ports", "name", "egress-health", "containerPort",
			 SANDBOX_EGRESS_HEALTH_PORT, "protocol", "TCP", "startupProbe", "httpGet",
			 "path", "/readyz", "port", "egress-health", "periodSeconds", 1,
			 "failureThreshold", 60, "resources", "requests", "cpu", "10m", "memory",
			 "16Mi", "limits", "memory", "64Mi");
}

json_t *sandbox_pod(const json_t *sandbox, const char *id, const struct sandbox_settings *s,
		    const char **err)
{
	const json_t *spec = json_object_get(sandbox, "spec");
	bool agent = agent_enabled(spec);
	bool egress = json_is_object(json_object_get(spec, "egress"));
	const char *sa = sbx_json_str(spec, "serviceAccountName");
	json_t *pod, *ps, *vols, *inits, *v;
	size_t i;

	if (!sbx_json_str(spec, "image")) {
		*err = "spec.image is missing";
		return NULL;
	}
	if (egress && !(s->egress_image && *s->egress_image)) {
		*err = "spec.egress is set, but sbx-operator runs without --egress-image: "
		       "no sandbox with egress rules can start";
		return NULL;
	}
	vols = json_array();
	inits = json_array();
	ps = json_pack("{s:b, s:b, s:i, s:{s:{s:s}}, s:[o]}", "automountServiceAccountToken",
		       sa != NULL, "enableServiceLinks", 0, "terminationGracePeriodSeconds", 10,
		       "securityContext", "seccompProfile", "type", "RuntimeDefault", "containers",
		       main_container(spec, agent));
	if (egress) {
		json_array_append_new(inits, egress_container(s));
		json_array_append_new(vols, json_pack("{s:s, s:{s:s?, s:[{s:s, s:s}, {s:s, s:s}]}}",
						      "name", EGRESS_VOLUME, "configMap", "name",
						      sbx_json_str(sandbox, "metadata.name"),
						      "items", "key", SANDBOX_EGRESS_FILE, "path",
						      SANDBOX_EGRESS_FILE, "key",
						      SANDBOX_EGRESS_HASH_FILE, "path",
						      SANDBOX_EGRESS_HASH_FILE));
	}
	if (agent) {
		json_array_append_new(inits, install_container(s));
		json_array_append_new(vols,
				      json_pack("{s:s, s:{}}", "name", AGENT_VOLUME, "emptyDir"));
	}
	if (json_array_size(inits))
		json_object_set_new(ps, "initContainers", inits);
	else
		json_decref(inits);
	json_array_foreach(json_object_get(spec, "volumes"), i, v) json_array_append(vols, v);
	if (json_array_size(vols))
		json_object_set_new(ps, "volumes", vols);
	else
		json_decref(vols);
	copy_field(ps, "serviceAccountName", spec, "serviceAccountName");
	copy_field(ps, "runtimeClassName", spec, "runtimeClassName");
	copy_field(ps, "nodeSelector", spec, "nodeSelector");
	copy_field(ps, "tolerations", spec, "tolerations");
	pod = json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "v1", "kind", "Pod", "metadata",
			child_metadata(sandbox, id), "spec", ps);
	sandbox_stamp_hash(pod);
	return pod;
}

json_t *sandbox_service(const json_t *sandbox, const char *id, const struct sandbox_settings *s)
{
	json_t *ports = json_array(), *p,
	       *exposed = exposed_ports(json_object_get(sandbox, "spec"));
	json_t *svc;
	size_t i;

	(void)s;
	json_array_foreach(exposed, i, p) json_array_append_new(
		ports, json_pack("{s:O, s:O, s:O, s:s}", "name", json_object_get(p, "name"), "port",
				 json_object_get(p, "port"), "targetPort",
				 json_object_get(p, "port"), "protocol", "TCP"));
	json_decref(exposed);
	svc = json_pack("{s:s, s:s, s:o, s:{s:s, s:{s:s}, s:o}}", "apiVersion", "v1", "kind",
			"Service", "metadata", child_metadata(sandbox, id), "spec", "type",
			"ClusterIP", "selector", SANDBOX_ID_LABEL, id, "ports", ports);
	sandbox_stamp_hash(svc);
	return svc;
}

/* {"key": "value"} from "key=value" (a bare key matches the value ""). */
static json_t *label_selector(const char *kv)
{
	const char *eq = strchr(kv, '=');
	json_t *m = json_object();

	if (eq) {
		char key[256];

		snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
		json_object_set_new(m, key, json_string(eq + 1));
	} else {
		json_object_set_new(m, kv, json_string(""));
	}
	return m;
}

json_t *sandbox_network_policy(const json_t *sandbox, const char *id,
			       const struct sandbox_settings *s)
{
	json_t *exposed = exposed_ports(json_object_get(sandbox, "spec"));
	json_t *ports = json_array(), *except = json_array(), *p, *np;
	size_t i;

	json_array_foreach(exposed, i, p)
		json_array_append_new(ports, json_pack("{s:s, s:O}", "protocol", "TCP", "port",
						       json_object_get(p, "port")));
	json_decref(exposed);
	for (i = 0; s->deny_cidrs && s->deny_cidrs[i]; i++)
		json_array_append_new(except, json_string(s->deny_cidrs[i]));
	np = json_pack("{s:s, s:s, s:o, s:{s:{s:{s:s}}, s:[s, s],"
		       " s:[{s:[{s:{s:{s:s}}, s:{s:o}}], s:o}],"
		       " s:[{s:[{s:{}, s:{s:{s:s}}}], s:[{s:s, s:i}, {s:s, s:i}]},"
		       "    {s:[{s:{s:s, s:o}}]}]}}",
		       "apiVersion", "networking.k8s.io/v1", "kind", "NetworkPolicy", "metadata",
		       child_metadata(sandbox, id), "spec", "podSelector", "matchLabels",
		       SANDBOX_ID_LABEL, id, "policyTypes", "Ingress", "Egress",
		       /* ingress: only the gateway's pods, only on exposed ports */
		       "ingress", "from", "namespaceSelector", "matchLabels",
		       "kubernetes.io/metadata.name", s->ingress_namespace, "podSelector",
		       "matchLabels", label_selector(s->ingress_pod_label), "ports", ports,
		       /* egress: the cluster DNS, and the internet without the denied ranges */
		       "egress", "to", "namespaceSelector", "podSelector", "matchLabels", "k8s-app",
		       "kube-dns", "ports", "protocol", "UDP", "port", 53, "protocol", "TCP",
		       "port", 53, "to", "ipBlock", "cidr", "0.0.0.0/0", "except", except);
	/* With an egress sidecar: the operator reads what it applied (/readyz). */
	if (np && json_is_object(json_object_get(json_object_get(sandbox, "spec"), "egress")) &&
	    s->operator_namespace && *s->operator_namespace && s->operator_pod_label)
		json_array_append_new(
			json_object_get(json_object_get(np, "spec"), "ingress"),
			json_pack("{s:[{s:{s:{s:s}}, s:{s:o}}], s:[{s:s, s:i}]}", "from",
				  "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name",
				  s->operator_namespace, "podSelector", "matchLabels",
				  label_selector(s->operator_pod_label), "ports", "protocol", "TCP",
				  "port", SANDBOX_EGRESS_HEALTH_PORT));
	sandbox_stamp_hash(np);
	return np;
}

/* The policy text the sidecar reads: spec.egress with the operator's lists,
 * keys sorted and indented, so `kubectl get configmap -o yaml` reads well and
 * the same policy is always the same text. */
static char *egress_policy_text(const json_t *egress, const struct sandbox_settings *s)
{
	json_t *pol = json_pack("{s:O, s:o, s:[], s:[]}", "defaultAction",
				json_object_get(egress, "defaultAction"), "rules",
				json_array_size(json_object_get(egress, "rules"))
					? json_deep_copy(json_object_get(egress, "rules"))
					: json_array(),
				"alwaysAllow", "alwaysDeny");
	char *text;

	if (!pol)
		return NULL;
	for (size_t i = 0; s->egress_always_allow && s->egress_always_allow[i]; i++)
		json_array_append_new(json_object_get(pol, "alwaysAllow"),
				      json_string(s->egress_always_allow[i]));
	for (size_t i = 0; s->egress_always_deny && s->egress_always_deny[i]; i++)
		json_array_append_new(json_object_get(pol, "alwaysDeny"),
				      json_string(s->egress_always_deny[i]));
	text = json_dumps(pol, JSON_SORT_KEYS | JSON_INDENT(2));
	json_decref(pol);
	return text;
}

json_t *sandbox_egress_config(const json_t *sandbox, const char *id,
			      const struct sandbox_settings *s)
{
	const json_t *egress = json_object_get(json_object_get(sandbox, "spec"), "egress");
	char *text, hash[33];
	json_t *cm;

	if (!json_is_object(egress) || !(text = egress_policy_text(egress, s)))
		return NULL;
	digest_hex(text, hash);
	cm = json_pack("{s:s, s:s, s:o, s:{s:s, s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
		       "metadata", child_metadata(sandbox, id), "data", SANDBOX_EGRESS_FILE, text,
		       SANDBOX_EGRESS_HASH_FILE, hash);
	free(text);
	if (!cm)
		return NULL;
	json_object_set_new(json_object_get(cm, "metadata"), "annotations",
			    json_pack("{s:s}", SANDBOX_POLICY_HASH_ANNOTATION, hash));
	sandbox_stamp_hash(cm);
	return cm;
}

void sandbox_stamp_hash(json_t *obj)
{
	json_t *meta = json_object_get(obj, "metadata"), *ann;
	char hex[33], *text;

	/* The digest is of the object without its own annotation (and without
	 * an annotations object that only held it), so stamping is idempotent. */
	ann = json_object_get(meta, "annotations");
	if (ann) {
		json_object_del(ann, SANDBOX_HASH_ANNOTATION);
		if (json_object_size(ann) == 0) {
			json_object_del(meta, "annotations");
			ann = NULL;
		}
	}
	text = json_dumps(obj, JSON_SORT_KEYS | JSON_COMPACT);
	if (!text)
		return;
	digest_hex(text, hex);
	free(text);
	if (!ann) {
		ann = json_object();
		json_object_set_new(meta, "annotations", ann);
	}
	json_object_set_new(ann, SANDBOX_HASH_ANNOTATION, json_string(hex));
}

bool sandbox_child_owned(const json_t *child, const char *owner_uid)
{
	json_t *refs = json_object_get(json_object_get(child, "metadata"), "ownerReferences"), *r;
	size_t i;

	json_array_foreach(refs, i, r)
	{
		const char *uid = sbx_json_str(r, "uid");

		if (sbx_json_bool(r, "controller", false) && uid && owner_uid &&
		    strcmp(uid, owner_uid) == 0)
			return true;
	}
	return false;
}

/* True when every field of want is in have with the same value (have may
 * hold more: what the apiserver defaults); arrays match element by element. */
static bool json_subset(const json_t *want, const json_t *have)
{
	const char *key;
	json_t *v;
	size_t i;

	if (json_is_object(want)) {
		if (!json_is_object(have))
			return false;
		json_object_foreach(
			(json_t *)want, key,
			v) if (!json_subset(v, json_object_get(have, key))) return false;
		return true;
	}
	if (json_is_array(want)) {
		if (!json_is_array(have) || json_array_size(want) != json_array_size(have))
			return false;
		json_array_foreach(want, i,
				   v) if (!json_subset(v, json_array_get(have, i))) return false;
		return true;
	}
	return have && json_equal(want, have);
}

bool sandbox_child_drifted(const json_t *child, const json_t *desired)
{
	static const char *const parts[] = { "spec", "data", NULL };
	const char *kind = sbx_json_str(desired, "kind");

	if (!json_subset(json_object_get(json_object_get(desired, "metadata"), "labels"),
			 json_object_get(json_object_get(child, "metadata"), "labels")))
		return true;
	/* A pod's spec is the kubelet's to run and mostly immutable; the hash
	 * covers what the operator asked for. */
	if (kind && strcmp(kind, "Pod") == 0)
		return false;
	for (const char *const *p = parts; *p; p++)
		if (json_object_get(desired, *p) &&
		    !json_subset(json_object_get(desired, *p), json_object_get(child, *p)))
			return true;
	return false;
}

bool sandbox_child_current(const json_t *child, const json_t *desired, const char *owner_uid)
{
	const json_t *a, *b;

	if (!child || !sandbox_child_owned(child, owner_uid))
		return false;
	a = json_object_get(json_object_get(json_object_get(child, "metadata"), "annotations"),
			    SANDBOX_HASH_ANNOTATION);
	b = json_object_get(json_object_get(json_object_get(desired, "metadata"), "annotations"),
			    SANDBOX_HASH_ANNOTATION);
	return a && b && json_equal(a, b) && !sandbox_child_drifted(child, desired);
}

/* "2026-12-03T11:30:00Z" <-> seconds since the epoch (UTC, no fraction). */
static int parse_time(const char *text, time_t *out)
{
	struct tm tm = { 0 };
	const char *end;

	if (!text || !(end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm)))
		return -1;
	if (*end == '.')
		while (*++end >= '0' && *end <= '9')
			;
	if (strcmp(end, "Z") != 0)
		return -1; /* the apiserver writes UTC; an offset is read as not set */
	*out = timegm(&tm);
	return 0;
}

static void format_time(time_t t, char *out, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int sandbox_expiry(const json_t *sandbox, time_t *out)
{
	const json_t *spec = json_object_get(sandbox, "spec");
	long long ttl;
	time_t created;

	if (sbx_json_str(spec, "expiresAt"))
		return parse_time(sbx_json_str(spec, "expiresAt"), out);
	if (sbx_json_int(spec, "ttlSeconds", &ttl) ||
	    parse_time(sbx_json_str(sandbox, "metadata.creationTimestamp"), &created))
		return -1;
	*out = created + (time_t)ttl;
	return 0;
}

static const json_t *pod_condition(const json_t *pod, const char *type)
{
	json_t *c;
	size_t i;

	json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i,
			   c) if (sbx_json_str(c, "type") &&
				  strcmp(sbx_json_str(c, "type"), type) == 0) return c;
	return NULL;
}

/* Why a pod is not ready, from its containers' states (an image that cannot
 * be pulled, a crash loop) or its scheduling; reason and message point into
 * the pod. */
static void pod_not_ready(const json_t *pod, const char **reason, const char **message)
{
	const json_t *sched = pod_condition(pod, "PodScheduled");
	const char *lists[] = { "initContainerStatuses", "containerStatuses" };
	json_t *c;
	size_t i;

	*reason = "PodNotReady";
	*message = "the pod is starting";
	if (sched && strcmp(sbx_json_str(sched, "status") ?: "", "False") == 0) {
		*reason = sbx_json_str(sched, "reason") ?: "Unschedulable";
		*message = sbx_json_str(sched, "message") ?: "the pod cannot be scheduled";
		return;
	}
	for (size_t l = 0; l < 2; l++)
		json_array_foreach(json_object_get(json_object_get(pod, "status"), lists[l]), i, c)
		{
			const char *r = sbx_json_str(c, "state.waiting.reason");

			if (!r)
				r = sbx_json_str(c, "state.terminated.reason");
			if (r && strcmp(r, "PodInitializing") != 0 &&
			    strcmp(r, "ContainerCreating") != 0 && strcmp(r, "Completed") != 0) {
				*reason = r;
				*message = sbx_json_str(c, "state.waiting.message")
						   ?: sbx_json_str(c, "state.terminated.message")
						   ?: r;
				return;
			}
		}
}

static json_t *ready_condition(const json_t *sandbox, const json_t *pod, const char *phase,
			       const char *now)
{
	const char *status = "False", *reason, *message;
	const json_t *old = NULL, *c;
	long long gen = 0;
	size_t i;

	if (strcmp(phase, "Running") == 0) {
		status = "True";
		reason = "SandboxReady";
		message = "the pod is ready and the agent answers";
	} else if (strcmp(phase, "Expired") == 0) {
		reason = "Expired";
		message = "the sandbox expired; expiryPolicy Retain keeps it without its pod";
	} else if (strcmp(phase, "Paused") == 0) {
		reason = "Paused";
		message = "spec.paused is true: the pod is deleted, the Service and id are kept";
	} else if (!pod) {
		reason = "PodNotCreated";
		message = "the pod is being created";
	} else {
		pod_not_ready(pod, &reason, &message);
		if (strcmp(phase, "Failed") == 0 && strcmp(reason, "PodNotReady") == 0)
			reason = "PodFailed", message = "the pod failed";
	}
	json_array_foreach(json_object_get(json_object_get(sandbox, "status"), "conditions"), i,
			   c) if (strcmp(sbx_json_str(c, "type") ?: "", "Ready") == 0) old = c;
	sbx_json_int(sandbox, "metadata.generation", &gen);
	/* A transition is when the status changes; otherwise the old time stays. */
	if (old && strcmp(sbx_json_str(old, "status") ?: "", status) == 0 &&
	    sbx_json_str(old, "lastTransitionTime"))
		now = sbx_json_str(old, "lastTransitionTime");
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", "Ready", "status", status,
			 "reason", reason, "message", message, "lastTransitionTime", now,
			 "observedGeneration", (json_int_t)gen);
}

/* The pod's PodScheduled condition as the Sandbox's own (NULL without one):
 * whether, and why not, the scheduler has placed the pod. */
static json_t *scheduled_condition(const json_t *sandbox, const json_t *pod, const char *now)
{
	const json_t *c = pod_condition(pod, "PodScheduled");
	const char *status = sbx_json_str(c, "status");
	long long gen = 0;

	if (!c || !status)
		return NULL;
	sbx_json_int(sandbox, "metadata.generation", &gen);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", "PodScheduled", "status", status,
			 "reason",
			 sbx_json_str(c, "reason")
				 ?: (strcmp(status, "True") == 0 ? "Scheduled" : "Unschedulable"),
			 "message", sbx_json_str(c, "message") ?: "", "lastTransitionTime",
			 sbx_json_str(c, "lastTransitionTime") ?: now, "observedGeneration",
			 (json_int_t)gen);
}

static const char *sandbox_phase(const json_t *sandbox, const json_t *pod, bool expired)
{
	const char *pp = sbx_json_str(pod, "status.phase");
	const json_t *ready = pod_condition(pod, "Ready");

	if (expired)
		return "Expired";
	if (sbx_json_bool(sandbox, "spec.paused", false))
		return "Paused";
	if (!pod)
		return "Pending";
	if (pp && (strcmp(pp, "Failed") == 0 || strcmp(pp, "Succeeded") == 0))
		return "Failed";
	if (pp && strcmp(pp, "Running") == 0 && ready &&
	    strcmp(sbx_json_str(ready, "status") ?: "", "True") == 0)
		return "Running";
	return "Pending";
}

static json_t *endpoints(const json_t *sandbox, const char *id, const char *fqdn,
			 const struct sandbox_settings *s)
{
	json_t *out = json_array(), *p, *exposed = exposed_ports(json_object_get(sandbox, "spec"));
	size_t i;
	char url[1024];

	json_array_foreach(exposed, i, p)
	{
		long long port = json_integer_value(json_object_get(p, "port"));

		/* Through the gateway when there is one; else the Service, in-cluster. */
		if (s->gateway_url && *s->gateway_url)
			snprintf(url, sizeof(url), "%s%ssandboxes/%s/port/%lld", s->gateway_url,
				 s->gateway_url[strlen(s->gateway_url) - 1] == '/' ? "" : "/", id,
				 port);
		else
			snprintf(url, sizeof(url), "http://%s:%lld", fqdn, port);
		json_array_append_new(out, json_pack("{s:O, s:I, s:s}", "name",
						     json_object_get(p, "name"), "port",
						     (json_int_t)port, "url", url));
	}
	json_decref(exposed);
	return out;
}

/* status.egress: the policy the operator wrote for the sidecar (NULL when
 * spec.egress is not set). */
static json_t *egress_status(const json_t *sandbox, const char *id,
			     const struct sandbox_settings *s)
{
	const json_t *egress = json_object_get(json_object_get(sandbox, "spec"), "egress");
	json_t *cm = sandbox_egress_config(sandbox, id, s), *st;

	if (!cm)
		return NULL;
	st = json_pack("{s:s?, s:s?, s:O, s:I}", "configMap", sbx_json_str(cm, "metadata.name"),
		       "policyHash",
		       json_string_value(json_object_get(
			       json_object_get(json_object_get(cm, "metadata"), "annotations"),
			       SANDBOX_POLICY_HASH_ANNOTATION)),
		       "defaultAction", json_object_get(egress, "defaultAction"), "rules",
		       (json_int_t)json_array_size(json_object_get(egress, "rules")));
	json_decref(cm);
	return st;
}

json_t *sandbox_status(const json_t *sandbox, const char *id, const json_t *pod,
		       const struct sandbox_settings *s, const char *now, bool expired)
{
	const char *name = sbx_json_str(sandbox, "metadata.name");
	const char *ns = sbx_json_str(sandbox, "metadata.namespace");
	const char *phase = sandbox_phase(sandbox, pod, expired);
	long long gen = 0;
	char fqdn[512], when[32];
	json_t *st, *egress;
	time_t exp;

	snprintf(fqdn, sizeof(fqdn), "%s.%s.svc.%s", name ?: "", ns ?: "",
		 s->cluster_domain ?: "cluster.local");
	sbx_json_int(sandbox, "metadata.generation", &gen);
	st = json_pack("{s:s, s:s, s:s, s:s, s:o, s:[o], s:I}", "id", id, "phase", phase,
		       "serviceName", name ?: "", "serviceFQDN", fqdn, "endpoints",
		       endpoints(sandbox, id, fqdn, s), "conditions",
		       ready_condition(sandbox, pod, phase, now), "observedGeneration",
		       (json_int_t)gen);
	if (pod && strcmp(phase, "Paused") != 0 && strcmp(phase, "Expired") != 0) {
		json_t *sched = scheduled_condition(sandbox, pod, now);

		copy_field(st, "podName", json_object_get(pod, "metadata"), "name");
		copy_field(st, "podIP", json_object_get(pod, "status"), "podIP");
		if (sched)
			json_array_append_new(json_object_get(st, "conditions"), sched);
	}
	if (sandbox_expiry(sandbox, &exp) == 0) {
		format_time(exp, when, sizeof(when));
		json_object_set_new(st, "expiresAt", json_string(when));
	}
	if ((egress = egress_status(sandbox, id, s)))
		json_object_set_new(st, "egress", egress);
	return st;
}

bool sandbox_status_equal(const json_t *a, const json_t *b)
{
	return a && b && json_equal(a, b);
}

const char *sandbox_egress_sidecar_ip(const json_t *pod)
{
	const json_t *st = json_object_get(pod, "status"), *c;
	size_t i;

	json_array_foreach(json_object_get(st, "initContainerStatuses"), i,
			   c) if (strcmp(sbx_json_str(c, "name") ?: "", "sbx-egress") == 0 &&
				  sbx_json_bool(c, "started", false)) return sbx_json_str(st,
											  "podIP");
	return NULL;
}

bool sandbox_status_egress(json_t *status, const json_t *sandbox, const json_t *pod,
			   const struct sandbox_egress_seen *seen, const char *now)
{
	json_t *egress = json_object_get(status, "egress"), *conds, *c;
	const char *want = sbx_json_str(egress, "policyHash") ?: "", *st, *reason;
	const json_t *old = NULL;
	char msg[512];
	size_t i;

	if (!egress || !pod || !sandbox_egress_sidecar_ip(pod) ||
	    strcmp(sbx_json_str(status, "phase") ?: "", "Running") != 0)
		return false;
	json_array_foreach(json_object_get(json_object_get(sandbox, "status"), "conditions"), i, c)
	{
		if (strcmp(sbx_json_str(c, "type") ?: "", "EgressPolicyApplied") == 0)
			old = c;
	}
	if (!seen && old) {
		/* Not asked since this operator started: what was last written
		 * stays until the sidecar answers (no flapping on a restart). */
		const json_t *applied = json_object_get(
			json_object_get(json_object_get(sandbox, "status"), "egress"), "applied");

		if (applied)
			json_object_set(egress, "applied", (json_t *)applied);
		if ((conds = json_object_get(status, "conditions")))
			json_array_append(conds, (json_t *)old);
		return true;
	}
	if (seen && seen->reachable)
		json_object_set_new(egress, "applied",
				    json_pack("{s:s, s:I, s:s}", "policyHash", seen->hash,
					      "generation", (json_int_t)seen->generation, "source",
					      seen->from_api ? "api" : "file"));
	if (!seen) {
		st = "Unknown", reason = "NotAskedYet";
		snprintf(msg, sizeof(msg), "the sidecar has not been asked yet");
	} else if (!seen->reachable) {
		st = "Unknown", reason = "SidecarUnreachable";
		snprintf(msg, sizeof(msg),
			 "GET /readyz on the sidecar (port %d) failed; asked again shortly",
			 SANDBOX_EGRESS_HEALTH_PORT);
	} else if (seen->from_api) {
		st = "False", reason = "AdminAPIPolicy";
		snprintf(msg, sizeof(msg),
			 "a policy set through the sidecar's admin API is in force; the "
			 "ConfigMap's returns with its next change or DELETE /policy");
	} else if (strcmp(seen->hash, want) == 0) {
		st = "True", reason = "Applied";
		snprintf(msg, sizeof(msg), "the sidecar enforces the ConfigMap's policy %s", want);
	} else {
		st = "False", reason = "Propagating";
		snprintf(msg, sizeof(msg),
			 "the sidecar enforces policy %s; %s is in the ConfigMap and applies "
			 "when the kubelet updates the pod's volume (about a minute)",
			 *seen->hash ? seen->hash : "(none)", want);
	}
	if (old && strcmp(sbx_json_str(old, "status") ?: "", st) == 0 &&
	    sbx_json_str(old, "lastTransitionTime"))
		now = sbx_json_str(old, "lastTransitionTime");
	if (!(conds = json_object_get(status, "conditions")))
		return false;
	json_array_append_new(conds, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type",
					       "EgressPolicyApplied", "status", st, "reason",
					       reason, "message", msg, "lastTransitionTime", now));
	return strcmp(st, "True") != 0;
}
