"""bench/egress: sbx-egress against dnsmasq, unbound and CoreDNS, each
forwarding to the same upstream, side by side in one run.

  make bench-egress            (or, as root: python bench/egress/run.py BUILD_DIR)

Everything runs in a network namespace of its own, on its loopback. The
upstream is dnsmasq answering 10,000 names (h<N>.bench.test, each its own
address, TTL 300) from a hosts file. Each forwarder has its cache off, so
every query goes upstream, as sbx-egress's always does: dnsmasq with
--cache-size=0, unbound with cache-max-ttl 0 (one thread, validation off),
CoreDNS (the test cluster's build) with `forward` and no `cache`
(unbound is told that test. is not its own special-use zone). sbx-egress
runs with a policy of 4,096 rules (4,000 names, 95 wildcards, and
`*.bench.test` allowed), learns every answer's addresses into its nftables
sets before releasing the answer, and logs no decision (the peers log no
query either; each decision is still counted and kept for GET /decisions).

Measures, with dnsperf (Debian):
  - added latency: p50 and p99 of 10,000 queries at BENCH_RATE (2,000/s),
    minus the same against the upstream directly;
  - queries/s: BENCH_SECONDS (10) of dnsperf with 200 queries outstanding,
    the median of BENCH_REPEAT (3) runs;
  - sbx-egress from exec to ready (the "ready" log line: rules in, proxy
    listening), BENCH_STARTS (20) starts, each in a new network namespace
    as in a new pod, with 4,096 rules and with 2;
  - RSS after the runs (sbx-egress then holds 10,000 learned addresses).
Prints a table with ratios to the best peer. Figures go to
docs/benchmarks.md by hand, with the machine they came from."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = 10_000
RULES = 4096
RATE = int(os.environ.get("BENCH_RATE", "2000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
STARTS = int(os.environ.get("BENCH_STARTS", "20"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
UPSTREAM = 5300
PORTS = {"dnsmasq": 5301, "unbound": 5302, "CoreDNS": 5303, "sbx-egress": 5304}


def sh(*argv: str, ns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def k8s_bin() -> Path:
    found = sorted((Path.home() / ".cache" / "sbx" / "k8s").glob("*/bin/coredns"))
    if not found:
        raise SystemExit("no CoreDNS build: run scripts/k8s-toolchain.sh (or `make demo`) first")
    return found[-1]


class Bench:
    def __init__(self, build: Path):
        self.build = build
        self.egress = build / "egress-sidecar" / "sbx-egress"
        self.tmp = Path(tempfile.mkdtemp(prefix="sbx-bench-egress-"))
        self.ns = f"sbxbench{os.getpid()}"
        self.procs: dict[str, subprocess.Popen] = {}
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "set", "lo", "up", ns=self.ns)
        self.write_inputs()

    def write_inputs(self) -> None:
        hosts = [f"198.18.{i // 250}.{1 + i % 250} h{i}.bench.test" for i in range(NAMES)]
        (self.tmp / "hosts").write_text("\n".join(hosts) + "\n")
        (self.tmp / "queries").write_text("".join(f"h{i}.bench.test A\n" for i in range(NAMES)))
        rules = [{"action": "allow", "target": f"svc{i}.example.org"} for i in range(4000)]
        rules += [{"action": "allow", "target": f"*.zone{i}.example.net"} for i in range(RULES - 4001)]
        rules.append({"action": "allow", "target": "*.bench.test"})
        assert len(rules) == RULES
        (self.tmp / "policy.json").write_text(json.dumps({"defaultAction": "deny", "rules": rules}))
        (self.tmp / "small.json").write_text(json.dumps(
            {"defaultAction": "deny", "rules": [{"action": "allow", "target": "*.bench.test"},
                                                {"action": "allow", "target": "pypi.org"}]}))
        (self.tmp / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{PORTS['unbound']}
  port: {PORTS['unbound']}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.tmp}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "test." nodefault
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  num-queries-per-thread: 4096
  outgoing-range: 8192
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{UPSTREAM}
""")
        (self.tmp / "Corefile").write_text(
            f".:{PORTS['CoreDNS']} {{\n  bind 127.0.0.1\n  forward . 127.0.0.1:{UPSTREAM} {{\n"
            "    max_concurrent 10000\n  }\n}\n")

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=log,
                             stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs[name] = p
        return p

    def wait_answering(self, name: str, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            p = self.procs.get(name)
            if p and p.poll() is not None:
                raise SystemExit(f"{name} exited: {(self.tmp / f'{name}.log').read_text()[-2000:]}")
            r = sh("dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(self.tmp / "queries"),
                   "-n", "1", "-t", "1", "-Q", "100", "-l", "0.05", ns=self.ns, check=False)
            if "Queries completed:" in r.stdout and " 0 (" not in r.stdout.split("Queries completed:")[1][:12]:
                return
            time.sleep(0.1)
        raise SystemExit(f"{name} did not answer on port {port}")

    def start_all(self) -> None:
        self.start("upstream", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                   "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={UPSTREAM}",
                   f"--addn-hosts={self.tmp / 'hosts'}", "--local-ttl=300", "--pid-file=",
                   "--dns-forward-max=10000", "--cache-size=10000", "--log-facility=-", "--user=root")
        self.wait_answering("upstream", UPSTREAM)
        self.start("dnsmasq", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                   "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={PORTS['dnsmasq']}",
                   f"--server=127.0.0.1#{UPSTREAM}", "--cache-size=0", "--dns-forward-max=10000",
                   "--pid-file=", "--log-facility=-", "--user=root")
        self.start("unbound", "unbound", "-d", "-c", str(self.tmp / "unbound.conf"))
        self.start("CoreDNS", str(k8s_bin()), "-conf", str(self.tmp / "Corefile"))
        self.start("sbx-egress", str(self.egress), f"--policy-file={self.tmp / 'policy.json'}",
                   f"--dns-listen=127.0.0.1:{PORTS['sbx-egress']}", "--dns-listen6=",
                   f"--upstream=127.0.0.1:{UPSTREAM}", "--listen=127.0.0.1:15380",
                   "--max-inflight=4096", "--log-decisions=none", "--log-format=json")
        for name, port in PORTS.items():
            self.wait_answering(name, port)

    def latencies(self, port: int) -> list[float]:
        r = sh("dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(self.tmp / "queries"),
               "-n", "1", "-Q", str(RATE), "-q", "100", "-t", "2", "-v", ns=self.ns)
        lat = [float(m.group(1)) * 1e3 for m in re.finditer(r"^> NOERROR \S+ A (\S+)$", r.stdout, re.M)]
        if len(lat) < NAMES * 0.99:
            raise SystemExit(f"port {port}: {len(lat)} of {NAMES} answered NOERROR:\n{r.stdout[-1500:]}")
        return lat

    def qps(self, port: int) -> tuple[float, float]:
        """The median of REPEAT runs (two cores are shared by the load, the
        upstream and the forwarder: single runs vary by a fifth)."""
        runs = sorted((self.qps_once(port) for _ in range(REPEAT)), key=lambda r: r[0])
        return runs[len(runs) // 2]

    def qps_once(self, port: int) -> tuple[float, float]:
        r = sh("dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(self.tmp / "queries"),
               "-l", str(SECONDS), "-q", "200", "-t", "2", ns=self.ns)
        qps = float(re.search(r"Queries per second:\s+(\S+)", r.stdout).group(1))
        lost = float(re.search(r"Queries lost:\s+\d+ \((\S+)%\)", r.stdout).group(1))
        return qps, lost

    def ready_ms(self, policy: str) -> list[tuple[float, float]]:
        """(exec → ready line, the sidecar's own ready_ms) of STARTS starts,
        each in a fresh network namespace, as in a new pod."""
        out = []
        for i in range(STARTS):
            ns = f"{self.ns}r{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            try:
                t0 = time.monotonic()
                p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", str(self.egress),
                                      f"--policy-file={self.tmp / policy}", "--dns-listen6=",
                                      f"--upstream=127.0.0.1:{UPSTREAM}", "--log-format=json"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for line in p.stderr:
                    if '"msg":"ready"' in line:
                        out.append(((time.monotonic() - t0) * 1e3, json.loads(line)["ready_ms"]))
                        break
                else:
                    raise SystemExit(f"sbx-egress did not start: {p.wait()}")
                p.terminate()
                p.wait(10)
            finally:
                sh("ip", "netns", "del", ns, check=False)
        # nsenter's own exec is part of the first figure; measured alone.
        base = []
        for _ in range(STARTS):
            t0 = time.monotonic()
            sh("nsenter", f"--net=/run/netns/{self.ns}", "true")
            base.append((time.monotonic() - t0) * 1e3)
        return [(a - statistics.median(base), b) for a, b in out]

    def rss_mib(self, name: str) -> float:
        # The server is the child of `ip netns exec` (which execs it: same pid).
        status = Path(f"/proc/{self.procs[name].pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        sh(str(self.egress), "cleanup", ns=self.ns, check=False)
        sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/egress builds a network namespace: run it as root")
    build = Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    b = Bench(build)
    res: dict[str, dict] = {}
    try:
        big, small = b.ready_ms("policy.json"), b.ready_ms("small.json")
        b.start_all()
        base = b.latencies(UPSTREAM)
        b50, b99 = pct(base, 0.5), pct(base, 0.99)
        for name, port in PORTS.items():
            lat = b.latencies(port)
            qps, lost = b.qps(port)
            res[name] = dict(p50=pct(lat, 0.5) - b50, p99=pct(lat, 0.99) - b99, qps=qps, lost=lost,
                             rss=b.rss_mib(name))
        learned = sh("nft", "list", "set", "inet", "sbx_egress", "learned4", ns=b.ns).stdout.count("expires")
    finally:
        b.close()

    peers = [n for n in PORTS if n != "sbx-egress"]
    s = res["sbx-egress"]
    print(f"\nbench/egress on {platform.node()} ({os.cpu_count()} cores, {platform.release()}): "
          f"{NAMES} names, {RATE}/s for latency, {SECONDS} s for queries/s; upstream p50 "
          f"{b50:.3f} ms, p99 {b99:.3f} ms\n")
    print("| measure | " + " | ".join(PORTS) + " | sbx-egress / best peer |")
    print("|---|" + "---:|" * (len(PORTS) + 1))
    for label, key, fmt, lower in (("queries/s", "qps", "{:,.0f}", False),
                                   ("queries lost (%)", "lost", "{:.2f}", True),
                                   ("added latency p50 (ms)", "p50", "{:.3f}", True),
                                   ("added latency p99 (ms)", "p99", "{:.3f}", True),
                                   ("RSS after the runs (MiB)", "rss", "{:.2f}", True)):
        best = (min if lower else max)(res[p][key] for p in peers)
        ratio = f"{s[key] / best:.2f}" if best > 0 else "-"
        print(f"| {label} | " + " | ".join(fmt.format(res[n][key]) for n in PORTS) + f" | {ratio} |")
    print(f"\nsbx-egress held {learned} learned IPv4 addresses at the RSS figure.")
    for label, runs in ((f"{RULES} rules", big), ("2 rules", small)):
        ext, own = [r[0] for r in runs], [r[1] for r in runs]
        print(f"sbx-egress exec → ready, {label}, {STARTS} starts in new namespaces: p50 "
              f"{statistics.median(ext):.1f} ms, max {max(ext):.1f} ms (its own ready_ms, from "
              f"main: p50 {statistics.median(own):.1f} ms)")


if __name__ == "__main__":
    main()
