"""sbx-agent authentication: RS256 JWTs (JWT_PUBLIC_KEY), a static key
(SANDBOX_API_KEY), single-use tickets, and the attacks that must fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import SANITIZED
from test_agent import agent  # noqa: F401 - the fixture


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict, *, key=None, alg="RS256", secret: bytes = b"") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    else:
        sig = b""
    return f"{header}.{payload}.{b64url(sig)}"


@pytest.fixture(scope="module")
def keys():
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = good.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return good, other, pem


@pytest.fixture
def secured(agent, keys, tmp_path):  # noqa: F811
    good, _, pem = keys
    b64 = base64.b64encode(pem).decode()
    # Whitespace inside the base64 (a wrapped env value) is fine.
    wrapped = "\n".join(b64[i:i + 60] for i in range(0, len(b64), 60))
    env = dict(os.environ, JWT_PUBLIC_KEY=wrapped, TICKET_TTL_SECONDS="1",
               WORKSPACE=str(tmp_path))
    return agent(env=env)


def get(a, path="/v1/sandbox", token=None, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(a.url + path, headers=headers, timeout=10, **kw)


def test_valid_token_works_with_the_sdk(secured, keys):
    good, _, _ = keys
    token = mint({"sub": "tester", "exp": int(time.time()) + 300}, key=good)
    c = Sandbox(base_url=secured.url, headers={"Authorization": f"Bearer {token}"})
    assert c.sandbox.get_context().home_dir
    assert c.file.list_path(path="/").success
    with pytest.raises(ApiError) as e:
        Sandbox(base_url=secured.url).sandbox.get_context()
    assert e.value.status_code == 401


@pytest.mark.parametrize("case", ["none", "garbage", "wrong-key", "expired", "no-exp",
                                  "alg-none", "hs256-with-public-key", "tampered"])
def test_bad_credentials_get_401(secured, keys, case):
    good, other, pem = keys
    now = int(time.time())
    token = {
        "none": None,
        "garbage": "not.a.jwt",
        "wrong-key": mint({"exp": now + 300}, key=other),
        "expired": mint({"exp": now - 5}, key=good),
        "no-exp": mint({"sub": "x"}, key=good),
        "alg-none": mint({"exp": now + 300}, alg="none"),
        "hs256-with-public-key": mint({"exp": now + 300}, alg="HS256", secret=pem),
        "tampered": None,
    }[case]
    if case == "tampered":
        h, p, s = mint({"exp": now + 300, "role": "user"}, key=good).split(".")
        token = ".".join([h, b64url(json.dumps({"exp": now + 300, "role": "admin"}).encode()), s])
    r = get(secured, token=token)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "detail" in r.json()


def test_unknown_paths_and_wrong_methods_need_auth_too(secured):
    assert get(secured, "/v1/not/a/route").status_code == 401
    assert requests.delete(secured.url + "/v1/sandbox", timeout=5).status_code == 401
    # Path tricks do not reach a public route's exemption.
    assert get(secured, "/v1/ping/../sandbox").status_code in (401, 404)
    assert get(secured, "/v1/sandbox?x=/v1/ping").status_code == 401


def test_public_endpoints_stay_open(secured):
    assert get(secured, "/v1/ping").status_code == 200
    assert get(secured, "/healthz").status_code == 200
    assert get(secured, "/metrics").status_code == 200


def test_tickets_work_once_within_their_lifetime(secured, keys):
    good, _, _ = keys
    token = mint({"exp": int(time.time()) + 300}, key=good)
    assert requests.post(secured.url + "/tickets", timeout=5).status_code == 401
    r = requests.post(secured.url + "/tickets", headers={"Authorization": f"Bearer {token}"},
                      timeout=5)
    assert r.status_code == 200
    ticket = r.json()["ticket"]
    assert r.json()["expires_in"] == 1 and len(ticket) >= 32
    assert get(secured, params={"ticket": ticket}).status_code == 200
    assert get(secured, params={"ticket": ticket}).status_code == 401  # used up

    late = requests.post(secured.url + "/tickets", headers={"Authorization": f"Bearer {token}"},
                         timeout=5).json()["ticket"]
    time.sleep(1.3)
    assert get(secured, params={"ticket": late}).status_code == 401
    assert get(secured, params={"ticket": "0" * 48}).status_code == 401


def test_auth_answers_a_front_proxys_subrequest(secured, keys):
    """GET /auth is what nginx's auth_request asks: 200 lets the original
    request in, 401 keeps it out. It takes the request's own credentials, or a
    ticket in the query of the URI being decided on (X-Original-URI)."""
    good, other, _ = keys
    token = mint({"exp": int(time.time()) + 300}, key=good)
    sdk = Sandbox(base_url=secured.url, headers={"Authorization": f"Bearer {token}"})
    assert sdk.auth.authenticate() == {"status": "authenticated", "method": "jwt"}
    with pytest.raises(ApiError) as e:
        Sandbox(base_url=secured.url).auth.authenticate()
    assert e.value.status_code == 401
    bad = mint({"exp": int(time.time()) + 300}, key=other)
    assert get(secured, "/auth", token=bad).status_code == 401
    ticket = requests.post(secured.url + "/tickets", headers={"Authorization": f"Bearer {token}"},
                           timeout=5).json()["ticket"]
    uri = {"X-Original-URI": f"/vnc/index.html?autoconnect=1&ticket={ticket}"}
    anonymous = Sandbox(base_url=secured.url)
    assert anonymous.auth.authenticate(
        request_options={"additional_headers": uri}) == {"status": "authenticated",
                                                          "method": "ticket"}
    r = get(secured, "/auth", headers=uri)  # single use
    assert r.status_code == 401 and r.json()["detail"] == "invalid or expired ticket"
    # A ticket in /auth's own query is not the original request's.
    fresh = requests.post(secured.url + "/tickets", headers={"Authorization": f"Bearer {token}"},
                          timeout=5).json()["ticket"]
    assert get(secured, "/auth", params={"ticket": fresh}).status_code == 401
    assert get(secured, params={"ticket": fresh}).status_code == 200  # still unspent


def test_auth_with_a_static_key_and_without_configuration(agent):  # noqa: F811
    a = agent(env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    r = get(a, "/auth", headers={"X-AIO-API-Key": "s3cret-key"})
    assert r.status_code == 200 and r.json()["method"] == "api_key"
    r = get(a, "/auth", headers={"X-Original-URI": "/novnc/?api_key=s3cret-key"})
    assert r.status_code == 200 and r.json()["method"] == "api_key"
    assert get(a, "/auth", headers={"X-Original-URI": "/novnc/?api_key=nope"}).status_code == 401
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_PUBLIC_KEY", "SANDBOX_API_KEY")}
    assert Sandbox(base_url=agent(env=env).url).auth.authenticate() == {
        "status": "authenticated", "method": "none"}


def test_static_api_key_forms(agent):  # noqa: F811
    a = agent(env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    assert get(a, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert get(a, token="s3cret-key").status_code == 200
    assert get(a, headers={"X-API-Key": "s3cret-kez"}).status_code == 401
    assert get(a, token="s3cret-ke").status_code == 401
    assert get(a).status_code == 401
    # AIO's own forms: its header and the query parameter.
    assert get(a, headers={"X-AIO-API-Key": "s3cret-key"}).status_code == 200
    assert get(a, params={"api_key": "s3cret-key"}).status_code == 200
    assert get(a, headers={"X-AIO-API-Key": "nope"}).status_code == 401
    assert get(a, params={"api_key": "nope"}).status_code == 401


def test_one_good_credential_is_enough_and_a_ticket_is_spent_last(agent):  # noqa: F811
    a = agent(env=dict(os.environ, SANDBOX_API_KEY="s3cret-key"))
    # A stale ticket in a browser URL beside a good key: the key lets it in.
    assert get(a, headers={"X-AIO-API-Key": "s3cret-key"},
               params={"ticket": "0" * 48}).status_code == 200
    assert get(a, params={"api_key": "s3cret-key", "ticket": "0" * 48}).status_code == 200
    # A wrong key beside a good one in another form: still in.
    assert get(a, headers={"X-API-Key": "wrong"}, token="s3cret-key").status_code == 200
    # A good ticket is not spent when a key already let the request in.
    ticket = requests.post(a.url + "/tickets", headers={"X-API-Key": "s3cret-key"},
                           timeout=5).json()["ticket"]
    assert get(a, token="s3cret-key", params={"ticket": ticket}).status_code == 200
    assert get(a, params={"ticket": ticket}).status_code == 200
    assert get(a, params={"ticket": ticket}).status_code == 401
    # Nothing good: 401 naming the first credential's fault.
    r = get(a, headers={"X-AIO-API-Key": "wrong"}, params={"ticket": "0" * 48})
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"


def test_without_configuration_everything_is_open(agent):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_PUBLIC_KEY", "SANDBOX_API_KEY")}
    a = agent(env=env)
    assert get(a).status_code == 200


def test_a_bad_key_stops_the_agent_at_start(tmp_path):
    import subprocess

    from conftest import binary
    for value, message in [("bm90IGEga2V5", "expected a PEM public key"),
                           ("!!!", "expected a PEM public key")]:
        r = subprocess.run([str(binary("sandbox-agent/sbx-agent")), "--listen=127.0.0.1:0"],
                           env=dict(os.environ, JWT_PUBLIC_KEY=value), capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2 and message in r.stderr


# ---- bodies of refused requests are never read into memory ----

BODY = 60 << 20


def hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def push_unauthenticated_body(port: int) -> int:
    """Sends a 60 MiB body without credentials; returns the status seen."""
    chunk = b"[" + b"1," * (1 << 19) + b"1]"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/shell/exec HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/json\r\n"
                  + f"Content-Length: {BODY}\r\n\r\n".encode())
        # The answer comes at the head, before any of the body.
        status = int(s.recv(4096).split()[1])
        sent = 0
        try:
            while sent < BODY:
                s.sendall(chunk[:BODY - sent])
                sent += len(chunk)
        except OSError:
            pass  # the agent closed: it does not want the rest
        return status


def test_unauthenticated_bodies_are_not_buffered_http11(secured):
    a = secured
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(push_unauthenticated_body, [a.port] * 16))
    assert statuses == [401] * 16
    if not SANITIZED:
        assert hwm_kib(a.proc.pid) < 64 * 1024, f"peak RSS {hwm_kib(a.proc.pid)} KiB"


def test_unauthenticated_bodies_are_not_buffered_http2(secured):
    from test_http_server import H2
    a = secured
    c = H2(a.port)
    sids = []
    chunk = b"1," * (1 << 13)  # one frame (16 KiB)
    for _ in range(20):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "POST"), (":path", "/v1/shell/exec"),
                                  (":scheme", "http"), (":authority", "t"),
                                  ("content-type", "application/json"),
                                  ("content-length", str(BODY))])
        c.sock.sendall(c.conn.data_to_send())
        c.responses[sid] = {"headers": None, "body": b"", "done": False, "reset": False}
        sids.append(sid)
    sent = dict.fromkeys(sids, 0)
    while any(sent[s] < BODY and not c.responses[s]["done"] for s in sids):
        progressed = False
        for sid in sids:
            if sent[sid] >= BODY or c.responses[sid]["done"]:
                continue
            room = min(c.conn.local_flow_control_window(sid), len(chunk), BODY - sent[sid])
            if room > 0:
                c.conn.send_data(sid, chunk[:room])
                sent[sid] += room
                progressed = True
        c.sock.sendall(c.conn.data_to_send())
        if not progressed:
            c.pump()
    for sid in sids:
        r = c.wait(sid)
        assert r["headers"][b":status"] == b"401"
    assert max(sent.values()) < BODY, "the agent kept taking a refused body"
    if not SANITIZED:
        assert hwm_kib(a.proc.pid) < 64 * 1024, f"peak RSS {hwm_kib(a.proc.pid)} KiB"
    # The connection serves on.
    ok = c.request("GET", "/v1/ping")
    assert c.wait(ok)["headers"][b":status"] == b"200"
