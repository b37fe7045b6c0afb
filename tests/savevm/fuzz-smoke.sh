#!/bin/sh
# fuzz-smoke.sh: a short, bounded run of fuzz/fuzz-loader (TAP).
#
# Needs clang with libFuzzer; without it the test is skipped. Configures a
# clang fuzz build of its own under $FERRY_BUILD/fuzz-smoke (once; later runs
# only rebuild what changed), writes the generated seeds, and fuzzes for
# FUZZ_SMOKE_SECONDS (default 20) starting from them and fuzz/corpus/.
# Prints "ok 1 fuzz-loader 20s", or "not ok" with the fuzzer's report.
set -u

src=${FERRY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${FERRY_BUILD:-$src/build}
secs=${FUZZ_SMOKE_SECONDS:-20}
dir=$build/fuzz-smoke
log=$dir/smoke.log

echo "1..1"
skip() { echo "ok 1 fuzz-loader # SKIP $*"; exit 0; }
fail() {
    echo "not ok 1 fuzz-loader $1"
    [ -f "$log" ] && tail -n 40 "$log" | sed 's/^/# /'
    exit 1
}

command -v clang >/dev/null 2>&1 || skip "no clang"
probe=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}\n' \
    > "$probe/p.c"
clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" \
    >/dev/null 2>&1 || skip "clang has no libFuzzer (libclang-rt-dev)"

mkdir -p "$dir" || fail "cannot create $dir"
: > "$log"
if [ ! -f "$dir/build/build.ninja" ]; then
    # werror off: this build is for fuzzing; the gcc builds police warnings.
    CC=clang meson setup "$dir/build" "$src" --buildtype=debugoptimized \
        -Dfuzz=true -Dwerror=false >> "$log" 2>&1 || fail "meson setup failed"
fi
ninja -C "$dir/build" fuzz/fuzz-loader fuzz/gen-corpus >> "$log" 2>&1 ||
    fail "build failed"

rm -rf "$dir/seeds" "$dir/corpus"
mkdir -p "$dir/corpus" "$dir/artifacts"
"$dir/build/fuzz/gen-corpus" "$dir/seeds" >> "$log" 2>&1 ||
    fail "gen-corpus failed"

# The first corpus dir receives new inputs; the seed dirs are only read.
# timeout(1) is a backstop should the fuzzer itself wedge.
timeout $((secs + 120)) "$dir/build/fuzz/fuzz-loader" \
    "$dir/corpus" "$dir/seeds" "$src/fuzz/corpus" \
    -dict="$src/fuzz/fuzz-loader.dict" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$dir/artifacts/" -print_final_stats=1 >> "$log" 2>&1
rc=$?
[ $rc -eq 0 ] || fail "found a problem (exit $rc); artifacts in $dir/artifacts"
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
echo "ok 1 fuzz-loader ${secs}s"
echo "# ${runs:-?} inputs executed"
