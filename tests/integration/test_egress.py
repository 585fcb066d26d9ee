"""sbx-egress's policy as an admin meets it, through `sbx-egress check`: the
compiled rules in evaluation order, the verdict and deciding rule for names
and addresses, the DNS-over-HTTPS names, and a bad policy refused with the
rule that is wrong. (Enforcement: test_egress_dns.py, test_egress_netns.py.)"""

from __future__ import annotations

import subprocess

from conftest import assert_no_sanitizer_report, binary


def egress(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(binary("egress-sidecar/sbx-egress")), *args], capture_output=True,
                       text=True, timeout=30)
    assert_no_sanitizer_report(r.stderr)
    return r


POLICY = """\
# YAML, with the operator-level lists in the file
defaultAction: deny
alwaysAllow: [collector.obs.svc.cluster.local]
alwaysDeny: [10.0.0.0/8, 169.254.169.254]
rules:
- {action: allow, target: "*.allowed.test"}
- {action: allow, target: Exact.Example.Test.}
- {action: allow, target: "b\u00fccher.example"}
- {action: allow, target: 203.0.113.0/24}
- {action: allow, target: "2001:db8::/32"}
"""


def test_check_shows_the_compiled_rules_in_order(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    r = egress(f"--policy-file={f}", "--always-deny=*.internal", "--doh-block=none", "check")
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0] == ["defaultAction", "deny"]
    assert rows[1:] == [
        ["0", "alwaysAllow[0]", "allow", "collector.obs.svc.cluster.local",
         "collector.obs.svc.cluster.local"],
        ["1", "alwaysDeny[0]", "deny", "10.0.0.0/8", "10.0.0.0/8"],
        ["2", "alwaysDeny[1]", "deny", "169.254.169.254", "169.254.169.254/32"],
        ["3", "alwaysDeny[2]", "deny", "*.internal", "*.internal"],
        ["4", "rules[0]", "allow", "*.allowed.test", "*.allowed.test"],
        ["5", "rules[1]", "allow", "Exact.Example.Test.", "exact.example.test"],
        ["6", "rules[2]", "allow", "b\u00fccher.example", "xn--bcher-kva.example"],
        ["7", "rules[3]", "allow", "203.0.113.0/24", "203.0.113.0/24"],
        ["8", "rules[4]", "allow", "2001:db8::/32", "2001:db8::/32"],
    ]


def test_check_tells_the_verdict_and_the_rule_that_decided(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    asked = ["a.allowed.test", "allowed.test", "EXACT.example.test.", "xn--bcher-kva.example",
             "db.internal", "evil.example", "203.0.113.9", "10.0.5.3", "169.254.169.254",
             "2001:db8:1::1", "2001:db9::1"]
    r = egress(f"--policy-file={f}", "--always-deny=*.internal", "check", *asked)
    assert r.returncode == 0, r.stderr
    got = {line.split("\t")[0]: tuple(line.split("\t")[1:3]) for line in r.stdout.splitlines()}
    assert got == {
        "a.allowed.test": ("allow", "rules[0]"),
        "allowed.test": ("deny", "defaultAction"),  # a wildcard is not its apex
        "EXACT.example.test.": ("allow", "rules[1]"),
        "xn--bcher-kva.example": ("allow", "rules[2]"),
        "db.internal": ("deny", "alwaysDeny[2]"),
        "evil.example": ("deny", "defaultAction"),
        "203.0.113.9": ("allow", "rules[3]"),
        "10.0.5.3": ("deny", "alwaysDeny[0]"),
        "169.254.169.254": ("deny", "alwaysDeny[1]"),
        "2001:db8:1::1": ("allow", "rules[4]"),
        "2001:db9::1": ("deny", "defaultAction"),
    }


def test_a_bad_policy_is_refused_with_the_rule_that_is_wrong(tmp_path):
    f = tmp_path / "policy.json"
    f.write_text('{"defaultAction":"deny","egress":[{"action":"allow","target":"pypi.org"},'
                 '{"action":"allow","target":"files..pythonhosted.org"}]}')
    r = egress(f"--policy-file={f}", "check")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (
        f'sbx-egress: {f}: rules[1]: target "files..pythonhosted.org" is not a DNS name, '
        "*.name, *, an IP address or a CIDR")
    # A flag's target is checked the same way, and named by its list.
    f.write_text('{"defaultAction":"deny"}')
    r = egress(f"--policy-file={f}", "--always-allow=ok.test", "--always-allow=not ok", "check")
    assert r.returncode == 1 and 'alwaysAllow[1]: target "not ok"' in r.stderr
    # More rules than --max-rules.
    f.write_text('{"defaultAction":"allow","rules":[' + ",".join(
        f'{{"action":"deny","target":"h{i}.test"}}' for i in range(11)) + "]}")
    r = egress(f"--policy-file={f}", "--max-rules=10", "check")
    assert r.returncode == 1 and "11 rules: at most 10" in r.stderr
    # No file, an unreadable one, one too large.
    assert "--policy-file is required" in egress("check").stderr
    r = egress(f"--policy-file={tmp_path / 'missing.json'}", "check")
    assert r.returncode == 1 and "No such file or directory" in r.stderr
    big = tmp_path / "big.json"
    big.write_text('{"defaultAction":"deny","rules":[]}' + " " * (4 << 20))
    r = egress(f"--policy-file={big}", "check")
    assert r.returncode == 1 and "larger than 4 MiB" in r.stderr


def test_known_doh_services_are_denied_unless_a_rule_allows_them(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("defaultAction: allow\nrules:\n- {action: allow, target: dns.quad9.net}\n")
    r = egress(f"--policy-file={f}", "check")
    doh = [line.split("\t") for line in r.stdout.splitlines() if "\tdohBlock[" in line]
    targets = [row[3] for row in doh]
    assert "dns.google" in targets and "*.cloudflare-dns.com" in targets
    assert all(row[2] == "deny" for row in doh)
    # Addresses are the firewall's (port 443 dropped), not name rules.
    assert "8.8.8.8" not in targets
    r = egress(f"--policy-file={f}", "check", "dns.google", "mozilla.cloudflare-dns.com",
               "dns.quad9.net", "example.com")
    got = {line.split("\t")[0]: tuple(line.split("\t")[1:3]) for line in r.stdout.splitlines()}
    assert got["dns.google"] == ("deny", f"dohBlock[{targets.index('dns.google')}]")
    assert got["mozilla.cloudflare-dns.com"][0] == "deny"
    assert got["dns.quad9.net"] == ("allow", "rules[0]")  # a rule allows it by name
    assert got["example.com"] == ("allow", "defaultAction")
    # A list of one's own, or none.
    r = egress(f"--policy-file={f}", "--doh-block=doh.example.net", "check", "dns.google",
               "doh.example.net")
    got = {line.split("\t")[0]: line.split("\t")[1] for line in r.stdout.splitlines()}
    assert got == {"dns.google": "allow", "doh.example.net": "deny"}
