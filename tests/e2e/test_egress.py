"""A Sandbox with spec.egress on the real node: the operator's sidecar starts
first and gates the sandbox on its readiness, answers the sandbox's DNS with
the policy's verdicts (logged with their rule), keeps the cluster's own
addresses out even for an allowed name, leaves the sandbox container without
the capability to touch the rules, and applies an edit of the Sandbox's
rules in the running pod, without a restart."""

from __future__ import annotations

import json

from conftest import sandbox_yaml, wait_running, wait_until

RESOLVE = ("import socket, sys\n"
           "try:\n"
           "    print(socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)[0][4][0])\n"
           "except socket.gaierror as e:\n"
           "    print('unresolved', e.errno)\n")


def resolve(kube, ns: str, name: str) -> str:
    return kube.exec(ns, "guarded", "python3", "-c", RESOLVE, name,
                     container="sandbox").stdout.strip()


def decisions(kube, ns: str) -> list[dict]:
    out = kube.kubectl("-n", ns, "logs", "guarded", "-c", "sbx-egress").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_sandbox_with_egress_rules_resolves_only_what_they_allow(operator, ns):
    kube = operator
    egress = {"defaultAction": "deny",
              "rules": [{"action": "allow", "target": "*.svc.cluster.local"}]}
    kube.apply(ns, sandbox_yaml(kube, "guarded", workingDir="/root", egress=egress))
    sbx = wait_running(kube, ns, "guarded")
    assert sbx["status"]["egress"]["rules"] == 1
    pod = kube.get(ns, "pod", "guarded")
    side = next(s for s in pod["status"]["initContainerStatuses"] if s["name"] == "sbx-egress")
    assert side["started"] and side["ready"] and side["restartCount"] == 0, side
    assert side["imageID"] == kube.image_id("egress")

    # A name no rule allows: NXDOMAIN from the sidecar, never asked upstream.
    assert resolve(kube, ns, "example.com").startswith("unresolved")
    # An allowed name whose address is the cluster's own (the operator's
    # always-deny ranges come first): refused too.
    assert resolve(kube, ns, "kubernetes.default.svc.cluster.local").startswith("unresolved")
    logs = decisions(kube, ns)
    by_name = {e["name"]: e for e in logs if e.get("msg") == "dns" and e["qtype"] == 1}
    assert by_name["example.com"]["outcome"] == "denied"
    assert by_name["example.com"]["rule"] == "defaultAction"
    k = by_name["kubernetes.default.svc.cluster.local"]
    assert (k["outcome"], k["rule"], k["denied"]) == ("chain_denied", "alwaysDeny[0]", "10.96.0.1"), k
    ready = next(e for e in logs if e.get("msg") == "ready")
    assert ready["default"] == "deny" and ready["ready_ms"] < 1000, ready

    # The sandbox runs as root but without NET_ADMIN: the rules are not its to change.
    caps = kube.exec(ns, "guarded", "sh", "-c", "grep CapEff /proc/self/status",
                     container="sandbox").stdout.split()[1]
    assert int(caps, 16) & (1 << 12) == 0, caps  # CAP_NET_ADMIN is bit 12

    # kubectl edit of the rules: the ConfigMap changes, the kubelet updates the
    # mounted file, the sidecar applies it; the pod is the same.
    uid = pod["metadata"]["uid"]
    egress["rules"].insert(0, {"action": "allow", "target": "example.com"})
    kube.kubectl("-n", ns, "patch", "sandbox", "guarded", "--type=merge",
                 "-p", json.dumps({"spec": {"egress": egress}}))
    applied = wait_until("the sidecar applying the edited rules",
                         lambda: [e for e in decisions(kube, ns) if e.get("msg") == "policy applied"],
                         timeout=150, interval=2)
    assert applied[0]["generation"] == 2
    resolve(kube, ns, "example.com")  # the cluster DNS has no internet: it cannot answer
    last = [e for e in decisions(kube, ns) if e.get("msg") == "dns" and e["name"] == "example.com"]
    assert last[-1]["verdict"] == "allow" and last[-1]["rule"] == "rules[0]", last[-1]
    assert kube.get(ns, "pod", "guarded")["metadata"]["uid"] == uid
