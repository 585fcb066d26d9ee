"""The agent injected into an image that does not have it, as sandbox pods
get it: an init container copies the bundle from sbx.local/sbx-agent into an
emptyDir, and the main container runs `sbx-agent run -- sleep infinity`.
The official agent-sandbox SDK then talks to it through a ClusterIP
Service, from the host."""

from __future__ import annotations

import pytest
from agent_sandbox import Sandbox

from conftest import BUILD, wait_until

SANITIZED = "SBX_SANITIZE:BOOL=ON" in (BUILD / "CMakeCache.txt").read_text() \
    if (BUILD / "CMakeCache.txt").exists() else False
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def agent_pod(kube, name: str, image: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 2
  automountServiceAccountToken: false
  initContainers:
  - name: install-agent
    image: {kube.image('agent')}
    imagePullPolicy: Never
    args: [install, /sbx]
    volumeMounts: [{{name: sbx, mountPath: /sbx}}]
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: Never
    command: [/opt/sbx/bin/sbx-agent, run, --, sleep, infinity]
    env: [{{name: WORKSPACE, value: /tmp}}]
    ports: [{{name: agent, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /v1/ping, port: 8080}}, periodSeconds: 1}}
    volumeMounts: [{{name: sbx, mountPath: /opt/sbx, readOnly: true}}]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
      seccompProfile: {{type: RuntimeDefault}}
  volumes:
  - name: sbx
    emptyDir: {{}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: agent, port: 8080, targetPort: 8080}}]
"""


@pytest.mark.parametrize("image", ["sandbox-base", "busybox"])
def test_the_sdk_runs_commands_in_an_injected_agent_through_its_service(kube, ns, image):
    ref = kube.image(image)
    kube.apply(ns, agent_pod(kube, "sbx", ref))
    kube.wait_ready(ns, "sbx")
    # The image itself has no agent: it came through the init container.
    status = kube.get(ns, "pod", "sbx")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert status["containerStatuses"][0]["imageID"] == kube.image_id(image)
    assert status["initContainerStatuses"][0]["imageID"] == kube.image_id("agent")
    assert "copied /opt/sbx into /sbx" in kube.logs(ns, "sbx", "install-agent")

    svc = kube.cluster_ip(ns, "sbx")
    url = f"http://{svc}:8080"
    wait_until("the agent through its Service",
               lambda: kube.fetch_from_host(f"{url}/v1/ping") is not None, 30)
    shell = Sandbox(base_url=url, timeout=30).shell
    r = shell.exec_command(command="cd /etc && export GREETING=from-the-pod")
    assert r.data.status == "completed" and r.data.exit_code == 0
    sid = r.data.session_id
    r = shell.exec_command(id=sid, command="pwd; echo $GREETING; cat /etc/hostname")
    assert r.data.output == "/etc\nfrom-the-pod\nsbx\n"
    # The sandbox's main process is the command the agent runs (PID 1 is the agent).
    r = shell.exec_command(id=sid, command="cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.data.output.startswith("/opt/sbx/bin/sbx-agent run -- sleep infinity")
    r = shell.exec_command(command="ls /definitely/not/here")
    assert r.data.exit_code != 0

    if image == "busybox":
        # No glibc in this image: the agent brought its own loader and libraries.
        r = kube.exec(ns, "sbx", "sh", "-c", "ls /lib /lib64 /usr/lib 2>&1 | grep -c 'libc.so' || true")
        assert r.stdout.strip() == "0"

    logs = kube.logs(ns, "sbx", "main")
    for mark in SANITIZER_MARKS:
        assert mark not in logs, logs
    if SANITIZED:
        assert "libasan" in kube.exec(ns, "sbx", "cat", "/proc/1/maps").stdout
