# ferry: the front door. `make demo` and `make check`; everything else is meson.
# Targets install the Debian packages they need, so a fresh Debian 12 works.

DEB_BUILD  := meson ninja-build pkg-config gcc clang libclang-rt-14-dev \
              libjansson-dev libzstd-dev zlib1g-dev python3
DEB_E2E    := iproute2 procps
DEB_QEMU   := qemu-system-x86 qemu-utils binutils

BUILD      := build
ASAN_BUILD := build-asan
FUZZ_BUILD := build-fuzz

.PHONY: all deps deps-qemu build check demo bench fuzz clean

all: build

deps:
	@scripts/ensure-debs $(DEB_BUILD) $(DEB_E2E)

deps-qemu:
	@scripts/ensure-debs $(DEB_QEMU)

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) --buildtype=debugoptimized -Dwerror=true

$(ASAN_BUILD)/build.ninja: | deps
	meson setup $(ASAN_BUILD) --buildtype=debug -Dwerror=true \
	    -Db_sanitize=address,undefined -Db_lundef=false

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

check: deps deps-qemu $(BUILD)/build.ninja $(ASAN_BUILD)/build.ninja
	ninja -C $(BUILD)
	ninja -C $(ASAN_BUILD)
	scripts/run-checks $(BUILD) $(ASAN_BUILD)

demo: build
	scripts/demo $(BUILD)

# ferry and QEMU 7.2 side by side (docs/bench.md); BENCH_QUICK=1 for a first
# run in a few minutes. Scenario 5 needs root (network namespaces).
bench: build deps-qemu
	scripts/bench $(BUILD)
	scripts/bench-downtime $(BUILD)
	# postcopy page-request latency, with and without preempt (docs/postcopy.md)
	$(BUILD)/tests/postcopy/bench_postcopy 512
	# the same between two ferry processes, loopback and a 1 Gbit/s veth
	scripts/bench-postcopy $(BUILD)

fuzz: deps
	test -f $(FUZZ_BUILD)/build.ninja || \
	    CC=clang meson setup $(FUZZ_BUILD) --buildtype=debugoptimized -Dfuzz=true
	meson configure $(FUZZ_BUILD) -Dfuzz=true
	ninja -C $(FUZZ_BUILD) fuzz/fuzz-loader fuzz/gen-corpus \
	    tests/analyze/fuzz-analyze tests/analyze/gen-analyze-seeds
	$(FUZZ_BUILD)/fuzz/gen-corpus $(FUZZ_BUILD)/seeds
	mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/artifacts
	$(FUZZ_BUILD)/fuzz/fuzz-loader $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/seeds fuzz/corpus \
	    -dict=fuzz/fuzz-loader.dict -max_total_time=$${FUZZ_SECONDS:-300} -timeout=10 \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/
	# the analyzer, fuzzed like the loader (FUZZ_SECONDS each)
	$(FUZZ_BUILD)/tests/analyze/gen-analyze-seeds $(FUZZ_BUILD)/analyze-seeds
	mkdir -p $(FUZZ_BUILD)/analyze-corpus
	$(FUZZ_BUILD)/tests/analyze/fuzz-analyze $(FUZZ_BUILD)/analyze-corpus \
	    $(FUZZ_BUILD)/analyze-seeds -dict=tests/analyze/fuzz-analyze.dict \
	    -max_total_time=$${FUZZ_SECONDS:-300} -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/analyze-

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
