"""Shared machinery of the consumer group suites: member processes, a background producer,
waiting for a group's commits, and the exactly-once check over the members' logs.

"Exactly once across the group" is checked on what was committed: every member commits
synchronously after processing (groups_worker.py logs each record it processed and each
commit's outcome). A record is *committed by* a member when that member's successful commit of
the record's partition covers it. The check:

* every record produced was committed by exactly one member (no committed duplicate, no gap);
* every record produced was processed at least once;
* records a member processed but did not get committed (it was SIGKILLed, or its commit failed
  in a rebalance) may be processed again by whoever took the partition over; after a failed
  commit, the same member's next successful commit of the partition covers them;
* the group's committed offsets end at the high watermark of every partition.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import groups_wire as gw
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import producer

HERE = Path(__file__).resolve().parent
WORKER = HERE / "groups_worker.py"
NODE_DIR = HERE.parent / "node"


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class Member:
    """One group member process and its log."""

    name: str
    argv: list[str]
    log: Path
    proc: Optional[subprocess.Popen] = None
    killed_at: Optional[float] = None
    stderr: Optional[Path] = None

    def start(self) -> "Member":
        self.stderr = self.log.with_suffix(".stderr")
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         preexec_fn=_die_with_parent, cwd=HERE)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        out = []
        for raw in self.log.read_text().splitlines():
            parts = raw.split()
            if len(parts) >= 2:
                out.append(parts)
        return out

    def events(self, kind: str) -> list[list[str]]:
        return [l for l in self.lines() if l[1] == kind]

    def assigned(self) -> Optional[set[int]]:
        """The last assignment it logged (None before any)."""
        a = self.events("A")
        if not a:
            return None
        return set() if a[-1][2] == "-" else {int(x) for x in a[-1][2].split(",")}

    def kill(self) -> None:
        """SIGKILL at a point where the log is unambiguous: not between a commit's I line and
        its outcome (the process is stopped, checked, and let run a little if needed)."""
        assert self.proc is not None
        for _ in range(200):
            os.kill(self.proc.pid, signal.SIGSTOP)
            open_intents = set()
            for l in self.lines():
                if l[1] == "I":
                    open_intents.add(l[2])
                elif l[1] in ("C", "F"):
                    open_intents.discard(l[2])
            if not open_intents:
                break
            os.kill(self.proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        self.proc.kill()
        self.proc.wait(10)
        self.killed_at = time.time()

    def stop(self, timeout: float = 30.0) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"member {self.name} did not stop on SIGTERM\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        err = self.stderr.read_text(errors="replace").splitlines()[-n:] if self.stderr and self.stderr.exists() else []
        return "\n".join(err)


def python_member(tmp: Path, name: str, client: str, bootstrap: str, group: str, topic: str,
                  instance: Optional[str] = None, session_ms: int = 6000) -> Member:
    argv = [sys.executable, str(WORKER), "--client", client, "--bootstrap", bootstrap, "--group", group,
            "--topic", topic, "--log", str(tmp / f"{name}.log"), "--name", name, "--session-ms", str(session_ms)]
    if instance:
        argv += ["--instance", instance]
    return Member(name, argv, tmp / f"{name}.log")


def node_member(tmp: Path, name: str, bootstrap: str, group: str, topic: str, session_ms: int = 6000) -> Member:
    argv = ["node", str(NODE_DIR / "groups_worker.js"), "--bootstrap", bootstrap, "--group", group, "--topic", topic,
            "--log", str(tmp / f"{name}.log"), "--name", name, "--session-ms", str(session_ms)]
    return Member(name, argv, tmp / f"{name}.log")


class BackgroundProducer:
    """Produces `total` records (acks=all) over `partitions` partitions at about `rate` per
    second in a thread; `acked` counts deliveries per partition."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, total: int, rate: float):
        self.bootstrap, self.topic, self.partitions, self.total, self.rate = bootstrap, topic, partitions, total, rate
        self.errors: list[str] = []
        self.acked: dict[int, int] = defaultdict(int)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.paused = threading.Event()

    def start(self) -> "BackgroundProducer":
        self.thread.start()
        return self

    def _run(self) -> None:
        p = producer(self.bootstrap, **{"linger.ms": 5, "message.timeout.ms": 120000, "retries": 1000000})

        def cb(err, msg):
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked[msg.partition()] += 1

        start = time.monotonic()
        for i in range(self.total):
            while self.paused.is_set():
                p.poll(0.05)
            p.produce(self.topic, key=b"%d" % i, value=b"record-%d" % i, partition=i % self.partitions, on_delivery=cb)
            delay = start + (i + 1) / self.rate - time.monotonic()
            p.poll(max(delay, 0))
        p.flush(120)

    def join(self, timeout: float = 120.0) -> dict[int, int]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer did not finish"
        assert not self.errors, f"produce errors: {self.errors[:5]}"
        assert sum(self.acked.values()) == self.total
        return dict(self.acked)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    with kw.Connection.to(bootstrap) as c:
        _, offs = gw.offset_fetch_v7(c, group, {topic: list(range(partitions))}, require_stable=True)
    return {p: offs[(topic, p)][0] for p in range(partitions)}


def wait_all_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int], members: list[Member],
                       timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    got = {}
    while time.monotonic() < deadline:
        try:
            got = committed_offsets(bootstrap, group, topic, len(ends))
        except (OSError, kw.ConnectionClosed, TimeoutError):
            time.sleep(0.5)
            continue
        if got == ends:
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {m.name} (running={m.running()})\n{m.tail(15)}" for m in members)
    raise AssertionError(f"group {group} committed {got}, expected {ends}\n{tails}")


@dataclass
class Verdict:
    committed_by: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    processed: dict[tuple[int, int], int] = field(default_factory=dict)
    reprocessed: int = 0


def check_logs(members: list[Member], ends: dict[int, int]) -> Verdict:
    """The exactly-once check described in the module docstring."""
    committed_by: dict[tuple[int, int], list[str]] = defaultdict(list)
    processed: dict[tuple[int, int], int] = defaultdict(int)
    for m in members:
        pending: dict[int, list[int]] = defaultdict(list)
        for l in m.lines():
            ev = l[1]
            if ev == "P" and len(l) >= 4:
                p, o = int(l[2]), int(l[3])
                if o not in pending[p]:  # processed again after a failed commit
                    pending[p].append(o)
                processed[(p, o)] += 1
            elif ev == "C" and len(l) >= 4:
                p, o = int(l[2]), int(l[3])
                for x in pending[p]:
                    if x < o:
                        committed_by[(p, x)].append(m.name)
                pending[p] = [x for x in pending[p] if x >= o]
            elif ev == "F" and len(l) >= 4:
                # a failed commit's outcome may be unknown (the connection broke after the
                # broker wrote it): the records stay pending, and the member's next successful
                # commit of the partition covers them, as it does at the broker
                pass
            elif ev == "V" and len(l) >= 3 and l[2] != "-":
                for p in l[2].split(","):
                    pending[int(p)] = []
            elif ev == "A":
                # eager rebalancing: a new assignment follows the revocation of everything (kafkajs
                # logs no revocation); positions restart from the committed offsets
                pending.clear()
    expected = {(p, o) for p, n in ends.items() for o in range(n)}
    dups = {k: v for k, v in committed_by.items() if len(v) > 1}
    assert not dups, f"{len(dups)} records committed more than once, e.g. " + ", ".join(
        f"{k}: {v[:4]}{'...' if len(v) > 4 else ''}" for k, v in sorted(dups.items())[:10])
    missing = sorted(expected - set(committed_by))
    assert not missing, f"{len(missing)} records never committed by anyone, e.g. {missing[:20]}"
    extra = sorted(set(committed_by) - expected)
    assert not extra, f"records committed that were never produced: {extra[:10]}"
    unprocessed = sorted(expected - set(processed))
    assert not unprocessed, f"records never processed: {unprocessed[:10]}"
    return Verdict(dict(committed_by), dict(processed), sum(n - 1 for n in processed.values()))


def broker_generations(log_text: str, group: str) -> list[int]:
    """Generations the broker logged for `group` ("group stabilizing ... generation=N")."""
    out = []
    for line in log_text.splitlines():
        if "group stabilizing" in line and f"group={group} " in line:
            for tok in line.split():
                if tok.startswith("generation="):
                    out.append(int(tok.split("=", 1)[1]))
    return out
