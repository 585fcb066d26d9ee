"""sbx-agent against AIO Sandbox's own list of operations (aio-operations.txt):
every one is served (not the router's 404 or 405) but those named in
NOT_SERVED, which docs/configuration.md lists too. Serving one of those
makes this test fail until both lists shrink."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from test_agent import agent  # noqa: F401 - the fixture
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
