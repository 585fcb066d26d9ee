"""sbx-egress's DNS proxy against a real DNS server (Debian's dnsmasq, serving
test names on 127.0.0.1) and a real resolver library as the client
(dnspython), over UDP and TCP. The proxy runs in tests/tools/sbx-dnstool,
which records what it would hand the firewall instead of changing one (the
firewall is tested in test_egress_netns.py): denied names get NXDOMAIN
without reaching the upstream, allowed ones are answered from it, and an
answer whose CNAME chain or address is denied is refused."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import assert_no_sanitizer_report, binary
from k8s_control_plane import free_port

POLICY = """\
defaultAction: deny
alwaysDeny: [10.0.0.0/8]
rules:
- {action: deny, target: blocked.allowed.test}
- {action: allow, target: "*.allowed.test"}
- {action: allow, target: exact.example.test}
"""

RECORDS = [
    "--host-record=www.allowed.test,192.0.2.1,2001:db8::1",
    "--host-record=exact.example.test,203.0.113.10",
    "--host-record=target.denied.test,198.51.100.7",
    "--cname=alias.allowed.test,target.denied.test",
    "--host-record=inside.allowed.test,10.1.2.3",
    "--host-record=denied.test,198.51.100.8",
    "--host-record=blocked.allowed.test,192.0.2.66",
    "--host-record=allowed.test,192.0.2.99",
]


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        port = free_port()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise RuntimeError("no free port")


@pytest.fixture
def upstream():
    """dnsmasq serving the test names, and nothing else (no resolv.conf, no hosts)."""
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not shutil.which(exe):
        pytest.fail("dnsmasq is not installed (scripts/setup.sh installs dnsmasq-base)")
    port = free_udp_tcp_port()
    p = subprocess.Popen([exe, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                          "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
                          "--local-ttl=60", "--log-facility=-", "--pid-file=", *RECORDS],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Ready when it answers.
    deadline = time.monotonic() + 10
    while True:
        try:
            dns.query.udp(dns.message.make_query("www.allowed.test", "A"), "127.0.0.1",
                          port=port, timeout=0.2)
            break
        except (dns.exception.Timeout, OSError):
            if time.monotonic() > deadline or p.poll() is not None:
                p.kill()
                pytest.fail(f"dnsmasq did not start: {p.stderr.read()}")
    yield port
    p.terminate()
    p.wait(timeout=10)


class Proxy:
    def __init__(self, lines, tmp_path, upstream_port: int, *extra: str):
        self.policy = tmp_path / "policy.yaml"
        self.policy.write_text(POLICY)
        self.port = free_udp_tcp_port()
        self.proc = lines([binary("tests/tools/sbx-dnstool"), f"--policy-file={self.policy}",
                           f"--listen=127.0.0.1:{self.port}",
                           f"--upstream=127.0.0.1:{upstream_port}", *extra])
        self.proc.until(lambda e: e["event"] == "ready")

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=3)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)

    def decision(self, name: str) -> dict:
        return self.proc.until(lambda e: e["event"] == "decision" and e["name"] == name)

    def stats(self) -> dict:
        self.proc.proc.send_signal(signal.SIGUSR1)
        return self.proc.until(lambda e: e["event"] == "stats")


def addresses(m: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in m.answer for r in rrset
                  if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))


def test_allowed_names_are_answered_and_learned_denied_ones_get_nxdomain(lines, tmp_path,
                                                                          upstream):
    px = Proxy(lines, tmp_path, upstream)
    for tcp in (False, True):
        m = px.ask("www.allowed.test", tcp=tcp)
        assert m.rcode() == dns.rcode.NOERROR and addresses(m) == ["192.0.2.1"]
        learned = px.proc.until(lambda e: e["event"] == "learn")
        assert (learned["name"], learned["addrs"], learned["ttls"]) == \
            ("www.allowed.test", ["192.0.2.1"], [60])
        d = px.decision("www.allowed.test")
        assert (d["outcome"], d["rule"], d["target"]) == ("allowed", "rules[1]", "*.allowed.test")
    m = px.ask("www.allowed.test", "AAAA")
    assert addresses(m) == ["2001:db8::1"]
    assert px.proc.until(lambda e: e["event"] == "learn")["addrs"] == ["2001:db8::1"]
    assert addresses(px.ask("exact.example.test")) == ["203.0.113.10"]

    # Denied: by default, the wildcard's apex, a rule placed before the wildcard;
    # case and the trailing dot change nothing.
    for name, rule in [("denied.test", "defaultAction"), ("allowed.test", "defaultAction"),
                       ("blocked.allowed.test", "rules[0]"), ("DENIED.Test.", "defaultAction"),
                       ("sub.exact.example.test", "defaultAction")]:
        for tcp in (False, True):
            m = px.ask(name, tcp=tcp)
            assert m.rcode() == dns.rcode.NXDOMAIN and not m.answer, name
            d = px.decision(name.rstrip("."))
            assert (d["outcome"], d["rule"]) == ("denied", rule), d
    assert addresses(px.ask("WWW.Allowed.TEST.")) == ["192.0.2.1"]
    s = px.stats()
    assert s["denied"] == 10 and s["allowed"] == 5 and s["inflight"] == 0


def test_a_chain_or_address_that_leaves_the_policy_is_refused(lines, tmp_path, upstream):
    px = Proxy(lines, tmp_path, upstream)
    # alias.allowed.test is allowed, but its CNAME points at a denied name.
    m = px.ask("alias.allowed.test")
    assert m.rcode() == dns.rcode.NXDOMAIN and not m.answer
    d = px.decision("alias.allowed.test")
    assert (d["outcome"], d["denied"]) == ("chain_denied", "target.denied.test")
    # inside.allowed.test resolves into an always-denied range.
    m = px.ask("inside.allowed.test", tcp=True)
    assert m.rcode() == dns.rcode.NXDOMAIN
    d = px.decision("inside.allowed.test")
    assert (d["outcome"], d["rule"], d["denied"]) == ("chain_denied", "alwaysDeny[0]", "10.1.2.3")
    assert px.stats()["chain_denied"] == 2


def test_refused_mode_learning_failures_and_a_dead_upstream(lines, tmp_path, upstream):
    px = Proxy(lines, tmp_path, upstream, "--refused", "--learn-fail")
    assert px.ask("denied.test").rcode() == dns.rcode.REFUSED
    # The firewall could not take the addresses: the answer is not released.
    m = px.ask("www.allowed.test")
    assert m.rcode() == dns.rcode.SERVFAIL and not m.answer
    assert px.decision("www.allowed.test")["outcome"] == "not_learned"
    # An upstream that does not answer: SERVFAIL once c-ares gives up.
    dead = Proxy(lines, tmp_path, free_udp_tcp_port(), "--timeout-ms=300")
    m = dead.ask("www.allowed.test")
    assert m.rcode() == dns.rcode.SERVFAIL
    assert dead.decision("www.allowed.test")["outcome"] == "upstream_failed"


def test_malformed_and_other_messages(lines, tmp_path, upstream):
    px = Proxy(lines, tmp_path, upstream)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    # Garbage, a cut query, and a response are dropped without an answer.
    good = dns.message.make_query("www.allowed.test", "A").to_wire()
    for junk in (b"\x00" * 5, good[:-3], good[:2] + b"\x81\x80" + good[4:]):
        s.sendto(junk, ("127.0.0.1", px.port))
        with pytest.raises(socket.timeout):
            s.recv(4096)
    # Class CHAOS (version.bind): REFUSED with the question echoed.
    q = dns.message.make_query("version.bind", "TXT", "CH")
    m = dns.query.udp(q, "127.0.0.1", port=px.port, timeout=3)
    assert m.rcode() == dns.rcode.REFUSED and m.question[0].name == q.question[0].name
    # The proxy still answers.
    assert addresses(px.ask("www.allowed.test")) == ["192.0.2.1"]
    st = px.stats()
    assert st["malformed"] == 3 and st["not_a_query"] == 1
    # A TCP client that sends a frame too short to be DNS is closed.
    with socket.create_connection(("127.0.0.1", px.port), timeout=3) as c:
        c.sendall(b"\x00\x03abc")
        assert c.recv(10) == b""


def test_a_policy_reload_flips_a_verdict(lines, tmp_path, upstream):
    px = Proxy(lines, tmp_path, upstream)
    assert px.ask("exact.example.test").rcode() == dns.rcode.NOERROR
    px.policy.write_text(POLICY.replace("exact.example.test", "other.example.test"))
    px.proc.proc.send_signal(signal.SIGHUP)
    px.proc.until(lambda e: e["event"] == "reloaded")
    assert px.ask("exact.example.test").rcode() == dns.rcode.NXDOMAIN
    assert px.ask("www.allowed.test").rcode() == dns.rcode.NOERROR
    out = px.proc.close()
    assert_no_sanitizer_report(out)
