"""Power loss: the machine (or the whole cluster) loses power under an acks=all producer.

A SIGKILL keeps the page cache, so a broker that never fsyncs passes every kill test. Here each
broker's data dir is a sediment-lazyfs mount (tests/lazyfs): on a power cut every write not
fsynced is taken back, as a disk would lose it. Each test has a negative control: the same run
with `fsync = "never"` must lose acknowledged records, which proves the test can tell.
"""

import time

import pytest

from acks_common import AckLog, lost_acks, produce_until_crash, verify
from sediment_harness.clients import create_topic
from sediment_harness.powerloss import power_cut

PARTS = 3


# a lone broker's two paths: the single-node log, and a Raft group of one per partition
PATHS = {"single-node": "false", "raft-of-one": "true"}


def _single(disks, broker_factory, tmp_path, fsync, path="single-node"):
    (disk,) = disks(1)
    b = broker_factory(data_dir=disk.path / "data", object_store=f"file://{tmp_path / 'bucket'}",
                       env={"SEDIMENT_FSYNC": fsync, "SEDIMENT_SINGLE_NODE_RAFT": PATHS[path]})
    return b, disk


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", list(PATHS))
def test_one_broker_keeps_every_acked_record_through_power_loss(disks, broker_factory, tmp_path, topic_name, path):
    b, disk = _single(disks, broker_factory, tmp_path, "always", path)
    create_topic(b.bootstrap, topic_name, PARTS)
    acks, seq, cuts = AckLog(), 0, []
    for round_ in range(3):
        seq = produce_until_crash(b.bootstrap, topic_name, PARTS, seq, acks, run_for=1.0 + 0.5 * round_,
                                  crash=lambda: cuts.extend(power_cut([b], [disk])))
        b.start()
        verify(b.bootstrap, topic_name, PARTS, acks)
    print(f"{len(acks.acked)} acked records survived 3 power cuts; the cuts took back {cuts}")
    assert len(acks.acked) >= 1500


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", list(PATHS))
def test_one_broker_without_fsync_loses_acked_records_in_power_loss(disks, broker_factory, tmp_path, topic_name, path):
    """The negative control: the harness sees what a kill cannot."""
    b, disk = _single(disks, broker_factory, tmp_path, "never", path)
    create_topic(b.bootstrap, topic_name, PARTS)
    acks = AckLog()
    produce_until_crash(b.bootstrap, topic_name, PARTS, 0, acks, run_for=1.0,
                        crash=lambda: power_cut([b], [disk]))
    b.start()
    lost = lost_acks(b.bootstrap, topic_name, PARTS, acks)
    print(f"fsync=never: {len(lost)} of {len(acks.acked)} acked records lost")
    assert lost, "fsync=never lost nothing in a power cut: the harness cannot tell a missing fsync"


def _cluster(disks, cluster_factory, fsync):
    ds = disks(3)
    c = cluster_factory(3, data_dirs=[d.path / "data" for d in ds], env={"SEDIMENT_FSYNC": fsync})
    return c, ds


def _cluster_topic(c, topic):
    create_topic(c.bootstrap, topic, PARTS, replication_factor=3)
    for q in range(PARTS):
        c.leader(topic, q)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_whole_cluster_keeps_every_acked_record_through_power_loss(disks, cluster_factory, topic_name):
    c, ds = _cluster(disks, cluster_factory, "always")
    _cluster_topic(c, topic_name)
    acks, seq = AckLog(), 0
    for round_ in range(2):
        seq = produce_until_crash(c.bootstrap, topic_name, PARTS, seq, acks, run_for=1.5 + round_,
                                  crash=lambda: power_cut(c.nodes, ds))
        c.start()
        c.wait_ready()
        verify(c.bootstrap, topic_name, PARTS, acks,
               leader_of=lambda q: c.node(c.leader(topic_name, q)).bootstrap)
    assert len(acks.acked) >= 1000


@pytest.mark.timeout(600)
def test_whole_cluster_without_fsync_loses_acked_records_in_power_loss(disks, cluster_factory, topic_name):
    """The negative control for a cluster. Without fsync a partition's Raft group may not even
    elect a leader again (its membership was in the lost entries), so the loss is read from
    each broker's own log: no replica holds the acknowledged offsets any more."""
    c, ds = _cluster(disks, cluster_factory, "never")
    _cluster_topic(c, topic_name)
    acks = AckLog()
    produce_until_crash(c.bootstrap, topic_name, PARTS, 0, acks, run_for=1.5,
                        crash=lambda: power_cut(c.nodes, ds))
    c.start()
    held = {q: 0 for q in range(PARTS)}  # the longest log of each partition on any broker
    deadline = time.monotonic() + 60
    for n in c.nodes:
        while True:
            try:
                local = n.local_partitions(topic_name)
                if len(local) == PARTS:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{n.name} never opened {topic_name}"
            time.sleep(0.2)
        for q, p in local.items():
            held[q] = max(held[q], p["log_end_offset"])
    lost = [(s, q, o) for s, q, o in acks.acked if o >= held[q]]
    print(f"fsync=never: {len(lost)} of {len(acks.acked)} acked records held by no broker (logs: {held})")
    assert lost, "fsync=never lost nothing in a power cut: the harness cannot tell a missing fsync"
