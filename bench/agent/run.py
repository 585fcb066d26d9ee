"""bench/agent: sbx-agent against a peer, side by side in one run.

  make bench-agent            (or: python bench/agent/run.py BUILD_DIR)

Measures, for each server on 127.0.0.1:
  - start-up: from exec to the first answer of its health route (median of
    BENCH_STARTS runs);
  - `echo hi` exec round trip over one keep-alive connection (p50, p99);
  - a 100 MB file: upload then download, MB/s;
  - RSS: idle, and with 100 shell sessions made concurrently (errors counted).
Prints a table with sbx/peer ratios. The peer is Starlette on uvicorn
(peer_asgi.py), the stack under AIO Sandbox's server; see its docstring.

Then, for the agent alone:
  - the 100 MB download against Debian's nginx serving the same file with
    `sendfile on` (BENCH_ROUNDS interleaved rounds, medians), both fetched by
    curl into /dev/null (the Python client above hashes what it reads, and
    is the bottleneck at these speeds);
  - BENCH_BASH_EXECS `/v1/bash/exec` calls without a session_id, and the
    bash sessions left after them (each such call's session is its own).
Figures go to docs/benchmarks.md by hand, with the machine they came from.

  python bench/agent/run.py BUILD_DIR --baseline=OTHER_BUILD_DIR

also runs the sbx-agent of another build (an earlier commit, say) in the same
run and prints its column and the new/baseline ratio: a change's effect on
the agent, measured side by side."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECS = int(os.environ.get("BENCH_EXECS", "1000"))
FILE_MB = int(os.environ.get("BENCH_FILE_MB", "100"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100"))
STARTS = int(os.environ.get("BENCH_STARTS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BASH_EXECS = int(os.environ.get("BENCH_BASH_EXECS", "1000"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not come up")


def rss_kib(pid: int, children: bool = False) -> int:
    pids = [pid]
    if children:
        todo = [pid]
        while todo:
            p = todo.pop()
            try:
                kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            except OSError:
                kids = []
            pids += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        raise SystemExit(f"{tool} is missing: scripts/setup.sh --bench installs it")
    return path


def startup_ms(cmd: list[str], port: int, env: dict | None = None, cwd: Path | None = None) -> float:
    """Milliseconds from exec to the first 200 of GET /healthz, median of
    STARTS runs. The client retries its connection without pause (a start-up
    of a few ms leaves no room for a poll interval)."""
    times = []
    for _ in range(STARTS):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
        try:
            deadline = t0 + 20
            while True:
                if time.perf_counter() > deadline or p.poll() is not None:
                    raise SystemExit(f"{cmd[0]} did not come up (exit {p.poll()})")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                        if c.recv(64).startswith(b"HTTP/1.1 200"):
                            break
                except OSError:
                    continue
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            p.terminate()
            p.wait(10)
    return statistics.median(times)


def curl_mbps(url: str, size: int) -> float:
    """One download by curl into /dev/null: what the server can give, not
    what a Python client can take."""
    out = subprocess.run([need("curl"), "-s", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download} %{speed_download}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "200" and int(out[1]) == size, out
    return float(out[2]) / 1e6


def nginx_files(work: Path, root: Path, port: int) -> subprocess.Popen:
    """Debian's nginx serving root the way its documentation recommends for
    static files: sendfile on, tcp_nopush on, one worker."""
    conf = work / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid;
error_log stderr crit;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path {work}/n-body; proxy_temp_path {work}/n-proxy;
  fastcgi_temp_path {work}/n-fcgi; uwsgi_temp_path {work}/n-uwsgi; scgi_temp_path {work}/n-scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    p = subprocess.Popen([need("nginx"), "-c", str(conf), "-e", "stderr"])
    wait_up(port, p)
    return p


def bash_execs_leave_sessions(port: int) -> tuple[int, float]:
    """BASH_EXECS /v1/bash/exec calls without a session_id; the sessions left
    after them, and the calls' median time (ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(BASH_EXECS):
        t0 = time.perf_counter()
        r = post_json(conn, "/v1/bash/exec", {"command": "true"})
        times.append((time.perf_counter() - t0) * 1000)
        assert r["success"], r
    conn.request("GET", "/v1/bash/sessions")
    left = json.loads(conn.getresponse().read())["data"]
    conn.close()
    return len(left), statistics.median(times)


def post_json(conn: http.client.HTTPConnection, path: str, body: dict) -> dict:
    data = json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {out[:200]!r}")
    return json.loads(out)


def exec_latency(port: int, session: str | None) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"command": "echo hi"}
    if session:
        body["id"] = session
    for _ in range(20):  # warm up (and open the session)
        post_json(conn, "/v1/shell/exec", body)
    times = []
    for _ in range(EXECS):
        t0 = time.perf_counter()
        r = post_json(conn, "/v1/shell/exec", body)
        times.append(time.perf_counter() - t0)
        assert r["data"]["output"].strip() == "hi", r
    conn.close()
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def multipart_body(path: str, src: Path, boundary: str):
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n{path}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + src.stat().st_size + len(tail)

    def gen():
        yield head
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield tail
    return size, gen()


def file_throughput(port: int, src: Path, dest: Path) -> tuple[float, float]:
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    size, body = multipart_body(str(dest), src, boundary)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.putrequest("POST", "/v1/file/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    for chunk in body:
        conn.send(chunk)
    r = conn.getresponse()
    r.read()
    up = time.perf_counter() - t0
    assert r.status == 200, r.status
    t0 = time.perf_counter()
    conn.request("GET", f"/v1/file/download?path={dest}")
    r = conn.getresponse()
    h = hashlib.sha256()
    n = 0
    while chunk := r.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    down = time.perf_counter() - t0
    conn.close()
    assert n == src.stat().st_size
    mb = src.stat().st_size / 1e6
    return mb / up, mb / down


def sessions_rss(port: int, pid: int, sbx: bool) -> tuple[int, int, int]:
    """SESSIONS sessions made at once (sbx: PTY shell sessions kept open;
    peer: concurrent execs, since it keeps none). RSS of the server, and of
    the server with its children, once they are up; errors counted."""
    def one(i: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            body = {"command": "echo ready"}
            if sbx:
                body["id"] = f"bench-{i}"
            r = post_json(conn, "/v1/shell/exec", body)
            return r["success"] and r["data"]["output"].strip() == "ready"
        except Exception:  # noqa: BLE001 - counted
            return False
        finally:
            conn.close()
    with concurrent.futures.ThreadPoolExecutor(SESSIONS) as ex:
        ok = sum(ex.map(one, range(SESSIONS)))
    time.sleep(0.5)
    return SESSIONS - ok, rss_kib(pid), rss_kib(pid, children=True)


def start_sbx(build: Path, ws: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen(sbx_cmd(build, ws, port))
    wait_up(port, p)
    return p, port


def sbx_cmd(build: Path, ws: Path, port: int) -> list[str]:
    return [str(build / "sandbox-agent/sbx-agent"), f"--listen=127.0.0.1:{port}",
            f"--workspace={ws}", f"--max-sessions={SESSIONS + 10}", "--log-level=warn",
            f"--max-body-bytes={1 << 30}"]


def peer_cmd() -> list[str]:
    return [sys.executable, str(HERE / "peer_asgi.py")]


def start_peer(ws: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen(peer_cmd(), cwd=ws, env={**os.environ, "PORT": str(port)})
    wait_up(port, p)
    return p, port


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--baseline=")]
    base = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--baseline=")]
    build = Path(args[0] if args else "build").resolve()
    baseline = Path(base[0]).resolve() if base else None
    tmp = Path(tempfile.mkdtemp(prefix="sbx-bench-"))
    src = tmp / "src.bin"
    with open(src, "wb") as f:
        for _ in range(FILE_MB):
            f.write(os.urandom(1 << 20))
    results = {}
    extra = {}
    try:
        servers = [("sbx-agent", lambda ws: start_sbx(build, ws))]
        if baseline:
            servers.append(("baseline", lambda ws: start_sbx(baseline, ws)))
        servers.append(("peer (Starlette+uvicorn)", start_peer))
        starts = {"sbx-agent": lambda ws, port: startup_ms(sbx_cmd(build, ws, port), port),
                  "peer (Starlette+uvicorn)": lambda ws, port: startup_ms(
                      peer_cmd(), port, env={**os.environ, "PORT": str(port)}, cwd=ws)}
        if baseline:
            starts["baseline"] = lambda ws, port: startup_ms(sbx_cmd(baseline, ws, port), port)
        for name, start in servers:
            ws = tmp / name.split()[0]
            ws.mkdir()
            up_ms = starts[name](ws, free_port())
            proc, port = start(ws)
            try:
                time.sleep(0.5)
                idle = rss_kib(proc.pid)
                sbx = not name.startswith("peer")
                p50, p99 = exec_latency(port, "bench" if sbx else None)
                up, down = file_throughput(port, src, ws / "big.bin")
                errors, rss, rss_all = sessions_rss(port, proc.pid, sbx)
                results[name] = dict(start=up_ms, p50=p50, p99=p99, up=up, down=down,
                                     idle=idle, errors=errors, rss=rss, rss_all=rss_all)
            finally:
                proc.terminate()
                proc.wait(10)
        # The download against nginx with sendfile, same file, same client,
        # interleaved rounds.
        ws = tmp / "vs-nginx"
        ws.mkdir()
        proc, port = start_sbx(build, ws)
        nport = free_port()
        ngx = nginx_files(ws, tmp, nport)
        size = src.stat().st_size
        try:
            sbx_down, ngx_down = [], []
            for _ in range(ROUNDS):
                sbx_down.append(curl_mbps(
                    f"http://127.0.0.1:{port}/v1/file/download?path={src}", size))
                ngx_down.append(curl_mbps(f"http://127.0.0.1:{nport}/src.bin", size))
            extra["sbx_down"] = statistics.median(sbx_down)
            extra["nginx_down"] = statistics.median(ngx_down)
            extra["bash_left"], extra["bash_ms"] = bash_execs_leave_sessions(port)
        finally:
            ngx.terminate()
            ngx.wait(10)
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s, q = results["sbx-agent"], results["peer (Starlette+uvicorn)"]
    print(f"\nbench/agent on {platform.node()} ({os.cpu_count()} cores, "
          f"{platform.release()}), {EXECS} execs, {FILE_MB} MB file, {SESSIONS} sessions\n")
    rows = [
        ("start-up to first health answer (ms)", "start", "{:.1f}", True),
        ("exec `echo hi` p50 (ms)", "p50", "{:.2f}", True),
        ("exec `echo hi` p99 (ms)", "p99", "{:.2f}", True),
        (f"upload {FILE_MB} MB (MB/s)", "up", "{:.0f}", False),
        (f"download {FILE_MB} MB (MB/s)", "down", "{:.0f}", False),
        ("idle RSS (MiB)", "idle", "{:.1f}", True),
        (f"RSS with {SESSIONS} sessions, server (MiB)", "rss", "{:.1f}", True),
        (f"RSS with {SESSIONS} sessions, with children (MiB)", "rss_all", "{:.1f}", True),
        (f"errors among {SESSIONS} concurrent sessions", "errors", "{:.0f}", True),
    ]
    o = results.get("baseline")
    if o:
        print(f"baseline: the sbx-agent of {baseline}\n")
        print("| measure | sbx-agent | baseline | peer (Starlette+uvicorn) | sbx / baseline "
              "| sbx / peer |")
        print("|---|---|---|---|---|---|")
    else:
        print("| measure | sbx-agent | peer (Starlette+uvicorn) | sbx / peer |")
        print("|---|---|---|---|")
    for label, key, fmt, lower_better in rows:
        scale = 1024 if key in ("idle", "rss", "rss_all") else 1
        a, b = s[key] / scale, q[key] / scale
        ratio = f"{a / b:.2f}" if b else "-"
        if o:
            c = o[key] / scale
            vs = f"{a / c:.2f}" if c else "-"
            print(f"| {label} | {fmt.format(a)} | {fmt.format(c)} | {fmt.format(b)} | {vs} "
                  f"| {ratio} |")
        else:
            print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    print(f"\n{FILE_MB} MB download by curl, medians of {ROUNDS} interleaved rounds:\n")
    print("| measure | sbx-agent | nginx (sendfile on) | sbx / nginx |")
    print("|---|---|---|---|")
    print(f"| download (MB/s) | {extra['sbx_down']:.0f} | {extra['nginx_down']:.0f} "
          f"| {extra['sbx_down'] / extra['nginx_down']:.2f} |")
    print(f"\n{BASH_EXECS} `/v1/bash/exec` calls without a session_id: median "
          f"{extra['bash_ms']:.2f} ms, bash sessions left after them: {extra['bash_left']}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"
    print("\ntargets: p50 exec < 3 ms: {}; idle RSS < 6 MiB: {}; {} sessions without error: {}; "
          "start-up < 8 ms: {}; download >= nginx's: {}; no bash session left: {}".format(
              verdict(s["p50"] < 3), verdict(s["idle"] < 6 * 1024), SESSIONS,
              verdict(s["errors"] == 0), verdict(s["start"] < 8),
              verdict(extra["sbx_down"] >= extra["nginx_down"]),
              verdict(extra["bash_left"] == 0)))


if __name__ == "__main__":
    main()
