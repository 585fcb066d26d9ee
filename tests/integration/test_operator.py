"""sbx-operator against a real apiserver (and the controller-manager's
garbage collector): a Sandbox becomes a Pod, a Service and a NetworkPolicy
it owns, its status follows the pod, edits reach the children, a deleted
child comes back, a foreign object is never touched, and deleting the
Sandbox removes everything. There is no kubelet here: the test writes the
pod's status the way a kubelet would. (tests/e2e runs it on a real node.)"""

from __future__ import annotations

import json
import subprocess
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
             "--agent-image=sbx.local/sbx-agent:test", "--log-level=debug", *args],
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
