"""sbx-agent's file watching on inotify: create, poll (with long-polling),
Server-Sent Events, wait for one path, stop; through the official SDK."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from agent_sandbox import Sandbox

from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def sb(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return Sandbox(base_url=a.url), a, tmp_path


def events_until(c, wid, pred, timeout=10):
    got, cursor = [], 0
    deadline = time.monotonic() + timeout
    while not pred(got):
        assert time.monotonic() < deadline, got
        r = c.file.watch_poll(wid, since=cursor, timeout=2)
        assert r["success"], r
        got += r["data"]["events"]
        cursor = r["data"]["cursor"]
    return got


def test_recursive_watch_sees_what_happens_in_order(sb):
    c, _, ws = sb
    (ws / "proj").mkdir()
    w = c.file.watch_create(path=str(ws / "proj"), debounce=100)
    assert w["success"], w
    wid = w["data"]["watcher_id"]
    (ws / "proj/a.txt").write_text("one")
    (ws / "proj/sub/deeper").mkdir(parents=True)       # a new tree, watched as it appears
    # inotify has no recursive watches: the agent adds one per new folder when
    # it hears of it. Give it that moment, as any real workload does.
    events_until(c, wid, lambda e: any(x["path"].endswith("/sub") for x in e))
    time.sleep(0.2)
    (ws / "proj/sub/deeper/b.txt").write_text("two")
    os.rename(ws / "proj/a.txt", ws / "proj/c.txt")
    os.chmod(ws / "proj/c.txt", 0o600)
    (ws / "proj/sub/deeper/b.txt").unlink()
    (ws / "proj/.git").mkdir()                        # excluded by default
    (ws / "proj/.git/HEAD").write_text("ref")
    got = events_until(c, wid, lambda e: any(x["type"] == "remove" for x in e)
                       and any(x["type"] == "chmod" for x in e))
    seen = [(e["type"], os.path.relpath(e["path"], ws / "proj")) for e in got]
    assert ("create", "a.txt") in seen and ("write", "a.txt") in seen
    assert ("create", "sub") in seen
    assert ("create", "sub/deeper/b.txt") in seen
    assert ("rename", "a.txt") in seen and ("create", "c.txt") in seen
    assert ("chmod", "c.txt") in seen and ("remove", "sub/deeper/b.txt") in seen
    assert not [s for s in seen if s[1].startswith(".git")]
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    listed = c.file.watch_list()["data"]["watchers"]
    assert [x["watcher_id"] for x in listed] == [wid]
    assert c.file.watch_stop(wid)["success"]
    assert c.file.watch_list()["data"]["watchers"] == []


def test_writes_are_debounced_into_one_event(sb):
    c, _, ws = sb
    wid = c.file.watch_create(path=str(ws), debounce=300)["data"]["watcher_id"]
    with open(ws / "log.txt", "w") as f:
        for i in range(50):
            f.write(f"line {i}\n")
            f.flush()
            time.sleep(0.002)
    time.sleep(0.8)
    got = c.file.watch_poll(wid, since=0)["data"]["events"]
    writes = [e for e in got if e["type"] == "write"]
    assert len(writes) == 1, got


def test_long_poll_wakes_on_the_first_event(sb):
    c, _, ws = sb
    wid = c.file.watch_create(path=str(ws), debounce=0)["data"]["watcher_id"]
    threading.Timer(0.5, lambda: (ws / "late.txt").write_text("x")).start()
    t0 = time.monotonic()
    r = c.file.watch_poll(wid, since=0, timeout=10)
    assert 0.3 < time.monotonic() - t0 < 5
    assert r["data"]["events"][0]["type"] == "create"
    assert r["data"]["events"][0]["path"] == str(ws / "late.txt")


def test_server_sent_events_stream_and_resume(sb):
    c, a, ws = sb
    wid = c.file.watch_create(path=str(ws), debounce=0)["data"]["watcher_id"]
    (ws / "first.txt").write_text("1")
    with requests.get(f"{a.url}/v1/file/watch/{wid}/events", stream=True, timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = r.iter_lines(decode_unicode=True)
        ids = []
        threading.Timer(0.3, lambda: (ws / "second.txt").write_text("2")).start()
        for line in lines:
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if line.startswith("data: ") and "second.txt" in line:
                break
    assert ids[0] == 1
    # A reconnecting client resumes after the last id it saw.
    with requests.get(f"{a.url}/v1/file/watch/{wid}/events", stream=True, timeout=10,
                      headers={"Last-Event-ID": str(ids[-1])}) as r:
        (ws / "third.txt").write_text("3")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                assert int(line[4:]) > ids[-1]
            if line.startswith("data: ") and "third.txt" in line:
                break


def test_wait_for_one_path(sb):
    c, _, ws = sb
    threading.Timer(0.4, lambda: (ws / "ready.flag").write_text("ok")).start()
    r = c.file.watch_wait(path=str(ws / "ready.flag"), timeout=10, event_types=["create"])
    assert r["success"] and r["data"]["event"]["type"] == "create"
    r = c.file.watch_wait(path=str(ws / "never.flag"), timeout=1)
    assert not r["success"] and r["data"]["timed_out"]
    assert c.file.watch_list()["data"]["watchers"] == []  # waits leave nothing behind


def test_watch_errors(sb):
    c, a, ws = sb
    r = requests.post(f"{a.url}/v1/file/watch", json={})
    assert r.status_code == 422
    r = requests.post(f"{a.url}/v1/file/watch", json={"path": str(ws / "no/such/dir/x")})
    assert not r.json()["success"]
    r = requests.post(f"{a.url}/v1/file/watch/nope/poll", json={})
    assert not r.json()["success"]
