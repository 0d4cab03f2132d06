#!/bin/bash
# How long SIGTERM takes with many partitions: one broker, PARTITIONS partitions (topics of
# 500), a few records in each so every partition has something to flush, then SIGTERM and
# the time to exit, with the phases from the broker's log. Both paths of a lone broker: the
# single-node path and a Raft group of one (a group per partition, as in a cluster).
#   benches/shutdown.sh BINARY [PARTITIONS]
# One JSON line per variant. The file-descriptor limit bounds PARTITIONS (two per partition).
set -u
BIN=${1:?sediment binary}; N=${2:-8000}
K=127.0.0.1:19192; A=127.0.0.1:19744
wait_ready() { until curl -sf $A/ready >/dev/null 2>&1; do sleep 0.05; done; }
pid=
# a run stopped half-way must not leave its broker or its data dir behind
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; [ -n "${d:-}" ] && rm -rf "$d"' EXIT
for v in single-node raft-of-one; do
  envs="SEDIMENT_SINGLE_NODE_RAFT=false"; [ $v = raft-of-one ] && envs="SEDIMENT_SINGLE_NODE_RAFT=true"
  d=$(mktemp -d /tmp/sediment-shutdown.XXXX)
  env $envs $BIN serve --data-dir $d --listen $K --admin-listen $A --raft-listen 127.0.0.1:19193 > $d/log 2>&1 & pid=$!
  wait_ready
  topics=$(( (N + 499) / 500 ))
  t0=$(date +%s%N)
  for i in $(seq 1 $topics); do
    $BIN topic create "t$i" --partitions 500 --bootstrap $K >/dev/null || exit 1
  done
  created_s=$(( ($(date +%s%N) - t0) / 1000000000 ))
  for i in $(seq 1 $topics); do
    $BIN bench --bootstrap $K --topic "t$i" --duration 2 --produce-only --acks 1 --record-size 100 >/dev/null 2>&1
  done
  rss_mb=$(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 ))
  t=$(date +%s%N); kill -TERM $pid; wait $pid; code=$?
  ms=$(( ($(date +%s%N) - t) / 1000000 ))
  echo "{\"variant\": \"$v\", \"partitions\": $((topics * 500)), \"create_s\": $created_s, \"rss_mb\": $rss_mb, \"sigterm_to_exit_ms\": $ms, \"exit_code\": $code}"
  grep -E "controlled shutdown|finishing in-flight|shutdown: |shutdown complete" $d/log | sed 's/^/#   /' >&2
  pid=
  rm -rf $d
done
