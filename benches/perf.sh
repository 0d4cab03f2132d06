#!/usr/bin/env bash
# Measures, in one run on this machine, side by side:
#   (a) the disk's sequential write+fsync bandwidth (1 MiB writes, fsync after each, like a
#       group commit of a 1 MiB batch) in the directory the broker will use,
#   (b) produce throughput, 1 KiB records, acks=all and acks=1, 1 and 8 partitions,
#   (c) consume throughput,
#   (d) produce latency p50/p99/p999 at half of the measured acks=all maximum.
# Writes benches/results/perf-DATE.json, from which benches/render.py renders the README's
# table, and prints that table.
#
# Usage: benches/perf.sh [OUT_DIR]     (release build; takes ~5 minutes after the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
DURATION="${PERF_DURATION:-15}"

cargo build --release -p sediment >&2
BIN="$CARGO_TARGET_DIR/release/sediment"
WORK="$(mktemp -d "${PERF_DIR:-/tmp}/sediment-perf.XXXXXX")"
trap 'kill $BROKER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# (a) disk, two ways, in the directory the broker uses:
#     - 1 MiB write + fsync, repeated (the latency-bound floor: one fsync per 1 MiB batch)
#     - sequential 4 MiB writes with an fsync every 64 MiB (the bandwidth ceiling a group
#       commit can approach when many batches share an fsync)
read -r DISK_SYNC1 DISK_MIBS < <(python3 - "$WORK" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "disk-probe")
def run(block, sync_every, total_mib, limit_s):
    buf = os.urandom(block)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    n = 0; since = 0
    t0 = time.monotonic()
    while n * block < total_mib << 20 and time.monotonic() - t0 < limit_s:
        os.write(fd, buf); n += 1; since += block
        if since >= sync_every:
            os.fsync(fd); since = 0
    os.fsync(fd)
    dt = time.monotonic() - t0
    os.close(fd); os.unlink(path)
    return n * block / dt / (1 << 20)
a = run(1 << 20, 1 << 20, 1024, 15)
b = run(4 << 20, 64 << 20, 2048, 15)
print(f"{a:.1f} {b:.1f}")
PY
)
echo "disk: write+fsync per 1 MiB $DISK_SYNC1 MiB/s; sequential with fsync every 64 MiB $DISK_MIBS MiB/s" >&2

# loopback TCP: one sender, one receiver, 1 MiB writes, 2 GiB (the network limit on this box)
LOOP_MIBS=$(python3 - <<'PY'
import socket, threading, time
N = 2048
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def sink():
    c, _ = srv.accept(); got = 0; buf = bytearray(1 << 20); view = memoryview(buf)
    while got < N << 20:
        n = c.recv_into(view)
        if not n: break
        got += n
    c.close()
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(("127.0.0.1", port)); data = b"x" * (1 << 20)
t0 = time.monotonic()
for _ in range(N): s.sendall(data)
s.close(); t.join()
print(f"{N / (time.monotonic() - t0):.0f}")
PY
)
echo "loopback tcp: $LOOP_MIBS MiB/s" >&2

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KPORT=$(port)
# Bound the disk a run can fill (unlimited-rate runs write GiBs): small segments, 1 GiB per
# partition, frequent retention passes. Tiering is off so that the numbers are the hot path's
# and the embedded file:// object store does not double every write on the same disk.
cat >"$WORK/broker.toml" <<'TOML'
retention_check_interval_ms = 2000
[topic_defaults]
"segment.bytes" = "134217728"
"retention.bytes" = "1073741824"
"remote.storage.enable" = "false"
TOML
"$BIN" serve --config "$WORK/broker.toml" --data-dir "$WORK/data" --listen "127.0.0.1:$KPORT" --admin-listen "127.0.0.1:$(port)" --raft-listen "127.0.0.1:$(port)" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1',$KPORT),0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done

run() { # name, args...
  local name=$1; shift
  "$BIN" bench --bootstrap "127.0.0.1:$KPORT" --json "$@" >"$OUT/$name.json"
  echo "$name: $(cat "$OUT/$name.json")" >&2
}
COMMON=(--record-size 1024 --duration "$DURATION" --batch-size 1048576 --linger-ms 5)
run all-p1  --topic all-p1 --partitions 1 --producers 4 --consumers 0 --acks all "${COMMON[@]}"
run one-p1  --topic one-p1 --partitions 1 --producers 4 --consumers 0 --acks 1   "${COMMON[@]}"
run all-p8  --topic all-p8 --partitions 8 --producers 4 --consumers 0 --acks all "${COMMON[@]}"
run one-p8  --topic one-p8 --partitions 8 --producers 4 --consumers 0 --acks 1   "${COMMON[@]}"
run consume-p8 --topic one-p8 --partitions 8 --producers 0 --consumers 1 --consume-only --duration "$DURATION"
MAX=$(python3 -c "import json; print(int(json.load(open('$OUT/all-p1.json'))['produce_records_per_s']))")
HALF=$((MAX / 2))
run half-all-p1 --topic half-p1 --partitions 1 --producers 4 --consumers 0 --acks all --rate "$HALF" "${COMMON[@]}"
run fixed-all-p1 --topic fixed-p1 --partitions 1 --producers 4 --consumers 0 --acks all --rate 50000 "${COMMON[@]}"

# one results file (the README's table renders from it: benches/render.py)
RESULT="benches/results/perf-$(date -u +%F).json"
python3 - "$OUT" "$DISK_MIBS" "$HALF" "$DISK_SYNC1" "$LOOP_MIBS" "$DURATION" >"$RESULT" <<'PY'
import json, os, platform, subprocess, sys
out, disk, half, sync1, loop, duration = sys.argv[1:7]
runs = {n: json.load(open(os.path.join(out, n + ".json")))
        for n in ("all-p1", "one-p1", "all-p8", "one-p8", "consume-p8", "half-all-p1", "fixed-all-p1")}
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({
    "bench": "benches/perf.sh", "git": rev, "cores": os.cpu_count(), "kernel": platform.release(),
    "duration_s": int(duration), "disk_seq_mib_s": float(disk), "disk_sync1_mib_s": float(sync1),
    "loopback_mib_s": float(loop), "half_rate": int(half), "runs": runs,
}, indent=1))
PY
python3 benches/render.py --print perf "$RESULT"
echo "results: $RESULT (commit it, then run benches/render.py)" >&2
echo "raw results: $OUT" >&2
