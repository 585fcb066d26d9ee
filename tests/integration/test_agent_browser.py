"""sbx-agent's browser endpoints against a real headless Chromium (Debian's
`chromium`): Playwright's connectOverCDP through the agent's cdp_url, the
DevTools WebSocket passed through, and screenshots."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from agent_sandbox import Sandbox
from websockets.sync.client import connect

from headless_chromium import headless_chromium
from test_agent import agent  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chromium(tmp_path):
    with headless_chromium(tmp_path / "profile") as addr:
        yield addr


@pytest.fixture
def page_server():
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = (b"<!doctype html><title>sbx page</title>"
                    b"<body style='margin:0;background:#ff0000'><h1>served on 127.0.0.1</h1>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_playwright_connects_over_cdp_through_the_agent(agent, chromium, page_server,  # noqa: F811
                                                        tmp_path):
    a = agent(f"--cdp={chromium}")
    info = Sandbox(base_url=a.url).browser.get_info()
    assert info.success and info.data.cdp_url == f"{a.url}/cdp"
    assert "HeadlessChrome" in info.data.user_agent
    assert info.data.viewport.width == 1280 and info.data.viewport.height == 720
    # Playwright (npm playwright-core), as an agent developer would use it.
    modules = Path(os.environ.get("SBX_NODE_MODULES", ""))
    assert (modules / "playwright-core").is_dir(), "scripts/setup.sh installs playwright-core"
    script = modules.parent / "cdp_screenshot.mjs"
    shutil.copy(REPO / "tests/node/cdp_screenshot.mjs", script)  # ESM resolves from its folder
    out = tmp_path / "shot.png"
    r = subprocess.run(["node", str(script), info.data.cdp_url, page_server, str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"title": "sbx page"}
    w, h = png_size(out.read_bytes())
    assert w > 100 and h > 100


def test_devtools_websocket_passes_through(agent, chromium, page_server):  # noqa: F811
    a = agent(f"--cdp={chromium}")
    version = requests.get(f"{a.url}/cdp/json/version").json()
    ws_url = version["webSocketDebuggerUrl"]
    assert ws_url.startswith(f"ws://127.0.0.1:{a.port}/cdp/devtools/browser/")
    with connect(ws_url, max_size=None) as ws:
        ws.send(json.dumps({"id": 1, "method": "Target.createTarget",
                            "params": {"url": page_server}}))
        while True:
            m = json.loads(ws.recv(timeout=10))
            if m.get("id") == 1:
                break
        assert m["result"]["targetId"]
    targets = requests.get(f"{a.url}/cdp/json/list").json()
    page = [t for t in targets if t["url"] == page_server][0]
    assert page["webSocketDebuggerUrl"].startswith(f"ws://127.0.0.1:{a.port}/cdp/devtools/page/")
    # A proxy in front says where the agent is; the addresses follow.
    v = requests.get(f"{a.url}/cdp/json/version",
                     headers={"X-Forwarded-Host": "sbx.example", "X-Forwarded-Proto": "https",
                              "X-Forwarded-Prefix": "/sandboxes/s1/port/8080/"}).json()
    assert v["webSocketDebuggerUrl"].startswith(
        "wss://sbx.example/sandboxes/s1/port/8080/cdp/devtools/browser/")


def test_screenshot_endpoint(agent, chromium):  # noqa: F811
    a = agent(f"--cdp={chromium}")
    c = Sandbox(base_url=a.url)
    data = b"".join(c.browser.screenshot())
    w, h = png_size(data)
    assert w > 100 and h > 100
    # The page's own viewport (it was null; the display size was all there
    # was): what the page measures, the size of its picture.
    info = c.browser.get_info().data
    assert info.page_viewport is not None
    assert (info.page_viewport.width, info.page_viewport.height) == (w, h)
    r = requests.get(f"{a.url}/v1/browser/screenshot", params={"format": "jpeg", "quality": 50})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    r = requests.get(f"{a.url}/v1/browser/screenshot", params={"format": "gif"})
    assert r.status_code == 422


def test_without_a_browser_every_endpoint_says_so(agent):  # noqa: F811
    a = agent()
    c = Sandbox(base_url=a.url)
    info = c.browser.get_info()
    assert not info.success and "no browser in this sandbox" in info.message
    r = requests.get(f"{a.url}/cdp/json/version")
    assert r.status_code == 503 and "no browser" in r.text
    # An image endpoint: an error status (both SDKs hand a 200's body back
    # as the image), with a JSON body that says why.
    r = requests.get(f"{a.url}/v1/browser/screenshot")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("application/json")
    assert "no browser" in r.text


def test_unreachable_browser_is_a_clear_error(agent):  # noqa: F811
    a = agent(f"--cdp=127.0.0.1:{free_port()}")
    info = Sandbox(base_url=a.url).browser.get_info()
    assert not info.success and "did not answer" in info.message
    r = requests.get(f"{a.url}/cdp/devtools/browser/x", headers={
        "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert r.status_code == 502
    r = requests.get(f"{a.url}/v1/browser/screenshot")
    assert r.status_code == 502 and "did not answer" in r.json()["error"]["message"], r.text


def test_terminal_page_in_a_real_browser(agent, chromium, tmp_path):  # noqa: F811
    """GET /v1/shell/terminal-url, then the page it names, opened in Chromium
    through Playwright: typed keys reach the shell, its output shows. With a
    key configured, the page's WebSocket gets in on the URL's ticket."""
    (tmp_path / "home").mkdir()
    a = agent(f"--cdp={chromium}", f"--workspace={tmp_path}",
              env=dict(os.environ, SANDBOX_API_KEY="k3y", HOME=str(tmp_path / "home")))
    c = Sandbox(base_url=a.url, headers={"X-API-Key": "k3y"})
    r = c.shell.get_terminal_url()
    assert r.success and r.data.startswith(f"{a.url}/terminal?session_id=")
    assert "&ticket=" in r.data
    page = requests.get(r.data)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    modules = Path(os.environ.get("SBX_NODE_MODULES", ""))
    script = modules.parent / "terminal_page.mjs"
    shutil.copy(REPO / "tests/node/terminal_page.mjs", script)
    cdp = requests.get(f"{a.url}/v1/browser/info", headers={"X-API-Key": "k3y"}).json()
    out = subprocess.run(["node", str(script), cdp["data"]["cdp_url"], r.data,
                          "echo typed-$((6*7))", "typed-42"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SBX_API_KEY="k3y"))
    assert out.returncode == 0, out.stderr
    assert "typed-42" in json.loads(out.stdout.strip().splitlines()[-1])["screen"]
    # The ticket was used up by the page's WebSocket.
    sid = r.data.split("session_id=")[1].split("&")[0]
    ticket = r.data.split("ticket=")[1]
    resp = requests.get(f"{a.url}/v1/shell/ws", params={"session_id": sid, "ticket": ticket})
    assert resp.status_code == 401


def test_the_browser_sees_no_client_credential(agent):  # noqa: F811
    # A stand-in for Chromium's DevTools endpoint (a mock, named as such:
    # what is checked is what the agent sends it): it records the upgrade
    # request it gets and accepts it.
    import base64
    import hashlib

    seen: list[bytes] = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def serve():
        conn, _ = lsock.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        seen.append(head)
        key = [ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        conn.recv(1024)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    a = agent(f"--cdp=127.0.0.1:{port}", env=dict(os.environ, SANDBOX_API_KEY="k3y"))
    ticket = requests.post(f"{a.url}/tickets", headers={"X-API-Key": "k3y"}, timeout=5).json()
    url = (f"ws://127.0.0.1:{a.port}/cdp/devtools/browser/abc?api_key=k3y&x=1"
           f"&ticket={ticket['ticket']}")
    with connect(url, additional_headers={"Authorization": "Bearer k3y", "X-API-Key": "k3y",
                                          "X-AIO-API-Key": "k3y", "Cookie": "s=1"},
                 open_timeout=10):
        pass
    t.join(10)
    lsock.close()
    assert seen, "the upstream got no request"
    head = seen[0].decode()
    request_line = head.split("\r\n")[0]
    assert request_line == "GET /devtools/browser/abc?x=1 HTTP/1.1", request_line
    assert "k3y" not in head and ticket["ticket"] not in head, head
    names = {ln.split(":")[0].lower() for ln in head.split("\r\n")[1:] if ":" in ln}
    assert not names & {"authorization", "x-api-key", "x-aio-api-key", "cookie"}, names
