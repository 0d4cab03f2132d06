"""The ISR is real: Metadata lists as in sync only replicas that keep up with their leader.

Three brokers, an RF=3 topic under writes. One broker is SIGKILLed: every live broker's
Metadata drops it from each partition's ISR and lists it offline, the under-replicated gauge
counts the partitions, and `sediment topic describe` shows the same ISR. It comes back,
catches up on what was written meanwhile, and only then is in every ISR again. A topic with
min.insync.replicas=3 refuses acks=all writes while the ISR is short, as Kafka does.
"""

import subprocess
import time

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import create_topic, producer
from sediment_harness.metrics import scrape, val

PARTS = 3


def _views(c, topic):
    """{node id: {partition: (isr, offline)}} from every live broker's Metadata."""
    out = {}
    for n in c.live():
        md = c.metadata([topic], via=n)
        out[n.node_id] = {p.partition: (sorted(p.isr), sorted(p.offline)) for p in md.topics[topic].partitions}
    return out


def _wait_views(c, topic, want, timeout=60.0):
    """Until every live broker reports `want` ({partition: (isr, offline)}); returns seconds."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = _views(c, topic)
        if all(v == want for v in last.values()):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"ISR views never became {want}: {last}")


def _lag_of(c, follower):
    """The most Raft entries `follower` lacks, as its leaders report it."""
    return max(val(scrape(n)[1], "sediment_replication_follower_lag_entries", follower=follower) for n in c.live())


def _under_replicated(c):
    return sum(val(scrape(n)[1], "sediment_under_replicated_partitions") for n in c.live())


def _produce(bootstrap, topic, n, tag):
    p = producer(bootstrap, **{"acks": "all"})
    for i in range(n):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % PARTS)
    assert p.flush(60) == 0


def test_isr_shrinks_when_a_broker_dies_and_grows_when_it_returns(cluster_factory, topic_name, sediment_bin):
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, PARTS, replication_factor=3)
    strict = topic_name + "-strict"  # acks=all needs all three in sync
    create_topic(c.bootstrap, strict, 1, replication_factor=3, config={"min.insync.replicas": "3"})
    for q in range(PARTS):
        c.leader(topic_name, q)
    _produce(c.bootstrap, topic_name, 300, "before")
    everyone = {q: ([1, 2, 3], []) for q in range(PARTS)}
    _wait_views(c, topic_name, everyone, timeout=30)

    victim = c.node(3)
    victim.kill()
    took = _wait_views(c, topic_name, {q: ([1, 2], [3]) for q in range(PARTS)}, timeout=30)
    print(f"broker 3 left every ISR {took:.1f} s after its SIGKILL")
    # its partitions (and the strict topic's) are under-replicated where they are led, only there
    deadline = time.monotonic() + 20
    while _under_replicated(c) != PARTS + 1:
        assert time.monotonic() < deadline, f"under-replicated gauges sum to {_under_replicated(c)}, want {PARTS + 1}"
        time.sleep(0.5)
    out = subprocess.run([str(sediment_bin), "topic", "describe", topic_name, "--bootstrap", c.node(1).bootstrap],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in ([str(q)] for q in range(PARTS))]
    assert len(rows) == PARTS, out.stdout
    for row in rows:  # partition, leader, epoch, replicas, isr, ...
        replicas, isr = ({int(x) for x in col.split(",")} for col in row[3:5])
        assert (replicas, isr) == ({1, 2, 3}, {1, 2}), f"describe: {row}"

    # min.insync.replicas is checked against the ISR, as in Kafka
    strict_leader = c.node(c.leader(strict, 0))
    with kw.Connection.to(strict_leader.bootstrap) as conn:
        r = kw.produce(conn, 9, strict, 0, kw.build_record_batch([kw.Record(b"k", b"v")]))
    assert r.error_code == kw.NOT_ENOUGH_REPLICAS, r

    # writes go on without it; it must catch up on them to rejoin. Meanwhile its leaders count
    # the entries it lacks
    _produce(c.bootstrap, topic_name, 3000, "meanwhile")
    lag = _lag_of(c, 3)
    assert lag > 0, "the follower lag gauge shows no lag for a dead follower"
    acked = {q: max(n.local_partitions(topic_name)[q]["high_watermark"] for n in c.live()) for q in range(PARTS)}
    victim.restart()
    took = _wait_views(c, topic_name, everyone, timeout=90)
    print(f"broker 3 was back in every ISR {took:.1f} s after its restart")
    # it rejoined only with everything acknowledged while it was away
    held = {q: p["log_end_offset"] for q, p in victim.local_partitions(topic_name).items()}
    assert all(held[q] >= acked[q] for q in range(PARTS)), f"back in the ISR holding {held}, acked {acked}"
    assert _under_replicated(c) == 0
    deadline = time.monotonic() + 30
    while _lag_of(c, 3) != 0:
        assert time.monotonic() < deadline, f"broker 3 is in every ISR but its leaders report a lag of {_lag_of(c, 3)} entries"
        time.sleep(0.5)
    print(f"broker 3 lacked up to {lag:.0f} entries while it was down; none once back")
    with kw.Connection.to(victim.bootstrap) as conn:
        md = kw.metadata(conn, [topic_name])
    assert all(sorted(p.isr) == [1, 2, 3] and p.offline == [] for p in md.topics[topic_name].partitions)
    _wait_views(c, strict, {0: ([1, 2, 3], [])}, timeout=60)
    strict_leader = c.node(c.leader(strict, 0))
    with kw.Connection.to(strict_leader.bootstrap) as conn:
        r = kw.produce(conn, 9, strict, 0, kw.build_record_batch([kw.Record(b"k", b"v")]))
    assert r.error_code == kw.NONE, r


def test_a_live_broker_on_a_stalled_disk_leaves_every_isr_and_rejoins(disks, cluster_factory, topic_name, tmp_path):
    """Kafka's lag rule, not the liveness rule: broker 3 stays up and answers every request, but
    its disk stops taking writes for every partition it holds (one it leads among them). The
    partition it led elects another leader; every leader drops broker 3 from the ISR within
    replica.lag.time.max.ms (4 s here) and lists it online. Once the disk resumes, broker 3
    catches up and rejoins every ISR."""
    (disk,) = disks(1)
    c = cluster_factory(3, data_dirs=[tmp_path / "d1", tmp_path / "d2", disk.path / "data"],
                        env={"SEDIMENT_REPLICA_LAG_TIME_MAX_MS": "4000"})
    create_topic(c.bootstrap, topic_name, PARTS, replication_factor=3)
    leaders = {q: c.leader(topic_name, q) for q in range(PARTS)}
    assert 3 in leaders.values(), f"leaders are placed round the replicas, yet broker 3 leads none: {leaders}"
    everyone = {q: ([1, 2, 3], []) for q in range(PARTS)}
    _wait_views(c, topic_name, everyone, timeout=30)
    disk.stall("data/logs")  # every partition directory on the broker
    try:
        t0 = time.monotonic()
        p = producer(c.bootstrap, **{"acks": "all"})
        want = {q: ([1, 2], []) for q in range(PARTS)}
        last = None
        while time.monotonic() - t0 < 60:
            for i in range(60):
                p.produce(topic_name, value=f"stalled-{i}".encode(), partition=i % PARTS)
            p.poll(0)
            last = _views(c, topic_name)  # broker 3 included: it must keep answering Metadata
            if len(last) == 3 and all(v == want for v in last.values()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"ISR views never became {want}: {last}")
        took = time.monotonic() - t0
        print(f"broker 3 left every ISR {took:.1f} s after its disk stalled, still online")
        assert took >= 3.5, f"left after {took:.1f} s: before replica.lag.time.max.ms could have passed"
        assert p.flush(60) == 0, "acks=all writes must go on with two replicas in sync"
        # (broker 3's own view of those partitions waits for its disk, as Kafka's would)
        acked = {q: max(c.node(n).local_partitions(topic_name)[q]["high_watermark"] for n in (1, 2))
                 for q in range(PARTS)}
    finally:
        disk.resume()
    took = _wait_views(c, topic_name, everyone, timeout=60)
    print(f"broker 3 was back in every ISR {took:.1f} s after its disk resumed")
    held = {q: p["log_end_offset"] for q, p in c.node(3).local_partitions(topic_name).items()}
    assert all(held[q] >= acked[q] for q in range(PARTS)), f"back in the ISR holding {held}, acked {acked}"
