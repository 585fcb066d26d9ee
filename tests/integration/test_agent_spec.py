"""sbx-agent against AIO Sandbox's own list of operations (aio-operations.txt):
every one is served (not the router's 404 or 405) but those named in
NOT_SERVED, which docs/configuration.md lists too. Serving one of those
makes this test fail until both lists shrink. With a browser attached,
every browser operation answers in the shape the spec gives for its 200
(aio-browser-responses.json, validated with jsonschema)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from test_agent import agent  # noqa: F401 - the fixture
from test_agent_automation import browser, site  # noqa: F401 - the fixtures
from test_agent_docs import not_routed

OPERATIONS = [line.split(" ", 1) for line in
              (Path(__file__).parent / "aio-operations.txt").read_text().splitlines()
              if line and not line.startswith("#")]

# Not built yet (docs/configuration.md says the same).
NOT_SERVED: set[str] = set()


def test_the_list_is_aios():
    assert len(OPERATIONS) == 140
    assert len({f"{m} {p}" for m, p in OPERATIONS}) == 140
    assert NOT_SERVED <= {f"{m} {p}" for m, p in OPERATIONS}


def test_every_operation_is_served_but_the_named_ones(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", f"--skills-dir={tmp_path / 'skills'}",
              f"--observe-dir={tmp_path / 'observe'}",
              f"--proxy-state={tmp_path / 'proxy.json'}")
    served, missing = [], []
    for method, path in OPERATIONS:
        # Path parameters get a value that names nothing.
        concrete = re.sub(r"\{[^}]+\}", "no-such-thing", path)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        r = requests.request(method, a.url + concrete, json=body, timeout=30)
        routed = r.status_code != 405 and not (r.status_code == 404 and not_routed(r))
        (served if routed else missing).append(f"{method} {path}")
    assert set(missing) == NOT_SERVED
    print(f"{len(served)} of {len(OPERATIONS)} AIO operations served")


RESPONSES = json.loads((Path(__file__).parent / "aio-browser-responses.json").read_text())


def spec_validator(name: str) -> Draft202012Validator:
    """A validator for one of AIO's response schemas (refs resolved among them)."""
    doc = {"components": {"schemas": RESPONSES["schemas"]}}
    registry = Registry().with_resource(
        "urn:aio", Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:aio#/components/schemas/{name}"},
                                registry=registry)


def test_every_browser_operation_answers_in_the_spec_shape(browser, site):  # noqa: F811
    """With a browser attached, each of AIO's browser operations, called as
    a client would, succeeds and answers with the content type and the
    JSON shape the spec gives for its 200."""
    _, tmp_path, a = browser
    base, _ = site
    (tmp_path / "up.txt").write_text("upload me")
    calls = [
        ("GET", "/v1/browser/info", None),
        ("POST", "/v1/browser/page/navigate", {"url": base + "/"}),
        ("POST", "/v1/browser/page/navigate", {"url": base + "/widgets"}),
        ("GET", "/v1/browser/screenshot", None),
        ("GET", "/v1/browser/page/screenshot", None),
        ("POST", "/v1/browser/config", {"resolution": {"width": 1280, "height": 720}}),
        ("POST", "/v1/browser/actions", {"action_type": "MOVE_TO", "x": 10, "y": 10}),
        ("POST", "/v1/browser/page/click", {"selector": "#a"}),
        ("POST", "/v1/browser/page/fill", {"selector": "#a", "text": "hello"}),
        ("POST", "/v1/browser/page/type", {"text": " world"}),
        ("POST", "/v1/browser/page/press_key", {"key": "Tab"}),
        ("POST", "/v1/browser/page/hot_key", {"keys": ["Control", "a"]}),
        ("POST", "/v1/browser/page/hover", {"selector": "#hov"}),
        ("POST", "/v1/browser/page/select_option", {"selector": "#color", "value": "g"}),
        ("POST", "/v1/browser/page/check", {"selector": "#agree"}),
        ("POST", "/v1/browser/page/uncheck", {"selector": "#agree"}),
        ("POST", "/v1/browser/page/upload_file",
         {"selector": "#f", "files": [str(tmp_path / "up.txt")]}),
        ("POST", "/v1/browser/page/fill_form", {"items": [{"selector": "#b", "value": "x"}]}),
        ("POST", "/v1/browser/page/scroll", {"direction": "down", "amount": 100}),
        ("POST", "/v1/browser/page/scroll_to", {"x": 0, "y": 0}),
        ("POST", "/v1/browser/page/scroll_to_element", {"selector": "#far"}),
        ("POST", "/v1/browser/page/record", {"action": "status"}),
        ("GET", "/v1/browser/page/html", None),
        ("GET", "/v1/browser/page/text", None),
        ("GET", "/v1/browser/page/markdown", None),
        ("GET", "/v1/browser/page/elements", None),
        ("GET", "/v1/browser/page/console", None),
        ("POST", "/v1/browser/page/console/export", {"save_path": "console.json"}),
        ("POST", "/v1/browser/page/evaluate", {"expression": "1 + 1"}),
        ("POST", "/v1/browser/page/find_text", {"keyword": "far away"}),
        ("POST", "/v1/browser/page/wait", {"type": "selector", "selector": "#a"}),
        ("GET", "/v1/browser/tabs", None),
        ("POST", "/v1/browser/tabs", {"url": base + "/"}),
        ("PUT", "/v1/browser/tabs/0/activate", None),
        ("DELETE", "/v1/browser/tabs/1", None),
        ("GET", "/v1/browser/cookies", None),
        ("POST", "/v1/browser/cookies", {"cookies": [{"name": "k", "value": "v", "url": base}]}),
        ("POST", "/v1/browser/state/save", {"path": "state.json"}),
        ("DELETE", "/v1/browser/cookies", None),
        ("POST", "/v1/browser/state/load", {"path": "state.json"}),
        ("POST", "/v1/browser/network/headers", {"headers": {"X-Test": "1"}}),
        ("POST", "/v1/browser/network/scoped_headers", {"origin": base, "headers": {"X-S": "1"}}),
        ("POST", "/v1/browser/network/route", {"url_pattern": "*/blocked*", "abort": True}),
        ("DELETE", "/v1/browser/network/route", {"url_pattern": "*/blocked*"}),
        ("GET", "/v1/browser/network/requests", None),
        ("POST", "/v1/browser/network/export_har", {"save_path": "net.har"}),
        ("GET", "/v1/browser/captcha/detect", None),
        ("POST", "/v1/browser/captcha/wait", {"timeout": 1}),
        ("POST", "/v1/browser/page/back", None),
        ("POST", "/v1/browser/page/forward", None),
        ("POST", "/v1/browser/page/reload", None),
        ("POST", "/v1/browser/restart", {"mode": "soft"}),
        ("GET", "/v1/browser/proxy.pac", None),
    ]
    done = set()
    for method, path, body in calls:
        op = f"{method} {re.sub(r'/tabs/[0-9]+', '/tabs/{index}', path)}"
        spec = RESPONSES["operations"][op]
        r = requests.request(method, a.url + path, json=body, timeout=60)
        assert r.status_code == 200, (op, r.text)
        content_type = r.headers["Content-Type"].split(";")[0]
        assert content_type in spec["content_types"], (op, content_type)
        if spec["schema"]:
            answer = r.json()
            errors = [e.message for e in spec_validator(spec["schema"]).iter_errors(answer)]
            assert not errors, (op, errors, answer)
            assert answer["success"] is True, (op, answer)
        else:
            assert r.content, op
        done.add(op)
    assert done == set(RESPONSES["operations"])
    print(f"{len(done)} browser operations answered in the spec's shape")
