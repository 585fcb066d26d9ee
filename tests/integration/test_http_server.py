"""libsbx's HTTP/1.1 server core, driven by real clients (http.client, curl, raw
sockets) through sbx-httptool."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import assert_no_sanitizer_report, binary, make_tls_pair


class Server:
    def __init__(self, *flags):
        self.proc = subprocess.Popen([str(binary("tests/tools/sbx-httptool")), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.port = json.loads(line)["port"]

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stats(self) -> dict:
        c = self.conn()
        try:
            c.request("GET", "/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read()
        assert_no_sanitizer_report(err)
        return self.proc.returncode


@pytest.fixture
def server(request):
    started = []

    def start(*flags):
        s = Server(*flags)
        started.append(s)
        return s
    yield start
    for s in started:
        assert s.stop() == 0


def wait_for(condition, timeout: float = 10):
    """Polls condition until it holds; fails with what it last returned."""
    deadline = time.monotonic() + timeout
    while not (last := condition()):
        assert time.monotonic() < deadline, f"condition still false after {timeout} s: {last!r}"
        time.sleep(0.02)
    return last


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict, bytes]]:
    """Reads 'count' Content-Length framed responses from a raw socket."""
    f = sock.makefile("rb")
    out = []
    for _ in range(count):
        status = int(f.readline().split()[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", 0)))
        out.append((status, headers, body))
    return out


def upgrade_answer(s, path: str) -> tuple[int, dict, bytes]:
    """The answer to a WebSocket handshake on a raw HTTP/1.1 connection, when it
    is not a switch (a Content-Length framed response)."""
    sock = s.raw()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n"
                 "Connection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "\r\n".encode())
    (answer,) = read_responses(sock, 1)
    sock.close()
    return answer


def test_keep_alive_reuses_one_connection(server):
    s = server()
    c = s.conn()
    for path in ("/hello", "/items/a1/parts/p2", "/hello"):
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200
        body = r.read()
    assert body == b"hello"
    c.request("GET", "/items/a1/parts/p2")
    assert json.loads(c.getresponse().read()) == {"id": "a1", "part": "p2"}
    st = s.stats()
    assert st["accepted"] == 2  # the client's connection, and the one for /stats


def test_pipelined_requests_are_answered_in_order(server):
    s = server()
    sock = s.raw()
    sock.sendall(b"GET /slow?ms=150 HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                 b"GET /items/x/parts/y HTTP/1.1\r\nHost: t\r\n\r\n")
    got = read_responses(sock, 4)
    assert [(st, body) for st, _, body in got] == [
        (200, b"slow"), (200, b"hello"), (200, b"abc"), (200, b'{"id":"x","part":"y"}')]


def test_chunked_request_body_and_expect_continue(server):
    s = server()
    sock = s.raw()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n")
    (status, headers, body), = read_responses(sock, 1)
    assert status == 200 and body == b"hello, world"
    assert headers["content-type"] == "text/plain"

    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    f = sock.makefile("rb")
    assert f.readline().startswith(b"HTTP/1.1 100 Continue")
    assert f.readline() == b"\r\n"
    sock.sendall(b"data")
    (status, _, body), = read_responses(sock, 1)
    assert status == 200 and body == b"data"


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is installed by scripts/setup.sh")
def test_curl_upload_with_expect_continue(server, tmp_path):
    s = server("--max-body-bytes=4000000")
    data = bytes(range(256)) * 12000  # 3 MB: curl sends Expect: 100-continue
    (tmp_path / "blob").write_bytes(data)
    r = subprocess.run(["curl", "-sS", "--fail", "-H", "Content-Type: application/x-blob",
                        "--data-binary", f"@{tmp_path / 'blob'}", "-o", str(tmp_path / "out"),
                        "-w", "%{http_code}", f"http://127.0.0.1:{s.port}/echo"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "200", r.stderr
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431,
     "request headers too large"),
    (b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
     431, "too many request headers"),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n", 413,
     "request body too large"),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2001\r\n" + b"x" * 0x2001 + b"\r\n0\r\n\r\n", 413, "request body too large"),
    (b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n" + b"x" * 17, 413,
     "request body too large"),
    (b"GARBAGE\r\n\r\n", 400, None),
    (b"GET /hello HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n", 417, "unsupported Expect"),
    (b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404, "no such endpoint"),
    (b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n", 405, "method not allowed"),
], ids=["header-bytes", "header-count", "content-length", "chunked-body", "route-limit",
        "garbage", "expect", "not-found", "method"])
def test_limits_and_errors_answer_with_json(server, request_bytes, status, message):
    s = server("--max-header-bytes=4096", "--max-body-bytes=8192")
    sock = s.raw()
    sock.sendall(request_bytes)
    (got, headers, body), = read_responses(sock, 1)
    assert got == status
    err = json.loads(body)["error"]
    assert err["status"] == status
    if message:
        assert message in err["message"]
    if status >= 400 and status not in (404, 405):
        assert headers.get("connection") == "close"
        assert sock.recv(1) == b""  # closed after the answer


def test_slow_headers_get_408(server):
    s = server("--header-timeout-ms=300")
    sock = s.raw()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # never finished
    t0 = time.monotonic()
    (status, _, _), = read_responses(sock, 1)
    assert status == 408 and 0.2 < time.monotonic() - t0 < 5


def test_idle_keep_alive_connections_are_closed(server):
    s = server("--idle-timeout-ms=300")
    sock = s.raw()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    read_responses(sock, 1)
    sock.settimeout(5)
    assert sock.recv(1) == b""


def test_connection_limit_answers_503_and_health_keeps_answering(server):
    s = server("--max-connections=2")
    held = [s.raw(), s.raw()]
    for h in held:
        h.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        read_responses(h, 1)
    # Beyond the limit, 8 slots are kept for health routes: probes still get
    # their answer, other requests get 503 on them.
    reserve = [s.raw() for _ in range(8)]
    reserve[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    (status, _, body), = read_responses(reserve[0], 1)
    assert status == 200 and body == b"ok"
    reserve[1].sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    (status, _, body), = read_responses(reserve[1], 1)
    assert status == 503 and b"health endpoints only" in body
    # Beyond those too: 503 at once.
    extra = s.raw()
    (status, _, body), = read_responses(extra, 1)
    assert status == 503 and b"too many connections" in body
    for h in held + reserve:
        h.close()
    # (polls made while the closed ones still linger may be refused too)
    wait_for(lambda: s.stats().get("open") == 1)
    assert s.stats()["rejected"] >= 1


def test_streamed_response_with_backpressure(server):
    """A slow reader makes the server pause its producer; every byte arrives."""
    s = server()
    n, size = 200, 64 * 1024
    sock = s.raw()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /stream?n={n}&size={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    f = sock.makefile("rb")
    assert f.readline().startswith(b"HTTP/1.1 200")
    headers = {}
    while (line := f.readline()) != b"\r\n":
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    assert headers["transfer-encoding"] == "chunked"
    time.sleep(1.0)  # let the server fill the socket and pause
    total = 0
    pattern = bytes(i % 251 for i in range(size))
    while True:
        chunk_len = int(f.readline().strip(), 16)
        if chunk_len == 0:
            assert f.readline() == b"\r\n"
            break
        data = f.read(chunk_len)
        assert data == pattern
        assert f.readline() == b"\r\n"
        total += chunk_len
    assert total == n * size
    st = s.stats()
    assert st["pauses"] > 0, "the producer never paused"
    assert st["streams_done"] == 1


def test_client_gone_aborts_the_handler(server):
    s = server()
    sock = s.raw()
    sock.sendall(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)
    sock.close()
    deadline = time.monotonic() + 5
    while s.stats()["aborts"] < 1:
        assert time.monotonic() < deadline, "abort callback never ran"
        time.sleep(0.05)


def test_head_and_http10(server):
    s = server()
    c = s.conn()
    c.request("HEAD", "/hello")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "5" and r.read() == b""
    sock = s.raw()
    sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
    (status, headers, body), = read_responses(sock, 1)
    assert status == 200 and body == b"hello" and headers["connection"] == "close"
    assert "date" in headers and headers["server"] == "sbx-httptool"


def test_query_decoding(server):
    s = server()
    c = s.conn()
    c.request("GET", "/query?x=1&q=a%20b%2Bc+d%2F&y=2")
    assert json.loads(c.getresponse().read()) == {"q": "a b+c d/"}
    c.request("GET", "/query?x=1")
    assert json.loads(c.getresponse().read()) == {"q": None}


def test_graceful_shutdown_finishes_requests_in_flight(server):
    s = server()
    sock = s.raw()
    sock.sendall(b"GET /slow?ms=400 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    s.proc.send_signal(signal.SIGTERM)
    (status, headers, body), = read_responses(sock, 1)
    assert status == 200 and body == b"slow"
    assert headers["connection"] == "close"
    assert s.proc.wait(10) == 0
    with pytest.raises(OSError):
        s.raw()


def test_many_concurrent_clients(server):
    s = server()
    errors = []

    def client(i):
        try:
            c = s.conn()
            for j in range(20):
                payload = f"{i}-{j}".encode() * 50
                c.request("POST", "/echo", body=payload)
                r = c.getresponse()
                if r.status != 200 or r.read() != payload:
                    errors.append((i, j))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.stats()["requests"] >= 32 * 20


# ---- streamed request bodies (routes that take their body as it arrives) ----

def fnv1a(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def test_streamed_body_arrives_whole_and_keep_alive_goes_on(server):
    s = server()
    body = os.urandom(1 << 20)
    c = s.conn()
    c.request("POST", "/sink", body=body)
    r = c.getresponse()
    assert r.status == 200
    assert json.loads(r.read()) == {"bytes": len(body), "fnv1a": fnv1a(body)}
    c.request("POST", "/sink", body=b"")  # empty, same connection
    assert json.loads(c.getresponse().read()) == {"bytes": 0, "fnv1a": fnv1a(b"")}
    c.request("GET", "/hello")
    assert c.getresponse().read() == b"hello"
    assert s.stats()["accepted"] == 2  # that one and this /stats one


def test_a_body_asked_for_after_the_handler_returned_arrives_whole(server):
    # Was: reading stayed paused after the first read, for a handler that
    # asked for its body later (a proxy, once its upstream is connected).
    s = server()
    body = os.urandom(1 << 20)
    c = s.conn()
    c.request("POST", "/sink?delay_ms=100", body=body)
    r = c.getresponse()
    assert json.loads(r.read()) == {"bytes": len(body), "fnv1a": fnv1a(body)}


def test_streamed_chunked_body_with_a_slow_sink_is_paced(server):
    """A sink that pauses after every piece holds the client back: the server
    never takes more than a bounded amount past a pause, and loses nothing."""
    s = server()
    body = os.urandom(3 << 20)

    def pieces():
        for i in range(0, len(body), 100_000):
            yield body[i:i + 100_000]
    c = s.conn()
    c.request("POST", "/sink?pause_ms=2", body=pieces(),
              headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 200
    assert json.loads(r.read()) == {"bytes": len(body), "fnv1a": fnv1a(body)}
    st = s.stats()
    assert 0 < st["sink_max_pending"] <= 192 * 1024, st


def test_streamed_body_over_its_limit_gets_413(server):
    s = server()
    c = s.conn()
    c.request("POST", "/sink", body=b"x" * ((8 << 20) + 1))  # Content-Length: before any byte
    r = c.getresponse()
    assert r.status == 413 and b"too large" in r.read()

    def pieces():
        for _ in range(20):
            yield b"y" * (512 * 1024)
    c = s.conn()
    try:
        c.request("POST", "/sink", body=pieces(), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may stop reading once the answer is decided
    r = c.getresponse()
    assert r.status == 413 and b"limit of /sink" in r.read()
    assert r.getheader("Connection") == "close"


def test_early_answer_to_a_streamed_body_reaches_the_client(server):
    """A 401 sent before the body is read must not be destroyed by a reset:
    the server drains the client's rest before closing."""
    s = server()
    sock = s.raw()
    body = b"z" * (4 << 20)
    sock.sendall(b"POST /sink?reject=1 HTTP/1.1\r\nHost: t\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    sender = threading.Thread(target=lambda: sock.sendall(body), daemon=True)
    sender.start()
    (status, headers, payload), = read_responses(sock, 1)
    assert status == 401 and b"rejected" in payload
    assert headers["connection"] == "close"
    sender.join(10)


def test_client_gone_mid_body_aborts_the_handler(server):
    s = server()
    sock = s.raw()
    sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
                 + b"a" * 1000)
    time.sleep(0.2)
    sock.close()
    deadline = time.monotonic() + 5
    while s.stats()["aborts"] < 1:
        assert time.monotonic() < deadline, "abort callback never ran"
        time.sleep(0.05)


# ---- WebSocket (the python `websockets` client) ----

def test_websocket_echo_text_binary_and_close(server):
    from websockets.sync.client import connect
    s = server()
    with connect(f"ws://127.0.0.1:{s.port}/ws") as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        blob = os.urandom(300_000)
        ws.send(blob)
        assert ws.recv() == blob
        ws.ping(b"are you there")  # answered by the server core
        ws.send("close")
        from websockets.exceptions import ConnectionClosedOK
        with pytest.raises(ConnectionClosedOK):
            ws.recv()
        assert ws.close_code == 1000 and ws.close_reason == "asked to"
    deadline = time.monotonic() + 5
    while s.stats()["ws_closed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert s.stats()["ws_open"] == 1


def test_websocket_limits_and_bad_handshakes(server):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect
    s = server()
    with connect(f"ws://127.0.0.1:{s.port}/ws", max_size=None) as ws:
        ws.send(b"x" * ((1 << 20) + 1))  # over the 1 MiB message limit
        with pytest.raises(ConnectionClosedError):
            ws.recv()
        assert ws.close_code == 1009
    c = s.conn()
    c.request("GET", "/ws")  # no upgrade headers
    r = c.getresponse()
    assert r.status == 400 and b"WebSocket" in r.read()
    c = s.conn()
    c.request("GET", "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version": "8"})
    r = c.getresponse()
    assert r.status == 426 and r.getheader("Sec-WebSocket-Version") == "13"


def test_websocket_flood_reaches_a_slow_reader_whole_and_in_order(server):
    from websockets.sync.client import connect
    s = server()
    with connect(f"ws://127.0.0.1:{s.port}/ws", max_size=None) as ws:
        ws.send("flood 200")  # 12.5 MiB queued through wslay while we sleep
        time.sleep(0.5)
        got = 0
        while True:
            m = ws.recv()
            if m == "flood done":
                break
            assert len(m) == 65536 and m[0] == ord("a") + got % 26
            got += 1
        assert got == 200


# ---- HTTP/2 (prior knowledge), with the python `h2` client and curl ----

class H2:
    """A minimal blocking client on the `h2` state machine."""

    def __init__(self, port: int, window: int | None = None):
        import h2.config
        import h2.connection
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.sock.sendall(self.conn.data_to_send())
        self.responses: dict[int, dict] = {}
        self.order: list[int] = []

    def request(self, method: str, path: str, body: bytes = b"", headers=()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                                     (":authority", "t"), *headers], end_stream=not body)
        if body:
            self.send_body(sid, body)
        self.sock.sendall(self.conn.data_to_send())
        self.responses[sid] = {"headers": None, "body": b"", "done": False, "reset": False}
        return sid

    def send_body(self, sid: int, body: bytes) -> None:
        off = 0
        while off < len(body):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.sock.sendall(self.conn.data_to_send())
                self.pump()
                continue
            chunk = body[off:off + room]
            off += len(chunk)
            self.conn.send_data(sid, chunk, end_stream=off >= len(body))
            self.sock.sendall(self.conn.data_to_send())

    def pump(self, slow: float = 0) -> None:
        import h2.events
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.responses[ev.stream_id]["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.responses[ev.stream_id]["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if slow:
                    time.sleep(slow)
            elif isinstance(ev, h2.events.StreamEnded):
                self.responses[ev.stream_id]["done"] = True
                self.order.append(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.responses[ev.stream_id]["reset"] = True
                self.responses[ev.stream_id]["done"] = True
        self.sock.sendall(self.conn.data_to_send())

    def wait(self, sid: int, slow: float = 0) -> dict:
        while not self.responses[sid]["done"]:
            self.pump(slow)
        return self.responses[sid]


def test_h2_streams_run_side_by_side_on_one_connection(server):
    s = server()
    c = H2(s.port)
    slow = c.request("GET", "/slow?ms=500")
    fast = [c.request("GET", "/hello") for _ in range(5)]
    echo = c.request("POST", "/echo", b"x" * 100_000, [("content-type", "text/plain")])
    for sid in fast:
        r = c.wait(sid)
        assert r["headers"][b":status"] == b"200" and r["body"] == b"hello"
    r = c.wait(echo)
    assert r["body"] == b"x" * 100_000 and r["headers"][b"content-type"] == b"text/plain"
    assert c.wait(slow)["body"] == b"slow"
    assert c.order[-1] == slow, "the slow stream held the others back"
    missing = c.request("GET", "/nope")
    r = c.wait(missing)
    assert r["headers"][b":status"] == b"404" and b"no such endpoint" in r["body"]
    assert s.stats()["accepted"] == 2  # the H2 connection and the /stats one


def test_h2_flow_control_paces_a_big_stream_and_a_streamed_upload(server):
    s = server()
    c = H2(s.port, window=65535)
    sid = c.request("GET", "/stream?n=200&size=65536")
    r = c.wait(sid, slow=0.0005)
    pattern = bytes(i % 251 for i in range(65536))
    assert len(r["body"]) == 200 * 65536 and r["body"][:65536] == pattern
    assert s.stats()["pauses"] > 0, "the producer never paused"
    body = os.urandom(3 << 20)
    sid = c.request("POST", "/sink?pause_ms=2", body)
    r = c.wait(sid)
    assert json.loads(r["body"]) == {"bytes": len(body), "fnv1a": fnv1a(body)}


def test_h2_reset_stream_aborts_its_handler(server):
    import h2.errors
    s = server()
    c = H2(s.port)
    sid = c.request("GET", "/slow?ms=5000")
    time.sleep(0.2)
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.sock.sendall(c.conn.data_to_send())
    deadline = time.monotonic() + 5
    while s.stats()["aborts"] < 1:
        assert time.monotonic() < deadline, "abort callback never ran"
        time.sleep(0.05)
    ok = c.request("GET", "/hello")  # the connection lives on
    assert c.wait(ok)["body"] == b"hello"


def test_curl_speaks_h2_with_prior_knowledge_and_http11_still_works(server):
    s = server()
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_version}",
                          f"http://127.0.0.1:{s.port}/items/7/parts/b"],
                         capture_output=True, text=True, check=True).stdout
    assert out == '{"id":"7","part":"b"} 2'
    c = s.conn()
    c.request("GET", "/hello")
    assert c.getresponse().read() == b"hello"


# ---- TLS with ALPN ----

@pytest.fixture
def tls_files(tmp_path):
    return make_tls_pair(tmp_path)


def test_tls_alpn_picks_h2_or_http11(server, tls_files):
    import ssl
    cert, key = tls_files
    s = server(f"--tls-cert={cert}", f"--tls-key={key}")
    for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.set_alpn_protocols(offer)
        with socket.create_connection(("127.0.0.1", s.port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == want
    # HTTP/1.1 over TLS with keep-alive, a streamed body and a big response.
    with requests.Session() as rs:
        body = os.urandom(1 << 20)
        r = rs.post(f"https://127.0.0.1:{s.port}/sink", data=body, verify=str(cert))
        assert r.json() == {"bytes": len(body), "fnv1a": fnv1a(body)}
        r = rs.get(f"https://127.0.0.1:{s.port}/stream?n=64&size=65536", verify=str(cert))
        assert len(r.content) == 64 * 65536
    # HTTP/2 over TLS, as curl does it.
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(cert), "-w", " %{http_version}",
                          f"https://127.0.0.1:{s.port}/hello"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "hello 2"


def test_tls_refuses_plain_http_and_bad_certificates(server, tls_files, tmp_path):
    cert, key = tls_files
    s = server(f"--tls-cert={cert}", f"--tls-key={key}")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{s.port}/hello", timeout=5)
    (tmp_path / "bad.pem").write_text("not a certificate")
    p = subprocess.run([str(binary("tests/tools/sbx-httptool")), f"--tls-cert={tmp_path / 'bad.pem'}",
                        f"--tls-key={key}"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "TLS certificate" in p.stderr


# ---- faults of the single-file core, each with the test that showed it ----

def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    mask, n = os.urandom(4), len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def ws_parse(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole unmasked server frames in buf, and the bytes after them."""
    frames = []
    while len(buf) >= 2:
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < off + n:
            break
        frames.append((buf[0] & 0x0F, buf[off:off + n]))
        buf = buf[off + n:]
    return frames, buf


class H2WebSocket:
    """A WebSocket over one HTTP/2 stream (RFC 8441 extended CONNECT)."""

    def __init__(self, c: H2, path: str):
        self.c = c
        self.sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(self.sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                       (":scheme", "http"), (":path", path),
                                       (":authority", "t"), ("sec-websocket-version", "13")])
        c.sock.sendall(c.conn.data_to_send())
        c.responses[self.sid] = {"headers": None, "body": b"", "done": False, "reset": False}
        while c.responses[self.sid]["headers"] is None and not c.responses[self.sid]["done"]:
            c.pump()
        self.status = c.responses[self.sid]["headers"][b":status"]
        self.rest = b""

    def send(self, opcode: int, payload: bytes) -> None:
        data, off = ws_frame(opcode, payload), 0
        while off < len(data):
            room = min(self.c.conn.local_flow_control_window(self.sid),
                       self.c.conn.max_outbound_frame_size)
            if room <= 0:
                self.c.pump()
                continue
            self.c.conn.send_data(self.sid, data[off:off + room])
            off += room
            self.c.sock.sendall(self.c.conn.data_to_send())

    def recv(self) -> tuple[int, bytes]:
        while True:
            r = self.c.responses[self.sid]
            frames, rest = ws_parse(self.rest + r["body"])
            if frames:
                r["body"] = b""
                self.rest = ws_frame_bytes(frames[1:]) + rest
                return frames[0]
            assert not r["done"], "the stream ended"
            self.c.pump()


def ws_frame_bytes(frames: list[tuple[int, bytes]]) -> bytes:
    """Unmasked frames back into bytes (what recv did not return yet)."""
    out = b""
    for opcode, payload in frames:
        n = len(payload)
        size = bytes([n]) if n < 126 else (bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                           else bytes([127]) + n.to_bytes(8, "big"))
        out += bytes([0x80 | opcode]) + size + payload
    return out


def echo_10mb(send, recv) -> None:
    """10 MiB each way as ten 1 MiB binary messages (the route's limit), intact."""
    sent = [os.urandom((1 << 20) - 64) for _ in range(10)]
    for m in sent:
        send(m)
        assert recv() == m


def test_websocket_echo_over_http11_upgrade_and_rfc8441_alike(server):
    from websockets.sync.client import connect
    s = server()
    with connect(f"ws://127.0.0.1:{s.port}/ws", max_size=2 << 20) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        echo_10mb(ws.send, ws.recv)
    c = H2(s.port)
    ws2 = H2WebSocket(c, "/ws")
    assert ws2.status == b"200"
    ws2.send(0x1, b"hi")
    assert ws2.recv() == (0x1, b"hi")
    echo_10mb(lambda m: ws2.send(0x2, m), lambda: ws2.recv()[1])
    ws2.send(0x1, b"close")
    opcode, payload = ws2.recv()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1000
    ok = c.request("GET", "/hello")  # the connection lives on
    assert c.wait(ok)["body"] == b"hello"
    assert s.stats()["ws_open"] == 2


def test_tunnel_passes_http11_upgrade_and_rfc8441_through_to_an_http11_upstream(server):
    from websockets.sync.client import connect
    upstream, front = server(), server()
    with connect(f"ws://127.0.0.1:{front.port}/tunnel/{upstream.port}",
                 max_size=2 << 20) as ws:
        echo_10mb(ws.send, ws.recv)
    c = H2(front.port)
    ws2 = H2WebSocket(c, f"/tunnel/{upstream.port}")
    assert ws2.status == b"200"
    echo_10mb(lambda m: ws2.send(0x2, m), lambda: ws2.recv()[1])
    assert upstream.stats()["ws_open"] == 2
    # An upstream that answers without switching: its answer comes back
    # over HTTP/1.1, and a 502 over HTTP/2 (where 200 would mean "switched").
    c.sock.close()
    status, _, body = upgrade_answer(front, f"/tunnel/{upstream.port}?path=/hello")
    assert status == 200 and body == b"hello"
    c2 = H2(front.port)
    ws3 = H2WebSocket(c2, f"/tunnel/{upstream.port}?path=/hello")
    assert ws3.status == b"502"
    # And one that is not there: 502 with the reason.
    ws4 = H2WebSocket(c2, "/tunnel/1")
    assert ws4.status == b"502"


class ScriptedUpstream:
    """A TCP server on 127.0.0.1 that reads one request head, records it,
    and then sends `answer` (None: says nothing and holds the connection)."""

    def __init__(self, answer: bytes | None):
        import threading
        self.answer, self.heads, self.held = answer, [], []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    break
                head += data
            self.heads.append(head)
            if self.answer is None:
                self.held.append(conn)
                continue
            try:
                conn.sendall(self.answer)
            except OSError:
                pass  # the front gave up reading: what the tests check
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def tunnel_answer(front, up_port: int) -> tuple[tuple[int, bytes], tuple[bytes, bytes]]:
    """The front's answer to a WebSocket through /tunnel, over HTTP/1.1 Upgrade
    and over RFC 8441: ((status, body), (:status, body))."""
    status, _, body = upgrade_answer(front, f"/tunnel/{up_port}")
    c = H2(front.port)
    ws = H2WebSocket(c, f"/tunnel/{up_port}")
    while not c.responses[ws.sid]["done"]:
        c.pump()
    return (status, body), (ws.status, c.responses[ws.sid]["body"])


def test_tunnel_upstream_that_never_answers_gets_504_within_the_timeout(server):
    up = ScriptedUpstream(None)
    front = server("--connect-timeout-ms=300")
    start = time.monotonic()
    h1, h2_ = tunnel_answer(front, up.port)
    assert time.monotonic() - start < 3
    assert h1[0] == 504 and b"did not answer in time" in h1[1]
    assert h2_[0] == b"504" and b"did not answer in time" in h2_[1]
    # The head went upstream as an HTTP/1.1 Upgrade: an RFC 8441 request too,
    # with a key of the front's own.
    translated = up.heads[1].decode()
    assert translated.startswith("GET /ws HTTP/1.1\r\n")
    assert "Upgrade: websocket" in translated and "Sec-WebSocket-Key: " in translated
    assert "sec-websocket-version: 13" in translated.lower()
    up.close()


@pytest.mark.parametrize("answer, reason", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", b"not HTTP/1.1"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b"not HTTP/1.1"),  # no Upgrade
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", b"not HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"closed without an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", b"larger than 1 MiB"),
], ids=["not-http", "101-without-upgrade", "101-with-two-framings", "cut-short", "2-MB-answer"])
def test_tunnel_upstream_faults_get_502_that_says_which(server, answer, reason):
    if answer.endswith(b"2000000\r\n\r\n"):
        answer += b"x" * 2000000
    up = ScriptedUpstream(answer)
    front = server()
    h1, h2_ = tunnel_answer(front, up.port)
    assert h1[0] == 502 and reason in h1[1], h1
    # Over HTTP/2 a 2xx would mean "switched": refused as soon as its head is in.
    if answer.startswith(b"HTTP/1.1 200"):
        reason = b"without switching protocols"
    assert h2_[0] == b"502" and reason in h2_[1], h2_
    up.close()


def test_tunnel_passes_a_refusal_back_with_its_headers(server):
    up = ScriptedUpstream(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                          b"X-Why: origin\r\nContent-Length: 2\r\n\r\nno")
    front = server()
    status, headers, body = upgrade_answer(front, f"/tunnel/{up.port}")
    assert (status, body) == (403, b"no")
    assert headers["x-why"] == "origin" and headers["content-type"] == "text/plain"
    up.close()


def test_websocket_route_over_h2_without_extended_connect_is_refused_not_a_crash(server):
    # Was a heap use-after-free: the request was freed while nghttp2 held it.
    s = server()
    c = H2(s.port)
    sid = c.request("GET", "/ws", headers=[("sec-websocket-version", "13")])
    r = c.wait(sid)
    assert r["headers"][b":status"] == b"400" and b"extended CONNECT" in r["body"]
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                          "-w", "%{http_code}", f"http://127.0.0.1:{s.port}/ws"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "400"
    assert c.wait(c.request("GET", "/hello"))["body"] == b"hello"


def test_idle_h2_connection_is_closed_after_the_idle_timeout(server):
    # Was: still open after 3 s with a 300 ms idle timeout.
    import h2.events
    s = server("--idle-timeout-ms=300")
    c = H2(s.port)
    assert c.wait(c.request("GET", "/hello"))["body"] == b"hello"
    start, events = time.monotonic(), []
    c.sock.settimeout(5)
    while True:
        data = c.sock.recv(65536)
        if not data:
            break
        events += c.conn.receive_data(data)
    assert time.monotonic() - start < 2
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_idle_h2_clients_do_not_keep_the_slots(server):
    s = server("--idle-timeout-ms=300", "--max-connections=4")
    idle = [H2(s.port) for _ in range(4)]
    wait_for(lambda: s.stats().get("open") == 1)  # only the /stats connection
    c = H2(s.port)
    assert c.wait(c.request("GET", "/hello"))["body"] == b"hello"
    for i in idle:
        i.sock.close()


def test_graceful_stop_finishes_h2_streams_after_goaway(server):
    # Was: in-flight HTTP/2 requests cut without a response or a GOAWAY.
    # (curl, not the h2 package: h2 drops a connection's streams on GOAWAY.)
    s = server()
    before = s.stats()["requests"]
    curl = subprocess.Popen(["curl", "-sS", "-v", "--http2-prior-knowledge",
                             f"http://127.0.0.1:{s.port}/slow?ms=800"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: s.stats()["requests"] >= before + 2)  # /slow is in flight
    s.proc.send_signal(signal.SIGTERM)
    out, err = curl.communicate(timeout=10)
    assert curl.returncode == 0 and out == "slow", err
    assert "GOAWAY" in err or "shutting down" in err.lower() or s.proc.wait(10) == 0
    assert s.proc.wait(10) == 0


def test_graceful_stop_sends_websockets_a_1001_close(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    s = server()
    with connect(f"ws://127.0.0.1:{s.port}/ws") as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        s.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
    assert s.proc.wait(10) == 0


def test_graceful_stop_closes_tunnels_at_the_drain_timeout(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    upstream, front = server(), server("--drain-timeout-ms=500")
    with connect(f"ws://127.0.0.1:{front.port}/tunnel/{upstream.port}") as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        front.proc.send_signal(signal.SIGTERM)
        ws.send("still here")  # open until the drain deadline
        assert ws.recv(timeout=5) == "still here"
        start = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert time.monotonic() - start < 2
    assert front.proc.wait(10) == 0


def test_oversized_h2_headers_get_431_on_their_stream(server):
    # Was: the stream reset with INTERNAL_ERROR.
    s = server("--max-header-bytes=4096")
    c = H2(s.port)
    sid = c.request("GET", "/hello", headers=[("x-big", "a" * 8000)])
    r = c.wait(sid)
    assert r["headers"][b":status"] == b"431" and b"too large" in r["body"]
    assert c.wait(c.request("GET", "/hello"))["body"] == b"hello"


def test_h2_connect_without_path_gets_an_answer_and_the_connection_lives(server):
    # Was: the whole connection closed.
    s = server()
    c = H2(s.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.test:443")])
    c.sock.sendall(c.conn.data_to_send())
    c.responses[sid] = {"headers": None, "body": b"", "done": False, "reset": False}
    r = c.wait(sid)
    assert r["headers"][b":status"] == b"405"
    assert c.wait(c.request("GET", "/hello"))["body"] == b"hello"


@pytest.mark.parametrize("head", [
    # RFC 9112 5.1: no whitespace between a field name and its colon (was accepted).
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n",
    # 6.1 / 11.2: both framings, or two lengths that differ.
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    # 6.3: a request whose final coding is not chunked.
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
])
def test_ambiguous_request_framing_is_rejected_with_400(server, head):
    s = server()
    sock = s.raw()
    sock.sendall(head + b"abc")
    (status, headers, body), = read_responses(sock, 1)
    assert status == 400 and headers.get("connection") == "close"
    assert sock.recv(1) == b""


# ---- files by sendfile (sbx_http_send_file) ----

def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(48 << 20))
    return path


def test_a_file_goes_out_whole_by_sendfile_with_keep_alive_and_pipelining(server, data_file):
    s = server()
    want = data_file.read_bytes()
    with requests.Session() as rs:
        r = rs.get(f"http://127.0.0.1:{s.port}/file", params={"path": str(data_file)})
        assert r.status_code == 200 and r.content == want
        r = rs.get(f"http://127.0.0.1:{s.port}/file",
                   params={"path": str(data_file), "off": 12345, "len": 1 << 20})
        assert r.content == want[12345:12345 + (1 << 20)]
    # Two requests in one write: the second answer follows the file, framed.
    sock = s.raw()
    q = f"GET /file?path={data_file}&off=7&len=100000 HTTP/1.1\r\nHost: t\r\n\r\n"
    sock.sendall((q + "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").encode())
    (st1, _, b1), (st2, _, b2) = read_responses(sock, 2)
    sock.close()
    assert (st1, b1) == (200, want[7:100007]) and (st2, b2) == (200, b"hello")
    st = s.stats()
    assert st["files_sent"] == 3 and st["files_written"] == 0 and st["files_failed"] == 0
    assert st["bytes_out"] > len(want)


def test_a_file_over_http2_and_tls_is_written_instead(server, data_file, tls_files):
    cert, key = tls_files
    want = data_file.read_bytes()
    plain = server()
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge",
                          f"http://127.0.0.1:{plain.port}/file?path={data_file}"],
                         capture_output=True, check=True).stdout
    assert out == want
    tls = server(f"--tls-cert={cert}", f"--tls-key={key}")
    r = requests.get(f"https://127.0.0.1:{tls.port}/file", params={"path": str(data_file)},
                     verify=str(cert))
    assert r.content == want
    tls_stats = requests.get(f"https://127.0.0.1:{tls.port}/stats", verify=str(cert)).json()
    for st in (plain.stats(), tls_stats):
        assert st["files_written"] == 1 and st["files_sent"] == 0


def test_a_client_gone_mid_file_aborts_it_and_leaves_no_descriptor(server, data_file):
    s = server()
    base = open_fds(s.proc.pid)
    for _ in range(5):
        sock = s.raw()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /file?path={data_file} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()
    # The server hears of it from the read side (the abort callback) or from
    # sendfile's failure (the done callback), whichever comes first.
    wait_for(lambda: (st := s.stats())["aborts"] + st["files_failed"] == 5)
    wait_for(lambda: open_fds(s.proc.pid) == base)
    assert s.stats()["files_sent"] == 0


def test_a_client_that_stops_reading_a_file_is_cut_off(server, data_file):
    s = server("--write-timeout-ms=500")
    sock = s.raw()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /file?path={data_file} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    wait_for(lambda: s.stats()["aborts"] == 1)  # not reading: closed after 0.5 s
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    assert got < 48 << 20


def test_a_file_shorter_than_promised_cuts_the_response(server, tmp_path):
    s = server()
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 1000)
    sock = s.raw()
    sock.sendall(f"GET /file?path={short}&len=5000 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 5000" in head and body == b"x" * 1000
    assert s.stats()["files_failed"] == 1
