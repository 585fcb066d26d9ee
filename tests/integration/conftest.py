"""Shared fixtures: where the built binaries are, and a real control plane."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from k8s_control_plane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("SBX_BUILD_DIR", REPO / "build"))


def _sanitized() -> bool:
    cache = BUILD / "CMakeCache.txt"
    return cache.exists() and "SBX_SANITIZE:BOOL=ON" in cache.read_text()


# Under ASan, freed memory sits in a quarantine (256 MiB) and every byte has
# shadow: memory figures say nothing about the program. Tests that bound
# memory check it in the plain build's run of the suite only.
SANITIZED = _sanitized()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_no_sanitizer_report(stderr: str) -> None:
    """Under the ASan+UBSan build, any report fails the test that caused it."""
    for mark in SANITIZER_MARKS:
        assert mark not in stderr, stderr


def describe_process(pid: int) -> str:
    """pid, its group, session, parent and their command lines, for a failure message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ppid, pgid, sid = fields[1], fields[2], fields[3]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return f"{pid} (gone)"
    return f"{pid} {cmd.strip()!r} pgid {pgid} sid {sid}, parent {ppid} {parent.strip()!r}"


def wait_gone(cmdlines, timeout: float = 5) -> None:
    """Until no process has one of these exact command lines (a test's own
    sleeps, each with a duration no other test uses); fails naming them."""
    wanted = set(cmdlines)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes() if p[3].strip() in wanted]
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError("survivors: " + "; ".join(describe_process(p[0]) for p in left))
        time.sleep(0.05)


def processes() -> list[tuple[int, int, str, str]]:
    """(pid, ppid, state, cmdline) of every process, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out.append((int(d.name), int(fields[1]), fields[0], cmd))
    return out


def zombies_below(root: int) -> list[tuple[int, str]]:
    """Zombies among root's descendants. (The machine's own init may hold
    others; they are not ours to judge.)"""
    children: dict[int, list] = {}
    for pid, ppid, state, cmd in processes():
        children.setdefault(ppid, []).append((pid, state, cmd))
    found, todo = [], [root]
    while todo:
        for pid, state, cmd in children.get(todo.pop(), []):
            if state == "Z":
                found.append((pid, cmd))
            todo.append(pid)
    return found


def assert_no_zombies_below(root: int, timeout: float = 5) -> None:
    """No zombie stays under root. One may show for a moment (any child that
    is exiting is one until its parent hears of it), so this waits a little."""
    deadline = time.monotonic() + timeout
    while found := zombies_below(root):
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def binary(rel: str) -> Path:
    path = BUILD / rel
    if not path.exists():
        pytest.fail(f"{path} is not built (run 'make build' or set SBX_BUILD_DIR)")
    return path


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    cp = ControlPlane(tmp_path_factory.mktemp("k8s"))
    cp.start()
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def crd(control_plane):
    """The control plane with the Sandbox CRD installed and established."""
    control_plane.kubectl("apply", "-f", str(REPO / "manifests" / "crd" / "sbx.dev_sandboxes.yaml"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/sandboxes.sbx.dev",
                          "--timeout=60s")
    return control_plane


@pytest.fixture
def namespace(control_plane, request):
    """A fresh namespace per test, so tests never see each other's objects."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + \
        "-" + os.urandom(3).hex()
    control_plane.kubectl("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, which the
    # controller-manager makes; after a test restarted the apiserver, its
    # watches take a while to come back.
    deadline = time.monotonic() + 120
    while control_plane.kubectl("-n", name, "get", "serviceaccount", "default",
                                check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {name}: no default ServiceAccount after 120 s")
        time.sleep(0.1)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


class Lines:
    """A background process whose stdout is JSON lines, read as they come."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.q: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.stderr = ""
        self._err: list[str] = []
        # Both pipes are read by threads of their own until the process ends,
        # so neither fills up and neither is closed under a reader.
        self._readers = [threading.Thread(target=self._pump, daemon=True),
                         threading.Thread(target=lambda: self._err.extend(self.proc.stderr),
                                          daemon=True)]
        for t in self._readers:
            t.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def next(self, timeout: float = 20) -> dict:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; seen so far: {self.seen}")
        if item is None:
            raise AssertionError(f"process ended early: {self.close()}")
        self.seen.append(item)
        return item

    def until(self, pred, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout}s; seen: {self.seen}")
            item = self.next(left)
            if pred(item):
                return item

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._readers:
            t.join(timeout=10)
        self.stderr = "".join(self._err)
        return self.stderr


@pytest.fixture
def lines():
    started: list[Lines] = []

    def start(argv, env=None) -> Lines:
        p = Lines([str(a) for a in argv], env)
        started.append(p)
        return p
    yield start
    for p in started:
        p.close()
        assert_no_sanitizer_report(p.stderr)
        # SIGTERM is a graceful stop: everything released, exit status 0.
        assert p.proc.returncode == 0, (p.proc.returncode, p.stderr[-2000:])


def make_tls_pair(tmp_path):
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in tmp_path."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"
