"""A Sandbox with spec.egress on the real node: the operator's sidecar starts
first and gates the sandbox on its readiness; the sandbox reaches a name its
rules allow (an HTTP server on the node's stand-in for the internet,
allowed.world.test) and not a denied one, by name or by address; the
cluster's own addresses stay out even for an allowed name; the sandbox
container, root with every capability it has, cannot touch the rules; and an
edit of the Sandbox's rules applies in the running pod, without a restart,
and the Sandbox's status says when it has (the operator asks the sidecar)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from conftest import sandbox_yaml, wait_running, wait_until
from k8s_node import WORLD_HOSTS

PORT = 8780
RESOLVE = ("import socket, sys\n"
           "try:\n"
           "    print(socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)[0][4][0])\n"
           "except socket.gaierror as e:\n"
           "    print('unresolved', e.errno)\n")
FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())\n"
         "except Exception as e:\n"
         "    print('failed', type(e).__name__, getattr(e, 'reason', ''))\n")
# What a root process with the sandbox's capabilities gets when it asks the
# kernel to delete sbx-egress's table: an nftables batch over netlink.
DELETE_TABLE = r"""
import errno, os, socket, struct
NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE = 12, 10, 2
NLM_F_REQUEST, NLM_F_ACK, NFPROTO_INET = 1, 4, 1
def msg(mtype, flags, seq, family, payload=b"", res_id=0):
    body = struct.pack("BBH", family, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body
name = b"sbx_egress\0"
attr = struct.pack("HH", 4 + len(name), 1) + name + b"\0" * (-len(name) % 4)
batch = (msg(0x10, NLM_F_REQUEST, 1, 0, res_id=NFNL_SUBSYS_NFTABLES)
         + msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, 2,
               NFPROTO_INET, attr)
         + msg(0x11, NLM_F_REQUEST, 3, 0, res_id=NFNL_SUBSYS_NFTABLES))
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
s.send(batch)
reply = s.recv(65536)
code = struct.unpack("=i", reply[16:20])[0] if struct.unpack("=H", reply[4:6])[0] == 2 else 0
print(errno.errorcode.get(-code, code) if code else "deleted")
"""


class Who(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"served by {self.server.server_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def world():
    """An HTTP server on each of the node's internet addresses."""
    servers = [http.server.ThreadingHTTPServer((ip, PORT), Who) for ip in WORLD_HOSTS.values()]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield WORLD_HOSTS
    for s in servers:
        s.shutdown()
        s.server_close()


def py(kube, ns: str, code: str, *args: str) -> str:
    return kube.exec(ns, "guarded", "python3", "-c", code, *args, container="sandbox",
                     timeout=60).stdout.strip()


def applied_condition(kube, ns: str, status: str | None) -> dict | None:
    """The Sandbox's EgressPolicyApplied condition (when its status is
    status, if given)."""
    conds = kube.get(ns, "sandbox", "guarded")["status"].get("conditions", [])
    c = next((c for c in conds if c["type"] == "EgressPolicyApplied"), None)
    return c if c and (status is None or c["status"] == status) else None


def decisions(kube, ns: str) -> list[dict]:
    out = kube.kubectl("-n", ns, "logs", "guarded", "-c", "sbx-egress").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_sandbox_with_egress_rules_reaches_only_what_they_allow(operator, ns, world):
    kube = operator
    allowed, denied = world["allowed.world.test"], world["denied.world.test"]
    egress = {"defaultAction": "deny",
              "rules": [{"action": "allow", "target": "*.svc.cluster.local"},
                        {"action": "allow", "target": "allowed.world.test"}]}
    kube.apply(ns, sandbox_yaml(kube, "guarded", workingDir="/root", egress=egress))
    sbx = wait_running(kube, ns, "guarded")
    assert sbx["status"]["egress"]["rules"] == 2
    pod = kube.get(ns, "pod", "guarded")
    side = next(s for s in pod["status"]["initContainerStatuses"] if s["name"] == "sbx-egress")
    assert side["started"] and side["ready"] and side["restartCount"] == 0, side
    assert side["imageID"] == kube.image_id("egress")

    # The allowed name resolves through the sidecar and its server answers,
    # by name and at the address the answer gave.
    assert py(kube, ns, RESOLVE, "allowed.world.test") == allowed
    assert py(kube, ns, FETCH, f"http://allowed.world.test:{PORT}/") == f"served by {allowed}"
    assert py(kube, ns, FETCH, f"http://{allowed}:{PORT}/") == f"served by {allowed}"
    # The denied one: no answer (NXDOMAIN from the sidecar, never asked
    # upstream), and its address, dialled directly, is dropped.
    assert py(kube, ns, RESOLVE, "denied.world.test").startswith("unresolved")
    assert py(kube, ns, FETCH, f"http://{denied}:{PORT}/").startswith("failed")
    # An allowed name whose address is the cluster's own (the operator's
    # always-deny ranges come first): refused too.
    assert py(kube, ns, RESOLVE, "kubernetes.default.svc.cluster.local").startswith("unresolved")
    logs = decisions(kube, ns)
    by_name = {e["name"]: e for e in logs if e.get("msg") == "dns" and e["qtype"] == 1}
    a = by_name["allowed.world.test"]
    assert (a["outcome"], a["rule"], a["addresses"]) == ("allowed", "rules[1]", allowed), a
    assert (by_name["denied.world.test"]["outcome"], by_name["denied.world.test"]["rule"]) == \
        ("denied", "defaultAction")
    k = by_name["kubernetes.default.svc.cluster.local"]
    assert (k["outcome"], k["rule"], k["denied"]) == ("chain_denied", "alwaysDeny[0]", "10.96.0.1"), k
    ready = next(e for e in logs if e.get("msg") == "ready")
    assert ready["default"] == "deny" and ready["ready_ms"] < 1000, ready
    assert ready["policy_hash"] == sbx["status"]["egress"]["policyHash"]
    # The operator asks the sidecar what it enforces: the Sandbox says so.
    applied = wait_until("EgressPolicyApplied", lambda: applied_condition(kube, ns, "True"),
                         timeout=60, interval=1)
    assert applied["reason"] == "Applied", applied
    egress_status = kube.get(ns, "sandbox", "guarded")["status"]["egress"]
    assert egress_status["applied"] == {"policyHash": ready["policy_hash"], "generation": 1,
                                        "source": "file"}, egress_status

    # The sandbox runs as root, without NET_ADMIN: the kernel refuses its
    # request to delete the table, and it cannot use the sidecar's mark.
    caps = py(kube, ns, "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    assert int(caps, 16) & (1 << 12) == 0, caps  # CAP_NET_ADMIN is bit 12
    assert py(kube, ns, DELETE_TABLE) == "EPERM"
    assert py(kube, ns, "import socket\ns = socket.socket()\ntry:\n"
                        "    s.setsockopt(socket.SOL_SOCKET, 36, 0x5b0)\n    print('marked')\n"
                        "except PermissionError:\n    print('EPERM')") == "EPERM"
    assert py(kube, ns, FETCH, f"http://{denied}:{PORT}/").startswith("failed")

    # kubectl edit of the rules: the ConfigMap changes, the kubelet updates the
    # mounted file, the sidecar applies it; the pod is the same.
    uid = pod["metadata"]["uid"]
    egress["rules"][1] = {"action": "allow", "target": "*.world.test"}
    kube.kubectl("-n", ns, "patch", "sandbox", "guarded", "--type=merge",
                 "-p", json.dumps({"spec": {"egress": egress}}))
    # Until the kubelet updates the volume, the Sandbox says the edit is on its way.
    new_hash = wait_until("the new policy's digest in the status", lambda: (
        h := kube.get(ns, "sandbox", "guarded")["status"]["egress"]["policyHash"]) != ready[
        "policy_hash"] and h, timeout=30, interval=0.5)
    reasons = set()

    def applied_again():
        c = applied_condition(kube, ns, None)
        reasons.add(c and c["reason"])
        eg = kube.get(ns, "sandbox", "guarded")["status"]["egress"]
        return c and c["status"] == "True" and eg.get("applied", {}).get("policyHash") == new_hash

    wait_until("the sidecar applying the edited rules (EgressPolicyApplied)", applied_again,
               timeout=150, interval=1)
    print(f"condition reasons seen while the edit propagated: {sorted(map(str, reasons))}")
    applied = [e for e in decisions(kube, ns) if e.get("msg") == "policy applied"]
    assert applied[0]["generation"] == 2 and applied[0]["hash"] == new_hash
    assert py(kube, ns, FETCH, f"http://denied.world.test:{PORT}/") == f"served by {denied}"
    last = [e for e in decisions(kube, ns) if e.get("msg") == "dns" and e["name"] == "denied.world.test"]
    assert last[-1]["verdict"] == "allow" and last[-1]["rule"] == "rules[1]", last[-1]
    assert kube.get(ns, "pod", "guarded")["metadata"]["uid"] == uid
