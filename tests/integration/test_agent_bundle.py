"""The self-contained agent (make build -> build/agent-bundle) runs in an
image that has nothing of its own: a chroot holding only Debian's
busybox-static and the bundle at /opt/sbx, as an init container would copy
it into a distroless or musl image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from agent_sandbox import Sandbox

from conftest import BUILD, assert_no_sanitizer_report

BUSYBOX = shutil.which("busybox")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


@pytest.fixture
def image(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("chroot needs root; make test runs as root (it installs packages)")
    bundle = BUILD / "agent-bundle"
    if not (bundle / "bin/sbx-agent").exists():
        pytest.fail(f"{bundle} is missing: 'make build' makes it")
    root = tmp_path / "image"
    (root / "bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "work").mkdir()
    shutil.copy(BUSYBOX, root / "bin/busybox")
    subprocess.run([CHROOT, str(root), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    shutil.copytree(bundle, root / "opt/sbx", symlinks=True)
    # Nothing else: no /lib, no /usr, no /etc, no /proc.
    assert sorted(p.name for p in root.iterdir()) == ["bin", "opt", "tmp", "work"]
    # A sanitizer build's runtime reads its options and threads from /proc;
    # only that variant gets one. The release bundle runs without it.
    sanitized = any(p.name.startswith("libasan") for p in (root / "opt/sbx/lib").iterdir())
    if sanitized:
        (root / "proc").mkdir()
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    yield root
    if sanitized:
        subprocess.run(["umount", str(root / "proc")], check=True)


def run_agent(root, *args):
    env = {"PATH": "/bin", "HOME": "/work", "WORKSPACE": "/work"}
    # The host's chroot, with the environment the image will see.
    return subprocess.Popen([CHROOT, str(root), "/opt/sbx/bin/sbx-agent",
                             "--listen=127.0.0.1:0", "--log-format=json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_agent_serves_from_a_busybox_only_image(image):
    p = run_agent(image)
    line = {}
    while line.get("msg") != "listening":
        text = p.stderr.readline()
        assert text, f"agent ended: {p.wait()}"
        if text.startswith("{"):
            line = json.loads(text)
    c = Sandbox(base_url=f"http://127.0.0.1:{line['port']}")
    ctx = c.sandbox.get_context()
    assert ctx.home_dir == "/work" and ctx.detail.system.os == "Linux"
    assert ctx.detail.runtime.python == []  # this image has no Python
    shells = [t.name for cat in ctx.detail.utils if cat.category == "shell" for t in cat.tools]
    assert "sh" in shells  # busybox's
    w = c.file.write_file(file="note.txt", content="written inside the image")
    assert w.success and w.data.file == "/work/note.txt"
    assert (image / "work/note.txt").read_text() == "written inside the image"
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert_no_sanitizer_report(p.stderr.read())


def test_run_mode_in_the_image(image):
    p = run_agent(image, "run", "--", "/bin/sh", "-c", "echo from busybox sh; exit 5")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 5
    assert "from busybox sh" in out
    assert_no_sanitizer_report(err)


def test_bundle_carries_its_own_loader(image):
    agent = image / "opt/sbx/bin/sbx-agent"
    interp = subprocess.run(["readelf", "-l", str(agent)], capture_output=True, text=True).stdout
    assert "[Requesting program interpreter: /opt/sbx/lib/" in interp
    assert any(p.name.startswith("ld-linux") for p in (image / "opt/sbx/lib").iterdir())


def test_bundle_ships_no_kubernetes_client_libraries(image):
    """The agent talks to no apiserver: libcurl and what Debian's libcurl pulls
    in (gnutls, krb5, LDAP, ssh2, ...) are neither linked nor shipped."""
    libs = {p.name.split(".so")[0] for p in (image / "opt/sbx/lib").iterdir()}
    assert "libuv" in libs and "libc" in libs
    unwanted = {"libcurl", "libgnutls", "libkrb5", "libgssapi_krb5", "libldap-2", "libssh2",
                "librtmp", "libp11-kit", "libnettle", "libpsl", "libidn2"}
    assert not libs & unwanted, sorted(libs & unwanted)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: its mode and bytes (links: their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (0, os.readlink(p).encode())
        elif p.is_file():
            out[rel] = (p.stat().st_mode & 0o7777, p.read_bytes())
        else:
            out[rel] = (p.stat().st_mode & 0o7777, b"")
    return out


def test_install_copies_the_bundle_as_an_init_container_does(image):
    env = {"PATH": "/bin"}
    (image / "work/sbx").mkdir()
    r = subprocess.run([CHROOT, str(image), "/opt/sbx/bin/sbx-agent", "install", "/work/sbx"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "copied /opt/sbx into /work/sbx" in r.stderr
    assert tree(image / "work/sbx") == tree(image / "opt/sbx")
    assert not list((image / "work/sbx").rglob("*.tmp"))
    # Again over the first copy (a restarted init container): the same result.
    r = subprocess.run([CHROOT, str(image), "/opt/sbx/bin/sbx-agent", "install", "/work/sbx"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and tree(image / "work/sbx") == tree(image / "opt/sbx")
    assert_no_sanitizer_report(r.stderr)


def test_install_names_what_is_wrong(image):
    env = {"PATH": "/bin"}
    for args, message in [(["install", "/work/missing"], "no such folder: /work/missing"),
                          (["install"], "install wants one folder"),
                          (["install", "/work", "/tmp"], "install wants one folder")]:
        r = subprocess.run([CHROOT, str(image), "/opt/sbx/bin/sbx-agent", *args],
                           capture_output=True, text=True, env=env)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
        assert_no_sanitizer_report(r.stderr)
