"""The sandbox's forward proxy and AIO's /v1/proxy API, through the official
agent-sandbox SDK: domain mappings reached by curl, requests and a real
headless Chromium (with --proxy-server, and with the PAC file), CONNECT
tunnels carrying TLS and a WebSocket, Debian's tinyproxy as an upstream
proxy that wants credentials (inline, or from auth_cmd), bypass patterns,
the configuration surviving a restart, and the errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shlex
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError
from websockets.sync.client import connect
from websockets.sync.server import serve

from conftest import binary
from headless_chromium import chromium_args
from test_agent import agent  # noqa: F401 - the fixture
from test_agent_ports import free_port, wait_listening

BIG = 16 << 20


class App(http.server.BaseHTTPRequestHandler):
    """An app inside the sandbox: says what it was asked."""

    protocol_version = "HTTP/1.1"
    name = "app"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path == "/big":
            block = bytes(range(256)) * 4096
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            for _ in range(BIG // len(block)):
                self.wfile.write(block)
            return
        body = json.dumps({"app": self.name, "path": self.path, "host": self.headers["Host"],
                           "proxy_authorization": self.headers["Proxy-Authorization"]})
        page = f"<!doctype html><title>{self.name} {self.path}</title><p>{body}</p>".encode()
        out = page if "text/html" in (self.headers["Accept"] or "") else body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if out is page else "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def start_app(name: str, tls: Path | None = None) -> tuple[http.server.HTTPServer, int]:
    handler = type(name, (App,), {"name": name})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return srv, srv.server_address[1]


@pytest.fixture
def apps():
    started = []

    def start(name, tls=None):
        srv, port = start_app(name, tls)
        started.append(srv)
        return port
    yield start
    for srv in started:
        srv.shutdown()


def proxied_agent(agent, tmp_path, *flags):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--proxy-state={tmp_path / 'proxy.json'}", *flags)
    a.proxy = "http://" + a.log[-1]["forward_proxy"]
    return a, Sandbox(base_url=a.url)


def via(a, url: str, **kw) -> requests.Response:
    return requests.get(url, proxies={"http": a.proxy, "https": a.proxy}, timeout=30, **kw)


def test_mappings_route_hosts_and_paths_to_apps_in_the_sandbox(agent, tmp_path, apps):  # noqa: F811
    a, c = proxied_agent(agent, tmp_path)
    web, api = apps("web"), apps("api")
    r = c.proxy.add_mapping(source="myapp.test", target=f":{web}")
    assert r.success
    port = int(a.proxy.rsplit(":", 1)[1])
    assert r.data.dict() == {"source": "myapp.test", "target": f":{web}",
                             "source_host": "myapp.test", "source_path": "/",
                             "internal_port": port}
    assert c.proxy.add_mapping(source="api.myapp.test/v1/*",
                               target=f"127.0.0.1:{api}/internal/").success
    assert c.proxy.add_mapping(source="*.preview.test", target=str(web)).success
    assert [m.source for m in c.proxy.list_mappings().data] == [
        "myapp.test", "api.myapp.test/v1/*", "*.preview.test"]

    # The app sees the name the client used, and its own path.
    got = via(a, "http://myapp.test/page?x=1").json()
    assert got == {"app": "web", "path": "/page?x=1", "host": "myapp.test",
                   "proxy_authorization": None}
    # The source path is replaced by the target's (nginx's proxy_pass).
    got = via(a, "http://api.myapp.test/v1/users?id=7").json()
    assert (got["app"], got["path"]) == ("api", "/internal/users?id=7")
    assert via(a, "http://pr-42.preview.test:8080/").json()["app"] == "web"
    # curl, as a user in the sandbox would.
    out = subprocess.run(["curl", "-sf", "-x", a.proxy, "http://myapp.test/curl"],
                         capture_output=True, text=True, timeout=30)
    assert json.loads(out.stdout)["path"] == "/curl"
    # Outside the mapped path, api.myapp.test is a name nobody knows.
    r = via(a, "http://api.myapp.test/other")
    assert r.status_code == 502 and "cannot resolve api.myapp.test" in r.json()["error"]["message"]

    # Diagnose says the same, and tries the target.
    d = c.proxy.diagnose(url="http://api.myapp.test/v1/users").data
    assert (d.route, d.resolved_target, d.target_reachable) == (
        "mapping", f"http://127.0.0.1:{api}/internal/users", True)
    assert d.matched_mapping.source == "api.myapp.test/v1/*"
    dead = free_port()
    c.proxy.add_mapping(source="dead.test", target=f":{dead}")
    d = c.proxy.diagnose(url="http://dead.test/").data
    assert (d.route, d.target_reachable) == ("mapping", False)
    r = via(a, "http://dead.test/")
    assert r.status_code == 502 and f"nothing listens on 127.0.0.1:{dead}" in r.text
    d = c.proxy.diagnose(url="http://example.invalid/").data
    assert (d.route, d.matched_mapping, d.target_reachable) == ("direct", None, False)

    # The same source replaces; removing takes the source as the SDK sends it.
    r = c.proxy.add_mapping(source="myapp.test", target=f":{api}")
    assert r.message == "Mapping updated"
    assert via(a, "http://myapp.test/").json()["app"] == "api"
    assert c.proxy.remove_mapping("api.myapp.test/v1/*").success
    assert requests.delete(a.url + "/v1/proxy/mappings/dead.test", timeout=10).json()["success"]
    with pytest.raises(ApiError) as e:
        c.proxy.remove_mapping("never.test")
    assert e.value.status_code == 404
    assert [m.source for m in c.proxy.list_mappings().data] == ["myapp.test", "*.preview.test"]
    assert via(a, "http://api.myapp.test/v1/users").status_code == 502

    metrics = requests.get(a.url + "/metrics", timeout=10).text
    assert 'sbx_agent_forward_proxy_requests_total{route="mapping"} 6' in metrics
    assert 'sbx_agent_forward_proxy_requests_total{route="direct"} 2' in metrics


def test_connect_tunnels_carry_tls_and_websockets(agent, tmp_path, apps):  # noqa: F811
    a, c = proxied_agent(agent, tmp_path)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test",
                    "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem"],
                   check=True, capture_output=True)
    tls = apps("tls", tls=tmp_path)
    c.proxy.add_mapping(source="https://secure.test", target=f":{tls}")
    # TLS end to end: the certificate is the app's own, checked by name.
    r = via(a, "https://secure.test/hello", verify=str(tmp_path / "cert.pem"))
    assert r.json() == {"app": "tls", "path": "/hello", "host": "secure.test",
                        "proxy_authorization": None}
    # 16 MiB down a tunnel, intact.
    big = via(a, "https://secure.test/big", verify=str(tmp_path / "cert.pem")).content
    block = bytes(range(256)) * 4096
    assert hashlib.sha256(big).digest() == hashlib.sha256(block * (BIG // len(block))).digest()
    # An http source is not used for CONNECT: secure.test:443 is then unknown.
    c.proxy.remove_mapping("https://secure.test")
    c.proxy.add_mapping(source="http://secure.test", target=f":{tls}")
    with pytest.raises(requests.exceptions.ProxyError):
        via(a, "https://secure.test/", verify=str(tmp_path / "cert.pem"))

    # A WebSocket to a mapped host: the client tunnels it with CONNECT.
    def echo(ws):
        for message in ws:
            ws.send(message)
    with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        c.proxy.add_mapping(source="ws.test", target=f":{server.socket.getsockname()[1]}")
        payload = bytes(range(256)) * 4096 * 4  # 4 MiB
        with connect("ws://ws.test/echo", proxy=a.proxy, max_size=None,
                     open_timeout=30) as ws:
            ws.send(payload)
            assert ws.recv(timeout=60) == payload
        server.shutdown()
    # A CONNECT to a port nobody listens on, and a malformed one.
    dead = free_port()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_connect}", "-p", "-x",
                          a.proxy, f"http://127.0.0.1:{dead}/"], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout == "502"
    with socket.create_connection(("127.0.0.1", int(a.proxy.rsplit(":", 1)[1]))) as s:
        s.sendall(b"CONNECT /path HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")


def tinyproxy(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """Debian's tinyproxy on 127.0.0.1, wanting alice's credentials."""
    port, log = free_port(), tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\n"
                    f"LogFile \"{log}\"\nMaxClients 20\nBasicAuth alice s3cret\n")
    p = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_listening(port)
    return p, port, log


def upstream_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "Established connection" in line]


def test_an_upstream_proxy_with_credentials_and_bypass_patterns(agent, tmp_path, apps):  # noqa: F811
    a, c = proxied_agent(agent, tmp_path)
    app = apps("app")
    tp, up, log = tinyproxy(tmp_path)
    try:
        assert c.proxy.get_upstream().data is None
        # Without credentials the upstream says 407, and a CONNECT fails with a reason.
        c.proxy.set_upstream(server=f"127.0.0.1:{up}")
        assert via(a, f"http://127.0.0.1:{app}/x").status_code == 407
        out = subprocess.run(["curl", "-s", "-p", "-x", a.proxy, f"http://127.0.0.1:{app}/"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "" and upstream_lines(log) == []

        # Inline credentials: the request goes through tinyproxy, which
        # takes them (the app never sees them).
        info = c.proxy.set_upstream(server=f"alice:s3cret@127.0.0.1:{up}").data
        assert info.dict() == {"addr": f"127.0.0.1:{up}", "username": "alice",
                               "password": "s3cret"}
        got = via(a, f"http://127.0.0.1:{app}/through").json()
        assert (got["path"], got["proxy_authorization"]) == ("/through", None)
        assert len(upstream_lines(log)) == 1
        # CONNECT is chained: a CONNECT of the agent's own, with the credentials.
        out = subprocess.run(["curl", "-sf", "-p", "-x", a.proxy,
                              f"http://127.0.0.1:{app}/tunnel"], capture_output=True, text=True,
                             timeout=30)
        assert json.loads(out.stdout)["path"] == "/tunnel"
        assert len(upstream_lines(log)) == 2
        assert "CONNECT" in log.read_text()
        d = c.proxy.diagnose(url=f"http://127.0.0.1:{app}/").data
        assert (d.route, d.resolved_target, d.target_reachable) == (
            "upstream", f"127.0.0.1:{up}", True)

        # auth_cmd: the credentials are the command's output.
        helper = tmp_path / "creds.sh"
        helper.write_text("#!/bin/sh\nprintf '%s:%s\\n' alice \"$(cat secret)\"\n")
        helper.chmod(0o755)
        (tmp_path / "secret").write_text("s3cret")
        info = c.proxy.set_upstream(server=f"nobody:wrong@127.0.0.1:{up}",
                                    auth_cmd=str(helper)).data
        assert (info.username, info.password) == ("alice", "s3cret")
        assert via(a, f"http://127.0.0.1:{app}/cmd").json()["path"] == "/cmd"
        assert len(upstream_lines(log)) == 3
        with pytest.raises(ApiError) as e:
            c.proxy.set_upstream(server=f"127.0.0.1:{up}", auth_cmd="echo oops >&2; exit 3")
        assert e.value.status_code == 422 and "exit status 3" in str(e.value.body)
        assert c.proxy.get_upstream().data.username == "alice"  # unchanged

        # Bypass patterns: 127.0.0.1 goes direct, by CIDR block or by name.
        assert c.proxy.add_exclude(pattern="127.0.0.0/8").success
        assert via(a, f"http://127.0.0.1:{app}/direct").json()["path"] == "/direct"
        assert len(upstream_lines(log)) == 3
        assert c.proxy.remove_exclude(pattern="127.0.0.0/8").success
        c.proxy.add_exclude(pattern="*.0.0.1")
        c.proxy.add_exclude(pattern=".corp.test")
        assert c.proxy.list_excludes().data == ["*.0.0.1", ".corp.test"]
        assert via(a, f"http://127.0.0.1:{app}/direct2").status_code == 200
        assert len(upstream_lines(log)) == 3
        d = c.proxy.diagnose(url="http://wiki.corp.test/").data
        assert d.route == "bypass"

        # The PAC file says the same to a browser.
        pac = requests.get(a.url + "/v1/browser/proxy.pac", timeout=10)
        assert pac.headers["Content-Type"] == "application/x-ns-proxy-autoconfig"
        port = a.proxy.rsplit(":", 1)[1]
        assert 'shExpMatch(host, "*.0.0.1")) return "DIRECT"' in pac.text
        assert 'dnsDomainIs(host, ".corp.test")) return "DIRECT"' in pac.text
        assert pac.text.endswith(f'\treturn "PROXY 127.0.0.1:{port}";\n}}\n')

        # Removing the upstream: direct again.
        assert c.proxy.remove_upstream().success
        c.proxy.remove_exclude(pattern="*.0.0.1")
        assert via(a, f"http://127.0.0.1:{app}/last").status_code == 200
        assert len(upstream_lines(log)) == 3
        pac = requests.get(a.url + "/v1/browser/proxy.pac", timeout=10).text
        assert pac.endswith('\treturn "DIRECT";\n}\n')
    finally:
        tp.kill()
        tp.wait(10)


def test_a_browser_reaches_mapped_hosts_by_proxy_server_and_by_pac(agent, tmp_path,  # noqa: F811
                                                                   apps):
    web = apps("web")
    devtools = free_port()
    # The agent starts the browser, which finds the proxy in SBX_FORWARD_PROXY.
    cmd = shlex.join(chromium_args(devtools, tmp_path / "profile")[:-1])
    cmd += ' --proxy-server="$SBX_FORWARD_PROXY" about:blank'
    a, c = proxied_agent(agent, tmp_path, f"--cdp=127.0.0.1:{devtools}", f"--browser-cmd={cmd}")
    c.proxy.add_mapping(source="myapp.test", target=f":{web}")
    wait_listening(devtools, 30)
    r = c.browser_page.navigate(url="http://myapp.test/home")
    assert r.success and r.data["title"] == "web /home"
    # A new mapping applies at once: no browser restart.
    other = apps("other")
    c.proxy.add_mapping(source="other.test", target=f":{other}")
    assert c.browser_page.navigate(url="http://other.test/").data["title"] == "other /"

    # Another browser, told only where the PAC file is.
    pac_port = free_port()
    args = chromium_args(pac_port, tmp_path / "profile2")[:-1] + [
        f"--proxy-pac-url=http://{a.proxy[7:]}/proxy.pac", "about:blank"]
    b = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        b2 = agent(f"--cdp=127.0.0.1:{pac_port}", f"--proxy-state={tmp_path / 'p2.json'}")
        wait_listening(pac_port, 30)
        r = Sandbox(base_url=b2.url).browser_page.navigate(url="http://myapp.test/pac")
        assert r.success and r.data["title"] == "web /pac"
    finally:
        b.kill()
        b.wait(10)


def test_the_configuration_survives_a_restart(agent, tmp_path, apps):  # noqa: F811
    a, c = proxied_agent(agent, tmp_path)
    web = apps("web")
    c.proxy.add_mapping(source="myapp.test", target=f":{web}")
    c.proxy.add_exclude(pattern="10.0.0.0/8")
    c.proxy.set_upstream(server="bob:pw@127.0.0.1:3128")
    state = tmp_path / "proxy.json"
    assert state.stat().st_mode & 0o777 == 0o600  # it holds credentials
    assert a.stop() == 0

    a, c = proxied_agent(agent, tmp_path)
    assert [m.target for m in c.proxy.list_mappings().data] == [f":{web}"]
    assert c.proxy.list_excludes().data == ["10.0.0.0/8"]
    assert c.proxy.get_upstream().data.username == "bob"
    c.proxy.remove_upstream()
    health = requests.get(a.url + "/v1/proxy/health", timeout=10).json()["data"]
    assert health["healthy"] and health["config_consistent"] and health["gost_alive"]
    assert via(a, "http://myapp.test/").json()["app"] == "web"
    assert a.stop() == 0

    # A damaged file is kept aside, named, and the proxy starts empty.
    state.write_text("{not json")
    a, c = proxied_agent(agent, tmp_path)
    assert c.proxy.list_mappings().data == []
    health = requests.get(a.url + "/v1/proxy/health", timeout=10).json()["data"]
    kept = list(tmp_path.glob("proxy.json.bad-*"))
    assert not health["healthy"] and len(kept) == 1
    assert str(kept[0]) in health["inconsistencies"][0]
    assert kept[0].read_text() == "{not json"


def test_bad_input_is_refused_with_a_reason(agent, tmp_path):  # noqa: F811
    a, c = proxied_agent(agent, tmp_path)
    bad = [
        ("POST", "/v1/proxy/mappings", {"source": "ftp://x.test", "target": ":1"}, "source"),
        ("POST", "/v1/proxy/mappings", {"source": "x.test:99999", "target": ":1"}, "source"),
        ("POST", "/v1/proxy/mappings", {"source": "x test", "target": ":1"}, "source"),
        ("POST", "/v1/proxy/mappings", {"source": "https://x.test/p", "target": ":1"}, "source"),
        ("POST", "/v1/proxy/mappings", {"source": "x.test/a*b", "target": ":1"}, "source"),
        ("POST", "/v1/proxy/mappings", {"source": "x.test", "target": "nohost"}, "target"),
        ("POST", "/v1/proxy/mappings", {"source": "x.test", "target": ":0"}, "target"),
        ("POST", "/v1/proxy/mappings", {"source": "x.test"}, "target"),
        ("POST", "/v1/proxy/excludes", {"pattern": "10.0.0.0/33"}, "pattern"),
        ("POST", "/v1/proxy/excludes", {"pattern": "a b"}, "pattern"),
        ("DELETE", "/v1/proxy/excludes", {}, "pattern"),
        ("PUT", "/v1/proxy/upstream", {"server": "no-port.test"}, "server"),
        ("PUT", "/v1/proxy/upstream", {"server": "h:1", "auth_cmd": 5}, "auth_cmd"),
        ("PUT", "/v1/proxy/upstream", {"server": "h:1", "auth_cmd": "echo nocolon"}, "auth_cmd"),
        ("GET", "/v1/proxy/diagnose", None, "url"),
        ("GET", "/v1/proxy/diagnose?url=ftp://x/", None, "url"),
    ]
    for method, path, body, field in bad:
        r = requests.request(method, a.url + path, json=body, timeout=30)
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["detail"][0]["loc"][-1] == field, (path, body, r.text)
    assert c.proxy.list_mappings().data == [] and c.proxy.get_upstream().data is None
    r = requests.delete(a.url + "/v1/proxy/excludes", json={"pattern": "x.test"}, timeout=10)
    assert r.status_code == 404 and not r.json()["success"]
    # The forward proxy's own errors: https absolute-form, and a bad host.
    port = int(a.proxy.rsplit(":", 1)[1])
    for head in (b"GET https://x.test/ HTTP/1.1\r\nHost: x.test\r\n\r\n",
                 b"GET http://x_y!/ HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head)
            assert s.recv(4096).startswith(b"HTTP/1.1 400"), head
    # Origin-form on the proxy's port: the PAC file and health, nothing else.
    assert requests.get(a.proxy + "/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(a.proxy + "/v1/sandbox", timeout=10).status_code == 404


def test_aio_start_settings_proxy_server_and_proxy_exclude(agent, tmp_path, apps):  # noqa: F811
    app = apps("app")
    tp, up, log = tinyproxy(tmp_path)
    env = dict(os.environ, PROXY_SERVER=f"http://alice:s3cret@127.0.0.1:{up}",
               PROXY_EXCLUDE=".corp.test,10.0.0.0/8")
    try:
        a = agent(f"--workspace={tmp_path}", f"--proxy-state={tmp_path / 'proxy.json'}", env=env)
        a.proxy = "http://" + a.log[-1]["forward_proxy"]
        c = Sandbox(base_url=a.url)
        assert c.proxy.get_upstream().data.dict() == {
            "addr": f"127.0.0.1:{up}", "username": "alice", "password": "s3cret"}
        assert c.proxy.list_excludes().data == [".corp.test", "10.0.0.0/8"]
        assert via(a, f"http://127.0.0.1:{app}/env").json()["path"] == "/env"
        assert len(upstream_lines(log)) == 1
        # Once the configuration is changed and saved, it wins over the start's.
        c.proxy.remove_upstream()
        assert a.stop() == 0
        a = agent(f"--workspace={tmp_path}", f"--proxy-state={tmp_path / 'proxy.json'}", env=env)
        assert Sandbox(base_url=a.url).proxy.get_upstream().data is None
    finally:
        tp.kill()
        tp.wait(10)
    for name, value, flag in (("PROXY_SERVER", "no-port", "--upstream-proxy"),
                              ("PROXY_EXCLUDE", "a b", "--proxy-exclude")):
        out = subprocess.run([str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0",
                              f"--proxy-state={tmp_path / 'other.json'}"],
                             env=dict(os.environ, **{name: value}), capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 2 and flag in out.stderr, out.stderr


def test_a_loop_between_proxies_is_cut(agent, tmp_path):  # noqa: F811
    a, ca = proxied_agent(agent, tmp_path / "a")
    b, cb = proxied_agent(agent, tmp_path / "b")
    port_a, port_b = a.proxy.rsplit(":", 1)[1], b.proxy.rsplit(":", 1)[1]
    with pytest.raises(ApiError) as e:
        ca.proxy.set_upstream(server=f"127.0.0.1:{port_a}")
    assert e.value.status_code == 422 and "this proxy itself" in str(e.value.body)
    # Each the other's upstream: the request comes back to the first, which says so.
    ca.proxy.set_upstream(server=f"127.0.0.1:{port_b}")
    cb.proxy.set_upstream(server=f"127.0.0.1:{port_a}")
    r = via(a, "http://far.test/")
    assert r.status_code == 508 and "came back to this proxy" in r.text
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_connect}", "-p", "-x",
                          a.proxy, "http://far.test/"], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout == "502"  # B's tunnel through A was refused with 508


def test_the_proxy_listens_on_loopback_only(tmp_path):
    out = subprocess.run([str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0",
                          "--forward-proxy=0.0.0.0:3128", f"--proxy-state={tmp_path / 'p.json'}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--forward-proxy takes a loopback address" in out.stderr
