"""A rolling restart that replaces every broker's disk loses nothing acked; a stopping broker
hands its leaderships over first.

Three brokers, RF=3 topics with min.insync.replicas=2, an idempotent acks=all
producer writing throughout. Each broker in turn is stopped (SIGTERM), its data
dir deleted, and started again empty; the next one goes only once the previous
reports ready on /ready. In a cluster /ready means: the metadata is applied and
every replica placed on the broker is in sync with its leader, so the restart
never takes a second copy of a partition away while the first is still being
rebuilt. At the end every acknowledged record is in the log exactly once, in
order, on every broker.
"""

import shutil
import threading
import time

from confluent_kafka import Producer

from sediment_harness.clients import consume_range, create_topic, watermarks

PARTITIONS = 3


def _wait_ready(node, timeout=120.0) -> tuple[float, list[str]]:
    return node.wait_ready(timeout)


def _log_end_offsets(node, topic) -> dict[int, int]:
    return {q: p["log_end_offset"] for q, p in node.local_partitions(topic).items()}


def _high_watermarks(node, topic) -> dict[int, int]:
    return {q: p["high_watermark"] for q, p in node.local_partitions(topic).items()}


class SteadyProducer:
    """An idempotent acks=all producer writing numbered records in the background and
    remembering which were acknowledged, with their offsets."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 400.0) -> None:
        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 100})
        self.topic, self.rate = topic, rate
        self.acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
        self.failed: list[str] = []
        self.ack_times: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
        self.sent = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg):
        if err is not None:
            self.failed.append(str(err))
        else:
            self.acked[msg.partition()].append((msg.offset(), msg.value()))
            self.ack_times[msg.partition()].append(time.monotonic())

    def longest_pause(self, start: float, end: float) -> dict[int, float]:
        """Per partition, the longest stretch without an acknowledgement that overlaps
        [start, end] (seconds): how long its writes stood still."""
        out = {}
        for p, times in self.ack_times.items():
            gaps = [b - a for a, b in zip(times, times[1:]) if b >= start and a <= end]
            out[p] = round(max(gaps, default=0.0), 3)
        return out

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                v = b"%08d" % self.sent
                self.p.produce(self.topic, value=v, partition=self.sent % PARTITIONS, on_delivery=self._cb)
                self.sent += 1
            self.p.poll(0.01)

    def start(self):
        self._t.start()
        return self

    def finish(self):
        self._stop.set()
        self._t.join(30)
        left = self.p.flush(120)
        assert left == 0, f"{left} records never acknowledged"


def _cluster_under_load(cluster_factory, topic_name):
    """Three ready brokers, an RF=3 topic with min.insync.replicas=2, and a steady producer
    that has been writing for a few seconds."""
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, PARTITIONS, replication_factor=3, config={"min.insync.replicas": "2"})
    for n in c.nodes:
        _wait_ready(n)
    prod = SteadyProducer(c.bootstrap, topic_name).start()
    time.sleep(3)
    return c, prod


def test_rolling_restart_with_empty_disks_loses_nothing(cluster_factory, topic_name):
    c, prod = _cluster_under_load(cluster_factory, topic_name)
    timings = {}
    for n in c.nodes:
        # what every replica must hold once the replaced broker is ready again
        before = _high_watermarks(c.nodes[(n.node_id % 3)], topic_name)
        n.stop()
        shutil.rmtree(n.data_dir)
        time.sleep(1)
        n.start()
        took, reasons = _wait_ready(n)
        timings[n.node_id] = (round(took, 2), reasons[:2])
        ends = _log_end_offsets(n, topic_name)
        for p, hw in before.items():
            assert ends.get(p, -1) >= hw, f"node {n.node_id} reported ready holding {ends} below {before}"
        time.sleep(2)
    time.sleep(2)
    prod.finish()
    print(f"time to ready after an empty restart (s) and what /ready said meanwhile: {timings}")
    _verify_exactly_once(c, topic_name, prod)


def _verify_exactly_once(c, topic_name, prod):
    """No send failed, and every acknowledged record is in the log once, in order, at its
    offset, on every broker."""
    assert not prod.failed, prod.failed[:5]
    total = sum(len(v) for v in prod.acked.values())
    assert total == prod.sent, (total, prod.sent)
    for p in range(PARTITIONS):
        acked = sorted(prod.acked[p])
        lo, hi = watermarks(c.bootstrap, topic_name, p, timeout=30)
        assert lo == 0
        got = consume_range(c.bootstrap, topic_name, {p: (0, hi)}, timeout=120)[p]
        values = [m.value() for m in got]
        assert len(values) == len(set(values)), f"partition {p}: duplicates in the log"
        by_offset = {m.offset(): m.value() for m in got}
        missing = [(o, v) for o, v in acked if by_offset.get(o) != v]
        assert not missing, f"partition {p}: {len(missing)} acked records missing or moved, first {missing[:3]}"
        # produced in order per partition, so the log is in order too
        assert values == sorted(values), f"partition {p}: out of order"
    # every broker ends with the same log
    deadline = time.monotonic() + 60
    while True:
        views = [_high_watermarks(n, topic_name) for n in c.nodes]
        if all(v == views[0] for v in views):
            break
        assert time.monotonic() < deadline, views
        time.sleep(0.2)


def test_controlled_shutdown_hands_leadership_over_before_the_broker_stops(cluster_factory, topic_name):
    """SIGTERM makes a broker hand each partition it leads to an in-sync replica before it
    closes: the moment it has exited, the others already name live leaders for all of them
    (after a SIGKILL they name the dead broker until an election ends). The producer's pause
    per partition is printed for both (the README's numbers come from this)."""
    c, prod = _cluster_under_load(cluster_factory, topic_name)
    pauses = {}
    for how in ("SIGTERM", "SIGKILL"):
        victim = c.node(c.leader(topic_name, 0))
        led = [q for q in range(PARTITIONS) if c.leader(topic_name, q) == victim.node_id]
        t0 = time.monotonic()
        if how == "SIGTERM":
            victim.stop()
            md = c.metadata([topic_name])
            leaders = {p.partition: p.leader for p in md.topics[topic_name].partitions}
            tail = victim.log_tail(400, since_last_start=True).splitlines()
            line = [l for l in tail if "controlled shutdown: leaderships handed over" in l]
            assert line and f"led={len(led)}" in line[0] and f"moved={len(led)}" in line[0], \
                (line, [l for l in tail if "handed over" in l or "handing over" in l])
            assert all(l not in (victim.node_id, -1) for l in leaders.values()), \
                f"broker {victim.node_id} exited still leading: {leaders}"
        else:
            victim.kill()
            for q in range(PARTITIONS):
                c.leader(topic_name, q, exclude=[victim.node_id])
        t1 = time.monotonic()
        time.sleep(3)
        pauses[how] = {q: v for q, v in prod.longest_pause(t0, t1).items() if q in led}
        victim.start()
        _wait_ready(victim)
        time.sleep(6)  # leadership returns to the preferred replicas
    prod.finish()
    print(f"longest produce pause per partition led by the stopped broker (s): {pauses}")
    _verify_exactly_once(c, topic_name, prod)


def test_controlled_shutdown_hands_the_controller_over(cluster_factory, topic_name):
    """SIGTERM on the broker that leads the metadata group hands that leadership to another
    broker before it exits: the moment it is gone, the others name a live controller, and a
    topic can be created through them (after a SIGKILL they name the dead one until an election
    ends)."""
    c, prod = _cluster_under_load(cluster_factory, topic_name)
    victim = c.node(c.metadata().controller_id)
    victim.stop()
    others = [n for n in c.nodes if n is not victim]
    named = {n.node_id: c.metadata(via=n).controller_id for n in others}
    tail = victim.log_tail(400, since_last_start=True).splitlines()
    assert [l for l in tail if "metadata leadership handed over" in l], [l for l in tail if "controlled shutdown" in l]
    assert all(v in [n.node_id for n in others] for v in named.values()), \
        f"broker {victim.node_id} exited still named controller: {named}"
    create_topic(",".join(n.bootstrap for n in others), f"{topic_name}-after", 1, replication_factor=2)
    victim.start()
    _wait_ready(victim)
    prod.finish()
    _verify_exactly_once(c, topic_name, prod)
