"""The test cluster does what a real node does: pods from locally built images
run and are reachable, Services and cluster DNS work, NetworkPolicy is
enforced, capabilities are per container."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import record_timing, wait_until


def busybox_pod(kube, name: str, app: str, command: list[str], extra: str = "") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {kube.image('busybox')}
    imagePullPolicy: Never
    command: {json.dumps(command)}
{extra}"""


def web_pod(kube, name: str = "web") -> str:
    """busybox httpd on :8080 serving a page that names the pod."""
    return busybox_pod(kube, name, name, [
        "sh", "-c", f"mkdir -p /www && echo hello from {name} > /www/index.html && "
        "echo serving && exec httpd -f -v -p 8080 -h /www"], """    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1}
""")


def service(name: str, app: str, port: int = 80, target: int = 8080) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: {port}, targetPort: {target}}}]
"""


def test_a_pod_from_a_local_image_runs_and_answers_exec_and_logs(kube, ns):
    t0 = time.monotonic()
    kube.apply(ns, busybox_pod(kube, "hello", "hello", [
        "sh", "-c", "echo started as $(id -u) on $(hostname); exec sleep 3600"], """    readinessProbe: {exec: {command: [cat, /proc/1/cmdline]}, periodSeconds: 1}
"""))
    kube.wait_ready(ns, "hello")
    record_timing("pod create -> Ready", time.monotonic() - t0)
    pod = kube.get(ns, "pod", "hello")
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "sbx-node"
    assert pod["status"]["podIP"].startswith("10.244.0.")
    # The kubelet ran exactly the image this build wrote.
    assert pod["status"]["containerStatuses"][0]["imageID"] == kube.image_id("busybox")
    assert kube.exec(ns, "hello", "sh", "-c", "echo $((6 * 7)) $(hostname)").stdout == "42 hello\n"
    wait_until("the container's output in kubectl logs",
               lambda: "started as 0 on hello" in kube.logs(ns, "hello"), 20)
    # A command that fails in the pod fails kubectl exec with its status.
    r = kube.exec(ns, "hello", "sh", "-c", "exit 7", check=False)
    assert r.returncode == 7


def test_a_service_answers_from_the_host_and_from_a_pod_by_ip_and_by_name(kube, ns):
    kube.apply(ns, "---\n".join([web_pod(kube), busybox_pod(kube, "client", "client", ["sleep", "3600"]),
                                 service("web", "web")]))
    kube.wait_ready(ns, "web", "client")
    web_ip, svc_ip = kube.pod_ip(ns, "web"), kube.cluster_ip(ns, "web")
    assert svc_ip.startswith("10.96.0.")
    assert kube.fetch_from_host(f"http://{web_ip}:8080/index.html") == "hello from web\n"
    # kube-proxy programs the Service once its EndpointSlice names the ready pod.
    wait_until("the ClusterIP from the host",
               lambda: kube.fetch_from_host(f"http://{svc_ip}/index.html") == "hello from web\n", 30)
    assert kube.fetch_from_pod(ns, "client", f"http://{svc_ip}/index.html") == "hello from web\n"
    # The same Service by its DNS name, through CoreDNS, with and without the search path.
    fqdn = f"web.{ns}.svc.cluster.local"
    r = kube.exec(ns, "client", "nslookup", fqdn)
    assert svc_ip in r.stdout, r.stdout
    assert kube.fetch_from_pod(ns, "client", f"http://{fqdn}/index.html") == "hello from web\n"
    assert kube.fetch_from_pod(ns, "client", "http://web/index.html") == "hello from web\n"
    # The pod's resolver is the cluster DNS only.
    conf = kube.exec(ns, "client", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in conf and f"search {ns}.svc.cluster.local" in conf
    # A name outside the cluster does not resolve: nothing leaves the machine.
    assert kube.exec(ns, "client", "nslookup", "example.com", check=False).returncode != 0
    # A pod reaches the apiserver through the kubernetes Service.
    r = kube.exec(ns, "client", "sh", "-c", "echo | timeout 3 nc 10.96.0.1 443 && echo open",
                  check=False)
    assert "open" in r.stdout


def test_network_policy_denies_all_then_allows_the_named_peer_only(kube, ns):
    kube.apply(ns, "---\n".join([
        web_pod(kube), busybox_pod(kube, "client", "client", ["sleep", "3600"]),
        busybox_pod(kube, "other", "other", ["sleep", "3600"]), service("web", "web")]))
    kube.wait_ready(ns, "web", "client", "other")
    web = f"{kube.pod_ip(ns, 'web')}:8080"
    svc = kube.cluster_ip(ns, "web")
    page = "hello from web\n"
    assert kube.fetch_from_pod(ns, "other", f"http://{web}/index.html") == page
    wait_until("the Service from a pod", lambda: kube.fetch_from_pod(ns, "client", f"http://{svc}/") == page, 30)

    kube.apply(ns, """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all-ingress}
spec:
  podSelector: {}
  policyTypes: [Ingress]
""")
    t0 = time.monotonic()
    wait_until("deny-all enforced",
               lambda: kube.fetch_from_pod(ns, "client", f"http://{web}/", timeout_s=1) is None, 30)
    record_timing("NetworkPolicy deny enforced", time.monotonic() - t0)
    assert kube.fetch_from_pod(ns, "client", f"http://{svc}/") is None
    assert kube.fetch_from_pod(ns, "other", f"http://{web}/") is None

    kube.apply(ns, """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-to-web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}]
""")
    t0 = time.monotonic()
    wait_until("the allow policy enforced",
               lambda: kube.fetch_from_pod(ns, "client", f"http://{web}/", timeout_s=1) == page, 30)
    record_timing("NetworkPolicy allow enforced", time.monotonic() - t0)
    assert kube.fetch_from_pod(ns, "client", f"http://{svc}/") == page
    assert kube.fetch_from_pod(ns, "other", f"http://{web}/") is None
    assert kube.fetch_from_pod(ns, "other", f"http://{svc}/") is None
    kube.kubectl("-n", ns, "delete", "networkpolicy", "deny-all-ingress", "allow-client-to-web")
    wait_until("policies removed",
               lambda: kube.fetch_from_pod(ns, "other", f"http://{web}/", timeout_s=1) == page, 30)


def test_net_admin_is_granted_per_container(kube, ns):
    image = kube.image("nettools")
    kube.apply(ns, f"""apiVersion: v1
kind: Pod
metadata: {{name: net}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: admin
    image: {image}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    securityContext: {{capabilities: {{drop: [ALL], add: [NET_ADMIN]}}}}
  - name: app
    image: {image}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    securityContext: {{capabilities: {{drop: [ALL]}}, allowPrivilegeEscalation: false}}
""")
    kube.wait_ready(ns, "net")
    table = f"sbx_e2e_{ns[-4:]}"
    rules = (f"add table inet {table}; add chain inet {table} out "
             f"{{ type filter hook output priority 0; policy accept; }}; "
             f"add rule inet {table} out tcp dport 853 drop")
    r = kube.exec(ns, "net", "nft", rules, container="admin", check=False)
    assert r.returncode == 0, r.stderr
    listed = kube.exec(ns, "net", "nft", "list", "table", "inet", table, container="admin").stdout
    assert "tcp dport 853 drop" in listed
    # The other container shares the network namespace: it sees the rules,
    # and can change nothing.
    r = kube.exec(ns, "net", "nft", f"add table inet {table}_app", container="app", check=False)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    r = kube.exec(ns, "net", "nft", f"flush table inet {table}", container="app", check=False)
    assert r.returncode != 0
    assert "tcp dport 853 drop" in kube.exec(ns, "net", "nft", "list", "table", "inet", table,
                                             container="admin").stdout
    # The rules live in the pod's namespace, not on the host.
    assert table not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                       text=True, check=True).stdout
