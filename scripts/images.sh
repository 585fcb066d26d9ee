#!/usr/bin/env bash
# Writes the OCI image archives the test cluster and `make demo` run, from a
# build folder, with no registry (scripts/oci-image.py), and imports them
# into the cluster's containerd when it is up:
#
#   sbx.local/pause          the pod sandbox (tests/cluster/pause.c, static)
#   sbx.local/sbx-operator   each program with its libraries and loader,
#   sbx.local/sbx-ingress    running as the non-root user sbx (65532),
#   sbx.local/sbx-egress     nothing else in the image
#   sbx.local/sbx-agent      the self-contained agent folder at /opt/sbx, as the
#                            init container copies it (`sbx-agent install DIR`)
#   sbx.local/coredns        the cluster DNS (scripts/k8s-toolchain.sh builds it)
#   sbx.local/sandbox-base   Debian bookworm by mmdebstrap: bash, coreutils,
#                            python3 with html2text, nodejs, ca-certificates,
#                            curl (cached by package list)
#   sbx.local/busybox        static busybox only: an image without glibc
#   sbx.local/nettools       nft and ip, for tests of NET_ADMIN
#
# Every image is tagged with its content digest (and TAG, default dev), so a
# rebuilt binary is a new image. BUILD/images/images.env lists, for each
# image, SBX_IMAGE_<NAME>=ref:contenttag and SBX_ARCHIVE_<NAME>=path.
#
#   scripts/images.sh [BUILD [TAG]]     BUILD: build (default), TAG: dev
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
tag=${2:-dev}
cache=${SBX_CACHE:-$HOME/.cache/sbx}
out="$build/images"
[[ -n ${SBX_VENV:-} ]] || eval "$("$here/scripts/setup.sh" --no-k8s)"
py=$SBX_VENV/bin/python3
mkimage() { "$py" "$here/scripts/oci-image.py" "$@"; }
die() { echo "images: $*" >&2; exit 1; }
t0=$SECONDS

mkdir -p "$out"
env_file="$out/images.env.tmp"
: >"$env_file"
record() {	# NAME ARCHIVE REF
	echo "SBX_IMAGE_$1=$3" >>"$env_file"
	echo "SBX_ARCHIVE_$1=$2" >>"$env_file"
}

passwd='root:x:0:0:root:/root:/sbin/nologin\nsbx:x:65532:65532:sbx:/nonexistent:/sbin/nologin\n'
group='root:x:0:\nsbx:x:65532:\n'

# The pod sandbox: one static program.
cc -Os -static -Wall -Wextra -Werror -o "$out/sbx-pause" "$here/tests/cluster/pause.c"
strip "$out/sbx-pause"
record PAUSE "$out/pause.tar" "$(mkimage "$out/pause.tar" --ref sbx.local/pause --tag 1 \
	--file "/pause=$out/sbx-pause:0755" --entrypoint '["/pause"]' --user 65532:65532)"

# The programs.
for prog in operator:operator/sbx-operator ingress:ingress/sbx-ingress egress:egress-sidecar/sbx-egress; do
	name=${prog%%:*} bin="$build/${prog#*:}"
	[[ -x $bin ]] || die "$bin is not built"
	record "${name^^}" "$out/sbx-$name.tar" "$(mkimage "$out/sbx-$name.tar" --ref "sbx.local/sbx-$name" \
		--tag "$tag" --elf "/usr/local/bin/sbx-$name=$bin" --text "/etc/passwd=$passwd" \
		--text "/etc/group=$group" --dir /tmp:1777 --user 65532:65532 \
		--entrypoint "[\"/usr/local/bin/sbx-$name\"]")"
done

# The agent bundle, where the init container copies it from.
[[ -x $build/agent-bundle/bin/sbx-agent ]] || "$here/scripts/bundle-agent.sh" "$build" "$build/agent-bundle" >/dev/null
record AGENT "$out/sbx-agent.tar" "$(mkimage "$out/sbx-agent.tar" --ref sbx.local/sbx-agent --tag "$tag" \
	--tree "/opt/sbx=$build/agent-bundle" --text "/etc/passwd=$passwd" --text "/etc/group=$group" \
	--user 65532:65532 --entrypoint '["/opt/sbx/bin/sbx-agent"]')"

# CoreDNS, built by the toolchain script.
k8s_bin=${SBX_K8S_BIN:-$("$here/scripts/k8s-toolchain.sh")}
[[ -x $k8s_bin/coredns ]] || die "$k8s_bin/coredns is missing (scripts/k8s-toolchain.sh)"
record COREDNS "$out/coredns.tar" "$(mkimage "$out/coredns.tar" --ref sbx.local/coredns \
	--tag "$("$k8s_bin/coredns" -version | sed -n 's/^CoreDNS-//p' | head -1)" \
	--elf "/coredns=$(readlink -f "$k8s_bin/coredns")" --text "/etc/passwd=$passwd" \
	--text "/etc/group=$group" --user 65532:65532 --entrypoint '["/coredns"]')"

# busybox alone: no libc in the image at all.
links=()
for a in $(busybox --list); do [[ $a == busybox ]] || links+=(--symlink "/bin/$a=busybox"); done
record BUSYBOX "$out/busybox.tar" "$(mkimage "$out/busybox.tar" --ref sbx.local/busybox --tag "$tag" \
	--file /bin/busybox=/bin/busybox:0755 "${links[@]}" --dir /tmp:1777 --dir /root:0700 \
	--text '/etc/passwd=root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
	--text '/etc/group=root:x:0:\nnogroup:x:65534:\n' --cmd '["/bin/sh"]')"

# nft and ip with their libraries, and busybox for a shell.
record NETTOOLS "$out/nettools.tar" "$(mkimage "$out/nettools.tar" --ref sbx.local/nettools --tag "$tag" \
	--file /bin/busybox=/bin/busybox:0755 --symlink /bin/sh=busybox --symlink /bin/sleep=busybox \
	--symlink /bin/cat=busybox --elf /usr/sbin/nft=/usr/sbin/nft --elf /usr/sbin/ip=/usr/sbin/ip \
	--dir /tmp:1777 --text '/etc/passwd=root:x:0:0:root:/root:/bin/sh\n' --cmd '["/bin/sh"]')"

# The Debian base a Sandbox runs by default, cached by what makes it.
base_pkgs=bash,coreutils,python3,python3-html2text,nodejs,ca-certificates,curl,procps
mirror=http://deb.debian.org/debian
key=$(echo "bookworm $base_pkgs $mirror" | cat - "$here/scripts/oci-image.py" | sha256sum | cut -c1-12)
base="$cache/images/sandbox-base-$key.tar"
if [[ ! -f $base ]]; then
	command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (scripts/setup.sh)"
	mkdir -p "$cache/images"
	echo "images: making the Debian root file system (first time only)" >&2
	rm -f "$cache/images/rootfs-$key.tar"
	mmdebstrap --quiet --variant=minbase --include="$base_pkgs" --mode=root \
		--aptopt='Acquire::Retries "3"' bookworm "$cache/images/rootfs-$key.tar" "$mirror" >&2
	mkimage "$base.tmp" --ref sbx.local/sandbox-base --tag bookworm \
		--base "$cache/images/rootfs-$key.tar" --cmd '["/bin/bash"]' \
		--env LANG=C.UTF-8 --workdir /root >/dev/null
	rm -f "$cache/images/rootfs-$key.tar"
	mv "$base.tmp" "$base"
fi
ref=$(tar -xOf "$base" index.json | "$py" -c \
	'import json,sys; print([m["annotations"]["io.containerd.image.name"] for m in json.load(sys.stdin)["manifests"]][-1])')
record SANDBOX_BASE "$base" "$ref"

mv "$env_file" "$out/images.env"
echo "images: $(grep -c '^SBX_IMAGE_' "$out/images.env") images in $out ($((SECONDS - t0)) s)" >&2

# Into the cluster's containerd, when one is up.
if "$py" "$here/tests/integration/k8s_node.py" status >/dev/null 2>&1; then
	"$py" "$here/tests/integration/k8s_node.py" import $(sed -n 's/^SBX_ARCHIVE_[A-Z_]*=//p' "$out/images.env")
	echo "images: imported into the cluster's containerd" >&2
fi
