"""sbx installed with Helm, as a cluster admin installs it: `helm install` of
helm/sbx brings the CRD, an operator and a gateway scoped to one namespace
(Roles there, nothing cluster-wide), a Sandbox in that namespace runs and
answers, through the gateway too, one in another namespace is left alone,
`helm upgrade` changes the operator's flags, and `helm uninstall` removes
the operator but keeps the CRD and the Sandboxes."""

from __future__ import annotations

import pytest

from conftest import REPO, SANITIZER_MARKS, sandbox_yaml, wait_running, wait_until

RELEASE = "sbx-e2e"
OPERATOR = f"{RELEASE}-operator"


def image_values(kube) -> list[str]:
    repo, tag = kube.image("operator").rsplit(":", 1)
    ing_repo, ing_tag = kube.image("ingress").rsplit(":", 1)
    return ["--set", f"operator.image.repository={repo}", "--set", f"operator.image.tag={tag}",
            "--set", f"operator.agentImage={kube.image('agent')}",
            "--set", f"operator.egressImage={kube.image('egress')}",
            "--set", f"ingress.image.repository={ing_repo}", "--set", f"ingress.image.tag={ing_tag}"]


@pytest.fixture
def release(kube, ns, request):
    """The chart installed in a namespace of its own, reconciling only `ns`;
    uninstalled after the test."""
    system = f"{ns}-sys"[:63]
    kube.helm("install", RELEASE, str(REPO / "helm" / "sbx"), "--namespace", system,
              "--create-namespace", *image_values(kube), "--set", f"operator.namespaces={{{ns}}}",
              "--wait", "--timeout=150s", timeout=200)
    yield system
    kube.helm("uninstall", RELEASE, "--namespace", system, "--wait", check=False)
    kube.kubectl("delete", "namespace", system, "--wait=false", check=False)


def can_i(kube, sa: str, *args: str) -> bool:
    r = kube.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return r.stdout.strip() == "yes"


def test_helm_install_upgrade_and_uninstall(kube, ns, release):
    system = release
    # The CRD came with the chart (or was there already) and serves.
    kube.kubectl("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev", "--timeout=60s")
    status = kube.helm("status", RELEASE, "--namespace", system).stdout
    assert "STATUS: deployed" in status, status

    # Scoped to ns: Roles there and for its Lease, no cluster-wide access.
    sa = f"system:serviceaccount:{system}:{OPERATOR}"
    assert can_i(kube, sa, "list", "sandboxes.sbx.dev", "-n", ns)
    assert can_i(kube, sa, "create", "pods", "-n", ns)
    assert can_i(kube, sa, "update", "sandboxes.sbx.dev", "--subresource=status", "-n", ns)
    assert not can_i(kube, sa, "update", "sandboxes.sbx.dev", "-n", ns)
    assert not can_i(kube, sa, "list", "sandboxes.sbx.dev", "--all-namespaces")
    assert not can_i(kube, sa, "create", "pods", "-n", "default")
    assert not can_i(kube, sa, "get", "secrets", "-n", ns)
    assert can_i(kube, sa, "update", "leases.coordination.k8s.io", "-n", system)

    # A Sandbox elsewhere is not this release's to reconcile; the one in ns runs.
    other = f"{ns}-other"[:63]
    kube.kubectl("create", "namespace", other)
    try:
        kube.apply(other, sandbox_yaml(kube, "elsewhere"))
        kube.apply(ns, sandbox_yaml(kube, "mine", workingDir="/root",
                                    ports=[{"name": "web", "port": 3000}]))
        sbx = wait_running(kube, ns, "mine")
        assert [e["url"] for e in sbx["status"]["endpoints"]] == [
            f"http://mine.{ns}.svc.cluster.local:8080",
            f"http://mine.{ns}.svc.cluster.local:3000"], sbx["status"]
        assert "status" not in kube.get(other, "sandbox", "elsewhere")
        assert kube.kubectl("-n", other, "get", "pods", "-o", "name").stdout.strip() == ""
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false", check=False)

    # Both replicas serve health and metrics through the chart's Service; one leads.
    pods = kube.kubectl("-n", system, "get", "pods", "-l",
                        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=sbx-operator",
                        "-o", "name").stdout.split()
    assert len(pods) == 2, pods
    svc = kube.cluster_ip(system, f"{OPERATOR}-metrics")
    metrics = wait_until("the operator's metrics through its Service",
                         lambda: kube.fetch_from_host(f"http://{svc}:8081/metrics"), 30)
    assert "sbx_operator_leader" in metrics

    # helm upgrade with a gateway URL: the new operator rewrites the endpoints.
    kube.helm("upgrade", RELEASE, str(REPO / "helm" / "sbx"), "--namespace", system, "--reuse-values",
              "--set", "operator.gatewayURL=https://sbx.example.com", "--wait", "--timeout=150s",
              timeout=200)
    sid = sbx["status"]["id"]
    want = {"agent": f"https://sbx.example.com/sandboxes/{sid}/port/8080",
            "web": f"https://sbx.example.com/sandboxes/{sid}/port/3000"}
    wait_until("the endpoint URLs through the gateway",
               lambda: {e["name"]: e["url"] for e in
                        kube.get(ns, "sandbox", "mine")["status"]["endpoints"]} == want, 60)
    # The release's gateway serves them (its ingress watches ns only).
    gw = kube.cluster_ip(system, f"{RELEASE}-ingress")
    ping = wait_until("the agent through the release's ingress", lambda: kube.fetch_from_host(
        f"http://{gw}/sandboxes/{sid}/port/8080/v1/ping"), 30)
    assert ping

    # Values are checked against the chart's schema before anything is changed.
    r = kube.helm("upgrade", RELEASE, str(REPO / "helm" / "sbx"), "--namespace", system,
                  "--reuse-values", "--set", "operator.workers=0", check=False)
    assert r.returncode != 0 and "workers" in r.stderr, r.stderr

    for pod in kube.kubectl("-n", system, "get", "pods", "-o", "name").stdout.split():
        logs = kube.kubectl("-n", system, "logs", pod, check=False).stdout
        for mark in SANITIZER_MARKS:
            assert mark not in logs, logs

    # Uninstall: the operator and its RBAC go; the CRD and the Sandbox stay.
    kube.helm("uninstall", RELEASE, "--namespace", system, "--wait")
    assert kube.kubectl("-n", system, "get", "deployment", OPERATOR, check=False).returncode != 0
    assert not can_i(kube, sa, "list", "sandboxes.sbx.dev", "-n", ns)
    kube.kubectl("get", "crd", "sandboxes.sbx.dev")
    assert kube.get(ns, "sandbox", "mine")["status"]["phase"] == "Running"
