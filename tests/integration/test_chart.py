"""The Helm chart (helm/sbx) against a real kube-apiserver: it lints, its
values are checked against its schema, what it installs is accepted by the
apiserver and grants the operator exactly what docs/operator.md says, scoped
to namespaces when asked, and the plain manifests are what it renders."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from conftest import REPO
from k8s_control_plane import toolchain_bin

CHART = REPO / "helm" / "sbx"


def helm(*args: str, cp=None, check: bool = True) -> subprocess.CompletedProcess:
    argv = [str(toolchain_bin() / "helm"), *args]
    if cp is not None:
        argv.insert(1, f"--kubeconfig={cp.kubeconfig}")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        pytest.fail(f"helm {' '.join(args)}: {r.stderr}")
    return r


def can_i(cp, sa: str, *args: str) -> bool:
    r = cp.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return r.stdout.strip() == "yes"


def test_the_plain_manifests_are_what_the_chart_renders():
    r = subprocess.run([str(REPO / "scripts" / "manifests.sh"), "--check"], capture_output=True,
                       text=True, env=dict(os.environ, HELM=str(toolchain_bin() / "helm")))
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_chart_lints_and_its_schema_names_a_bad_value():
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    for setting, field in [("operator.workers=0", "/operator/workers"),
                           ("operator.namespaces={Team-A}", "/operator/namespaces/0"),
                           ("operator.logFormat=xml", "/operator/logFormat"),
                           ("operator.gatewayURL=sbx.example.com", "/operator/gatewayURL"),
                           ("operator.wrokers=2", "wrokers")]:
        r = helm("template", "sbx", str(CHART), "--set", setting, check=False)
        assert r.returncode != 0 and field in r.stderr, (setting, r.stderr)


def test_values_become_the_operators_flags():
    out = helm("template", "sbx", str(CHART), "--namespace", "ops",
               "--set", "operator.gatewayURL=https://sbx.example.com",
               "--set", "operator.denyCIDRs={10.0.0.0/8,169.254.169.254/32}",
               "--set", "operator.egressAlwaysAllow={otel.example.com}",
               "--set", "operator.workers=8", "--set", "operator.replicas=1",
               "--set", "operator.extraArgs={--log-level=debug}",
               "--show-only", "templates/operator-deployment.yaml").stdout
    dep = yaml.safe_load(out)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    for want in ["--gateway-url=https://sbx.example.com", "--deny-cidr=10.0.0.0/8",
                 "--deny-cidr=169.254.169.254/32", "--egress-always-allow=otel.example.com",
                 "--workers=8", "--ingress-namespace=ops", "--leader-elect",
                 "--leader-election-name=sbx-operator"]:
        assert want in args, args
    assert args[-1] == "--log-level=debug", args  # extra arguments come last, and win
    assert dep["spec"]["replicas"] == 1
    # One replica: no PodDisruptionBudget that would block every drain.
    r = helm("template", "sbx", str(CHART), "--set", "operator.replicas=1", "--show-only",
             "templates/operator-pdb.yaml", check=False)
    assert r.returncode != 0 and "could not find template" in r.stderr, r.stderr


def test_values_become_the_ingresss_flags_and_secret():
    out = helm("template", "sbx", str(CHART), "--namespace", "ops",
               "--set", "ingress.baseDomain=sbx.example.com",
               "--set", "ingress.jwtPublicKeySecret.name=sbx-jwt",
               "--set", "ingress.drainSeconds=600", "--set", "ingress.shutdownDelayMs=3000",
               "--set", "operator.namespaces={team-a,team-b}",
               "--show-only", "templates/ingress-deployment.yaml").stdout
    dep = yaml.safe_load(out)
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    for want in ["--base-domain=sbx.example.com", "--namespace=team-a", "--namespace=team-b",
                 "--drain-timeout-ms=600000", "--shutdown-delay-ms=3000",
                 "--ticket-ttl-seconds=30", "--listen=:8080", "--admin-listen=:9090",
                 "--workers=2"]:
        assert want in c["args"], c["args"]
    assert c["env"] == [{"name": "JWT_PUBLIC_KEY", "valueFrom": {"secretKeyRef": {
        "name": "sbx-jwt", "key": "jwt-public-key"}}}]
    # The pods carry the label sandboxes admit, and get the drain's time to stop.
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "sbx-ingress"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 600 + 3 + 5
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    # Without a key, access control is off and no Secret is named.
    dep = yaml.safe_load(helm("template", "sbx", str(CHART), "--show-only",
                              "templates/ingress-deployment.yaml").stdout)
    assert "env" not in dep["spec"]["template"]["spec"]["containers"][0]
    r = helm("template", "sbx", str(CHART), "--set", "ingress.enabled=false", "--show-only",
             "templates/ingress-deployment.yaml", check=False)
    assert r.returncode != 0 and "could not find template" in r.stderr, r.stderr


def test_install_into_an_apiserver_scoped_to_namespaces_then_cluster_wide(control_plane, namespace):
    cp = control_plane
    system = f"{namespace}-sys"[:63]
    # Scoped: a Role in each watched namespace and none cluster-wide.
    helm("install", "scoped", str(CHART), "--namespace", system, "--create-namespace",
         "--set", f"operator.namespaces={{{namespace}}}", cp=cp)
    try:
        cp.kubectl("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev", "--timeout=60s")
        sa = f"system:serviceaccount:{system}:scoped-sbx-operator"
        assert can_i(cp, sa, "watch", "sandboxes.sbx.dev", "-n", namespace)
        assert can_i(cp, sa, "patch", "sandboxes.sbx.dev", "--subresource=status", "-n", namespace)
        assert not can_i(cp, sa, "patch", "sandboxes.sbx.dev", "-n", namespace)
        for verb, what in [("create", "pods"), ("delete", "services"), ("update", "configmaps"),
                           ("create", "networkpolicies.networking.k8s.io"), ("create", "events")]:
            assert can_i(cp, sa, verb, what, "-n", namespace), (verb, what)
        assert not can_i(cp, sa, "list", "sandboxes.sbx.dev", "--all-namespaces")
        assert not can_i(cp, sa, "create", "pods", "-n", "default")
        assert not can_i(cp, sa, "get", "secrets", "-n", namespace)
        assert not can_i(cp, sa, "list", "events", "-n", namespace)
        assert can_i(cp, sa, "update", "leases.coordination.k8s.io", "-n", system)
        assert not can_i(cp, sa, "update", "leases.coordination.k8s.io", "-n", namespace)
        dep = json.loads(cp.kubectl("-n", system, "get", "deployment", "scoped-sbx-operator",
                                    "-o", "json").stdout)
        assert f"--namespace={namespace}" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert cp.kubectl("get", "clusterrole", "scoped-sbx-operator", check=False).returncode != 0
        # The ingress reads Sandboxes where the operator works, and nothing else.
        ing = f"system:serviceaccount:{system}:scoped-sbx-ingress"
        assert can_i(cp, ing, "watch", "sandboxes.sbx.dev", "-n", namespace)
        assert not can_i(cp, ing, "list", "sandboxes.sbx.dev", "--all-namespaces")
        assert not can_i(cp, ing, "patch", "sandboxes.sbx.dev", "--subresource=status", "-n",
                         namespace)
        assert not can_i(cp, ing, "list", "pods", "-n", namespace)
        assert not can_i(cp, ing, "get", "secrets", "-n", namespace)
        dep = json.loads(cp.kubectl("-n", system, "get", "deployment", "scoped-sbx-ingress",
                                    "-o", "json").stdout)
        assert f"--namespace={namespace}" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    finally:
        helm("uninstall", "scoped", "--namespace", system, cp=cp)
    assert cp.kubectl("-n", namespace, "get", "role", "scoped-sbx-operator",
                      check=False).returncode != 0

    # Cluster-wide: a ClusterRole, removed again by uninstall; the CRD stays.
    helm("install", "sbx", str(CHART), "--namespace", system, cp=cp)
    try:
        sa = f"system:serviceaccount:{system}:sbx-operator"
        assert can_i(cp, sa, "list", "sandboxes.sbx.dev", "--all-namespaces")
        assert can_i(cp, sa, "create", "pods", "-n", "default")
        assert not can_i(cp, sa, "get", "secrets", "-n", "default")
        kinds = cp.kubectl("-n", system, "get", "deployment,service,poddisruptionbudget,"
                           "serviceaccount,role,rolebinding", "-l", "app.kubernetes.io/instance=sbx",
                           "-o", "name").stdout.split()
        assert sorted(kinds) == sorted([
            "deployment.apps/sbx-operator", "service/sbx-operator-metrics",
            "poddisruptionbudget.policy/sbx-operator", "serviceaccount/sbx-operator",
            "role.rbac.authorization.k8s.io/sbx-operator-leader",
            "rolebinding.rbac.authorization.k8s.io/sbx-operator-leader",
            "deployment.apps/sbx-ingress", "service/sbx-ingress", "service/sbx-ingress-metrics",
            "poddisruptionbudget.policy/sbx-ingress", "serviceaccount/sbx-ingress"]), kinds
        ing = f"system:serviceaccount:{system}:sbx-ingress"
        assert can_i(cp, ing, "watch", "sandboxes.sbx.dev", "--all-namespaces")
        assert not can_i(cp, ing, "list", "pods", "--all-namespaces")
    finally:
        helm("uninstall", "sbx", "--namespace", system, cp=cp)
    assert cp.kubectl("get", "clusterrole", "sbx-operator", check=False).returncode != 0
    assert cp.kubectl("get", "clusterrole", "sbx-ingress", check=False).returncode != 0
    cp.kubectl("get", "crd", "sandboxes.sbx.dev")
