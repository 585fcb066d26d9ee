"""POST /v1/util/convert_to_markdown through the official SDK: HTML from a
file, a file:// URI and an http URL, plain text, and the refusals."""

from __future__ import annotations

import http.server
import os
import sys
import threading

import pytest
import requests
from agent_sandbox import Sandbox

from test_agent import agent  # noqa: F401 - the fixture

PAGE = """<!doctype html><html><head><title>T</title><style>p{color:red}</style></head>
<body><h1>Report</h1><p>Numbers <b>up</b>, see <a href="/more">more</a>.</p>
<ul><li>alpha</li><li>beta</li></ul></body></html>"""


@pytest.fixture
def sdk(agent, tmp_path):  # noqa: F811
    # The sandbox's python3 is this venv's, which has html2text (as the
    # sandbox-base image's python3 has Debian's python3-html2text).
    path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    a = agent(f"--workspace={tmp_path}", env=dict(os.environ, PATH=path))
    return Sandbox(base_url=a.url), tmp_path, a


def test_without_html2text_the_reason_is_given(agent, tmp_path):  # noqa: F811
    """A python3 without the module (a bare interpreter on PATH): HTML is
    refused with what to install; plain text still converts."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(os.path.realpath(sys.executable))
    env = dict(os.environ, PATH=f"{bare}:/usr/bin:/bin", PYTHONNOUSERSITE="1")
    c = Sandbox(base_url=agent(f"--workspace={tmp_path}", env=env).url)
    (tmp_path / "p.html").write_text(PAGE)
    (tmp_path / "t.txt").write_text("plain")
    r = c.util.convert_to_markdown(uri="p.html")
    if r.success:  # this interpreter found html2text after all
        pytest.fail("the bare interpreter imported html2text: " + sys.executable)
    assert "needs the html2text Python module (Debian: python3-html2text)" in r.message
    assert c.util.convert_to_markdown(uri="t.txt").data["markdown"] == "plain"


def test_html_files_and_urls_become_markdown(sdk):
    c, ws, _ = sdk
    (ws / "page.html").write_text(PAGE)
    r = c.util.convert_to_markdown(uri="page.html")
    assert r.success, r.message
    md = r.data["markdown"]
    assert md.startswith("# Report\n\nNumbers **up**") and "see [more](/more)." in md
    assert "  * alpha\n  * beta" in md
    assert "color:red" not in md
    assert c.util.convert_to_markdown(uri=f"file://{ws}/page.html").data["markdown"] == md

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/report"
        r = c.util.convert_to_markdown(uri=url)
    finally:
        srv.shutdown()
    assert r.success, r.message
    # Links are made absolute against the page's URL.
    assert f"[more](http://127.0.0.1:{srv.server_address[1]}/more)" in r.data["markdown"]


def test_text_passes_through_and_other_types_are_refused_by_name(sdk):
    c, ws, a = sdk
    (ws / "notes.md").write_text("# Notes\n\n- kept as it is\n")
    assert c.util.convert_to_markdown(uri="notes.md").data["markdown"] == \
        "# Notes\n\n- kept as it is\n"
    (ws / "doc.pdf").write_bytes(b"%PDF-1.4\n")
    r = c.util.convert_to_markdown(uri="doc.pdf")
    assert not r.success and "application/pdf cannot be converted" in r.message
    r = c.util.convert_to_markdown(uri="missing.html")
    assert not r.success and "cannot read missing.html" in r.message
    r = c.util.convert_to_markdown(uri="ftp://example.org/x.html")
    assert not r.success and "ftp: URIs are http, https, file, or a path" in r.message
    r = requests.post(a.url + "/v1/util/convert_to_markdown", json={}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "uri"]
