"""bench/ingress: sbx-ingress against nghttpx, HAProxy and nginx, each in
front of the same backend, side by side in one run.

  make bench-ingress            (or: python bench/ingress/run.py BUILD_DIR)

On 127.0.0.1: the backend is an nginx instance answering GET /hello with a
5-byte body (keep-alive, no logging), and sbx-httptool's /ws WebSocket echo
for the tunnels. Each proxy runs with BENCH_WORKERS (1) workers, logs
nothing, keeps connections to the backend alive, and takes HTTP/1.1 and h2c
(prior knowledge) from clients:
  - sbx-ingress: a routes file naming the backend; requests use the path
    form, /sandboxes/b/port/PORT/hello (the prefix is stripped);
  - nghttpx (Debian's nghttp2-proxy): --frontend ...;no-tls, --backend;
  - HAProxy (Debian): mode http, nbthread, http-reuse always (HTTP/2 on a
    clear-text bind is recognised by its preface);
  - nginx (Debian's nginx-light): upstream keepalive, proxy_http_version
    1.1, proxy_buffering off; HTTP/1.1 on one port and h2c on another
    (nginx 1.22 cannot take both on one clear-text port).
Every proxy sends the backend the forwarding headers sbx-ingress sends
(X-Forwarded-For, -Host, -Proto and Forwarded), so that the backend's work
is the same behind each; sbx-ingress also strips the path prefix and sets
X-Forwarded-Prefix, which the others, routing "/", have no use for.

Measures, for each proxy, one after the other, in BENCH_ROUNDS (3) rounds
(the proxies interleaved; the median of each figure is reported):
  - HTTP/1.1: wrk, BENCH_CONNS (50) connections, BENCH_SECONDS (10) s:
    requests/s, p50 and p99;
  - HTTP/2: h2load, 10 connections x 10 streams, BENCH_SECONDS s:
    requests/s, p50 and p99 (from its per-request log);
  - for both loads, the proxy's CPU time per request: user and system time
    of all its processes and threads (from schedstat) over the load, over
    the requests answered. Requests/s depend on how the 2 cores are shared
    with the load generator and the backend; CPU per request is the proxy's
    own cost, and moves much less from run to run;
  - BENCH_TUNNELS (10,000) idle WebSocket tunnels opened through it (first
    round only): the proxy's RSS (all its processes) above its RSS before,
    per tunnel.
With BENCH_PIN=1 every proxy runs on the first BENCH_WORKERS cores and the
load generators, the backends and this script on the others, for every
proxy alike, so that no proxy shares its cores with the load it is
measured under (needs more cores than workers).

Prints a table and, for sbx-ingress, its ratio to the best peer on each
line; then, for the loads, sbx-ingress against that same peer within each
round (the two ran minutes apart at most): the median of the per-round
ratios, their range, and in how many rounds sbx-ingress did at least as
well. Figures go to docs/benchmarks.md by hand, with the machine.

  python bench/ingress/run.py BUILD_DIR --baseline=OTHER_BUILD_DIR

also runs the sbx-ingress of another build (an earlier commit, say) in the
same rounds, as one more column, with the new/baseline ratio: a change's
effect, measured side by side (the baseline is not a peer)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNS = int(os.environ.get("BENCH_CONNS", "50"))
TUNNELS = int(os.environ.get("BENCH_TUNNELS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MAXCONN = 60000  # connections each proxy may hold; set from the open files limit
PIN = os.environ.get("BENCH_PIN", "") not in ("", "0")
PROXY_CPUS: set[int] = set()  # BENCH_PIN=1: the proxies' cores (see above)


def on_proxy_cores(argv: list[str]) -> list[str]:
    if not PROXY_CPUS:
        return argv
    return [need("taskset"), "-c", ",".join(map(str, sorted(PROXY_CPUS)))] + argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        raise SystemExit(f"{tool} is missing: scripts/setup.sh --bench installs it")
    return path


def tree_pids(pid: int) -> set[int]:
    """pid and its children (the proxies' workers are one level down)."""
    kids = {pid}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.add(int(p.name))
    return kids


def tree_rss_kib(pid: int) -> int:
    """RSS of pid and its children."""
    total = 0
    for k in tree_pids(pid):
        try:
            for line in Path(f"/proc/{k}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_cpu_ns(pid: int) -> int:
    """CPU time (user and system, ns) of pid and its children, all threads:
    the first field of each thread's schedstat."""
    total = 0
    for k in tree_pids(pid):
        for task in Path(f"/proc/{k}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total


class Proc:
    def __init__(self, argv: list[str], port: int, what: str, **kw):
        self.what = what
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True, **kw)
        wait_port(port, self.p, what)

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


# ---- the backend and the proxies -------------------------------------------------------------


def nginx_backend(work: Path, port: int) -> Proc:
    conf = work / "backend.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {work}/backend.pid;
error_log stderr crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {work}/b-body; proxy_temp_path {work}/b-proxy;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type text/plain; return 200 "hello"; }}
  }}
}}
""")
    return Proc([need("nginx"), "-c", str(conf), "-e", "stderr"], port, "the nginx backend")


def sbx_ingress(build: Path, work: Path, backend: int, ws_backend: int, port: int, _h2: int):
    routes = work / "routes.yaml"
    routes.write_text(json.dumps({"sandboxes": [
        {"id": "b", "address": "127.0.0.1", "ports": [backend, ws_backend]}]}))
    proc = Proc(on_proxy_cores([str(build / "ingress" / "sbx-ingress"), f"--listen=127.0.0.1:{port}",
                 f"--admin-listen=127.0.0.1:{free_port()}", f"--routes-file={routes}",
                 f"--workers={WORKERS}", "--access-log=false", f"--max-connections={MAXCONN}",
                 "--log-level=warn"]), port, "sbx-ingress")
    return proc, f"/sandboxes/b/port/{backend}/hello", f"/sandboxes/b/port/{ws_backend}/ws", port


def nghttpx(work: Path, backend: int, ws_backend: int, port: int, _h2: int):
    # Two backends by path: /ws to the WebSocket echo, the rest to nginx.
    proc = Proc(on_proxy_cores([need("nghttpx"), f"--frontend=127.0.0.1,{port};no-tls",
                 f"--backend=127.0.0.1,{backend};/;proto=http/1.1",
                 f"--backend=127.0.0.1,{ws_backend};/ws;proto=http/1.1",
                 f"--workers={WORKERS}", "--accesslog-file=/dev/null",
                 "--errorlog-file=/dev/null", "--frontend-http2-max-concurrent-streams=100",
                 # The forwarding headers sbx-ingress sets (X-Forwarded-Proto
                 # is nghttpx's default).
                 "--add-x-forwarded-for", "--add-forwarded=for,host,proto",
                 f"--worker-frontend-connections={MAXCONN}", "--backend-keep-alive-timeout=60s",
                 f"--pid-file={work}/nghttpx.pid", "--conf=/dev/null"]),
                port, "nghttpx")
    return proc, "/hello", "/ws", port


def haproxy(work: Path, backend: int, ws_backend: int, port: int, _h2: int):
    conf = work / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread {WORKERS}
  maxconn {MAXCONN}
defaults
  mode http
  timeout connect 5s
  timeout client 3600s
  timeout server 3600s
  timeout tunnel 3600s
  http-reuse always
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  # The forwarding headers sbx-ingress sets (2.6 has no "option forwarded").
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded "for=%[src];host=%[req.hdr(host)];proto=http"
  use_backend ws if {{ path_beg /ws }}
  default_backend be
backend be
  server s1 127.0.0.1:{backend} maxconn {MAXCONN}
backend ws
  server s1 127.0.0.1:{ws_backend} maxconn {MAXCONN}
""")
    proc = Proc(on_proxy_cores([need("haproxy"), "-f", str(conf), "-db"]), port, "HAProxy")
    return proc, "/hello", "/ws", port


def nginx(work: Path, backend: int, ws_backend: int, port: int, h2: int):
    conf = work / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes {WORKERS}; pid {work}/nginx.pid;
error_log {work}/nginx-error.log error;
events {{ worker_connections {2 * MAXCONN}; }}
http {{
  access_log off;
  client_body_temp_path {work}/n-body; proxy_temp_path {work}/n-proxy;
  keepalive_requests 1000000;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
  upstream ws {{ server 127.0.0.1:{ws_backend}; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{h2} http2 backlog=4096;
    location / {{
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      # The forwarding headers sbx-ingress sets.
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=$scheme";
    }}
    location /ws {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }}
  }}
}}
""")
    proc = Proc(on_proxy_cores([need("nginx"), "-c", str(conf), "-e", "stderr"]), port, "nginx")
    return proc, "/hello", "/ws", h2


# ---- load ------------------------------------------------------------------------------------


def ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def http1(port: int, path: str, proc: Proc) -> dict:
    cpu = tree_cpu_ns(proc.p.pid)
    out = subprocess.run([need("wrk"), "-t1", f"-c{CONNS}", f"-d{SECONDS}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=SECONDS + 60).stdout
    cpu = tree_cpu_ns(proc.p.pid) - cpu
    done = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        print(f"  wrk on {port}: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}",
              file=sys.stderr)
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu / 1000 / max(done, 1)}


def http2(port: int, path: str, work: Path, proc: Proc) -> dict:
    log = work / f"h2load-{port}.log"
    cpu = tree_cpu_ns(proc.p.pid)
    out = subprocess.run([need("h2load"), "-c10", "-m10", "-t1", f"-D{SECONDS}",
                          f"--log-file={log}", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=SECONDS + 60).stdout
    cpu = tree_cpu_ns(proc.p.pid) - cpu
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not m:
        raise SystemExit(f"h2load on {port}: {out[-2000:]}")
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if status and (int(status.group(3)) or int(status.group(4))):
        print(f"  h2load on {port}: {status.group(0)}", file=sys.stderr)
    # The log: start time, status, microseconds per request.
    times = sorted(int(line.split()[2]) / 1000 for line in log.read_text().splitlines() if line)
    return {"rps": float(m.group(1)), "p50": times[len(times) // 2],
            "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "cpu_us": cpu / 1000 / max(len(times), 1)}


async def open_tunnels(port: int, path: str, n: int) -> list:
    from websockets.asyncio.client import connect
    sem = asyncio.Semaphore(200)
    conns = []

    async def one():
        async with sem:
            ws = await connect(f"ws://127.0.0.1:{port}{path}", ping_interval=None,
                               open_timeout=60, compression=None)
            await ws.send("hi")
            assert await ws.recv() == "hi"
            conns.append(ws)
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"  {len(failed)} of {n} tunnels failed: {failed[0]!r}", file=sys.stderr)
    return conns


def tunnels(proc: Proc, port: int, path: str) -> dict:
    before = tree_rss_kib(proc.p.pid)

    async def run():
        conns = await open_tunnels(port, path, TUNNELS)
        await asyncio.sleep(2)  # settled: what stays is per tunnel
        rss = tree_rss_kib(proc.p.pid)
        await asyncio.gather(*(c.close() for c in conns))
        return rss, len(conns)
    after, opened = asyncio.run(run())
    return {"rss_mib": after / 1024, "per_tunnel_kib": (after - before) / max(opened, 1),
            "opened": opened}


# ---- the run ---------------------------------------------------------------------------------


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--baseline=")]
    base = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--baseline=")]
    build = Path(args[0] if args else "build").resolve()
    baseline = Path(base[0]).resolve() if base else None
    for b in [build] + ([baseline] if baseline else []):
        if not (b / "ingress" / "sbx-ingress").is_file():
            raise SystemExit(f"{b}: no ingress/sbx-ingress in it (a build directory is needed)")
    # Each proxy holds two sockets per tunnel: the open files limit (which
    # the children inherit) bounds the tunnels, and every proxy is sized
    # to it (HAProxy sizes its tables from maxconn).
    global TUNNELS, MAXCONN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    MAXCONN = (hard - 200) // 2
    if TUNNELS > MAXCONN - 500:
        print(f"open files limit {hard}: {MAXCONN - 500} tunnels instead of {TUNNELS}",
              file=sys.stderr)
        TUNNELS = MAXCONN - 500
    if PIN:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) <= WORKERS:
            raise SystemExit(f"BENCH_PIN needs more than {WORKERS} cores, has {len(cores)}")
        PROXY_CPUS.update(cores[:WORKERS])
        os.sched_setaffinity(0, cores[WORKERS:])  # what this starts inherits it
    work = Path(tempfile.mkdtemp(prefix="sbx-bench-ingress-"))
    backend_port, ws_port = free_port(), free_port()
    backend = nginx_backend(work, backend_port)
    ws_backend = Proc([str(build / "tests" / "tools" / "sbx-httptool"),
                       f"--listen=127.0.0.1:{ws_port}", f"--max-connections={MAXCONN}",
                       "--idle-timeout-ms=3600000"], ws_port, "the WebSocket backend")
    proxies = [("sbx-ingress", lambda *a: sbx_ingress(build, *a)), ("nghttpx", nghttpx),
               ("HAProxy", haproxy), ("nginx", nginx)]
    if baseline:
        proxies.insert(1, ("baseline", lambda *a: sbx_ingress(baseline, *a)))
    only = os.environ.get("BENCH_ONLY")
    if only:
        proxies = [p for p in proxies if p[0] in only.split(",")]
    # Rounds, the proxies interleaved in each (this machine's speed drifts
    # by 10 % and more within minutes): the median of each load's figures.
    # The tunnels are opened once, in the first round.
    rounds: dict[str, list[dict]] = {name: [] for name, _ in proxies}
    results: dict[str, dict] = {}
    try:
        for k in range(ROUNDS):
            for name, start in proxies:
                port, h2 = free_port(), free_port()
                proc, path, ws_path, h2_port = start(work, backend_port, ws_port, port, h2)
                try:
                    print(f"round {k + 1}/{ROUNDS}, {name}: HTTP/1.1", file=sys.stderr)
                    r = {"h1": http1(port, path, proc)}
                    print(f"round {k + 1}/{ROUNDS}, {name}: HTTP/2", file=sys.stderr)
                    r["h2"] = http2(h2_port, path, work, proc)
                    print(f"  HTTP/1.1 {r['h1']['rps']:.0f} req/s, p99 {r['h1']['p99']:.2f} ms, "
                          f"{r['h1']['cpu_us']:.1f} us CPU; "
                          f"HTTP/2 {r['h2']['rps']:.0f} req/s, p99 {r['h2']['p99']:.2f} ms, "
                          f"{r['h2']['cpu_us']:.1f} us CPU",
                          file=sys.stderr)
                    if k == 0:
                        print(f"{name}: {TUNNELS} WebSocket tunnels", file=sys.stderr)
                        r["ws"] = tunnels(proc, port, ws_path)
                    rounds[name].append(r)
                finally:
                    proc.stop()
    finally:
        backend.stop()
        ws_backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    for name, rs in rounds.items():
        results[name] = {part: {key: statistics.median(r[part][key] for r in rs)
                                for key in rs[0][part]} for part in ("h1", "h2")}
        results[name]["ws"] = rs[0]["ws"]
    report(results, rounds)


def report(results: dict[str, dict], rounds: dict[str, list[dict]]) -> None:
    peers = [n for n in results if n not in ("sbx-ingress", "baseline")]
    rows = [("HTTP/1.1 req/s", "h1", "rps", max), ("HTTP/1.1 p50 (ms)", "h1", "p50", min),
            ("HTTP/1.1 p99 (ms)", "h1", "p99", min),
            ("HTTP/1.1 proxy CPU per request (us)", "h1", "cpu_us", min),
            ("HTTP/2 req/s", "h2", "rps", max),
            ("HTTP/2 p50 (ms)", "h2", "p50", min), ("HTTP/2 p99 (ms)", "h2", "p99", min),
            ("HTTP/2 proxy CPU per request (us)", "h2", "cpu_us", min),
            (f"RSS with {TUNNELS} idle tunnels (MiB)", "ws", "rss_mib", min),
            ("RSS per idle tunnel (KiB)", "ws", "per_tunnel_kib", min)]
    print(f"\nbench/ingress on {platform.node()} ({os.cpu_count()} cores, {platform.release()}), "
          f"{WORKERS} worker(s) each, {SECONDS} s per load, {CONNS} HTTP/1.1 connections, "
          f"h2load 10x10, median of {ROUNDS} interleaved rounds"
          + (f", proxies on cores {sorted(PROXY_CPUS)} and the rest on the others" if PIN else "")
          + "\n")
    with_base = "baseline" in results
    print("| measure | " + " | ".join(results) + " | sbx / best peer |"
          + (" sbx / baseline |" if with_base else ""))
    print("|---" * (len(results) + 2 + with_base) + "|")
    for label, part, key, best in rows:
        vals = [results[n][part][key] for n in results]
        peer = best(results[n][part][key] for n in peers) if peers else None
        sbx = results.get("sbx-ingress", {}).get(part, {}).get(key)
        ratio = f"{sbx / peer:.2f}" if sbx is not None and peer else "-"
        fmt = "{:.0f}" if key == "rps" else "{:.2f}"
        line = f"| {label} | " + " | ".join(fmt.format(v) for v in vals) + f" | {ratio} |"
        if with_base:
            b = results["baseline"][part][key]
            line += f" {sbx / b:.2f} |" if sbx is not None and b else " - |"
        print(line)
    if "sbx-ingress" not in rounds or not peers:
        return
    # The machine's speed drifts between rounds, and moves every proxy of a
    # round alike: a ratio taken within each round leaves that out. It is
    # taken against the best peer of the table above, the same in every
    # round (the best of three in each round would favour the peers: of
    # four equal proxies, each would be the best of the others in one round
    # in four).
    print("\n| measure, within each round | against | sbx / peer, median | range "
          "| rounds at least as good |")
    print("|---|---|---|---|---|")
    for label, part, key, best in rows:
        if part == "ws":
            continue
        peer = best(peers, key=lambda n: results[n][part][key])
        ratios, good = [], 0
        for mine, theirs in zip(rounds["sbx-ingress"], rounds[peer]):
            ratios.append(mine[part][key] / theirs[part][key])
            good += best(mine[part][key], theirs[part][key]) == mine[part][key]
        print(f"| {label} | {peer} | {statistics.median(ratios):.2f} | {min(ratios):.2f} to "
              f"{max(ratios):.2f} | {good} of {len(ratios)} |")


if __name__ == "__main__":
    main()
