"""sbx-agent's stateful code sessions (/v1/jupyter, /v1/nodejs, and
/v1/code/execute with stateful): a kept interpreter per session, through the
official SDK."""

from __future__ import annotations

import os
import time

import pytest
import requests
from agent_sandbox import Sandbox

from conftest import processes, wait_gone
from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def sb(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return Sandbox(base_url=a.url), a, tmp_path


def field(o, key):
    """Jupyter outputs are SDK models; code and Node.js outputs are dicts."""
    return o[key] if isinstance(o, dict) else getattr(o, key)


def stream(outputs, name):
    return "".join(field(o, "text") for o in outputs
                   if field(o, "output_type") == "stream" and field(o, "name") == name)


def of_type(outputs, kind):
    return [o for o in outputs if field(o, "output_type") == kind]


def result_text(outputs):
    return field(of_type(outputs, "execute_result")[0], "data")["text/plain"]


def test_jupyter_session_keeps_variables_imports_and_functions(sb):
    c, _, ws = sb
    r = c.jupyter.execute_code(code="import math\nx = 41\ndef inc(v):\n    return v + 1\n"
                                    "print('set', flush=True)")
    assert r.success and r.data.status == "ok", r
    sid = r.data.session_id
    assert sid and stream(r.data.outputs, "stdout") == "set\n"
    r = c.jupyter.execute_code(code="y = inc(x)\nprint(y)\nmath.sqrt(y + 58)", session_id=sid)
    assert r.data.status == "ok" and r.data.session_id == sid
    assert stream(r.data.outputs, "stdout") == "42\n"
    assert result_text(r.data.outputs) == "10.0"
    assert r.data.execution_count == 2
    # Another session does not see it.
    other = c.jupyter.execute_code(code="print('x' in dir())")
    assert other.data.session_id != sid and stream(other.data.outputs, "stdout") == "False\n"
    # The working directory is the workspace; output of child processes is caught.
    r = c.jupyter.execute_code(code="import os, subprocess\nprint(os.getcwd())\n"
                                    "subprocess.run(['echo', 'from-a-child'])",
                               session_id=sid)
    assert stream(r.data.outputs, "stdout") == f"{ws}\nfrom-a-child\n"


def test_jupyter_error_returns_its_traceback_and_the_session_lives_on(sb):
    c, _, _ = sb
    r = c.jupyter.execute_code(code="def f(v):\n    return 1 / v\n\nf(0)")
    assert r.data.status == "error"
    err = of_type(r.data.outputs, "error")[0]
    assert err.ename == "ZeroDivisionError" and err.evalue == "division by zero"
    assert err.traceback[0] == "Traceback (most recent call last):"
    assert any("return 1 / v" in line for line in err.traceback)
    assert err.traceback[-1] == "ZeroDivisionError: division by zero"
    # The function defined before the error is still there.
    r2 = c.jupyter.execute_code(code="f(2)", session_id=r.data.session_id)
    assert r2.data.status == "ok"
    assert result_text(r2.data.outputs) == "0.5"
    # Syntax errors too.
    r3 = c.jupyter.execute_code(code="def (:", session_id=r.data.session_id)
    err = of_type(r3.data.outputs, "error")[0]
    assert r3.data.status == "error" and err.ename == "SyntaxError"


def test_jupyter_timeout_interrupts_and_keeps_state(sb):
    c, _, _ = sb
    r = c.jupyter.execute_code(code="kept = 'still here'")
    sid = r.data.session_id
    t0 = time.monotonic()
    r = c.jupyter.execute_code(code="import time\nprint('before', flush=True)\ntime.sleep(60)",
                               session_id=sid, timeout=1)
    assert time.monotonic() - t0 < 10
    assert r.data.status == "timeout" and stream(r.data.outputs, "stdout") == "before\n"
    r = c.jupyter.execute_code(code="kept", session_id=sid)
    assert r.data.status == "ok"
    assert result_text(r.data.outputs) == "'still here'"


def test_a_timeout_that_cannot_be_interrupted_kills_the_session_tree(sb):
    c, a, _ = sb
    code = ("import signal, subprocess\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '320'])\nwhile True: pass")
    r = c.jupyter.execute_code(code=code, timeout=1)
    assert r.data.status == "timeout" and "state is lost" in r.message
    wait_gone(["sleep 320"])
    deadline = time.monotonic() + 5
    while [p for p in processes() if p[1] == a.proc.pid]:  # the interpreter too
        assert time.monotonic() < deadline, [p for p in processes() if p[1] == a.proc.pid]
        time.sleep(0.1)
    assert r.data.session_id not in c.jupyter.list_sessions().data.sessions


def test_jupyter_session_management(sb):
    c, _, _ = sb
    made = c.jupyter.create_session(session_id="analysis")
    assert made.success and made.data.session_id == "analysis"
    c.jupyter.execute_code(code="z = 5", session_id="analysis")
    listed = c.jupyter.list_sessions().data.sessions
    assert "analysis" in listed and listed["analysis"].kernel_name == "python3"
    info = c.jupyter.get_info().data
    assert info.default_kernel == "python3" and info.active_sessions == 1
    assert c.jupyter.delete_session("analysis").success
    assert "analysis" not in c.jupyter.list_sessions().data.sessions
    # Executing with a deleted id starts afresh under that id.
    r = c.jupyter.execute_code(code="print('z' in dir())", session_id="analysis")
    assert stream(r.data.outputs, "stdout") == "False\n"
    c.jupyter.execute_code(code="1")
    assert c.jupyter.delete_sessions().success
    assert c.jupyter.list_sessions().data.sessions == {}


def test_code_execute_stateful_python_and_javascript(sb):
    c, _, _ = sb
    r = c.code.execute_code(language="python", code="counter = 10", stateful=True)
    sid = r.data.session_id
    assert sid
    r = c.code.execute_code(language="python", code="counter += 1\nprint(counter)",
                            session_id=sid, stateful=True)
    assert r.data.stdout == "11\n" and r.data.exit_code == 0
    r = c.code.execute_code(language="python", code="raise ValueError('bad')",
                            session_id=sid, stateful=True)
    assert r.data.status == "error" and r.data.traceback[-1] == "ValueError: bad"
    r = c.code.execute_code(language="javascript", code="let total = 40", stateful=True)
    js = r.data.session_id
    r = c.code.execute_code(language="javascript", code="total += 2; console.log(total)",
                            session_id=js, stateful=True)
    assert r.data.stdout == "42\n"


def test_nodejs_sessions(sb):
    c, _, ws = sb
    made = c.nodejs.create_session(session_id="web")
    assert made.data.created and made.data.session.state == "IDLE"
    r = c.nodejs.execute_code(code="const os = require('os'); let n = 1; function twice(v) "
                                   "{ return 2 * v }", session_id="web", stateful=True)
    assert r.data.status == "ok", r
    r = c.nodejs.execute_code(code="n = twice(n + 20); console.log(n, process.cwd())",
                              session_id="web", stateful=True)
    assert r.data.stdout == f"42 {ws}\n" and r.data.exit_code == 0
    r = c.nodejs.execute_code(code="await_me = Promise.resolve(7)", session_id="web",
                              stateful=True)
    r = c.nodejs.execute_code(code="await_me", session_id="web", stateful=True)
    assert result_text(r.data.outputs) == "7"
    r = c.nodejs.execute_code(code="null.x", session_id="web", stateful=True)
    assert r.data.status == "error" and r.data.exit_code == 1
    assert r.data.traceback[0] == "TypeError: Cannot read properties of null (reading 'x')"
    assert all("cell-" in line for line in r.data.traceback[1:])
    # A sync infinite loop stops at the timeout; the context survives.
    r = c.nodejs.execute_code(code="while (true) {}", session_id="web", stateful=True,
                              timeout=1)
    assert r.data.status == "timeout"
    r = c.nodejs.execute_code(code="console.log(n)", session_id="web", stateful=True)
    assert r.data.stdout == "42\n" and r.data.status == "ok"
    # So does a promise that never settles, and nothing of either reaches
    # the cells after them.
    r = c.nodejs.execute_code(code="new Promise(() => {})", session_id="web", stateful=True,
                              timeout=1)
    assert r.data.status == "timeout" and r.data.outputs[-1].ename == "TimeoutError"
    for _ in range(3):
        r = c.nodejs.execute_code(code="console.log(n)", session_id="web", stateful=True)
        assert r.data.stdout == "42\n" and r.data.status == "ok"
    assert "web" in c.nodejs.list_sessions().data.sessions
    assert c.nodejs.get_session("web").data.session.session_id == "web"
    assert c.nodejs.update_session("web", max_idle_time=60).data.session.max_idle_time == 60000
    assert c.nodejs.delete_session("web").data.deleted
    # Without stateful, nothing is kept.
    c.nodejs.execute_code(code="globalThis.leak = 1")
    r = c.nodejs.execute_code(code="console.log(typeof leak)")
    assert r.data.stdout == "undefined\n" and r.data.session_id is None


def test_output_that_is_not_utf8_still_answers(sb):
    c, _, _ = sb
    r = c.jupyter.execute_code(code="import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')")
    assert r.data.status == "ok"
    assert stream(r.data.outputs, "stdout") == "ok \ufffd\ufffd end\n"


def test_session_limit_and_bad_input(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", "--max-sessions=2")
    c = Sandbox(base_url=a.url)
    c.jupyter.create_session(session_id="a")
    c.jupyter.create_session(session_id="b")
    r = c.jupyter.create_session(session_id="c")
    assert not r.success and "too many" in r.message
    r = requests.post(f"{a.url}/v1/jupyter/execute", json={"code": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "code"]
    r = requests.post(f"{a.url}/v1/jupyter/execute", json={"code": "1", "timeout": 0})
    assert r.status_code == 422
    r = requests.post(f"{a.url}/v1/jupyter/execute", json={"code": "1", "kernel_name": "r"})
    assert r.status_code == 200 and not r.json()["success"]


def test_nodejs_execute_takes_the_sdks_files_and_stdin(sb):
    # Both fields of the official SDKs' nodejs.execute_code were refused.
    c, a, ws = sb
    # The cell's last value, a promise, is awaited: stdin is read through.
    r = c.nodejs.execute_code(
        code="const fs = require('fs');"
             "new Promise((resolve) => { let got = '';"
             " process.stdin.on('data', (d) => { got += d; });"
             " process.stdin.on('end', () => { console.log(JSON.stringify(got),"
             " fs.readFileSync('data/in.txt', 'utf8'),"
             " fs.readFileSync('empty.txt', 'utf8').length); resolve(); }); })",
        files={"data/in.txt": "from a file", "empty.txt": None}, stdin="line 1\nline 2\n",
        timeout=10)
    assert r.data.status == "ok", r
    assert r.data.stdout == '"line 1\\nline 2\\n" from a file 0\n', r.data.stdout
    assert (ws / "data/in.txt").read_text() == "from a file"
    for bad in ["../escape.txt", "/etc/x", "a//b", "./a", ""]:
        resp = requests.post(f"{a.url}/v1/nodejs/execute",
                             json={"code": "1", "files": {bad: "x"}}, timeout=10)
        assert resp.status_code == 422, (bad, resp.text)
    assert not (ws.parent / "escape.txt").exists()
    resp = requests.post(f"{a.url}/v1/nodejs/execute", json={"code": "1", "stdin": 5}, timeout=10)
    assert resp.status_code == 422
