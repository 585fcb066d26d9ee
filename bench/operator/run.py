"""bench/operator: sbx-operator against kubernetes-sigs/agent-sandbox's controller,
side by side on the same kind of apiserver, in one run.

  make bench-operator        (or: python bench/operator/run.py BUILD_DIR)

For each controller, on a control plane of its own (etcd, kube-apiserver and the
controller-manager's garbage collector, tests/integration/k8s_control_plane.py; no
kubelet, so pods are created but never run):
  - BENCH_SANDBOXES (1,000) Sandboxes are created at BENCH_RATE (100) per second, each
    POST sent at its slot on one of four kept-alive connections;
  - latency: from the POST to the moment a watch sees the last of the Sandbox's
    children (sbx: Pod, Service, NetworkPolicy; agent-sandbox: Pod and its headless
    Service, spec.service: true), p50/p99; a controller that has not made them all
    within BENCH_LIMIT_S (300) is reported with how many it made, the rest counted
    at the limit;
  - writes per Sandbox: the apiserver's own apiserver_request_total for writes
    (POST, PUT, PATCH, APPLY, DELETE) once every Sandbox has its status, minus
    the benchmark's own creates and what the apiserver writes itself (ClusterIP
    allocations, its leases), divided by the count; by resource too;
  - RSS of the controller with BENCH_SANDBOXES, then with BENCH_SCALE (10,000) in all
    (BENCH_PEER_SCALE for the peer, default the same; the rest created as fast as the
    apiserver takes them), once every one has a status (within BENCH_SCALE_LIMIT_S).
The peer is agent-sandbox-controller v1.0.1 from the Go module proxy, built once
into ~/.cache/sbx/tools (bench/operator/peer.sh), with its own Sandbox CRD from that
module. BENCH_PEER=0 skips it. The real-node half (create -> Running -> agent
answering, for 20 Sandboxes) is bench/operator/node.py.
Figures go to docs/benchmarks.md by hand, with the machine they came from."""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from k8s_control_plane import ControlPlane, free_port  # noqa: E402

N = int(os.environ.get("BENCH_SANDBOXES", "1000"))
RATE = float(os.environ.get("BENCH_RATE", "100"))
SCALE = int(os.environ.get("BENCH_SCALE", "10000"))
PEER = os.environ.get("BENCH_PEER", "1") != "0"
LIMIT_S = float(os.environ.get("BENCH_LIMIT_S", "300"))  # for all children of the first N
PEER_SCALE = int(os.environ.get("BENCH_PEER_SCALE", str(SCALE)))
SCALE_LIMIT_S = float(os.environ.get("BENCH_SCALE_LIMIT_S", "1200"))  # for every status at scale
WORKERS = int(os.environ.get("BENCH_WORKERS", "0"))  # 0: sbx-operator's default
CONNS = 4
NS = "bench"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
APISERVER_OWN = ("ipaddresses", "leases")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Api:
    """Admin requests on one kept-alive HTTPS connection."""

    def __init__(self, cp: ControlPlane):
        self.conn = http.client.HTTPSConnection("127.0.0.1", cp.port, context=cp._ssl(),
                                                timeout=60)

    def call(self, method: str, path: str, body=None) -> tuple[int, dict | str]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        text = r.read().decode()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


class Watch(threading.Thread):
    """Records when each object of a collection is first seen (ADDED)."""

    def __init__(self, cp: ControlPlane, path: str, selector: str | None, rv: str):
        super().__init__(daemon=True)
        q = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "false"}
        if selector:
            q["labelSelector"] = selector
        self.cp, self.url = cp, f"{path}?{urllib.parse.urlencode(q)}"
        self.first: dict[str, float] = {}
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        rv = urllib.parse.parse_qs(self.url.split("?", 1)[1])["resourceVersion"][0]
        while not self.done.is_set():  # a stream the apiserver ends is resumed
            url = re.sub(r"resourceVersion=[^&]*", f"resourceVersion={rv}", self.url)
            conn = http.client.HTTPSConnection("127.0.0.1", self.cp.port,
                                               context=self.cp._ssl(), timeout=3600)
            conn.request("GET", url)
            r = conn.getresponse()
            while not self.done.is_set():
                line = r.readline()
                if not line:
                    break
                ev = json.loads(line)
                meta = ev["object"].get("metadata", {})
                if ev["type"] == "ERROR":
                    raise SystemExit(f"bench: watch {self.url}: {ev['object']}")
                rv = meta.get("resourceVersion", rv)
                if ev["type"] == "ADDED" and meta.get("name") not in self.first:
                    self.first[meta["name"]] = time.time()
            conn.close()


def apiserver_writes(cp: ControlPlane) -> dict[str, float]:
    """apiserver_request_total of write verbs, by resource (subresource joined)."""
    status, body = cp.get("/metrics", 30)
    assert status == 200
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        res = labels.get("resource", "")
        if labels.get("subresource"):
            res += "/" + labels["subresource"]
        out[res] = out.get(res, 0) + float(line.rsplit(" ", 1)[1])
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


class Controller:
    """One controller under test: how to install it, start it and make its Sandboxes."""

    name = ""
    children: list[tuple[str, str]] = []  # (collection path in NS, label selector)
    collection = ""

    def __init__(self, cp: ControlPlane, workdir: Path):
        self.cp, self.workdir = cp, workdir
        self.proc: subprocess.Popen | None = None

    def sandbox(self, name: str) -> dict:
        raise NotImplementedError

    def has_status(self, obj: dict) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sbx(Controller):
    name = "sbx-operator"
    collection = f"/apis/sbx.dev/v1alpha1/namespaces/{NS}/sandboxes"
    children = [(f"/api/v1/namespaces/{NS}/pods", "sbx.dev/sandbox"),
                (f"/api/v1/namespaces/{NS}/services", "sbx.dev/sandbox"),
                (f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies", "sbx.dev/sandbox")]

    def start(self, build: Path) -> None:
        self.cp.kubectl("apply", "-f", str(REPO / "manifests" / "crd"))
        wait(lambda: self.cp.kubectl("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev",
                                     "--timeout=30s", check=False).returncode == 0,
             "the CRD established")
        port = free_port()
        self.proc = subprocess.Popen(
            [str(build / "operator" / "sbx-operator"), f"--kubeconfig={self.cp.kubeconfig}",
             f"--listen=127.0.0.1:{port}", "--gateway-url=https://sbx.example.com",
             "--log-level=warn", *([f"--workers={WORKERS}"] if WORKERS else [])],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "sbx-operator.log", "w"))
        wait(lambda: http_ok(port, "/readyz"), "sbx-operator ready")
        self.port = port

    def stats(self) -> dict[str, float]:
        """The operator's own counters, for the report."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", "/metrics")
        out = {}
        for line in c.getresponse().read().decode().splitlines():
            m = re.match(r"(sbx_operator_(?:reconciles|reconcile_errors|conflicts|status_writes|"
                         r"child_writes|events)_total|sbx_operator_apiserver_requests_total)"
                         r"(\{[^}]*\})? (\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def sandbox(self, name: str) -> dict:
        return {"apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": name},
                "spec": {"image": "sbx.local/sandbox-base:dev",
                         "ports": [{"name": "web", "port": 3000}]}}

    def has_status(self, obj: dict) -> bool:
        return bool(obj.get("status", {}).get("id"))


class AgentSandbox(Controller):
    name = "agent-sandbox"
    collection = f"/apis/agents.x-k8s.io/v1alpha1/namespaces/{NS}/sandboxes"
    children = [(f"/api/v1/namespaces/{NS}/pods", None),
                (f"/api/v1/namespaces/{NS}/services", None)]

    def start(self, build: Path) -> None:
        out = subprocess.run([str(HERE / "peer.sh")], check=True, capture_output=True,
                             text=True).stdout.split()
        binary, crd = out[0], out[1]
        self.cp.kubectl("apply", "--server-side", "-f", crd)
        # kubectl wait fails at once while the new CRD has no conditions yet.
        wait(lambda: self.cp.kubectl("wait", "--for=condition=Established",
                                     "crd/sandboxes.agents.x-k8s.io", "--timeout=30s",
                                     check=False).returncode == 0, "the peer's CRD established")
        versions = json.loads(self.cp.kubectl("get", "crd", "sandboxes.agents.x-k8s.io", "-o",
                                              "json").stdout)["spec"]["versions"]
        served = [v["name"] for v in versions if v.get("storage")]
        self.collection = f"/apis/agents.x-k8s.io/{served[0]}/namespaces/{NS}/sandboxes"
        self.version = served[0]
        mport, hport = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(self.cp.kubeconfig))
        self.proc = subprocess.Popen(
            [binary, "--leader-elect=false", f"--metrics-bind-address=127.0.0.1:{mport}",
             f"--health-probe-bind-address=127.0.0.1:{hport}"],
            env=env, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "agent-sandbox.log", "w"))
        wait(lambda: http_ok(hport, "/readyz"), "agent-sandbox-controller ready")

    def sandbox(self, name: str) -> dict:
        return {"apiVersion": f"agents.x-k8s.io/{self.version}", "kind": "Sandbox",
                "metadata": {"name": name},
                "spec": {"service": True, "podTemplate": {"spec": {"containers": [{
                    "name": "sandbox", "image": "sbx.local/sandbox-base:dev",
                    "ports": [{"containerPort": 3000}]}]}}}}

    def has_status(self, obj: dict) -> bool:
        return bool(obj.get("status", {}).get("conditions"))


def http_ok(port: int, path: str) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path)
        return c.getresponse().status == 200
    except OSError:
        return False


def wait(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: {what}: not after {timeout} s")


def create_all(cp: ControlPlane, ctl: Controller, names: list[str], rate: float | None
               ) -> dict[str, float]:
    """POSTs every Sandbox (at rate per second, or as fast as it goes); name -> send time."""
    sent: dict[str, float] = {}
    t0 = time.monotonic() + 0.2
    errors: list[str] = []

    def worker(k: int) -> None:
        api = Api(cp)
        for i in range(k, len(names), CONNS):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            at = time.time()
            status, body = api.call("POST", ctl.collection, ctl.sandbox(names[i]))
            if status != 201:
                errors.append(f"{names[i]}: {status} {str(body)[:200]}")
            sent[names[i]] = at

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"bench: {len(errors)} creates failed, first: {errors[0]}")
    return sent


def statuses(cp: ControlPlane, ctl: Controller) -> int:
    api = Api(cp)
    n, cont = 0, ""
    while True:
        status, body = api.call("GET", f"{ctl.collection}?limit=500&continue={cont}")
        n += sum(1 for o in body["items"] if ctl.has_status(o))
        cont = body["metadata"].get("continue", "")
        if not cont:
            return n


def settle(cp: ControlPlane, ctl: Controller, total: int, timeout: float) -> float | None:
    """Waits until every Sandbox has a status; when (monotonic), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if statuses(cp, ctl) >= total:
            return time.monotonic()
        time.sleep(0.5)
    return None


def run_one(cls, build: Path, workdir: Path) -> dict:
    with ControlPlane(workdir / cls.name, service_cidr="10.96.0.0/16") as cp:
        ctl = cls(cp, workdir)
        cp.kubectl("create", "namespace", NS)
        ctl.start(build)
        try:
            rv = json.loads(cp.kubectl("get", "namespace", NS, "-o", "json").stdout)[
                "metadata"]["resourceVersion"]
            watches = [Watch(cp, path, sel, rv) for path, sel in ctl.children]
            names = [f"s{i:05}" for i in range(N)]
            # One Sandbox first, not measured: the apiserver's first create of a
            # kind (CEL compiled, caches filled) takes seconds, for either.
            create_all(cp, ctl, ["warmup"], None)
            wait(lambda: all("warmup" in w.first for w in watches), f"{ctl.name}: warm-up")
            before = apiserver_writes(cp)
            pids = {"controller": ctl.proc.pid, "apiserver": cp.procs["kube-apiserver"].pid,
                    "etcd": cp.procs["etcd"].pid}
            cpu0 = {k: cpu_s(p) for k, p in pids.items()}
            t0 = time.monotonic()
            sent = create_all(cp, ctl, names, RATE)
            create_s = time.monotonic() - t0
            # A controller that has not made every child within the limit is
            # reported with what it made; the rest count as the limit.
            deadline = time.monotonic() + LIMIT_S
            def missing() -> int:
                return sum(1 for n in names if not all(n in w.first for w in watches))

            while time.monotonic() < deadline and missing():
                time.sleep(0.2)
            complete = sum(1 for n in names if all(n in w.first for w in watches))
            done = settle(cp, ctl, N + 1, max(1.0, deadline - time.monotonic())) \
                if complete == N else None
            cpu = {k: cpu_s(p) - cpu0[k] for k, p in pids.items()}
            time.sleep(2)  # writes that follow the status (events, second passes) land
            writes = diff(apiserver_writes(cp), before)
            writes["sandboxes"] = writes.get("sandboxes", 0) - N  # the benchmark's own
            # What the apiserver writes itself: ClusterIP allocations, its leases.
            own_writes = {k: writes.pop(k) for k in APISERVER_OWN if k in writes}
            lat = [max(w.first[n] for w in watches) - sent[n]
                   if all(n in w.first for w in watches) else LIMIT_S for n in names]
            rss_n = rss_kib(ctl.proc.pid)
            own = ctl.stats() if hasattr(ctl, "stats") else {}
            result = {
                "name": ctl.name, "create_s": create_s, "complete": complete,
                "total_s": done - t0 if done else None,
                "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
                "max_ms": max(lat) * 1000,
                "writes": sum(writes.values()) / N,
                "writes_by": {k: v / N for k, v in sorted(writes.items()) if v > 0},
                "apiserver_own": {k: v / N for k, v in sorted(own_writes.items())},
                "rss_n_mib": rss_n / 1024,
                "own": {k: v / N for k, v in own.items()},
                "cpu_s": cpu,
            }
            print(f"bench: {ctl.name}: {json.dumps(result)}", file=sys.stderr, flush=True)
            scale = SCALE if isinstance(ctl, Sbx) else PEER_SCALE
            if scale > N and complete == N:
                more = [f"s{i:05}" for i in range(N, scale)]
                create_all(cp, ctl, more, None)
                if settle(cp, ctl, scale + 1, SCALE_LIMIT_S):
                    time.sleep(2)
                    result["rss_scale_mib"] = rss_kib(ctl.proc.pid) / 1024
            for w in watches:
                w.done.set()
            return result
        finally:
            ctl.stop()


def main() -> int:
    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    workdir = Path(os.environ.get("BENCH_DIR", "/tmp/sbx-bench-operator"))
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    results = [run_one(Sbx, build, workdir)]
    if PEER:
        results.append(run_one(AgentSandbox, build, workdir))
    print(f"\nbench/operator on {platform.node()} ({os.cpu_count()} CPUs): {N} Sandboxes at "
          f"{RATE:g}/s, then {SCALE} in all\n")
    cols = [(f"with children in {LIMIT_S:g} s", "complete"),
            ("create -> children p50 (ms)", "p50_ms"), ("p99 (ms)", "p99_ms"),
            ("max (ms)", "max_ms"), ("writes / Sandbox", "writes"),
            (f"all {N} with status (s)", "total_s"), (f"RSS at {N} (MiB)", "rss_n_mib"),
            (f"RSS at {SCALE} (MiB)", "rss_scale_mib")]
    print(f"{'':32}" + "".join(f"{r['name']:>16}" for r in results) +
          ("      sbx/peer" if len(results) > 1 else ""))
    for label, key in cols:
        vals = [r.get(key) for r in results]
        line = f"{label:32}" + "".join(f"{v:16.1f}" if v is not None else f"{'-':>16}"
                                       for v in vals)
        if len(vals) > 1 and vals[0] and vals[1]:
            line += f"{vals[0] / vals[1]:14.2f}"
        print(line)
    for r in results:
        print(f"\n{r['name']} writes per Sandbox by resource: " +
              ", ".join(f"{k} {v:.2f}" for k, v in r["writes_by"].items()) +
              " (and the apiserver's own: " +
              ", ".join(f"{k} {v:.2f}" for k, v in r["apiserver_own"].items()) + ")")
        print(f"{r['name']} CPU seconds until every status: " +
              ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items()))
        if r["own"]:
            print(f"{r['name']}'s own counters per Sandbox: " +
                  ", ".join(f"{k.replace('sbx_operator_', '')} {v:.2f}"
                            for k, v in r["own"].items()))
    print(json.dumps(results, indent=1), file=open(workdir / "results.json", "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
