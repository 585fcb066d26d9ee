#!/usr/bin/env bash
# `make demo`: a real one-node Kubernetes on this machine (scripts/cluster.sh),
# sbx's images built and imported, sbx installed with `helm install` of
# helm/sbx (the Sandbox CRD and sbx-operator), and a Sandbox applied: the
# operator makes its pod (the agent copied by an init container from
# sbx.local/sbx-agent into an image that does not have it,
# sbx.local/sandbox-base), its Service and its NetworkPolicy, and the demo
# tours the agent's /v1 API through that Service, the official SDK included.
# It stays up until Ctrl-C, then takes the node down and restores the host;
# with SBX_DEMO_EXIT=1 or no terminal it tears down right after the tour.
# Needs root.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
[[ $(id -u) -eq 0 ]] || { echo "demo: the cluster needs root (links, nftables, mounts)" >&2; exit 1; }

work=$(mktemp -d /tmp/sbx-demo-XXXXXX)
cleanup() {
	echo
	echo "==> taking the node down"
	scripts/cluster.sh down || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> the cluster: toolchain, build, images, node (first run builds for a while)"
scripts/cluster.sh up | tee "$work/up.log"
eval "$(grep '^export KUBECONFIG=' "$work/up.log")"
eval "$(scripts/setup.sh --no-k8s)"
eval "$(sed 's/^/export /' build/images/images.env)"
kubectl="$(scripts/k8s-toolchain.sh)/kubectl"

show() { echo; echo "\$ $*"; "$@" 2>&1 | cut -c1-200; }
show "$kubectl" get nodes -o wide
show "$kubectl" get pods -A

echo
echo "==> sbx: helm install of helm/sbx (the Sandbox CRD and sbx-operator, $SBX_IMAGE_OPERATOR)"
helm="$(scripts/k8s-toolchain.sh)/helm"
"$helm" install sbx helm/sbx --namespace sbx-system --create-namespace \
	--set "operator.image.repository=${SBX_IMAGE_OPERATOR%:*}" \
	--set "operator.image.tag=${SBX_IMAGE_OPERATOR##*:}" \
	--set "operator.agentImage=$SBX_IMAGE_AGENT" \
	--set "operator.egressImage=$SBX_IMAGE_EGRESS" \
	--wait --timeout 180s 2> >(grep -v 'symbolic link' >&2)
show "$kubectl" -n sbx-system get deployment,pods,service
show "$kubectl" explain sandbox.spec.ports

echo
echo "==> kubectl apply a Sandbox: $SBX_IMAGE_SANDBOX_BASE, the agent injected"
"$kubectl" create namespace demo >/dev/null
until "$kubectl" -n demo get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
cat >"$work/sandbox.yaml" <<EOF
apiVersion: sbx.dev/v1alpha1
kind: Sandbox
metadata: {name: sandbox-1}
spec:
  image: $SBX_IMAGE_SANDBOX_BASE
  command: [sleep, infinity]
  workingDir: /root
  ports: [{name: web, port: 3000}]
  ttlSeconds: 3600
EOF
cat "$work/sandbox.yaml"
t0=$(date +%s%N)
"$kubectl" -n demo apply -f "$work/sandbox.yaml"
"$kubectl" -n demo wait --for=jsonpath='{.status.phase}'=Running sandbox/sandbox-1 --timeout=120s >/dev/null
echo "Sandbox applied -> Running in $((($(date +%s%N) - t0) / 1000000)) ms"
show "$kubectl" -n demo get sbx
show "$kubectl" -n demo get pod,svc,networkpolicy -o wide
show "$kubectl" -n demo logs sandbox-1 -c sbx-agent-install
svc=$("$kubectl" -n demo get svc sandbox-1 -o jsonpath='{.spec.clusterIP}')
url="http://$svc:8080"
until curl -fs "$url/v1/ping" >/dev/null; do sleep 0.2; done

echo
echo "==> the agent's /v1 API through the Service $url"
show curl -s "$url/v1/shell/exec" -H 'Content-Type: application/json' \
	-d '{"command": "cd /tmp && export WHO=sbx && echo hello from $WHO in $(pwd) on $(hostname)"}'
show curl -s "$url/v1/shell/exec" -H 'Content-Type: application/json' \
	-d '{"command": "python3 --version; node --version; cat /etc/debian_version; uname -sr > report.txt; ls"}'
show curl -s "$url/v1/file/read" -H 'Content-Type: application/json' -d '{"file": "report.txt"}'
show curl -s "$url/v1/jupyter/execute" -H 'Content-Type: application/json' \
	-d '{"code": "x = 6 * 7", "session_id": "demo"}'
show curl -s "$url/v1/jupyter/execute" -H 'Content-Type: application/json' \
	-d '{"code": "x + 0.5", "session_id": "demo"}'
head -c 3000000 /dev/urandom >"$work/blob.bin"
show curl -s -F "file=@$work/blob.bin" -F path=uploads/blob.bin "$url/v1/file/upload"
echo "\$ curl -s '$url/v1/file/download?path=uploads/blob.bin' | cmp - blob.bin"
curl -s "$url/v1/file/download?path=uploads/blob.bin" | cmp - "$work/blob.bin" && echo "(identical)"
show curl -s "$url/mcp" -H 'Content-Type: application/json' \
	-d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sandbox_execute_bash","arguments":{"command":"echo via MCP"}}}'
show curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version}\n' "$url/v1/ping"

echo
echo "==> the official agent-sandbox SDK, from the host, through the Service"
cat >"$work/sdk.py" <<EOF
from agent_sandbox import Sandbox
shell = Sandbox(base_url="$url").shell
r = shell.exec_command(command="cd /usr/lib && export STAGE=sdk")
r = shell.exec_command(id=r.data.session_id, command="echo \$STAGE in \$(pwd); ls | wc -l")
print(r.data.output, end="")
EOF
echo "\$ python3 sdk.py    # cd and export kept across calls"
"$SBX_VENV/bin/python" "$work/sdk.py"

cat <<EOT

==> the node is up
  export KUBECONFIG=$KUBECONFIG
  $kubectl get pods -A -o wide
  $kubectl -n demo exec -it sandbox-1 -- bash
  curl -s $url/v1/sandbox | head -c 400
  a browser on $url/v1/docs (the API)
  scripts/cluster.sh status | down
  $kubectl -n demo describe sandbox sandbox-1
sbx-ingress and sbx-egress images are imported; their behaviour arrives with their features.
EOT
if [[ ${SBX_DEMO_EXIT:-0} == 1 || ! -t 0 ]]; then
	echo "Stopping now (no terminal, or SBX_DEMO_EXIT=1); run 'make demo' in a terminal to keep it up."
	exit 0
fi
echo "Ctrl-C stops everything."
while sleep 3600; do :; done
