"""sbx-egress as the sidecar, in network namespaces the test builds: a "pod"
namespace running sbx-egress, and an "internet" namespace with a real DNS
server (dnsmasq) and HTTP servers on IPv4 and IPv6 addresses. The pod's
clients are real ones (dnspython, curl, sockets). With the policy "deny by
default, allow *.allowed.test and exact.example.test", a user sees: allowed
names answer and connect, denied ones get NXDOMAIN, IP literals and DoT are
dropped, a resolver the pod hard-codes is answered by the proxy anyway, the
first connection after each answer succeeds, a policy change applies within a
second without cutting established connections, and killing sbx-egress
leaves the pod blocked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import assert_no_sanitizer_report, binary

NET4, NET6 = "198.18.0", "fd00:5b"
RESOLVER = f"{NET4}.1"
POLICY = """\
defaultAction: deny
rules:
- {action: allow, target: "*.allowed.test"}
- {action: allow, target: exact.example.test}
"""
N_FRESH = 1000  # names, each with an address of its own, for the first-connect race
HTTP_SERVER = """
import http.server, socket
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    request_queue_size = 4096
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
import threading
for port in (443,):
    s = Server(("::", port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=s.serve_forever, daemon=True).start()
Server(("::", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {r.stderr}")
    return r


class Net:
    """Two namespaces joined by a veth pair; everything is removed at the end."""

    def __init__(self, tmp_path):
        tag = os.urandom(2).hex()
        self.pod, self.net = f"sbxe-p{tag}", f"sbxe-n{tag}"
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []
        sh("ip", "netns", "add", self.pod)
        sh("ip", "netns", "add", self.net)
        sh("ip", "link", "add", f"sbxe{tag}p", "type", "veth", "peer", "name", f"sbxe{tag}n")
        sh("ip", "link", "set", f"sbxe{tag}p", "netns", self.pod)
        sh("ip", "link", "set", f"sbxe{tag}n", "netns", self.net)
        for ns, dev, me in ((self.pod, f"sbxe{tag}p", 2), (self.net, f"sbxe{tag}n", 1)):
            self.ip(ns, "link", "set", "lo", "up")
            self.ip(ns, "addr", "add", f"{NET4}.{me}/24", "dev", dev)
            self.ip(ns, "-6", "addr", "add", f"{NET6}::{me}/64", "dev", dev, "nodad")
            self.ip(ns, "link", "set", dev, "up")
        self.ip(self.pod, "route", "add", "default", "via", f"{NET4}.1")
        self.ip(self.pod, "-6", "route", "add", "default", "via", f"{NET6}::1")
        # The "internet": servers on 198.18.1.0/24 and fd00:5b:1::/64, and a
        # block of addresses for fresh names, all local to its namespace.
        self.ip(self.net, "route", "add", "local", "198.18.1.0/24", "dev", "lo")
        self.ip(self.net, "route", "add", "local", "198.18.4.0/22", "dev", "lo")
        self.ip(self.net, "route", "add", "local", "1.1.1.1/32", "dev", "lo")  # a DoH resolver
        self.ip(self.net, "-6", "route", "add", "local", f"{NET6}:1::/64", "dev", "lo")

    @staticmethod
    def ip(ns: str, *args: str) -> None:
        sh("ip", "-n", ns, *args)

    def run_in(self, ns: str, *argv: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.procs.append(p)
        return p

    def exec_in(self, ns: str, *argv: str, check: bool = False,
                timeout: float = 30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        sh("ip", "netns", "del", self.pod, check=False)
        sh("ip", "netns", "del", self.net, check=False)


@pytest.fixture
def net(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the egress tests build network namespaces and need root")
    n = Net(tmp_path)
    records = [f"--host-record=www.allowed.test,198.18.1.10,{NET6}:1::10",
               "--host-record=exact.example.test,198.18.1.30",
               "--host-record=denied.test,198.18.1.20",
               "--cname=alias.allowed.test,denied.test"]
    records += [f"--host-record=n{i}.allowed.test,198.18.{4 + i // 250}.{1 + i % 250}"
                for i in range(N_FRESH)]
    conf = n.tmp / "dnsmasq.conf"
    conf.write_text("\n".join(r[2:] for r in records) + "\n")
    n.run_in(n.net, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
             "--bind-interfaces", f"--listen-address={RESOLVER}", "--port=53", "--local-ttl=30",
             "--log-facility=-", "--pid-file=", f"--conf-file={conf}",
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # One HTTP server for every address of the namespace, IPv4 and IPv6, with
    # a backlog that a thousand connections in a row do not fill.
    n.run_in(n.net, sys.executable, "-c", HTTP_SERVER,
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: n.exec_in(n.net, "python3", "-c",
                                   "import socket; socket.create_connection(('198.18.1.10', 8080), 1)"
                                   ).returncode == 0, "the HTTP server")
        yield n
    finally:
        n.close()


def wait_for(check, what: str, timeout: float = 10, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


class Sidecar:
    def __init__(self, net: Net, policy: str = POLICY, extra: tuple[str, ...] = ()):
        self.net = net
        self.extra = extra
        self.dir = net.tmp / "policy"
        self.dir.mkdir(exist_ok=True)
        self.file = self.dir / "policy.yaml"
        if not self.file.exists():
            self.file.write_text(policy)
        self.start()

    def start(self) -> None:
        self.log = open(self.net.tmp / "egress.log", "a")
        self.proc = self.net.run_in(
            self.net.pod, str(binary("egress-sidecar/sbx-egress")), f"--policy-file={self.file}",
            f"--upstream={RESOLVER}:53", "--listen=127.0.0.1:15380", "--log-format=json",
            *self.extra, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_for(lambda: self.get("/readyz") is not None or self.proc.poll() is not None,
                 "sbx-egress ready")
        assert self.proc.poll() is None, self.logs()

    def get(self, path: str) -> str | None:
        r = self.net.exec_in(self.net.pod, "python3", "-c",
                             "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                             f"'http://127.0.0.1:15380{path}', timeout=2).read().decode())")
        return r.stdout if r.returncode == 0 else None

    def api(self, method: str, path: str, body: str | None = None,
            token: str | None = None, **headers: str) -> tuple[int, dict, dict]:
        """Calls the admin API from inside the pod: (status, headers, JSON body)."""
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        r = self.net.exec_in(self.net.pod, sys.executable, "-c", API_CALL, method,
                             f"http://127.0.0.1:15381{path}", body or "", json.dumps(headers))
        assert r.returncode == 0, r.stderr
        status, hdrs, text = json.loads(r.stdout)
        return status, hdrs, json.loads(text)

    def set_policy(self, text: str) -> None:
        """As a ConfigMap volume changes: a new file renamed into place."""
        tmp = self.dir / ".policy.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.file)

    def logs(self) -> str:
        return (self.net.tmp / "egress.log").read_text()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        out = self.logs()
        assert_no_sanitizer_report(out)
        return out


API_CALL = """
import json, sys, urllib.error, urllib.request
method, url, body, headers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                             headers=headers)
try:
    r = urllib.request.urlopen(req, timeout=5)
except urllib.error.HTTPError as e:
    r = e
print(json.dumps([r.status, dict(r.headers), r.read().decode()]))
"""


@pytest.fixture
def sidecar(net):
    s = Sidecar(net)
    yield s
    if s.proc.poll() is None:
        s.stop()
        assert s.proc.returncode == 0, s.logs()[-3000:]
    net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")), "cleanup")


# What the pod's programs do, run inside its namespace.
CLIENT = r"""
import json, socket, sys, urllib.request
import dns.message, dns.query, dns.rcode, dns.resolver

def resolve(name, rdtype="A", server="198.18.0.1", tcp=False):
    q = dns.message.make_query(name, rdtype)
    try:
        m = (dns.query.tcp if tcp else dns.query.udp)(q, server, timeout=2)
    except Exception as e:
        return {"error": type(e).__name__}
    return {"rcode": dns.rcode.to_text(m.rcode()),
            "addrs": sorted(r.to_text() for rrset in m.answer for r in rrset
                            if rrset.rdtype in (1, 28))}

def connect(host, port, timeout=1.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return "connected"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()

out = {}
exec(sys.argv[1])
print(json.dumps(out))
"""


def in_pod(net: Net, code: str, timeout: float = 120) -> dict:
    """Runs code with CLIENT's helpers in the pod's namespace (this venv's
    Python, for dnspython); returns its `out`."""
    r = net.exec_in(net.pod, sys.executable, "-c", CLIENT, code, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class HeldConnection:
    """A TCP connection from the pod, opened now and used later (across a
    policy change)."""

    def __init__(self, net: Net, host: str, port: int = 8080):
        self.proc = net.run_in(net.pod, sys.executable, "-c", f"""
import socket, sys
s = socket.create_connection(({host!r}, {port}), timeout=3)
print("open", flush=True)
sys.stdin.readline()
s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
print(s.recv(12).decode(), flush=True)
""", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "open"

    def request(self) -> str:
        """The status line of a request sent on it now."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


def test_names_literals_and_resolvers_as_the_pod_sees_them(net, sidecar):
    out = in_pod(net, """
out["allowed"] = resolve("www.allowed.test")
out["allowed_aaaa"] = resolve("www.allowed.test", "AAAA")
out["allowed_tcp"] = resolve("www.allowed.test", tcp=True)
out["exact"] = resolve("exact.example.test")
out["variants"] = [resolve(n)["rcode"] for n in ("WWW.Allowed.Test.", "www.allowed.test.")]
out["denied"] = resolve("denied.test")
out["apex"] = resolve("allowed.test")
out["cname_to_denied"] = resolve("alias.allowed.test")
# A resolver the pod hard-codes: still the proxy that answers.
out["hardcoded_allowed"] = resolve("www.allowed.test", server="203.0.113.53")
out["hardcoded_denied"] = resolve("denied.test", server="203.0.113.53", tcp=True)
# DNS over IPv6: redirected to the proxy's ::1 listener.
out["v6_resolver"] = resolve("www.allowed.test", server="fd00:5b::1")
out["v6_resolver_denied"] = resolve("denied.test", server="fd00:5b::1", tcp=True)
out["connect_allowed"] = connect("198.18.1.10", 8080)
out["connect_allowed6"] = connect("fd00:5b:1::10", 8080)
out["connect_denied_literal"] = connect("198.18.1.20", 8080)
out["dot"] = connect("198.18.1.10", 853)
""")
    assert out["allowed"] == {"rcode": "NOERROR", "addrs": ["198.18.1.10"]}
    assert out["allowed_aaaa"] == {"rcode": "NOERROR", "addrs": ["fd00:5b:1::10"]}
    assert out["allowed_tcp"] == out["allowed"] and out["exact"]["rcode"] == "NOERROR"
    assert out["variants"] == ["NOERROR", "NOERROR"]
    for k in ("denied", "apex", "cname_to_denied", "hardcoded_denied"):
        assert out[k] == {"rcode": "NXDOMAIN", "addrs": []}, (k, out[k])
    assert out["hardcoded_allowed"] == out["allowed"] == out["v6_resolver"]
    assert out["v6_resolver_denied"] == {"rcode": "NXDOMAIN", "addrs": []}
    assert out["connect_allowed"] == "connected" and out["connect_allowed6"] == "connected"
    # Dropped, not refused: the client times out.
    assert out["connect_denied_literal"] == "TimeoutError"
    assert out["dot"] == "TimeoutError"
    # curl, as a user runs it, through the pod's own resolver configuration.
    r = net.exec_in(net.pod, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                    "--max-time", "5", "http://www.allowed.test:8080/")
    assert r.stdout == "200", r.stderr
    r = net.exec_in(net.pod, "curl", "-sS", "--max-time", "5", "http://denied.test:8080/")
    assert r.returncode == 6, (r.returncode, r.stderr)  # could not resolve host
    # Every decision is logged with its rule.
    lines = [e for e in sidecar.lines() if e.get("msg") == "dns"]
    denied = [e for e in lines if e["name"] == "alias.allowed.test"]
    assert denied and denied[0]["outcome"] == "chain_denied" and denied[0]["denied"] == "denied.test"
    metrics = sidecar.get("/metrics")
    assert 'sbx_egress_queries_total{outcome="chain_denied"} ' in metrics
    assert "sbx_egress_learned_addresses " in metrics


def test_the_first_connection_after_each_answer_succeeds(net, sidecar):
    out = in_pod(net, f"""
failures = []
for i in range({N_FRESH}):
    r = resolve(f"n{{i}}.allowed.test")
    if r.get("rcode") != "NOERROR" or len(r["addrs"]) != 1:
        failures.append((i, r)); continue
    c = connect(r["addrs"][0], 8080)
    if c != "connected":
        failures.append((i, c))
out["failures"] = failures[:10]
out["n_failures"] = len(failures)
""", timeout=300)
    assert out["n_failures"] == 0, out["failures"]
    # Each of them is in the allow set now, with a timeout.
    learned = net.exec_in(net.pod, "nft", "list", "set", "inet", "sbx_egress", "learned4").stdout
    assert learned.count("timeout") >= N_FRESH, learned[:500]


def test_a_policy_change_applies_within_a_second_and_keeps_established_flows(net, sidecar):
    # A connection to an allowed server, kept open across the change.
    assert in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]["rcode"] == "NOERROR"
    held = HeldConnection(net, "198.18.1.30")

    t0 = time.monotonic()
    sidecar.set_policy(POLICY.replace("exact.example.test", "other.example.test"))
    applied = wait_for(lambda: [e for e in sidecar.lines() if e.get("msg") == "policy applied"],
                       "the new policy applied")
    print(f"policy applied {time.monotonic() - t0:.3f} s after the file changed")
    assert applied[0]["generation"] == 2
    # The first query after it gets the new verdict.
    assert in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]["rcode"] == "NXDOMAIN"
    # A fresh connection to the address is dropped now; the held one still works.
    assert in_pod(net, 'out["c"] = connect("198.18.1.30", 8080)')["c"] == "TimeoutError"
    assert held.request() == "HTTP/1.0 200"
    assert "policyGeneration\":2" in sidecar.get("/readyz")

    # An invalid policy is refused; the one in force stays.
    sidecar.set_policy("defaultAction: deny\nrules: [{action: allow, target: 'bad name!'}]\n")
    wait_for(lambda: 'sbx_egress_policy_reload_failures_total 1' in (sidecar.get("/metrics") or ""),
             "the refusal counted")
    assert in_pod(net, 'out["r"] = resolve("www.allowed.test")')["r"]["rcode"] == "NOERROR"
    assert "policyGeneration\":2" in sidecar.get("/readyz")
    assert any(e.get("msg") == "policy refused; the previous one stays" and
               "bad name!" in e.get("error", "") for e in sidecar.lines())


def test_killed_it_leaves_the_pod_blocked_and_a_restart_restores_it(net, sidecar):
    assert in_pod(net, 'out["r"] = resolve("www.allowed.test")')["r"]["rcode"] == "NOERROR"
    sidecar.proc.send_signal(signal.SIGKILL)
    sidecar.proc.wait(timeout=10)
    out = in_pod(net, """
out["dns"] = resolve("exact.example.test")
out["literal"] = connect("198.18.1.30", 8080)
""")
    assert "error" in out["dns"], out  # nothing answers DNS
    assert out["literal"] == "TimeoutError"
    assert "table inet sbx_egress" in net.exec_in(net.pod, "nft", "list", "tables").stdout
    # Started again: the table is replaced in one step, and names resolve.
    sidecar.start()
    assert in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]["rcode"] == "NOERROR"
    # `sbx-egress cleanup` is the only way the table goes.
    sidecar.stop()
    assert "table inet sbx_egress" in net.exec_in(net.pod, "nft", "list", "tables").stdout
    r = net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")), "cleanup")
    assert r.returncode == 0, r.stderr
    assert "sbx_egress" not in net.exec_in(net.pod, "nft", "list", "tables").stdout


def test_with_default_allow_doh_resolvers_stay_out(net):
    """defaultAction allow lets IP literals through, but not to a known DNS-over-HTTPS
    resolver's port 443, and not to its name."""
    sidecar = Sidecar(net, "defaultAction: allow\nrules: []\n")
    try:
        out = in_pod(net, """
out["doh"] = connect("1.1.1.1", 443)
out["doh_other_port"] = connect("1.1.1.1", 8080)
out["other_443"] = connect("198.18.1.10", 443)
out["literal"] = connect("198.18.1.20", 8080)
out["doh_name"] = resolve("cloudflare-dns.com")
out["name"] = resolve("denied.test")
""")
        assert out["doh"] == "TimeoutError"
        assert out["doh_other_port"] == out["other_443"] == out["literal"] == "connected", out
        assert out["doh_name"] == {"rcode": "NXDOMAIN", "addrs": []}
        assert out["name"] == {"rcode": "NOERROR", "addrs": ["198.18.1.20"]}
    finally:
        sidecar.stop()
        net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")), "cleanup")


@pytest.fixture
def admin_sidecar(net):
    token = os.urandom(16).hex()
    (net.tmp / "token").write_text(token + "\n")
    s = Sidecar(net, extra=("--admin-listen=127.0.0.1:15381", f"--admin-token-file={net.tmp / 'token'}",
                            "--log-quiet=*.quiet.test"))
    s.token = token
    yield s
    if s.proc.poll() is None:
        s.stop()
        assert s.proc.returncode == 0, s.logs()[-3000:]
    net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")), "cleanup")


def test_the_admin_api_changes_the_policy_at_run_time(net, admin_sidecar):
    sc, token = admin_sidecar, admin_sidecar.token
    # Without the token (anything in the pod can reach the port): refused.
    assert sc.api("GET", "/policy")[0] == 401
    assert sc.api("GET", "/policy", token="x" * len(token))[0] == 401
    status, hdrs, view = sc.api("GET", "/policy", token=token)
    assert status == 200 and view["source"] == "file" and view["generation"] == 1
    assert view["policy"]["defaultAction"] == "deny"
    assert [r["target"] for r in view["policy"]["rules"]] == ["*.allowed.test", "exact.example.test"]
    assert hdrs["ETag"] == '"1"'

    # A connection to an allowed server, held across the changes.
    assert in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]["rcode"] == "NOERROR"
    held = HeldConnection(net, "198.18.1.30")

    # PUT: a whole policy; the next query gets its verdict.
    t0 = time.monotonic()
    status, hdrs, view = sc.api("PUT", "/policy", json.dumps(
        {"defaultAction": "deny", "rules": [{"action": "allow", "target": "*.allowed.test"}]}),
        token=token, **{"If-Match": '"1"', "Content-Type": "application/json"})
    flipped = in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]
    print(f"API change to a changed verdict: {time.monotonic() - t0:.3f} s")
    assert status == 200 and view["source"] == "api" and view["generation"] == 2, view
    assert flipped == {"rcode": "NXDOMAIN", "addrs": []}
    assert time.monotonic() - t0 < 1.0
    assert in_pod(net, 'out["c"] = connect("198.18.1.30", 8080)')["c"] == "TimeoutError"
    assert held.request() == "HTTP/1.0 200"

    # A stale ETag, an invalid rule, the operator's lists: refused, nothing changes.
    assert sc.api("PUT", "/policy", '{"defaultAction": "allow"}', token=token,
                  **{"If-Match": '"1"'})[0] == 412
    status, _, err = sc.api("PATCH", "/policy",
                            '{"rules": [{"action": "allow", "target": "a..b"}]}', token=token)
    assert status == 422 and "rules[0]" in err["error"]["message"], err
    status, _, err = sc.api("PUT", "/policy", '{"defaultAction": "allow", "alwaysDeny": []}',
                            token=token)
    assert status == 422 and "alwaysDeny" in err["error"]["message"], err
    assert sc.api("GET", "/policy", token=token)[2]["generation"] == 2

    # PATCH (YAML too): these rules go first and replace those of their targets.
    status, _, view = sc.api("PATCH", "/policy",
                             "rules:\n- {action: deny, target: www.allowed.test}\n"
                             "- {action: allow, target: '*.ALLOWED.test.'}\n", token=token)
    assert status == 200 and view["generation"] == 3, view
    assert [r["target"] for r in view["policy"]["rules"]] == ["www.allowed.test", "*.ALLOWED.test."]
    out = in_pod(net, 'out["www"] = resolve("www.allowed.test"); out["n1"] = resolve("n1.allowed.test")')
    assert out["www"]["rcode"] == "NXDOMAIN" and out["n1"]["rcode"] == "NOERROR"

    # DELETE: back to the file's policy.
    status, _, view = sc.api("DELETE", "/policy", token=token)
    assert status == 200 and view["source"] == "file" and view["generation"] == 4
    assert in_pod(net, 'out["r"] = resolve("exact.example.test")')["r"]["rcode"] == "NOERROR"

    # The file is the source of truth: its next change replaces an API policy.
    assert sc.api("PUT", "/policy", '{"defaultAction": "allow", "rules": []}', token=token)[0] == 200
    sc.set_policy(POLICY + "- {action: allow, target: other.example.test}\n")
    wait_for(lambda: sc.api("GET", "/policy", token=token)[2]["source"] == "file",
             "the file's policy back in force")
    view = sc.api("GET", "/policy", token=token)[2]
    assert view["generation"] == 6 and len(view["policy"]["rules"]) == 3
    assert any(e.get("msg") == "policy applied" and e.get("replaced_api_policy") for e in sc.lines())
    metrics = sc.get("/metrics")
    assert "sbx_egress_policy_api_changes_total 4" in metrics
    assert "sbx_egress_policy_api_refused_total 3" in metrics
    assert "sbx_egress_policy_from_api 0" in metrics


def test_decisions_are_kept_for_audit_and_quiet_names_stay_out_of_the_log(net, admin_sidecar):
    sc, token = admin_sidecar, admin_sidecar.token
    in_pod(net, """
for n in ("www.allowed.test", "denied.test", "a.quiet.test", "alias.allowed.test"):
    resolve(n)
""")
    status, _, d = sc.api("GET", "/decisions", token=token)
    assert status == 200
    by_name = {e["name"]: e for e in d["decisions"]}
    assert set(by_name) == {"www.allowed.test", "denied.test", "a.quiet.test", "alias.allowed.test"}
    www = by_name["www.allowed.test"]
    assert (www["verdict"], www["rule"], www["target"], www["addresses"]) == \
        ("allow", "rules[0]", "*.allowed.test", "198.18.1.10")
    assert by_name["denied.test"]["outcome"] == "denied"
    assert by_name["alias.allowed.test"]["denied"] == "denied.test"
    assert [e["seq"] for e in d["decisions"]] == sorted(e["seq"] for e in d["decisions"])
    # Filters, and polling from the last seq seen.
    denied = sc.api("GET", "/decisions?verdict=deny", token=token)[2]["decisions"]
    assert {e["name"] for e in denied} == {"denied.test", "a.quiet.test", "alias.allowed.test"}
    names = sc.api("GET", "/decisions?name=*.allowed.test", token=token)[2]["decisions"]
    assert {e["name"] for e in names} == {"www.allowed.test", "alias.allowed.test"}
    last = sc.api("GET", "/decisions?limit=1", token=token)[2]
    assert len(last["decisions"]) == 1 and last["decisions"][0]["name"] == "alias.allowed.test"
    assert sc.api("GET", f"/decisions?after={last['next']}", token=token)[2]["decisions"] == []
    in_pod(net, 'resolve("exact.example.test")')
    new = sc.api("GET", f"/decisions?after={last['next']}", token=token)[2]["decisions"]
    assert [e["name"] for e in new] == ["exact.example.test"]
    assert sc.api("GET", "/decisions?limit=0", token=token)[0] == 400
    assert sc.api("GET", "/decisions?name=a*b", token=token)[0] == 400
    assert sc.api("GET", "/decisions")[0] == 401
    # --log-quiet=*.quiet.test: kept and counted, not logged.
    logged = {e["name"] for e in sc.lines() if e.get("msg") == "dns"}
    assert "denied.test" in logged and "a.quiet.test" not in logged


def test_an_admin_api_without_a_token_is_refused_at_start(net, tmp_path):
    r = net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")),
                    f"--policy-file={tmp_path}/none.yaml", "--admin-listen=127.0.0.1:15381")
    assert r.returncode == 2 and "--admin-token-file" in r.stderr, r.stderr
    assert "sbx_egress" not in net.exec_in(net.pod, "nft", "list", "tables").stdout


def test_it_reports_the_digest_of_the_policy_it_applied(net, tmp_path):
    """As the kubelet lays out a ConfigMap volume: each version in a folder
    of its own, swapped in by one symlink, policy.json and the operator's
    policy-hash together."""
    vol = tmp_path / "vol"
    vol.mkdir()

    def publish(version: int, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        d = vol / f"..v{version}"
        d.mkdir()
        (d / "policy.json").write_text(text)
        (d / "policy-hash").write_text(digest)
        os.symlink(d.name, vol / "..data_tmp")
        os.replace(vol / "..data_tmp", vol / "..data")
        for f in ("policy.json", "policy-hash"):
            if not (vol / f).is_symlink():
                os.symlink(f"..data/{f}", vol / f)
        return digest

    first = publish(1, json.dumps({"defaultAction": "deny", "rules": []}))
    net.tmp = tmp_path
    proc = net.run_in(net.pod, str(binary("egress-sidecar/sbx-egress")),
                      f"--policy-file={vol / 'policy.json'}", f"--upstream={RESOLVER}:53",
                      "--listen=127.0.0.1:15380", "--log-format=json",
                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "egress.log", "w"))
    probe = Sidecar.__new__(Sidecar)
    probe.net = net
    try:
        ready = wait_for(lambda: probe.get("/readyz"), "sbx-egress ready")
        assert json.loads(ready) == {"status": "ok", "policyGeneration": 1, "policyHash": first,
                                     "policySource": "file"}
        second = publish(2, json.dumps({"defaultAction": "deny", "rules": [
            {"action": "allow", "target": "*.allowed.test"}]}))
        wait_for(lambda: json.loads(probe.get("/readyz"))["policyHash"] == second,
                 "the new digest reported")
        assert json.loads(probe.get("/readyz"))["policyGeneration"] == 2
        assert in_pod(net, 'out["r"] = resolve("www.allowed.test")')["r"]["rcode"] == "NOERROR"
    finally:
        proc.terminate()
        proc.wait(10)
        net.exec_in(net.pod, str(binary("egress-sidecar/sbx-egress")), "cleanup")


def test_without_net_admin_it_says_so_and_exits(net, tmp_path):
    """Never a silent fail-open: a sidecar that cannot install its rules
    names what is missing and exits; nothing is left half done."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir="/tmp") as f:
        f.write(POLICY)
        f.flush()
        os.chmod(f.name, 0o644)
        r = unprivileged(net, f.name)
    assert r.returncode == 1, (r.returncode, r.stderr)
    err = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")][-1]
    assert err["msg"] == "cannot enforce egress", err
    assert "CAP_NET_ADMIN" in err["error"], err
    assert "sbx_egress" not in net.exec_in(net.pod, "nft", "list", "tables").stdout


def unprivileged(net: Net, policy: str) -> subprocess.CompletedProcess:
    """sbx-egress as nobody, without capabilities (the policy is readable to it)."""
    return net.exec_in(net.pod, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       "--inh-caps=-all", "--bounding-set=-all",
                       str(binary("egress-sidecar/sbx-egress")),
                       f"--policy-file={policy}", f"--upstream={RESOLVER}:53",
                       "--listen=127.0.0.1:15380", "--log-format=json")
