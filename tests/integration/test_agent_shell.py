"""sbx-agent's /v1/shell: persistent PTY sessions, driven by the official SDK."""

from __future__ import annotations

import time

import pytest
import requests
from agent_sandbox import Sandbox

from conftest import assert_no_zombies_below, processes, wait_gone, zombies_below
from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def sh(agent, tmp_path):  # noqa: F811
    # As in a pod: the agent is the init of a sandbox whose main process is
    # 'sleep'; its supervisor reaps whatever is orphaned below it.
    a = agent(f"--workspace={tmp_path}", "--max-sessions=4", "run", "--", "sleep", "3600")
    return Sandbox(base_url=a.url).shell, a, tmp_path


def test_a_session_keeps_cd_and_export(sh):
    shell, _, ws = sh
    r = shell.exec_command(command="cd /usr && export GREETING=hi-there")
    assert r.data.status == "completed" and r.data.exit_code == 0
    sid = r.data.session_id
    r = shell.exec_command(id=sid, command="pwd; echo $GREETING")
    assert r.data.output == "/usr\nhi-there\n"
    # A new session starts in the workspace, without the other's variables.
    r = shell.exec_command(command='pwd; echo "[$GREETING]"')
    assert r.data.output == f"{ws}\n[]\n" and r.data.session_id != sid


def test_sessions_need_no_writable_folder(agent, tmp_path):  # noqa: F811
    """A command's script lives in memory: a pod with a read-only root file
    system (and a TMPDIR that cannot be written) still has shell sessions,
    and nothing is left in any folder."""
    import os
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    env = dict(os.environ, TMPDIR=str(ro / "missing"))
    a = agent(f"--workspace={tmp_path}", env=env)
    shell = Sandbox(base_url=a.url).shell
    r = shell.exec_command(command="cd /usr && export N=$((6 * 7))")
    assert r.data.status == "completed", r
    r = shell.exec_command(id=r.data.session_id, command="echo $N $PWD\necho 'two lines'")
    assert r.data.output == "42 /usr\ntwo lines\n"
    assert list(ro.iterdir()) == []
    # Code runs from a file in TMPDIR: refused with the reason, the agent stays.
    r = requests.post(a.url + "/v1/code/execute", json={"language": "python", "code": "1"},
                      timeout=10).json()
    assert r["success"] is False and f"cannot make {ro / 'missing'}" in r["message"]
    assert shell.exec_command(command="echo still").data.output == "still\n"


def test_exit_codes_and_stderr(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="echo out; echo err >&2; exit_with() { return $1; }; "
                                   "exit_with 9")
    assert r.data.exit_code == 9 and r.data.output == "out\nerr\n"
    r = shell.exec_command(command="ls /definitely/not/here")
    assert r.data.status == "completed" and r.data.exit_code == 2
    assert "No such file or directory" in r.data.output


def test_exec_dir_and_multiline_commands(sh):
    shell, _, ws = sh
    (ws / "sub dir").mkdir()
    r = shell.exec_command(command="pwd\nfor i in 1 2; do\n  echo line $i\ndone",
                           exec_dir=str(ws / "sub dir"))
    assert r.data.output == f"{ws / 'sub dir'}\nline 1\nline 2\n"
    long = "echo " + "y" * 10000
    assert shell.exec_command(command=long).data.output == "y" * 10000 + "\n"


def test_async_exec_then_wait_and_view(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="for i in 1 2 3; do echo tick $i; sleep 0.2; done",
                           async_mode=True)
    assert r.data.status == "running" and r.data.exit_code is None
    sid = r.data.session_id
    assert shell.wait_for_process(id=sid, seconds=10).data.status == "completed"
    v = shell.view(id=sid)
    assert v.data.output == "tick 1\ntick 2\ntick 3\n" and v.data.exit_code == 0
    assert v.data.console[-1].command.startswith("for i in")


def test_timeout_returns_running_and_the_command_goes_on(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="sleep 1; echo done", timeout=0.2)
    assert r.data.status == "running"
    assert shell.wait_for_process(id=r.data.session_id, seconds=10).data.status == "completed"
    assert shell.view(id=r.data.session_id).data.output == "done\n"


def test_hard_timeout_kills_the_whole_tree(sh):
    shell, a, _ = sh
    t0 = time.monotonic()
    r = shell.exec_command(command="sh -c 'sleep 330 & sleep 331 & wait'", hard_timeout=1)
    assert r.data.status == "hard_timeout"
    assert 0.9 < time.monotonic() - t0 < 10
    wait_gone(["sleep 330", "sleep 331"])
    assert zombies_below(a.proc.pid) == [], "zombies"
    # The session is still usable.
    assert shell.exec_command(id=r.data.session_id, command="echo alive").data.output == "alive\n"


def test_no_change_timeout(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="echo start; sleep 30", no_change_timeout=1)
    assert r.data.status == "no_change_timeout" and r.data.output == "start\n"
    k = shell.kill_process(id=r.data.session_id)
    assert k.data.status == "terminated"


def test_kill_and_write(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="read name; echo hello $name", async_mode=True)
    sid = r.data.session_id
    time.sleep(0.3)
    shell.write_to_process(id=sid, input="world", press_enter=True)
    shell.wait_for_process(id=sid, seconds=5)
    assert shell.view(id=sid).data.output == "hello world\n"

    r = shell.exec_command(id=sid, command="sleep 332", async_mode=True)
    time.sleep(0.3)
    assert shell.kill_process(id=sid).data.status == "terminated"
    shell.wait_for_process(id=sid, seconds=5)
    wait_gone(["sleep 332"])
    assert shell.exec_command(id=sid, command="echo next").data.output == "next\n"


def test_output_is_truncated_at_30000_characters(sh):
    shell, _, _ = sh
    r = shell.exec_command(command="head -c 50000 /dev/zero | tr '\\0' a; echo; echo END")
    assert len(r.data.output) < 30100 and "characters truncated" in r.data.output
    assert r.data.output.startswith("aaaa") and r.data.output.endswith("END\n")
    full = shell.exec_command(command="head -c 50000 /dev/zero | tr '\\0' b", truncate=False)
    assert full.data.output == "b" * 50000


def test_sessions_lifecycle_and_limit(sh):
    shell, a, ws = sh
    created = shell.create_session(id="named", exec_dir=str(ws))
    assert created.data.session_id == "named" and created.data.working_dir == str(ws)
    assert shell.exec_command(id="named", command="pwd").data.output == f"{ws}\n"
    listed = shell.list_sessions().data.sessions
    assert listed["named"].working_dir == str(ws) and listed["named"].status == "idle"
    assert requests.delete(f"{a.url}/v1/shell/sessions/named", timeout=5).json()["success"]
    assert "named" not in shell.list_sessions().data.sessions
    for i in range(4):
        shell.create_session(id=f"s{i}")
    over = requests.post(f"{a.url}/v1/shell/exec", json={"command": "true"}, timeout=5)
    assert over.status_code == 200 and over.json()["success"] is False
    assert "too many shell sessions" in over.json()["message"]
    assert requests.delete(f"{a.url}/v1/shell/sessions", timeout=5).json()["success"]
    assert shell.list_sessions().data.sessions == {}
    time.sleep(0.3)
    assert zombies_below(a.proc.pid) == []


def test_invalid_requests_are_422_and_failures_never_5xx(sh):
    _, a, _ = sh
    r = requests.post(f"{a.url}/v1/shell/exec", json={"id": "x"}, timeout=5)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "command"]
    r = requests.post(f"{a.url}/v1/shell/exec", json={"command": "true", "exec_dir": "rel"},
                      timeout=5)
    assert r.status_code == 422
    r = requests.post(f"{a.url}/v1/shell/view", json={"id": "nope"}, timeout=5)
    assert r.status_code == 200 and r.json()["success"] is False


def test_session_update_and_stats(sh):
    shell, _, _ = sh
    shell.create_session(id="u")
    shell.update_session(id="u", no_change_timeout=1)
    r = shell.exec_command(id="u", command="echo go; sleep 20")
    assert r.data.status == "no_change_timeout"
    stats = shell.get_session_stats().data
    assert stats.total_sessions == 1 and stats.active_sessions == 1
    assert stats.max_sessions == 4 and stats.usage_ratio == 0.25
    shell.kill_process(id="u")


def test_exit_in_a_command_reports_its_status_and_ends_the_session(agent):  # noqa: F811
    a = agent()
    c = Sandbox(base_url=a.url)
    r = c.shell.exec_command(command="exit 3")
    assert r.data.exit_code == 3 and r.data.status == "completed"
    sid = r.data.session_id
    # The shell is gone and reaped.
    assert_no_zombies_below(a.proc.pid)
    r = c.shell.exec_command(id=sid, command="echo again")
    assert r.data.exit_code == 0 and r.data.output.strip() == "again"


def test_a_timeout_beyond_a_billion_seconds_is_refused(sh):
    _, a, _ = sh
    r = requests.post(f"{a.url}/v1/shell/exec", json={"command": "true", "hard_timeout": 1e30})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "hard_timeout"]


def test_a_pipe_closed_early_ends_the_writer_by_sigpipe(sh):
    # The shell used to inherit the agent's ignored SIGPIPE: `yes | head -1`
    # printed "Broken pipe" and `yes` exited 1 instead of dying by the signal.
    shell, _, _ = sh
    r = shell.exec_command(command='yes | head -1; echo "status=${PIPESTATUS[0]}"')
    assert r.data.output == "y\nstatus=141\n", r.data.output
    r = shell.exec_command(command="trap -p; ls -la / | head -1 >/dev/null; echo ok")
    assert r.data.output == "ok\n", r.data.output  # no handlers set, no write error


def test_setsid_children_end_with_hard_timeout_and_with_their_session(sh):
    # A child that called setsid left the foreground group: it survived the
    # hard timeout, and the session's deletion.
    shell, a, _ = sh
    r = shell.exec_command(command="setsid sleep 332 & (setsid sleep 333 &); sleep 334",
                           hard_timeout=1)
    assert r.data.status == "hard_timeout"
    wait_gone(["sleep 332", "sleep 333", "sleep 334"])
    sid = r.data.session_id
    # The shell itself lives on.
    assert shell.exec_command(id=sid, command="echo alive").data.output == "alive\n"
    # A background job with setsid, left running, ends with its session.
    r = shell.exec_command(id=sid, command="(setsid sleep 335 &); echo started")
    assert r.data.output == "started\n"
    deadline = time.monotonic() + 5
    while not any("sleep 335" in p[3] for p in processes()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert requests.delete(f"{a.url}/v1/shell/sessions/{sid}", timeout=10).json()["success"]
    wait_gone(["sleep 335"])
    assert zombies_below(a.proc.pid) == [], "zombies"
