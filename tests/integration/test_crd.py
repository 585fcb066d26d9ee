"""The Sandbox CRD (manifests/crd/sbx.dev_sandboxes.yaml) on a real apiserver:
defaults, the validation a user meets with `kubectl apply`, immutable fields,
`kubectl explain`, and the printer columns of `kubectl get sbx`."""

from __future__ import annotations

import json

import pytest
import yaml


def sandbox(name: str, **spec) -> str:
    spec.setdefault("image", "sbx.local/sandbox-base:dev")
    if spec["image"] is None:
        del spec["image"]
    return yaml.safe_dump({"apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox",
                           "metadata": {"name": name}, "spec": spec})


def apply(cp, ns: str, text: str):
    return cp.kubectl("-n", ns, "apply", "-f", "-", input=text, check=False)


def test_a_minimal_sandbox_gets_its_defaults(crd, namespace):
    r = apply(crd, namespace, sandbox("s1"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(crd.kubectl("-n", namespace, "get", "sbx", "s1", "-o", "json").stdout)
    assert obj["spec"]["agent"] == {"enabled": True, "port": 8080}
    assert obj["spec"]["expiryPolicy"] == "Delete" and obj["spec"]["paused"] is False
    # The short name, the category and the printer columns.
    out = crd.kubectl("-n", namespace, "get", "sbx").stdout.splitlines()
    assert out[0].split() == ["NAME", "ID", "PHASE", "ENDPOINT", "AGE"]
    assert out[1].startswith("s1 ")
    assert "s1" in crd.kubectl("-n", namespace, "get", "sbx,pods", "-o", "name").stdout


def test_a_full_sandbox_is_accepted(crd, namespace):
    r = apply(crd, namespace, sandbox(
        "full", command=["python3", "-m", "http.server", "3000"], args=[], workingDir="/work",
        env=[{"name": "MODE", "value": "demo"},
             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        resources={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi", "cpu": 2}},
        ports=[{"name": "web", "port": 3000}, {"port": 6080}],
        ttlSeconds=3600, expiryPolicy="Retain",
        egress={"defaultAction": "deny", "rules": [
            {"action": "allow", "target": "pypi.org"}, {"action": "allow", "target": "*.pythonhosted.org"},
            {"action": "deny", "target": "10.0.0.0/8"}, {"action": "allow", "target": "2001:db8::1"},
            {"action": "allow", "target": "Example.COM."}]},
        runtimeClassName="gvisor", nodeSelector={"pool": "sandboxes"},
        tolerations=[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}]))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("spec, message", [
    ({"image": ""}, "spec.image"),
    ({"image": None}, "spec.image: Required value"),
    ({"ports": [{"port": 0}]}, "should be greater than or equal to 1"),
    ({"ports": [{"port": 70000}]}, "should be less than or equal to 65535"),
    ({"ports": [{"port": 3000}, {"port": 3000}]}, "Duplicate value"),
    ({"ports": [{"name": "web", "port": 3000}, {"name": "web", "port": 3001}]}, "port names must be unique"),
    ({"ports": [{"port": 8080}]}, "a declared port cannot be the agent's port"),
    ({"ports": [{"name": "Web!", "port": 3000}]}, "spec.ports[0].name"),
    ({"ttlSeconds": 5}, "should be greater than or equal to 60"),
    ({"expiryPolicy": "Forever"}, "Unsupported value: \"Forever\""),
    ({"expiresAt": "tomorrow"}, "spec.expiresAt"),
    ({"egress": {"rules": []}}, "spec.egress.defaultAction: Required value"),
    ({"egress": {"defaultAction": "deny", "rules": [{"action": "allow", "target": "bad name!"}]}},
     "must be a DNS name, *.name, *, an IP address or a CIDR"),
    ({"egress": {"defaultAction": "deny", "rules": [{"action": "allow", "target": "10.0.0.0/33"}]}},
     "must be a DNS name"),
    ({"egress": {"defaultAction": "maybe"}}, "Unsupported value: \"maybe\""),
    ({"egress": {"defaultAction": "deny"}, "ports": [{"port": 15380}]},
     "ports 15353 and 15380 belong to the egress sidecar"),
    ({"egress": {"defaultAction": "deny"}, "agent": {"port": 15353}},
     "ports 15353 and 15380 belong to the egress sidecar"),
    ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "hostPath volumes are not allowed"),
    ({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, "every volumeMount names a volume"),
    ({"volumes": [{"name": "v", "emptyDir": {}}], "volumeMounts": [{"name": "v", "mountPath": "/opt/sbx"}]},
     "/opt/sbx is where the agent lives"),
    ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
])
def test_invalid_sandboxes_are_refused_with_a_message_that_names_the_field(crd, namespace, spec, message):
    r = apply(crd, namespace, sandbox("bad", **spec))
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert r.stderr.startswith('The Sandbox "bad" is invalid: ')


def test_the_agent_and_the_id_cannot_change(crd, namespace):
    assert apply(crd, namespace, sandbox("s2")).returncode == 0
    r = crd.kubectl("-n", namespace, "patch", "sbx", "s2", "--type=merge",
                    "-p", '{"spec":{"agent":{"port":9000}}}', check=False)
    assert r.returncode != 0 and "spec.agent is immutable" in r.stderr
    # The status subresource: the operator's id, assigned once.
    crd.kubectl("-n", namespace, "patch", "sbx", "s2", "--subresource=status", "--type=merge",
                "-p", '{"status":{"id":"s2-abc12","phase":"Pending"}}')
    r = crd.kubectl("-n", namespace, "patch", "sbx", "s2", "--subresource=status", "--type=merge",
                    "-p", '{"status":{"id":"other"}}', check=False)
    assert r.returncode != 0 and "status.id never changes once assigned" in r.stderr
    # Spec and status are separate: a spec write does not touch status.
    crd.kubectl("-n", namespace, "patch", "sbx", "s2", "--type=merge", "-p", '{"spec":{"paused":true}}')
    obj = json.loads(crd.kubectl("-n", namespace, "get", "sbx", "s2", "-o", "json").stdout)
    assert obj["status"]["id"] == "s2-abc12" and obj["spec"]["paused"] is True


def test_kubectl_explain_teaches_the_spec(crd):
    out = crd.kubectl("explain", "sandbox.spec").stdout
    assert "What the sandbox runs and what it may reach." in out
    for field in ("image", "ports", "agent", "egress", "ttlSeconds", "paused"):
        assert f"  {field}\t" in out or f"  {field} " in out, field
    out = crd.kubectl("explain", "sandbox.spec.egress.rules.target").stdout
    assert "*.pypi.org" in out
