#!/usr/bin/env bash
# Everything `make test` runs, in order:
#   setup (packages, venv, Kubernetes toolchain) -> build (-Werror) -> images
#   -> format check -> C unit tests (ctest/cmocka) -> integration tests (pytest,
#   real kube-apiserver) -> the one-node cluster up -> end-to-end tests on it
#   -> ASan+UBSan build and images -> C unit, integration and end-to-end tests
#   again under the sanitizers -> cluster down (the host must be as it was)
#   -> fuzz targets replay their seed corpus -> summary with timings.
# Any failure, or a suite that ran no test, makes the whole run fail.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${BUILD:-build}
asan_build=${ASAN_BUILD:-build-asan}
logs=$(mktemp -d /tmp/sbx-test-XXXXXX)
t0=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

declare -A timing
timed() { timing[$1]=$(($SECONDS - $2)); }

step "setup (packages, Python venv, Kubernetes toolchain)"
t=$SECONDS
scripts/setup.sh 2>&1 >"$logs/setup.env" | tee "$logs/setup.log" >&2
eval "$(cat "$logs/setup.env")"
export SBX_K8S_BIN SBX_VENV SBX_NODE_MODULES
# "cold" when the toolchain script had to build anything this time.
if grep -q '^k8s-toolchain: built' "$logs/setup.log"; then toolchain_kind=cold; else toolchain_kind=warm; fi
timed "setup + toolchain ($toolchain_kind)" $t

step "build ($build, warnings are errors)"
cmake -S . -B "$build" -G Ninja -DSBX_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build"
scripts/bundle-agent.sh "$build" "$build/agent-bundle"

step "images ($build/images: the programs, the agent bundle, the node's own, sandbox-base)"
t=$SECONDS
scripts/images.sh "$build"
timed "images" $t

step "format check (clang-format)"
clang-format --dry-run -Werror $(git ls-files '*.c' '*.h')

# cmocka prints "[  PASSED  ] N test(s)." per program (ctest -V prefixes "K: ").
count_cmocka() {
	{ grep -hoE '\[  PASSED  \] [0-9]+ test' "$@" || true; } |
		sed -E 's/.*\] ([0-9]+) test/\1/' | awk '{ s += $1 } END { print s + 0 }'
}

run_ctest() {	# dir log
	(cd "$1" && ctest -V --output-on-failure --timeout 300 -j2) >"$2" 2>&1 || {
		cat "$2"
		echo "C unit tests failed in $1" >&2
		return 1
	}
	grep -E 'tests passed' "$2"
}

step "C unit tests (ctest + cmocka)"
run_ctest "$build" "$logs/ctest.log"
c_programs=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$logs/ctest.log" || true)
c_cases=$(count_cmocka "$logs/ctest.log")

run_pytest() {	# build-dir junit-xml
	local rc=0
	SBX_BUILD_DIR="$here/$1" "$SBX_VENV/bin/python" -m pytest tests/integration -q \
		-p no:cacheprovider --timeout=600 --junitxml="$2" -rfE || rc=$?
	if [[ $rc -eq 5 ]]; then
		echo "pytest collected no tests: that is a failure here" >&2
		return 1
	fi
	return "$rc"
}

# passed / failed / skipped from a junit file
junit_counts() {
	"$SBX_VENV/bin/python" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t, f, k)
PY
}

step "integration tests (pytest against real binaries and a real kube-apiserver)"
t=$SECONDS
run_pytest "$build" "$logs/pytest.xml"
read -r py_tests py_fail py_skip < <(junit_counts "$logs/pytest.xml")
timed "integration tests" $t

# The real node: brought up here (unless one is already running, which is
# then used and left up), taken down at the end or on any failure.
node() { SBX_BUILD_DIR="$here/$build" "$SBX_VENV/bin/python" -u tests/integration/k8s_node.py "$@"; }
cluster_owned=0
cluster_cleanup() {
	if [[ $cluster_owned == 1 ]]; then
		node down >&2 || true
	fi
}
trap cluster_cleanup EXIT
step "the one-node cluster (kubelet, containerd, kube-proxy, kube-router, CoreDNS)"
if node status >/dev/null 2>&1; then
	echo "a cluster is already up: the tests use it and leave it up"
else
	cluster_owned=1
	t=$SECONDS
	node up
	timed "node up" $t
fi

run_e2e() {	# build-dir junit-xml timings-json
	local rc=0
	SBX_BUILD_DIR="$here/$1" SBX_E2E_TIMINGS="$3" "$SBX_VENV/bin/python" -m pytest tests/e2e -q \
		-p no:cacheprovider --timeout=600 --junitxml="$2" -rfE || rc=$?
	if [[ $rc -eq 5 ]]; then
		echo "pytest collected no end-to-end tests: that is a failure here" >&2
		return 1
	fi
	return "$rc"
}
e2e_timings() {	# timings-json
	"$SBX_VENV/bin/python" - "$1" <<'PY'
import json, sys
for what, values in json.load(open(sys.argv[1])).items():
    print(f"  {what:40} " + ", ".join(f"{v:.2f}" for v in values) + " s")
PY
}

step "end-to-end tests on the node (pods, Services, DNS, NetworkPolicy, the injected agent)"
t=$SECONDS
run_e2e "$build" "$logs/e2e.xml" "$logs/e2e-timings.json"
read -r e2e_tests e2e_fail e2e_skip < <(junit_counts "$logs/e2e.xml")
timed "end-to-end tests" $t
e2e_timings "$logs/e2e-timings.json"

step "ASan+UBSan build ($asan_build) and C unit tests under the sanitizers"
cmake -S . -B "$asan_build" -G Ninja -DSBX_WERROR=ON -DSBX_SANITIZE=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C "$asan_build"
scripts/bundle-agent.sh "$asan_build" "$asan_build/agent-bundle"
scripts/images.sh "$asan_build" asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	run_ctest "$asan_build" "$logs/ctest-asan.log"
asan_cases=$(count_cmocka "$logs/ctest-asan.log")

step "integration tests again, against the ASan+UBSan binaries"
ASAN_OPTIONS=detect_leaks=1 run_pytest "$asan_build" "$logs/pytest-asan.xml"
read -r asan_py asan_py_fail asan_py_skip < <(junit_counts "$logs/pytest-asan.xml")

step "end-to-end tests again, with the ASan+UBSan agent image"
t=$SECONDS
run_e2e "$asan_build" "$logs/e2e-asan.xml" "$logs/e2e-asan-timings.json"
read -r asan_e2e asan_e2e_fail asan_e2e_skip < <(junit_counts "$logs/e2e-asan.xml")
timed "end-to-end tests (ASan agent)" $t

if [[ $cluster_owned == 1 ]]; then
	step "cluster down: every host change undone (links, nft, ipsets, mounts, cgroups, sysctls)"
	t=$SECONDS
	cluster_owned=0
	node down
	timed "node down" $t
fi

step "fuzz targets replay their seed corpus (make fuzz mutates for longer)"
scripts/fuzz.sh --smoke

if [[ $c_cases -eq 0 || $py_tests -eq 0 || $asan_cases -eq 0 || $e2e_tests -eq 0 || $asan_e2e -eq 0 ]]; then
	echo "a suite ran no test (C: $c_cases, Python: $py_tests, sanitizers: $asan_cases," \
		"end-to-end: $e2e_tests, $asan_e2e)" >&2
	exit 1
fi
passed=$((c_cases + py_tests - py_skip + asan_cases + asan_py - asan_py_skip + e2e_tests - e2e_skip \
	+ asan_e2e - asan_e2e_skip))
step "summary ($((SECONDS - t0)) s)"
echo "C unit tests:        $c_cases cases in $c_programs programs passed"
echo "Python integration:  $((py_tests - py_skip)) passed, $py_skip skipped"
echo "End-to-end (node):   $((e2e_tests - e2e_skip)) passed, $e2e_skip skipped"
echo "ASan+UBSan unit:     $asan_cases cases passed"
echo "ASan+UBSan integr.:  $((asan_py - asan_py_skip)) passed, $asan_py_skip skipped"
echo "ASan+UBSan e2e:      $((asan_e2e - asan_e2e_skip)) passed, $asan_e2e_skip skipped"
echo "timings:"
for k in "${!timing[@]}"; do printf '  %-40s %5d s\n' "$k" "${timing[$k]}"; done | sort
if [[ -f $logs/e2e-timings.json ]]; then e2e_timings "$logs/e2e-timings.json"; fi
echo "$passed passed, 0 failed"
