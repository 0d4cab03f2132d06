#!/usr/bin/env bash
# Builds every fuzz target once, then runs each for a bounded time from a copy of its
# committed seed corpus (the committed corpus never grows during a run).
#
#   bash fuzz/run.sh                    every target, FUZZ_SECONDS each
#   bash fuzz/run.sh record_batch       only the targets named
#
# One line per target (executions, executions per second, pass or fail); on a crash, the
# saved input and the command that reproduces it. The last line is exactly
# "N passed, M failed" (targets). Exits non-zero if a target crashed, hung, ran out of memory
# or did not build.
#
# Environment:
#   FUZZ_SECONDS            seconds per target (default 20; with FUZZ_RUNS, the cap: 7200)
#   FUZZ_RUNS               executions per target instead of a time (the soak before an
#                           issue closes: FUZZ_RUNS=10000000 bash fuzz/run.sh)
#   FUZZ_UNIT_TIMEOUT       seconds one input may take before it counts as a hang (default 30)
#   FUZZ_RSS_LIMIT_MB       memory a target may use before it counts as a failure (default 2048)
#   FUZZ_MALLOC_LIMIT_MB    largest single allocation allowed (default 160): a small input that
#                           makes a decoder reserve more is a failure, even if the memory is
#                           freed at once. Above zstd's largest window (128 MiB), which a frame
#                           header may ask for; below the 256 MiB decompression cap.
#   FUZZ_TARGET_DIR         build cache (default $HOME/.cache/sediment-fuzz-target)
#   FUZZ_TOOLCHAIN          toolchain cargo-fuzz builds with (default nightly)
#   FUZZ_LOGS               where each target's libFuzzer output goes (default: a new
#                           temporary directory, removed when every target passed)
# cargo-fuzz is installed into $HOME/.cache/cargo-fuzz when missing.
set -uo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$FUZZ_DIR")
RUNS=${FUZZ_RUNS:-}
if [ -n "$RUNS" ]; then SECS=${FUZZ_SECONDS:-7200}; else SECS=${FUZZ_SECONDS:-20}; fi
UNIT_TIMEOUT=${FUZZ_UNIT_TIMEOUT:-30}
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-160}
TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/sediment-fuzz-target}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
CARGO_FUZZ_ROOT=$HOME/.cache/cargo-fuzz
CARGO_FUZZ=$CARGO_FUZZ_ROOT/bin/cargo-fuzz
TRIPLE=x86_64-unknown-linux-gnu
LOGS=${FUZZ_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/sediment-fuzz.XXXXXX")}
mkdir -p "$LOGS"

# target and the longest input it is given: a request frame, one record batch, a segment of a
# few batches with its indexes, a segment object tail or manifest, one peer message
ALL_TARGETS=(request_decode record_batch log_recovery segment_object raft_frame group_records)
declare -A MAX_LEN=(
    [request_decode]=16384
    [record_batch]=16384
    [log_recovery]=32768
    [segment_object]=16384
    [raft_frame]=8192
    [group_records]=16384
)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
for t in "${TARGETS[@]}"; do
    if [ -z "${MAX_LEN[$t]:-}" ]; then
        echo "error: unknown fuzz target $t (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

PASSED=0
FAILED=0
finish() {
    if [ "$FAILED" -eq 0 ] && [ -z "${FUZZ_LOGS:-}" ]; then
        rm -rf "$LOGS"
    else
        echo "libFuzzer output in $LOGS"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# ---------------------------------------------------------------- tools
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "==> installing the $TOOLCHAIN toolchain (cargo-fuzz needs nightly's sanitizer flags)"
    rustup toolchain install "$TOOLCHAIN" --profile minimal >"$LOGS/toolchain.log" 2>&1 \
        || { cat "$LOGS/toolchain.log"; FAILED=${#TARGETS[@]}; finish; }
fi
if [ ! -x "$CARGO_FUZZ" ]; then
    echo "==> installing cargo-fuzz into $CARGO_FUZZ_ROOT"
    cargo install cargo-fuzz --locked --root "$CARGO_FUZZ_ROOT" >"$LOGS/install.log" 2>&1 \
        || { tail -30 "$LOGS/install.log"; FAILED=${#TARGETS[@]}; finish; }
fi

# ---------------------------------------------------------------- build (once, all targets)
# -O: release without debug assertions, as the broker ships; AddressSanitizer (the default).
# The command line matches the one in README.md, so a manual run reuses this build.
echo "==> building fuzz targets ($TOOLCHAIN, into $TARGET_DIR)"
t0=$(date +%s)
if ! (cd "$ROOT" && RUSTUP_TOOLCHAIN=$TOOLCHAIN CARGO_TARGET_DIR=$TARGET_DIR \
        "$CARGO_FUZZ" build -O --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR") >"$LOGS/build.log" 2>&1; then
    grep -E '^(error|warning: unused)' -A12 "$LOGS/build.log" | head -80
    tail -20 "$LOGS/build.log"
    echo "fuzz targets did not build"
    FAILED=${#TARGETS[@]}
    finish
fi
echo "built in $(( $(date +%s) - t0 ))s"

# ---------------------------------------------------------------- run
SUMMARY=()
for t in "${TARGETS[@]}"; do
    bin=$TARGET_DIR/$TRIPLE/release/$t
    log=$LOGS/$t.log
    work=$(mktemp -d "${TMPDIR:-/tmp}/sediment-fuzz-$t.XXXXXX")
    # files a target writes (log_recovery's partition directories): tmpfs when there is one
    scratch=$(mktemp -d /dev/shm/sediment-fuzz-$t.XXXXXX 2>/dev/null || mktemp -d "$work/scratch.XXXXXX")
    mkdir -p "$work/corpus" "$FUZZ_DIR/artifacts/$t"
    if [ -d "$FUZZ_DIR/corpus/$t" ]; then
        cp -R "$FUZZ_DIR/corpus/$t/." "$work/corpus/"
    fi
    echo "==> $t (${RUNS:+$RUNS runs, at most }${SECS}s, max_len ${MAX_LEN[$t]})"
    start=$(date +%s)
    # libFuzzer stops itself after max_total_time; the outer timeout only catches a wedge
    SEDIMENT_FUZZ_SCRATCH=$scratch timeout --kill-after=10 $(( SECS + UNIT_TIMEOUT + 60 )) "$bin" \
        -max_total_time="$SECS" ${RUNS:+-runs="$RUNS"} \
        -max_len="${MAX_LEN[$t]}" \
        -rss_limit_mb="$RSS_LIMIT_MB" \
        -malloc_limit_mb="$MALLOC_LIMIT_MB" \
        -timeout="$UNIT_TIMEOUT" \
        -print_final_stats=1 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$t/" \
        "$work/corpus" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    rm -rf "$work" "$scratch"
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    execs=${execs:-0}
    rate=$(( execs / (took > 0 ? took : 1) ))
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$rc" -eq 0 ] && [ -z "$artifact" ]; then
        PASSED=$((PASSED + 1))
        line=$(printf '%-15s passed  %10s execs  %7s/s  %4ss' "$t" "$execs" "$rate" "$took")
    else
        FAILED=$((FAILED + 1))
        why="exit $rc"
        grep -q 'ERROR: libFuzzer: timeout' "$log" && why="hang (an input ran over ${UNIT_TIMEOUT}s)"
        grep -q -E 'out-of-memory|malloc\(.*\) exceeds limit' "$log" && why="out of memory"
        grep -q -E 'deadly signal|panicked at|ERROR: AddressSanitizer' "$log" && why="crash"
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="killed after $(( SECS + UNIT_TIMEOUT + 60 ))s"
        line=$(printf '%-15s FAILED  %10s execs  %7s/s  %4ss  %s' "$t" "$execs" "$rate" "$took" "$why")
        echo "--- $t: end of libFuzzer output ($log)"
        grep -n -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer' -A3 "$log" | head -20
        grep -E '^ +#[0-9]+ ' "$log" | grep -v -E 'libfuzzer_sys|std::|core::|__rust|/rustc/|libFuzzer|fuzzer::' | head -25
        if [ -n "$artifact" ]; then
            echo "crash input: $artifact"
            echo "  $(od -An -tx1 -v "$artifact" | tr -d ' \n' | head -c 400)"
            echo "reproduce:   $bin $artifact"
            echo "         or: (cd $ROOT && RUSTUP_TOOLCHAIN=$TOOLCHAIN CARGO_TARGET_DIR=$TARGET_DIR $CARGO_FUZZ run -O $t $artifact)"
        fi
    fi
    echo "$line"
    SUMMARY+=("$line")
done

echo
echo "==> summary"
for l in "${SUMMARY[@]}"; do echo "    $l"; done
finish
