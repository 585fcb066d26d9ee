"""/v1/sandbox/observe: live samples of the sandbox's cgroup, disks and
processes; sampling sessions whose reports are gzip'd JSON Lines; reports
bounded in number and kept across a restart."""

from __future__ import annotations

import gzip
import json
import os
import time

import requests

from test_agent import agent  # noqa: F401 - the fixture

CGROUP_FIELDS = {
    "cpu_usage_pct", "cpu_usage_usec", "cpu_nr_periods", "cpu_nr_throttled",
    "cpu_throttled_usec", "mem_current_bytes", "mem_max_bytes", "mem_usage_pct", "oom",
    "oom_kill", "memory_anon_bytes", "memory_file_bytes", "memory_shmem_bytes",
    "memory_slab_bytes"}


def wait_for(what, check, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_live_sample(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--observe-dir={tmp_path / 'obs'}")
    u = f"{a.url}/v1/sandbox/observe"
    r = requests.get(f"{u}/live", params={"top_rows": 1000}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["success"]
    snap = body["data"]
    assert snap["mode"] == "off" and snap["recent_events"] == []
    cg = snap["cgroup"]
    assert set(cg) == CGROUP_FIELDS
    assert cg["cpu_usage_usec"] > 0 and cg["mem_current_bytes"] > 0
    assert cg["cpu_usage_pct"] is None  # a rate needs a reading before
    disk = snap["disk"][0]
    assert disk["path"] == str(tmp_path)
    st = os.statvfs(tmp_path)
    assert disk["total_bytes"] == st.f_blocks * st.f_frsize
    assert disk["used_bytes"] + disk["free_bytes"] <= disk["total_bytes"]
    assert 0 <= disk["usage_pct"] <= 100
    rows = snap["top_processes"]
    assert [p["rss_bytes"] for p in rows] == sorted((p["rss_bytes"] for p in rows), reverse=True)
    me = [p for p in rows if p["pid"] == a.proc.pid]
    assert me and me[0]["comm"] == "sbx-agent" and me[0]["ppid"] == os.getpid()
    assert me[0]["fds"] >= 3 and me[0]["threads"] >= 1 and me[0]["state"] in "RS"
    assert abs(me[0]["rss_mib"] * 1048576 - me[0]["rss_bytes"]) < 1
    # The second sample has a CPU rate; top_rows bounds the rows.
    snap = requests.get(f"{u}/live", params={"top_rows": 2}, timeout=10).json()["data"]
    assert isinstance(snap["cgroup"]["cpu_usage_pct"], float)
    assert len(snap["top_processes"]) == 2
    for bad in ("x", "-1", "1001", ""):
        assert requests.get(f"{u}/live", params={"top_rows": bad}, timeout=10).status_code == 422


def test_a_capture_session_ends_in_a_report(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--observe-dir={tmp_path / 'obs'}")
    u = f"{a.url}/v1/sandbox/observe"
    start = {"interval_seconds": 0.2, "idempotency_key": "run-1"}
    r = requests.post(f"{u}/start", json=start, timeout=10).json()
    assert r["success"]
    s = r["data"]
    assert s["mode"] == "capture" and s["interval_seconds"] == 0.2 and s["ends_at"] is None
    # The same key is the same session; another start is refused.
    assert requests.post(f"{u}/start", json=start, timeout=10).json()["data"] == s
    again = requests.post(f"{u}/start", json={}, timeout=10).json()
    assert not again["success"] and s["session_id"] in again["message"]
    samples = os.path.join(s["runtime_dir"], "samples.jsonl")

    def lines():
        with open(samples) as f:
            return [ln for ln in f.read().splitlines() if ln]

    wait_for("three samples", lambda: len(lines()) >= 3)
    st = requests.get(f"{u}/status", timeout=10).json()["data"]
    assert st["running"] and st["session_id"] == s["session_id"] and st["last_sample_at"]
    r = requests.post(f"{u}/stop", json={"session_id": s["session_id"]}, timeout=30).json()
    assert r["data"] == {"session_id": s["session_id"], "stopped": True, "report_ready": True}
    assert not requests.get(f"{u}/status", timeout=10).json()["data"]["running"]
    assert not requests.post(f"{u}/stop", json={}, timeout=10).json()["success"]

    reports = requests.get(f"{u}/reports", timeout=10).json()["data"]
    assert len(reports) == 1
    info = reports[0]
    assert info["session_id"] == s["session_id"] and info["reason"] == "session_stopped"
    r = requests.get(f"{u}/reports/{info['report_id']}", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/gzip"
    assert len(r.content) == info["size_bytes"]
    records = [json.loads(ln) for ln in gzip.decompress(r.content).decode().splitlines()]
    head = records[0]
    assert head["record"] == "report" and head["report_id"] == info["report_id"]
    assert head["mode"] == "capture" and head["ended_at"] and not head["truncated"]
    got = [x for x in records if x["record"] == "sample"]
    assert len(got) >= len(lines()) - 1 >= 2
    assert all(set(x["cgroup"]) == CGROUP_FIELDS and x["top_processes"] for x in got)
    events = [x["type"] for x in records if x["record"] == "event"]
    assert events == ["session_started", "session_stopped"]

    deleted = requests.delete(f"{u}/reports/{info['report_id']}", timeout=10).json()
    assert deleted["data"]["report_id"] == info["report_id"]
    assert not os.path.exists(info["path"])
    assert requests.get(f"{u}/reports/{info['report_id']}", timeout=10).status_code == 404
    assert requests.delete(f"{u}/reports/{info['report_id']}", timeout=10).status_code == 404


def test_a_guardrail_session_ends_at_its_duration(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--observe-dir={tmp_path / 'obs'}")
    u = f"{a.url}/v1/sandbox/observe"
    s = requests.post(f"{u}/start", json={"mode": "guardrail", "duration_seconds": 1},
                      timeout=10).json()["data"]
    assert s["mode"] == "guardrail" and s["interval_seconds"] == 5 and s["ends_at"]
    wait_for("the session to end",
             lambda: not requests.get(f"{u}/status", timeout=10).json()["data"]["running"])
    # Guardrail samples lean (no process rows) and makes no report at its end.
    with open(os.path.join(s["runtime_dir"], "samples.jsonl")) as f:
        first = json.loads(f.readline())
    assert first["top_processes"] == [] and first["disk"]
    assert requests.get(f"{u}/reports", timeout=10).json()["data"] == []
    events = requests.get(f"{u}/live", timeout=10).json()["data"]["recent_events"]
    assert [e["type"] for e in events] == ["session_started", "session_stopped"]
    assert "duration" in events[1]["message"]
    # The ended session can still be exported.
    r = requests.post(f"{u}/export", json={"session_id": s["session_id"], "reason": "audit"},
                      timeout=30).json()
    assert r["success"] and r["data"]["session_id"] == s["session_id"]
    assert r["data"]["reason"] == "audit"


def test_export_without_a_session_and_bad_requests(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--observe-dir={tmp_path / 'obs'}")
    u = f"{a.url}/v1/sandbox/observe"
    r = requests.post(f"{u}/export", json={"idempotency_key": "e1"}, timeout=30).json()
    assert r["success"] and r["data"]["session_id"] is None and r["data"]["reason"] == "manual"
    assert requests.post(f"{u}/export", json={"idempotency_key": "e1"},
                         timeout=30).json()["data"] == r["data"]
    with gzip.open(r["data"]["path"], "rt") as f:
        records = [json.loads(ln) for ln in f]
    assert [x["record"] for x in records] == ["report", "sample"]
    r = requests.post(f"{u}/export", json={"session_id": "nope"}, timeout=10).json()
    assert not r["success"] and "nope" in r["message"]
    for body in ({"interval_seconds": 1e30}, {"interval_seconds": 0.01},
                 {"interval_seconds": "1"}, {"duration_seconds": 0},
                 {"duration_seconds": 1.5}, {"mode": "watch"}, {"include_disk": "yes"},
                 {"idempotency_key": "k" * 129}):
        assert requests.post(f"{u}/start", json=body, timeout=10).status_code == 422, body
    assert requests.post(f"{u}/export", json={"reason": ""}, timeout=10).status_code == 422
    assert not requests.get(f"{u}/status", timeout=10).json()["data"]["running"]


def test_reports_are_bounded_and_kept_across_a_restart(agent, tmp_path):  # noqa: F811
    obs = tmp_path / "obs"
    a = agent(f"--workspace={tmp_path}", f"--observe-dir={obs}")
    u = f"{a.url}/v1/sandbox/observe"
    made = [requests.post(f"{u}/export", json={"reason": f"r{i}"}, timeout=30).json()["data"]
            for i in range(18)]
    kept = requests.get(f"{u}/reports", timeout=10).json()["data"]
    assert len(kept) == 16
    assert {r["report_id"] for r in kept} == {r["report_id"] for r in made[2:]}
    assert sorted(os.listdir(obs / "reports")) == sorted(
        f"{r['report_id']}{ext}" for r in made[2:] for ext in (".json", ".jsonl.gz"))
    assert requests.get(f"{u}/status", timeout=10).json()["data"]["report_count"] == 16
    a.stop()
    b = agent(f"--workspace={tmp_path}", f"--observe-dir={obs}")
    again = requests.get(f"{b.url}/v1/sandbox/observe/reports", timeout=10).json()["data"]
    assert {r["report_id"]: r for r in again} == {r["report_id"]: r for r in kept}
    one = again[0]
    r = requests.get(f"{b.url}/v1/sandbox/observe/reports/{one['report_id']}", timeout=10)
    assert r.status_code == 200 and len(r.content) == one["size_bytes"]
