"""A real one-node Kubernetes cluster on this machine, for end-to-end tests
and `make demo`: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd + runc, the kubelet, the CNI bridge, kube-proxy
(nftables), kube-router (NetworkPolicy firewall only) and CoreDNS (a
Deployment behind the cluster DNS Service). Images come from OCI archives
that scripts/images.sh writes; there is no registry.

    python3 tests/integration/k8s_node.py up       # idempotent; last line: export KUBECONFIG=...
    python3 tests/integration/k8s_node.py status
    python3 tests/integration/k8s_node.py import ARCHIVE...
    python3 tests/integration/k8s_node.py down     # stops it all, restores the host, checks it

scripts/cluster.sh runs this file with the project's Python; the pytest
fixture `node_cluster` (tests/e2e/conftest.py) uses the same class.

Addresses: the node is 10.250.0.1 on the port-less bridge sbx-node0 (the
apiserver on :16443, the kubelet on :10250); pods are 10.244.0.0/24 on the
bridge sbx-br0; Services are 10.96.0.0/24 (kubernetes 10.96.0.1, cluster DNS
10.96.0.10). Everything else listens on 127.0.0.1. The nft table
`inet sbx_guard` drops any forwarded packet that would leave the pod bridge.

The node also stands in for the internet: sbx-node0 holds 198.51.100.1 and
198.51.100.2 (TEST-NET-2, outside every range sandboxes are denied by
default), and CoreDNS answers the zone world.test for them
(allowed.world.test, denied.world.test), so a test can serve HTTP there and
show a sandbox's egress rules reaching one name and not the other.
One cluster per machine: link names, ranges and ports are fixed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from k8s_control_plane import REPO, _cert, _name, _pem, _write_key, toolchain_bin

CACHE = Path(os.environ.get("SBX_CACHE", Path.home() / ".cache" / "sbx"))
STATE = Path(os.environ.get("SBX_CLUSTER_STATE", CACHE / "cluster"))
RUNDIR = Path("/run/sbx-cluster")  # containerd's sockets and task state
LAST_LOGS = CACHE / "cluster-last-logs"

NODE = "sbx-node"
NODE_LINK = "sbx-node0"
POD_BRIDGE = "sbx-br0"
NODE_IP = "10.250.0.1"
POD_CIDR = "10.244.0.0/24"
POD_GW = "10.244.0.1"
SVC_CIDR = "10.96.0.0/24"
KUBERNETES_SVC_IP = "10.96.0.1"
DNS_SVC_IP = "10.96.0.10"
WORLD_ZONE = "world.test"
WORLD_HOSTS = {"allowed.world.test": "198.51.100.1", "denied.world.test": "198.51.100.2"}
API_PORT = 16443
ETCD_PORT = 12379
GUARD_TABLE = "sbx_guard"
PAUSE_IMAGE = "sbx.local/pause:1"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"

# Global sysctls the kubelet rewrites at start, and the two the node needs.
SYSCTLS = ["vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
           "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]
# Host paths that components write by default; none may appear.
HOST_PATHS = ["/var/lib/kubelet", "/var/lib/cni", "/etc/cni", "/opt/containerd",
              "/var/lib/containerd", "/run/containerd", "/var/log/pods", "/var/log/containers",
              "/etc/kubernetes", "/run/netns", "/var/run/nri", "/var/lib/kube-router"]
# Start order; stop goes the other way.
COMPONENTS = ["containerd", "etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "kubelet", "kube-proxy", "kube-router"]


class ClusterError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input,
                          timeout=timeout)


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


# -- the host, before and after ---------------------------------------------

def host_snapshot() -> dict:
    """Everything `up` may change on the host, in a form that compares."""
    links = sorted(json.loads(run("ip", "-j", "link", "show").stdout or "[]"),
                   key=lambda link: link["ifname"])
    ruleset = json.loads(run("nft", "-j", "list", "ruleset").stdout or "{}")
    chains = sorted(f"{c['chain']['family']} {c['chain']['table']} {c['chain']['name']}"
                    for c in ruleset.get("nftables", []) if "chain" in c)
    tables = sorted(f"{t['table']['family']} {t['table']['name']}"
                    for t in ruleset.get("nftables", []) if "table" in t)
    ipsets = sorted(run("ipset", "list", "-n", check=False).stdout.split())
    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    cgroups = sorted(str(p) for root in Path("/sys/fs/cgroup").iterdir() if root.is_dir()
                     for p in root.iterdir() if p.is_dir())
    sysctls = {}
    for k in SYSCTLS:
        try:
            sysctls[k] = sysctl_path(k).read_text().strip()
        except OSError:
            sysctls[k] = None
    return {"links": [link["ifname"] for link in links], "nft tables": tables, "nft chains": chains,
            "ipsets": ipsets, "mounts": mounts, "cgroups": cgroups, "sysctls": sysctls,
            "paths": [p for p in HOST_PATHS if os.path.lexists(p)]}


def host_diff(before: dict, after: dict) -> list[str]:
    """What differs, one line per difference; empty when the host is as it was."""
    out = []
    for key, was in before.items():
        now = after.get(key)
        if isinstance(was, dict):
            out += [f"{key}: {k} was {was[k]!r}, is {now.get(k)!r}" for k in was if now.get(k) != was[k]]
            continue
        out += [f"{key}: left behind: {x}" for x in sorted(set(now) - set(was))]
        out += [f"{key}: gone: {x}" for x in sorted(set(was) - set(now))]
    return out


# -- certificates -------------------------------------------------------------

class NodePki:
    """A throwaway CA, a serving pair for the apiserver and the kubelet, one
    client pair (and kubeconfig) per component, the service-account keys."""

    CLIENTS = {  # file name: (CN, O)
        "admin": ("sbx-admin", "system:masters"),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
        "kubelet": (f"system:node:{NODE}", "system:nodes"),
        "scheduler": ("system:kube-scheduler", None),
        "controller-manager": ("system:kube-controller-manager", None),
        "kube-proxy": ("system:kube-proxy", None),
        # kube-router reads pods, namespaces and policies of every namespace and
        # writes nothing; cluster-admin keeps this test node simple.
        "kube-router": ("sbx-kube-router", "system:masters"),
    }

    def __init__(self, folder: Path):
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(_name("sbx-cluster-ca"), ca_key, _name("sbx-cluster-ca"), ca_key, ca=True)
        (folder / "ca.crt").write_bytes(_pem(ca))
        _write_key(folder / "ca.key", ca_key)

        def issue(name: str, cn: str, org: str | None, sans=None, server=False) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(_name(cn, org), key, ca.subject, ca_key, sans=sans, server=server,
                         client=not server)
            (folder / f"{name}.crt").write_bytes(_pem(cert))
            _write_key(folder / f"{name}.key", key)

        ip = lambda a: x509.IPAddress(ipaddress.ip_address(a))  # noqa: E731
        issue("apiserver", "kube-apiserver", None, server=True, sans=[
            *(x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                        "kubernetes.default.svc",
                                        "kubernetes.default.svc.cluster.local")),
            ip("127.0.0.1"), ip(NODE_IP), ip(KUBERNETES_SVC_IP)])
        issue("kubelet-serving", NODE, None, server=True,
              sans=[x509.DNSName(NODE), ip(NODE_IP)])
        for name, (cn, org) in self.CLIENTS.items():
            issue(name, cn, org)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(folder / "sa.key", sa)
        (folder / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        for name in self.CLIENTS:
            self.write_kubeconfig(name)

    def write_kubeconfig(self, user: str) -> Path:
        path = self.dir / f"{user}.kubeconfig"
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: sbx
  cluster:
    server: https://{NODE_IP}:{API_PORT}
    certificate-authority: {self.dir / 'ca.crt'}
users:
- name: {user}
  user:
    client-certificate: {self.dir / f'{user}.crt'}
    client-key: {self.dir / f'{user}.key'}
contexts:
- name: sbx
  context: {{cluster: sbx, user: {user}, namespace: default}}
current-context: sbx
""")
        path.chmod(0o600)
        return path


# -- the cluster --------------------------------------------------------------

class NodeCluster:
    """The one node of this machine. All state lives in STATE and RUNDIR;
    `down` removes both and puts the host back as `up` found it."""

    def __init__(self, state: Path = STATE, bin_dir: Path | None = None):
        self.state = state
        self._bin = bin_dir
        self.timings: dict[str, float] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    # paths
    @property
    def bin(self) -> Path:
        """The toolchain's bin folder: the one the running cluster was started
        from (so `down` never builds anything), or the toolchain script's."""
        if self._bin is None:
            recorded = self.state / "toolchain"
            self._bin = Path(recorded.read_text().strip()) if recorded.exists() else toolchain_bin()
        return self._bin

    @property
    def kubeconfig(self) -> Path:
        return self.state / "pki" / "admin.kubeconfig"

    @property
    def containerd_sock(self) -> Path:
        return RUNDIR / "containerd.sock"

    def _pid_file(self, name: str) -> Path:
        return self.state / "pids" / name

    def _log_file(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    # processes
    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        with open(self._log_file(name), "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env)
        self.procs[name] = p
        self._pid_file(name).write_text(f"{p.pid}\n")

    def pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text())
        except (OSError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        if p is not None:
            return p.poll() is None
        pid = self.pid(name)
        if pid is None:
            return False
        try:  # a zombie (parent gone, not yet reaped) is not alive
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self._log_file(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, name: str, what: str, check, timeout: float) -> float:
        """Polls check() until true; fails early if component 'name' exits."""
        t0 = time.monotonic()
        while True:
            try:
                if check():
                    return time.monotonic() - t0
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            if name and not self.alive(name):
                raise ClusterError(f"{name} exited while waiting for {what}:\n{self.log_tail(name)}")
            if time.monotonic() - t0 > timeout:
                raise ClusterError(f"{what}: not after {timeout:.0f} s\n{self.log_tail(name) if name else ''}")
            time.sleep(0.1)

    def _stop(self, name: str, timeout: float = 15) -> None:
        pid = self.pid(name)
        if pid is None or not self.alive(name):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.alive(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive(name):
            log(f"{name} did not stop in {timeout:.0f} s; killing it")
            os.kill(pid, signal.SIGKILL)
            while self.alive(name):
                time.sleep(0.05)
        p = self.procs.pop(name, None)
        if p is not None:
            p.wait()

    def _timed(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    # tools
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                           capture_output=True, text=True, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(str(self.bin / "ctr"), "--address", str(self.containerd_sock), "-n", "k8s.io",
                   *args, check=check, timeout=timeout)

    # -- status ---------------------------------------------------------------
    def is_up(self) -> bool:
        return (self.state / "up").exists() and all(self.alive(c) for c in COMPONENTS)

    def status(self) -> str:
        lines = []
        for c in COMPONENTS:
            pid = self.pid(c)
            lines.append(f"{c:24} {'running' if self.alive(c) else 'stopped'}"
                         + (f" (pid {pid})" if pid else ""))
        if self.alive("kube-apiserver"):
            r = self.kubectl("get", "nodes", "--no-headers", check=False)
            lines.append(r.stdout.strip() or r.stderr.strip())
        if self.state.exists():
            lines.append(f"guard table {GUARD_TABLE}: {self.guard_drops()} packets kept from leaving")
        return "\n".join(lines)

    # -- up -------------------------------------------------------------------
    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError("the test cluster needs root (links, nftables, mounts, cgroups)")
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise ClusterError("the kernel has no overlay file system (containerd's snapshotter)")
        if not Path("/proc/sys/net/bridge").is_dir():
            raise ClusterError("br_netfilter is not loaded (/proc/sys/net/bridge is missing)")
        for tool in ("ip", "nft", "iptables", "ipset", "conntrack", RUNC, f"{CNI_BIN}/bridge"):
            if not shutil.which(tool):
                raise ClusterError(f"{tool} is missing: run scripts/setup.sh")
        missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                               "kubelet", "kube-proxy", "kubectl", "kube-router", "containerd",
                               "containerd-shim-runc-v2", "ctr")
                   if not (self.bin / b).exists()]
        if missing:
            raise ClusterError(f"{self.bin} lacks {', '.join(missing)}: run scripts/k8s-toolchain.sh")

    def up(self, images: list[Path] | None = None) -> "NodeCluster":
        """Starts the cluster (or finds it running) and imports 'images'
        (default: every archive scripts/images.sh listed for SBX_BUILD_DIR)."""
        if images is None:
            images = self.default_images()
        if self.is_up():
            log("already up")
            self.import_images(images)
            return self
        if self.state.exists():
            log(f"a partial cluster is in {self.state}; taking it down first")
            self.down(verify=False)
        self.preflight()
        t_all = time.monotonic()
        for d in ("logs", "pids", "cni/net.d", "cni/ipam", "cni/cache", "pod-logs", "kubelet"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        RUNDIR.mkdir(parents=True, exist_ok=True)
        (self.state / "host-before.json").write_text(json.dumps(host_snapshot(), indent=1))
        (self.state / "toolchain").write_text(f"{self.bin}\n")
        try:
            self._host_network()
            NodePki(self.state / "pki")
            self._start_containerd()
            self.import_images(images)
            self._start_control_plane()
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_kube_router()
            self._start_coredns()
            t0 = time.monotonic()
            self._wait("kube-controller-manager", "the default ServiceAccount",
                       lambda: self.kubectl("-n", "default", "get", "serviceaccount", "default",
                                            check=False).returncode == 0, 60)
            self._timed("default ServiceAccount", t0)
        except BaseException:
            log("up failed; taking the partial cluster down (logs stay in "
                f"{LAST_LOGS})")
            self.down(verify=False)
            raise
        self._timed("node up (total)", t_all)
        (self.state / "timings.json").write_text(json.dumps(self.timings, indent=1))
        (self.state / "up").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        return self

    def _host_network(self) -> None:
        if run("ip", "link", "show", NODE_LINK, check=False).returncode != 0:
            # A port-less bridge holds the node address: some kernels have no dummy links.
            run("ip", "link", "add", NODE_LINK, "type", "bridge")
        run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_LINK)
        for addr in WORLD_HOSTS.values():
            run("ip", "addr", "replace", f"{addr}/32", "dev", NODE_LINK)
        run("ip", "link", "set", NODE_LINK, "up")
        # Pods may talk to each other, the node and Services; nothing they send
        # is forwarded anywhere else, and this machine routes for nobody.
        run("nft", "-f", "-", input=f"""
table inet {GUARD_TABLE}
delete table inet {GUARD_TABLE}
table inet {GUARD_TABLE} {{
	chain forward {{
		type filter hook forward priority raw; policy accept;
		ip saddr {POD_CIDR} oifname != "{POD_BRIDGE}" counter drop comment "pod traffic stays on this machine"
		iifname != "{POD_BRIDGE}" oifname != "{POD_BRIDGE}" counter drop comment "no routing for others"
	}}
}}
""")
        for key in ("net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"):
            sysctl_path(key).write_text("1\n")

    def guard_drops(self) -> int:
        """Packets the guard table dropped since up (0 unless something tried to leave)."""
        r = run("nft", "-j", "list", "table", "inet", GUARD_TABLE, check=False)
        total = 0
        for item in json.loads(r.stdout or "{}").get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += expr["counter"]["packets"]
        return total

    def _start_containerd(self) -> None:
        s = self.state
        oom = ""
        cap_eff = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                           if line.startswith("CapEff")), 16)
        if not cap_eff >> 24 & 1:
            # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj below its
            # own (the pause container asks for -998): clamp instead of failing.
            oom = "restrict_oom_score_adj = true"
        (s / "containerd.toml").write_text(f"""version = 3
root = '{s}/containerd'
state = '{RUNDIR}/containerd'
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp',
                    'io.containerd.internal.v1.tracing']
[grpc]
  address = '{self.containerd_sock}'
[ttrpc]
  address = '{self.containerd_sock}.ttrpc'
[debug]
  level = 'warn'
[plugins.'io.containerd.internal.v1.opt']
  path = '{s}/opt'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  {oom}
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{RUNC}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN}']
    conf_dir = '{s}/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
""")
        (s / "cni/net.d/10-sbx.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "sbx",
            "plugins": [
                {"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(s / "cni/ipam"),
                          "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GW}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=1))
        t0 = time.monotonic()
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        self._spawn("containerd", [str(self.bin / "containerd"), "--config", str(s / "containerd.toml")],
                    env=env)
        self._wait("containerd", "containerd's socket", lambda: self.ctr("version").returncode == 0, 30)
        self._timed("containerd ready", t0)

    def default_images(self) -> list[Path]:
        """Every archive of images.env: the node's own (pause, CoreDNS) and sbx's."""
        return [Path(v) for k, v in self.images_env().items() if k.startswith("SBX_ARCHIVE_")]

    @staticmethod
    def images_env(build: Path | None = None) -> dict[str, str]:
        """NAME=VALUE lines scripts/images.sh wrote for a build folder."""
        build = build or Path(os.environ.get("SBX_BUILD_DIR", REPO / "build"))
        path = build / "images" / "images.env"
        if not path.exists():
            raise ClusterError(f"{path} is missing: run scripts/images.sh {build}")
        return dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)

    def import_images(self, archives) -> None:
        t0 = time.monotonic()
        have = set(self.ctr("images", "ls", "-q").stdout.split())
        for a in archives:
            refs = json.loads(run("tar", "-xOf", str(a), "index.json").stdout)["manifests"]
            names = {m["annotations"]["io.containerd.image.name"] for m in refs}
            if names <= have:
                continue
            self.ctr("images", "import", str(a))
        self._timed("images imported", t0)

    def _start_control_plane(self) -> None:
        s, p, b = self.state, self.state / "pki", self.bin
        t0 = time.monotonic()
        self._spawn("etcd", [
            str(b / "etcd"), "--name", NODE, "--data-dir", str(s / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PORT + 1}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PORT + 1}",
            "--initial-cluster", f"{NODE}=http://127.0.0.1:{ETCD_PORT + 1}",
            "--listen-metrics-urls", f"http://127.0.0.1:{ETCD_PORT + 2}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait("etcd", "etcd /health",
                   lambda: b'"true"' in run("curl", "-sf", f"http://127.0.0.1:{ETCD_PORT}/health",
                                            check=False).stdout.encode(), 60)
        self._spawn("kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
            f"--secure-port={API_PORT}",
            f"--tls-cert-file={p}/apiserver.crt", f"--tls-private-key-file={p}/apiserver.key",
            f"--client-ca-file={p}/ca.crt", f"--service-cluster-ip-range={SVC_CIDR}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub", f"--service-account-signing-key-file={p}/sa.key",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            f"--kubelet-certificate-authority={p}/ca.crt",
            "--kubelet-preferred-address-types=InternalIP",
            f"--cert-dir={s}/apiserver-certs", "--profiling=false", "--v=1"])
        self._wait("kube-apiserver", "the apiserver's /readyz",
                   lambda: self.kubectl("get", "--raw", "/readyz", check=False,
                                        timeout=10).returncode == 0, 120)
        self._timed("etcd + apiserver ready", t0)
        cm = p / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={cm}",
            f"--authentication-kubeconfig={cm}", f"--authorization-kubeconfig={cm}",
            "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=true",
            "--bind-address=127.0.0.1", "--secure-port=0", "--allocate-node-cidrs=false",
            f"--service-account-private-key-file={p}/sa.key", f"--root-ca-file={p}/ca.crt",
            f"--cluster-signing-cert-file={p}/ca.crt", f"--cluster-signing-key-file={p}/ca.key",
            "--v=1"])
        sc = p / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={sc}", f"--authentication-kubeconfig={sc}",
            f"--authorization-kubeconfig={sc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0", "--v=1"])

    def _node_ready(self) -> bool:
        r = self.kubectl("get", "node", NODE, "-o",
                         'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False)
        return r.stdout.strip() == "True"

    def _start_kubelet(self) -> None:
        s, p = self.state, self.state / "pki"
        (s / "kubelet.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {p}/ca.crt}}
authorization: {{mode: Webhook}}
tlsCertFile: {p}/kubelet-serving.crt
tlsPrivateKeyFile: {p}/kubelet-serving.key
containerRuntimeEndpoint: unix://{self.containerd_sock}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
podLogsDir: {s}/pod-logs
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [{DNS_SVC_IP}]
podCIDR: {POD_CIDR}
maxPods: 60
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
""")
        t0 = time.monotonic()
        self._spawn("kubelet", [
            str(self.bin / "kubelet"), f"--config={s}/kubelet.yaml",
            f"--kubeconfig={p}/kubelet.kubeconfig", f"--root-dir={s}/kubelet",
            f"--cert-dir={s}/kubelet/pki", f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE}", "--v=1"])
        self._wait("kubelet", "node Ready", self._node_ready, 120)
        self._timed("kubelet start -> node Ready", t0)

    def _start_kube_proxy(self) -> None:
        s = self.state
        (s / "kube-proxy.yaml").write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {s}/pki/kube-proxy.kubeconfig}}
hostnameOverride: {NODE}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: {POD_CIDR}
detectLocalMode: ClusterCIDR
nodePortAddresses: ["{NODE_IP}/32"]
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
""")
        t0 = time.monotonic()
        self._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={s}/kube-proxy.yaml", "--v=1"])
        self._wait("kube-proxy", "kube-proxy's rule for the kubernetes Service",
                   lambda: f"{KUBERNETES_SVC_IP} . tcp . 443" in run(
                       "nft", "list", "map", "ip", "kube-proxy", "service-ips", check=False).stdout, 60)
        self._timed("kube-proxy rules", t0)

    def _start_kube_router(self) -> None:
        t0 = time.monotonic()
        self._spawn("kube-router", [
            str(self.bin / "kube-router"), f"--kubeconfig={self.state}/pki/kube-router.kubeconfig",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-cni=false", "--enable-ipv6=false", f"--hostname-override={NODE}",
            "--health-port=0", "--metrics-port=0", f"--service-cluster-ip-range={SVC_CIDR}",
            "--v=1"])
        self._wait("kube-router", "kube-router's firewall chains",
                   lambda: run("iptables", "-w", "-S", "KUBE-ROUTER-FORWARD", check=False).returncode == 0,
                   60)
        self._timed("kube-router firewall", t0)

    def _start_coredns(self) -> None:
        image = self.images_env().get("SBX_IMAGE_COREDNS")
        if not image:
            raise ClusterError("images.env names no CoreDNS image: run scripts/images.sh")
        t0 = time.monotonic()
        self.kubectl("apply", "-f", "-", input=coredns_manifest(image))
        self._wait("kube-controller-manager", "CoreDNS available",
                   lambda: self.kubectl("-n", "kube-system", "get", "deployment", "coredns", "-o",
                                        "jsonpath={.status.availableReplicas}",
                                        check=False).stdout.strip() == "1", 120)
        self._timed("CoreDNS available", t0)

    # -- down -----------------------------------------------------------------
    def down(self, verify: bool = True) -> list[str]:
        """Stops everything, undoes every host change, and (with verify)
        returns how the host differs from before `up` (empty: as it was)."""
        if not self.state.exists():
            return []
        t0 = time.monotonic()
        for name in ("kube-router", "kube-proxy"):
            self._stop(name)
        if (self.bin / "kube-router").exists():
            run(str(self.bin / "kube-router"), "--cleanup-config", check=False, timeout=60)
        if (self.bin / "kube-proxy").exists():
            run(str(self.bin / "kube-proxy"), "--cleanup", check=False, timeout=60)
        self._stop("kubelet", 20)
        # Containers go before the apiserver: their watches (CoreDNS's) would
        # hold its graceful shutdown open.
        self._remove_containers()
        for name in ("kube-scheduler", "kube-controller-manager"):
            self._stop(name, 20)
        # The apiserver stops listening at once but then lingers; its state
        # is thrown away, so it gets 5 s.
        self._stop("kube-apiserver", 5)
        self._stop("etcd", 20)
        self._stop("containerd", 20)
        self._kill_shims()
        self._undo_host()
        diff = []
        before_file = self.state / "host-before.json"
        if verify and before_file.exists():
            diff = host_diff(json.loads(before_file.read_text()), host_snapshot())
        shutil.rmtree(LAST_LOGS, ignore_errors=True)
        if (self.state / "logs").exists():
            shutil.copytree(self.state / "logs", LAST_LOGS)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(RUNDIR, ignore_errors=True)
        log(f"down in {time.monotonic() - t0:.1f} s")
        return diff

    def _remove_containers(self) -> None:
        if not self.alive("containerd"):
            return
        for cid in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for cid in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "delete", "-f", cid, check=False)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", cid, check=False)

    def _kill_shims(self) -> None:
        sock = str(self.containerd_sock)
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                try:
                    os.kill(int(d.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _undo_host(self) -> None:
        before_file = self.state / "host-before.json"
        before = json.loads(before_file.read_text()) if before_file.exists() else host_snapshot()
        # Mounts under our folders (volumes, rootfs, shm, netns), deepest first.
        roots = (str(self.state), str(RUNDIR))
        for _ in range(3):
            mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            ours = sorted({m for m in mounts if m.startswith(roots)}, key=len, reverse=True)
            if not ours:
                break
            for m in ours:
                run("umount", "-l", m, check=False)
        # Links: veths on the pod bridge, the bridges.
        r = run("ip", "-j", "link", "show", "master", POD_BRIDGE, check=False)
        for link in json.loads(r.stdout or "[]") if r.returncode == 0 else []:
            run("ip", "link", "del", link["ifname"], check=False)
        for link in (POD_BRIDGE, NODE_LINK):
            if link not in before["links"]:
                run("ip", "link", "del", link, check=False)
        # nft: tables that were not there; chains added to tables that were.
        now = host_snapshot()
        for t in sorted(set(now["nft tables"]) - set(before["nft tables"])):
            run("nft", "delete", "table", *t.split(), check=False)
        # Flush them all before deleting any: a rule may jump to another added chain.
        added = [c.split() for c in sorted(set(host_snapshot()["nft chains"]) - set(before["nft chains"]))]
        for verb in ("flush", "delete"):
            for fam, table, chain in added:
                run("nft", verb, "chain", fam, table, chain, check=False)
        for s in sorted(set(now["ipsets"]) - set(before["ipsets"])):
            run("ipset", "destroy", s, check=False)
        # cgroups the kubelet and containerd made, deepest first.
        for cg in sorted(set(now["cgroups"]) - set(before["cgroups"])):
            for d in sorted(Path(cg).rglob("*"), key=lambda p: len(p.parts), reverse=True) + [Path(cg)]:
                if d.is_dir():
                    try:
                        d.rmdir()
                    except OSError:
                        pass
        for key, value in before["sysctls"].items():
            if value is not None:
                try:
                    sysctl_path(key).write_text(value + "\n")
                except OSError as e:
                    log(f"cannot restore {key}={value}: {e}")
        for path in sorted(set(now["paths"]) - set(before["paths"]), reverse=True):
            if os.path.ismount(path):
                run("umount", "-l", path, check=False)
            shutil.rmtree(path, ignore_errors=True)


def coredns_manifest(image: str) -> str:
    """CoreDNS as the cluster DNS: answers cluster.local from the API and
    world.test from WORLD_HOSTS, and refuses every other name (pods have no
    resolver beyond the cluster)."""
    world = "\n".join(f"                {ip} {name}" for name, ip in WORLD_HOSTS.items())
    return f"""apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
        loadbalance
    }}
    {WORLD_ZONE}:53 {{
        errors
        hosts {{
{world}
                ttl 60
        }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      terminationGracePeriodSeconds: 1
      # Port 53 as on every cluster (NetworkPolicies name it), without root
      # or file capabilities: the pod's own network namespace allows it.
      securityContext:
        sysctls: [{{name: net.ipv4.ip_unprivileged_port_start, value: "53"}}]
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 1}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
        resources: {{requests: {{cpu: 50m, memory: 32Mi}}, limits: {{memory: 128Mi}}}}
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {DNS_SVC_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 53, protocol: TCP}}
"""


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    c = NodeCluster()
    try:
        if cmd == "up":
            c.up()
            for k, v in (c.timings or json.loads((c.state / "timings.json").read_text())).items():
                print(f"  {k:32} {v:6.2f} s")
            print(f"node {NODE} is Ready; kubectl: {c.bin / 'kubectl'}; logs: {c.state / 'logs'}")
            print(f"export KUBECONFIG={c.kubeconfig}")
        elif cmd == "down":
            if not c.state.exists():
                print("down: no cluster is up; nothing to do")
                return 0
            diff = c.down()
            if diff:
                print("the host is not as it was before up:\n  " + "\n  ".join(diff))
                return 1
            print("down: links, nft tables and chains, ipsets, mounts, cgroups, sysctls and "
                  "paths are as they were before up")
        elif cmd == "status":
            print(c.status())
            return 0 if c.is_up() else 3
        elif cmd == "import":
            c.import_images([Path(a) for a in sys.argv[2:]])
        else:
            print(__doc__)
            return 2
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
