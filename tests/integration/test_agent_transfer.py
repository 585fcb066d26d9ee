"""sbx-agent's streaming upload (multipart) and download, through the official
SDK and curl, with the filesystem as the witness."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

from conftest import SANITIZED
from test_agent import agent  # noqa: F401 - the fixture


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def sdk(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return Sandbox(base_url=a.url), tmp_path, a


def test_50mb_binary_upload_then_download_is_identical(sdk, tmp_path):
    """The done-means round trip: 50 MB of random bytes up with the SDK, the
    file on disk is the same, and down again with the SDK, the same again;
    the agent never holds the file in memory."""
    c, ws, a = sdk
    blob = os.urandom(50 * 1024 * 1024)
    src = tmp_path / "src.bin"
    src.write_bytes(blob)
    before = hwm_kib(a.proc.pid)
    with open(src, "rb") as f:
        r = c.file.upload_file(file=("data.bin", f, "application/octet-stream"),
                               path=str(ws / "up/dir/data.bin"))
    assert r.success, r
    assert r.data.file_path == str(ws / "up/dir/data.bin") and r.data.file_size == len(blob)
    on_disk = (ws / "up/dir/data.bin").read_bytes()
    assert hashlib.sha256(on_disk).digest() == hashlib.sha256(blob).digest()
    got = b"".join(c.file.download_file(path=str(ws / "up/dir/data.bin")))
    assert len(got) == len(blob) and hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    # Streaming both ways: the peak grew by a few MiB, not by the file.
    if not SANITIZED:
        assert hwm_kib(a.proc.pid) - before < 16 * 1024, (before, hwm_kib(a.proc.pid))
    assert not [p for p in os.listdir(ws / "up/dir") if p.startswith(".sbx-upload")]


def test_upload_destinations(sdk):
    c, ws, _ = sdk
    # No path: the workspace, under the file's own name (its last part only).
    r = c.file.upload_file(file=("../../escape.txt", b"one", "text/plain"))
    assert r.success and r.data.file_path == str(ws / "escape.txt")
    assert (ws / "escape.txt").read_bytes() == b"one"
    # A folder: the file's name inside it.
    (ws / "box").mkdir()
    r = c.file.upload_file(file=("in-box.txt", b"two", "text/plain"), path=str(ws / "box"))
    assert r.data.file_path == str(ws / "box/in-box.txt")
    assert (ws / "box/in-box.txt").read_bytes() == b"two"
    # A relative path resolves in the workspace; an existing file is replaced.
    r = c.file.upload_file(file=("x", b"three", "text/plain"), path="box/in-box.txt")
    assert r.data.file_path == str(ws / "box/in-box.txt")
    assert (ws / "box/in-box.txt").read_bytes() == b"three"
    # Empty files are files.
    r = c.file.upload_file(file=("empty", b"", "text/plain"), path="empty")
    assert r.success and r.data.file_size == 0 and (ws / "empty").read_bytes() == b""


def test_curl_upload_with_the_path_after_the_file(sdk, tmp_path):
    """curl sends fields in the order given: the file first, its path last."""
    _, ws, a = sdk
    src = tmp_path / "curl-src.bin"
    src.write_bytes(os.urandom(3 << 20))
    out = subprocess.run(
        ["curl", "-sS", "-F", f"file=@{src}", "-F", "path=late/arrival.bin",
         f"{a.url}/v1/file/upload"], capture_output=True, text=True, check=True).stdout
    assert '"success":true' in out.replace(" ", "")
    assert (ws / "late/arrival.bin").read_bytes() == src.read_bytes()
    assert not list(ws.glob(".sbx-upload*")), "the temporary file was left behind"


def test_upload_errors_are_clear(sdk):
    c, ws, a = sdk
    # Not multipart, no file part, a broken body: 422s naming the problem.
    r = requests.post(f"{a.url}/v1/file/upload", json={"path": "x"})
    assert r.status_code == 422 and "multipart/form-data" in r.text
    r = requests.post(f"{a.url}/v1/file/upload", files={"path": (None, "x")})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "file"]
    r = requests.post(f"{a.url}/v1/file/upload",
                      headers={"Content-Type": "multipart/form-data; boundary=zz"},
                      data=b"--zz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc")
    assert r.status_code == 422 and "closing boundary" in r.text
    # A filesystem failure: a typed FileOperationError, through the SDK.
    (ws / "plain").write_text("not a folder")
    r = c.file.upload_file(file=("f", b"x", "text/plain"), path=str(ws / "plain/f"))
    assert not r.success and r.data.error_type == "invalid_target"
    os.chmod(ws / "plain", 0o644)
    if os.geteuid() != 0:
        ro = ws / "ro"
        ro.mkdir(mode=0o555)
        r = c.file.upload_file(file=("f", b"x", "text/plain"), path=str(ro / "f"))
        assert not r.success and r.data.error_type == "permission_denied"


def test_upload_over_the_limit_is_refused_and_leaves_nothing(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", "--max-upload-bytes=1048576")
    c = Sandbox(base_url=a.url)
    # With a Content-Length (the SDK's way) the answer comes before the body.
    with pytest.raises(ApiError) as e:
        c.file.upload_file(file=("big", os.urandom(2 << 20), "application/octet-stream"),
                           path="big")
    assert e.value.status_code == 413 and "limit is 1048576 bytes" in str(e.value.body)
    # Chunked, the limit is found while streaming.
    body = (b"--b\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\nbig\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"g\"\r\n\r\n"
            + os.urandom(2 << 20) + b"\r\n--b--\r\n")
    r = requests.post(f"{a.url}/v1/file/upload",
                      headers={"Content-Type": "multipart/form-data; boundary=b"},
                      data=(body[i:i + 65536] for i in range(0, len(body), 65536)))
    assert r.status_code == 200 and not r.json()["success"]
    assert "limit of 1048576 bytes" in r.json()["message"]
    assert not (tmp_path / "big").exists()
    deadline = time.monotonic() + 5
    while list(tmp_path.glob(".sbx-upload*")):
        assert time.monotonic() < deadline, "temporary file left behind"
        time.sleep(0.05)
    assert c.file.upload_file(file=("ok", b"fine", "text/plain"), path="ok").success


def test_client_gone_mid_upload_leaves_nothing(sdk):
    _, ws, a = sdk
    import socket
    s = socket.create_connection(("127.0.0.1", a.port))
    head = (b"--b\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\ngone.bin\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"g\"\r\n\r\n")
    s.sendall(b"POST /v1/file/upload HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: multipart/form-data; boundary=b\r\n"
              b"Content-Length: 10000000\r\n\r\n" + head + b"x" * 500000)
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 5
    while list(ws.glob(".sbx-upload*")) or (ws / "gone.bin").exists():
        assert time.monotonic() < deadline, list(ws.iterdir())
        time.sleep(0.05)
    assert requests.get(f"{a.url}/v1/ping").status_code == 200


def test_download_headers_errors_and_missing_files(sdk):
    c, ws, a = sdk
    (ws / "héllo report.txt").write_bytes(b"report")
    r = requests.get(f"{a.url}/v1/file/download", params={"path": "héllo report.txt"})
    assert r.status_code == 200 and r.content == b"report"
    assert r.headers["Content-Length"] == "6"
    assert "filename*=UTF-8''h%C3%A9llo%20report.txt" in r.headers["Content-Disposition"]
    r = requests.get(f"{a.url}/v1/file/download", params={"path": "nope.txt"})
    assert r.status_code == 404 and r.json()["data"]["error_type"] == "not_found"
    with pytest.raises(ApiError) as e:
        b"".join(c.file.download_file(path=str(ws / "nope.txt")))
    assert e.value.status_code == 404
    r = requests.get(f"{a.url}/v1/file/download", params={"path": str(ws)})
    assert r.status_code == 400 and r.json()["data"]["error_type"] == "invalid_target"
    r = requests.get(f"{a.url}/v1/file/download")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "path"]
    r = requests.get(f"{a.url}/v1/file/download", params={"path": "x", "change_policy": "maybe"})
    assert r.status_code == 422
    # Keep-alive goes on after a download.
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"{a.url}/v1/file/download",
                         params={"path": "héllo report.txt"}).content == b"report"


def test_download_with_change_policy_abort_is_cut_when_the_file_changes(sdk):
    _, ws, a = sdk
    big = ws / "moving.bin"
    big.write_bytes(os.urandom(64 << 20))
    # A reader that takes its time, while the file is rewritten under it.
    with requests.get(f"{a.url}/v1/file/download",
                      params={"path": str(big), "change_policy": "abort"}, stream=True) as r:
        assert r.status_code == 200
        it = r.iter_content(65536)
        next(it)
        with open(big, "r+b") as f:
            f.write(b"changed!")
        with pytest.raises(requests.exceptions.RequestException):
            for _ in it:
                time.sleep(0.001)
    # Without the policy the same thing runs to the promised length.
    with requests.get(f"{a.url}/v1/file/download", params={"path": str(big)},
                      stream=True) as r:
        it = r.iter_content(65536)
        first = next(it)
        with open(big, "r+b") as f:
            f.write(b"again!!!")
        total = len(first) + sum(len(x) for x in it)
    assert total == 64 << 20


def test_slow_download_reader_keeps_the_agent_small(sdk):
    """A client reading slowly holds back the file reads (backpressure):
    memory does not grow with the file."""
    _, ws, a = sdk
    big = ws / "big.bin"
    with open(big, "wb") as f:
        f.truncate(200 << 20)
    base = rss_kib(a.proc.pid)
    with requests.get(f"{a.url}/v1/file/download", params={"path": str(big)},
                      stream=True) as r:
        it = r.iter_content(65536)
        got = len(next(it))
        time.sleep(1.0)
        if not SANITIZED:
            assert rss_kib(a.proc.pid) - base < 8 * 1024
        got += sum(len(x) for x in it)
    assert got == 200 << 20
