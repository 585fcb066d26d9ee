"""Shutdown hooks (/v1/sandbox/hooks) through the official SDK: registered,
listed in the order they run, removed; run on SIGTERM by priority, equal
priorities side by side, a slow one killed at its timeout with what it
started, and the agent still stops cleanly."""

from __future__ import annotations

import signal
import time

import pytest
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

from conftest import wait_gone
from test_agent import agent  # noqa: F401 - the fixture


def test_hooks_are_registered_listed_and_removed(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", "--shutdown-hook=echo from-env")
    c = Sandbox(base_url=a.url).sandbox
    assert c.register_hook(name="late", command="true", priority=200).success
    r = c.register_hook(name="early", command="echo hi", priority=5, timeout=2.5)
    assert r.success and r.data.source == "api" and r.data.timeout == 2.5
    hooks = c.list_hooks().data
    assert [(h.name, h.priority, h.source) for h in hooks] == [
        ("early", 5, "api"), ("env", 100, "env"), ("late", 200, "api")]
    assert c.list_hooks(event="startup").data == []
    # The same name replaces the hook.
    c.register_hook(name="late", command="echo again", priority=1)
    assert [h.name for h in c.list_hooks().data] == ["late", "early", "env"]
    assert c.remove_hook("late").success
    with pytest.raises(ApiError) as e:
        c.remove_hook("late")
    assert e.value.status_code == 404
    with pytest.raises(ApiError) as e:
        c.remove_hook("env")
    assert e.value.status_code == 403
    assert not c.register_hook(name="env", command="true").success
    for bad in ({"name": "no spaces", "command": "x"}, {"name": "x", "command": ""},
                {"name": "x", "command": "x", "event": "startup"},
                {"name": "x", "command": "x", "timeout": 0}):
        with pytest.raises(ApiError) as e:
            c.register_hook(**bad)
        assert e.value.status_code == 422


def test_sigterm_runs_the_hooks_in_priority_order_then_stops(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", "--shutdown-hook=echo env >> order.txt")
    c = Sandbox(base_url=a.url).sandbox
    c.register_hook(name="first", command="echo first >> order.txt", priority=10)
    # Two of one priority run side by side: the slower one ends last.
    c.register_hook(name="slow", command="sleep 0.5; echo slow >> order.txt", priority=50)
    c.register_hook(name="quick", command="echo quick >> order.txt", priority=50)
    # One that overstays its timeout is killed, with what it started.
    c.register_hook(name="stuck", command="sleep 300 & sleep 301; echo never >> order.txt",
                    priority=60, timeout=1)
    started = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(20) == 0
    took = time.monotonic() - started
    a.proc.stderr.read()
    assert (tmp_path / "order.txt").read_text().split() == ["first", "quick", "slow", "env"]
    assert 1.4 < took < 10
    # Killed with their group: gone once the kernel has run the kill (a
    # loaded machine may take a moment to).
    wait_gone(["sleep 300", "sleep 301"])
