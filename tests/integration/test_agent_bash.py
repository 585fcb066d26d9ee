"""sbx-agent's /v1/bash: commands on pipes with separate stdout and stderr,
byte offsets and long-polling, through the official SDK."""

from __future__ import annotations

import os
import time

import pytest
import requests
from agent_sandbox import Sandbox

from conftest import assert_no_zombies_below, processes, wait_gone
from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def sb(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return Sandbox(base_url=a.url), a, tmp_path


def test_sync_exec_separates_the_streams_and_keeps_no_shell_state(sb):
    c, _, ws = sb
    r = c.bash.exec(command="echo out; echo err >&2; cd /; export X=1; exit 4")
    d = r.data
    assert d.status == "completed" and d.exit_code == 4
    assert d.stdout == "out\n" and d.stderr == "err\n"
    assert d.offset == 4 and d.stderr_offset == 4
    # Same session: the API-level directory stays; cd and export did not.
    r = c.bash.exec(command="pwd; echo x=${X:-unset}", session_id=d.session_id)
    assert r.data.stdout == f"{ws}\nx=unset\n"
    # env for one command, exec_dir for this and later ones.
    (ws / "sub").mkdir()
    r = c.bash.exec(command="echo $GREETING; pwd", session_id=d.session_id,
                    env={"GREETING": "hi there"}, exec_dir=str(ws / "sub"))
    assert r.data.stdout == f"hi there\n{ws}/sub\n"
    assert c.bash.exec(command="pwd", session_id=d.session_id).data.stdout == f"{ws}/sub\n"


def test_async_exec_then_offsets_and_long_poll(sb):
    c, _, _ = sb
    r = c.bash.exec(command="for i in 1 2 3; do echo line$i; sleep 0.3; done; echo done >&2",
                    async_mode=True)
    d = r.data
    assert d.status == "running" and d.offset == 0
    got, off, eoff = "", 0, 0
    deadline = time.monotonic() + 15
    while True:
        o = c.bash.output(session_id=d.session_id, command_id=d.command_id, offset=off,
                          stderr_offset=eoff, wait=True, wait_timeout=5).data
        got += o.stdout
        off, eoff = o.offset, o.stderr_offset
        if o.command.status != "running":
            break
        assert time.monotonic() < deadline
    assert got == "line1\nline2\nline3\n"
    assert o.command.status == "completed" and o.command.exit_code == 0
    assert eoff == len("done\n")
    # Reading from an offset gives only what follows it.
    o = c.bash.output(session_id=d.session_id, offset=6).data
    assert o.stdout == "line2\nline3\n"


def test_timeout_returns_running_and_write_feeds_stdin(sb):
    c, _, _ = sb
    t0 = time.monotonic()
    r = c.bash.exec(command="read name; echo hello $name", timeout=0.5)
    assert r.data.status == "running" and time.monotonic() - t0 < 5
    sid, cid = r.data.session_id, r.data.command_id
    assert c.bash.write(session_id=sid, input="world\n").success
    o = c.bash.output(session_id=sid, command_id=cid, wait=True, wait_timeout=5).data
    deadline = time.monotonic() + 5
    while o.command.status == "running":
        assert time.monotonic() < deadline
        o = c.bash.output(session_id=sid, command_id=cid, wait=True, wait_timeout=1).data
    assert o.stdout == "hello world\n"


def test_hard_timeout_and_kill_end_the_whole_group(sb):
    c, a, _ = sb
    r = c.bash.exec(command="sleep 310 & sleep 311; echo never", hard_timeout=0.5)
    assert r.data.status == "timed_out" and "never" not in r.data.stdout
    wait_gone(["sleep 310", "sleep 311"])
    r = c.bash.exec(command="sleep 312 & sleep 313", async_mode=True)
    assert c.bash.kill(session_id=r.data.session_id, signal="SIGTERM").success
    o = c.bash.output(session_id=r.data.session_id, wait=True, wait_timeout=5).data
    deadline = time.monotonic() + 5
    while o.command.status == "running":
        assert time.monotonic() < deadline
        o = c.bash.output(session_id=r.data.session_id, wait=True, wait_timeout=1).data
    assert o.command.status == "killed"
    wait_gone(["sleep 312", "sleep 313"])
    assert_no_zombies_below(a.proc.pid)


def test_sessions_truncation_and_errors(sb):
    c, a, ws = sb
    made = c.bash.create_session(session_id="build", exec_dir=str(ws)).data
    assert made.session_id == "build" and made.status == "ready" and made.working_dir == str(ws)
    r = c.bash.exec(command="head -c 100000 /dev/zero | tr '\\0' a", session_id="build",
                    max_output_length=1000)
    assert "bytes omitted" in r.data.stdout and len(r.data.stdout) < 1100
    assert r.data.offset == 100000
    listed = {s.session_id: s for s in c.bash.sessions().data}
    assert listed["build"].command_count == 1
    assert c.bash.close_session("build").success
    assert "build" not in {s.session_id for s in c.bash.sessions().data}
    r = requests.post(f"{a.url}/v1/bash/exec", json={})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "command"]
    r = requests.post(f"{a.url}/v1/bash/output", json={"session_id": "nope"})
    assert r.status_code == 200 and not r.json()["success"]
    r = requests.post(f"{a.url}/v1/bash/kill", json={"session_id": "x", "signal": "SIGNOPE"})
    assert r.status_code == 422
    r = requests.post(f"{a.url}/v1/bash/exec", json={"command": "true", "exec_dir": "rel"})
    assert r.status_code == 422


@pytest.mark.parametrize("field", ["timeout", "hard_timeout"])
def test_a_timeout_beyond_a_billion_seconds_is_refused(sb, field):
    # 1e30 seconds in milliseconds does not fit the timer's integer.
    _, a, _ = sb
    r = requests.post(f"{a.url}/v1/bash/exec", json={"command": "true", field: 1e30})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]
    r = requests.post(f"{a.url}/v1/bash/exec", json={"command": "true", field: 1e9})
    assert r.status_code == 200, r.text


def test_exec_without_a_session_leaves_no_session_behind(agent):  # noqa: F811
    # Each call without a session_id made a session nobody closed: the 101st
    # got "too many bash sessions".
    a = agent("--max-sessions=10")
    c = Sandbox(base_url=a.url)
    for i in range(150):
        r = c.bash.exec(command=f"echo {i}")
        assert r.success and r.data.stdout == f"{i}\n", r
    assert c.bash.sessions().data == []
    # One named in a later call lasts, as any named one.
    sid = c.bash.exec(command="true").data.session_id
    assert c.bash.exec(command="echo again", session_id=sid).data.stdout == "again\n"
    assert [s.session_id for s in c.bash.sessions().data] == [sid]


def test_async_one_call_sessions_stay_readable_and_make_room(agent):  # noqa: F811
    a = agent("--max-sessions=10")
    c = Sandbox(base_url=a.url)
    ids = []
    for i in range(30):
        r = c.bash.exec(command=f"echo {i}", async_mode=True)
        assert r.success, r  # the oldest finished one made room
        ids.append(r.data.session_id)
    o = c.bash.output(session_id=ids[-1], wait=True, wait_timeout=5).data
    deadline = time.monotonic() + 5
    while o.command.status == "running":
        assert time.monotonic() < deadline
        o = c.bash.output(session_id=ids[-1], wait=True, wait_timeout=1).data
    assert o.stdout == "29\n"
    assert c.bash.output(session_id=ids[-1], offset=1).data.stdout == "9\n"  # read again
    assert len(c.bash.sessions().data) <= 10


def test_exec_does_not_source_bashrc(agent, tmp_path):  # noqa: F811
    # bash, given a socket as stdin and no SHLVL (the agent as PID 1), took
    # itself for a command run by rshd and sourced ~/.bashrc every time.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("echo SOURCED-BASHRC\n")
    env = {k: v for k, v in os.environ.items() if k != "SHLVL"}
    env["HOME"] = str(home)
    a = agent(env=env)
    r = Sandbox(base_url=a.url).bash.exec(command="echo plain; echo ${SHLVL:-unset} >&2")
    assert r.data.stdout == "plain\n", r.data.stdout


# ---- process trees: children that leave their group with setsid ----


def test_hard_timeout_kills_setsid_children_and_answers_on_time(sb):
    c, _, _ = sb
    t0 = time.monotonic()
    # The setsid'd sleep left the group and held the pipes: it survived,
    # and the answer came only at `timeout`.
    r = c.bash.exec(command="setsid sleep 341 & setsid sh -c 'sleep 342' & sleep 343",
                    hard_timeout=1, timeout=20)
    took = time.monotonic() - t0
    assert r.data.status == "timed_out", r.data
    assert took < 4, took
    wait_gone(["sleep 341", "sleep 342", "sleep 343"])


def test_kill_and_session_close_end_setsid_children(sb):
    c, _, _ = sb
    r = c.bash.exec(command="setsid sleep 344 & exec sleep 345", async_mode=True)
    sid = r.data.session_id
    deadline = time.monotonic() + 5
    while not any("sleep 344" in p[3] for p in processes()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert c.bash.kill(session_id=sid, signal="SIGKILL").success
    wait_gone(["sleep 344", "sleep 345"])

    made = c.bash.create_session(session_id="trees").data
    r = c.bash.exec(command="(setsid sleep 346 &); sleep 347", session_id=made.session_id,
                    async_mode=True)
    deadline = time.monotonic() + 5
    while not any("sleep 346" in p[3] for p in processes()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert c.bash.close_session("trees").success
    wait_gone(["sleep 346", "sleep 347"])
