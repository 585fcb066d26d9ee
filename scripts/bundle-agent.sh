#!/usr/bin/env bash
# Makes the self-contained sbx-agent folder an init container copies into any
# image (glibc, musl or distroless): bin/sbx-agent plus lib/ with every shared
# library it loads and its own dynamic loader. The binary's interpreter is set
# to PREFIX/lib/<loader> and its RPATH to PREFIX/lib, so it never touches the
# image's libraries. (Not $ORIGIN: glibc resolves that for the main program
# through /proc/self/exe, which a minimal image may not have mounted.)
#
#   scripts/bundle-agent.sh BUILD_DIR OUT_DIR [PREFIX]   (PREFIX: /opt/sbx)
set -euo pipefail

build=${1:?usage: bundle-agent.sh BUILD_DIR OUT_DIR [PREFIX]}
out=${2:?usage: bundle-agent.sh BUILD_DIR OUT_DIR [PREFIX]}
prefix=${3:-/opt/sbx}
bin="$build/sandbox-agent/sbx-agent"

[[ -x $bin ]] || { echo "bundle-agent: $bin is not built" >&2; exit 1; }
command -v patchelf >/dev/null || { echo "bundle-agent: patchelf is missing (scripts/setup.sh installs it)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp "$bin" "$out/bin/sbx-agent"

loader=
# ldd lines: "libx.so.1 => /lib/.../libx.so.1 (0x...)" and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)"
while read -r name arrow path _; do
	if [[ $arrow == "=>" && $path == /* ]]; then
		cp -L "$path" "$out/lib/$name"
	elif [[ $name == /* && $name == *ld-* ]]; then
		loader=$(basename "$name")
		cp -L "$name" "$out/lib/$loader"
	fi
done < <(ldd "$bin")
[[ -n $loader ]] || { echo "bundle-agent: no dynamic loader found for $bin" >&2; exit 1; }

# DT_RPATH (not RUNPATH) so that the libraries' own dependencies resolve here too.
patchelf --set-interpreter "$prefix/lib/$loader" --force-rpath --set-rpath "$prefix/lib" \
	"$out/bin/sbx-agent"
echo "$out ($(du -sh "$out" | cut -f1), $(ls "$out/lib" | wc -l) libraries, for $prefix)"
