#!/bin/bash
# One broker, two paths, side by side: the single-node path (OLD binary, or the same binary
# without single_node_raft) against a Raft group of one (NEW with SEDIMENT_SINGLE_NODE_RAFT).
# Alternating rounds on a fresh data dir each; per round: time to /ready, produce acks=1 and
# acks=all at full load (1 KiB records, 256 KiB batches), acks=all at a fixed 20k records/s
# (p99), a new group's first record, and a restart to /ready; then tiny batches (100 B records,
# 1 KiB batches, 4 producers). Prints one line per round and variant.
#   benches/single_node_ab.sh BINARY [ROUNDS]
set -u
BIN=${1:?sediment binary}; ROUNDS=${2:-3}
PY=${PY:-$HOME/.cache/sediment-venv/bin/python}
K=127.0.0.1:19092; A=127.0.0.1:19644
ready_ms() { until curl -sf $A/ready >/dev/null 2>&1; do sleep 0.005; done; echo $(( ($(date +%s%N) - $1) / 1000000 )); }
bench() {
  $BIN bench --bootstrap $K --topic "$1" --partitions 3 --duration 8 --produce-only --json "${@:2}" 2>/dev/null | tail -1 |
    python3 -c "import sys,json; j=json.loads(sys.stdin.read()); print(int(j['produce_records_per_s']), j['latency_us']['p50'], j['latency_us']['p99'])"
}
first_record_ms() {
  $PY - "$K" "$1" <<'PYEOF'
import sys, time, uuid
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "g-" + uuid.uuid4().hex[:6], "auto.offset.reset": "earliest"})
t0 = time.monotonic(); c.subscribe([sys.argv[2]])
while True:
    m = c.poll(0.05)
    if m is not None and not m.error():
        break
print(f"{(time.monotonic() - t0) * 1000:.0f}"); c.close()
PYEOF
}
# started in this shell (not in a command substitution), so `wait` reaps it before the next start
serve() { env $1 $BIN serve --data-dir $2 --listen $K --admin-listen $A >> $2/log 2>&1 & pid=$!; }
# a run stopped half-way must not leave its broker or its data dir (GBs) behind
pid=; d=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; [ -n "$d" ] && rm -rf "$d"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for v in single-node raft-of-one; do
    envs="SEDIMENT_SINGLE_NODE_RAFT=false"; [ $v = raft-of-one ] && envs="SEDIMENT_SINGLE_NODE_RAFT=true"
    d=$(mktemp -d /tmp/sediment-ab.XXXX); t=$(date +%s%N); serve "$envs" $d; start=$(ready_ms $t)
    a1=$(bench t1 --acks 1); aall=$(bench tall --acks all); rate=$(bench trate --acks all --rate 20000)
    small=$(bench tsmall --acks all --producers 4 --record-size 100 --batch-size 1024 --linger-ms 0)
    join=$(first_record_ms t1)
    kill $pid; wait $pid 2>/dev/null
    t=$(date +%s%N); serve "$envs" $d; restart=$(ready_ms $t); kill $pid; wait $pid 2>/dev/null
    echo "{\"round\": $round, \"variant\": \"$v\", \"start_ms\": $start, \"acks1\": [${a1// /, }], \"acksall\": [${aall// /, }], \"rate20k\": [${rate// /, }], \"small_acksall\": [${small// /, }], \"first_record_ms\": $join, \"restart_ms\": $restart}"
    rm -rf $d
  done
done
