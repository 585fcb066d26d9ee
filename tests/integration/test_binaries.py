"""Every sbx binary's command line: --help, --version, bad flags, config sources."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import REPO, assert_no_sanitizer_report, binary

PROGRAMS = {
    "sbx-operator": "operator/sbx-operator",
    "sbx-ingress": "ingress/sbx-ingress",
    "sbx-egress": "egress-sidecar/sbx-egress",
    "sbx-agent": "sandbox-agent/sbx-agent",
}


def project_version() -> str:
    m = re.search(r"project\(sbx VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    return m.group(1)


def run(prog, *args, env=None):
    r = subprocess.run([str(binary(PROGRAMS[prog])), *args], capture_output=True, text=True,
                       timeout=20, env=env)
    assert_no_sanitizer_report(r.stderr)
    return r


@pytest.mark.parametrize("prog", PROGRAMS)
def test_help_lists_options_and_environment(prog):
    r = run(prog, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith(f"Usage: {prog} ")
    prefix = prog.upper().replace("-", "_") + "_"
    for opt in ("--config FILE", "--log-level LEVEL", "--log-format FORMAT"):
        assert opt in r.stdout
    assert f"[{prefix}LOG_LEVEL]" in r.stdout
    assert run(prog, "-h").stdout == r.stdout


@pytest.mark.parametrize("prog", PROGRAMS)
def test_version(prog):
    r = run(prog, "--version")
    assert r.returncode == 0
    assert r.stdout.startswith(f"{prog} {project_version()}")


@pytest.mark.parametrize("prog", PROGRAMS)
@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "unknown flag '--no-such-flag'"),
    (["--log-level"], "flag --log-level: needs a value LEVEL"),
    (["--log-level=loud"], "log level 'loud': expected debug, info, warn, error or off"),
    (["-x"], "unknown flag '-x'"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_command_line_is_named(prog, args, message):
    r = run(prog, *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stderr.startswith(prog + ": ")


def test_config_file_errors_name_file_line_and_key(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("log-level: debug\nlog-formt: json\n")
    r = run("sbx-agent", f"--config={cfg}")
    assert r.returncode == 2
    assert f"{cfg}:2:1: unknown key 'log-formt'" in r.stderr

    cfg.write_text("log-level: [a, b]\n")
    r = run("sbx-agent", "--config", str(cfg))
    assert r.returncode == 2
    assert f"{cfg}:1:12: key 'log-level': expected a single value" in r.stderr

    cfg.write_text("log-level: debug\n  bad: indentation\n")
    r = run("sbx-agent", f"--config={cfg}")
    assert r.returncode == 2 and f"{cfg}:2:" in r.stderr and "invalid YAML" in r.stderr

    r = run("sbx-agent", f"--config={tmp_path / 'absent.yaml'}")
    assert r.returncode == 2 and "absent.yaml: No such file or directory" in r.stderr


def test_flags_override_environment_override_file(tmp_path):
    """The binaries log as configured: file < environment < flag."""
    cfg = tmp_path / "ingress.yaml"
    cfg.write_text("log-format: json\nlog-level: info\n")
    # No routing source it can use: it logs why and stops.
    env = dict(os.environ, SBX_INGRESS_KUBECONFIG=str(tmp_path / "absent"))
    r = run("sbx-ingress", f"--config={cfg}", env=env)
    line = json.loads(r.stderr.strip().splitlines()[-1])
    assert line["level"] == "error" and line["component"] == "sbx-ingress"

    env["SBX_INGRESS_LOG_FORMAT"] = "text"
    r = run("sbx-ingress", f"--config={cfg}", env=env)
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ERROR ", r.stderr)

    r = run("sbx-ingress", f"--config={cfg}", "--log-format=json", env=env)
    assert json.loads(r.stderr.strip().splitlines()[-1])["msg"]

    env["SBX_INGRESS_CONFIG"] = str(cfg)
    env.pop("SBX_INGRESS_LOG_FORMAT")
    r = run("sbx-ingress", env=env)
    assert json.loads(r.stderr.strip().splitlines()[-1])["component"] == "sbx-ingress"

    env["SBX_INGRESS_LOG_LEVEL"] = "off"
    r = run("sbx-ingress", env=env)
    assert r.stderr == ""
