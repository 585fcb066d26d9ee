"""End-to-end fixtures: the real one-node cluster (tests/integration/k8s_node.py)
and what a test does with it: apply YAML, wait for a pod to be Ready, exec in
it, read its logs, fetch a URL from the host or from a pod.

The cluster is shared by the whole run (one per machine); every test gets a
namespace of its own. If `scripts/cluster.sh up` already started the
cluster, the tests use it and leave it up; otherwise the session brings it
up and takes it down at the end, and fails if the host is not as it was.
The images come from SBX_BUILD_DIR/images (scripts/images.sh): run the
suite with SBX_BUILD_DIR=build-asan to test the sanitizer build's agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from k8s_node import ClusterError, NodeCluster  # noqa: E402

BUILD = Path(os.environ.get("SBX_BUILD_DIR", REPO / "build"))
TIMINGS: dict[str, list[float]] = {}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def record_timing(what: str, seconds: float) -> None:
    TIMINGS.setdefault(what, []).append(seconds)


def wait_until(what: str, check, timeout: float = 60, interval: float = 0.1):
    """Polls check() until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (subprocess.SubprocessError, OSError, ClusterError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)


class Kube:
    """kubectl and friends, as a test uses them."""

    def __init__(self, cluster: NodeCluster, images: dict[str, str]):
        self.cluster = cluster
        self.images = images

    def image(self, name: str) -> str:
        """The content-tagged reference of an image of scripts/images.sh."""
        return self.images[f"SBX_IMAGE_{name.upper().replace('-', '_')}"]

    def image_id(self, name: str) -> str:
        """The config digest of the image's archive: what the kubelet reports
        as a container's imageID when it ran exactly this build."""
        archive = self.images[f"SBX_ARCHIVE_{name.upper().replace('-', '_')}"]
        with tarfile.open(archive) as t:
            index = json.load(t.extractfile("index.json"))
            manifest = json.load(t.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        return manifest["config"]["digest"]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return self.cluster.kubectl(*args, check=check, input=input, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.cluster.bin / "helm"), f"--kubeconfig={self.cluster.kubeconfig}",
                            *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"helm {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def apply(self, ns: str, yaml: str) -> None:
        self.kubectl("-n", ns, "apply", "-f", "-", input=yaml)

    def get(self, ns: str, kind: str, name: str) -> dict:
        return json.loads(self.kubectl("-n", ns, "get", kind, name, "-o", "json").stdout)

    def wait_ready(self, ns: str, *pods: str, timeout: float = 120) -> float:
        """Waits until every pod is Ready; returns the seconds it took. On a
        timeout the failure shows the pods' state and events."""
        t0 = time.monotonic()
        r = self.kubectl("-n", ns, "wait", "--for=condition=Ready", *[f"pod/{p}" for p in pods],
                         f"--timeout={int(timeout)}s", check=False, timeout=timeout + 10)
        if r.returncode != 0:
            desc = self.kubectl("-n", ns, "describe", "pods", *pods, check=False).stdout
            pytest.fail(f"pods {pods} not Ready after {timeout} s: {r.stderr}\n{desc[-4000:]}")
        return time.monotonic() - t0

    def pod_ip(self, ns: str, pod: str) -> str:
        return self.get(ns, "pod", pod)["status"]["podIP"]

    def cluster_ip(self, ns: str, svc: str) -> str:
        return self.get(ns, "service", svc)["spec"]["clusterIP"]

    def exec(self, ns: str, pod: str, *cmd: str, container: str | None = None,
             check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        args = ["-n", ns, "exec", pod] + (["-c", container] if container else []) + ["--", *cmd]
        return self.kubectl(*args, check=check, timeout=timeout)

    def logs(self, ns: str, pod: str, container: str | None = None) -> str:
        args = ["-n", ns, "logs", pod] + (["-c", container] if container else [])
        return self.kubectl(*args).stdout

    def fetch_from_pod(self, ns: str, pod: str, url: str, timeout_s: int = 3) -> str | None:
        """The body of url fetched inside the pod with busybox wget; None if
        the connection failed (refused, dropped or timed out)."""
        # busybox 1.35's `wget -T` crashes: coreutils-free `timeout` bounds it.
        r = self.exec(ns, pod, "timeout", str(timeout_s), "wget", "-qO-", url, check=False,
                      timeout=timeout_s + 20)
        return r.stdout if r.returncode == 0 else None

    @staticmethod
    def fetch_from_host(url: str, timeout: float = 3) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read().decode()
        except (urllib.error.URLError, OSError):
            return None


def busybox_pod(kube, ns: str, name: str, labels: dict) -> str:
    """A pod that sleeps, with busybox's wget for fetch_from_pod; Ready when
    this returns. Its name."""
    kube.apply(ns, yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": kube.image("busybox"), "imagePullPolicy": "Never",
            "command": ["sleep", "3600"]}]}}))
    kube.wait_ready(ns, name)
    return name


def sandbox_yaml(kube, name: str, **spec) -> str:
    spec.setdefault("image", kube.image("sandbox-base"))
    return yaml.safe_dump({"apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox",
                           "metadata": {"name": name}, "spec": spec})


def wait_running(kube, ns: str, name: str) -> dict:
    """Until the phase is Running and the agent answers through the Service
    (kube-proxy programs it a moment after the pod is Ready)."""
    r = kube.kubectl("-n", ns, "wait", "--for=jsonpath={.status.phase}=Running", f"sandbox/{name}",
                     "--timeout=120s", check=False, timeout=130)
    if r.returncode != 0:
        desc = kube.kubectl("-n", ns, "describe", "sandbox,pods", check=False).stdout
        pytest.fail(f"sandbox {name} not Running: {r.stderr}\n{desc[-4000:]}")
    sbx = kube.get(ns, "sandbox", name)
    svc = kube.cluster_ip(ns, sbx["status"]["serviceName"])
    wait_until("the agent through the Service",
               lambda: kube.fetch_from_host(f"http://{svc}:8080/v1/ping") is not None, 30)
    return sbx


@pytest.fixture(scope="session")
def node_cluster():
    """The cluster, up and Ready, with this build's images imported."""
    if os.geteuid() != 0:
        pytest.fail("the end-to-end suite runs a real node and needs root")
    cluster = NodeCluster()
    images = [Path(v) for k, v in NodeCluster.images_env(BUILD).items() if k.startswith("SBX_ARCHIVE_")]
    owned = not cluster.is_up()
    t0 = time.monotonic()
    cluster.up(images)
    record_timing("node up" if owned else "images imported into the running node",
                  time.monotonic() - t0)
    yield cluster
    timings_out = os.environ.get("SBX_E2E_TIMINGS")
    if timings_out:
        Path(timings_out).write_text(json.dumps(TIMINGS, indent=1))
    if owned:
        diff = cluster.down()
        assert not diff, "the host is not as it was before up:\n" + "\n".join(diff)


@pytest.fixture(scope="module")
def operator(kube):
    """The CRD and the operator's manifests, with this build's images."""
    kube.kubectl("apply", "-f", str(REPO / "manifests" / "crd"))
    kube.kubectl("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev", "--timeout=60s")
    text = (REPO / "manifests" / "operator" / "operator.yaml").read_text()
    text = text.replace("image: sbx.local/sbx-operator:dev", f"image: {kube.image('operator')}")
    text = text.replace("--agent-image=sbx.local/sbx-agent:dev",
                        f"--agent-image={kube.image('agent')}")
    text = text.replace("--egress-image=sbx.local/sbx-egress:dev",
                        f"--egress-image={kube.image('egress')}")
    text = text.replace("image: sbx.local/sbx-ingress:dev", f"image: {kube.image('ingress')}")
    kube.kubectl("apply", "-f", "-", input=text)
    r = kube.kubectl("-n", "sbx-system", "rollout", "status", "deployment/sbx-operator",
                     "--timeout=120s", check=False, timeout=130)
    if r.returncode != 0:
        pods = kube.kubectl("-n", "sbx-system", "describe", "pods", check=False).stdout
        pytest.fail(f"the operator did not become available: {r.stderr}\n{pods[-3000:]}")
    yield kube
    logs = kube.kubectl("-n", "sbx-system", "logs", "deployment/sbx-operator", check=False).stdout
    logs += kube.kubectl("-n", "sbx-system", "logs", "-l", "app.kubernetes.io/name=sbx-ingress",
                         "--tail=-1", check=False).stdout
    kube.kubectl("-n", "sbx-system", "delete", "deployment", "sbx-operator", "sbx-ingress",
                 "--wait=false")
    for mark in SANITIZER_MARKS:
        assert mark not in logs, logs


@pytest.fixture(scope="session")
def kube(node_cluster) -> Kube:
    return Kube(node_cluster, NodeCluster.images_env(BUILD))


@pytest.fixture
def ns(kube, request):
    """A namespace of the test's own, removed after it."""
    name = ("e2e-" + request.node.name.lower().replace("_", "-"))[:50].strip("-") + \
        "-" + os.urandom(2).hex()
    kube.kubectl("create", "namespace", name)
    # Pods cannot be created before the namespace's ServiceAccount exists.
    wait_until("the namespace's default ServiceAccount",
               lambda: kube.kubectl("-n", name, "get", "serviceaccount", "default",
                                    check=False).returncode == 0, 30)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
