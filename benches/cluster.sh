#!/usr/bin/env bash
# Replication benchmarks (issue 5), in one run on this machine: three release brokers on
# loopback sharing one disk, side by side with RF=1 topics on the same cluster:
#   (a) acks=all produce throughput, RF=3 vs RF=1 (3 partitions, leaders spread);
#   (b) acks=all latency p50/p99/p999 at half of each maximum, beside the fsync latency of
#       the same disk measured during the RF=3 run (the limit an acks=all commit waits on),
#       and at a light 10,000 records/s;
#   (c) leader failover: SIGKILL a partition leader, time until Metadata names a new one;
#   (d) idle CPU and memory of a broker hosting many partitions (PERF_IDLE_PARTITIONS, 1000).
# Prints a markdown table and writes the raw JSON next to it.
#
# Usage: benches/cluster.sh [OUT_DIR]     (release build; a few minutes after the build)
#        SEDIMENT_BIN=path/to/sediment benches/cluster.sh   (another build, for A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
DURATION="${PERF_DURATION:-15}"
IDLE_PARTITIONS="${PERF_IDLE_PARTITIONS:-1000}"

# SEDIMENT_BIN: benchmark that binary instead (A/B runs against another build)
if [ -z "${SEDIMENT_BIN:-}" ]; then cargo build --release -p sediment >&2; fi
BIN="${SEDIMENT_BIN:-$CARGO_TARGET_DIR/release/sediment}"
export SEDIMENT_CLUSTER_SECRET=${SEDIMENT_CLUSTER_SECRET:-bench-cluster-secret-of-some-length}
WORK="$(mktemp -d "${PERF_DIR:-/tmp}/sediment-cluster.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# bounded disk, as in perf.sh: the three replicas write to the same disk
cat >"$WORK/broker.toml" <<'TOML'
retention_check_interval_ms = 2000
[topic_defaults]
"segment.bytes" = "134217728"
"retention.bytes" = "1073741824"
TOML
declare -A KP RP AP
PEERS=""
for i in 1 2 3; do
  KP[$i]=$(port); RP[$i]=$(port); AP[$i]=$(port)
  PEERS+="${PEERS:+,}$i=127.0.0.1:${RP[$i]}"
done
start() { # node
  local i=$1
  "$BIN" serve --config "$WORK/broker.toml" --node-id "$i" --data-dir "$WORK/n$i" --listen "127.0.0.1:${KP[$i]}" \
    --admin-listen "127.0.0.1:${AP[$i]}" --raft-listen "127.0.0.1:${RP[$i]}" --peers "$PEERS" >>"$WORK/n$i.log" 2>&1 &
  PIDS[$i]=$!
}
for i in 1 2 3; do start "$i"; done
BOOT="127.0.0.1:${KP[1]},127.0.0.1:${KP[2]},127.0.0.1:${KP[3]}"
for _ in $(seq 200); do
  n=$(python3 - "${KP[1]}" <<'PY' 2>/dev/null || echo 0
import sys
sys.path.insert(0, "tests/harness")
from sediment_harness import kafka_wire as kw
with kw.Connection.to(f"127.0.0.1:{sys.argv[1]}", timeout=1) as c:
    print(len(kw.metadata(c, None).brokers))
PY
)
  [ "$n" = 3 ] && break
  sleep 0.2
done

run() { # name, args...
  local name=$1; shift
  "$BIN" bench --bootstrap "127.0.0.1:${KP[1]}" --json "$@" >"$OUT/$name.json"
  echo "$name: $(cat "$OUT/$name.json")" >&2
}
COMMON=(--record-size 1024 --duration "$DURATION" --batch-size 1048576 --linger-ms 5 --producers 4 --consumers 0 --acks all --partitions 3)
run rf3 --topic rf3 --replication-factor 3 "${COMMON[@]}"
run rf1 --topic rf1 --replication-factor 1 "${COMMON[@]}"
half() { python3 -c "import json; print(int(json.load(open('$OUT/$1.json'))['produce_records_per_s'] / 2))"; }
H3=$(half rf3); H1=$(half rf1)
# the limit beside it: fsync latency on the brokers' disk while the RF=3 half-load runs (an
# acks=all commit needs an fsync on the leader and on one follower, all on this one disk)
python3 - "$WORK/fsync-probe" "$DURATION" >"$OUT/fsync.json" <<'PY' &
import json, os, sys, time
path, dur = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
buf, lat, end = os.urandom(4096), [], time.monotonic() + dur
while time.monotonic() < end:
    os.write(fd, buf)
    t = time.perf_counter()
    os.fsync(fd)
    lat.append(time.perf_counter() - t)
    time.sleep(0.005)
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000
print(json.dumps({"samples": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999)}))
PY
PROBE=$!
run rf3-half --topic rf3h --replication-factor 3 --rate "$H3" "${COMMON[@]}"
wait "$PROBE"
echo "fsync under RF=3 half load: $(cat "$OUT/fsync.json")" >&2
run rf1-half --topic rf1h --replication-factor 1 --rate "$H1" "${COMMON[@]}"
# and at a light 10,000 records/s, where the cores are not the bottleneck
run rf3-light --topic rf3l --replication-factor 3 --rate 10000 "${COMMON[@]}"
run rf1-light --topic rf1l --replication-factor 1 --rate 10000 "${COMMON[@]}"

# (c) failover: kill the leader of rf3-0 five times (restarting it), time to a new leader
FAILS=()
for k in 1 2 3 4 5; do
  L=$(python3 - "$BOOT" <<'PY'
import sys
sys.path.insert(0, "tests/harness")
from sediment_harness import kafka_wire as kw
for b in sys.argv[1].split(","):
    try:
        with kw.Connection.to(b, timeout=1) as c:
            p = kw.metadata(c, ["rf3"]).topics["rf3"].partitions[0]
            if p.error_code == 0 and p.leader > 0:
                print(p.leader); break
    except Exception:
        pass
PY
)
  T0=$(date +%s.%N)
  kill -9 "${PIDS[$L]}"
  while :; do
    NEW=$(python3 - "$BOOT" "$L" <<'PY'
import sys
sys.path.insert(0, "tests/harness")
from sediment_harness import kafka_wire as kw
dead = int(sys.argv[2])
for i, b in enumerate(sys.argv[1].split(",")):
    if i + 1 == dead:
        continue
    try:
        with kw.Connection.to(b, timeout=1) as c:
            p = kw.metadata(c, ["rf3"]).topics["rf3"].partitions[0]
            if p.error_code == 0 and p.leader > 0 and p.leader != dead:
                print(p.leader); break
    except Exception:
        pass
PY
)
    [ -n "$NEW" ] && break
    sleep 0.02
  done
  T1=$(date +%s.%N)
  FAILS+=("$(python3 -c "print(f'{$T1 - $T0:.2f}')")")
  start "$L"
  sleep 3
done
echo "failover seconds: ${FAILS[*]}" >&2
printf '%s\n' "${FAILS[@]}" >"$OUT/failover.txt"

# (d) idle cost of many partitions: a topic with IDLE_PARTITIONS partitions, RF=3, no traffic
"$BIN" topic create idle --partitions "$IDLE_PARTITIONS" --replication-factor 3 --bootstrap "127.0.0.1:${KP[1]}" >/dev/null
sleep 20
read -r CPU RSS < <(python3 - "${PIDS[1]}" <<'PY'
import os, sys, time
pid = sys.argv[1]
def ticks():
    f = open(f"/proc/{pid}/stat").read().split(")")[-1].split()
    return int(f[11]) + int(f[12])
hz = os.sysconf("SC_CLK_TCK")
t0, c0 = time.monotonic(), ticks()
time.sleep(20)
t1, c1 = time.monotonic(), ticks()
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")) * 1024
print(f"{100 * (c1 - c0) / hz / (t1 - t0):.1f} {rss / (1 << 20):.0f}")
PY
)
echo "idle with $IDLE_PARTITIONS partitions: ${CPU}% of one core, ${RSS} MiB RSS" >&2

python3 - "$OUT" "$H3" "$H1" "$CPU" "$RSS" "$IDLE_PARTITIONS" <<'PY'
import json, os, statistics, sys
out, h3, h1, cpu, rss, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
j = lambda n: json.load(open(os.path.join(out, n + ".json")))
f = [float(x) for x in open(os.path.join(out, "failover.txt")).read().split()]
lat = lambda d: f"{d['latency_us']['p50']/1000:.2f} / {d['latency_us']['p99']/1000:.2f} / {d['latency_us']['p999']/1000:.2f} ms"
print("| measurement (3 brokers, one machine, 1 KiB records, acks=all, 3 partitions) | RF=3 | RF=1 |")
print("|---|---|---|")
print(f"| max produce throughput | {j('rf3')['produced_mib_per_s']:.1f} MiB/s | {j('rf1')['produced_mib_per_s']:.1f} MiB/s |")
print(f"| latency p50 / p99 / p999 at half of max ({h3} / {h1} rec/s) | {lat(j('rf3-half'))} | {lat(j('rf1-half'))} |")
print(f"| latency p50 / p99 / p999 at 10,000 rec/s (10 MiB/s) | {lat(j('rf3-light'))} | {lat(j('rf1-light'))} |")
fs = j('fsync')
print(f"| limit: 4 KiB write+fsync on the brokers' disk during the RF=3 half-load run, p50 / p99 / p999 | {fs['p50_ms']:.2f} / {fs['p99_ms']:.2f} / {fs['p999_ms']:.2f} ms | – |")
print(f"| leader failover (SIGKILL to a new leader in Metadata), 5 kills | median {statistics.median(f):.2f} s, max {max(f):.2f} s | – |")
print(f"| idle broker hosting {idle} partitions (RF=3) | {cpu}% of one core, {rss} MiB RSS | – |")
PY
echo "raw results: $OUT" >&2
