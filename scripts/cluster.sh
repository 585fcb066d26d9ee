#!/usr/bin/env bash
# The one-node test cluster (tests/integration/k8s_node.py), by hand:
#
#   scripts/cluster.sh up       build, write the images, start the node (idempotent);
#                               the last line is 'export KUBECONFIG=...'
#   scripts/cluster.sh status   what runs (exit 0 when the whole node is up)
#   scripts/cluster.sh down     stop everything and restore the host; fails if
#                               the host is not as it was before up
#
# BUILD (default build) is the build folder whose images are imported.
# Needs root. docs/development.md describes the cluster.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${BUILD:-build}
cmd=${1:-}

case $cmd in
up)
	eval "$(scripts/setup.sh)"
	export SBX_K8S_BIN SBX_VENV
	if [[ ! -f $build/CMakeCache.txt ]]; then
		cmake -S . -B "$build" -G Ninja -DSBX_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	fi
	ninja -C "$build" >/dev/null
	scripts/bundle-agent.sh "$build" "$build/agent-bundle" >/dev/null
	scripts/images.sh "$build"
	SBX_BUILD_DIR="$here/$build" exec "$SBX_VENV/bin/python" -u tests/integration/k8s_node.py up
	;;
down | status)
	# No setup here: stopping must work whatever state the caches are in.
	venv=$(ls -d "${SBX_CACHE:-$HOME/.cache/sbx}"/venv-*/ 2>/dev/null | head -1)
	[[ -n $venv ]] || { echo "cluster: no Python venv (nothing was ever started)" >&2; exit 0; }
	exec "${venv}bin/python" -u tests/integration/k8s_node.py "$cmd"
	;;
*)
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
	[[ $cmd == -h || $cmd == --help ]] && exit 0
	exit 2
	;;
esac
