"""The official SDK talking HTTP/2 (h2c, prior knowledge) to sbx-agent:
httpx with http2, the transport the SDK is built on."""

from __future__ import annotations

import hashlib
import os

import httpx
from agent_sandbox import Sandbox

from conftest import make_tls_pair
from test_agent import agent  # noqa: F401 - the fixture


def test_sdk_over_http2(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    with httpx.Client(http1=False, http2=True, timeout=60) as http:
        c = Sandbox(base_url=a.url, httpx_client=http)
        r = c.shell.exec_command(command="cd /tmp && export H=two; echo one")
        assert r.data.output.strip() == "one"
        r = c.shell.exec_command(id=r.data.session_id, command="echo $PWD $H")
        assert r.data.output.strip() == "/tmp two"
        blob = os.urandom(5 << 20)
        up = c.file.upload_file(file=("b.bin", blob, "application/octet-stream"), path="b.bin")
        assert up.success and up.data.file_size == len(blob)
        got = b"".join(c.file.download_file(path=str(tmp_path / "b.bin")))
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        # Every call went over one HTTP/2 connection.
        resp = http.get(f"{a.url}/v1/ping")
        assert resp.http_version == "HTTP/2" and resp.status_code == 200


def test_sdk_over_tls_with_alpn_h2(agent, tmp_path):  # noqa: F811
    cert, key = make_tls_pair(tmp_path)
    a = agent(f"--workspace={tmp_path}", f"--tls-cert={cert}", f"--tls-key={key}")
    url = f"https://127.0.0.1:{a.port}"
    import ssl
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert)),
                      timeout=60) as http:
        c = Sandbox(base_url=url, httpx_client=http)
        r = c.shell.exec_command(command="echo over-tls")
        assert r.data.output.strip() == "over-tls"
        resp = http.get(f"{url}/v1/ping")
        assert resp.http_version == "HTTP/2"
