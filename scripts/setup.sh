#!/usr/bin/env bash
# Installs everything the build and the tests need, idempotently:
#   1. Debian packages (compilers' libraries from DESIGN section 7, test peers);
#   2. a Python venv with the packages of tests/requirements.txt, every one
#      (transitive ones too) at the version tests/constraints.txt pins;
#   3. the Node.js test clients of tests/node (npm ci from its lock file);
#   4. for the test cluster (unless --no-k8s): the node's Debian packages
#      (runc, CNI plugins, nftables, iptables, ipset, conntrack, mmdebstrap)
#      and the Kubernetes binaries (scripts/k8s-toolchain.sh).
# Everything is cached outside the repository under $SBX_CACHE (default
# ~/.cache/sbx); a second run checks stamps and downloads nothing.
#
#   5. with --bench: the peers the benchmarks compare against (dnsperf,
#      unbound).
#
#   scripts/setup.sh [--no-k8s] [--bench]   prints 'export ...' lines for the caller
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${SBX_CACHE:-$HOME/.cache/sbx}
mkdir -p "$cache"

# Libraries (section 7 of the design), their tools, and the peers tests talk to.
apt_pkgs=(
	build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
	libuv1-dev libhttp-parser-dev libnghttp2-dev libwslay-dev libssl-dev
	libjansson-dev libjwt-dev libyaml-dev libcurl4-openssl-dev libc-ares-dev
	libnftables-dev libnftnl-dev libmnl-dev libcmocka-dev libminizip-dev zlib1g-dev libidn2-dev
	openssl curl nghttp2-client iproute2 procps patchelf busybox-static dnsmasq-base
	chromium tinyproxy ffmpeg
)
# What the one-node test cluster needs from Debian (docs/development.md). The
# container runtime itself, containerd v2, is built by scripts/k8s-toolchain.sh.
node_pkgs=(
	runc containernetworking-plugins nftables iptables ipset conntrack mmdebstrap
	util-linux iproute2
)

# The benchmarks' peers and load generators (bench/egress, bench/ingress), Debian's builds.
bench_pkgs=(dnsperf unbound nghttp2-proxy haproxy nginx-light wrk)

k8s=1 bench=0
for arg in "$@"; do
	case $arg in
	--no-k8s) k8s=0 ;;
	--bench) bench=1 ;;
	*) echo "setup: unknown option $arg" >&2; exit 2 ;;
	esac
done

log() { echo "setup: $*" >&2; }

install_apt() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return
	log "installing Debian packages: ${missing[*]}"
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

install_venv() {
	local req="$here/tests/requirements.txt" con="$here/tests/constraints.txt" key venv
	key=$(cat "$req" "$con" <(python3 --version) | sha256sum | cut -c1-12)
	venv="$cache/venv-$key"
	if [[ ! -f $venv/.complete ]]; then
		log "creating Python venv $venv"
		rm -rf "$venv"
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q --disable-pip-version-check -r "$req" -c "$con"
		touch "$venv/.complete"
	fi
	echo "export SBX_VENV=$venv"
}

install_node() {
	local key dir
	key=$(cat "$here/tests/node/package.json" "$here/tests/node/package-lock.json" \
		<(node --version) | sha256sum | cut -c1-12)
	dir="$cache/node-$key"
	if [[ ! -f $dir/.complete ]]; then
		log "installing the Node.js test clients in $dir"
		rm -rf "$dir"
		mkdir -p "$dir"
		cp "$here/tests/node/package.json" "$here/tests/node/package-lock.json" "$dir/"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
		touch "$dir/.complete"
	fi
	echo "export SBX_NODE_MODULES=$dir/node_modules"
}

pkgs=("${apt_pkgs[@]}")
((k8s)) && pkgs+=("${node_pkgs[@]}")
((bench)) && pkgs+=("${bench_pkgs[@]}")
install_apt "${pkgs[@]}"
install_venv
install_node
if ((k8s)); then
	echo "export SBX_K8S_BIN=$("$here/scripts/k8s-toolchain.sh")"
fi
