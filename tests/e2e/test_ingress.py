"""sbx-ingress on the real node, installed with the operator from the plain
manifests: through its Service, the official SDK drives a sandbox's agent
by the path form, the agent's terminal page works in a real browser (its
WebSocket through the ingress), and the sandbox's NetworkPolicy admits the
ingress's pods and no other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from agent_sandbox import Sandbox

from conftest import REPO, SANITIZER_MARKS, busybox_pod, sandbox_yaml, wait_running, wait_until
from headless_chromium import headless_chromium


@pytest.fixture
def chromium(tmp_path):
    with headless_chromium(tmp_path / "profile") as addr:
        yield addr


@pytest.fixture(scope="module")
def ingress(operator):
    """The ingress Deployment of the manifests, rolled out: its Service's address."""
    kube = operator
    r = kube.kubectl("-n", "sbx-system", "rollout", "status", "deployment/sbx-ingress",
                     "--timeout=120s", check=False, timeout=130)
    if r.returncode != 0:
        pods = kube.kubectl("-n", "sbx-system", "describe", "pods", "-l",
                            "app.kubernetes.io/name=sbx-ingress", check=False).stdout
        pytest.fail(f"the ingress did not become available: {r.stderr}\n{pods[-3000:]}")
    yield kube.cluster_ip("sbx-system", "sbx-ingress")
    logs = kube.kubectl("-n", "sbx-system", "logs", "-l", "app.kubernetes.io/name=sbx-ingress",
                        "--tail=-1", check=False).stdout
    for mark in SANITIZER_MARKS:
        assert mark not in logs, logs


def test_the_sdk_and_a_browser_terminal_reach_a_sandbox_through_the_ingress(
        operator, ingress, ns, chromium):
    kube = operator
    kube.apply(ns, sandbox_yaml(kube, "web", workingDir="/root"))
    sbx = wait_running(kube, ns, "web")
    base = f"http://{ingress}/sandboxes/{sbx['status']['id']}/port/8080"
    # The ingress routes it once its informer has seen the Sandbox Ready.
    wait_until("the agent through the ingress",
               lambda: kube.fetch_from_host(f"{base}/v1/ping"), 30)

    # The official SDK, pointed at the gateway URL.
    c = Sandbox(base_url=base, timeout=30)
    r = c.shell.exec_command(command="echo through-the-gateway $((6*7)); pwd")
    assert r.data.output == "through-the-gateway 42\n/root\n"
    assert c.sandbox.get_context().workspace == "/root"

    # The terminal page, in Chromium: the page and its WebSocket both go
    # through the ingress (the agent builds the URL from X-Forwarded-Prefix).
    t = c.shell.get_terminal_url()
    assert t.success and t.data.startswith(f"{base}/terminal?session_id="), t.data
    assert requests.get(t.data, timeout=10).headers["Content-Type"].startswith("text/html")
    modules = Path(os.environ.get("SBX_NODE_MODULES", ""))
    script = modules.parent / "terminal_page.mjs"
    shutil.copy(REPO / "tests/node/terminal_page.mjs", script)
    out = subprocess.run(["node", str(script), f"http://{chromium}", t.data,
                          "echo typed-$((6*7))", "typed-42"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "typed-42" in json.loads(out.stdout.strip().splitlines()[-1])["screen"]

    # The NetworkPolicy: the ingress's pods got in (above); a pod without
    # their label, in the sandbox's own namespace, does not.
    busybox_pod(kube, ns, "neighbour", {"app": "neighbour"})
    pod_ip = kube.get(ns, "sandbox", "web")["status"]["podIP"]
    assert kube.fetch_from_pod(ns, "neighbour", f"http://{pod_ip}:8080/v1/ping") is None
    # ...while it can reach the ingress, which routes it.
    assert json.loads(kube.fetch_from_pod(ns, "neighbour", f"{base}/v1/ping", timeout_s=5))

    # The ingress's metrics count what went through it.
    metrics = kube.fetch_from_pod(ns, "neighbour",
                                  f"http://{kube.cluster_ip('sbx-system', 'sbx-ingress-metrics')}"
                                  ":9090/metrics", timeout_s=5)
    assert metrics and 'sbx_ingress_websocket_tunnels_total' in metrics
