"""sbx-agent's /v1/code: Python and JavaScript runs, through the official SDK."""

from __future__ import annotations

import sys
import time

import pytest
import requests
from agent_sandbox import Sandbox

from conftest import wait_gone
from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def code(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return Sandbox(base_url=a.url).code, a, tmp_path


def test_python_output_and_workspace(code):
    c, _, ws = code
    r = c.execute_code(language="python", code="import os\nprint(6 * 7)\nprint(os.getcwd())")
    assert r.data.status == "ok" and r.data.exit_code == 0
    assert r.data.stdout == f"42\n{ws}\n" and r.data.stderr == ""
    assert r.data.outputs[0] == {"output_type": "stream", "name": "stdout", "text": r.data.stdout}


def test_python_error_returns_its_traceback(code):
    c, _, _ = code
    r = c.execute_code(language="python", code="def f(x):\n    return 1 / x\n\nf(0)\n")
    assert r.data.status == "error" and r.data.exit_code == 1
    assert r.data.traceback[0] == "Traceback (most recent call last):"
    assert r.data.traceback[-1] == "ZeroDivisionError: division by zero"
    assert any("return 1 / x" in line for line in r.data.traceback)
    err = [o for o in r.data.outputs if o["output_type"] == "error"][0]
    assert err["ename"] == "ZeroDivisionError" and err["evalue"] == "division by zero"


def test_javascript(code):
    c, _, _ = code
    r = c.execute_code(language="javascript",
                       code="console.log([1, 2, 3].map(x => x * 2).join(','));"
                            "console.error('to stderr'); process.exitCode = 3;")
    assert r.data.stdout == "2,4,6\n" and r.data.stderr == "to stderr\n"
    assert r.data.status == "error" and r.data.exit_code == 3


def test_timeout_kills_the_whole_group(code):
    c, _, _ = code
    t0 = time.monotonic()
    r = c.execute_code(language="python", timeout=1,
                       code="import subprocess, time\n"
                            "subprocess.Popen(['sleep', '340'])\n"
                            "print('started', flush=True)\ntime.sleep(60)\n")
    assert r.data.status == "timeout" and r.data.stdout == "started\n"
    assert time.monotonic() - t0 < 10
    wait_gone(["sleep 340"])


def test_a_setsid_grandchild_neither_outlives_the_run_nor_holds_the_answer(code):
    # The grandchild left the group with setsid and kept the output pipes:
    # the run never answered, even after its timeout.
    c, _, _ = code
    t0 = time.monotonic()
    r = c.execute_code(language="python",
                       code="import subprocess\n"
                            "subprocess.Popen(['setsid', 'sleep', '351'])\nprint('done')\n")
    assert r.data.status == "ok" and r.data.stdout == "done\n", r.data
    assert time.monotonic() - t0 < 5
    wait_gone(["sleep 351"])
    t0 = time.monotonic()
    r = c.execute_code(language="python", timeout=1,
                       code="import subprocess, time\n"
                            "subprocess.Popen(['setsid', 'sleep', '352'])\ntime.sleep(60)\n")
    assert r.data.status == "timeout"
    assert time.monotonic() - t0 < 5
    wait_gone(["sleep 352"])


def test_cwd_and_info(code):
    c, _, ws = code
    (ws / "data.txt").write_text("from a file")
    r = c.execute_code(language="python", code="print(open('data.txt').read())", cwd=str(ws))
    assert r.data.stdout == "from a file\n"
    info = {i.language: i for i in c.get_info().data.languages}
    assert info["python"].runtime_version == "%d.%d.%d" % sys.version_info[:3]
    assert info["python"].default_timeout == 30 and info["python"].max_timeout == 300


def test_invalid_requests(code):
    _, a, _ = code
    for body, field in [({"code": "1"}, "language"), ({"language": "python"}, "code"),
                        ({"language": "ruby", "code": "1"}, "language"),
                        ({"language": "python", "code": "1", "timeout": 999}, "timeout"),
                        ({"language": "python", "code": "1", "cwd": "rel"}, "cwd")]:
        r = requests.post(f"{a.url}/v1/code/execute", json=body, timeout=5)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], body
    r = requests.post(f"{a.url}/v1/code/execute",
                      json={"language": "python", "code": "1", "cwd": "/no/such/dir"}, timeout=5)
    assert r.status_code == 200 and r.json()["success"] is False
