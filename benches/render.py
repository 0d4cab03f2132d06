#!/usr/bin/env python3
"""Renders the README's benchmark tables from the raw results committed in benches/results/.

Each rendered table sits in README.md between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
NAME picks the renderer below and its results: the newest `benches/results/NAME-*.json` or
`.jsonl` (the date in the file name orders them). The benchmark scripts write those files;
this script is the only place that turns them into tables, so a number in a rendered table
is always one a run measured.

    benches/render.py            rewrite README.md in place
    benches/render.py --check    exit 1 if README.md differs from what the results render
                                 (a table edited by hand, or results committed without
                                 rendering); the test command runs this
    benches/render.py --print NAME [FILE]
                                 print one table (from FILE, default the newest results)

Standard library only: the test command runs it with any python3.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results"
README = ROOT / "README.md"


def load(path: Path):
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def validation_ab(rows) -> list[str]:
    """`benches/validation_ab.sh`: one JSON line per run (round, codec, mode, MiB/s, broker
    CPU s/GiB); medians per codec and mode."""
    cells: dict[tuple[str, str], list] = {}
    for r in rows:
        cells.setdefault((r["codec"], r["mode"]), []).append(r)
    out = [
        "| codec | strict MiB/s | relaxed MiB/s | strict vs relaxed | broker CPU s/GiB strict | relaxed |",
        "|---|---|---|---|---|---|",
    ]
    for codec in dict.fromkeys(r["codec"] for r in rows):
        s, x = cells[(codec, "strict")], cells[(codec, "relaxed")]
        ms = statistics.median(r["mib_per_sec"] for r in s)
        mx = statistics.median(r["mib_per_sec"] for r in x)
        cs = statistics.median(r["broker_cpu_s_per_gib"] for r in s)
        cx = statistics.median(r["broker_cpu_s_per_gib"] for r in x)
        out.append(f"| {codec} | {ms:.0f} | {mx:.0f} | {100 * (ms / mx - 1):+.1f}% | {cs:.2f} | {cx:.2f} |")
    return out


def perf(res) -> list[str]:
    """`benches/perf.sh`: the limits of this machine (disk, loopback) and `sediment bench`
    runs, one object (see perf.sh for the fields)."""
    disk, sync1, loop, half = res["disk_seq_mib_s"], res["disk_sync1_mib_s"], res["loopback_mib_s"], res["half_rate"]
    runs = res["runs"]

    def ms(d, q):
        return f"{d['latency_us'][q] / 1000:.2f}"

    out = [
        f"| measurement (1 KiB records) | throughput | vs disk ({disk:.0f} MiB/s) | produce latency p50 / p99 |",
        "|---|---|---|---|",
        f"| disk: sequential write, fsync every 64 MiB | {disk:.1f} MiB/s | 100% | – |",
        f"| disk: 1 MiB write + fsync, repeated | {sync1:.1f} MiB/s | {100 * sync1 / disk:.0f}% | – |",
        f"| loopback TCP, one stream | {loop:.0f} MiB/s | – | – |",
    ]
    for name, label in (("one-p1", "produce acks=1, 1 partition"), ("all-p1", "produce acks=all, 1 partition"),
                        ("one-p8", "produce acks=1, 8 partitions"), ("all-p8", "produce acks=all, 8 partitions")):
        d = runs[name]
        out.append(f"| {label} | {d['produced_mib_per_s']:.1f} MiB/s | {100 * d['produced_mib_per_s'] / disk:.0f}% | "
                   f"{ms(d, 'p50')} / {ms(d, 'p99')} ms |")
    c = runs["consume-p8"]
    out.append(f"| consume, 8 partitions | {c['consumed_mib_per_s']:.1f} MiB/s | {100 * c['consumed_mib_per_s'] / disk:.0f}% | – |")
    h = runs["half-all-p1"]
    out.append(f"| acks=all, rate limit at half of max ({half} rec/s) | {h['produced_mib_per_s']:.1f} MiB/s | – | "
               f"{ms(h, 'p50')} / {ms(h, 'p99')} ms (p999 {ms(h, 'p999')} ms) |")
    f = runs["fixed-all-p1"]
    out.append(f"| acks=all, rate limit 50k rec/s | {f['produced_mib_per_s']:.1f} MiB/s | – | "
               f"{ms(f, 'p50')} / {ms(f, 'p99')} ms (p999 {ms(f, 'p999')} ms) |")
    return out


def single_node_ab(rows) -> list[str]:
    """`benches/single_node_ab.sh`: one JSON line per round and variant (`single-node`,
    `raft-of-one`); medians per variant. Throughput lists are [records/s, p50 us, p99 us]."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    a, b = by["single-node"], by["raft-of-one"]

    def med(rs, key, i=None):
        return statistics.median(r[key] if i is None else r[key][i] for r in rs)

    def row(label, key, i=None, unit="rec"):
        x, y = med(a, key, i), med(b, key, i)
        if unit == "rec":
            return f"| {label} | {x:,.0f} | {y:,.0f} | {100 * (y / x - 1):+.0f}% |"
        if unit == "us":
            return f"| {label} | {x / 1000:.1f} ms | {y / 1000:.1f} ms | {100 * (y / x - 1):+.0f}% |"
        return f"| {label} | {x:.0f} ms | {y:.0f} ms | {y - x:+.0f} ms |"

    return [
        f"| measure (medians of {len(a)} rounds) | single-node path | Raft group of one | change |",
        "|---|---|---|---|",
        row("produce acks=1, records/s", "acks1", 0),
        row("produce acks=all, records/s", "acksall", 0),
        row("acks=all at a fixed 20,000 records/s, p99", "rate20k", 2, "us"),
        row("acks=all, 4 producers, 100 B records in 1 KiB batches, records/s", "small_acksall", 0),
        row("start on an empty data dir to `/ready`", "start_ms", unit="ms"),
        row("restart with the bench's data to `/ready`", "restart_ms", unit="ms"),
        row("a new group's first record (subscribe to first message)", "first_record_ms", unit="ms"),
    ]


RENDERERS = {"validation_ab": validation_ab, "perf": perf, "single_node_ab": single_node_ab}


def newest(name: str) -> Path:
    files = sorted(p for p in RESULTS.glob(f"{name}-*") if p.suffix in (".json", ".jsonl"))
    if not files:
        raise SystemExit(f"render.py: no results for {name} in {RESULTS}")
    return files[-1]


BLOCK = re.compile(r"(<!-- bench:([a-z_]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(readme: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"render.py: README names an unknown table {name!r}")
        src = newest(name)
        body = "\n".join(RENDERERS[name](load(src)))
        note = f"<!-- rendered by benches/render.py from {src.relative_to(ROOT)}; edit the results, not the table -->"
        return f"{m.group(1)}{note}\n{body}\n{m.group(4)}"

    return BLOCK.sub(one, readme)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--print"]:
        name = argv[1]
        src = Path(argv[2]) if len(argv) > 2 else newest(name)
        print("\n".join(RENDERERS[name](load(src))))
        return 0
    text = README.read_text()
    names = [m.group(2) for m in BLOCK.finditer(text)]
    rendered = render(text)
    if argv[:1] == ["--check"]:
        if rendered != text:
            print(f"README.md's benchmark tables differ from benches/results ({', '.join(names)}): run benches/render.py")
            return 1
        print(f"README.md's benchmark tables match benches/results: {', '.join(names)}")
        return 0
    README.write_text(rendered)
    print(f"rendered {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
