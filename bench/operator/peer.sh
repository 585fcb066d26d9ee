#!/usr/bin/env bash
# The peer of bench/operator: kubernetes-sigs/agent-sandbox's controller from the
# Go module proxy, built once into the cache. Prints the binary's path and the
# path of its Sandbox CRD (from the same module, in Go's module cache).
set -euo pipefail

version=v1.0.1
module=sigs.k8s.io/agent-sandbox
dir=${SBX_CACHE:-$HOME/.cache/sbx}/tools/agent-sandbox-$version
if [[ ! -x $dir/agent-sandbox-controller ]]; then
	echo "bench: building agent-sandbox-controller $version (once)" >&2
	mkdir -p "$dir"
	GOBIN=$dir GOFLAGS=-mod=mod go install "$module/cmd/agent-sandbox-controller@$version" >&2
fi
src=$(go env GOMODCACHE)/$module@$version
if [[ ! -f $src/k8s/crds/agents.x-k8s.io_sandboxes.yaml ]]; then
	go mod download "$module@$version" >&2
fi
echo "$dir/agent-sandbox-controller"
echo "$src/k8s/crds/agents.x-k8s.io_sandboxes.yaml"
