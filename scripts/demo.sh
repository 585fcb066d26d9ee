#!/usr/bin/env bash
# `make demo`: brings up what exists of the local stack and shows it working.
#
# Today that is a real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
# kube-controller-manager) and libsbx's Kubernetes client, driven through
# sbx-kubetool (an informer follows ConfigMaps while the client creates, patches,
# applies and deletes one, and kubectl shows the same objects), and sbx-agent on
# 127.0.0.1:8080 serving the AIO /v1 API (shell sessions, files, context). The
# stack stays up until Ctrl-C (or exits after the tour with SBX_DEMO_EXIT=1 or
# without a terminal).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
eval "$(scripts/setup.sh)"
cmake -S . -B build -G Ninja -DSBX_WERROR=ON >/dev/null
ninja -C build >/dev/null

work=$(mktemp -d /tmp/sbx-demo-XXXXXX)
cp_log="$work/control-plane.log"
pids=()
# Stop in reverse order: the informer before the apiserver it watches.
cleanup() {
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> starting etcd + kube-apiserver + kube-controller-manager on 127.0.0.1"
SBX_K8S_DIR="$work/k8s" "$SBX_VENV/bin/python" -u tests/integration/k8s_control_plane.py up \
	>"$cp_log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
	grep -q '^Kubernetes control plane ready' "$cp_log" 2>/dev/null && break
	if ! kill -0 "${pids[0]}" 2>/dev/null; then
		cat "$cp_log"
		exit 1
	fi
	sleep 0.2
done
head -1 "$cp_log"
export KUBECONFIG="$work/k8s/kubeconfig"
kubectl="$SBX_K8S_BIN/kubectl"
tool=build/tests/tools/sbx-kubetool
ns=/api/v1/namespaces/default/configmaps

echo
echo "==> an informer (libsbx) follows ConfigMaps in 'default'; its events are prefixed 'informer>'"
# Process substitution keeps $! the tool's own pid (a pipeline's would be sed's).
"$tool" informer "$ns" > >(sed -u 's/^/  informer> /') &
pids+=($!)
sleep 1

show() { echo; echo "\$ $*"; "$@" | cut -c1-160; }
show "$tool" create "$ns" '{"metadata":{"name":"demo"},"data":{"greeting":"hello"}}'
sleep 0.3
show "$tool" merge-patch "$ns/demo" '{"data":{"greeting":"hello, sbx"}}'
sleep 0.3
show "$tool" --field-manager=demo --force apply "$ns/demo" \
	'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"demo"},"data":{"greeting":"applied"}}'
sleep 0.3
show "$kubectl" get configmap demo -o jsonpath='{.data.greeting}{"\n"}'
show "$tool" delete "$ns/demo"
sleep 0.5

echo
echo "==> sbx-agent serves the AIO /v1 API on 127.0.0.1:8080 (workspace $work/workspace)"
mkdir -p "$work/workspace"
build/sandbox-agent/sbx-agent --listen=127.0.0.1:8080 --workspace="$work/workspace" \
	2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 1 50); do
	curl -fs http://127.0.0.1:8080/v1/ping >/dev/null 2>&1 && break
	sleep 0.1
done
show curl -s http://127.0.0.1:8080/v1/shell/exec -H 'Content-Type: application/json' \
	-d '{"command": "cd /tmp && export WHO=sbx && echo hello from $WHO in $(pwd)"}'
show curl -s http://127.0.0.1:8080/v1/shell/exec -H 'Content-Type: application/json' \
	-d '{"command": "uname -sr > report.txt; ls"}'
show curl -s http://127.0.0.1:8080/v1/file/read -H 'Content-Type: application/json' \
	-d '{"file": "report.txt"}'
show curl -s http://127.0.0.1:8080/v1/jupyter/execute -H 'Content-Type: application/json' \
	-d '{"code": "x = 6 * 7", "session_id": "demo"}'
show curl -s http://127.0.0.1:8080/v1/jupyter/execute -H 'Content-Type: application/json' \
	-d '{"code": "x + 0.5", "session_id": "demo"}'
head -c 3000000 /dev/urandom >"$work/blob.bin"
show curl -s -F "file=@$work/blob.bin" -F path=uploads/blob.bin \
	http://127.0.0.1:8080/v1/file/upload
echo "\$ curl -s 'http://127.0.0.1:8080/v1/file/download?path=uploads/blob.bin' | cmp - $work/blob.bin"
curl -s 'http://127.0.0.1:8080/v1/file/download?path=uploads/blob.bin' | cmp - "$work/blob.bin" &&
	echo "(identical)"
show curl -s http://127.0.0.1:8080/mcp -H 'Content-Type: application/json' \
	-d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sandbox_execute_bash","arguments":{"command":"echo via MCP"}}}'
show curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version}\n' http://127.0.0.1:8080/v1/ping

cat <<EOT

==> the control plane and the agent are up
  export KUBECONFIG=$KUBECONFIG
  $kubectl get namespaces
  $tool --help
  $tool watch /api/v1/namespaces/default/configmaps
  curl -s http://127.0.0.1:8080/v1/sandbox | head -c 400
  curl -s http://127.0.0.1:8080/v1/openapi.json | head -c 400     (every operation served)
  a browser on http://127.0.0.1:8080/v1/docs (the API) and on the address that
    curl -s http://127.0.0.1:8080/v1/shell/terminal-url gives (a terminal)
  $SBX_VENV/bin/python -c 'from agent_sandbox import Sandbox; print(Sandbox(base_url="http://127.0.0.1:8080").shell.exec_command(command="ls /").data.output)'
sbx-operator, sbx-ingress and sbx-egress exist with their command lines
(build/*/sbx-* --help); their behaviour arrives with their features.
EOT
if [[ ${SBX_DEMO_EXIT:-0} == 1 || ! -t 0 ]]; then
	echo "Stopping now (no terminal, or SBX_DEMO_EXIT=1); run 'make demo' in a terminal to keep it up."
	exit 0
fi
echo "Ctrl-C stops everything."
wait
