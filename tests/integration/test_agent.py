"""sbx-agent driven by the official AIO Sandbox SDK (PyPI agent-sandbox) and
plain HTTP: context, ping, health, metrics, errors, shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

from conftest import assert_no_sanitizer_report, binary


class Agent:
    def __init__(self, *flags, env=None):
        # In run mode SIGTERM goes to the main command, whose death by it
        # (128 + 15) becomes the agent's exit status.
        self.expected_exit = 128 + signal.SIGTERM if "run" in flags else 0
        self.proc = subprocess.Popen(
            [str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0",
             "--log-format=json", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env or os.environ.copy())
        self.log = []
        for line in self.proc.stderr:
            entry = json.loads(line)
            self.log.append(entry)
            if entry["msg"] == "listening":
                self.port = entry["port"]
                break
        else:
            raise AssertionError(f"agent did not start: {self.log}")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rest = self.proc.stderr.read()
        assert_no_sanitizer_report(rest)
        return self.proc.wait(10)


@pytest.fixture
def agent(tmp_path):
    started = []

    def start(*flags, env=None):
        a = Agent(*flags, env=env)
        started.append(a)
        return a
    yield start
    for a in started:
        if a.proc.poll() is None:
            assert a.stop() == a.expected_exit


def test_sdk_reads_the_sandbox_context(agent, tmp_path):
    env = dict(os.environ, WORKSPACE=str(tmp_path), TZ="Europe/Paris")
    a = agent(env=env)
    ctx = Sandbox(base_url=a.url).sandbox.get_context()
    assert ctx.home_dir == os.path.expanduser("~")
    assert ctx.workspace == str(tmp_path)
    assert ctx.version.startswith("sbx-agent ")
    system = ctx.detail.system
    assert system.os == "Linux" and system.arch == os.uname().machine
    assert system.workspace == str(tmp_path) and system.timezone == "Europe/Paris"
    # The agent's own listening port is among the occupied ones.
    assert str(a.port) in system.occupied_ports
    # The Python running this test is on PATH, and the agent found its version.
    found = {spec.ver for spec in ctx.detail.runtime.python}
    assert f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}" in found
    shells = [t.name for c in ctx.detail.utils if c.category == "shell" for t in c.tools]
    assert "sh" in shells


def test_workspace_flag_beats_environment(agent, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = agent(f"--workspace={tmp_path / 'b'}", env=dict(os.environ, WORKSPACE=str(tmp_path / "a")))
    assert Sandbox(base_url=a.url).sandbox.get_context().workspace == str(tmp_path / "b")


def test_ping_health_and_metrics(agent):
    a = agent()
    r = requests.get(f"{a.url}/v1/ping", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "pong", "data": None, "hint": None}
    assert requests.get(f"{a.url}/healthz", timeout=5).json() == {"status": "ok"}

    def requests_total():
        text = requests.get(f"{a.url}/metrics", timeout=5).text
        m = re.search(r"^sbx_agent_http_requests_total (\d+)$", text, re.M)
        assert m, text
        assert re.search(r"^process_resident_memory_bytes \d+$", text, re.M)
        assert 'sbx_build_info{version="' in text
        return int(m.group(1))
    before = requests_total()
    for _ in range(5):
        requests.get(f"{a.url}/v1/ping", timeout=5)
    assert requests_total() == before + 6  # five pings and the scrape itself


def test_unknown_endpoints_and_methods_are_clear(agent):
    a = agent()
    r = requests.get(f"{a.url}/v1/no/such/thing", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no such endpoint"
    r = requests.post(f"{a.url}/v1/sandbox", timeout=5)
    assert r.status_code == 405


def test_a_port_in_use_is_an_error_not_a_crash(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = subprocess.run(
            [str(binary("sandbox-agent/sbx-agent")), f"--listen=127.0.0.1:{s.getsockname()[1]}",
             f"--proxy-state={tmp_path / 'proxy.json'}"],
            capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stderr
    assert "cannot listen" in out.stderr and "address already in use" in out.stderr
    assert_no_sanitizer_report(out.stderr)


def test_sigterm_stops_cleanly_while_runtimes_are_probed(agent):
    """SIGTERM right after start, while the --version probes may still run."""
    a = agent()
    assert a.stop() == 0
    a = agent()
    requests.get(f"{a.url}/v1/ping", timeout=5)
    assert a.stop() == 0


def test_installed_packages_through_the_sdk(agent, tmp_path):  # noqa: F811
    """The answer comes from the runtimes themselves: what python3 on PATH
    can import is listed, with the version it reports."""
    import shutil as _shutil

    a = agent(f"--workspace={tmp_path}")
    c = Sandbox(base_url=a.url)
    r = c.sandbox.get_python_packages()
    assert r.success
    names = {p["name"].lower(): p["version"] for p in r.data}
    # What python3 on PATH says of itself, asked here directly.
    own = json.loads(subprocess.run(
        ["python3", "-c", "import json, importlib.metadata as m; print(json.dumps("
         "{d.metadata['Name'].lower(): d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True).stdout)
    assert names and names == own
    r = c.sandbox.get_nodejs_packages()
    if _shutil.which("npm"):
        assert r.success and isinstance(r.data, list)
        assert all(set(p) == {"name", "version"} for p in r.data)
    else:
        assert not r.success and "npm" in r.message


def test_display_record_without_a_display_is_a_501_naming_what_is_missing(agent, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    c = Sandbox(base_url=agent(env=env).url)
    for action in ("start", "status", "stop"):
        with pytest.raises(ApiError) as e:
            c.display.record(action=action)
        assert e.value.status_code == 501
        assert e.value.body["success"] is False
        assert "DISPLAY is not set" in e.value.body["message"]
    # A display named but not there: the socket it should have is named.
    shown = Sandbox(base_url=agent(env=dict(env, DISPLAY=":97")).url)
    with pytest.raises(ApiError) as e:
        shown.display.record(action="start", fps=10)
    assert e.value.status_code == 501 and "/tmp/.X11-unix/X97" in e.value.body["message"]


@pytest.mark.parametrize("body, loc", [
    ({}, "action"), ({"action": "pause"}, "action"), ({"action": "start", "fps": 0}, "fps"),
    ({"action": "start", "fps": 31}, "fps"), ({"action": "start", "crf": 52}, "crf"),
    ({"action": "start", "fps": 2.5}, "fps"), ({"action": "start", "max_duration": 0}, "max_duration"),
    ({"action": "start", "max_duration": 1e30}, "max_duration"),
    ({"action": "start", "width": -1}, "width"), ({"action": "start", "save_path": 3}, "save_path"),
])
def test_display_record_checks_its_request(agent, body, loc):
    r = requests.post(agent().url + "/v1/display/record", json=body, timeout=10)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", loc]
