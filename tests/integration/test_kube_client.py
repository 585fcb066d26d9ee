"""libsbx's Kubernetes client against a real kube-apiserver, through sbx-kubetool."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import assert_no_sanitizer_report, binary


def kubetool(cp, *args, kubeconfig=None, env=None, check_status=True):
    argv = [binary("tests/tools/sbx-kubetool"), f"--kubeconfig={kubeconfig or cp.kubeconfig}",
            *args]
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60,
                       env=env)
    assert_no_sanitizer_report(r.stderr)
    out = json.loads(r.stdout) if r.stdout.strip() else None
    if check_status:
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r, out


def cm_path(ns, name=""):
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def kubectl_data(cp, ns, name):
    r = cp.kubectl("-n", ns, "get", "configmap", name, "-o", "json", check=False)
    return json.loads(r.stdout).get("data", {}) if r.returncode == 0 else None


def test_crud_and_watch_in_order(control_plane, namespace, lines):
    cp, ns = control_plane, namespace
    watch = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                   "watch", cm_path(ns)])

    _, created = kubetool(cp, "create", cm_path(ns),
                          json.dumps({"metadata": {"name": "demo"}, "data": {"step": "created"}}))
    assert created["status"] == 201
    # HTTP/2 to the apiserver over one connection.
    assert created["http_version"] == 2
    assert created["connects"] == 1

    _, got = kubetool(cp, "get", cm_path(ns, "demo"))
    assert got["body"]["data"] == {"step": "created"}
    assert got["body"]["metadata"]["uid"] == created["body"]["metadata"]["uid"]

    _, patched = kubetool(cp, "merge-patch", cm_path(ns, "demo"),
                          json.dumps({"data": {"step": "patched", "extra": "x"}}))
    assert patched["body"]["data"] == {"step": "patched", "extra": "x"}

    applied_obj = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "demo", "namespace": ns},
                   "data": {"step": "applied", "extra": "x"}}
    _, applied = kubetool(cp, "--field-manager=sbx-test", "--force", "apply",
                          cm_path(ns, "demo"), json.dumps(applied_obj))
    assert applied["body"]["data"]["step"] == "applied"
    managers = {m["manager"] for m in applied["body"]["metadata"]["managedFields"]}
    assert "sbx-test" in managers

    # kubectl sees what the C client wrote.
    assert kubectl_data(cp, ns, "demo") == {"step": "applied", "extra": "x"}

    _, deleted = kubetool(cp, "delete", cm_path(ns, "demo"))
    assert deleted["status"] == 200
    assert kubectl_data(cp, ns, "demo") is None

    events = [watch.next() for _ in range(4)]
    assert [(e["type"], e["data"].get("step")) for e in events] == [
        ("ADDED", "created"), ("MODIFIED", "patched"), ("MODIFIED", "applied"),
        ("DELETED", "applied")]
    rvs = [int(e["rv"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4


def test_errors_are_reported_with_status(control_plane, namespace):
    cp, ns = control_plane, namespace
    r, out = kubetool(cp, "get", cm_path(ns, "missing"), check_status=False)
    assert r.returncode == 1
    assert out["status"] == 404 and out["body"]["reason"] == "NotFound"

    obj = json.dumps({"metadata": {"name": "dup"}})
    kubetool(cp, "create", cm_path(ns), obj)
    r, out = kubetool(cp, "create", cm_path(ns), obj, check_status=False)
    assert out["status"] == 409 and out["body"]["reason"] == "AlreadyExists"


def test_update_status_on_a_status_subresource(control_plane, namespace):
    cp, ns = control_plane, namespace
    path = f"/api/v1/namespaces/{ns}/services"
    kubetool(cp, "create", path, json.dumps(
        {"metadata": {"name": "svc"},
         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
    _, svc = kubetool(cp, "get", f"{path}/svc")
    svc = svc["body"]
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    _, out = kubetool(cp, "status", f"{path}/svc", json.dumps(svc))
    assert out["body"]["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.7"
    r = cp.kubectl("-n", ns, "get", "service", "svc", "-o",
                   "jsonpath={.status.loadBalancer.ingress[0].ip}")
    assert r.stdout == "192.0.2.7"


def test_watch_resumes_from_last_resource_version(control_plane, namespace, lines):
    """Streams the server ends (timeoutSeconds) are resumed without loss or repeats."""
    cp, ns = control_plane, namespace
    watch = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                   "--watch-timeout=1", "watch", cm_path(ns)])
    for i in range(6):
        kubetool(cp, "create", cm_path(ns), json.dumps({"metadata": {"name": f"c{i}"}}))
        time.sleep(0.7)
    events = [watch.next() for _ in range(6)]
    assert [e["name"] for e in events] == [f"c{i}" for i in range(6)]
    assert all(e["type"] == "ADDED" for e in events)
    assert events[-1]["reconnects"] >= 1, "the stream was never resumed"
    assert not any(e["type"] == "GONE" for e in watch.seen)


def test_watch_reports_gone_for_expired_resource_version(control_plane, namespace, lines):
    """An apiserver's watch cache starts at the revision it came up with; a watch
    from before that gets 410 Gone, which the watch hands to its owner."""
    cp, ns = control_plane, namespace
    _, before = kubetool(cp, "create", cm_path(ns), '{"metadata":{"name":"before"}}')
    old_rv = before["body"]["metadata"]["resourceVersion"]
    cp.restart_apiserver()
    kubetool(cp, "create", cm_path(ns), '{"metadata":{"name":"during"}}')
    watch = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                   f"--resource-version={old_rv}", "watch", cm_path(ns)])
    assert watch.next()["type"] == "GONE"
    # The consumer restarts from "now": existing objects, then new events.
    names = {watch.next()["name"], watch.next()["name"]}
    assert names == {"before", "during"}
    kubetool(cp, "create", cm_path(ns), '{"metadata":{"name":"after"}}')
    assert watch.until(lambda e: e["type"] == "ADDED")["name"] == "after"


@pytest.mark.parametrize("compact", [False, True], ids=["objects", "compact"])
def test_informer_survives_apiserver_restart(control_plane, namespace, lines, tmp_path, compact):
    """Changes made while the informer's apiserver is down arrive after it returns.

    A second apiserver on the same etcd takes the writes meanwhile, as in an HA
    control plane; the informer resumes its watch or relists on 410 Gone and
    reports each change once. In compact mode (objects kept as text) the old
    object of an update and what the cache returns are the same as with
    parsed objects."""
    cp, ns = control_plane, namespace
    for n in ("keep", "change", "remove"):
        kubetool(cp, "create", cm_path(ns), json.dumps({"metadata": {"name": n},
                                                         "data": {"v": "1"}}))
    inf = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                 "--backoff-max-ms=500", *(["--compact"] if compact else []),
                 "informer", cm_path(ns)])
    synced = inf.until(lambda e: e["event"] == "synced")
    assert synced["count"] == 3 and synced["lists"] == 1

    from k8s_control_plane import free_port
    port = free_port()
    cp.start_apiserver(name="apiserver-b", port=port)
    other = cp.kubeconfig_for(port, tmp_path / "kubeconfig-b")
    try:
        cp.stop_apiserver()
        kubetool(cp, "merge-patch", cm_path(ns, "change"), '{"data":{"v":"2"}}',
                 kubeconfig=other)
        kubetool(cp, "delete", cm_path(ns, "remove"), kubeconfig=other)
        kubetool(cp, "create", cm_path(ns), '{"metadata":{"name":"new"}}', kubeconfig=other)
        cp.start_apiserver()
    finally:
        cp.stop_apiserver("apiserver-b")

    changes = {}
    while len(changes) < 3:
        e = inf.until(lambda e: e["event"] in ("add", "update", "delete"))
        assert e["name"] not in changes, f"reported twice: {e}"
        changes[e["name"]] = (e["event"], (e.get("data") or {}).get("v"))
    assert changes == {"change": ("update", "2"), "remove": ("delete", "1"),
                       "new": ("add", None)}
    # Writes after the restart flow through the resumed watch.
    kubetool(cp, "merge-patch", cm_path(ns, "keep"), '{"data":{"v":"3"}}')
    e = inf.until(lambda e: e["event"] == "update" and e["name"] == "keep")
    assert e["data"]["v"] == "3" and e["count"] == 3
    assert e["old_data"] == {"v": "1"} and e["cached_data"] == {"v": "3"}


def test_informer_pages_share_one_http2_connection(control_plane, namespace, lines):
    """A paged list (5 pages) and the watch after it ride one HTTP/2 connection."""
    cp, ns = control_plane, namespace
    for i in range(9):
        kubetool(cp, "create", cm_path(ns), json.dumps({"metadata": {"name": f"p{i}"}}))
    inf = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                 "--page-size=2", "informer", cm_path(ns)])
    synced = inf.until(lambda e: e["event"] == "synced")
    assert synced["count"] == 9 and synced["gets"] == 5  # five pages
    assert sorted(e["name"] for e in inf.seen if e["event"] == "add") == \
        [f"p{i}" for i in range(9)]
    assert synced["http_version"] == 2
    assert synced["connects"] == 1
    kubetool(cp, "delete", cm_path(ns, "p0"))
    gone = inf.until(lambda e: e["event"] == "delete")
    assert gone["name"] == "p0" and gone["count"] == 8


def _token_kubeconfig(cp, path, token_line):
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {cp.server}
    certificate-authority-data: {__import__('base64').b64encode(cp.pki.ca.read_bytes()).decode()}
users:
- name: u
  user:
    {token_line}
contexts:
- name: ctx
  context: {{cluster: c, user: u, namespace: kube-system}}
current-context: ctx
""")
    return path


def test_token_and_token_file_kubeconfigs(control_plane, tmp_path):
    cp = control_plane
    kc = _token_kubeconfig(cp, tmp_path / "token", f"token: {cp.token}")
    _, out = kubetool(cp, "get", "/api/v1/namespaces/kube-system", kubeconfig=kc)
    assert out["body"]["metadata"]["name"] == "kube-system"

    (tmp_path / "tok").write_text(cp.token + "\n")
    kc = _token_kubeconfig(cp, tmp_path / "tokenfile", "tokenFile: tok")
    _, out = kubetool(cp, "get", "/api/v1/namespaces/default", kubeconfig=kc)
    assert out["status"] == 200

    kc = _token_kubeconfig(cp, tmp_path / "bad", "token: not-a-valid-token")
    r, out = kubetool(cp, "get", "/api/v1/namespaces/default", kubeconfig=kc,
                      check_status=False)
    assert r.returncode == 1 and out["status"] == 401


def test_in_cluster_configuration(control_plane, tmp_path):
    cp = control_plane
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(cp.token)
    (sa / "ca.crt").write_bytes(cp.pki.ca.read_bytes())
    (sa / "namespace").write_text("default\n")
    env = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1",
               KUBERNETES_SERVICE_PORT=str(cp.port), SBX_KUBE_SA_DIR=str(sa))
    env.pop("KUBECONFIG", None)
    r = subprocess.run([str(binary("tests/tools/sbx-kubetool")), "get",
                        "/api/v1/namespaces/default"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["body"]["metadata"]["name"] == "default"


def test_http1_fallback(control_plane):
    _, out = kubetool(control_plane, "--http1", "get", "/api/v1/namespaces/default")
    assert out["http_version"] == 1 and out["status"] == 200


@pytest.mark.parametrize("content, message", [
    ("clusters: [", "kubeconfig"),
    ("current-context: nowhere\ncontexts: []\n", "no context named 'nowhere'"),
    ("current-context: c\ncontexts:\n- name: c\n  context: {cluster: x}\nclusters:\n"
     "- name: x\n  cluster: {server: 'ftp://x'}\n", "clusters[name=x].cluster.server"),
    ("current-context: c\ncontexts:\n- name: c\n  context: {cluster: x, user: u}\nclusters:\n"
     "- name: x\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n"
     "- name: u\n  user: {client-certificate-data: '!!notbase64'}\n",
     "users[name=u].user.client-certificate-data: not valid base64"),
])
def test_bad_kubeconfig_is_named(control_plane, tmp_path, content, message):
    kc = tmp_path / "kc"
    kc.write_text(content)
    r, _ = kubetool(control_plane, "get", "/api", kubeconfig=kc, check_status=False)
    assert r.returncode == 2
    assert str(kc) in r.stderr and message in r.stderr, r.stderr


def test_controller_manager_collects_owned_objects(control_plane, namespace):
    """The fixture's kube-controller-manager runs the garbage collector: a child
    with an ownerReference goes when its owner is deleted (as a Sandbox's Pod,
    Service and NetworkPolicy will)."""
    cp, ns = control_plane, namespace
    _, owner = kubetool(cp, "create", cm_path(ns), '{"metadata":{"name":"owner"}}')
    uid = owner["body"]["metadata"]["uid"]
    child = {"metadata": {"name": "child", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
         "controller": True, "blockOwnerDeletion": True}]}}
    kubetool(cp, "create", cm_path(ns), json.dumps(child))
    assert kubectl_data(cp, ns, "child") == {}
    kubetool(cp, "--propagation=Background", "delete", cm_path(ns, "owner"))
    deadline = time.monotonic() + 60
    while kubectl_data(cp, ns, "child") is not None:
        assert time.monotonic() < deadline, "the child was never garbage-collected"
        time.sleep(0.5)


def test_compact_informer_keeps_objects_in_a_fraction_of_their_text(control_plane, namespace,
                                                                     lines):
    """Compact mode deflates each cached object against the first one's text:
    60 ConfigMaps that differ in a few bytes take a small part of what their
    JSON does, and every one reads back exactly as the apiserver has it."""
    cp, ns = control_plane, namespace
    for i in range(60):
        kubetool(cp, "create", cm_path(ns), json.dumps({
            "metadata": {"name": f"cm-{i:02}", "labels": {"app.kubernetes.io/part-of": "sbx",
                                                          "team": "agents", "n": str(i)}},
            "data": {"config.yaml": f"replicas: {i}\nimage: sbx.local/sandbox-base:dev\n"
                                    "ports: [8080, 3000]\nmode: sandbox\n"}}))
    listed = json.loads(cp.kubectl("-n", ns, "get", "configmaps", "-o", "json").stdout)["items"]
    text = sum(len(json.dumps(o, separators=(",", ":"))) for o in listed
               if o["metadata"]["name"].startswith("cm-"))
    inf = lines([binary("tests/tools/sbx-kubetool"), f"--kubeconfig={cp.kubeconfig}",
                 "--compact", "informer", cm_path(ns)])
    synced = inf.until(lambda e: e["event"] == "synced")
    assert synced["count"] == len(listed)
    assert 0 < synced["cache_bytes"] < text / 3, (synced["cache_bytes"], text)
    # An update is stored, read back and reported with the exact old data.
    kubetool(cp, "merge-patch", cm_path(ns, "cm-07"), '{"data":{"config.yaml":"replicas: 70\\n"}}')
    updated = inf.until(lambda e: e["event"] == "update" and e["name"] == "cm-07")
    assert updated["cached_data"] == {"config.yaml": "replicas: 70\n"}
    assert updated["old_data"]["config.yaml"].startswith("replicas: 7\n")
    kubetool(cp, "delete", cm_path(ns, "cm-07"))
    e = inf.until(lambda e: e["event"] == "delete" and e["name"] == "cm-07")
    assert e["count"] == len(listed) - 1 and e["cache_bytes"] < updated["cache_bytes"]
