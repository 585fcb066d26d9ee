# sbx — see README.md. The two commands: `make demo` and `make test`.
SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all build images test demo fuzz bench bench-agent bench-operator bench-egress bench-ingress setup format format-check manifests clean help

all: build

help:
	@echo "make test          set up, build, run every test (unit, integration, ASan+UBSan)"
	@echo "make demo          start the local stack and show what sbx does"
	@echo "make build         build the binaries into $(BUILD)/, and the self-contained"
	@echo "                   agent folder $(BUILD)/agent-bundle (for /opt/sbx)"
	@echo "make images        write the OCI image archives into $(BUILD)/images and import"
	@echo "                   them into the test cluster's containerd when it is up"
	@echo "make fuzz          run every fuzz target for FUZZ_SECONDS each (default 60)"
	@echo "make bench         run the benchmarks against their peers (bench/; bench-agent,"
	@echo "                   bench-operator, bench-egress, bench-ingress one at a time)"
	@echo "make format        reformat the C sources with clang-format"
	@echo "make format-check  fail if any C source is not formatted"
	@echo "make manifests     render manifests/operator/operator.yaml from the chart helm/sbx"
	@echo "make setup         install the build and test dependencies only"

setup:
	scripts/setup.sh >/dev/null

build:
	scripts/setup.sh --no-k8s >/dev/null
	cmake -S . -B $(BUILD) -G Ninja -DSBX_WERROR=ON >/dev/null
	ninja -C $(BUILD)
	scripts/bundle-agent.sh $(BUILD) $(BUILD)/agent-bundle

images: build
	scripts/images.sh $(BUILD)

test:
	scripts/test.sh

demo:
	scripts/demo.sh

fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

bench: bench-agent bench-operator bench-egress bench-ingress

# The venv that scripts/setup.sh made (it prints where).
bench-agent: build
	$$(scripts/setup.sh --no-k8s --bench | sed -n 's/^export SBX_VENV=//p')/bin/python bench/agent/run.py $(BUILD)

# Against the apiserver (and agent-sandbox's controller), then on the real node.
bench-operator: images
	scripts/setup.sh >/dev/null
	$$(scripts/setup.sh --no-k8s | sed -n 's/^export SBX_VENV=//p')/bin/python bench/operator/run.py $(BUILD)
	$$(scripts/setup.sh --no-k8s | sed -n 's/^export SBX_VENV=//p')/bin/python bench/operator/node.py $(BUILD)

# Against dnsmasq, unbound and CoreDNS (the cluster toolchain's build); root.
bench-egress: build
	scripts/setup.sh --bench >/dev/null
	$$(scripts/setup.sh --no-k8s | sed -n 's/^export SBX_VENV=//p')/bin/python bench/egress/run.py $(BUILD)

# Against nghttpx, HAProxy and nginx (Debian), with wrk and h2load.
bench-ingress: build
	scripts/setup.sh --bench >/dev/null
	$$(scripts/setup.sh --no-k8s | sed -n 's/^export SBX_VENV=//p')/bin/python bench/ingress/run.py $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.h.in')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

manifests:
	scripts/manifests.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
