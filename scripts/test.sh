#!/usr/bin/env bash
# Everything `make test` runs, in order:
#   setup -> build (-Werror) -> format check -> C unit tests (ctest/cmocka)
#   -> integration tests (pytest, real kube-apiserver) -> ASan+UBSan build
#   -> C unit and integration tests again under the sanitizers
#   -> fuzz targets replay their seed corpus -> summary.
# Any failure, or a suite that ran no test, makes the whole run fail.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${BUILD:-build}
asan_build=${ASAN_BUILD:-build-asan}
logs=$(mktemp -d /tmp/sbx-test-XXXXXX)
t0=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

step "setup (packages, Python venv, Kubernetes toolchain)"
eval "$(scripts/setup.sh)"
export SBX_K8S_BIN SBX_VENV SBX_NODE_MODULES

step "build ($build, warnings are errors)"
cmake -S . -B "$build" -G Ninja -DSBX_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build"
scripts/bundle-agent.sh "$build" "$build/agent-bundle"

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
run_pytest "$build" "$logs/pytest.xml"
read -r py_tests py_fail py_skip < <(junit_counts "$logs/pytest.xml")

step "ASan+UBSan build ($asan_build) and C unit tests under the sanitizers"
cmake -S . -B "$asan_build" -G Ninja -DSBX_WERROR=ON -DSBX_SANITIZE=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C "$asan_build"
scripts/bundle-agent.sh "$asan_build" "$asan_build/agent-bundle"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	run_ctest "$asan_build" "$logs/ctest-asan.log"
asan_cases=$(count_cmocka "$logs/ctest-asan.log")

step "integration tests again, against the ASan+UBSan binaries"
ASAN_OPTIONS=detect_leaks=1 run_pytest "$asan_build" "$logs/pytest-asan.xml"
read -r asan_py asan_py_fail asan_py_skip < <(junit_counts "$logs/pytest-asan.xml")

step "fuzz targets replay their seed corpus (make fuzz mutates for longer)"
scripts/fuzz.sh --smoke

if [[ $c_cases -eq 0 || $py_tests -eq 0 || $asan_cases -eq 0 ]]; then
	echo "a suite ran no test (C: $c_cases, Python: $py_tests, sanitizers: $asan_cases)" >&2
	exit 1
fi
passed=$((c_cases + py_tests - py_skip + asan_cases + asan_py - asan_py_skip))
step "summary ($((SECONDS - t0)) s)"
echo "C unit tests:        $c_cases cases in $c_programs programs passed"
echo "Python integration:  $((py_tests - py_skip)) passed, $py_skip skipped"
echo "ASan+UBSan unit:     $asan_cases cases passed"
echo "ASan+UBSan integr.:  $((asan_py - asan_py_skip)) passed, $asan_py_skip skipped"
echo "$passed passed, 0 failed"
