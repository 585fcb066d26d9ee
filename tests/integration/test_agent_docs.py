"""GET /v1/openapi.json and /v1/docs tell the truth about what the agent serves."""

from __future__ import annotations

import os

import requests

from test_agent import agent  # noqa: F401 - the fixture


def call(url, method, path, headers=None):
    path = path.replace("{session_id}", "no-such-session")
    body = {} if method == "post" else None
    return requests.request(method.upper(), url + path, json=body, headers=headers or {},
                            timeout=10)


def not_routed(r) -> bool:
    try:
        return r.json().get("error", {}).get("message") == "no such endpoint"
    except ValueError:
        return True


def test_every_documented_operation_is_served(agent, tmp_path):  # noqa: F811
    # Calls that change state keep it in tmp_path, not in the home folder.
    a = agent(f"--proxy-state={tmp_path / 'proxy.json'}", f"--observe-dir={tmp_path / 'o'}",
              f"--skills-dir={tmp_path / 'skills'}")
    doc = requests.get(f"{a.url}/v1/openapi.json", timeout=5).json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "sbx-agent"
    version = requests.get(f"{a.url}/v1/sandbox", timeout=10).json()["version"]
    assert version == "sbx-agent " + doc["info"]["version"]
    ops = [(p, m) for p, item in doc["paths"].items() for m in item]
    assert ("/v1/shell/exec", "post") in ops and ("/v1/file/str_replace_editor", "post") in ops
    for path, method in ops:
        op = doc["paths"][path][method]
        assert op["summary"] and op["operationId"] and op["tags"]
        r = call(a.url, method, path)
        # Served: not the router's own 404 or 405 (a handler may answer 404
        # for what a path names, such as a hook that does not exist).
        assert r.status_code != 405, (method, path)
        assert not (r.status_code == 404 and not_routed(r)), (method, path, r.text)
    ids = [doc["paths"][p][m]["operationId"] for p, m in ops]
    assert len(ids) == len(set(ids))


def test_documented_auth_matches_behaviour(agent, tmp_path):  # noqa: F811
    a = agent(f"--proxy-state={tmp_path / 'proxy.json'}", f"--observe-dir={tmp_path / 'o'}",
              f"--skills-dir={tmp_path / 'skills'}", env=dict(os.environ, SANDBOX_API_KEY="k3y"))
    doc = requests.get(f"{a.url}/v1/openapi.json", timeout=5).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            r = call(a.url, method, path)
            if op.get("security") == []:
                assert r.status_code != 401, (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                assert call(a.url, method, path, {"X-API-Key": "k3y"}).status_code != 401


def test_docs_page_lists_the_operations(agent):  # noqa: F811
    a = agent()
    r = requests.get(f"{a.url}/v1/docs", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    doc = requests.get(f"{a.url}/v1/openapi.json", timeout=5).json()
    for path in doc["paths"]:
        assert f"<code>{path}</code>" in r.text
