"""`sbx-agent run -- CMD`: the agent as a sandbox's init process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from conftest import assert_no_sanitizer_report, binary, zombies_below


def start(*cmd, env=None, wait_listening=True):
    p = subprocess.Popen([str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0",
                          "--log-format=json", "--stop-grace-ms=5000", "run", "--", *cmd],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env or os.environ.copy())
    port = None
    while wait_listening and port is None:
        line = p.stderr.readline()
        assert line, f"agent ended early: {p.wait()}"
        entry = json.loads(line)
        if entry["msg"] == "listening":
            port = entry["port"]
    return p, f"http://127.0.0.1:{port}"


def finish(p, timeout=15, stderr_out=None):
    code = p.wait(timeout)
    err = p.stderr.read()
    assert_no_sanitizer_report(err)
    if stderr_out is not None:
        stderr_out.append(err)
    return code


def test_exit_status_passes_through_and_api_serves_meanwhile():
    p, url = start("sh", "-c", "sleep 1; exit 7")
    assert requests.get(f"{url}/v1/ping", timeout=5).json()["message"] == "pong"
    assert finish(p) == 7
    # The API stopped with the command.
    try:
        requests.get(f"{url}/v1/ping", timeout=2)
        raise AssertionError("the API still answers after the command ended")
    except requests.ConnectionError:
        pass


def test_death_by_signal_is_128_plus_signal():
    p, _ = start("sh", "-c", "sleep 0.2; kill -KILL $$")
    assert finish(p) == 128 + signal.SIGKILL


def test_signals_are_forwarded_to_the_command():
    p, _ = start("sh", "-c", "trap 'exit 42' TERM; trap 'echo usr1' USR1; "
                 "while :; do sleep 0.05; done")
    time.sleep(0.5)
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    assert finish(p) == 42
    assert "usr1" in p.stdout.read()


def test_orphans_are_reaped():
    """Processes orphaned below the command are reparented to the supervisor
    (PID 1 in a pod, a subreaper here) and must not stay zombies."""
    p, _ = start("sh", "-c", "for i in 1 2 3 4 5 6; do (sleep 0.1 &); done; sleep 1.5")
    time.sleep(1.0)
    assert zombies_below(p.pid) == []
    assert finish(p) == 0


def test_leftovers_in_the_command_group_are_stopped():
    # The command ends at once, maybe before the API is up: no wait for it.
    p, _ = start("sh", "-c", "sleep 31.5 & exit 3", wait_listening=False)
    assert finish(p) == 3
    time.sleep(0.2)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                assert b"31.5" not in (d / "cmdline").read_bytes(), "a leftover survived"
            except OSError:
                pass


def test_missing_command_is_127():
    p, _ = start("no-such-command-sbx", wait_listening=False)
    err = []
    assert finish(p, stderr_out=err) == 127
    assert "cannot run no-such-command-sbx: No such file or directory" in err[0]


def test_run_without_a_command_is_the_agent_alone():
    p = subprocess.Popen([str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0", "run"],
                         stderr=subprocess.PIPE, text=True)
    assert "listening" in p.stderr.readline()
    p.send_signal(signal.SIGTERM)
    assert finish(p) == 0
