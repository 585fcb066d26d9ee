"""sbx-operator against a real apiserver (and the controller-manager's
garbage collector): a Sandbox becomes a Pod, a Service and a NetworkPolicy
it owns, its status follows the pod, edits reach the children, a deleted
child comes back, a foreign object is never touched, and deleting the
Sandbox removes everything. There is no kubelet here: the test writes the
pod's status the way a kubelet would. (tests/e2e runs it on a real node.)"""

from __future__ import annotations

import ipaddress
import hashlib
import json
import subprocess
import tempfile
import time
import urllib.request

import pytest
import yaml

from conftest import assert_no_sanitizer_report, binary
from k8s_control_plane import free_port



def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (subprocess.CalledProcessError, KeyError, IndexError, TypeError) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})")


class Operator:
    def __init__(self, cp, tmp_path, *args):
        self.cp = cp
        self.port = free_port()
        self.log = tmp_path / "operator.log"
        self.proc = subprocess.Popen(
            [str(binary("operator/sbx-operator")), f"--kubeconfig={cp.kubeconfig}",
             f"--listen=127.0.0.1:{self.port}", "--gateway-url=https://sbx.example.com",
             "--agent-image=sbx.local/sbx-agent:test", "--egress-image=sbx.local/sbx-egress:test",
             "--log-level=debug", *args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        wait_for("the operator's /readyz", lambda: self.get("/readyz")[0] == 200)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name):
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(15) == 0
        assert_no_sanitizer_report(self.log.read_text())



@pytest.fixture
def operator(crd, tmp_path):
    op = Operator(crd, tmp_path)
    yield op
    op.stop()


def get(cp, ns, kind, name, check=True):
    r = cp.kubectl("-n", ns, "get", kind, name, "-o", "json", check=check)
    return json.loads(r.stdout) if r.returncode == 0 else None


def apply_sandbox(cp, ns, name, **spec):
    spec.setdefault("image", "sbx.local/sandbox-base:dev")
    cp.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": name},
         "spec": spec}))
    return get(cp, ns, "sandbox", name)


def be_kubelet(cp, ns, pod, ready=True, ip="10.244.0.9"):
    """Writes the status a kubelet would for a running (ready) pod."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                              "lastTransitionTime": now}]}
    cp.kubectl("-n", ns, "patch", "pod", pod, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": status}))


def test_a_sandbox_becomes_its_children_and_its_status_follows_the_pod(operator, namespace):
    cp = operator.cp
    sbx = apply_sandbox(cp, namespace, "s1", ports=[{"name": "web", "port": 3000}],
                        command=["sleep", "infinity"])
    uid = sbx["metadata"]["uid"]
    pod = wait_for("the pod", lambda: get(cp, namespace, "pod", "s1", check=False))
    svc = get(cp, namespace, "service", "s1")
    np = get(cp, namespace, "networkpolicy", "s1")
    for child in (pod, svc, np):
        ref = child["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Sandbox", "s1", uid, True)
        assert child["metadata"]["labels"]["sbx.dev/sandbox"] == "s1"
    st = wait_for("an id in status", lambda: get(cp, namespace, "sandbox", "s1").get("status"))
    sid = st["id"]
    assert sid.startswith("s1-") and len(sid) == 8
    assert pod["metadata"]["labels"]["sbx.dev/id"] == sid
    assert pod["spec"]["initContainers"][0]["image"] == "sbx.local/sbx-agent:test"
    assert pod["spec"]["containers"][0]["command"] == \
        ["/opt/sbx/bin/sbx-agent", "run", "--", "sleep", "infinity"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("agent", 8080), ("web", 3000)]
    assert svc["spec"]["selector"] == {"sbx.dev/id": sid}
    assert st["phase"] == "Pending" and st["serviceFQDN"] == f"s1.{namespace}.svc.cluster.local"
    assert [e["url"] for e in st["endpoints"]] == [
        f"https://sbx.example.com/sandboxes/{sid}/port/8080",
        f"https://sbx.example.com/sandboxes/{sid}/port/3000"]
    assert st["conditions"][0]["type"] == "Ready" and st["conditions"][0]["status"] == "False"

    be_kubelet(cp, namespace, "s1")
    st = wait_for("phase Running", lambda: (s := get(cp, namespace, "sandbox", "s1")["status"])
                  ["phase"] == "Running" and s)
    assert st["podIP"] == "10.244.0.9" and st["podName"] == "s1"
    assert st["conditions"][0]["status"] == "True" and st["conditions"][0]["reason"] == "SandboxReady"
    assert st["id"] == sid  # assigned once
    out = cp.kubectl("-n", namespace, "get", "sbx", "s1").stdout
    assert sid in out and "Running" in out and f"/sandboxes/{sid}/port/8080" in out

    # Settled: no more writes, however often the operator looks.
    writes = operator.metric("sbx_operator_status_writes_total")
    children = operator.metric("sbx_operator_child_writes_total")
    cp.kubectl("-n", namespace, "annotate", "sandbox", "s1", "touched=1")  # a pass, nothing new
    wait_for("a pass after the touch", lambda: operator.metric("sbx_operator_queue_depth") == 0)
    time.sleep(0.5)  # a pass that would write has had time to; none may
    assert operator.metric("sbx_operator_status_writes_total") == writes
    assert operator.metric("sbx_operator_child_writes_total") == children


def test_edits_reach_the_children_and_deleted_children_come_back(operator, namespace):
    cp = operator.cp
    apply_sandbox(cp, namespace, "s2")
    pod = wait_for("the pod", lambda: get(cp, namespace, "pod", "s2", check=False))
    # A new port: the Service gains it; the pod's ports cannot change in place,
    # so the pod is made anew.
    apply_sandbox(cp, namespace, "s2", ports=[{"port": 6080}])
    wait_for("the Service's new port", lambda: [p["port"] for p in get(
        cp, namespace, "service", "s2")["spec"]["ports"]] == [8080, 6080])
    new = wait_for("a new pod", lambda: (p := get(cp, namespace, "pod", "s2", check=False)) and
                   p["metadata"]["uid"] != pod["metadata"]["uid"] and
                   not p["metadata"].get("deletionTimestamp") and p)
    assert [p["containerPort"] for p in new["spec"]["containers"][0]["ports"]] == [8080, 6080]
    # A hand edit of a child is undone: here, a NetworkPolicy opened to every pod.
    np = get(cp, namespace, "networkpolicy", "s2")
    cp.kubectl("-n", namespace, "patch", "networkpolicy", "s2", "--type=merge",
               "-p", json.dumps({"spec": {"ingress": [{}]}}))
    wait_for("the NetworkPolicy restored", lambda: get(
        cp, namespace, "networkpolicy", "s2")["spec"]["ingress"] == np["spec"]["ingress"])
    cp.kubectl("-n", namespace, "label", "service", "s2", "sbx.dev/id=someone-else", "--overwrite")
    wait_for("the Service's label restored", lambda: get(
        cp, namespace, "service", "s2")["metadata"]["labels"]["sbx.dev/id"] == np["metadata"]["labels"]["sbx.dev/id"])
    # Deleted children come back.
    old_svc = get(cp, namespace, "service", "s2")["metadata"]["uid"]
    cp.kubectl("-n", namespace, "delete", "service/s2", "networkpolicy/s2", "--wait=false")
    wait_for("the Service again", lambda: (s := get(cp, namespace, "service", "s2", check=False))
             and s["metadata"]["uid"] != old_svc)
    wait_for("the NetworkPolicy again", lambda: get(cp, namespace, "networkpolicy", "s2", check=False))
    # Paused: the pod goes, the Service and the id stay.
    sid = get(cp, namespace, "sandbox", "s2")["status"]["id"]
    cp.kubectl("-n", namespace, "patch", "sandbox", "s2", "--type=merge", "-p", '{"spec":{"paused":true}}')
    wait_for("phase Paused", lambda: get(cp, namespace, "sandbox", "s2")["status"]["phase"] == "Paused")
    wait_for("no pod", lambda: (p := get(cp, namespace, "pod", "s2", check=False)) is None
             or p["metadata"].get("deletionTimestamp"))
    assert get(cp, namespace, "service", "s2") and get(cp, namespace, "sandbox", "s2")["status"]["id"] == sid
    cp.kubectl("-n", namespace, "patch", "sandbox", "s2", "--type=merge", "-p", '{"spec":{"paused":false}}')
    wait_for("the pod again", lambda: (p := get(cp, namespace, "pod", "s2", check=False))
             and not p["metadata"].get("deletionTimestamp"))
    assert get(cp, namespace, "sandbox", "s2")["status"]["id"] == sid


def egress_check(policy_text: str, *targets: str) -> dict:
    """sbx-egress check: target -> (verdict, deciding rule) under the policy."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        f.write(policy_text)
        f.flush()
        r = subprocess.run([str(binary("egress-sidecar/sbx-egress")), f"--policy-file={f.name}",
                            "check", *targets], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {line.split("\t")[0]: tuple(line.split("\t")[1:3]) for line in r.stdout.splitlines()}


def policy_of(cp, ns, name):
    cm = get(cp, ns, "configmap", name, check=False)
    return cm and (json.loads(cm["data"]["policy.json"]), cm)


def test_egress_rules_become_a_sidecar_and_a_configmap_that_follows_them(operator, namespace):
    cp = operator.cp
    rules = [{"action": "allow", "target": "*.pypi.org"}]
    sbx = apply_sandbox(cp, namespace, "eg", egress={"defaultAction": "deny", "rules": rules})
    pod = wait_for("the pod", lambda: get(cp, namespace, "pod", "eg", check=False))
    # The sidecar starts first, alone with NET_ADMIN, and gates the rest on its probe.
    side, install = pod["spec"]["initContainers"]
    assert (side["name"], side["image"], side["restartPolicy"]) == \
        ("sbx-egress", "sbx.local/sbx-egress:test", "Always")
    assert side["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert side["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert "--policy-file=/etc/sbx/egress/policy.json" in side["args"]
    assert side["volumeMounts"] == [{"name": "sbx-egress-policy", "mountPath": "/etc/sbx/egress",
                                     "readOnly": True}]
    for c in [install, *pod["spec"]["containers"]]:
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]
    vol = {v["name"]: v for v in pod["spec"]["volumes"]}["sbx-egress-policy"]
    assert vol["configMap"]["name"] == "eg"
    assert [i["key"] for i in vol["configMap"]["items"]] == ["policy.json", "policy-hash"]
    # The ConfigMap is the Sandbox's, and says what the sidecar enforces.
    policy, cm = wait_for("the ConfigMap", lambda: policy_of(cp, namespace, "eg"))
    ref = cm["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("Sandbox", sbx["metadata"]["uid"], True)
    assert policy["defaultAction"] == "deny" and policy["rules"] == rules
    assert policy["alwaysAllow"] == [] and "169.254.0.0/16" in policy["alwaysDeny"]
    st = wait_for("status.egress", lambda: get(cp, namespace, "sandbox", "eg")["status"]["egress"])
    assert st == {"configMap": "eg", "defaultAction": "deny", "rules": 1,
                  "policyHash": cm["metadata"]["annotations"]["sbx.dev/policy-hash"]}
    # The digest travels with the text, for the sidecar to report what it applied.
    assert cm["data"]["policy-hash"] == st["policyHash"] == \
        hashlib.sha256(cm["data"]["policy.json"].encode()).hexdigest()[:32]

    # A rule change reaches the ConfigMap (the sidecar's volume) and leaves the pod running.
    rules.append({"action": "allow", "target": "files.example.com"})
    apply_sandbox(cp, namespace, "eg", egress={"defaultAction": "deny", "rules": rules})
    wait_for("the new rule in the ConfigMap",
             lambda: policy_of(cp, namespace, "eg")[0]["rules"] == rules)
    # The sidecar's own parser takes the ConfigMap's text, and decides as the rules say.
    text = get(cp, namespace, "configmap", "eg")["data"]["policy.json"]
    metadata = next(i for i, t in enumerate(json.loads(text)["alwaysDeny"])
                    if ipaddress.ip_address("169.254.169.254") in ipaddress.ip_network(t))
    verdicts = egress_check(text, "x.pypi.org", "pypi.org", "files.example.com", "169.254.169.254")
    assert verdicts == {"x.pypi.org": ("allow", "rules[0]"), "pypi.org": ("deny", "defaultAction"),
                        "files.example.com": ("allow", "rules[1]"),
                        "169.254.169.254": ("deny", f"alwaysDeny[{metadata}]")}, verdicts
    new = wait_for("status.egress of the new policy",
                   lambda: (e := get(cp, namespace, "sandbox", "eg")["status"]["egress"])["rules"] == 2 and e)
    assert new["policyHash"] != st["policyHash"]
    assert get(cp, namespace, "pod", "eg")["metadata"]["uid"] == pod["metadata"]["uid"]
    # Someone edits the ConfigMap by hand: the operator puts the policy back.
    cp.kubectl("-n", namespace, "patch", "configmap", "eg", "--type=merge",
               "-p", json.dumps({"data": {"policy.json": '{"defaultAction":"allow"}'}}))
    wait_for("the policy restored", lambda: policy_of(cp, namespace, "eg")[0]["rules"] == rules)

    # Without spec.egress: no ConfigMap, no sidecar (a new pod: init containers are fixed).
    cp.kubectl("-n", namespace, "patch", "sandbox", "eg", "--type=json",
               "-p", '[{"op": "remove", "path": "/spec/egress"}]')
    wait_for("the ConfigMap gone", lambda: get(cp, namespace, "configmap", "eg", check=False) is None)
    plain = wait_for("a pod without the sidecar", lambda: (
        p := get(cp, namespace, "pod", "eg", check=False)) and not p["metadata"].get("deletionTimestamp")
        and p["metadata"]["uid"] != pod["metadata"]["uid"] and p)
    assert [c["name"] for c in plain["spec"]["initContainers"]] == ["sbx-agent-install"]
    wait_for("status without egress", lambda: "egress" not in get(cp, namespace, "sandbox", "eg")["status"])


def test_egress_without_a_sidecar_image_fails_with_a_reason(crd, namespace, tmp_path):
    op = Operator(crd, tmp_path, "--egress-image=")
    try:
        apply_sandbox(crd, namespace, "noeg", egress={"defaultAction": "allow"})
        st = wait_for("InvalidSpec", lambda: (s := get(crd, namespace, "sandbox", "noeg").get("status"))
                      and s["conditions"][0]["reason"] == "InvalidSpec" and s)
        assert st["phase"] == "Failed" and "--egress-image" in st["conditions"][0]["message"]
        assert get(crd, namespace, "pod", "noeg", check=False) is None
        # The rest of it is made: the Sandbox still has its Service and id.
        assert get(crd, namespace, "service", "noeg")["spec"]["selector"] == {"sbx.dev/id": st["id"]}
    finally:
        op.stop()


def test_a_child_the_apiserver_refuses_is_told_and_retried(operator, namespace):
    """An admission policy (as a cluster's policy engine would have) refuses the
    Service: the Sandbox says why, and gets its Service once the policy goes."""
    cp = operator.cp
    name = f"no-refused-services-{namespace[-6:]}"
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{
                      "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                      "resources": ["services"]}]},
                  "validations": [{"expression": "object.metadata.name != 'refused'",
                                   "message": "no Service may be called refused here"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": namespace}}}}}]))
    try:
        wait_for("the policy in force", lambda: cp.kubectl(
            "-n", namespace, "create", "service", "clusterip", "refused", "--tcp=80:80",
            "--dry-run=server", check=False).returncode != 0)
        apply_sandbox(cp, namespace, "refused")
        st = wait_for("ChildWriteFailed", lambda: (
            s := get(cp, namespace, "sandbox", "refused").get("status"))
            and s["conditions"][0]["reason"] == "ChildWriteFailed" and s)
        assert st["conditions"][0]["message"].startswith("cannot write the Service: ")
        assert "no Service may be called refused here" in st["conditions"][0]["message"]
        out = wait_for("the event in kubectl describe", lambda: (
            d := cp.kubectl("-n", namespace, "describe", "sandbox", "refused").stdout) and
            "ChildWriteFailed" in d and d)
        assert "Warning" in out
    finally:
        cp.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)
    # The cause is gone: a retry (backoff up to 30 s) makes the Service.
    wait_for("the Service", lambda: get(cp, namespace, "service", "refused", check=False), 45)
    wait_for("the reason gone", lambda: get(cp, namespace, "sandbox", "refused")["status"]
             ["conditions"][0]["reason"] != "ChildWriteFailed", 45)


def test_objects_it_does_not_own_are_never_touched(operator, namespace):
    cp = operator.cp
    cp.kubectl("-n", namespace, "create", "service", "clusterip", "s3", "--tcp=80:80")
    before = get(cp, namespace, "service", "s3")
    apply_sandbox(cp, namespace, "s3")
    st = wait_for("a ChildConflict", lambda: (s := get(cp, namespace, "sandbox", "s3").get("status"))
                  and s["conditions"][0]["reason"] == "ChildConflict" and s)
    assert "Service named s3 exists and is not this Sandbox's" in st["conditions"][0]["message"]
    after = get(cp, namespace, "service", "s3")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # The rest is made as usual.
    wait_for("the pod", lambda: get(cp, namespace, "pod", "s3", check=False))


def test_deleting_the_sandbox_removes_its_children(operator, namespace):
    cp = operator.cp
    apply_sandbox(cp, namespace, "s4")
    wait_for("the children", lambda: get(cp, namespace, "pod", "s4", check=False) and
             get(cp, namespace, "networkpolicy", "s4", check=False))
    cp.kubectl("-n", namespace, "delete", "sandbox", "s4")
    for kind in ("pod", "service", "networkpolicy"):
        wait_for(f"the {kind} gone (garbage collector)",
                 lambda: get(cp, namespace, kind, "s4", check=False) is None, 60)


def test_health_and_metrics(operator):
    assert operator.get("/healthz") == (200, '{"status":"ok"}')
    assert operator.get("/readyz")[0] == 200
    text = operator.get("/metrics")[1]
    for name in ("sbx_operator_reconciles_total", "sbx_operator_queue_depth",
                 "sbx_operator_sandboxes", "sbx_operator_synced 1"):
        assert name in text


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_expiry_deletes_or_retains_on_time_and_renewal_moves_it(operator, namespace):
    cp = operator.cp
    t0 = time.time()
    apply_sandbox(cp, namespace, "gone", expiresAt=iso(t0 + 4))
    apply_sandbox(cp, namespace, "kept", expiresAt=iso(t0 + 4), expiryPolicy="Retain")
    apply_sandbox(cp, namespace, "renewed", expiresAt=iso(t0 + 4))
    wait_for("the pods", lambda: all(get(cp, namespace, "pod", n, check=False)
                                     for n in ("gone", "kept", "renewed")))
    st = get(cp, namespace, "sandbox", "kept")["status"]
    assert st["expiresAt"] == iso(t0 + 4)
    cp.kubectl("-n", namespace, "patch", "sandbox", "renewed", "--type=merge",
               "-p", json.dumps({"spec": {"expiresAt": iso(t0 + 3600)}}))
    # Delete: the Sandbox goes at its time (not before), its children with it.
    wait_for("the expired Sandbox deleted",
             lambda: get(cp, namespace, "sandbox", "gone", check=False) is None, 20)
    assert time.time() >= int(t0 + 4) - 0.01
    # Retain: kept, without its pod, phase Expired.
    st = wait_for("phase Expired", lambda: (s := get(cp, namespace, "sandbox", "kept")["status"])
                  ["phase"] == "Expired" and s, 20)
    assert st["conditions"][0]["reason"] == "Expired" and "podIP" not in st
    wait_for("the retained Sandbox's pod deleted", lambda: (
        p := get(cp, namespace, "pod", "kept", check=False)) is None or p["metadata"].get("deletionTimestamp"))
    assert get(cp, namespace, "service", "kept")
    # Renewed: still there, with the new time in status.
    r = get(cp, namespace, "sandbox", "renewed")
    assert r["status"]["expiresAt"] == iso(t0 + 3600) and r["status"]["phase"] != "Expired"


def test_a_bad_image_is_told_in_the_status_and_in_kubectl_describe(operator, namespace):
    cp = operator.cp
    apply_sandbox(cp, namespace, "bad", image="sbx.local/no-such-image:1")
    wait_for("the pod", lambda: get(cp, namespace, "pod", "bad", check=False))
    # What a kubelet reports when the image cannot be had.
    cp.kubectl("-n", namespace, "patch", "pod", "bad", "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"phase": "Pending", "containerStatuses": [{
                   "name": "sandbox", "image": "sbx.local/no-such-image:1", "imageID": "",
                   "ready": False, "restartCount": 0, "started": False,
                   "state": {"waiting": {"reason": "ErrImageNeverPull",
                                         "message": "image sbx.local/no-such-image:1 is not present"}}}]}}))
    st = wait_for("the reason in status", lambda: (s := get(cp, namespace, "sandbox", "bad")["status"])
                  ["conditions"][0]["reason"] == "ErrImageNeverPull" and s)
    assert st["phase"] == "Pending" and "is not present" in st["conditions"][0]["message"]
    out = wait_for("the event in kubectl describe", lambda: (
        d := cp.kubectl("-n", namespace, "describe", "sandbox", "bad").stdout) and
        "ErrImageNeverPull" in d and d)
    assert "Warning" in out and "image sbx.local/no-such-image:1 is not present" in out


def test_two_replicas_one_leader_and_a_takeover_when_it_dies(crd, namespace, tmp_path):
    cp = crd
    lease = f"sbx-operator-{namespace[-6:]}"
    args = ["--leader-elect", f"--leader-election-namespace={namespace}",
            f"--leader-election-name={lease}", "--lease-seconds=6"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Operator(cp, tmp_path / "a", "--leader-election-identity=replica-a", *args)
    b = Operator(cp, tmp_path / "b", "--leader-election-identity=replica-b", *args)
    try:
        holder = wait_for("a holder", lambda: get(cp, namespace, "lease", lease, check=False)
                          and get(cp, namespace, "lease", lease)["spec"]["holderIdentity"])
        leader, standby = (a, b) if holder == "replica-a" else (b, a)
        wait_for("the leader's metric", lambda: leader.metric("sbx_operator_leader") == 1)
        assert standby.metric("sbx_operator_leader") == 0
        assert standby.get("/readyz") == (200, '{"status":"standby"}')
        apply_sandbox(cp, namespace, "first")
        wait_for("the first Sandbox reconciled", lambda: get(cp, namespace, "pod", "first", check=False))
        assert standby.metric("sbx_operator_reconciles_total") == 0

        # The leader dies without a word; the standby takes over once the lease runs out.
        leader.proc.kill()
        leader.proc.wait()
        t0 = time.monotonic()
        apply_sandbox(cp, namespace, "second")
        wait_for("the second Sandbox reconciled by the new leader",
                 lambda: get(cp, namespace, "pod", "second", check=False), 20)
        took = time.monotonic() - t0
        assert took < 15, took
        spec = get(cp, namespace, "lease", lease)["spec"]
        assert spec["holderIdentity"] != holder and spec["leaseTransitions"] >= 1
        assert standby.metric("sbx_operator_leader") == 1
    finally:
        for op in (a, b):
            if op.proc.poll() is None:
                op.stop()


def test_namespace_limits_what_it_sees(crd, namespace, tmp_path):
    cp = crd
    other = namespace[:40] + "-other"
    cp.kubectl("create", "namespace", other)
    try:
        op = Operator(cp, tmp_path, f"--namespace={namespace}")
        try:
            apply_sandbox(cp, other, "elsewhere")
            apply_sandbox(cp, namespace, "here")
            wait_for("the watched namespace's Sandbox", lambda: get(cp, namespace, "pod", "here", check=False))
            # Its caches hold only the watched namespace: the other one is not even seen.
            assert op.metric("sbx_operator_sandboxes") == 1
            assert "status" not in get(cp, other, "sandbox", "elsewhere")
            assert get(cp, other, "pod", "elsewhere", check=False) is None
        finally:
            op.stop()
    finally:
        cp.kubectl("delete", "namespace", other, "--wait=false", check=False)


def children_of(cp, ns, kind):
    return json.loads(cp.kubectl("-n", ns, "get", kind, "-l", "sbx.dev/sandbox",
                                 "-o", "json").stdout)["items"]


def test_an_operator_killed_midway_leaves_no_duplicates_or_orphans(crd, namespace, tmp_path):
    cp = crd
    names = [f"r{i:02}" for i in range(40)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Operator(cp, tmp_path / "a")
    docs = yaml.safe_dump_all([{"apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox",
                                "metadata": {"name": n}, "spec": {"image": "sbx.local/sandbox-base:dev"}}
                               for n in names])
    apply = subprocess.Popen([str(cp.bin / "kubectl"), f"--kubeconfig={cp.kubeconfig}", "-n",
                              namespace, "apply", "-f", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    apply.stdin.write(docs)
    apply.stdin.close()
    # Killed without a word while the Sandboxes are still coming in.
    wait_for("the first pods", lambda: len(children_of(cp, namespace, "pods")) >= 3)
    first.proc.kill()
    first.proc.wait()
    done_at_kill = len(children_of(cp, namespace, "pods"))
    assert apply.wait(60) == 0, apply.stderr.read()
    assert done_at_kill < len(names), "the operator had finished before it was killed"
    ids = {s["metadata"]["name"]: s["status"]["id"] for s in json.loads(cp.kubectl(
        "-n", namespace, "get", "sandboxes", "-o", "json").stdout)["items"] if s.get("status")}

    second = Operator(cp, tmp_path / "b")
    try:
        def complete():
            sandboxes = json.loads(cp.kubectl("-n", namespace, "get", "sandboxes", "-o",
                                              "json").stdout)["items"]
            return all(s.get("status", {}).get("id") for s in sandboxes) and \
                all(len(children_of(cp, namespace, k)) == len(names)
                    for k in ("pods", "services", "networkpolicies")) and sandboxes
        sandboxes = wait_for("every Sandbox with its children and an id", complete, 60)
        by_name = {s["metadata"]["name"]: s for s in sandboxes}
        assert sorted(by_name) == names
        for name, sid in ids.items():  # ids are assigned once, whoever assigned them
            assert by_name[name]["status"]["id"] == sid, name
        assert len({s["status"]["id"] for s in sandboxes}) == len(names)
        # One child of each kind per Sandbox, owned by it, with its id: no duplicate, no orphan.
        for kind in ("pods", "services", "networkpolicies"):
            for child in children_of(cp, namespace, kind):
                owner = by_name[child["metadata"]["labels"]["sbx.dev/sandbox"]]
                assert child["metadata"]["name"] == owner["metadata"]["name"]
                assert child["metadata"]["labels"]["sbx.dev/id"] == owner["status"]["id"], kind
                ref = child["metadata"]["ownerReferences"][0]
                assert ref["uid"] == owner["metadata"]["uid"] and ref["controller"]
    finally:
        second.stop()


def test_an_apiserver_restart_is_survived_and_410_gone_makes_it_relist(operator, namespace):
    cp = operator.cp
    apply_sandbox(cp, namespace, "before")
    wait_for("the pod", lambda: get(cp, namespace, "pod", "before", check=False))
    # A write the operator does not watch moves the store past what its watches
    # last saw; the restarted apiserver's watch cache starts there, so resuming
    # them from their old resourceVersion gets 410 Gone.
    cp.kubectl("-n", namespace, "create", "configmap", "unwatched")
    cp.restart_apiserver()
    wait_for("a relist after 410 Gone",
             lambda: "relist needed" in operator.log.read_text(), 60)
    wait_for("ready again", lambda: operator.get("/readyz")[0] == 200, 60)
    # It goes on: a new Sandbox is made, a deleted child of an old one comes back.
    apply_sandbox(cp, namespace, "after")
    wait_for("the new Sandbox's pod", lambda: get(cp, namespace, "pod", "after", check=False), 60)
    old = get(cp, namespace, "service", "before")["metadata"]["uid"]
    cp.kubectl("-n", namespace, "delete", "service", "before")
    wait_for("the Service back", lambda: (s := get(cp, namespace, "service", "before", check=False))
             and s["metadata"]["uid"] != old)
    # The relist did not double anything it holds.
    assert operator.metric("sbx_operator_sandboxes") == len(json.loads(cp.kubectl(
        "get", "sandboxes", "-A", "-o", "json").stdout)["items"])


def test_status_conflicts_are_retried_until_the_status_is_current(operator, namespace):
    cp = operator.cp
    apply_sandbox(cp, namespace, "busy")
    wait_for("an id", lambda: get(cp, namespace, "sandbox", "busy").get("status"))
    path = f"/apis/sbx.dev/v1alpha1/namespaces/{namespace}/sandboxes/busy"
    conflicts = operator.metric("sbx_operator_conflicts_total")
    t0 = int(time.time()) + 3600
    # Each edit moves status.expiresAt, so the operator writes a status per
    # edit, from a cache that the next edit has already made stale: 409s.
    with cp.client() as api:
        for i in range(400):
            status, body = api.request("PATCH", path, {"spec": {"expiresAt": iso(t0 + i)}},
                                       "application/merge-patch+json")
            assert status == 200, body
            if i >= 20 and i % 10 == 0 and operator.metric("sbx_operator_conflicts_total") > conflicts:
                break
    assert operator.metric("sbx_operator_conflicts_total") > conflicts, "no conflict was provoked"
    last = iso(t0 + i)
    sbx = wait_for("the status of the last edit", lambda: (
        s := get(cp, namespace, "sandbox", "busy"))["status"]["expiresAt"] == last and
        s["status"]["observedGeneration"] == s["metadata"]["generation"] and s)
    assert sbx["status"]["conditions"][0]["observedGeneration"] == sbx["metadata"]["generation"]


def test_an_operator_upgrade_patches_running_pods_in_place(crd, namespace, tmp_path):
    cp = crd
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = Operator(cp, tmp_path / "old")
    try:
        apply_sandbox(cp, namespace, "kept")
        pod = wait_for("the pod", lambda: get(cp, namespace, "pod", "kept", check=False))
    finally:
        old.stop()
    # The same Sandbox under an operator with a new agent image: the init
    # container's image is mutable, so the pod is patched, not made anew.
    new = Operator(cp, tmp_path / "new", "--agent-image=sbx.local/sbx-agent:next")
    try:
        patched = wait_for("the new agent image", lambda: (
            p := get(cp, namespace, "pod", "kept"))["spec"]["initContainers"][0]["image"]
            == "sbx.local/sbx-agent:next" and p)
        assert patched["metadata"]["uid"] == pod["metadata"]["uid"]
    finally:
        new.stop()
