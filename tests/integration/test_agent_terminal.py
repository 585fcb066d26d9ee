"""sbx-agent's WebSocket terminal, /v1/shell/ws, with the python `websockets`
client: the JSON frames, re-attaching, resizing, and the end of a shell."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import assert_no_zombies_below
from test_agent import agent  # noqa: F401 - the fixture


def clean_home(tmp_path) -> dict:
    """The terminal runs an interactive bash, which reads ~/.bashrc: the
    host's could do anything (a version manager's rehash, say). A home of
    its own keeps the test about the agent."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dict(os.environ, HOME=str(home))


def frames_until(ws, pred, timeout=30.0):
    """Reads frames until pred(all output so far) holds; returns the output."""
    out = ""
    deadline = time.monotonic() + timeout
    while not pred(out):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; output so far: {out!r}"
        try:
            m = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            pytest.fail(f"no frame within {timeout} s; output so far: {out!r}")
        if m["type"] == "output":
            out += m["data"]
    return out


def test_terminal_runs_commands_and_reattaches(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", env=clean_home(tmp_path))
    url = f"ws://127.0.0.1:{a.port}/v1/shell/ws"
    with connect(url) as ws:
        first = json.loads(ws.recv(timeout=15))
        assert first["type"] == "session_id"
        sid = first["data"]
        assert json.loads(ws.recv(timeout=15))["type"] == "ready"
        ws.send(json.dumps({"type": "input", "data": "export MARK=kept; pwd\n"}))
        out = frames_until(ws, lambda o: str(tmp_path) in o)
        # Resized, the shell sees the new size. Readline reads the size and
        # writes it back before each prompt, so a resize landing between the
        # two is undone by the shell; `stty` putting the old size back plays
        # that here, and the agent must put the asked size back before the
        # shell's next output reaches the client.
        ws.send(json.dumps({"type": "resize", "data": {"cols": 132, "rows": 41}}))
        ws.send(json.dumps({"type": "input",
                            "data": "stty rows 24 cols 80; echo undone; read _; "
                                    "echo size-$(stty size); echo é-$MARK\n"}))
        frames_until(ws, lambda o: "undone\r\n" in o)
        ws.send(json.dumps({"type": "input", "data": "\n"}))
        out = frames_until(ws, lambda o: "é-kept\r\n" in o)
        assert re.search(r"size-(\d+ \d+)\r\n", out).group(1) == "41 132", repr(out)
        # A size set inside the sandbox that is not the one before the
        # resize stands.
        ws.send(json.dumps({"type": "input", "data": "stty rows 50 cols 100; echo size-$(stty size)-set\n"}))
        out = frames_until(ws, lambda o: re.search(r"size-\d+ \d+-set\r\n", o))
        assert "size-50 100-set" in out, out
        ws.send(json.dumps({"type": "bogus"}))
        m = json.loads(ws.recv(timeout=15))
        while m["type"] == "output":
            m = json.loads(ws.recv(timeout=15))
        assert m["type"] == "error"
    # The terminal outlives the connection: attach again, state and all.
    with connect(f"{url}?session_id={sid}") as ws:
        assert json.loads(ws.recv(timeout=15)) == {"type": "session_id", "data": sid}
        assert json.loads(ws.recv(timeout=15))["type"] == "terminal_restored"
        ws.send(json.dumps({"type": "input", "data": "echo again-$MARK\n"}))
        frames_until(ws, lambda o: "again-kept" in o)
    # An unknown session is an error frame, then a policy close.
    with connect(f"{url}?session_id=nope") as ws:
        assert json.loads(ws.recv(timeout=15)) == {"type": "error", "data": "Session not found"}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)
        assert ws.close_code == 1008


def test_exiting_the_shell_closes_the_socket_and_leaves_no_zombie(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", env=clean_home(tmp_path))
    with connect(f"ws://127.0.0.1:{a.port}/v1/shell/ws") as ws:
        ws.recv(timeout=15)
        ws.recv(timeout=15)
        ws.send(json.dumps({"type": "input", "data": "echo bye; exit 0\n"}))
        out = ""
        with pytest.raises(ConnectionClosed):
            while True:
                m = json.loads(ws.recv(timeout=10))
                out += m.get("data", "") if m["type"] == "output" else ""
        assert "bye" in out and ws.close_code == 1000
    time.sleep(0.2)
    assert_no_zombies_below(a.proc.pid)


def test_big_output_reaches_a_slow_viewer_whole(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", env=clean_home(tmp_path))
    with connect(f"ws://127.0.0.1:{a.port}/v1/shell/ws", max_size=None) as ws:
        ws.recv(timeout=15)
        ws.recv(timeout=15)
        ws.send(json.dumps({"type": "input",
                            "data": "stty -echo; seq 1 200000; echo END-OF-SEQ\n"}))
        time.sleep(1.0)  # fall behind: the agent must hold the shell back, not drop
        out = frames_until(ws, lambda o: "200000\r\nEND-OF-SEQ" in o, timeout=60)
    # Without the terminal's control sequences (bash's bracketed-paste mode).
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out).replace("\r", "")
    nums = [line for line in text.split("\n") if line.isdigit()]
    assert nums == [str(i) for i in range(1, 200001)]
