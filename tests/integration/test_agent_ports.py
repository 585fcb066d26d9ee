"""/proxy/{port}/ and /absproxy/{port}/: services started inside the sandbox,
reached through the agent's port - plain requests, bodies streamed both
ways in bounded memory, an event stream event by event, a WebSocket echoing,
and the agent's own credentials kept from the app."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import requests
from agent_sandbox import Sandbox
from websockets.sync.client import connect
from websockets.sync.server import serve

from conftest import SANITIZED
from test_agent import agent  # noqa: F401 - the fixture
from test_agent_transfer import rss_kib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


class App(http.server.BaseHTTPRequestHandler):
    """An app inside the sandbox: says what it was asked, streams big
    bodies, and sends events when told to."""

    protocol_version = "HTTP/1.1"
    next_event = threading.Event()

    def log_message(self, *args):
        pass

    def answer(self, status, body: bytes, type_="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", type_)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App", "yes")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/big/"):
            n = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 4096
            while n:
                k = min(n, len(block))
                self.wfile.write(block[:k])
                n -= k
            return
        if self.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                data = f"data: event {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                # The next one only once the client has seen this one.
                assert App.next_event.wait(10)
                App.next_event.clear()
            self.wfile.write(b"0\r\n\r\n")
            return
        self.answer(200, json.dumps({"method": "GET", "path": self.path,
                                     "headers": dict(self.headers.items())}).encode())

    def body_chunks(self):
        if self.headers.get("Transfer-Encoding") != "chunked":
            n = int(self.headers.get("Content-Length", "0"))
            while n:
                chunk = self.rfile.read(min(n, 1 << 20))
                n -= len(chunk)
                yield chunk
            return
        while n := int(self.rfile.readline().split(b";")[0], 16):
            while n:
                chunk = self.rfile.read(min(n, 1 << 20))
                n -= len(chunk)
                yield chunk
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass

    def do_POST(self):
        digest = hashlib.sha256()
        for chunk in self.body_chunks():
            digest.update(chunk)
        self.answer(201, json.dumps({"sha256": digest.hexdigest(),
                                     "path": self.path}).encode())


class AppServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the agent closing its idle pooled connections as it stops


@pytest.fixture
def app():
    server = AppServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    App.next_event.set()
    server.shutdown()
    server.server_close()


def test_a_server_started_in_the_sandbox_is_reached(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    (tmp_path / "hello.txt").write_text("hello from the sandbox\n")
    port = free_port()
    shell = Sandbox(base_url=a.url).shell
    r = shell.exec_command(
        command=f"cd {tmp_path} && exec python3 -m http.server {port} --bind 127.0.0.1 "
                f">/dev/null 2>&1 &")
    assert r.success
    try:
        wait_listening(port)
        r = requests.get(f"{a.url}/proxy/{port}/hello.txt", timeout=10)
        assert r.status_code == 200 and r.text == "hello from the sandbox\n"
        # Without the slash, a redirect that keeps the app's relative URLs
        # under the prefix (it resolves to /proxy/{port}/).
        r = requests.get(f"{a.url}/proxy/{port}?x=1", timeout=10, allow_redirects=False)
        assert r.status_code == 308 and r.headers["Location"] == f"{port}/?x=1"
        r = requests.get(f"{a.url}/proxy/{port}", timeout=10)
        assert r.status_code == 200 and "hello.txt" in r.text
    finally:
        shell.exec_command(command=f"pkill -f 'http.server {port}'")


def test_prefix_query_and_headers(agent, app, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    r = requests.get(f"{a.url}/proxy/{app}/a/b?q=1&api_key=x&z=%2F", timeout=10,
                     headers={"X-API-Key": "k", "X-AIO-API-Key": "k", "X-Custom": "kept",
                              "Authorization": "Basic YXBwOmFwcA=="})
    assert r.status_code == 200 and r.headers["X-App"] == "yes"
    seen = r.json()
    assert seen["path"] == "/a/b?q=1&z=%2F"
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert h["x-forwarded-prefix"] == f"/proxy/{app}"
    assert h["x-custom"] == "kept" and h["x-forwarded-for"] == "127.0.0.1"
    # No agent auth configured: Authorization belongs to the app.
    assert h["authorization"] == "Basic YXBwOmFwcA=="
    assert "x-api-key" not in h and "x-aio-api-key" not in h
    # Behind a gateway that strips its own prefix, the prefixes add up.
    r = requests.get(f"{a.url}/proxy/{app}/", headers={"X-Forwarded-Prefix": "/sandboxes/s1/port/8080"},
                     timeout=10)
    assert r.json()["headers"]["X-Forwarded-Prefix"] == f"/sandboxes/s1/port/8080/proxy/{app}"
    # /absproxy passes the path whole.
    r = requests.get(f"{a.url}/absproxy/{app}/a/b?ticket=t&q=2", timeout=10)
    assert r.json()["path"] == f"/absproxy/{app}/a/b?q=2"
    assert "X-Forwarded-Prefix" not in r.json()["headers"]


def test_the_agents_credentials_stay_with_the_agent(agent, app, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    assert requests.get(f"{a.url}/proxy/{app}/", timeout=10).status_code == 401
    r = requests.get(f"{a.url}/proxy/{app}/x", timeout=10,
                     headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200 and "Authorization" not in r.json()["headers"]
    # With the key in its own header, the app's Authorization is the app's.
    r = requests.get(f"{a.url}/proxy/{app}/x?api_key=s3cret-key", timeout=10,
                     headers={"Authorization": "Bearer app-token", "X-API-Key": "s3cret-key"})
    seen = r.json()
    assert seen["headers"]["Authorization"] == "Bearer app-token"
    assert "X-API-Key" not in seen["headers"] and seen["path"] == "/x"


def test_bodies_stream_both_ways_in_bounded_memory(agent, app, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    size = 256 << 20
    before = rss_kib(a.proc.pid)

    def body():
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            digest.update(block)
            yield block

    digest = hashlib.sha256()
    # Chunked in (no length known in advance), chunked on to the app.
    r = requests.post(f"{a.url}/proxy/{app}/upload", data=body(), timeout=120)
    assert r.status_code == 201
    assert r.json() == {"sha256": digest.hexdigest(), "path": "/upload"}
    got = hashlib.sha256()
    n = 0
    with requests.get(f"{a.url}/proxy/{app}/big/{size}", stream=True, timeout=120) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == size
        for chunk in r.iter_content(1 << 20):
            got.update(chunk)
            n += len(chunk)
    block = bytes(range(256)) * 4096
    want = hashlib.sha256()
    for _ in range(size // len(block)):
        want.update(block)
    assert n == size and got.hexdigest() == want.hexdigest()
    grown_mib = (rss_kib(a.proc.pid) - before) / 1024
    print(f"agent RSS grew {grown_mib:.1f} MiB over 2 x {size >> 20} MiB proxied")
    if not SANITIZED:  # ASan holds freed memory in its quarantine
        assert grown_mib < 32


def test_an_event_stream_arrives_event_by_event(agent, app, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    App.next_event.clear()
    with requests.get(f"{a.url}/proxy/{app}/events", stream=True, timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = r.iter_lines()
        for i in range(3):
            # The app sends the next event only after this one arrived.
            assert next(lines) == f"data: event {i}".encode()
            assert next(lines) == b""
            App.next_event.set()


def test_http2_clients_are_proxied_too(agent, app, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}",
         "--data-binary", "@-", f"{a.url}/proxy/{app}/h2"],
        input=b"y" * 100000, capture_output=True, timeout=30, check=True).stdout
    body, status = out.rsplit(b"\n", 1)
    assert status == b"2 201"
    assert json.loads(body) == {"sha256": hashlib.sha256(b"y" * 100000).hexdigest(),
                                "path": "/h2"}


def test_a_websocket_echoes_through_the_proxy(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    seen = {}

    def echo(ws):
        seen["path"] = ws.request.path
        seen["headers"] = dict(ws.request.headers.raw_items())
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        ticket = requests.post(f"{a.url}/tickets", headers={"X-API-Key": "s3cret-key"},
                               timeout=10).json()["ticket"]
        payload = os.urandom(10 << 20)
        with connect(f"ws://127.0.0.1:{a.port}/proxy/{port}/ws?ticket={ticket}",
                     max_size=None) as ws:
            ws.send(payload)
            assert ws.recv(timeout=60) == payload
            ws.send("text too")
            assert ws.recv(timeout=10) == "text too"
        server.shutdown()
    assert seen["path"] == "/ws"
    assert "ticket" not in json.dumps(seen)


def test_the_header_form_reaches_the_port_it_names(agent, app, tmp_path):  # noqa: F811
    """AIO's X-AIO-Proxy-Port: any path, the port in a header; the credential
    check still applies, and the header does not reach the app."""
    a = agent(f"--workspace={tmp_path}", env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    r = requests.get(f"{a.url}/v1/sandbox?q=1", timeout=10, headers={"X-AIO-Proxy-Port": str(app)})
    assert r.status_code == 401  # no credential, whatever the header says
    r = requests.get(f"{a.url}/v1/sandbox?q=1", timeout=10,
                     headers={"X-AIO-Proxy-Port": str(app), "X-API-Key": "s3cret-key"})
    assert r.status_code == 200 and r.headers["X-App"] == "yes"
    seen = r.json()
    assert (seen["method"], seen["path"]) == ("GET", "/v1/sandbox?q=1")
    h = {k.lower() for k in seen["headers"]}
    assert "x-aio-proxy-port" not in h and "x-api-key" not in h
    r = requests.post(f"{a.url}/v1/shell/exec", data=b"body bytes", timeout=10,
                      headers={"X-AIO-Proxy-Port": str(app), "X-API-Key": "s3cret-key"})
    assert r.status_code == 201 and r.json() == {
        "sha256": hashlib.sha256(b"body bytes").hexdigest(), "path": "/v1/shell/exec"}
    # Without the header the same path is the agent's own.
    r = requests.get(f"{a.url}/v1/sandbox", headers={"X-API-Key": "s3cret-key"}, timeout=10)
    assert r.json()["workspace"] == str(tmp_path)
    for bad in ("0", "x", str(a.port)):
        r = requests.get(f"{a.url}/", timeout=10,
                         headers={"X-AIO-Proxy-Port": bad, "X-API-Key": "s3cret-key"})
        assert r.status_code == 400, bad

    # A WebSocket by the header too.
    def echo(ws):
        for message in ws:
            ws.send(message)
    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        with connect(f"ws://127.0.0.1:{a.port}/any/path", additional_headers={
                "X-AIO-Proxy-Port": str(port), "X-API-Key": "s3cret-key"}) as ws:
            ws.send("through the header")
            assert ws.recv(timeout=10) == "through the header"
        server.shutdown()


def test_errors_say_what_is_wrong(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    port = free_port()
    r = requests.get(f"{a.url}/proxy/{port}/", timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["message"] == f"nothing listens on 127.0.0.1:{port}"
    for bad in ("0", "65536", "abc", "-1", "080x"):
        r = requests.get(f"{a.url}/proxy/{bad}/", timeout=10)
        assert r.status_code == 400 and "1 to 65535" in r.json()["error"]["message"]
    r = requests.get(f"{a.url}/proxy/{a.port}/v1/ping", timeout=10)
    assert r.status_code == 400 and "own port" in r.json()["error"]["message"]
    # A server that is not HTTP.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]

        def garbage():
            c, _ = s.accept()
            c.recv(65536)
            c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            c.close()

        t = threading.Thread(target=garbage)
        t.start()
        r = requests.get(f"{a.url}/proxy/{port}/", timeout=10)
        t.join()
    assert r.status_code == 502 and "not HTTP/1.1" in r.json()["error"]["message"]
