#!/usr/bin/env python3
"""Consumer group benchmark against a real `sediment serve` (raw Kafka protocol over TCP, the
members are threads with their own connections; the helpers are tests/e2e/groups_wire.py).

  1. formation: 10 new members join an empty group at once; time until all 10 hold a synced
     assignment of the same generation (members learn of rebalances by heartbeating every
     10 ms, so the broker's work dominates rather than a client's heartbeat interval)
  2. rebalance: a 10-member Stable group; one member rejoins with changed metadata (what a
     cooperative-sticky member does after a revocation); time until all 10 are synced in the
     next generation. Repeated; p50/p99/max.
  3. offset commit throughput (fsync policy of the broker, default always): one connection
     committing one partition per request back to back, then 16 connections in parallel
     (their commits share group-commit fsyncs); commits/s and p50/p99 latency.

Usage: python3 benches/groups_bench.py [--bin PATH] [--fsync always|never] [--json OUT]
Run it with the test venv's python (tests/run.sh builds it); the binary defaults to
$CARGO_TARGET_DIR/release/sediment, else debug.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import groups_wire as gw  # noqa: E402
from sediment_harness import Broker  # noqa: E402
from sediment_harness import kafka_wire as kw  # noqa: E402

TOPIC = "bench"
PARTS = 10


class Member(threading.Thread):
    """A group member that rejoins as soon as a heartbeat says the group rebalances."""

    def __init__(self, bootstrap: str, group: str, idx: int, all_members: list["Member"]):
        super().__init__(daemon=True)
        self.c = kw.Connection.to(bootstrap, timeout=120)
        self.group, self.idx, self.all = group, idx, all_members
        self.member_id = ""
        self.generation = -1
        self.synced_generation = -1
        self.synced_at = 0.0
        self.meta = gw.subscription([TOPIC])
        self.stop = threading.Event()
        self.rejoin = threading.Event()
        self.rejoin.set()

    def join_and_sync(self) -> None:
        while True:
            j = gw.join_group_v5(self.c, self.group, self.member_id, protocols=(("range", self.meta),),
                                 session_timeout_ms=30000, rebalance_timeout_ms=60000, timeout=120)
            if j.error == gw.MEMBER_ID_REQUIRED:
                self.member_id = j.member_id
                continue
            if j.error == gw.UNKNOWN_MEMBER_ID:
                self.member_id = ""
                continue
            assert j.error == 0, j
            self.member_id, self.generation = j.member_id, j.generation
            assignments = []
            if j.leader == j.member_id:
                ids = sorted(m[0] for m in j.members)
                assignments = [(m, gw.assignment({TOPIC: [p for p in range(PARTS) if p % len(ids) == i]}))
                               for i, m in enumerate(ids)]
            err, _ = gw.sync_group_v3(self.c, self.group, j.generation, j.member_id, assignments=assignments, timeout=120)
            if err == gw.REBALANCE_IN_PROGRESS:
                continue
            assert err == 0, err
            self.synced_generation, self.synced_at = j.generation, time.monotonic()
            return

    def run(self) -> None:
        while not self.stop.is_set():
            if self.rejoin.is_set():
                self.rejoin.clear()
                self.join_and_sync()
                continue
            err = gw.heartbeat_v3(self.c, self.group, self.generation, self.member_id)
            if err in (gw.REBALANCE_IN_PROGRESS, gw.ILLEGAL_GENERATION, gw.UNKNOWN_MEMBER_ID):
                self.rejoin.set()
                continue
            time.sleep(0.01)


def all_synced(members, generation=None) -> bool:
    gens = {m.synced_generation for m in members}
    return len(gens) == 1 and -1 not in gens and (generation is None or gens == {generation}) \
        and not any(m.rejoin.is_set() for m in members)


def wait(pred, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.001)


def pct(xs, q) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench_groups(bootstrap: str, rounds: int) -> dict:
    members: list[Member] = []
    group = "bench-group"
    members.extend(Member(bootstrap, group, i, members) for i in range(10))
    t0 = time.monotonic()
    for m in members:
        m.start()
    wait(lambda: all_synced(members))
    formation = time.monotonic() - t0
    gen0 = members[0].synced_generation
    times = []
    for r in range(rounds):
        before = members[0].synced_generation
        trigger = members[r % 10]
        trigger.meta = gw.subscription([TOPIC]) + bytes([r % 256])  # changed metadata: a rebalance
        t0 = time.monotonic()
        trigger.rejoin.set()
        wait(lambda: all_synced(members) and members[0].synced_generation > before)
        times.append(max(m.synced_at for m in members) - t0)
    for m in members:
        m.stop.set()
    return {
        "members": 10,
        "formation_s": round(formation, 4),
        "formation_generations": gen0,
        "rebalance_rounds": rounds,
        "rebalance_p50_ms": round(statistics.median(times) * 1000, 2),
        "rebalance_p99_ms": round(pct(times, 0.99) * 1000, 2),
        "rebalance_max_ms": round(max(times) * 1000, 2),
    }


def bench_commits(bootstrap: str, connections: int, seconds: float) -> dict:
    lat: list[list[float]] = [[] for _ in range(connections)]
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        with kw.Connection.to(bootstrap) as c:
            n = 0
            while time.monotonic() < stop:
                n += 1
                t = time.monotonic()
                res = gw.offset_commit(c, 7, f"commit-bench-{i}", {(TOPIC, i % PARTS): (n, "")})
                lat[i].append(time.monotonic() - t)
                assert set(res.values()) == {0}, res

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    all_lat = [x for l in lat for x in l]
    return {
        "connections": connections,
        "commits": len(all_lat),
        "commits_per_s": round(len(all_lat) / elapsed, 1),
        "latency_p50_ms": round(pct(all_lat, 0.5) * 1000, 3),
        "latency_p99_ms": round(pct(all_lat, 0.99) * 1000, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    default_bin = target / "release" / "sediment"
    if not default_bin.exists():
        default_bin = target / "debug" / "sediment"
    ap.add_argument("--bin", default=str(default_bin))
    ap.add_argument("--fsync", default="always", choices=["always", "never"])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sediment-groups-bench-") as tmp:
        b = Broker(tmp, bin=a.bin, extra_args=["--fsync", a.fsync])
        b.start()
        try:
            from sediment_harness.clients import create_topic
            create_topic(b.bootstrap, TOPIC, PARTS)
            out = {"binary": a.bin, "fsync": a.fsync}
            out["rebalance"] = bench_groups(b.bootstrap, a.rounds)
            out["commit_1_connection"] = bench_commits(b.bootstrap, 1, a.seconds)
            out["commit_16_connections"] = bench_commits(b.bootstrap, 16, a.seconds)
        finally:
            b.stop()
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    r, c1, c16 = out["rebalance"], out["commit_1_connection"], out["commit_16_connections"]
    print(f"\n| metric ({a.fsync} fsync) | value |\n|---|---|")
    print(f"| 10 members form a new group (all synced) | {r['formation_s'] * 1000:.0f} ms ({r['formation_generations']} generations) |")
    print(f"| rebalance of 10 members, p50 / p99 | {r['rebalance_p50_ms']} / {r['rebalance_p99_ms']} ms |")
    print(f"| offset commits, 1 connection | {c1['commits_per_s']:.0f}/s (p50 {c1['latency_p50_ms']} ms) |")
    print(f"| offset commits, 16 connections | {c16['commits_per_s']:.0f}/s (p50 {c16['latency_p50_ms']} ms) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
