#!/usr/bin/env bash
# Produce throughput with OpenTelemetry export off, on with 1% trace sampling and on with
# 100% sampling (issue 6), and optionally a build without any telemetry (BASELINE_BIN).
#
# Each configuration gets a fresh broker (release build) whose OTLP endpoint, when on, is a
# local OTLP/HTTP sink (it accepts and drops everything, like a collector that keeps up).
# Configurations are interleaved (A B C D A B C D ...) so drift on a shared machine spreads
# over all of them; the table reports the median of REPS runs and the overhead against "off"
# (and against the baseline when given).
#
# Throughput on a shared machine is noisy, so the script also reports the broker's CPU time per
# MiB produced (user+sys from /proc/PID/stat, read just before the broker stops): that cost is
# what telemetry adds to, and it does not depend on how much CPU other processes took.
#
# Workloads (`sediment bench --produce-only`, acks=1, fsync=never, so the broker's CPU, not the
# disk, is the limit and per-request costs show the most):
#   small    100-byte records, 16 KiB batches: many requests per second (worst case)
#   default  1 KiB records, 256 KiB batches
#
# Usage: benches/otel_overhead.sh [OUT_DIR]
#   REPS=3 DURATION=10 BASELINE_BIN=/path/to/sediment-without-telemetry
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
REPS="${REPS:-3}"
DURATION="${DURATION:-10}"
BASELINE_BIN="${BASELINE_BIN:-}"

if [ -z "${SEDIMENT_BIN:-}" ]; then
    cargo build --release -p sediment >&2
fi
BIN="${SEDIMENT_BIN:-$CARGO_TARGET_DIR/release/sediment}"
WORK="$(mktemp -d "${PERF_DIR:-/tmp}/sediment-otel.XXXXXX")"
BROKER_PID=""
SINK_PID=""
cleanup() {
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 did not open" >&2
    return 1
}

# OTLP/HTTP sink: answers every export with 200 and an empty (valid) protobuf response.
SINK_PORT=$(port)
python3 - "$SINK_PORT" "$WORK/sink.count" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = {"req": 0, "bytes": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        count["req"] += 1; count["bytes"] += n
        with open(sys.argv[2], "w") as f:
            f.write(f'{count["req"]} {count["bytes"]}\n')
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SINK_PID=$!
wait_port "$SINK_PORT"

CONFIGS=(off ratio1 ratio100)
[ -n "$BASELINE_BIN" ] && CONFIGS=(baseline "${CONFIGS[@]}")

run_one() { # config workload rep
    local cfg=$1 wl=$2 rep=$3 bin=$BIN
    local -a env=()
    case $cfg in
        baseline) bin=$BASELINE_BIN ;;
        off) ;;
        ratio1) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01) ;;
        ratio100) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=always_on) ;;
    esac
    local -a args=()
    case $wl in
        small) args=(--record-size 100 --batch-size 16384 --linger-ms 1) ;;
        default) args=(--record-size 1024 --batch-size 262144) ;;
    esac
    local kport aport data=$WORK/data-$cfg-$wl-$rep
    kport=$(port); aport=$(port)
    env "${env[@]}" OTEL_METRIC_EXPORT_INTERVAL=10000 "$bin" serve --data-dir "$data" --fsync never \
        --listen "127.0.0.1:$kport" --admin-listen "127.0.0.1:$aport" --raft-listen "127.0.0.1:$(port)" \
        >"$OUT/broker-$cfg-$wl-$rep.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$kport"
    local cpu0 cpu1
    cpu0=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
    "$BIN" bench --bootstrap "127.0.0.1:$kport" --topic bench --partitions 4 --producers 2 --acks 1 \
        --duration "$DURATION" --produce-only --json "${args[@]}" >"$OUT/$cfg-$wl-$rep.json"
    cpu1=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
    kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
    rm -rf "$data"
    python3 -c '
import json, os, sys
j = json.load(open(sys.argv[1]))
cpu_s = (int(sys.argv[6]) - int(sys.argv[5])) / os.sysconf("SC_CLK_TCK")
mib = j["produced_mib_per_s"] * float(sys.argv[7])
print(sys.argv[2], sys.argv[3], sys.argv[4], j["produce_records_per_s"], j["produced_mib_per_s"], j["produce_errors"],
      round(cpu_s * 1000 / mib, 3) if mib else 0)' \
        "$OUT/$cfg-$wl-$rep.json" "$cfg" "$wl" "$rep" "$cpu0" "$cpu1" "$DURATION" | tee -a "$OUT/results.txt" >&2
}

: >"$OUT/results.txt"
for wl in small default; do
    for rep in $(seq "$REPS"); do
        for cfg in "${CONFIGS[@]}"; do
            run_one "$cfg" "$wl" "$rep"
        done
    done
done

python3 - "$OUT/results.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {}
for cfg, wl, rep, rps, mibs, errs, cpu in rows:
    by.setdefault((wl, cfg), []).append((float(rps), float(mibs), int(errs), float(cpu)))
names = {"baseline": "no telemetry (baseline build)", "off": "OTLP off (metrics on /metrics only)",
         "ratio1": "OTLP on, traces sampled 1%", "ratio100": "OTLP on, traces sampled 100%"}
print("| workload | configuration | records/s (median) | runs (records/s) | broker CPU ms per MiB (median) | CPU vs off | CPU vs baseline | throughput vs off |")
print("|---|---|---|---|---|---|---|---|")
for wl in ("small", "default"):
    off = statistics.median(r[0] for r in by.get((wl, "off"), [(0, 0, 0, 0)]))
    off_cpu = statistics.median(r[3] for r in by.get((wl, "off"), [(0, 0, 0, 0)]))
    base_cpu = statistics.median(r[3] for r in by[(wl, "baseline")]) if (wl, "baseline") in by else None
    for cfg in ("baseline", "off", "ratio1", "ratio100"):
        if (wl, cfg) not in by:
            continue
        runs = by[(wl, cfg)]
        rps = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[3] for r in runs)
        tp_off = f"{(rps / off - 1) * 100:+.1f}%" if off else "-"
        cpu_off = f"{(cpu / off_cpu - 1) * 100:+.1f}%" if off_cpu else "-"
        cpu_base = f"{(cpu / base_cpu - 1) * 100:+.1f}%" if base_cpu else "-"
        spread = " / ".join(f"{r[0]:,.0f}" for r in runs)
        errs = sum(r[2] for r in runs)
        print(f"| {wl} | {names[cfg]} | {rps:,.0f} | {spread}{' (errors: %d)' % errs if errs else ''} | {cpu:.1f} | {cpu_off} | {cpu_base} | {tp_off} |")
PY
echo "raw results in $OUT" >&2
