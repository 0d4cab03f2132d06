#!/usr/bin/env bash
# The test command (README, .ci/run): everything, from a fresh machine that has
# only the Rust toolchain and Python 3.
#
#   ./tests/run.sh                 all suites
#   ./tests/run.sh -k crash -x     extra arguments go to pytest (end-to-end suites)
#
# Steps:
#   1. kcat and promtool from Debian (apt-get, only if missing)
#   2. Python venv at $SEDIMENT_VENV (default $HOME/.cache/sediment-venv),
#      rebuilt when tests/requirements.txt or the Python version changes
#   3. vendor/check.sh: each vendored crate is its published release plus a patch file
#   4. cargo fmt --all --check (rustfmt.toml) and cargo clippy -D warnings, then cargo
#      build of every crate, test targets and the `sediment` binary in one
#      invocation (one feature resolution, nothing compiled twice), then
#      `cargo test --workspace`
#   5. the end-to-end suites (pytest, tests/e2e) against that binary, with the
#      deployment checks (tests/deploy/run.sh) and the fuzz targets (fuzz/run.sh,
#      FUZZ_SECONDS each, nightly toolchain) running alongside
#   6. a summary; the last line is exactly "N passed, M failed"
#
# Environment:
#   CARGO_TARGET_DIR       default $HOME/.cache/sediment-target (shared build cache)
#   SEDIMENT_VENV          default $HOME/.cache/sediment-venv
#   SEDIMENT_TEST_JOBS     pytest-xdist workers (default 2)
#   SEDIMENT_TEST_LOGS     where logs go (default: a new temporary directory,
#                          removed after a fully green run)
#   SEDIMENT_CARGO_TEST_TIMEOUT, SEDIMENT_E2E_TIMEOUT
#                          seconds before a wedged part is killed (1800, 2400)
#   FUZZ_SECONDS           seconds each fuzz target runs (default 15)
#   SEDIMENT_SKIP_CARGO_TEST=1 / SEDIMENT_SKIP_E2E=1 / SEDIMENT_SKIP_DEPLOY=1 / SEDIMENT_SKIP_FUZZ=1
#                          leave a part out (for local iteration; CI sets none)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}
VENV=${SEDIMENT_VENV:-$HOME/.cache/sediment-venv}
JOBS=${SEDIMENT_TEST_JOBS:-2}
LOGS=${SEDIMENT_TEST_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/sediment-tests.XXXXXX")}
mkdir -p "$LOGS"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

T_START=$(date +%s)
PASSED=0
FAILED=0
PARTS=()   # one summary line per part

say() { printf '\n==> %s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - $1 ))s; }
record() { # record NAME PASSED FAILED NOTE
    PASSED=$((PASSED + $2)); FAILED=$((FAILED + $3))
    PARTS+=("$(printf '%-14s %5d passed, %3d failed  %s' "$1" "$2" "$3" "$4")")
}
finish() {
    local where="logs in $LOGS"
    if [ "$FAILED" -eq 0 ] && [ -z "${SEDIMENT_TEST_LOGS:-}" ]; then
        rm -rf "$LOGS"
        where="all green, logs removed"
    fi
    echo
    echo "==> summary ($where; total $(elapsed "$T_START"))"
    for p in "${PARTS[@]}"; do echo "    $p"; done
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# ---------------------------------------------------------------- 1. kcat, promtool, ss
t=$(date +%s)
APT_WANT=()
command -v kcat >/dev/null 2>&1 || APT_WANT+=(kcat)
command -v promtool >/dev/null 2>&1 || APT_WANT+=(prometheus)   # promtool checks /metrics
command -v ss >/dev/null 2>&1 || APT_WANT+=(iproute2)            # test_tiering counts the broker's S3 connections
if [ ${#APT_WANT[@]} -gt 0 ]; then
    say "installing ${APT_WANT[*]} (apt-get)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_WANT[@]}"; } \
        >"$LOGS/apt.log" 2>&1; then
        cat "$LOGS/apt.log"
        echo "error: could not install ${APT_WANT[*]}" >&2
        record setup 0 1 "apt install failed"
        finish
    fi
    echo "${APT_WANT[*]} installed in $(elapsed "$t")"
fi

# ---------------------------------------------------------------- 2. venv
t=$(date +%s)
PY=$(command -v python3.11 || command -v python3 || true)
if [ -z "$PY" ]; then
    echo "error: python3 not found" >&2
    record setup 0 1 "no python3"
    finish
fi
REQ_HASH=$( { "$PY" -c 'import sys; print(sys.version)'; cat tests/requirements.txt; } | sha256sum | cut -c1-16)
mkdir -p "$(dirname "$VENV")"
(
    flock 9  # concurrent runs share the venv: build it once
    if [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" != "$REQ_HASH" ]; then
        echo "==> building the test venv at $VENV ($PY)"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV" &&
            "$VENV/bin/pip" install -q -r tests/requirements.txt &&
            echo "$REQ_HASH" >"$VENV/.requirements-hash"
    fi
) 9>"$VENV.lock" >"$LOGS/venv.log" 2>&1
if [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" != "$REQ_HASH" ]; then
    cat "$LOGS/venv.log"
    echo "error: could not build the test venv" >&2
    record setup 0 1 "venv build failed"
    finish
fi
grep -q "building" "$LOGS/venv.log" && echo "test venv built in $(elapsed "$t")"

# ---------------------------------------------------------------- 3. vendored crate
say "vendored crates (vendor/check.sh: published crate + patch file == the tree)"
bash vendor/check.sh >"$LOGS/vendor.log" 2>&1
VENDOR_RC=$?
cat "$LOGS/vendor.log"
LINE=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/vendor.log" | tail -1)
V_P=${LINE%% passed*}; V_F=${LINE#*, }; V_F=${V_F%% failed}
[ -n "$LINE" ] || { V_P=0; V_F=0; }
if [ "$VENDOR_RC" -ne 0 ] && [ "$V_F" -eq 0 ]; then V_F=1; fi
record "vendor" "$V_P" "$V_F" "($LOGS/vendor.log)"

# ---------------------------------------------------------------- 4. cargo
command -v cargo >/dev/null 2>&1 || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }
say "formatting (cargo fmt --all --check, rustfmt.toml)"
if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt >"$LOGS/fmt.log" 2>&1
fi
if cargo fmt --all --check >>"$LOGS/fmt.log" 2>&1; then
    echo "formatted"
    record "fmt" 1 0 "($LOGS/fmt.log)"
else
    head -60 "$LOGS/fmt.log"
    echo "error: not formatted: run cargo fmt --all" >&2
    record "fmt" 0 1 "($LOGS/fmt.log)"
fi
say "lints (cargo clippy --workspace --all-targets -- -D warnings)"
t=$(date +%s)
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy >"$LOGS/clippy.log" 2>&1
fi
if cargo clippy --workspace --all-targets -- -D warnings >>"$LOGS/clippy.log" 2>&1; then
    echo "no clippy warnings ($(elapsed "$t"))"
    record "clippy" 1 0 "($LOGS/clippy.log)"
else
    grep -E -A12 '^(warning|error)' "$LOGS/clippy.log" | head -80
    record "clippy" 0 1 "($LOGS/clippy.log)"
fi
BIN="$CARGO_TARGET_DIR/debug/sediment"
say "cargo build (workspace, test targets and binaries)"
t=$(date +%s)
# One invocation builds the `sediment` binary and every test target with the
# same feature resolution `cargo test --workspace` uses, so cargo test below
# reuses all of it (a separate `cargo build -p sediment` would compile many
# dependencies a second time with other features).
cargo build --workspace --lib --bins --tests --examples 2>&1 | tee "$LOGS/cargo-build.log"
BUILD_OK=${PIPESTATUS[0]}
echo "cargo build: exit $BUILD_OK in $(elapsed "$t")"
if [ "$BUILD_OK" -ne 0 ]; then
    grep -E -A12 '^error' "$LOGS/cargo-build.log" | head -150
fi

if [ "${SEDIMENT_SKIP_CARGO_TEST:-}" != 1 ]; then
    if [ "$BUILD_OK" -eq 0 ]; then
        say "cargo test --workspace"
        t=$(date +%s)
        timeout -k 30 "${SEDIMENT_CARGO_TEST_TIMEOUT:-1800}" \
            cargo test --workspace --no-fail-fast >"$LOGS/cargo-test.log" 2>&1
        CT_RC=$?
        read -r CT_P CT_F < <(awk '/^test result:/ {
                for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) }
            } END { print p + 0, f + 0 }' "$LOGS/cargo-test.log")
        grep -E '^test .* FAILED$|^failures:$|panicked at' "$LOGS/cargo-test.log" | head -40
        if [ "$CT_RC" -ne 0 ] && [ "$CT_F" -eq 0 ]; then
            tail -40 "$LOGS/cargo-test.log"
            CT_F=1  # it failed without a failing test: a doctest or test build error
        fi
        echo "cargo test: $CT_P passed, $CT_F failed in $(elapsed "$t")"
        record "cargo test" "$CT_P" "$CT_F" "($LOGS/cargo-test.log)"
    else
        record "cargo build" 0 1 "build failed ($LOGS/cargo-build.log)"
    fi
fi

# ---------------------------------------------------------------- 5. fuzz, e2e + deploy
FUZZ_PID=""
if [ "${SEDIMENT_SKIP_FUZZ:-}" != 1 ] && [ -f fuzz/run.sh ]; then
    say "fuzz targets (fuzz/run.sh, ${FUZZ_SECONDS:-15} s each, in the background, log: $LOGS/fuzz.log)"
    T_FUZZ=$(date +%s)
    FUZZ_SECONDS=${FUZZ_SECONDS:-15} timeout -k 30 2400 bash fuzz/run.sh >"$LOGS/fuzz.log" 2>&1 </dev/null &
    FUZZ_PID=$!
fi

DEPLOY_PID=""
if [ "${SEDIMENT_SKIP_DEPLOY:-}" != 1 ] && [ -f tests/deploy/run.sh ]; then
    say "deployment checks (tests/deploy/run.sh, in the background, log: $LOGS/deploy.log)"
    T_DEPLOY=$(date +%s)
    if [ -x "$BIN" ] && [ "$BUILD_OK" -eq 0 ]; then
        SEDIMENT_BIN="$BIN" timeout -k 30 1800 bash tests/deploy/run.sh >"$LOGS/deploy.log" 2>&1 </dev/null &
    else
        timeout -k 30 1800 bash tests/deploy/run.sh >"$LOGS/deploy.log" 2>&1 </dev/null &
    fi
    DEPLOY_PID=$!
fi

if [ "${SEDIMENT_SKIP_E2E:-}" != 1 ]; then
    if [ -x "$BIN" ] && [ "$BUILD_OK" -eq 0 ]; then
        say "end-to-end suites (pytest tests/e2e, $JOBS workers) against $BIN"
        t=$(date +%s)
        # pytest-timeout bounds each test; the outer timeout bounds a wedged run
        SEDIMENT_BIN="$BIN" timeout -k 30 "${SEDIMENT_E2E_TIMEOUT:-2400}" "$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider \
            -n "$JOBS" -q -rfEs --color=no --basetemp="$LOGS/pytest-tmp" \
            --junitxml="$LOGS/e2e-junit.xml" "$@" 2>&1 | tee "$LOGS/e2e.log"
        PT_RC=${PIPESTATUS[0]}
        read -r PT_P PT_F PT_S < <("$VENV/bin/python" - "$LOGS/e2e-junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0, 0)
    raise SystemExit
# one outcome per test: a test that fails and then errors in teardown counts once
outcome = {}
for tc in root.iter("testcase"):
    key = (tc.get("classname"), tc.get("name"))
    kinds = {child.tag for child in tc}
    if kinds & {"failure", "error"}:
        outcome[key] = "failed"
    elif "skipped" in kinds:
        outcome.setdefault(key, "skipped")
    else:
        outcome.setdefault(key, "passed")
vals = list(outcome.values())
t, f, s = len(vals), vals.count("failed"), vals.count("skipped")
print(t - f - s, f, s)
EOF
)
        if [ "$PT_RC" -ne 0 ] && [ "$PT_F" -eq 0 ]; then
            PT_F=1  # pytest failed without a failing test (collection or usage error)
        fi
        if [ "$PT_S" -gt 0 ] && [ "$#" -eq 0 ]; then
            # every suite installs what it needs: a skipped test is a test that did not run
            grep -E '^SKIPPED' "$LOGS/e2e.log" | head -20
            echo "error: $PT_S end-to-end tests were skipped; the suite allows none" >&2
            PT_F=$((PT_F + PT_S))
        fi
        echo "e2e: $PT_P passed, $PT_F failed, $PT_S skipped in $(elapsed "$t")"
        record "e2e (pytest)" "$PT_P" "$PT_F" "$PT_S skipped ($LOGS/e2e.log)"
    else
        echo "error: no sediment binary at $BIN (cargo build failed): end-to-end suites not run" >&2
        record "e2e (pytest)" 0 1 "not run: no binary"
    fi
fi

if [ -n "$FUZZ_PID" ]; then
    wait "$FUZZ_PID"
    FZ_RC=$?
    say "fuzz targets (fuzz/run.sh): exit $FZ_RC after $(elapsed "$T_FUZZ")"
    grep -v '^#' "$LOGS/fuzz.log" | tail -40
    LINE=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/fuzz.log" | tail -1)
    if [ -n "$LINE" ]; then
        FZ_P=${LINE%% passed*}
        FZ_F=${LINE#*, }; FZ_F=${FZ_F%% failed}
    else
        FZ_P=0; FZ_F=0
    fi
    if [ "$FZ_RC" -ne 0 ] && [ "$FZ_F" -eq 0 ]; then FZ_F=1; fi
    record "fuzz" "$FZ_P" "$FZ_F" "($LOGS/fuzz.log)"
fi

if [ -n "$DEPLOY_PID" ]; then
    wait "$DEPLOY_PID"
    DP_RC=$?
    say "deployment checks (tests/deploy/run.sh): exit $DP_RC after $(elapsed "$T_DEPLOY")"
    cat "$LOGS/deploy.log"
    LINE=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/deploy.log" | tail -1)
    if [ -n "$LINE" ]; then
        DP_P=${LINE%% passed*}
        DP_F=${LINE#*, }; DP_F=${DP_F%% failed}
    else
        DP_P=0; DP_F=0
    fi
    if [ "$DP_RC" -ne 0 ] && [ "$DP_F" -eq 0 ]; then DP_F=1; fi
    record "deploy" "$DP_P" "$DP_F" "($LOGS/deploy.log)"
fi

finish
