#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each one.
#   scripts/fuzz.sh SECONDS   mutate for SECONDS per target (make fuzz)
#   scripts/fuzz.sh --smoke   replay the seed corpus only (part of make test)
# New inputs go to a scratch copy of the corpus; crashes land in build-fuzz/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh" --no-k8s >/dev/null
here=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$here/build-fuzz}
mode=${1:-60}
CC=clang cmake -S "$here" -B "$build" -G Ninja -DSBX_FUZZ=ON -DSBX_TESTS=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
# Every tests/fuzz/fuzz_*.c is a target.
targets=$(cd "$here/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086 # one word per target
if ! ninja -C "$build" $targets >"$build/ninja.log" 2>&1; then
	cat "$build/ninja.log" >&2
	exit 1
fi
for t in $targets; do
	seeds="$here/tests/fuzz/corpus/$t"
	if [[ $mode == --smoke ]]; then
		"$build/tests/fuzz/$t" -runs=0 "$seeds" 2>&1 | tail -1
		continue
	fi
	work="$build/corpus/$t"
	mkdir -p "$work"
	echo "fuzzing $t for ${mode}s"
	(cd "$build" && "$build/tests/fuzz/$t" -max_total_time="$mode" -max_len=65536 \
		-timeout=30 -print_final_stats=1 "$work" "$seeds" 2>&1 | tail -12)
done
