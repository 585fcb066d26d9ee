"""POST /v1/browser/page/record through the official agent-sandbox SDK, on
Debian's headless Chromium showing an animated page this test serves: the
video (Motion JPEG in AVI) is read back with ffprobe and decoded whole by
ffmpeg, as a user's player would; start, pause, resume and stop; the
errors."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

from headless_chromium import headless_chromium
from test_agent import agent  # noqa: F401 - the fixture

ANIMATED = b"""<!doctype html><title>Moving</title><body style="margin:0;background:#fff">
<div id="box" style="position:absolute;width:80px;height:80px;background:#c00"></div>
<script>let x = 0; setInterval(() => { x = (x + 9) % 400;
document.getElementById('box').style.left = x + 'px'; }, 25)</script></body>"""


@pytest.fixture
def page():
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(ANIMATED)))
            self.end_headers()
            self.wfile.write(ANIMATED)

        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


@pytest.fixture
def browser(agent, tmp_path):  # noqa: F811
    with headless_chromium(tmp_path / "profile") as addr:
        a = agent(f"--workspace={tmp_path}", f"--cdp={addr}")
        yield Sandbox(base_url=a.url), a


def probe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams",
                          "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(out.stdout)
    assert len(info["streams"]) == 1
    return info


def decode_all(path) -> list[str]:
    """Every frame decoded (errors fail), one MD5 per frame."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.splitlines()
            if line and not line.startswith("#")]


def status(c) -> dict:
    return c.browser_page.record(action="status").data


def wait_frames(c, n: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (s := status(c))["frames"] < n:
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    return s


def test_once_records_the_page_for_its_duration(browser, page, tmp_path):
    c, _ = browser
    assert c.browser_page.navigate(url=page).success
    viewport = c.browser_page.evaluate(
        expression="[innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]").data
    started = time.monotonic()
    r = c.browser_page.record(action="once", duration=2, fps=10, save_path="videos/one.avi")
    took = time.monotonic() - started
    assert r.success, r.message
    d = r.data
    assert d["path"] == str(tmp_path / "videos/one.avi")
    assert (d["format"], d["codec"], d["fps"]) == ("avi", "mjpeg", 10)
    assert [d["width"], d["height"]] == viewport
    # 2 s at 10 fps, counted from the first picture.
    assert 15 <= d["frames"] <= 20 and d["duration"] == d["frames"] / 10
    assert 2 <= took < 10

    info = probe(d["path"])
    stream = info["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == (
        "mjpeg", d["width"], d["height"])
    assert stream["r_frame_rate"] == "10/1"
    assert int(stream["nb_read_frames"]) == d["frames"]
    assert int(info["format"]["size"]) == d["size"]
    frames = decode_all(d["path"])
    assert len(frames) == d["frames"]
    assert len(set(frames)) > 3  # the box moved
    assert status(c)["state"] == "idle"
    assert status(c)["last"]["path"] == d["path"]


def test_start_pause_resume_stop(browser, page, tmp_path):
    c, _ = browser
    c.browser_page.navigate(url=page)
    r = c.browser_page.record(action="start", fps=5, quality=50)
    assert r.success and r.data["state"] == "recording"
    assert r.data["path"].startswith("/tmp/recordings/page_") and r.data["path"].endswith(".avi")
    # One at a time.
    with pytest.raises(ApiError) as e:
        c.browser_page.record(action="start")
    assert e.value.status_code == 409

    wait_frames(c, 3)
    paused = c.browser_page.record(action="pause").data
    assert paused["state"] == "paused"
    # Nothing is added while paused: the frame count holds over a time
    # longer than three frames take.
    time.sleep(0.8)
    assert status(c)["frames"] == paused["frames"]
    assert c.browser_page.record(action="resume").data["state"] == "recording"
    wait_frames(c, paused["frames"] + 3)

    d = c.browser_page.record(action="stop").data
    assert d["frames"] >= paused["frames"] + 3 and d["fps"] == 5
    stream = probe(d["path"])["streams"][0]
    assert int(stream["nb_read_frames"]) == d["frames"]
    assert len(decode_all(d["path"])) == d["frames"]
    # Stopped: nothing runs any more.
    assert status(c)["state"] == "idle"
    r = c.browser_page.record(action="stop")
    assert not r.success and r.message == "no recording is running"
    assert not c.browser_page.record(action="pause").success


def test_bad_requests_are_refused(browser, tmp_path):
    c, a = browser
    bad = [({"action": "rewind"}, "action"), ({"fps": 0}, "fps"), ({"fps": 61}, "fps"),
           ({"fps": 2.5}, "fps"), ({"quality": 101}, "quality"), ({"duration": -1}, "duration"),
           ({"duration": 3601}, "duration"), ({"duration": "long"}, "duration"),
           ({"save_path": 7}, "save_path")]
    for body, field in bad:
        r = requests.post(a.url + "/v1/browser/page/record", json=body, timeout=10)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", field], (body, r.text)
    # A file that cannot be made: the reason, and nothing left running.
    (tmp_path / "file").write_text("")
    r = c.browser_page.record(action="once", duration=1, save_path="file/x.avi")
    assert not r.success and "cannot create" in r.message and "Not a directory" in r.message
    assert status(c)["state"] == "idle"


def test_without_a_browser(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    c = Sandbox(base_url=a.url)
    with pytest.raises(ApiError) as e:
        c.browser_page.record(action="once", duration=1)
    assert e.value.status_code == 503 and "no browser" in json.dumps(e.value.body)
    assert status(c)["state"] == "idle"
