"""sbx-agent's MCP server at /mcp, driven by the official `mcp` SDK over
streamable HTTP, and its REST wrappers."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from mcp.client.client import Client

from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def agent_url(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}")
    return a.url, tmp_path


def text_of(result) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def test_mcp_sdk_lists_tools_runs_a_command_and_writes_then_reads_a_file(agent_url):
    url, ws = agent_url

    async def session():
        async with Client(f"{url}/mcp") as client:
            tools = await client.list_tools()
            by_name = {t.name: t for t in tools.tools}
            assert {"sandbox_execute_bash", "sandbox_execute_code", "sandbox_file_operations",
                    "sandbox_str_replace_editor"} <= set(by_name)
            bash = by_name["sandbox_execute_bash"]
            assert bash.input_schema["required"] == ["command"]
            assert bash.input_schema["properties"]["command"]["type"] == "string"

            r = await client.call_tool("sandbox_execute_bash",
                                       {"command": "echo hello from $0 && pwd"})
            assert not r.is_error
            assert text_of(r).splitlines()[:2] == ["hello from bash", str(ws)]
            assert "[exit code 0]" in text_of(r)

            w = await client.call_tool("sandbox_file_operations",
                                       {"action": "write", "path": "notes/mcp.txt",
                                        "content": "written over MCP\n"})
            assert not w.is_error, text_of(w)
            assert (ws / "notes/mcp.txt").read_text() == "written over MCP\n"
            rd = await client.call_tool("sandbox_file_operations",
                                        {"action": "read", "path": "notes/mcp.txt"})
            assert text_of(rd) == "written over MCP\n"
            # The shell sees what the file tool wrote.
            r = await client.call_tool("sandbox_execute_bash",
                                       {"command": "cat notes/mcp.txt | tr a-z A-Z"})
            assert text_of(r).startswith("WRITTEN OVER MCP")

            code = await client.call_tool("sandbox_execute_code",
                                          {"code": "print(sum(range(10)))"})
            assert text_of(code).startswith("45\n")
            ed = await client.call_tool("sandbox_str_replace_editor",
                                        {"command": "str_replace", "path": str(ws / "notes/mcp.txt"),
                                         "old_str": "over", "new_str": "through"})
            assert not ed.is_error, text_of(ed)
            assert (ws / "notes/mcp.txt").read_text() == "written through MCP\n"

            # Failures are tool results with isError, not protocol errors.
            miss = await client.call_tool("sandbox_file_operations",
                                          {"action": "read", "path": "missing.txt"})
            assert miss.is_error and "not_found" in text_of(miss)
            fail = await client.call_tool("sandbox_execute_bash", {"command": "(exit 3)"})
            assert "[exit code 3]" in text_of(fail)
    asyncio.run(session())


def test_mcp_protocol_edges_with_plain_http(agent_url):
    url, _ = agent_url
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    r = requests.post(f"{url}/mcp", json=init, headers=h)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    sid = r.headers["Mcp-Session-Id"]
    assert r.json()["result"]["protocolVersion"] == "2025-03-26"
    assert r.json()["result"]["capabilities"]["tools"] == {"listChanged": False}
    hs = {**h, "Mcp-Session-Id": sid}
    # A notification: 202 and no body.
    r = requests.post(f"{url}/mcp", json={"jsonrpc": "2.0",
                                          "method": "notifications/initialized"}, headers=hs)
    assert r.status_code == 202 and r.content == b""
    # A batch, answered in order, with a method that does not exist.
    batch = [{"jsonrpc": "2.0", "id": "a", "method": "ping"},
             {"jsonrpc": "2.0", "id": "b", "method": "resources/list"},
             {"jsonrpc": "2.0", "id": "c", "method": "tools/call",
              "params": {"name": "sandbox_execute_bash", "arguments": {"command": "echo hi"}}},
             {"jsonrpc": "2.0", "id": "d", "method": "tools/call",
              "params": {"name": "sandbox_execute_bash", "arguments": {"command": 5}}},
             {"jsonrpc": "2.0", "id": "e", "method": "tools/call",
              "params": {"name": "no_such_tool", "arguments": {}}}]
    r = requests.post(f"{url}/mcp", json=batch, headers=hs)
    out = r.json()
    assert [m["id"] for m in out] == ["a", "b", "c", "d", "e"]
    assert out[0]["result"] == {}
    assert out[1]["error"]["code"] == -32601
    assert out[2]["result"]["content"][0]["text"].startswith("hi\n")
    assert out[3]["error"]["code"] == -32602 and "command" in out[3]["error"]["message"]
    assert out[4]["error"]["code"] == -32602
    # Broken JSON, wrong content type, an empty batch.
    r = requests.post(f"{url}/mcp", data=b"{nope", headers=hs)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    r = requests.post(f"{url}/mcp", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(f"{url}/mcp", json=[], headers=h)
    assert r.status_code == 400
    # No server-to-client stream; ending the session makes its id unknown.
    assert requests.get(f"{url}/mcp", headers=hs).status_code == 405
    assert requests.delete(f"{url}/mcp", headers=hs).status_code == 204
    r = requests.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 9, "method": "ping"},
                      headers=hs)
    assert r.status_code == 404
    # /v1/mcp is the same endpoint.
    r = requests.post(f"{url}/v1/mcp", json=init, headers=h)
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"] == "sbx-agent"


def test_mcp_rest_wrappers(agent_url):
    url, ws = agent_url
    r = requests.get(f"{url}/v1/mcp/servers").json()
    assert r["success"] and r["data"] == ["sandbox"]
    tools = requests.get(f"{url}/v1/mcp/sandbox/tools").json()["data"]["tools"]
    assert "sandbox_execute_bash" in [t["name"] for t in tools]
    r = requests.post(f"{url}/v1/mcp/sandbox/tools/sandbox_execute_bash",
                      json={"command": "echo rest > rest.txt && echo done"}).json()
    assert r["success"] and r["data"]["isError"] is False
    assert r["data"]["content"][0]["text"].startswith("done")
    assert (ws / "rest.txt").read_text() == "rest\n"
    assert r["data"]["structuredContent"]["exit_code"] == 0
    r = requests.get(f"{url}/v1/mcp/elsewhere/tools").json()
    assert not r["success"]
    r = requests.post(f"{url}/v1/mcp/sandbox/tools/sandbox_execute_bash", json={})
    assert r.status_code == 422 and "command" in r.text
