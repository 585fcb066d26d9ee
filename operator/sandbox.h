/* What a Sandbox should be made of: its pod, Service and NetworkPolicy, and
 * its status, as pure functions of the Sandbox object, the operator's
 * settings and what was observed. No I/O here, so every rule is unit-tested
 * (tests/unit/operator/test_sandbox.c); reconcile.c sends what these build.
 *
 * Every child is named after the Sandbox, carries the labels sbx.dev/sandbox
 * (the Sandbox's name) and sbx.dev/id, a controller ownerReference to the
 * Sandbox, and the annotation sbx.dev/spec-hash: a digest of what was asked
 * for, so the operator writes a child only when that changes.
 */
#ifndef SBX_OPERATOR_SANDBOX_H
#define SBX_OPERATOR_SANDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SANDBOX_LABEL		"sbx.dev/sandbox"
#define SANDBOX_ID_LABEL	"sbx.dev/id"
#define SANDBOX_HASH_ANNOTATION "sbx.dev/spec-hash"
#define SANDBOX_API_VERSION	"sbx.dev/v1alpha1"

struct sandbox_settings {
	const char *agent_image;       /* image holding the agent bundle at /opt/sbx */
	const char *gateway_url;       /* base of endpoint URLs, e.g. https://sbx.example.com */
	const char *cluster_domain;    /* cluster.local */
	const char *ingress_namespace; /* where sbx-ingress runs */
	const char *ingress_pod_label; /* "key=value" selecting sbx-ingress pods */
	const char *const *deny_cidrs; /* egress never reaches these (NULL-terminated) */
	const char *egress_image;      /* the sbx-egress sidecar, for spec.egress */
	/* Written into every egress policy, above the Sandbox's own rules
	 * (NULL-terminated; NULL: none). */
	const char *const *egress_always_allow;
	const char *const *egress_always_deny;
	/* The operator's own pods ("key=value" in operator_namespace), which a
	 * Sandbox with spec.egress admits on the sidecar's health port to read
	 * what it applied; NULL: no such rule (the operator runs elsewhere). */
	const char *operator_namespace;
	const char *operator_pod_label;
};

/* What the egress sidecar of a Sandbox's pod said it enforces (its /readyz). */
struct sandbox_egress_seen {
	bool reachable;	 /* false: the last GET failed */
	char hash[33];	 /* the policy-hash it applied ("" without one) */
	long generation; /* policies it applied since it started */
	bool from_api;	 /* its admin API's policy is in force, not the ConfigMap's */
};

/* Where the egress sidecar finds its policy, and its health port. */
#define SANDBOX_EGRESS_DIR	       "/etc/sbx/egress"
#define SANDBOX_EGRESS_FILE	       "policy.json"
#define SANDBOX_EGRESS_HASH_FILE       "policy-hash"
#define SANDBOX_EGRESS_HEALTH_PORT     15380
#define SANDBOX_POLICY_HASH_ANNOTATION "sbx.dev/policy-hash"

/* A new id for a Sandbox called name: name (cut to 57) + "-" + 5 random
 * characters, a DNS label. out needs 64 bytes. */
void sandbox_new_id(const char *name, char *out, size_t size);

/* The children for sandbox with the given id. Each returns a new object, or
 * NULL with *err set to a message (an invalid spec the schema let through). */
json_t *sandbox_pod(const json_t *sandbox, const char *id, const struct sandbox_settings *s,
		    const char **err);
json_t *sandbox_service(const json_t *sandbox, const char *id, const struct sandbox_settings *s);
json_t *sandbox_network_policy(const json_t *sandbox, const char *id,
			       const struct sandbox_settings *s);
/* The ConfigMap holding the egress policy the sidecar enforces (data
 * policy.json: spec.egress plus the operator's always-allow and always-deny
 * lists; policy-hash: the text's digest, which the sidecar reports as the
 * policy it applied), or NULL when spec.egress is not set (then there is
 * none). */
json_t *sandbox_egress_config(const json_t *sandbox, const char *id,
			      const struct sandbox_settings *s);

/* Stamps obj's metadata.annotations[sbx.dev/spec-hash] with a digest of obj
 * (without that annotation). */
void sandbox_stamp_hash(json_t *obj);
/* True when child exists, is controlled by the Sandbox with this uid,
 * carries the same spec hash as desired, and has not drifted from it. */
bool sandbox_child_current(const json_t *child, const json_t *desired, const char *owner_uid);
/* True when someone changed what the operator set in child: a label, or (but
 * for pods) a field of desired's spec or data, compared as a subset so that
 * what the apiserver adds by default does not count. */
bool sandbox_child_drifted(const json_t *child, const json_t *desired);
/* True when child is controlled by the Sandbox with this uid. */
bool sandbox_child_owned(const json_t *child, const char *owner_uid);

/* When the Sandbox expires: spec.expiresAt, else creation + ttlSeconds.
 * 0, or -1 when it never does. */
int sandbox_expiry(const json_t *sandbox, time_t *out);

/* The status the Sandbox should show, given its pod (NULL: none yet) and
 * whether it has expired (with expiryPolicy Retain). now is an RFC 3339 time
 * for new condition transitions. Returns a new object; conditions keep their
 * lastTransitionTime while their status does not change. */
json_t *sandbox_status(const json_t *sandbox, const char *id, const json_t *pod,
		       const struct sandbox_settings *s, const char *now, bool expired);

/* True when the two status objects say the same thing. */
bool sandbox_status_equal(const json_t *a, const json_t *b);
/* For a Sandbox with spec.egress whose pod runs: status.egress.applied
 * (what seen says, NULL: not asked yet) and the condition
 * EgressPolicyApplied, True once the sidecar enforces the ConfigMap's
 * policy. Returns true when the sidecar should be asked (again). */
bool sandbox_status_egress(json_t *status, const json_t *sandbox, const json_t *pod,
			   const struct sandbox_egress_seen *seen, const char *now);
/* The pod's address when its egress sidecar has started (NULL otherwise). */
const char *sandbox_egress_sidecar_ip(const json_t *pod);

#endif
