#!/usr/bin/env python3
"""Idempotent vs plain produce throughput, side by side, with confluent-kafka (librdkafka) and
with Sediment's own producer (`sediment bench`).

Starts a release broker (SEDIMENT_BIN, default $CARGO_TARGET_DIR/release/sediment) in a temp
dir, then alternates runs of 1 KiB records with idempotence on and off (acks=all for both,
since idempotence requires it), on 1 and on 8 partitions, and prints MiB/s per run plus the
median ratios. The issue's target: idempotent within 5% of plain.

Usage: benches/idempotence_bench.py [--records 300000] [--rounds 3] [--partitions 1 8] [--seconds 5]
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
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(bootstrap, topic, n, idempotent, in_flight=None, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
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
    # Warm up before the clock starts: an idempotent producer first waits for its producer id
    # (librdkafka asks for it ~0.5 s after connecting), which is start-up, not throughput.
    p.produce(topic, value=value)
    assert p.flush(30) == 0
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
    # Each run writes GiBs: drop its topic so a full bench stays within the disk.
    admin.delete_topics([topic])[topic].result()
    return n / dt, n * 1024 / dt / (1 << 20)


def run_sediment(binary, bootstrap, topic, partitions, idempotent, seconds):
    """`sediment bench`: Sediment's own producer, which pipelines an idempotent producer's
    requests (up to 5 in flight, like Kafka's Java client) instead of waiting per partition."""
    out = subprocess.run(
        [binary, "bench", "--bootstrap", bootstrap, "--topic", topic, "--partitions", str(partitions),
         "--replication-factor", "1", "--producers", "1", "--acks", "all", "--produce-only",
         "--batch-size", "1048576", "--linger-ms", "5", "--duration", str(seconds),
         "--idempotence", "true" if idempotent else "false", "--json"],
        check=True, capture_output=True, text=True, timeout=seconds + 120,
    )
    report = json.loads(out.stdout)
    subprocess.run([binary, "topic", "delete", "--bootstrap", bootstrap, topic], check=True, capture_output=True)
    assert report["produce_errors"] == 0, report
    return report["produce_records_per_s"], report["produced_mib_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each sediment bench run")
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
            # librdkafka lets an idempotent producer have at most 5 *messages* in flight per
            # partition (RD_KAFKA_IDEMP_MAX_INFLIGHT is compared with rktp_msgs_inflight, a
            # message count, in rd_kafka_toppar_producer_serve), so with batches of more than 5
            # records it sends one request per partition at a time and waits for the answer.
            # A plain producer pipelines up to max.in.flight requests per connection. "plain-1"
            # (max.in.flight=1) has the idempotent producer's pipelining on one partition, so
            # idempotent vs plain-1 isolates what idempotence costs the broker; idempotent vs
            # plain on several partitions is what an application sees.
            variants = {"plain": (False, None), "plain-1": (False, 1), "idempotent": (True, None)}
            summary = {"records": args.records, "rounds": args.rounds}
            for parts in args.partitions:
                results = {k: [] for k in variants}
                for r in range(args.rounds):
                    for name, (idem, inflight) in variants.items():
                        rps, mibs = run(bootstrap, f"{name}-p{parts}-{r}", args.records, idem, inflight, parts)
                        results[name].append(mibs)
                        print(f"{parts} partition(s), round {r} {name}: {rps:,.0f} records/s, {mibs:.1f} MiB/s", flush=True)
                med = {k: statistics.median(v) for k, v in results.items()}
                summary[f"p{parts}"] = {**{f"{k}_mib_per_s": round(v, 1) for k, v in med.items()},
                                        "idempotent_vs_plain": round(med["idempotent"] / med["plain"], 3),
                                        "idempotent_vs_plain_1": round(med["idempotent"] / med["plain-1"], 3)}
            # The same comparison with Sediment's producer, where both variants pipeline.
            for parts in args.partitions:
                results = {"plain": [], "idempotent": []}
                for r in range(args.rounds):
                    for name in results:
                        rps, mibs = run_sediment(binary, bootstrap, f"sb-{name}-p{parts}-{r}", parts,
                                                 name == "idempotent", args.seconds)
                        results[name].append(mibs)
                        print(f"sediment bench, {parts} partition(s), round {r} {name}: {rps:,.0f} records/s, {mibs:.1f} MiB/s", flush=True)
                med = {k: statistics.median(v) for k, v in results.items()}
                summary[f"sediment_p{parts}"] = {**{f"{k}_mib_per_s": round(v, 1) for k, v in med.items()},
                                                 "idempotent_vs_plain": round(med["idempotent"] / med["plain"], 3)}
            print(json.dumps(summary))
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    main()
