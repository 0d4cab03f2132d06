"""Disk loss is safe for Raft: a broker back on an empty disk cannot elect a stale leader.

Raft assumes a voter remembers its vote and every entry it acknowledged. Three brokers, one
RF=3 partition led by A: C is frozen (SIGSTOP) while records are acknowledged by A and B; then
A and B die, B's disk is wiped, C thaws and B comes back empty. If B voted like any replica it
would elect C, whose log lacks every record acknowledged while it was frozen, and A would lose
them when it returned. B abstains until it has caught up with a leader, so the partition waits
for A, and every acknowledged record survives.
"""

import shutil
import signal
import time

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer, watermarks


def _leader_views(c, topic):
    views = {}
    for n in c.live():
        try:
            md = c.metadata([topic], via=n)
            views[n.node_id] = md.topics[topic].partitions[0].leader
        except Exception as e:  # noqa: BLE001 - a node still starting answers nothing useful
            views[n.node_id] = repr(e)
    return views


def test_a_wiped_voter_cannot_elect_a_stale_leader(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3)
    for n in c.nodes:
        n.wait_ready()
    a = c.node(c.leader(topic_name, 0))
    b, stale = [n for n in c.nodes if n is not a]

    stale.signal(signal.SIGSTOP)
    try:
        p = producer(f"{a.bootstrap},{b.bootstrap}", **{"acks": "all", "message.timeout.ms": 30000})
        acked = []
        for i in range(2000):
            p.produce(topic_name, value=b"v%d" % i, partition=0,
                      on_delivery=lambda e, m: acked.append((m.offset(), m.value())) if e is None else None)
        assert p.flush(60) == 0
        assert len(acked) == 2000
        a.kill()
        b.kill()
        shutil.rmtree(b.data_dir)
    finally:
        stale.signal(signal.SIGCONT)
    b.start()
    # B knows nothing yet (no metadata leader can be elected without A): it still names itself
    # as a broker (a client told of none forgets every broker it knew) and calls the topic
    # not available yet rather than unknown
    with kw.Connection.to(b.bootstrap) as conn:
        md = kw.metadata(conn, [topic_name])
    assert b.node_id in [br[0] for br in md.brokers], md.brokers
    assert md.topics[topic_name].error_code == kw.LEADER_NOT_AVAILABLE, md.topics[topic_name]
    # several election timeouts (and the election watchdog's 6 s) with the stale replica free
    # to campaign and the empty one asked for its vote
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        views = _leader_views(c, topic_name)
        assert stale.node_id not in views.values(), f"the stale replica was elected: {views}"
        time.sleep(0.5)

    a.start()
    c.leader(topic_name, 0, timeout=60)
    lo, hi = watermarks(c.bootstrap, topic_name, 0, timeout=30)
    got = consume_range(c.bootstrap, topic_name, {0: (0, hi)}, timeout=120)[0]
    by_offset = {m.offset(): m.value() for m in got}
    missing = [(o, v) for o, v in acked if by_offset.get(o) != v]
    assert not missing, f"{len(missing)} acked records lost, first {missing[:3]}"
    # and B caught up and votes again
    b.wait_ready(120)
    assert "votes again" in b.log_text()
