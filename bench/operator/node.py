"""bench/operator, on the real node: create -> Running -> agent answering.

  python bench/operator/node.py BUILD_DIR     (root; make bench-operator runs it)

Brings the one-node cluster up if it is not (scripts/cluster.sh up does the same),
installs the CRD and sbx-operator from manifests/ with this build's images, then
creates BENCH_NODE_SANDBOXES (20) Sandboxes of sbx.local/sandbox-base at once (one
kubectl apply) and measures, for each, from its create:
  - Running: a watch sees status.phase Running (the pod ran, the agent was injected
    and its readiness probe passed);
  - answering: the first 200 from GET /v1/ping on the pod's address, polled from the
    node every 20 ms as soon as the pod has an address.
Prints p50 and p99 of both. The Sandboxes and their namespace are deleted after; a
cluster this script brought up is taken down again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from k8s_node import NodeCluster  # noqa: E402

N = int(os.environ.get("BENCH_NODE_SANDBOXES", "20"))
NS = "bench-node"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    os.environ["SBX_BUILD_DIR"] = str(build)
    cluster = NodeCluster()
    owned = not cluster.is_up()
    if owned:
        cluster.up()
    images = NodeCluster.images_env(build)
    try:
        k = cluster.kubectl
        k("apply", "-f", str(REPO / "manifests" / "crd"))
        k("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev", "--timeout=60s")
        text = (REPO / "manifests" / "operator" / "operator.yaml").read_text()
        text = text.replace("image: sbx.local/sbx-operator:dev",
                            f"image: {images['SBX_IMAGE_OPERATOR']}")
        text = text.replace("--agent-image=sbx.local/sbx-agent:dev",
                            f"--agent-image={images['SBX_IMAGE_AGENT']}")
        k("apply", "-f", "-", input=text)
        k("-n", "sbx-system", "rollout", "status", "deployment/sbx-operator", "--timeout=120s",
          timeout=130)
        k("delete", "namespace", NS, "--ignore-not-found", "--timeout=120s", timeout=130)
        k("create", "namespace", NS)
        names = [f"n{i:02}" for i in range(N)]
        docs = "\n---\n".join(json.dumps({
            "apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": n},
            "spec": {"image": images["SBX_IMAGE_SANDBOX_BASE"], "command": ["sleep", "infinity"]}})
            for n in names)
        running: dict[str, float] = {}
        answering: dict[str, float] = {}
        ips: dict[str, str] = {}
        watch = subprocess.Popen(
            [str(cluster.bin / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "-n", NS, "get",
             "sandboxes", "--watch", "-o", "json", "--output-watch-events"],
            stdout=subprocess.PIPE, text=True)

        def follow() -> None:
            dec, buf = json.JSONDecoder(), ""
            for line in watch.stdout:
                buf += line
                try:
                    ev, end = dec.raw_decode(buf.strip())
                except ValueError:
                    continue
                buf = ""
                obj = ev.get("object", {})
                name, st = obj["metadata"]["name"], obj.get("status", {})
                if st.get("podIP"):
                    ips.setdefault(name, st["podIP"])
                if st.get("phase") == "Running" and name not in running:
                    running[name] = time.time()

        def poll(name: str) -> None:
            while name not in ips:
                time.sleep(0.02)
            url = f"http://{ips[name]}:8080/v1/ping"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            answering[name] = time.time()
                            return
                except OSError:
                    pass
                time.sleep(0.02)

        threading.Thread(target=follow, daemon=True).start()
        pollers = [threading.Thread(target=poll, args=(n,), daemon=True) for n in names]
        for t in pollers:
            t.start()
        t0 = time.time()
        k("-n", NS, "apply", "-f", "-", input=docs)
        deadline = time.monotonic() + 300
        while (len(running) < N or len(answering) < N) and time.monotonic() < deadline:
            time.sleep(0.1)
        watch.terminate()
        if len(running) < N or len(answering) < N:
            print(f"bench: only {len(running)} Running and {len(answering)} answering of {N}")
            print(k("-n", NS, "get", "sandboxes,pods", "-o", "wide", check=False).stdout)
            print(k("-n", NS, "describe", "pods", check=False).stdout[-6000:])
            return 1
        # One kubectl apply creates them in turn; each is timed from the apply's start.
        r = [running[n] - t0 for n in names]
        a = [answering[n] - t0 for n in names]
        print(f"\nbench/operator on the real node: {N} Sandboxes of sandbox-base in one apply\n")
        print(f"{'':28}{'p50 (s)':>10}{'p99 (s)':>10}{'max (s)':>10}")
        print(f"{'create -> Running':28}{pct(r, 50):10.2f}{pct(r, 99):10.2f}{max(r):10.2f}")
        print(f"{'create -> agent answering':28}{pct(a, 50):10.2f}{pct(a, 99):10.2f}{max(a):10.2f}")
        return 0
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        if owned:
            cluster.down()


if __name__ == "__main__":
    sys.exit(main())
