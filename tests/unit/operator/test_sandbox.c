/* Unit tests for operator/sandbox.c: the children and the status a Sandbox
 * should have. (The reconciler that sends them is tested against a real
 * apiserver and node: tests/integration, tests/e2e.) */
#define _GNU_SOURCE
#include "unit.h"

#include "sandbox.c"

static const char *const deny[] = { "10.0.0.0/8", "169.254.169.254/32", NULL };
static const struct sandbox_settings settings = {
	.agent_image = "sbx.local/sbx-agent:dev",
	.gateway_url = "https://sbx.example.com",
	.cluster_domain = "cluster.local",
	.ingress_namespace = "sbx-system",
	.ingress_pod_label = "app.kubernetes.io/name=sbx-ingress",
	.deny_cidrs = deny,
	.egress_image = "sbx.local/sbx-egress:dev",
	.egress_always_deny = deny,
};

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, 0, &e);

	if (!v)
		fail_msg("bad JSON in test: %s", e.text);
	return v;
}

static json_t *minimal(void)
{
	return load("{\"apiVersion\":\"sbx.dev/v1alpha1\",\"kind\":\"Sandbox\","
		    "\"metadata\":{\"name\":\"s1\",\"namespace\":\"team-a\",\"uid\":\"u-1\","
		    "\"generation\":3,\"creationTimestamp\":\"2026-12-03T10:00:00Z\"},"
		    "\"spec\":{\"image\":\"debian:12\",\"agent\":{\"enabled\":true,\"port\":8080},"
		    "\"ports\":[{\"name\":\"web\",\"port\":3000},{\"port\":6080}]}}");
}

static char *dump(const json_t *v, const char *path)
{
	const json_t *x = v;
	char key[128];

	/* path: keys and [i] indexes separated by dots */
	for (const char *p = path; x && *p;) {
		size_t n = strcspn(p, ".");

		snprintf(key, sizeof(key), "%.*s", (int)n, p);
		x = key[0] == '[' ? json_array_get(x, (size_t)atoi(key + 1))
				  : json_object_get(x, key);
		p += n + (p[n] == '.');
	}
	return x ? json_dumps(x, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
}

#define assert_json(v, path, expected)                 \
	do {                                           \
		char *got_ = dump((v), (path));        \
		assert_string_equal(got_, (expected)); \
		free(got_);                            \
	} while (0)

static void ids_are_dns_labels_that_start_with_the_name(void **state)
{
	char id[64], id2[64];
	char long_name[80];

	sandbox_new_id("agent-7", id, sizeof(id));
	assert_int_equal(strlen(id), strlen("agent-7") + 6);
	assert_true(strncmp(id, "agent-7-", 8) == 0);
	sandbox_new_id("agent-7", id2, sizeof(id2));
	assert_string_not_equal(id, id2);
	memset(long_name, 'a', 70);
	long_name[56] = '-';
	long_name[70] = '\0';
	sandbox_new_id(long_name, id, sizeof(id));
	assert_true(strlen(id) <= 63);
	/* No "--": a trailing dash of the cut name is dropped. */
	assert_null(strstr(id, "--"));
	(void)state;
}

static void the_pod_runs_the_image_under_the_injected_agent(void **state)
{
	json_t *sbx = minimal(), *pod;
	const char *err = NULL;

	json_object_set_new(json_object_get(sbx, "spec"), "command",
			    json_pack("[s, s]", "python3", "app.py"));
	json_object_set_new(json_object_get(sbx, "spec"), "args", json_pack("[s]", "--debug"));
	pod = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_non_null(pod);
	assert_json(pod, "metadata.name", "\"s1\"");
	assert_json(pod, "metadata.namespace", "\"team-a\"");
	assert_json(
		pod, "metadata.labels",
		"{\"app.kubernetes.io/managed-by\":\"sbx-operator\",\"sbx.dev/id\":\"s1-abcde\","
		"\"sbx.dev/sandbox\":\"s1\"}");
	assert_json(pod, "metadata.ownerReferences",
		    "[{\"apiVersion\":\"sbx.dev/v1alpha1\",\"blockOwnerDeletion\":true,"
		    "\"controller\":true,\"kind\":\"Sandbox\",\"name\":\"s1\",\"uid\":\"u-1\"}]");
	assert_json(pod, "spec.automountServiceAccountToken", "false");
	assert_json(pod, "spec.securityContext",
		    "{\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}");
	assert_json(pod, "spec.initContainers.[0].image", "\"sbx.local/sbx-agent:dev\"");
	assert_json(pod, "spec.initContainers.[0].args", "[\"install\",\"/sbx\"]");
	assert_json(pod, "spec.containers.[0].image", "\"debian:12\"");
	assert_json(
		pod, "spec.containers.[0].command",
		"[\"/opt/sbx/bin/sbx-agent\",\"run\",\"--\",\"python3\",\"app.py\",\"--debug\"]");
	assert_json(pod, "spec.containers.[0].args", "null");
	assert_json(pod, "spec.containers.[0].securityContext",
		    "{\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":[\"ALL\"]}}");
	assert_json(pod, "spec.containers.[0].ports",
		    "[{\"containerPort\":8080,\"name\":\"agent\",\"protocol\":\"TCP\"},"
		    "{\"containerPort\":3000,\"name\":\"web\",\"protocol\":\"TCP\"},"
		    "{\"containerPort\":6080,\"name\":\"port-6080\",\"protocol\":\"TCP\"}]");
	assert_json(pod, "spec.containers.[0].volumeMounts",
		    "[{\"mountPath\":\"/opt/sbx\",\"name\":\"sbx-agent\",\"readOnly\":true}]");
	assert_json(pod, "spec.containers.[0].readinessProbe.httpGet",
		    "{\"path\":\"/v1/ping\",\"port\":8080}");
	assert_json(pod, "spec.volumes", "[{\"emptyDir\":{},\"name\":\"sbx-agent\"}]");
	assert_json(pod, "spec.containers.[0].env",
		    "[{\"name\":\"SBX_AGENT_LISTEN\",\"value\":\":8080\"}]");
	json_decref(pod);
	json_decref(sbx);
	(void)state;
}

static void without_a_command_the_agent_runs_alone_and_a_disabled_agent_is_not_injected(
	void **state)
{
	json_t *sbx = minimal(), *pod;
	const char *err = NULL;

	pod = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_json(pod, "spec.containers.[0].command", "[\"/opt/sbx/bin/sbx-agent\"]");
	json_decref(pod);
	json_object_set_new(json_object_get(sbx, "spec"), "agent",
			    json_pack("{s:b, s:i}", "enabled", 0, "port", 8000));
	json_object_set_new(json_object_get(sbx, "spec"), "args", json_pack("[s]", "serve"));
	pod = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_json(pod, "spec.initContainers", "null");
	assert_json(pod, "spec.volumes", "null");
	assert_json(pod, "spec.containers.[0].command", "null");
	assert_json(pod, "spec.containers.[0].args", "[\"serve\"]");
	assert_json(pod, "spec.containers.[0].ports.[0]",
		    "{\"containerPort\":8000,\"name\":\"agent\",\"protocol\":\"TCP\"}");
	json_decref(pod);
	json_object_del(json_object_get(sbx, "spec"), "image");
	assert_null(sandbox_pod(sbx, "s1-abcde", &settings, &err));
	assert_string_equal(err, "spec.image is missing");
	json_decref(sbx);
	(void)state;
}

static void the_escape_hatch_reaches_the_pod(void **state)
{
	json_t *sbx = minimal(), *pod;
	const char *err = NULL;
	json_t *spec = json_object_get(sbx, "spec");

	json_object_set_new(spec, "serviceAccountName", json_string("builder"));
	json_object_set_new(spec, "runtimeClassName", json_string("gvisor"));
	json_object_set_new(spec, "volumes",
			    json_pack("[{s:s, s:{}}]", "name", "data", "emptyDir"));
	json_object_set_new(spec, "volumeMounts",
			    json_pack("[{s:s, s:s}]", "name", "data", "mountPath", "/data"));
	json_object_set_new(spec, "env", json_pack("[{s:s, s:s}]", "name", "MODE", "value", "x"));
	json_object_set_new(spec, "workingDir", json_string("/work"));
	pod = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_json(pod, "spec.automountServiceAccountToken", "true");
	assert_json(pod, "spec.serviceAccountName", "\"builder\"");
	assert_json(pod, "spec.runtimeClassName", "\"gvisor\"");
	assert_json(pod, "spec.volumes.[1]", "{\"emptyDir\":{},\"name\":\"data\"}");
	assert_json(pod, "spec.containers.[0].volumeMounts.[1]",
		    "{\"mountPath\":\"/data\",\"name\":\"data\"}");
	assert_json(pod, "spec.containers.[0].env",
		    "[{\"name\":\"MODE\",\"value\":\"x\"},"
		    "{\"name\":\"SBX_AGENT_LISTEN\",\"value\":\":8080\"},"
		    "{\"name\":\"WORKSPACE\",\"value\":\"/work\"}]");
	assert_json(pod, "spec.containers.[0].workingDir", "\"/work\"");
	json_decref(pod);
	json_decref(sbx);
	(void)state;
}

static void the_service_and_the_policy_expose_the_declared_ports_only(void **state)
{
	json_t *sbx = minimal(), *svc, *np;

	svc = sandbox_service(sbx, "s1-abcde", &settings);
	assert_json(svc, "spec.type", "\"ClusterIP\"");
	assert_json(svc, "spec.selector", "{\"sbx.dev/id\":\"s1-abcde\"}");
	assert_json(
		svc, "spec.ports",
		"[{\"name\":\"agent\",\"port\":8080,\"protocol\":\"TCP\",\"targetPort\":8080},"
		"{\"name\":\"web\",\"port\":3000,\"protocol\":\"TCP\",\"targetPort\":3000},"
		"{\"name\":\"port-6080\",\"port\":6080,\"protocol\":\"TCP\",\"targetPort\":6080}]");
	np = sandbox_network_policy(sbx, "s1-abcde", &settings);
	assert_json(np, "spec.podSelector", "{\"matchLabels\":{\"sbx.dev/id\":\"s1-abcde\"}}");
	assert_json(np, "spec.policyTypes", "[\"Ingress\",\"Egress\"]");
	assert_json(
		np, "spec.ingress",
		"[{\"from\":[{\"namespaceSelector\":{\"matchLabels\":{\"kubernetes.io/metadata.name\":"
		"\"sbx-system\"}},\"podSelector\":{\"matchLabels\":{\"app.kubernetes.io/name\":"
		"\"sbx-ingress\"}}}],\"ports\":[{\"port\":8080,\"protocol\":\"TCP\"},"
		"{\"port\":3000,\"protocol\":\"TCP\"},{\"port\":6080,\"protocol\":\"TCP\"}]}]");
	assert_json(np, "spec.egress.[0].ports",
		    "[{\"port\":53,\"protocol\":\"UDP\"},{\"port\":53,\"protocol\":\"TCP\"}]");
	assert_json(np, "spec.egress.[1].to",
		    "[{\"ipBlock\":{\"cidr\":\"0.0.0.0/0\",\"except\":[\"10.0.0.0/8\","
		    "\"169.254.169.254/32\"]}}]");
	json_decref(svc);
	json_decref(np);
	json_decref(sbx);
	(void)state;
}

static void a_child_is_current_only_when_owned_and_unchanged(void **state)
{
	json_t *sbx = minimal(), *a, *b;
	const char *err = NULL;

	a = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	b = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_true(sandbox_child_current(a, b, "u-1"));
	assert_false(sandbox_child_current(a, b, "u-2")); /* another Sandbox's */
	assert_false(sandbox_child_current(NULL, b, "u-1"));
	json_decref(b);
	json_object_set_new(json_object_get(sbx, "spec"), "image", json_string("debian:13"));
	b = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	assert_false(sandbox_child_current(a, b, "u-1"));
	/* The hash ignores the annotation it is stored in: stamping again keeps it. */
	char *before = dump(b, "metadata.annotations");
	sandbox_stamp_hash(b);
	assert_json(b, "metadata.annotations", before);
	assert_int_equal(strlen(before), strlen("{\"sbx.dev/spec-hash\":\"\"}") + 32);
	free(before);
	json_decref(a);
	json_decref(b);
	/* What the apiserver adds by default is no drift; a changed or removed
	 * value of the operator's is. */
	a = sandbox_network_policy(sbx, "s1-abcde", &settings);
	b = json_deep_copy(a);
	json_object_set_new(json_object_get(b, "spec"), "added", json_string("by default"));
	assert_false(sandbox_child_drifted(b, a));
	json_array_clear(json_object_get(json_object_get(b, "spec"), "ingress"));
	assert_true(sandbox_child_drifted(b, a));
	json_decref(b);
	b = json_deep_copy(a);
	json_object_del(json_object_get(json_object_get(b, "metadata"), "labels"),
			SANDBOX_ID_LABEL);
	assert_true(sandbox_child_drifted(b, a));
	json_decref(a);
	json_decref(b);
	json_decref(sbx);
	(void)state;
}

static json_t *pod_with(const char *status)
{
	char text[1024];

	snprintf(text, sizeof(text), "{\"metadata\":{\"name\":\"s1\"},\"status\":%s}", status);
	return load(text);
}

static void the_status_follows_the_pod(void **state)
{
	json_t *sbx = minimal(), *st, *pod;

	st = sandbox_status(sbx, "s1-abcde", NULL, &settings, "2026-12-03T10:00:01Z", false);
	assert_json(st, "phase", "\"Pending\"");
	assert_json(st, "conditions.[0].reason", "\"PodNotCreated\"");
	assert_json(st, "serviceFQDN", "\"s1.team-a.svc.cluster.local\"");
	assert_json(st, "observedGeneration", "3");
	assert_json(st, "endpoints",
		    "[{\"name\":\"agent\",\"port\":8080,\"url\":"
		    "\"https://sbx.example.com/sandboxes/s1-abcde/port/8080\"},"
		    "{\"name\":\"web\",\"port\":3000,\"url\":"
		    "\"https://sbx.example.com/sandboxes/s1-abcde/port/3000\"},"
		    "{\"name\":\"port-6080\",\"port\":6080,\"url\":"
		    "\"https://sbx.example.com/sandboxes/s1-abcde/port/6080\"}]");
	json_object_set_new(sbx, "status", st);

	pod = pod_with("{\"phase\":\"Pending\",\"containerStatuses\":[{\"state\":{\"waiting\":"
		       "{\"reason\":\"ErrImagePull\",\"message\":\"no such image\"}}}]}");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:02Z", false);
	assert_json(st, "conditions.[0].reason", "\"ErrImagePull\"");
	assert_json(st, "conditions.[0].message", "\"no such image\"");
	/* Still False: the transition time of the first False stays. */
	assert_json(st, "conditions.[0].lastTransitionTime", "\"2026-12-03T10:00:01Z\"");
	json_decref(st);
	json_decref(pod);

	pod = pod_with(
		"{\"phase\":\"Pending\",\"conditions\":[{\"type\":\"PodScheduled\","
		"\"status\":\"False\",\"reason\":\"Unschedulable\",\"message\":\"0/1 nodes\"}]}");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:02Z", false);
	assert_json(st, "conditions.[0].reason", "\"Unschedulable\"");
	/* The pod's PodScheduled, mirrored. */
	assert_json(st, "conditions.[1].type", "\"PodScheduled\"");
	assert_json(st, "conditions.[1].status", "\"False\"");
	assert_json(st, "conditions.[1].message", "\"0/1 nodes\"");
	json_decref(st);
	json_decref(pod);

	pod = pod_with("{\"phase\":\"Running\",\"podIP\":\"10.244.0.7\",\"conditions\":"
		       "[{\"type\":\"Ready\",\"status\":\"True\"}]}");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:03Z", false);
	assert_json(st, "phase", "\"Running\"");
	assert_json(st, "podIP", "\"10.244.0.7\"");
	assert_json(st, "podName", "\"s1\"");
	assert_json(st, "conditions.[0].status", "\"True\"");
	assert_json(st, "conditions.[0].lastTransitionTime", "\"2026-12-03T10:00:03Z\"");
	/* Asked again with nothing changed: the same status, so no write. */
	json_object_set_new(sbx, "status", st);
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:05:00Z", false);
	assert_true(sandbox_status_equal(st, json_object_get(sbx, "status")));
	json_decref(st);

	json_object_set_new(json_object_get(sbx, "spec"), "paused", json_true());
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:06:00Z", false);
	assert_json(st, "phase", "\"Paused\"");
	assert_json(st, "podIP", "null");
	assert_json(st, "conditions.[0].reason", "\"Paused\"");
	json_decref(st);
	json_decref(pod);
	json_decref(sbx);
	(void)state;
}

static json_t *with_egress(const char *rules)
{
	json_t *sbx = minimal(), *eg = load(rules);

	json_object_set_new(json_object_get(sbx, "spec"), "egress", eg);
	return sbx;
}

/* The status says whether the pod's sidecar enforces the ConfigMap's
 * policy, from what its /readyz said. */
static void the_status_says_which_policy_the_sidecar_applies(void **state)
{
	json_t *sbx = with_egress("{\"defaultAction\":\"deny\",\"rules\":[]}"), *st, *pod;
	struct sandbox_egress_seen seen = { .reachable = true, .generation = 1 };
	char want[33];

	/* Not started yet: nothing to ask, no condition. */
	pod = pod_with("{\"phase\":\"Running\",\"podIP\":\"10.244.0.7\",\"conditions\":"
		       "[{\"type\":\"Ready\",\"status\":\"True\"}]}");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:00Z", false);
	assert_null(sandbox_egress_sidecar_ip(pod));
	assert_false(sandbox_status_egress(st, sbx, pod, NULL, "2026-12-03T10:00:00Z"));
	assert_int_equal(json_array_size(json_object_get(st, "conditions")), 1);
	json_decref(st);
	json_decref(pod);

	pod = pod_with("{\"phase\":\"Running\",\"podIP\":\"10.244.0.7\",\"conditions\":"
		       "[{\"type\":\"Ready\",\"status\":\"True\"}],\"initContainerStatuses\":"
		       "[{\"name\":\"sbx-egress\",\"started\":true,\"ready\":true}]}");
	assert_string_equal(sandbox_egress_sidecar_ip(pod), "10.244.0.7");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:01Z", false);
	assert_non_null(sbx_json_str(st, "egress.policyHash"));
	snprintf(want, sizeof(want), "%s", sbx_json_str(st, "egress.policyHash"));
	/* Not asked yet: Unknown, and ask. */
	assert_true(sandbox_status_egress(st, sbx, pod, NULL, "2026-12-03T10:00:01Z"));
	assert_json(st, "conditions.[1].type", "\"EgressPolicyApplied\"");
	assert_json(st, "conditions.[1].status", "\"Unknown\"");
	json_decref(st);

	/* The sidecar still on an older policy: False, Propagating; ask again. */
	snprintf(seen.hash, sizeof(seen.hash), "0123456789abcdef0123456789abcdef");
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:02Z", false);
	assert_true(sandbox_status_egress(st, sbx, pod, &seen, "2026-12-03T10:00:02Z"));
	assert_json(st, "conditions.[1].reason", "\"Propagating\"");
	assert_json(st, "egress.applied.policyHash", "\"0123456789abcdef0123456789abcdef\"");
	json_decref(st);

	/* The ConfigMap's: True, and nothing more to ask. */
	snprintf(seen.hash, sizeof(seen.hash), "%s", want);
	seen.generation = 2;
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:00:03Z", false);
	assert_false(sandbox_status_egress(st, sbx, pod, &seen, "2026-12-03T10:00:03Z"));
	assert_json(st, "conditions.[1].status", "\"True\"");
	assert_json(st, "conditions.[1].reason", "\"Applied\"");
	assert_json(st, "egress.applied.generation", "2");
	assert_json(st, "egress.applied.source", "\"file\"");
	json_object_set_new(sbx, "status", st);

	/* A restarted operator (nothing seen yet) keeps what was written. */
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:09:00Z", false);
	assert_true(sandbox_status_egress(st, sbx, pod, NULL, "2026-12-03T10:09:00Z"));
	assert_true(sandbox_status_equal(st, json_object_get(sbx, "status")));
	json_decref(st);

	/* The admin API's policy in force; then a sidecar that does not answer. */
	seen.from_api = true;
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:10:00Z", false);
	assert_true(sandbox_status_egress(st, sbx, pod, &seen, "2026-12-03T10:10:00Z"));
	assert_json(st, "conditions.[1].reason", "\"AdminAPIPolicy\"");
	assert_json(st, "conditions.[1].lastTransitionTime", "\"2026-12-03T10:10:00Z\"");
	json_decref(st);
	seen.reachable = false;
	st = sandbox_status(sbx, "s1-abcde", pod, &settings, "2026-12-03T10:11:00Z", false);
	assert_true(sandbox_status_egress(st, sbx, pod, &seen, "2026-12-03T10:11:00Z"));
	assert_json(st, "conditions.[1].reason", "\"SidecarUnreachable\"");
	assert_json(st, "egress.applied", "null");
	json_decref(st);
	json_decref(pod);
	json_decref(sbx);
	(void)state;
}

/* A Sandbox with spec.egress admits the operator's own pods on the
 * sidecar's health port (to read what it applied); one without does not,
 * and neither does an operator that runs outside the cluster. */
static void the_operator_may_ask_the_sidecar(void **state)
{
	struct sandbox_settings in = settings;
	json_t *sbx = with_egress("{\"defaultAction\":\"deny\",\"rules\":[]}"), *plain = minimal();
	json_t *np;

	in.operator_namespace = "sbx-system";
	in.operator_pod_label = "app.kubernetes.io/name=sbx-operator";
	np = sandbox_network_policy(sbx, "s1-abcde", &in);
	assert_json(np, "spec.ingress.[1]",
		    "{\"from\":[{\"namespaceSelector\":{\"matchLabels\":"
		    "{\"kubernetes.io/metadata.name\":\"sbx-system\"}},\"podSelector\":"
		    "{\"matchLabels\":{\"app.kubernetes.io/name\":\"sbx-operator\"}}}],"
		    "\"ports\":[{\"port\":15380,\"protocol\":\"TCP\"}]}");
	json_decref(np);
	np = sandbox_network_policy(plain, "s1-abcde", &in);
	assert_int_equal(json_array_size(json_object_get(json_object_get(np, "spec"), "ingress")),
			 1);
	json_decref(np);
	np = sandbox_network_policy(sbx, "s1-abcde", &settings);
	assert_int_equal(json_array_size(json_object_get(json_object_get(np, "spec"), "ingress")),
			 1);
	json_decref(np);
	json_decref(sbx);
	json_decref(plain);
	(void)state;
}

static void egress_adds_a_native_sidecar_and_a_policy_configmap(void **state)
{
	json_t *sbx = with_egress("{\"defaultAction\":\"deny\",\"rules\":"
				  "[{\"action\":\"allow\",\"target\":\"*.pypi.org\"}]}");
	json_t *plain = minimal();
	const char *err = NULL;
	json_t *pod = sandbox_pod(sbx, "s1-abcde", &settings, &err);
	json_t *cm = sandbox_egress_config(sbx, "s1-abcde", &settings);
	json_t *st =
		sandbox_status(sbx, "s1-abcde", NULL, &settings, "2026-12-03T10:00:00Z", false);
	json_t *policy;

	(void)state;
	assert_non_null(pod);
	/* First of the init containers, a sidecar, the only one with NET_ADMIN. */
	assert_json(pod, "spec.initContainers.[0].name", "\"sbx-egress\"");
	assert_json(pod, "spec.initContainers.[0].restartPolicy", "\"Always\"");
	assert_json(pod, "spec.initContainers.[0].securityContext.capabilities",
		    "{\"add\":[\"NET_ADMIN\"],\"drop\":[\"ALL\"]}");
	assert_json(pod, "spec.initContainers.[0].startupProbe.httpGet.path", "\"/readyz\"");
	assert_json(pod, "spec.initContainers.[1].name", "\"sbx-agent-install\"");
	assert_json(pod, "spec.containers.[0].securityContext.capabilities",
		    "{\"drop\":[\"ALL\"]}");
	assert_json(pod, "spec.volumes.[0].configMap.name", "\"s1\"");
	/* The ConfigMap: the rules and the operator's lists, owned and labelled. */
	assert_non_null(cm);
	assert_json(cm, "metadata.ownerReferences.[0].uid", "\"u-1\"");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_object_get(cm, "metadata"), "labels"),
				    SANDBOX_ID_LABEL)),
			    "s1-abcde");
	policy = load(
		json_string_value(json_object_get(json_object_get(cm, "data"), "policy.json")));
	assert_json(policy, "",
		    "{\"alwaysAllow\":[],\"alwaysDeny\":[\"10.0.0.0/8\",\"169.254.169.254/32\"],"
		    "\"defaultAction\":\"deny\",\"rules\":[{\"action\":\"allow\","
		    "\"target\":\"*.pypi.org\"}]}");
	assert_json(st, "egress.configMap", "\"s1\"");
	assert_json(st, "egress.rules", "1");
	assert_string_equal(sbx_json_str(st, "egress.policyHash"),
			    json_string_value(json_object_get(
				    json_object_get(json_object_get(cm, "metadata"), "annotations"),
				    SANDBOX_POLICY_HASH_ANNOTATION)));
	/* Without spec.egress: no ConfigMap, no sidecar, no status.egress. */
	assert_null(sandbox_egress_config(plain, "s1-abcde", &settings));
	json_decref(st);
	st = sandbox_status(plain, "s1-abcde", NULL, &settings, "2026-12-03T10:00:00Z", false);
	assert_null(json_object_get(st, "egress"));
	json_decref(policy);
	json_decref(cm);
	json_decref(pod);
	json_decref(st);
	json_decref(sbx);
	json_decref(plain);
}

static void a_rule_change_changes_the_configmap_and_not_the_pod(void **state)
{
	json_t *a = with_egress("{\"defaultAction\":\"deny\"}");
	json_t *b = with_egress("{\"defaultAction\":\"deny\",\"rules\":"
				"[{\"action\":\"allow\",\"target\":\"example.com\"}]}");
	const char *err = NULL;
	json_t *pa = sandbox_pod(a, "s1-abcde", &settings, &err);
	json_t *pb = sandbox_pod(b, "s1-abcde", &settings, &err);
	json_t *ca = sandbox_egress_config(a, "s1-abcde", &settings);
	json_t *cb = sandbox_egress_config(b, "s1-abcde", &settings);
	json_t *ca2 = sandbox_egress_config(a, "s1-abcde", &settings);
	struct sandbox_settings no_image = settings;

	(void)state;
	assert_true(sandbox_child_current(pb, pa, "u-1"));
	assert_false(sandbox_child_current(cb, ca, "u-1"));
	assert_true(sandbox_child_current(ca2, ca, "u-1")); /* the same policy, the same text */
	/* Edited by hand, with its hash left alone: drifted, so not current. */
	json_object_set_new(json_object_get(ca2, "data"), SANDBOX_EGRESS_FILE,
			    json_string("{\"defaultAction\":\"allow\"}"));
	assert_true(sandbox_child_drifted(ca2, ca));
	assert_false(sandbox_child_current(ca2, ca, "u-1"));
	/* An operator without the sidecar's image cannot build such a pod, and says why. */
	no_image.egress_image = NULL;
	assert_null(sandbox_pod(a, "s1-abcde", &no_image, &err));
	assert_non_null(strstr(err, "--egress-image"));
	json_decref(pa);
	json_decref(pb);
	json_decref(ca);
	json_decref(cb);
	json_decref(ca2);
	json_decref(a);
	json_decref(b);
}

static void expiry_comes_from_the_spec_or_the_ttl(void **state)
{
	json_t *sbx = minimal(), *st;
	const struct sandbox_settings no_gateway = { .cluster_domain = "cluster.local" };

	json_object_set_new(json_object_get(sbx, "spec"), "ttlSeconds", json_integer(3600));
	st = sandbox_status(sbx, "s1-abcde", NULL, &no_gateway, "2026-12-03T10:00:01Z", false);
	assert_json(st, "expiresAt", "\"2026-12-03T11:00:00Z\"");
	/* Without a gateway, URLs name the Service. */
	assert_json(st, "endpoints.[0].url", "\"http://s1.team-a.svc.cluster.local:8080\"");
	json_decref(st);
	json_object_set_new(json_object_get(sbx, "spec"), "expiresAt",
			    json_string("2027-01-01T00:00:00Z"));
	st = sandbox_status(sbx, "s1-abcde", NULL, &no_gateway, "2026-12-03T10:00:01Z", false);
	assert_json(st, "expiresAt", "\"2027-01-01T00:00:00Z\"");
	json_decref(st);
	/* Expired with Retain: no pod in the status, and the condition says why. */
	st = sandbox_status(sbx, "s1-abcde", NULL, &no_gateway, "2027-01-01T00:00:01Z", true);
	assert_json(st, "phase", "\"Expired\"");
	assert_json(st, "conditions.[0].reason", "\"Expired\"");
	json_decref(st);
	time_t t;
	json_object_del(json_object_get(sbx, "spec"), "expiresAt");
	json_object_del(json_object_get(sbx, "spec"), "ttlSeconds");
	assert_int_equal(sandbox_expiry(sbx, &t), -1);
	json_object_set_new(json_object_get(sbx, "spec"), "expiresAt",
			    json_string("2027-01-01T00:00:00.5Z"));
	assert_int_equal(sandbox_expiry(sbx, &t), 0);
	assert_int_equal((long long)t, 1798761600LL);
	json_decref(sbx);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ids_are_dns_labels_that_start_with_the_name),
		cmocka_unit_test(the_pod_runs_the_image_under_the_injected_agent),
		cmocka_unit_test(
			without_a_command_the_agent_runs_alone_and_a_disabled_agent_is_not_injected),
		cmocka_unit_test(the_escape_hatch_reaches_the_pod),
		cmocka_unit_test(the_service_and_the_policy_expose_the_declared_ports_only),
		cmocka_unit_test(a_child_is_current_only_when_owned_and_unchanged),
		cmocka_unit_test(the_status_follows_the_pod),
		cmocka_unit_test(egress_adds_a_native_sidecar_and_a_policy_configmap),
		cmocka_unit_test(the_status_says_which_policy_the_sidecar_applies),
		cmocka_unit_test(the_operator_may_ask_the_sidecar),
		cmocka_unit_test(a_rule_change_changes_the_configmap_and_not_the_pod),
		cmocka_unit_test(expiry_comes_from_the_spec_or_the_ttl),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
