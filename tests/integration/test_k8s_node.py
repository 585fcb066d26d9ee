"""The host check behind `scripts/cluster.sh down`: the record of the host
that `up` takes, and the comparison that fails `down` when anything is left.
Exercised here on real host changes of the kinds a node makes (a link, an
nft table, an ipset, a sysctl), each undone after."""

from __future__ import annotations

import os
import subprocess

import pytest

from k8s_node import host_diff, host_snapshot, sysctl_path

KEY = "net.bridge.bridge-nf-call-ip6tables"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def test_the_host_check_names_every_change_and_passes_once_they_are_undone():
    if os.geteuid() != 0:
        pytest.fail("changing links and nftables needs root; make test runs as root")
    before = host_snapshot()
    old = sysctl_path(KEY).read_text().strip()
    try:
        sh("ip", "link", "add", "sbxt-probe0", "type", "bridge")
        sh("nft", "add", "table", "inet", "sbxt_probe")
        sh("nft", "add", "chain", "inet", "sbxt_probe", "c")
        sh("ipset", "create", "sbxt-probe", "hash:ip")
        sysctl_path(KEY).write_text("0\n" if old == "1" else "1\n")
        diff = host_diff(before, host_snapshot())
        assert "links: left behind: sbxt-probe0" in diff
        assert "nft tables: left behind: inet sbxt_probe" in diff
        assert "nft chains: left behind: inet sbxt_probe c" in diff
        assert "ipsets: left behind: sbxt-probe" in diff
        assert any(line.startswith(f"sysctls: {KEY} was '{old}'") for line in diff), diff
    finally:
        subprocess.run(["ip", "link", "del", "sbxt-probe0"], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", "sbxt_probe"], capture_output=True)
        subprocess.run(["ipset", "destroy", "sbxt-probe"], capture_output=True)
        sysctl_path(KEY).write_text(old + "\n")
    assert host_diff(before, host_snapshot()) == []
