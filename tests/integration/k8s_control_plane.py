"""A real Kubernetes control plane on 127.0.0.1 for tests and local use.

Starts etcd, kube-apiserver and kube-controller-manager (built by
scripts/k8s-toolchain.sh) with a freshly generated CA, serving certificate,
admin client certificate (O=system:masters), service-account key pair and an
admin kubeconfig, waits until /readyz answers, and stops everything again.

    python3 tests/integration/k8s_control_plane.py up   # for humans: prints the kubeconfig
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller"


def toolchain_bin() -> Path:
    """The folder with kube-apiserver, kube-controller-manager, kubectl and etcd."""
    env = os.environ.get("SBX_K8S_BIN")
    if env:
        return Path(env)
    out = subprocess.run([str(REPO / "scripts" / "k8s-toolchain.sh")], check=True,
                         capture_output=True, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca=False,
          sans=None, server=False, client=False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                          False), critical=True)
    usages = ([x509.ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
             ([x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if usages:
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Pki:
    """CA, serving pair, admin client pair and service-account keys in a folder."""

    def __init__(self, folder: Path):
        self.dir = folder
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name("sbx-test-ca"), ca_key, _name("sbx-test-ca"), ca_key, ca=True)
        self.ca = folder / "ca.crt"
        self.ca.write_bytes(_pem(ca))

        srv_key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                          "kubernetes.default.svc",
                                          "kubernetes.default.svc.cluster.local")]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.0.0.1")]
        self.serving_crt, self.serving_key = folder / "apiserver.crt", folder / "apiserver.key"
        self.serving_crt.write_bytes(_pem(_cert(_name("kube-apiserver"), srv_key, ca.subject,
                                                ca_key, sans=sans, server=True)))
        _write_key(self.serving_key, srv_key)

        adm_key = ec.generate_private_key(ec.SECP256R1())
        self.admin_crt, self.admin_key = folder / "admin.crt", folder / "admin.key"
        self.admin_crt.write_bytes(_pem(_cert(_name("sbx-admin", "system:masters"), adm_key,
                                              ca.subject, ca_key, client=True)))
        _write_key(self.admin_key, adm_key)

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key, self.sa_pub = folder / "sa.key", folder / "sa.pub"
        _write_key(self.sa_key, sa_key)
        self.sa_pub.write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


class ApiClient:
    """requests on one HTTPS connection to the apiserver (a context manager)."""

    def __init__(self, port: int, ctx: ssl.SSLContext):
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)

    def request(self, method: str, path: str, body=None,
                content_type: str = "application/json") -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": content_type})
        r = self.conn.getresponse()
        text = r.read()
        return r.status, json.loads(text) if text else {}

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback."""

    def __init__(self, workdir: Path | None = None, bin_dir: Path | None = None,
                 service_cidr: str = "10.0.0.0/24"):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sbx-k8s-")
            workdir = Path(self._tmp.name)
        self.dir = Path(workdir)
        self.bin = Path(bin_dir) if bin_dir else toolchain_bin()
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.pki: Pki | None = None
        self.etcd_port = self.peer_port = self.port = 0
        self.kubeconfig = self.dir / "kubeconfig"
        # A static bearer token for the token forms of kubeconfig/in-cluster.
        self.token = "sbx-test-" + os.urandom(12).hex()
        self.token_file = self.dir / "tokens.csv"
        self.service_cidr = service_cidr  # 253 Services; benchmarks want more

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- processes ---------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.dir / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as f:
            self.procs[name] = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def _stop(self, name: str, timeout: float = 15) -> None:
        p = self.procs.pop(name, None)
        if not p or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-lines:])
        except (KeyError, OSError):
            return ""

    def _wait(self, name: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout}s:\n{self.log_tail(name)}")

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def get(self, path: str, timeout: float = 5, port: int | None = None) -> tuple[int, bytes]:
        """GET on the apiserver as admin; (status, body)."""
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port or self.port}{path}", context=self._ssl(),
                                        timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def client(self) -> "ApiClient":
        """One kept-alive admin connection, for tests that write fast."""
        return ApiClient(self.port, self._ssl())

    # -- parts -------------------------------------------------------------
    def start_etcd(self) -> None:
        data = self.dir / "etcd"
        self._spawn("etcd", [
            str(self.bin / "etcd"), "--name", "default", "--data-dir", str(data),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{self.peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn"])

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health",
                                        timeout=2) as r:
                return b'"true"' in r.read()
        self._wait("etcd", healthy, 60)

    def start_apiserver(self, extra: list[str] | None = None, name: str = "kube-apiserver",
                        port: int | None = None) -> None:
        """Starts an apiserver on self.port, or a further one on 'port' under 'name'."""
        p = self.pki
        port = port or self.port
        self._spawn(name, [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={p.serving_crt}", f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--authorization-mode=RBAC", "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--token-auth-file={self.token_file}",
            "--profiling=false", "--v=1", *(extra or [])])
        self._wait(name, lambda: self.get("/readyz", 3, port)[0] == 200, 120)

    def stop_apiserver(self, name: str = "kube-apiserver") -> None:
        self._stop(name)

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def start_controller_manager(self) -> None:
        self._spawn("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            f"--controllers={CONTROLLERS}", "--bind-address=127.0.0.1", "--secure-port=0",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca}", "--v=1"])

    def write_kubeconfig(self) -> None:
        p = self.pki
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: sbx-test
  cluster:
    server: {self.server}
    certificate-authority: {p.ca}
users:
- name: sbx-admin
  user:
    client-certificate: {p.admin_crt}
    client-key: {p.admin_key}
contexts:
- name: sbx-test
  context:
    cluster: sbx-test
    user: sbx-admin
    namespace: default
current-context: sbx-test
""")

    def start(self) -> "ControlPlane":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.dir)
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.write_kubeconfig()
        self.token_file.write_text(f'{self.token},sbx-token-admin,1001,"system:masters"\n')
        self.token_file.chmod(0o600)
        try:
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
            self._wait_default_namespace()
        except Exception:
            self.stop()
            raise
        return self

    def _wait_default_namespace(self) -> None:
        self._wait("kube-apiserver",
                   lambda: self.get("/api/v1/namespaces/default")[0] == 200, 60)

    def kubeconfig_for(self, port: int, path: Path) -> Path:
        """A copy of the admin kubeconfig pointing at another apiserver port."""
        path.write_text(self.kubeconfig.read_text().replace(f":{self.port}\n", f":{port}\n"))
        return path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None
                ) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                               *args], capture_output=True, text=True, check=check,
                              input=input, timeout=60)

    def stop(self) -> None:
        # Everything this plane started (extra apiservers too), etcd last.
        for name in [n for n in self.procs if n != "etcd"] + ["etcd"]:
            self._stop(name)
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] != "up":
        print(__doc__)
        return 2
    workdir = Path(os.environ.get("SBX_K8S_DIR", tempfile.mkdtemp(prefix="sbx-k8s-")))
    cp = ControlPlane(workdir)
    t0 = time.monotonic()
    cp.start()
    print(f"Kubernetes control plane ready in {time.monotonic() - t0:.1f}s at {cp.server}")
    print(f"  export KUBECONFIG={cp.kubeconfig}")
    print(f"  {cp.bin / 'kubectl'} get namespaces")
    print(f"logs in {workdir}; Ctrl-C stops everything.", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
