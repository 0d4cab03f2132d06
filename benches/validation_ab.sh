#!/usr/bin/env bash
# What walking every record costs producers: `batch_validation = strict` (compressed batches
# streamed through their codec and walked, Kafka's behaviour) against `relaxed` (compressed
# batches checked by header and CRC only), side by side in one run on this machine.
#
# For each codec (none, lz4, zstd, gzip) and mode, alternating over ROUNDS rounds so drift
# hits both modes alike: a fresh release broker (fsync = never, so the CPU cost is not hidden
# behind the disk), 8 partitions, `sediment bench` producing 1 KiB text-like records with
# acks=1 for DURATION seconds; the broker's CPU seconds per GiB produced. Medians per cell.
# Uncompressed batches run the same code in both modes: that row is the noise floor.
# Prints a markdown table and writes the raw JSON lines to OUT_DIR/raw.jsonl.
#
# Usage: benches/validation_ab.sh [OUT_DIR]    (release build; ~5 minutes after it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
DURATION="${AB_DURATION:-8}"
ROUNDS="${AB_ROUNDS:-4}"  # even: each mode goes first equally often
CODECS="${AB_CODECS:-none lz4 zstd gzip}"
if [ -z "${SEDIMENT_BIN:-}" ]; then cargo build --release -p sediment >&2; fi
BIN="${SEDIMENT_BIN:-$CARGO_TARGET_DIR/release/sediment}"
WORK="$(mktemp -d "${AB_DIR:-/tmp}/sediment-ab.XXXXXX")"
PORT=19792
ADMIN=19793
trap 'kill $BROKER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
RAW="$OUT/raw.jsonl"
: >"$RAW"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for round in $(seq 1 "$ROUNDS"); do
    for codec in $CODECS; do
        # alternate which mode goes first
        if [ $((round % 2)) -eq 1 ]; then modes="strict relaxed"; else modes="relaxed strict"; fi
        for mode in $modes; do
            rm -rf "$WORK/data"
            sync  # the previous run's dirty pages must not be written back during this one
            SEDIMENT_BATCH_VALIDATION=$mode SEDIMENT_FSYNC=never "$BIN" serve --listen 127.0.0.1:$PORT \
                --admin-listen 127.0.0.1:$ADMIN --data-dir "$WORK/data" >"$WORK/broker.log" 2>&1 &
            BROKER_PID=$!
            for _ in $(seq 100); do
                curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null && break
                sleep 0.1
            done
            "$BIN" topic create ab --partitions 8 --bootstrap 127.0.0.1:$PORT >/dev/null
            t0=$(ticks $BROKER_PID)
            json=$("$BIN" bench --bootstrap 127.0.0.1:$PORT --topic ab --partitions 8 --producers 4 \
                --record-size 1024 --acks 1 --compression "$codec" --duration "$DURATION" --produce-only --json)
            t1=$(ticks $BROKER_PID)
            kill $BROKER_PID
            wait $BROKER_PID 2>/dev/null || true
            python3 - "$round" "$codec" "$mode" "$((t1 - t0))" "$(getconf CLK_TCK)" "$json" >>"$RAW" <<'PY'
import json, sys
r, codec, mode, ticks, hz, out = sys.argv[1:]
b = json.loads(out)
assert b["produce_errors"] == 0, b
mib_s = b["produced_mib_per_s"]  # value bytes, before compression
gib = mib_s * b["duration_s"] / 1024
print(json.dumps({"round": int(r), "codec": codec, "mode": mode, "mib_per_sec": mib_s,
                  "broker_cpu_s_per_gib": (int(ticks) / int(hz)) / gib if gib else None}))
PY
            tail -1 "$RAW" >&2
        done
    done
done

python3 benches/render.py --print validation_ab "$RAW"
# the README's table renders from the committed copy (benches/render.py)
cp "$RAW" "benches/results/validation_ab-$(date -u +%F).jsonl"
echo "results: benches/results/validation_ab-$(date -u +%F).jsonl (commit it, then run benches/render.py)" >&2
