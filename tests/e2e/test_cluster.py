"""Three brokers on loopback, partitions replicated by Raft (issue 5).

* RF=3 topics: every broker lists every broker, replicas and a leader; records
  produced with acks=all are read back by confluent-kafka and reach every
  replica's high watermark.
* The leader of a partition is SIGKILLed repeatedly under a steady idempotent
  acks=all producer and restarted each time: every acked record is present
  exactly once, in order, with no offset gap; producers resume within seconds
  (the p50/p99 time to resume is printed for the issue note). The soak run of
  the same test is `SEDIMENT_KILLS=50 ./tests/run.sh -k kill_the_leader`.
* A stopped minority (SIGSTOP) leaves the majority serving; the stopped broker
  catches up when it continues.
* Idle partitions quiesce (their Raft groups stop heartbeats and election
  timers, `sediment_raft_quiesced_partitions`); when the broker leading most of
  them is SIGKILLed, the survivors elect new leaders from the brokers' liveness
  beats and every partition takes writes again; the restarted broker catches up.
* Leadership returns to each partition's preferred replica (the first of its
  assignment) after a broker restarts, while producers keep writing: nothing
  acked is lost or duplicated.
* Consumer groups in a cluster: the coordinator is the leader of the group's
  replicated __consumer_offsets partition; when it is SIGKILLed the group's
  committed offsets survive on the new coordinator and a consumer resumes from
  them; brokers that do not coordinate the group answer NOT_COORDINATOR.
"""

import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

import groups_wire as gw
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer
from sediment_harness.metrics import scrape, val


def partition_field_by_node(cluster, topic: str, partition: int, field: str) -> dict[int, int]:
    """A field of the partition (admin API `/v1/topics/TOPIC`) on every running node."""
    out = {}
    for n in cluster.live():
        try:
            with urllib.request.urlopen(f"{n.admin_url}/v1/topics/{topic}", timeout=5) as r:
                t = json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                continue  # a broker that just (re)started has not applied the topic yet
            raise
        for p in t["partitions"]:
            if p["partition"] == partition:
                out[n.node_id] = p[field]
    return out


def hw_by_node(cluster, topic: str, partition: int) -> dict[int, int]:
    """High watermark of the partition on every running node."""
    return partition_field_by_node(cluster, topic, partition, "high_watermark")


def wait_replicas_at(cluster, topic: str, partition: int, hw: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = hw_by_node(cluster, topic, partition)
        if len(seen) == len(cluster.live()) and all(v == hw for v in seen.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"replicas of {topic}-{partition} did not all reach hw {hw}: {seen}")


def test_three_brokers_replicate_every_partition(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 3, replication_factor=3)
    # every broker learns the topic from the controller and agrees on each partition's leader
    for i in range(3):
        c.leader(topic_name, i)
    for n in c.nodes:
        md = c.metadata([topic_name], via=n)
        assert sorted(b[0] for b in md.brokers) == [1, 2, 3]
        parts = md.topics[topic_name].partitions
        assert len(parts) == 3
        for p in parts:
            assert sorted(p.replicas) == [1, 2, 3]
            assert p.leader in (1, 2, 3) and p.leader_epoch >= 1

    p = producer(c.bootstrap, **{"enable.idempotence": True, "linger.ms": 5})
    acked = []
    for i in range(3000):
        p.produce(topic_name, value=b"v%05d" % i, partition=i % 3,
                  on_delivery=lambda e, m: acked.append((e, m.partition(), m.offset())))
    assert p.flush(60) == 0
    assert all(e is None for e, _, _ in acked), [a for a in acked if a[0]][:3]
    per = {i: sorted(o for _, pp, o in acked if pp == i) for i in range(3)}
    for i in range(3):
        assert per[i] == list(range(1000)), f"partition {i}: offsets not dense from 0"
    got = consume_range(c.bootstrap, topic_name, {i: (0, 1000) for i in range(3)}, timeout=60)
    for i in range(3):
        assert [m.value() for m in got[i]] == [b"v%05d" % j for j in range(i, 3000, 3)]
        wait_replicas_at(c, topic_name, i, 1000)


class SteadyProducer(threading.Thread):
    """An idempotent acks=all producer sending numbered values to one partition
    at a steady rate, recording each delivery report (value, offset, time)."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 400.0):
        super().__init__(daemon=True)
        self.p = producer(bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                                        "message.timeout.ms": 120000, "retry.backoff.ms": 50,
                                        "topic.metadata.refresh.interval.ms": 1000})
        self.topic = topic
        self.rate = rate
        self.stop_flag = threading.Event()
        self.sent = 0
        self.acked: list[tuple[int, int, float]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def _report(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked.append((int(msg.value()), msg.offset(), time.monotonic()))

    def run(self):
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop_flag.is_set():
            self.p.produce(self.topic, value=str(self.sent).encode(), partition=0, on_delivery=self._report)
            self.sent += 1
            self.p.poll(0)
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def acked_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for _, _, at in self.acked if at > t)

    def finish(self, timeout: float = 120.0) -> None:
        self.stop_flag.set()
        self.join(10)
        left = self.p.flush(timeout)
        assert left == 0, f"{left} records never acknowledged"


KILLS = int(os.environ.get("SEDIMENT_KILLS", "5"))


@pytest.mark.timeout(120 + 20 * KILLS)
def test_kill_the_leader_repeatedly_loses_nothing(cluster_factory, topic_name):
    kills = KILLS
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3)
    c.leader(topic_name, 0)
    prod = SteadyProducer(c.bootstrap, topic_name)
    prod.start()
    resume = []
    try:
        deadline = time.monotonic() + 30
        while prod.acked_since(0) < 200:
            assert time.monotonic() < deadline, f"producer not acknowledged: {prod.errors[-3:]}"
            time.sleep(0.05)
        for k in range(kills):
            leader = c.leader(topic_name, 0)
            killed_at = time.monotonic()
            c.node(leader).kill()
            # producing resumes: records acknowledged after the kill
            while prod.acked_since(killed_at) == 0:
                assert time.monotonic() - killed_at < 60, f"kill {k + 1}: producer did not resume; errors {prod.errors[-3:]}"
                time.sleep(0.01)
            resume.append(time.monotonic() - killed_at)
            c.node(leader).restart()
            time.sleep(0.5)
    finally:
        prod.finish()
    assert not prod.errors, f"delivery failures: {prod.errors[:5]}"
    acked = sorted(prod.acked, key=lambda a: a[1])
    assert len(acked) == prod.sent, f"{prod.sent} sent, {len(acked)} acked"
    offsets = [o for _, o, _ in acked]
    assert offsets == list(range(len(acked))), "acked offsets are not dense from 0 (duplicate or gap)"
    assert [v for v, _, _ in acked] == list(range(prod.sent)), "acked values out of send order"

    # a consumer reads the same log: every record once, in order, no gap
    n = len(acked)
    got = consume_range(c.bootstrap, topic_name, {0: (0, n)}, timeout=120)[0]
    assert [m.offset() for m in got] == list(range(n))
    assert [int(m.value()) for m in got] == list(range(n))
    # and every replica catches up to the same high watermark
    wait_replicas_at(c, topic_name, 0, n)
    r = sorted(resume)
    p50 = statistics.median(r)
    p99 = r[min(len(r) - 1, int(round(0.99 * (len(r) - 1))))]
    print(f"\nkill-leader: {kills} kills, {n} records, producer resume p50 {p50:.2f}s p99 {p99:.2f}s max {r[-1]:.2f}s")
    assert r[-1] < 30, f"producer took {r[-1]:.1f}s to resume"


def test_stopped_minority_majority_keeps_serving(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3)
    leader = c.leader(topic_name, 0)
    # stop a follower for longer than the election timeout
    follower = next(n for n in c.nodes if n.node_id != leader)
    follower.signal(19)  # SIGSTOP
    try:
        p = producer(",".join(n.bootstrap for n in c.nodes if n is not follower), **{"enable.idempotence": True})
        for i in range(500):
            p.produce(topic_name, value=b"%d" % i, partition=0)
        assert p.flush(60) == 0
        time.sleep(3)  # > election timeout: the majority must not be disturbed
        for i in range(500, 1000):
            p.produce(topic_name, value=b"%d" % i, partition=0)
        assert p.flush(60) == 0
    finally:
        follower.signal(18)  # SIGCONT
    got = consume_range(",".join(n.bootstrap for n in c.nodes if n is not follower), topic_name, {0: (0, 1000)}, timeout=60)[0]
    assert [int(m.value()) for m in got] == list(range(1000))
    wait_replicas_at(c, topic_name, 0, 1000)

    # now stop the leader: the other two elect a new one and take writes; the old
    # leader refuses writes when it continues (it is not the leader any more)
    old = c.node(c.leader(topic_name, 0))
    old.signal(19)
    try:
        others = ",".join(n.bootstrap for n in c.nodes if n is not old)
        p = producer(others, **{"enable.idempotence": True})
        for i in range(1000, 1200):
            p.produce(topic_name, value=b"%d" % i, partition=0)
        assert p.flush(60) == 0
    finally:
        old.signal(18)
    wait_replicas_at(c, topic_name, 0, 1200)
    got = consume_range(c.bootstrap, topic_name, {0: (0, 1200)}, timeout=60)[0]
    assert [int(m.value()) for m in got] == list(range(1200))


def quiesced(cluster) -> tuple[int, int]:
    """(quiet leaders, quiet followers) summed over the running brokers."""
    lead = follow = 0
    for n in cluster.live():
        _, m = scrape(n)
        lead += int(val(m, "sediment_raft_quiesced_partitions", role="leader"))
        follow += int(val(m, "sediment_raft_quiesced_partitions", role="follower"))
    return lead, follow


def poll_until(probe, done, timeout: float, what: str, every: float = 0.2):
    """Calls `probe` until `done(result)` holds; fails naming `what` and the last result.
    A probe that raises (a broker restarting) counts as not done."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = probe()
            if done(seen):
                return seen
        except Exception as e:
            seen = repr(e)
        time.sleep(every)
    raise AssertionError(f"{what}: last seen {seen}")


def wait_quiesced(cluster, timeout: float = 60.0) -> None:
    """Every partition of the cluster (internal topics included) quiet on every replica."""
    md = cluster.metadata(None)
    partitions = sum(len(t.partitions) for t in md.topics.values())
    want = (partitions, partitions * (len(cluster.live()) - 1))
    poll_until(lambda: quiesced(cluster), lambda seen: seen == want, timeout, f"quiet (leaders, followers) not {want}")


def test_idle_partitions_quiesce_and_fail_over(cluster_factory, topic_name):
    parts = 12
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, parts, replication_factor=3)
    p = producer(c.bootstrap, **{"enable.idempotence": True})
    for i in range(parts):
        p.produce(topic_name, value=b"first-%d" % i, partition=i)
    assert p.flush(60) == 0
    wait_quiesced(c)

    leaders = {i: c.leader(topic_name, i) for i in range(parts)}
    victim = max((1, 2, 3), key=lambda n: sum(1 for v in leaders.values() if v == n))
    moved = [i for i, v in leaders.items() if v == victim]
    c.node(victim).kill()
    killed_at = time.monotonic()
    for i in moved:
        c.leader(topic_name, i, timeout=30, exclude=[victim])
    failover = time.monotonic() - killed_at
    print(f"\nquiet failover: {len(moved)} partitions had new leaders in Metadata {failover:.2f}s after SIGKILL")
    others = ",".join(n.bootstrap for n in c.nodes if n.node_id != victim)
    p = producer(others, **{"enable.idempotence": True})
    for i in range(parts):
        p.produce(topic_name, value=b"second-%d" % i, partition=i)
    assert p.flush(60) == 0

    c.node(victim).restart()
    for i in range(parts):
        wait_replicas_at(c, topic_name, i, 2)
    got = consume_range(c.bootstrap, topic_name, {i: (0, 2) for i in range(parts)}, timeout=60)
    for i in range(parts):
        assert [m.value() for m in got[i]] == [b"first-%d" % i, b"second-%d" % i]
    wait_quiesced(c)


def preferred_leaders(cluster, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """{partition: (leader, preferred replica)} as the first live broker reports it."""
    md = cluster.metadata([topic], via=cluster.live()[0])
    return {p.partition: (p.leader, p.replicas[0]) for p in md.topics[topic].partitions if p.partition < partitions}


def wait_preferred(cluster, topic: str, partitions: int, timeout: float = 90.0) -> None:
    poll_until(lambda: preferred_leaders(cluster, topic, partitions),
               lambda seen: len(seen) == partitions and all(l == pref for l, pref in seen.values()),
               timeout, "leaders not back on their preferred replicas", every=0.25)


def test_leadership_returns_to_the_preferred_replica(cluster_factory, topic_name):
    parts = 6
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, parts, replication_factor=3)
    wait_preferred(c, topic_name, parts)
    prefs = {i: pref for i, (_, pref) in preferred_leaders(c, topic_name, parts).items()}
    assert sorted(prefs.values()) == [1, 1, 2, 2, 3, 3], f"preferred replicas not spread: {prefs}"

    acked: dict[int, list[int]] = {i: [] for i in range(parts)}
    errors: list[str] = []
    stop = threading.Event()

    def produce():
        p = producer(c.bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                                     "topic.metadata.refresh.interval.ms": 1000})
        n = 0

        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                acked[msg.partition()].append(int(msg.value()))

        while not stop.is_set():
            p.produce(topic_name, value=b"%d" % n, partition=n % parts, on_delivery=report)
            n += 1
            p.poll(0)
            time.sleep(0.002)
        unflushed.append(p.flush(120))  # asserted by the test's thread: an assert here would vanish

    def progress(what, count=200, timeout=60.0):
        """Until `count` more records are acknowledged: writes go on through each phase."""
        start = sum(len(v) for v in acked.values())
        deadline = time.monotonic() + timeout
        while sum(len(v) for v in acked.values()) < start + count:
            assert time.monotonic() < deadline, f"fewer than {count} records acknowledged {what}"
            assert t.is_alive(), "the producer thread ended"
            time.sleep(0.05)

    unflushed: list[int] = []
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        progress("before the kill")
        victim = 1
        c.node(victim).kill()
        for i in range(parts):
            c.leader(topic_name, i, timeout=30, exclude=[victim])
        progress("after the failover")
        c.node(victim).restart()
        wait_preferred(c, topic_name, parts)
        progress("once the preferred leaders were back")
    finally:
        stop.set()
        t.join(180)
    assert unflushed == [0], f"records never acknowledged: {unflushed}"
    assert not errors, errors[:5]
    total = sum(len(v) for v in acked.values())
    assert total > 0
    ends = {i: len(acked[i]) for i in range(parts)}
    got = consume_range(c.bootstrap, topic_name, {i: (0, ends[i]) for i in range(parts)}, timeout=120)
    for i in range(parts):
        assert [int(m.value()) for m in got[i]] == acked[i], f"partition {i}: log differs from what was acked"
        assert acked[i] == sorted(acked[i]), f"partition {i}: acked out of order"


def find_coordinator(cluster, group: str, timeout: float = 60.0) -> int:
    """The group's coordinator as the live brokers report it (created on first ask)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for n in cluster.live():
            try:
                with kw.Connection.to(n.bootstrap, timeout=5) as conn:
                    err, msg, node, _, _ = gw.find_coordinator_v3(conn, group)
            except OSError as e:
                last = repr(e)
                continue
            last = (err, msg, node)
            if err == 0 and cluster.node(node).running():
                return node
        time.sleep(0.2)
    raise AssertionError(f"no coordinator for {group}: {last}")


def consume_and_commit(bootstrap: str, topic: str, group: str, n: int) -> list[bytes]:
    """A group member reads `n` records, commits synchronously after each poll, and leaves."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < n:
            assert time.monotonic() < deadline, f"read {len(got)} of {n}"
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            got.append(m.value())
            if len(got) % 50 == 0 or len(got) == n:
                c.commit(asynchronous=False)
    finally:
        c.close()
    return got


def test_consumer_group_survives_its_coordinator(cluster_factory, topic_name):
    c = cluster_factory(3)
    parts = 3
    create_topic(c.bootstrap, topic_name, parts, replication_factor=3)
    p = producer(c.bootstrap, **{"enable.idempotence": True})
    values = [b"v%04d" % i for i in range(600)]
    for i, v in enumerate(values):
        p.produce(topic_name, value=v, partition=i % parts)
    assert p.flush(60) == 0
    group = f"{topic_name}-g"

    coordinator = find_coordinator(c, group)
    # brokers that do not coordinate the group say so
    other = next(n for n in c.nodes if n.node_id != coordinator)
    with kw.Connection.to(other.bootstrap) as conn:
        res = gw.offset_fetch_v7(conn, group, {topic_name: [0]})
        assert res[0] == 16, f"OffsetFetch on a non-coordinator: {res}"  # NOT_COORDINATOR

    first = consume_and_commit(c.bootstrap, topic_name, group, 300)
    assert len(set(first)) == 300

    c.node(coordinator).kill()
    new = find_coordinator(c, group)
    assert new != coordinator
    others = ",".join(n.bootstrap for n in c.nodes if n.node_id != coordinator)
    rest = consume_and_commit(others, topic_name, group, 300)
    # the group resumed from its commits: together the two members read everything once
    assert sorted(first + rest) == sorted(values), "records lost or read twice across the coordinator's death"

    # the dead broker comes back and the group's offsets are the same everywhere
    c.node(coordinator).restart()
    deadline = time.monotonic() + 60
    while True:
        # the coordinator may move back to the restarted broker meanwhile (leadership
        # rebalancing): clients then get NOT_COORDINATOR and ask again, as here
        final = find_coordinator(c, group)
        with kw.Connection.to(c.node(final).bootstrap) as conn:
            res = gw.offset_fetch_v7(conn, group, {topic_name: list(range(parts))})
        if res[0] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res[0] == 0, res
    assert {k: v[0] for k, v in res[1].items()} == {(topic_name, i): 200 for i in range(parts)}, res


def log_start_by_node(cluster, topic: str, partition: int) -> dict[int, int]:
    """Log start offset of the partition on every running node."""
    return partition_field_by_node(cluster, topic, partition, "log_start_offset")


def test_delete_records_is_replicated(cluster_factory, topic_name):
    """DeleteRecords on an RF=3 partition commits the new log start through the partition's
    Raft group: every replica applies it, a new leader still starts there after the old one is
    SIGKILLed, and the old one keeps it across its restart."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3)
    p = producer(c.bootstrap)
    for i in range(1000):
        p.produce(topic_name, value=str(i).encode())
    assert p.flush(60) == 0
    wait_replicas_at(c, topic_name, 0, 1000)

    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    tp = TopicPartition(topic_name, 0, 600)
    low = admin.delete_records([tp])[tp].result(30)
    assert low.low_watermark == 600, low.low_watermark
    poll_until(lambda: log_start_by_node(c, topic_name, 0), lambda s: len(s) == 3 and set(s.values()) == {600},
               30, "every replica at log start 600")

    # beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing moves
    tp_far = TopicPartition(topic_name, 0, 5000)
    with pytest.raises(Exception, match="OFFSET_OUT_OF_RANGE|out of range"):
        admin.delete_records([tp_far])[tp_far].result(30)

    leader = c.leader(topic_name, 0)
    c.node(leader).kill()
    c.leader(topic_name, 0, timeout=60, exclude=[leader])
    from sediment_harness.clients import watermarks

    assert watermarks(c.bootstrap, topic_name, 0, timeout=30) == (600, 1000)
    got = consume_range(c.bootstrap, topic_name, {0: (600, 1000)}, timeout=60)[0]
    assert [int(m.value()) for m in got] == list(range(600, 1000))

    c.node(leader).restart()
    poll_until(lambda: log_start_by_node(c, topic_name, 0), lambda s: len(s) == 3 and set(s.values()) == {600},
               60, "the restarted replica keeps log start 600")


def test_replicated_offsets_log_is_compacted(cluster_factory, topic_name, tmp_path):
    """A coordinator compacts its replicated `__consumer_offsets` partition: past the snapshot
    threshold it writes the live state again through Raft and raises the log start to it on
    every replica, so a new coordinator loads one snapshot plus what followed, not the whole
    history. After the coordinator is SIGKILLed, the new one serves the last commit."""
    cfg = tmp_path / "broker.toml"
    cfg.write_text("offsets_snapshot_min_records = 50\n")
    c = cluster_factory(3, extra_args=["--config", str(cfg)])
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3)
    group = f"{topic_name}-g"
    coord = None
    for i in range(300):
        # the coordinator can move meanwhile (leadership returning to its preferred replica):
        # clients then get a coordinator error and ask FindCoordinator again, as here
        deadline = time.monotonic() + 60
        while True:
            if coord is None:
                coord = find_coordinator(c, group)
            with kw.Connection.to(c.node(coord).bootstrap, timeout=10) as conn:
                errs = gw.offset_commit(conn, 7, group, {(topic_name, 0): (i, f"m{i}")})
            err = errs[(topic_name, 0)]
            if err == 0:
                break
            assert err in (14, 15, 16) and time.monotonic() < deadline, (i, errs)
            coord = None
            time.sleep(0.1)
    coord = find_coordinator(c, group)

    def raised(cluster):
        # the offsets partitions whose log start rose, on how many replicas
        counts = {}
        for p in range(50):
            try:
                starts = partition_field_by_node(cluster, "__consumer_offsets", p, "log_start_offset")
            except (urllib.error.URLError, ConnectionError):
                return {}
            n = sum(1 for v in starts.values() if v > 0)
            if n:
                counts[p] = n
        return counts

    poll_until(lambda: raised(c), lambda r: any(n == 3 for n in r.values()), 60,
               "an offsets partition compacted on all three replicas")

    c.node(coord).kill()
    new = find_coordinator(c, group)
    assert new != coord
    with kw.Connection.to(c.node(new).bootstrap, timeout=10) as conn:
        deadline = time.monotonic() + 60
        while True:
            err, offs = gw.offset_fetch_v7(conn, group, {topic_name: [0]})
            if err == 0 and offs.get((topic_name, 0), (None,))[0] == 299:
                break
            assert time.monotonic() < deadline, (err, offs)
            time.sleep(0.2)
        assert offs[(topic_name, 0)][2] == "m299"
