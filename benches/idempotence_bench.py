#!/usr/bin/env python3
"""Idempotent vs plain produce throughput, side by side, with confluent-kafka (librdkafka).

Starts a release broker (SEDIMENT_BIN, default $CARGO_TARGET_DIR/release/sediment) in a temp
dir, then alternates runs of N records of 1 KiB with enable.idempotence true and false (acks=all
for both, since idempotence requires it) and prints records/s and MiB/s per run plus the median
ratio. The issue's target: idempotent within 5% of plain.

Usage: benches/idempotence_bench.py [--records 300000] [--rounds 3]
(BENCH_FSYNC=never runs the broker with fsync = "never", to separate durability cost from idempotence cost)
(run with the test venv's python: ~/.cache/sediment-venv/bin/python)
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

from confluent_kafka import Producer


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(bootstrap, topic, n, idempotent, in_flight=None):
    conf = {}
    if in_flight:
        conf["max.in.flight.requests.per.connection"] = in_flight
    p = Producer({
        **conf,
        "bootstrap.servers": bootstrap,
        "enable.idempotence": idempotent,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1048576,
        "queue.buffering.max.kbytes": 1048576,
    })
    value = os.urandom(1024)
    t0 = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    dt = time.monotonic() - t0
    return n / dt, n * 1024 / dt / (1 << 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sediment-target"))
    binary = os.environ.get("SEDIMENT_BIN", os.path.join(target, "release", "sediment"))
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "broker.toml")
        with open(cfg, "w") as f:
            f.write('retention_check_interval_ms = 2000\nfsync = "' + os.environ.get("BENCH_FSYNC", "always") + '"\n[topic_defaults]\n"segment.bytes" = "134217728"\n'
                    '"retention.bytes" = "1073741824"\n"remote.storage.enable" = "false"\n')
        port = free_port()
        log = open(os.path.join(d, "broker.log"), "w")
        broker = subprocess.Popen([binary, "serve", "--config", cfg, "--data-dir", os.path.join(d, "data"),
                                   "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{free_port()}",
                                   "--raft-listen", f"127.0.0.1:{free_port()}"], stdout=log, stderr=log)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            bootstrap = f"127.0.0.1:{port}"
            # librdkafka caps an idempotent producer at 5 in-flight requests per connection;
            # a plain producer defaults to 1,000,000. "plain-5" isolates the broker's cost of
            # idempotence from that client-side pipelining limit.
            variants = {"plain": (False, None), "plain-5": (False, 5), "idempotent": (True, None)}
            results = {k: [] for k in variants}
            for r in range(args.rounds):
                for name, (idem, inflight) in variants.items():
                    rps, mibs = run(bootstrap, f"{name}-{r}", args.records, idem, inflight)
                    results[name].append(mibs)
                    print(f"round {r} {name}: {rps:,.0f} records/s, {mibs:.1f} MiB/s", flush=True)
            med = {k: statistics.median(v) for k, v in results.items()}
            print(json.dumps({**{f"{k}_mib_per_s": round(v, 1) for k, v in med.items()},
                              "idempotent_vs_plain": round(med["idempotent"] / med["plain"], 3),
                              "idempotent_vs_plain_same_in_flight": round(med["idempotent"] / med["plain-5"], 3),
                              "records": args.records, "rounds": args.rounds}))
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    main()
