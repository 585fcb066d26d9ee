"""sbx-operator on the real node, installed as users install it (the CRD and
manifests/operator/ with kubectl), driven with kubectl: a Sandbox becomes a
running pod with the agent injected, the official SDK runs commands in it,
its declared port answers, and its NetworkPolicy admits only the gateway."""

from __future__ import annotations

import json

import pytest
from agent_sandbox import Sandbox

from conftest import busybox_pod, sandbox_yaml, wait_running, wait_until

def test_kubectl_apply_a_sandbox_then_the_sdk_and_the_declared_port_answer(operator, ns):
    kube = operator
    kube.apply(ns, sandbox_yaml(kube, "work", command=["python3", "-m", "http.server", "3000"],
                                workingDir="/srv", ports=[{"name": "web", "port": 3000}]))
    sbx = wait_running(kube, ns, "work")
    st = sbx["status"]
    assert st["conditions"][0]["type"] == "Ready" and st["conditions"][0]["status"] == "True"
    out = kube.kubectl("-n", ns, "get", "sbx").stdout.splitlines()
    assert out[0].split() == ["NAME", "ID", "PHASE", "ENDPOINT", "AGE"]
    assert out[1].split()[:4] == ["work", st["id"], "Running", st["endpoints"][0]["url"]]
    pod = kube.get(ns, "pod", "work")
    assert pod["status"]["containerStatuses"][0]["imageID"] == kube.image_id("sandbox-base")
    assert pod["status"]["initContainerStatuses"][0]["imageID"] == kube.image_id("agent")

    # The agent and the declared port, through the Service, from a pod the
    # NetworkPolicy admits: one labelled as the gateway, in its namespace.
    svc = kube.cluster_ip(ns, st["serviceName"])
    gateway_ns = "sbx-system"
    gw = f"gw-{ns[-4:]}"
    try:
        busybox_pod(kube, gateway_ns, gw, {"app.kubernetes.io/name": "sbx-ingress"})
        ping = wait_until("the agent from the gateway's pod",
                          lambda: kube.fetch_from_pod(gateway_ns, gw, f"http://{svc}:8080/v1/ping"), 30)
        assert json.loads(ping)
        page = kube.fetch_from_pod(gateway_ns, gw, f"http://{svc}:3000/")
        assert page and "Directory listing" in page
        # Another pod, even in the sandbox's own namespace, is refused.
        busybox_pod(kube, ns, "neighbour", {"app": "neighbour"})
        assert kube.fetch_from_pod(ns, "neighbour", f"http://{svc}:8080/v1/ping") is None
        assert kube.fetch_from_pod(ns, "neighbour", f"http://{st['podIP']}:3000/") is None
    finally:
        kube.kubectl("-n", gateway_ns, "delete", "pod", gw, "--wait=false", check=False)

    # The official SDK from the host (the node is not a pod: policies do not
    # apply to it), with cd and export kept across calls.
    shell = Sandbox(base_url=f"http://{svc}:8080", timeout=30).shell
    r = shell.exec_command(command="pwd; cd /tmp && export STAGE=operator")
    assert r.data.output == "/srv\n"
    r = shell.exec_command(id=r.data.session_id, command="echo $STAGE in $(pwd)")
    assert r.data.output == "operator in /tmp\n"


def test_a_sandbox_reaches_neither_the_apiserver_nor_another_sandbox(operator, ns):
    kube = operator
    kube.apply(ns, sandbox_yaml(kube, "a") + "---\n" + sandbox_yaml(kube, "b"))
    a, b = wait_running(kube, ns, "a"), wait_running(kube, ns, "b")
    shell = Sandbox(base_url=f"http://{kube.cluster_ip(ns, 'a')}:8080", timeout=30).shell
    probe = "curl -s -o /dev/null -m 3 -w '%{http_code}' "
    r = shell.exec_command(command=probe + f"http://{b['status']['podIP']}:8080/v1/ping; echo \" $?\"")
    assert r.data.output.split()[-1] != "0", r.data.output
    r = shell.exec_command(command=probe + f"http://{kube.cluster_ip(ns, 'b')}:8080/v1/ping; echo \" $?\"")
    assert r.data.output.split()[-1] != "0", r.data.output
    r = shell.exec_command(command=probe + "-k https://10.96.0.1/version; echo \" $?\"")
    assert r.data.output.split()[-1] != "0", r.data.output
    # No API credentials in a sandbox by default.
    r = shell.exec_command(command="ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; true")
    assert "No such file" in r.data.output
    # The cluster DNS stays reachable: names resolve.
    r = shell.exec_command(command="getent hosts kubernetes.default.svc.cluster.local")
    assert "10.96.0.1" in r.data.output


def test_pause_keeps_the_id_and_service_and_resume_serves_again(operator, ns):
    kube = operator
    kube.apply(ns, sandbox_yaml(kube, "nap", workingDir="/root"))
    before = wait_running(kube, ns, "nap")
    svc = kube.get(ns, "service", "nap")
    shell = Sandbox(base_url=f"http://{svc['spec']['clusterIP']}:8080", timeout=30).shell
    assert shell.exec_command(command="echo before").data.output == "before\n"
    kube.kubectl("-n", ns, "patch", "sandbox", "nap", "--type=merge", "-p", '{"spec":{"paused":true}}')
    wait_until("phase Paused and no pod", lambda: kube.get(ns, "sandbox", "nap")["status"]["phase"]
               == "Paused" and kube.kubectl("-n", ns, "get", "pod", "nap", check=False).returncode != 0, 60)
    paused = kube.get(ns, "sandbox", "nap")["status"]
    assert paused["id"] == before["status"]["id"] and "podIP" not in paused
    assert kube.get(ns, "service", "nap")["metadata"]["uid"] == svc["metadata"]["uid"]
    kube.kubectl("-n", ns, "patch", "sandbox", "nap", "--type=merge", "-p", '{"spec":{"paused":false}}')
    after = wait_running(kube, ns, "nap")
    assert after["status"]["id"] == before["status"]["id"]
    # The same Service address reaches the new pod.
    assert shell.exec_command(command="echo after").data.output == "after\n"


def test_an_image_that_cannot_be_had_is_told_in_status_and_describe(operator, ns):
    kube = operator
    kube.apply(ns, sandbox_yaml(kube, "bad", image="sbx.local/no-such-image:1"))
    reasons = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
    st = wait_until("the pull failure in status", lambda: (
        s := kube.get(ns, "sandbox", "bad").get("status")) and
        s["conditions"][0]["reason"] in reasons and s, 90)
    assert st["phase"] == "Pending" and st["conditions"][0]["status"] == "False"
    assert "no-such-image" in st["conditions"][0]["message"]
    out = wait_until("the Warning in kubectl describe", lambda: (
        d := kube.kubectl("-n", ns, "describe", "sandbox", "bad").stdout) and
        any(r in d for r in reasons) and "Warning" in d and d, 30)
    assert "sbx-operator" in out
