"""Tiered storage benchmark, driven by benches/tiering.sh (release builds, one machine).

Measures, in one run against one S3 server (SeaweedFS by default, on loopback):
  raw GET     plain object_store ranged GETs of the segment objects (tier-get), 1 and N in flight
  cold replay `sediment bench --consume-only` from offset 0 after a restart with an empty cache
  warm replay the same again (cache hits), alternating with
  local fetch the same volume from a topic with remote.storage.enable=false (page cache)
  produce     produce throughput alone, while a cold replay of the archive runs, and while a
              local-log replay runs: each phase from a restart with no upload lag, the order
              rotating over --rounds rounds, medians compared (CPU per process recorded)
and the object store requests per GiB moved (PUT-class for uploads, GET-class for replays).
Prints a markdown table and writes results.json to the output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))

from sediment_harness.broker import Broker  # noqa: E402
from sediment_harness.s3 import SERVERS  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def metrics(b: Broker) -> dict[str, float]:
    text = urllib.request.urlopen(f"{b.admin_url}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("sediment_object_store_requests_total") or line.startswith("sediment_tier_") or \
                line.startswith("sediment_cache_") or line.startswith("sediment_cold_read"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def group_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of every process in `pid`'s process group."""
    if pid is None:
        return 0.0
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[2]) == pgid:  # field 5 (pgrp), after the state
            total += int(f[11]) + int(f[12])  # utime, stime
    return total / tick


def children_cpu_seconds() -> float:
    """CPU seconds of the load generators: this script's process group (the broker and the S3
    server run in sessions of their own), running or finished."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return group_cpu_seconds(os.getpid()) - (me.ru_utime + me.ru_stime) + r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU seconds of the broker, the S3 server and the client processes over a phase."""

    def __init__(self, broker: Broker, server) -> None:
        self.broker, self.server = broker, server
        self.start = self.read()

    def read(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), group_cpu_seconds(self.broker.pid), group_cpu_seconds(self.server.pid),
                children_cpu_seconds())

    def done(self) -> dict[str, float]:
        end = self.read()
        wall = end[0] - self.start[0]
        names = ("broker", "s3", "clients")
        return {n: round((end[i + 1] - self.start[i + 1]) / wall, 2) for i, n in enumerate(names)}


def ops(m: dict[str, float], *names: str) -> float:
    return sum(m.get(f'sediment_object_store_requests_total{{op="{n}"}}', 0.0) for n in names)


def run_json(cmd: list[str], timeout: float = 1800, env: dict | None = None) -> dict:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def local_log_bytes(b: Broker, topic: str) -> int:
    d = b.data_dir / "logs" / f"{topic}-0"
    total = 0
    for p in d.glob("*.log"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def wait_uploaded(b: Broker, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(2)
    while True:
        m = metrics(b)
        if m.get("sediment_tier_upload_lag_bytes", 1) == 0:
            time.sleep(1.5)
            if metrics(b).get("sediment_tier_upload_lag_bytes", 1) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("uploads did not finish")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tier-get", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--server", default="seaweedfs", choices=sorted(SERVERS))
    ap.add_argument("--produce-seconds", type=float, default=10)
    ap.add_argument("--concurrent-seconds", type=float, default=8)
    ap.add_argument("--record-size", type=int, default=16384)
    ap.add_argument("--segment-mib", type=int, default=128)
    ap.add_argument("--get-concurrency", type=int, default=4)
    ap.add_argument("--cache-memory", default="4GiB",
                    help="memory tier of the read-through cache (the warm replay's working set)")
    ap.add_argument("--under-load-rate", default=None,
                    help="cold_read_bytes_per_sec_under_load for the produce-during-replay phase")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the produce phases (medians)")
    ap.add_argument("--keep", action="store_true", help="keep the broker and S3 data (several GiB)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    S = args.bin

    server = SERVERS[args.server](work / "s3")
    server.start()
    bucket = server.bucket("bench")
    env = dict(server.env())
    env["SEDIMENT_RETENTION_CHECK_INTERVAL_MS"] = "1000"
    env["RUST_LOG"] = "warn"
    b = Broker(work / "broker", bin=S, env=env, object_store=f"s3://{bucket}/sediment",
               extra_args=["--cache-size", "6GiB", "--cache-memory", args.cache_memory])
    b.start(timeout=120)
    results: dict = {"server": args.server, "record_size": args.record_size, "segment_mib": args.segment_mib}
    try:
        seg = str(args.segment_mib * MiB)
        topic_cfg = ["--config", f"segment.bytes={seg}", "--config", f"local.retention.bytes={2 * args.segment_mib * MiB}",
                     "--config", "retention.ms=-1"]
        for t, extra in (("archive", []), ("local", ["--config", "remote.storage.enable=false"]),
                         ("live-alone", []), ("live-during", []), ("live-during-local", [])):
            subprocess.run([S, "topic", "create", t, "--partitions", "1", "--bootstrap", b.bootstrap, *topic_cfg, *extra],
                           check=True, capture_output=True)
        bench = [S, "bench", "--bootstrap", b.bootstrap, "--partitions", "1", "--record-size", str(args.record_size),
                 "--batch-size", "1000000", "--linger-ms", "5", "--json"]

        # 1. produce the archive (and the same volume into a local-only topic)
        m0 = metrics(b)
        r = run_json(bench + ["--topic", "archive", "--produce-only", "--duration", str(args.produce_seconds)])
        results["produce_alone_first_mib_s"] = r["produced_mib_per_s"]
        archive_bytes = r["produced_records"] * args.record_size
        results["archive_mib"] = round(archive_bytes / MiB, 1)
        wait_uploaded(b)
        m1 = metrics(b)
        uploaded = m1.get("sediment_tier_uploaded_bytes_total", 0) - m0.get("sediment_tier_uploaded_bytes_total", 0)
        results["uploaded_mib"] = round(uploaded / MiB, 1)
        puts = ops(m1, "put", "put_part") - ops(m0, "put", "put_part")
        results["puts_per_gib_uploaded"] = round(puts / (uploaded / GiB), 1) if uploaded else None
        results["archive_local_mib_after_upload"] = round(local_log_bytes(b, "archive") / MiB, 1)
        r = run_json(bench + ["--topic", "local", "--produce-only", "--duration", str(args.produce_seconds)])

        # 2./3. raw ranged GETs of the same objects (1 in flight once; N in flight alternating
        # with a cold replay from a restart with an empty cache, over the rounds; medians)
        topic_prefix = "sediment/topics/archive/"

        def raw(conc: int) -> float:
            g = run_json([args.tier_get, "--url", f"s3://{bucket}", "--under", topic_prefix, "--chunk", str(4 * MiB),
                          "--concurrency", str(conc)], timeout=1800, env=server.env())
            results["raw_get_requests"] = g["requests"]
            results["remote_mib"] = round(g["bytes"] / MiB, 1)
            return round(g["mib_per_sec"], 1)

        results["raw_get_c1_mib_s"] = raw(1)
        raws, colds = [], []
        m3 = metrics(b)
        for n in range(args.rounds):
            for kind in (("raw", "cold") if n % 2 == 0 else ("cold", "raw")):
                if kind == "raw":
                    raws.append(raw(args.get_concurrency))
                    continue
                b.stop()
                shutil.rmtree(b.data_dir / "cache", ignore_errors=True)
                b.start(timeout=120)
                m2 = metrics(b)
                r = run_json(bench + ["--topic", "archive", "--consume-only", "--duration", "3600"])
                m3 = metrics(b)
                colds.append(r["consumed_mib_per_s"])
                if len(colds) == 1:
                    results["cold_replay_records"] = r["consumed_records"]
                    gets = ops(m3, "get", "get_range") - ops(m2, "get", "get_range")
                    remote_gib = results["remote_mib"] / 1024
                    results["gets_per_gib_cold"] = round(gets / remote_gib, 1) if remote_gib else None
                    results["cold_cache_misses"] = m3.get("sediment_cache_misses_total", 0) - m2.get("sediment_cache_misses_total", 0)
        results[f"raw_get_c{args.get_concurrency}_runs"], results["cold_replay_runs"] = raws, colds
        results[f"raw_get_c{args.get_concurrency}_mib_s"] = sorted(raws)[len(raws) // 2]
        results["cold_replay_mib_s"] = sorted(colds)[len(colds) // 2]

        # 4./5. warm replay (cache hits) and a local-log fetch of the same volume, alternating
        # for the same number of rounds (medians; single runs vary by ±15% here)
        warm, local = [], []
        for n in range(args.rounds):
            for kind in (("warm", "local") if n % 2 == 0 else ("local", "warm")):
                topic = "archive" if kind == "warm" else "local"
                r = run_json(bench + ["--topic", topic, "--consume-only", "--duration", "3600"])
                (warm if kind == "warm" else local).append(r["consumed_mib_per_s"])
        m4 = metrics(b)
        results["gets_warm"] = ops(m4, "get", "get_range") - ops(m3, "get", "get_range")
        results["warm_replay_runs"], results["local_fetch_runs"] = warm, local
        results["warm_replay_mib_s"] = sorted(warm)[len(warm) // 2]
        results["local_fetch_mib_s"] = sorted(local)[len(local) // 2]

        # 6. produce alone vs during a cold replay vs during a local-log replay (how much of the
        # drop is the machine: 2 cores shared by the producer, the consumer, the broker and the
        # S3 server). Back-to-back produce runs on this machine differ by up to ~25% in whichever
        # comes second (uploads, retention and writeback of the first run), so every phase starts
        # from a restart (empty cache), no upload lag and a sync, the order rotates each round,
        # and the medians are compared.
        if args.under_load_rate:
            b.env["SEDIMENT_COLD_READ_BYTES_PER_SEC_UNDER_LOAD"] = args.under_load_rate
            results["cold_read_bytes_per_sec_under_load"] = args.under_load_rate

        def phase(kind: str, n: int) -> dict:
            b.stop()
            shutil.rmtree(b.data_dir / "cache", ignore_errors=True)
            b.start(timeout=120)
            topic = f"live-{kind}-{n}"
            subprocess.run([S, "topic", "create", topic, "--partitions", "1", "--bootstrap", b.bootstrap, *topic_cfg],
                           check=True, capture_output=True)
            wait_uploaded(b)
            os.sync()
            time.sleep(1)
            replay: dict = {}
            t = None
            if kind != "alone":
                src = "archive" if kind == "during" else "local"
                t = threading.Thread(target=lambda: replay.update(run_json(bench + ["--topic", src, "--consume-only", "--duration", "3600"])))
                t.start()
                time.sleep(0.5)
            m0 = metrics(b)
            cpu = CpuMeter(b, server)
            r = run_json(bench + ["--topic", topic, "--produce-only", "--duration", str(args.concurrent_seconds)])
            cores = cpu.done()
            m1 = metrics(b)
            if t:
                t.join()
            # the next phase starts with no upload lag: drop what this one produced
            subprocess.run([S, "topic", "delete", topic, "--bootstrap", b.bootstrap], check=True, capture_output=True)
            return {"mib_s": r["produced_mib_per_s"], "p99_us": r["latency_us"]["p99"], "cpu": cores,
                    "replay_mib_s": replay.get("consumed_mib_per_s"),
                    "throttled_s": round(m1.get("sediment_cold_read_throttled_seconds_total", 0)
                                         - m0.get("sediment_cold_read_throttled_seconds_total", 0), 2)}

        kinds = ["alone", "during", "local"]
        runs: dict[str, list] = {k: [] for k in kinds}
        for n in range(args.rounds):
            for kind in kinds[n % 3:] + kinds[:n % 3]:
                runs[kind].append(phase(kind, n))
        results["produce_phases"] = runs

        def median(kind: str, key: str = "mib_s"):
            v = sorted(x[key] for x in runs[kind])
            return v[len(v) // 2]

        alone = median("alone")
        results["produce_alone_mib_s"] = alone
        results["produce_alone_p99_us"] = median("alone", "p99_us")
        results["produce_during_replay_mib_s"] = median("during")
        results["produce_during_replay_p99_us"] = median("during", "p99_us")
        results["replay_during_produce_mib_s"] = median("during", "replay_mib_s")
        results["produce_drop_pct"] = round(100 * (alone - results["produce_during_replay_mib_s"]) / alone, 1)
        results["produce_during_local_replay_mib_s"] = median("local")
        results["local_replay_during_produce_mib_s"] = median("local", "replay_mib_s")
        results["produce_drop_local_replay_pct"] = round(100 * (alone - results["produce_during_local_replay_mib_s"]) / alone, 1)
        results["cpu_cores_produce_alone"] = runs["alone"][0]["cpu"]
        results["cpu_cores_produce_during_replay"] = runs["during"][0]["cpu"]
        results["replay_throttled_s"] = [x["throttled_s"] for x in runs["during"]]
        results["cold_vs_raw_pct"] = round(100 * results["cold_replay_mib_s"] / results[f"raw_get_c{args.get_concurrency}_mib_s"], 1)
        results["warm_vs_local_pct"] = round(100 * results["warm_replay_mib_s"] / results["local_fetch_mib_s"], 1)
    finally:
        try:
            b.stop()
        finally:
            server.stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)  # the archive, its bucket copy, the cache

    (out / "results.json").write_text(json.dumps(results, indent=2))
    c = args.get_concurrency
    rows = [
        ("raw ranged GET, object_store, 4 MiB, 1 in flight", f"{results['raw_get_c1_mib_s']} MiB/s"),
        (f"raw ranged GET, object_store, 4 MiB, {c} in flight (median of rounds: each)", f"{results[f'raw_get_c{c}_mib_s']} MiB/s ({', '.join(map(str, results[f'raw_get_c{c}_runs']))})"),
        ("cold replay (empty cache), 1 partition (median of rounds: each)", f"{results['cold_replay_mib_s']} MiB/s ({', '.join(map(str, results['cold_replay_runs']))}; {results['cold_vs_raw_pct']}% of raw)"),
        ("warm replay (cache hits; median of rounds: each)", f"{results['warm_replay_mib_s']} MiB/s ({', '.join(map(str, results['warm_replay_runs']))}; {results['warm_vs_local_pct']}% of local fetch)"),
        ("local-log fetch, same volume", f"{results['local_fetch_mib_s']} MiB/s ({', '.join(map(str, results['local_fetch_runs']))})"),
        ("produce alone, acks=all (median of rounds: each)", f"{results['produce_alone_mib_s']} MiB/s ({', '.join(str(x['mib_s']) for x in runs['alone'])}), p99 {results['produce_alone_p99_us']} µs"),
        ("produce during a cold replay", f"{results['produce_during_replay_mib_s']} MiB/s ({', '.join(str(x['mib_s']) for x in runs['during'])}; {results['produce_drop_pct']}% drop), p99 {results['produce_during_replay_p99_us']} µs; the replay: {results['replay_during_produce_mib_s']} MiB/s, throttled {results['replay_throttled_s']} s"),
        ("produce during a local-log replay (baseline)", f"{results['produce_during_local_replay_mib_s']} MiB/s ({', '.join(str(x['mib_s']) for x in runs['local'])}; {results['produce_drop_local_replay_pct']}% drop); the replay: {results['local_replay_during_produce_mib_s']} MiB/s"),
        ("CPU cores used while producing alone (broker / S3 server / clients)", " / ".join(str(v) for v in results["cpu_cores_produce_alone"].values())),
        ("CPU cores used while producing during the replay", " / ".join(str(v) for v in results["cpu_cores_produce_during_replay"].values())),
        ("PUT-class requests per GiB uploaded", f"{results['puts_per_gib_uploaded']}"),
        ("GET-class requests per GiB, cold replay", f"{results['gets_per_gib_cold']} (warm replays: {int(results['gets_warm'])} GETs)"),
    ]
    print(f"\n{args.server}, {results['archive_mib']} MiB archive in {args.segment_mib} MiB segments, "
          f"{args.record_size} B records\n")
    print("| measurement | result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(f"\nraw JSON: {out / 'results.json'}")


if __name__ == "__main__":
    main()
