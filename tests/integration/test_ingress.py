"""sbx-ingress on loopback, routing by a routes file to real backends: the
HTTP core's test server (sbx-httptool: WebSocket echo, streamed sinks and
sources) and a Python app that reports what reached it. Clients are curl,
nghttp, Python websockets and h2, as users run them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SANITIZED, assert_no_sanitizer_report, binary, make_tls_pair
from test_agent_auth import keys, mint  # noqa: F401 - keys is a fixture
from test_http_server import H2, H2WebSocket, echo_10mb, fnv1a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class Ingress:
    """sbx-ingress with a routes file it watches (sandboxes given), or routing
    from Sandbox objects (sandboxes None: flags name the kubeconfig)."""

    def __init__(self, tmp: Path, sandboxes: list[dict] | None, *flags: str,
                 port: int | None = None):
        self.routes = tmp / f"routes-{free_port()}.yaml"
        source = []
        if sandboxes is not None:
            self.write(sandboxes)
            source = [f"--routes-file={self.routes}"]
        self.port, self.admin = port or free_port(), free_port()
        self.proc = subprocess.Popen(
            [str(binary("ingress/sbx-ingress")), f"--listen=127.0.0.1:{self.port}",
             f"--admin-listen=127.0.0.1:{self.admin}", *source,
             "--log-format=json", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(self.ready, what="sbx-ingress /readyz")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def write(self, sandboxes: list[dict]) -> None:
        # Written beside and renamed: the watcher never sees half a file.
        tmp = self.routes.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sandboxes": sandboxes}))  # JSON is YAML
        os.replace(tmp, self.routes)

    def readyz(self) -> int:
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=2)
        c.request("GET", "/readyz")
        return c.getresponse().status

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            self.reader.join(5)
            raise AssertionError("".join(self.log))
        try:
            return self.readyz() == 200
        except OSError:
            return False

    def metrics(self) -> str:
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()

    def metric(self, sample: str) -> float:
        """A sample's value: 'name' or 'name{labels}' exactly as exposed."""
        for line in self.metrics().splitlines():
            if line.rsplit(" ", 1)[0] == sample:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {sample}")

    def get(self, path: str, headers: dict | None = None, method: str = "GET",
            body: bytes | None = None) -> tuple[int, dict, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        err = "".join(self.log)
        assert_no_sanitizer_report(err)
        return err


class Tool:
    """The HTTP core's test server as a sandbox's app (WebSocket echo at /ws,
    /sink hashes a streamed body, /stream sends one)."""

    def __init__(self):
        self.proc = subprocess.Popen([str(binary("tests/tools/sbx-httptool")),
                                      "--sink-max-bytes=4294967296"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


class App:
    """A Python app in a 'sandbox': answers what reached it (method, path,
    headers, body) as JSON; /events sends server-sent events, one per
    release(); /slow never answers."""

    def __init__(self, port: int | None = None):
        app = self
        self.requests: list[dict] = []
        self.events = threading.Semaphore(0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = {"method": self.command, "path": self.path,
                        "headers": [[k, v] for k, v in self.headers.items()],
                        "body": body.decode(errors="replace")}
                app.requests.append(seen)
                if self.path == "/slow":
                    time.sleep(3)
                    return
                if self.path == "/events":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    for i in range(3):
                        app.events.acquire(timeout=10)
                        self.wfile.write(f"data: event {i}\n\n".encode())
                        self.wfile.flush()
                    self.close_connection = True
                    return
                out = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.send_header("Connection", "keep-alive, X-Hop")
                self.send_header("X-Hop", "must not pass")
                self.send_header("X-App", "yes")
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def header(self, i: int, name: str) -> str | None:
        for k, v in self.requests[i]["headers"]:
            if k.lower() == name.lower():
                return v
        return None

    def names(self, i: int) -> set[str]:
        return {k.lower() for k, _ in self.requests[i]["headers"]}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def started(tmp_path):
    things = []

    def start(kind, *args, **kw):
        t = kind(tmp_path, *args, **kw) if kind is Ingress else kind(*args, **kw)
        things.append(t)
        return t
    yield start
    for t in reversed(things):
        t.stop()


def ing_log(ing: Ingress) -> str:
    return "".join(ing.log)


def sandbox(sid: str, port: int, *more: int, ready: bool = True, address: str = "127.0.0.1"):
    return {"id": sid, "address": address, "ports": [port, *more], "ready": ready}


# ---- routing ------------------------------------------------------------------------------


def test_path_form_strips_the_prefix_and_says_what_it_stripped(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    status, headers, body = ing.get(f"/sandboxes/demo-1/port/{app.port}/api/x?y=1&z=%2F",
                                    headers={"Host": "gw.example.com", "X-Custom": "kept"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == "/api/x?y=1&z=%2F"
    assert app.header(0, "X-Forwarded-Prefix") == f"/sandboxes/demo-1/port/{app.port}"
    assert app.header(0, "X-Forwarded-Host") == "gw.example.com"
    assert app.header(0, "X-Forwarded-Proto") == "http"
    assert app.header(0, "X-Forwarded-For") == "127.0.0.1"
    assert app.header(0, "Forwarded") == 'for="127.0.0.1";host="gw.example.com";proto=http'
    assert app.header(0, "Host") == "gw.example.com"
    assert app.header(0, "X-Custom") == "kept"
    # The app's end-to-end headers come back; its hop-by-hop ones do not.
    assert headers["x-app"] == "yes" and "x-hop" not in headers
    # The bare prefix is the app's root.
    assert json.loads(ing.get(f"/sandboxes/demo-1/port/{app.port}")[2])["path"] == "/"


def test_header_and_wildcard_host_forms_reach_the_same_port(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)], "--base-domain=sbx.test")
    status, _, body = ing.get("/websockify?a=1",
                              headers={"OpenSandbox-Ingress-To": f"demo-1-{app.port}"})
    assert status == 200 and json.loads(body)["path"] == "/websockify?a=1"
    assert "opensandbox-ingress-to" not in app.names(0)
    status, _, body = ing.get("/sandboxes/other/port/1/x",
                              headers={"Host": f"demo-1-{app.port}.sbx.test"})
    assert status == 200 and json.loads(body)["path"] == "/sandboxes/other/port/1/x"
    assert "x-forwarded-prefix" not in app.names(1)
    # curl, as a user would call it.
    out = subprocess.run(["curl", "-sS", "--resolve", f"demo-1-{app.port}.sbx.test:{ing.port}:127.0.0.1",
                          f"http://demo-1-{app.port}.sbx.test:{ing.port}/hi"],
                         capture_output=True, text=True, timeout=10)
    assert json.loads(out.stdout)["path"] == "/hi", out.stderr


def test_unknown_undeclared_and_bad_routes_answer_json_that_says_which(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    cases = [
        ("/sandboxes/nope/port/80/", 404, "no sandbox 'nope'"),
        ("/sandboxes/demo-1/port/9/", 404, "does not expose port 9"),
        ("/sandboxes/Demo/port/80/", 400, "not a sandbox id"),
        ("/sandboxes/demo-1/port/0/", 400, "not a port"),
        ("/elsewhere", 404, "not a sandbox route"),
    ]
    for path, status, message in cases:
        got, headers, body = ing.get(path)
        assert got == status, (path, body)
        assert headers["content-type"].startswith("application/json")
        assert message in json.loads(body)["error"]["message"], (path, body)
    assert app.requests == []


def test_traversal_and_smuggling_never_reach_another_sandbox(started):
    a, b = started(App), started(App)
    ing = started(Ingress, [sandbox("a", a.port), sandbox("b", b.port)])
    attempts = [
        f"/sandboxes/a/port/{a.port}/../../b/port/{b.port}/",
        f"/sandboxes/a/port/{a.port}/%2e%2e/%2e%2e/b/port/{b.port}/",
        f"/sandboxes/a/port/{a.port}/..%2f..%2fb/port/{b.port}/",
        f"/sandboxes/a/port/{a.port}/..;/..;/b/port/{b.port}/",
        f"/sandboxes/a/port/{a.port}\\..\\..\\b\\port\\{b.port}",
        f"/sandboxes/a/port/{a.port}/x%00/",
        f"/sandboxes/a%2fport%2f{a.port}%2f..%2f..%2fb/port/{b.port}/",
        f"/sandboxes/./b/port/{b.port}/",
        f"//sandboxes/b/port/{b.port}/",
    ]
    for path in attempts:
        # --path-as-is: curl sends the path untouched, as an attacker would.
        out = subprocess.run(["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{ing.port}{path}"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout in ("400", "404", "200"), (path, out.stdout)
    assert b.requests == [], b.requests
    # What reached a has no segment a server could resolve upwards.
    for r in a.requests:
        segments = r["path"].split("?")[0].split("/")
        assert ".." not in segments and "." not in segments and "\\" not in r["path"], r
    # Request smuggling: both framings, or a malformed one, never reach a pod.
    for head in (b"POST /sandboxes/a/port/%d/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 b"POST /sandboxes/a/port/%d/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                 b"\r\n0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", ing.port), timeout=5) as s:
            s.sendall(head % a.port)
            assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert all(r["method"] != "POST" for r in a.requests)


def test_hop_by_hop_headers_stay_at_the_hop(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    ing.get(f"/sandboxes/demo-1/port/{app.port}/", headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Connection": "keep-alive", "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Prefix": "/spoofed"})
    names = app.names(0)
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-connection"):
        assert hop not in names, hop
    # Forwarding headers are the ingress's, not the client's (it is the edge here).
    assert app.header(0, "X-Forwarded-For") == "127.0.0.1"
    assert app.header(0, "X-Forwarded-Prefix") == f"/sandboxes/demo-1/port/{app.port}"


def test_behind_a_trusted_proxy_forwarded_headers_are_added_to(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)], "--trust-forwarded-headers")
    ing.get(f"/sandboxes/demo-1/port/{app.port}/", headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "sbx.example.com"})
    assert app.header(0, "X-Forwarded-For") == "203.0.113.7, 127.0.0.1"
    assert app.header(0, "X-Forwarded-Proto") == "https"
    assert app.header(0, "X-Forwarded-Host") == "sbx.example.com"


# ---- holding, failing, reloading ---------------------------------------------------------------


def test_a_port_that_listens_2s_late_is_held_then_answered(started):
    port = free_port()
    ing = started(Ingress, [sandbox("late", port)])
    result = {}

    def call():
        result["r"] = ing.get(f"/sandboxes/late/port/{port}/hello")
    t = threading.Thread(target=call)
    start = time.monotonic()
    t.start()
    wait_for(lambda: ing.metric("sbx_ingress_held_requests") == 1, what="the request held")
    time.sleep(2)  # the app is slow to start: that is the case under test
    app = started(App, port)
    t.join(10)
    status, _, body = result["r"]
    assert status == 200 and json.loads(body)["path"] == "/hello"
    assert 2 <= time.monotonic() - start < 5
    assert len(app.requests) == 1  # refused attempts sent nothing


def test_a_sandbox_that_becomes_ready_is_answered_at_once(started):
    app = started(App)
    ing = started(Ingress, [sandbox("cold", app.port, ready=False)])
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", ing.get(
        f"/sandboxes/cold/port/{app.port}/x")))
    t.start()
    wait_for(lambda: ing.metric("sbx_ingress_held_requests") == 1, what="the request held")
    ready_at = time.monotonic()
    ing.write([sandbox("cold", app.port)])
    t.join(10)
    assert result["r"][0] == 200
    assert time.monotonic() - ready_at < 1.5  # the file watch, not the hold timeout


def test_held_requests_give_up_with_503_or_502_at_the_hold_timeout(started):
    dead = free_port()
    ing = started(Ingress, [sandbox("cold", 9, ready=False), sandbox("dead", dead)],
                  "--hold-timeout-ms=400")
    start = time.monotonic()
    status, _, body = ing.get("/sandboxes/cold/port/9/")
    assert status == 503 and b"not ready" in body
    assert 0.35 < time.monotonic() - start < 3
    status, _, body = ing.get(f"/sandboxes/dead/port/{dead}/")
    assert status == 502 and b"refused the connection" in body
    assert ing.metric("sbx_ingress_hold_expired_total") == 2
    assert ing.metric('sbx_ingress_backend_errors_total{reason="refused"}') >= 1


def test_a_silent_app_gets_504(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)], "--response-timeout-ms=300")
    start = time.monotonic()
    status, _, body = ing.get(f"/sandboxes/demo-1/port/{app.port}/slow")
    assert status == 504 and b"did not answer" in body
    assert time.monotonic() - start < 2.5


def test_routes_file_changes_apply_and_a_bad_one_is_refused(started):
    a, b = started(App), started(App)
    ing = started(Ingress, [sandbox("s", a.port)])
    assert ing.get(f"/sandboxes/s/port/{a.port}/")[0] == 200
    # The sandbox moved (a new pod): same id, new address and port.
    ing.write([sandbox("s", b.port)])
    wait_for(lambda: ing.get(f"/sandboxes/s/port/{b.port}/")[0] == 200, what="the new route")
    assert len(b.requests) >= 1
    # A broken file leaves the routes as they were, and says so.
    ing.routes.write_text("sandboxes: [{id: s, address: not-an-ip, ports: [1]}]\n")
    wait_for(lambda: ing.metric("sbx_ingress_routes_reload_errors_total") == 1,
             what="the reload refused")
    assert ing.get(f"/sandboxes/s/port/{b.port}/")[0] == 200
    # Deleted: 404.
    ing.write([])
    wait_for(lambda: ing.get(f"/sandboxes/s/port/{b.port}/")[0] == 404, what="the route gone")


# ---- protocols -------------------------------------------------------------------------------


def test_http2_clients_curl_and_nghttp(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    url = f"http://127.0.0.1:{ing.port}/sandboxes/demo-1/port/{app.port}/h2"
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-d", "posted", url],
                         capture_output=True, text=True, timeout=10)
    seen = json.loads(out.stdout)
    assert seen["path"] == "/h2" and seen["method"] == "POST" and seen["body"] == "posted"
    out = subprocess.run(["nghttp", "-n", "-s", url], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["nghttp", url], capture_output=True, text=True, timeout=10)
    assert json.loads(out.stdout)["path"] == "/h2"


def test_tls_with_alpn_h2_and_http11_as_curl_speaks_them(started, tmp_path):
    app = started(App)
    cert, key = make_tls_pair(tmp_path)
    tls = free_port()
    ing = started(Ingress, [sandbox("demo-1", app.port)], f"--tls-listen=127.0.0.1:{tls}",
                  f"--tls-cert={cert}", f"--tls-key={key}")
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        out = subprocess.run(["curl", "-sS", flag, "--cacert", str(cert), "-w", "\n%{http_version}",
                              f"https://127.0.0.1:{tls}/sandboxes/demo-1/port/{app.port}/tls"],
                             capture_output=True, text=True, timeout=10)
        body, got = out.stdout.rsplit("\n", 1)
        assert got == version and json.loads(body)["path"] == "/tls", out.stderr
    assert app.header(0, "X-Forwarded-Proto") == "https"
    assert app.header(0, "Forwarded").endswith("proto=https")


def test_sighup_swaps_the_certificate_without_resetting_open_connections(started, tmp_path):
    import shutil
    import ssl
    app = started(App)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    cert1, key1 = make_tls_pair(tmp_path / "one")
    cert2, key2 = make_tls_pair(tmp_path / "two")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(cert1, cert)
    shutil.copy(key1, key)
    tls = free_port()
    ing = started(Ingress, [sandbox("demo-1", app.port)], f"--tls-listen=127.0.0.1:{tls}",
                  f"--tls-cert={cert}", f"--tls-key={key}")

    def connect(cafile: Path) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=str(cafile))
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls), timeout=5),
                               server_hostname="127.0.0.1")

    def ask(conn: ssl.SSLSocket) -> bytes:
        conn.sendall(f"GET /sandboxes/demo-1/port/{app.port}/x HTTP/1.1\r\nHost: h\r\n\r\n"
                     .encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = conn.recv(65536)
            assert chunk, data
            data += chunk
        return data
    before = connect(cert1)
    assert ask(before).startswith(b"HTTP/1.1 200")
    # The files are renewed (as cert-manager does), then the ingress is told.
    shutil.copy(cert2, cert)
    shutil.copy(key2, key)
    ing.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "certificate reloaded" in ing_log(ing), what="the reload")
    after = connect(cert2)  # verifies against the new certificate only
    assert after.getpeercert(binary_form=True) != before.getpeercert(binary_form=True)
    assert ask(after).startswith(b"HTTP/1.1 200")
    # The connection opened before goes on, with its certificate.
    assert ask(before).startswith(b"HTTP/1.1 200")
    before.close()
    after.close()


def test_a_websocket_upgrade_carries_the_forwarding_headers(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    prefix = f"/sandboxes/demo-1/port/{app.port}"
    # The app answers the upgrade with a plain 200: the ingress passes
    # that on, and the app has seen what a WebSocket server would.
    status, _, body = ing.get(prefix + "/ws", headers={
        "Host": "gw.example.com", "Connection": "Upgrade", "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Forwarded": "for=6.6.6.6", "X-Forwarded-Prefix": "/forged"})
    assert status == 200, body
    assert json.loads(body)["path"] == "/ws"
    assert app.header(0, "Upgrade") == "websocket"
    assert app.header(0, "X-Forwarded-For") == "127.0.0.1"
    assert app.header(0, "X-Forwarded-Host") == "gw.example.com"
    assert app.header(0, "X-Forwarded-Proto") == "http"
    assert app.header(0, "X-Forwarded-Prefix") == prefix
    assert app.header(0, "Forwarded") == 'for="127.0.0.1";host="gw.example.com";proto=http'
    # The client's own forwarding claims are gone, not sent beside these.
    seen = [k.lower() for k, _ in app.requests[0]["headers"]]
    assert seen.count("forwarded") == 1 and seen.count("x-forwarded-prefix") == 1


def test_websocket_over_http11_and_rfc8441_10mb_each_way(started):
    from websockets.sync.client import connect
    tool = started(Tool)
    ing = started(Ingress, [sandbox("ws", tool.port)])
    with connect(f"ws://127.0.0.1:{ing.port}/sandboxes/ws/port/{tool.port}/ws",
                 max_size=2 << 20) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        echo_10mb(ws.send, ws.recv)
    c = H2(ing.port)
    ws2 = H2WebSocket(c, f"/sandboxes/ws/port/{tool.port}/ws")
    assert ws2.status == b"200"
    echo_10mb(lambda m: ws2.send(0x2, m), lambda: ws2.recv()[1])
    assert ing.metric("sbx_ingress_websocket_tunnels_total") == 2


def test_a_rolling_restart_keeps_an_open_websocket_echoing(started):
    from websockets.sync.client import connect
    tool = started(Tool)
    routes = [sandbox("ws", tool.port)]
    old = started(Ingress, routes, "--drain-timeout-ms=60000")
    url = f"ws://127.0.0.1:{old.port}/sandboxes/ws/port/{tool.port}/ws"
    with connect(url) as ws:
        ws.send("before")
        assert ws.recv() == "before"
        # The new version starts beside the old one, on the same port; then
        # the old one is told to stop, as a Deployment's rollout does.
        new = started(Ingress, routes, port=old.port)
        old.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: old.readyz() == 503, what="the old one draining")
        # New connections reach the new process...
        for _ in range(20):
            assert new.get(f"/sandboxes/ws/port/{tool.port}/hello")[2] == b"hello"
        assert new.metric('sbx_ingress_requests_total{form="path",code="2xx"}') == 20
        # ...while the open WebSocket keeps echoing through the old one.
        for i in range(10):
            ws.send(f"during {i}")
            assert ws.recv() == f"during {i}"
            time.sleep(0.05)
        assert old.proc.poll() is None
    # Closed on its own: the old process has nothing left and exits, long
    # before its drain deadline.
    assert old.proc.wait(10) == 0


def test_shutdown_delay_keeps_serving_while_readiness_says_draining(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)], "--shutdown-delay-ms=1500")
    ing.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: ing.readyz() == 503, what="readiness off")
    # Load balancers have not dropped this pod yet: what they send is served.
    assert ing.get(f"/sandboxes/demo-1/port/{app.port}/late")[0] == 200
    assert ing.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ing.port), timeout=2).close()


def test_server_sent_events_arrive_one_by_one(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    sock = socket.create_connection(("127.0.0.1", ing.port), timeout=5)
    sock.sendall(f"GET /sandboxes/demo-1/port/{app.port}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    for i in range(3):
        app.events.release()  # the app sends one event, and no more until the next
        while f"data: event {i}".encode() not in got:
            data = sock.recv(65536)
            assert data, got
            got += data
    assert b"text/event-stream" in got
    sock.close()


def test_a_1gb_upload_and_download_stream_through_in_bounded_memory(started):
    tool = started(Tool)
    ing = started(Ingress, [sandbox("big", tool.port)])
    c = http.client.HTTPConnection("127.0.0.1", ing.port, timeout=60)
    # Intact: a body's hash as the app saw it.
    small = os.urandom(3 << 20)
    c.request("POST", f"/sandboxes/big/port/{tool.port}/sink", body=small)
    answer = json.loads(c.getresponse().read())
    assert answer == {"bytes": len(small), "fnv1a": fnv1a(small)}
    # 1 GB up, sized, then 1 GB down, chunked: streamed, never held whole.
    size, block = 1 << 30, os.urandom(1 << 20)

    def body():
        for _ in range(size // len(block)):
            yield block
    c.request("POST", f"/sandboxes/big/port/{tool.port}/sink", body=body(),
              headers={"Content-Length": str(size)})
    assert json.loads(c.getresponse().read())["bytes"] == size
    c.request("GET", f"/sandboxes/big/port/{tool.port}/stream?n=1024&size=1048576")
    r = c.getresponse()
    got = 0
    while chunk := r.read(1 << 20):
        got += len(chunk)
    assert got == size
    if not SANITIZED:
        assert hwm_kib(ing.proc.pid) < 64 * 1024, f"peak RSS {hwm_kib(ing.proc.pid)} KiB"


def test_health_readiness_and_metrics_on_the_admin_listener(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    ing.get(f"/sandboxes/demo-1/port/{app.port}/")
    ing.get("/sandboxes/nope/port/1/")
    text = ing.metrics()
    assert 'sbx_ingress_requests_total{form="path",code="2xx"} 1' in text
    assert 'sbx_ingress_requests_total{form="path",code="4xx"} 1' in text
    assert "sbx_ingress_request_duration_seconds_count 2" in text
    assert "sbx_ingress_routes 1" in text
    c = http.client.HTTPConnection("127.0.0.1", ing.admin, timeout=5)
    c.request("GET", "/healthz")
    assert c.getresponse().read() == b"ok\n"
    # The public listener answers /healthz too (for load balancers), and a
    # sandbox's own /healthz by the header form goes to the sandbox.
    assert ing.get("/healthz")[2] == b"ok\n"
    status, _, body = ing.get("/healthz", headers={"OpenSandbox-Ingress-To": f"demo-1-{app.port}"})
    assert json.loads(body)["path"] == "/healthz"


def test_access_log_is_one_json_line_per_request(started):
    app = started(App)
    ing = started(Ingress, [sandbox("demo-1", app.port)])
    ing.get(f"/sandboxes/demo-1/port/{app.port}/logged")
    err = ing.stop()
    lines = [json.loads(l) for l in err.splitlines() if l.startswith("{")]
    req = [l for l in lines if l.get("msg") == "request"]
    assert req and req[0]["status"] == 200 and req[0]["sandbox"] == "demo-1"
    assert req[0]["form"] == "path" and req[0]["path"].endswith("/logged")


# ---- routing from Sandbox objects -------------------------------------------------------------


def sandbox_status(sid: str, pod_ip: str, port: int, ready: bool = True) -> dict:
    return {"id": sid, "phase": "Running" if ready else "Pending", "podIP": pod_ip,
            "endpoints": [{"name": "agent", "port": port, "url": "x"}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "Test", "message": "", "lastTransitionTime":
                            "2026-12-04T00:00:00Z"}]}


def test_sandbox_objects_route_and_follow_their_status(started, crd, namespace):
    cp = crd
    app = started(App)
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "web"}, "spec": {"image": "debian:12"}}))

    def status(st: dict) -> None:
        cp.kubectl("-n", namespace, "patch", "sbx", "web", "--subresource=status",
                   "--type=merge", "-p", json.dumps({"status": st}))
    status(sandbox_status("web-1a2b3", "127.0.0.1", app.port, ready=False))
    ing = started(Ingress, None, f"--kubeconfig={cp.kubeconfig}", f"--namespace={namespace}",
                  "--hold-timeout-ms=0")
    path = f"/sandboxes/web-1a2b3/port/{app.port}/x"
    assert ing.get(path)[0] == 503  # listed, not ready
    # Ready: routed, within a second of the status write.
    status(sandbox_status("web-1a2b3", "127.0.0.1", app.port))
    start = time.monotonic()
    wait_for(lambda: ing.get(path)[0] == 200, what="routed once ready")
    assert time.monotonic() - start < 1
    # A new pod, at a new address (nothing listens on [::1] here: refused,
    # and the access log names where the request went).
    status({"podIP": "::1"})
    start = time.monotonic()
    wait_for(lambda: ing.get(path)[0] == 502, what="routed to the new pod IP")
    assert time.monotonic() - start < 1
    status({"podIP": "127.0.0.1"})
    wait_for(lambda: ing.get(path)[0] == 200, what="back")
    # Deleted: 404 within a second.
    cp.kubectl("-n", namespace, "delete", "sbx", "web", "--wait=false")
    start = time.monotonic()
    wait_for(lambda: ing.get(path)[0] == 404, what="gone")
    assert time.monotonic() - start < 1
    assert ing.metric("sbx_ingress_informer_synced") == 1
    log = [json.loads(l) for l in ing.stop().splitlines() if l.startswith("{")]
    upstreams = {l.get("upstream") for l in log if l.get("msg") == "request"}
    assert f"[::1]:{app.port}" in upstreams and f"127.0.0.1:{app.port}" in upstreams


def test_sandboxes_of_namespaces_not_watched_are_not_routed(started, crd, namespace):
    cp = crd
    app = started(App)
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "sbx.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "web"}, "spec": {"image": "debian:12"}}))
    cp.kubectl("-n", namespace, "patch", "sbx", "web", "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": sandbox_status("web-9z8y7", "127.0.0.1", app.port)}))
    watched = started(Ingress, None, f"--kubeconfig={cp.kubeconfig}", f"--namespace={namespace}")
    other = started(Ingress, None, f"--kubeconfig={cp.kubeconfig}", "--namespace=default")
    path = f"/sandboxes/web-9z8y7/port/{app.port}/"
    wait_for(lambda: watched.get(path)[0] == 200, what="routed where watched")
    assert other.get(path)[0] == 404


# ---- access control ---------------------------------------------------------------------------


def secured(started, keys, sandboxes, *flags):
    import base64
    _, _, pem = keys
    return started(Ingress, sandboxes, f"--jwt-public-key={base64.b64encode(pem).decode()}",
                   *flags)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_credentials_that_are_not_valid_get_401_that_reveals_nothing(started, keys):
    good, other, pem = keys
    app = started(App)
    ing = secured(started, keys, [dict(sandbox("a", app.port), namespace="team-a")])
    soon = int(time.time()) + 300
    tokens = {
        "none": None,
        "wrong key": mint({"sandboxes": ["a"], "exp": soon}, key=other),
        "expired": mint({"sandboxes": ["a"], "exp": int(time.time()) - 5}, key=good),
        "no exp": mint({"sandboxes": ["a"]}, key=good),
        "alg none": mint({"sandboxes": ["a"], "exp": soon}, alg="none"),
        "HS256 with the public key": mint({"sandboxes": ["a"], "exp": soon}, alg="HS256",
                                          secret=pem),
        "garbage": "not.a.token",
    }
    for what, token in tokens.items():
        for path in (f"/sandboxes/a/port/{app.port}/", "/sandboxes/nope/port/1/"):
            status, headers, body = ing.get(path, headers=bearer(token) if token else {})
            assert status == 401, (what, path, body)
            assert headers.get("www-authenticate") == "Bearer"
        # The same answer for a sandbox that exists and one that does not.
        assert ing.get(f"/sandboxes/a/port/{app.port}/", headers=bearer(token) if token else {}
                       )[2] == ing.get("/sandboxes/nope/port/1/",
                                       headers=bearer(token) if token else {})[2]
    assert app.requests == []
    assert ing.metric('sbx_ingress_auth_refused_total{status="401"}') == 2 * 2 * len(tokens)


def test_a_token_reaches_only_the_sandboxes_it_names(started, keys):
    good, _, _ = keys
    a, b = started(App), started(App)
    ing = secured(started, keys, [dict(sandbox("a", a.port), namespace="team-a"),
                                  dict(sandbox("b", b.port), namespace="team-b")])
    soon = int(time.time()) + 300
    only_a = mint({"sandboxes": ["a"], "exp": soon}, key=good)
    status, _, body = ing.get(f"/sandboxes/a/port/{a.port}/x", headers=bearer(only_a))
    assert status == 200 and json.loads(body)["path"] == "/x"
    # The gateway's credential is not the app's.
    assert "authorization" not in a.names(0)
    for path in (f"/sandboxes/b/port/{b.port}/", "/sandboxes/ghost/port/1/"):
        status, _, body = ing.get(path, headers=bearer(only_a))
        assert status == 403 and b"does not give access" in body, (path, body)
    assert b.requests == []
    # By namespace, and every sandbox with "*".
    team_b = mint({"namespaces": ["team-b"], "exp": soon}, key=good)
    assert ing.get(f"/sandboxes/b/port/{b.port}/", headers=bearer(team_b))[0] == 200
    assert ing.get(f"/sandboxes/a/port/{a.port}/", headers=bearer(team_b))[0] == 403
    admin = mint({"sandboxes": ["*"], "exp": soon}, key=good)
    assert ing.get(f"/sandboxes/a/port/{a.port}/", headers=bearer(admin))[0] == 200
    # The header form is held to the same scope.
    assert ing.get("/", headers={**bearer(only_a), "OpenSandbox-Ingress-To": f"b-{b.port}"}
                   )[0] == 403
    # No body is read from a refused request: 401 at the head.
    with socket.create_connection(("127.0.0.1", ing.port), timeout=5) as s:
        s.sendall(f"POST /sandboxes/a/port/{a.port}/ HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: 1000000000\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 401")


def test_tickets_work_once_within_their_lifetime_and_keep_the_scope(started, keys):
    from websockets.sync.client import connect
    good, _, _ = keys
    app, tool = started(App), started(Tool)
    ing = secured(started, keys, [sandbox("a", app.port, tool.port), sandbox("b", app.port)],
                  "--ticket-ttl-seconds=1")
    token = mint({"sandboxes": ["a"], "exp": int(time.time()) + 300}, key=good)
    assert ing.get("/tickets", method="POST")[0] == 401

    def ticket() -> str:
        status, _, body = ing.get("/tickets", method="POST", headers=bearer(token))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["expires_in"] == 1
        return answer["ticket"]
    t = ticket()
    status, _, body = ing.get(f"/sandboxes/a/port/{app.port}/page?x=1&ticket={t}")
    assert status == 200
    assert json.loads(body)["path"] == "/page?x=1"  # the ticket stays at the gateway
    assert ing.get(f"/sandboxes/a/port/{app.port}/page?ticket={t}")[0] == 401  # used
    assert ing.get(f"/sandboxes/b/port/{app.port}/?ticket={ticket()}")[0] == 403  # scope kept
    late = ticket()
    time.sleep(1.2)  # the lifetime is what is under test
    assert ing.get(f"/sandboxes/a/port/{app.port}/?ticket={late}")[0] == 401
    # A browser's WebSocket carries a ticket in its URL.
    with connect(f"ws://127.0.0.1:{ing.port}/sandboxes/a/port/{tool.port}/ws?ticket={ticket()}"
                 ) as ws:
        ws.send("through")
        assert ws.recv() == "through"


# ---- workers ------------------------------------------------------------------------------------


def test_workers_share_routes_tickets_and_counters(started, keys):
    good, _, _ = keys
    a, b = started(App), started(App)
    ing = secured(started, keys, [sandbox("s", a.port)], "--workers=2")
    token = mint({"sandboxes": ["s"], "exp": int(time.time()) + 300}, key=good)
    assert ing.metric("sbx_ingress_workers") == 2
    # Every connection is a new one: the kernel spreads them over both
    # workers. A ticket made on one works on the other.
    for _ in range(10):
        status, _, body = ing.get("/tickets", method="POST", headers=bearer(token))
        ticket = json.loads(body)["ticket"]
        assert ing.get(f"/sandboxes/s/port/{a.port}/?ticket={ticket}")[0] == 200
    # A new routing table reaches every worker.
    ing.write([dict(sandbox("s", b.port))])
    wait_for(lambda: ing.get(f"/sandboxes/s/port/{b.port}/", headers=bearer(token))[0] == 200,
             what="the new route")
    for _ in range(20):
        assert ing.get(f"/sandboxes/s/port/{b.port}/", headers=bearer(token))[0] == 200
    # The counters are the sum over workers, fresh at each scrape.
    before = ing.metric('sbx_ingress_requests_total{form="path",code="2xx"}')
    for _ in range(7):
        ing.get(f"/sandboxes/s/port/{b.port}/", headers=bearer(token))
    assert ing.metric('sbx_ingress_requests_total{form="path",code="2xx"}') == before + 7
    assert ing.metric("sbx_ingress_tickets_used_total") == 10
    # Both stop and drain.
    ing.proc.send_signal(signal.SIGTERM)
    assert ing.proc.wait(10) == 0
