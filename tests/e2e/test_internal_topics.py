"""__consumer_offsets belongs to the group coordinator, on one broker and in a
cluster alike: clients cannot append to it, delete it, change its partition
count, delete its records or change the configs that decide whether its
records are kept. Apache Kafka's answers: INVALID_TOPIC_EXCEPTION for appends
and DeleteRecords on an internal topic, INVALID_REQUEST for creating one;
Sediment refuses deletion and growth the same way (either would lose or
misplace committed offsets) and the guarded configs with INVALID_CONFIG.

Topic names that differ only in '.' versus '_' collide, as in Kafka.
"""

import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic

from sediment_harness import kafka_wire
from sediment_harness.clients import admin, consumer, create_topic

OFFSETS = "__consumer_offsets"
INVALID_TOPIC_EXCEPTION = 17
INVALID_CONFIG = 40
INVALID_REQUEST = 42
GROUP = "internal-topics-probe"


@pytest.fixture(params=["single", "cluster"])
def brokers(request, broker_factory, cluster_factory):
    """(bootstrap, restart-everything) for one broker or three."""
    if request.param == "single":
        b = broker_factory()
        return b.bootstrap, lambda: b.restart()
    c = cluster_factory(3)

    def restart_all():
        for n in c.nodes:
            n.kill()
        for n in c.nodes:
            n.start()
    return c.bootstrap, restart_all


def _committed(bootstrap):
    c = consumer(bootstrap, **{"group.id": GROUP, "enable.auto.commit": False})
    try:
        [tp] = c.committed([TopicPartition(GROUP, 0)], timeout=30)
        return tp.offset
    finally:
        c.close()


def _ensure_offsets_topic(bootstrap):
    """The coordinator creates the offsets topic when groups are first used: commit once."""
    create_topic(bootstrap, GROUP, partitions=1)
    c = consumer(bootstrap, **{"group.id": GROUP, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.commit(offsets=[TopicPartition(GROUP, 0, 42)], asynchronous=False)
                break
            except KafkaException as e:
                # in a cluster the coordinator may not have applied the new topic yet (Kafka
                # answers the same until its metadata cache has it)
                if time.monotonic() > deadline or e.args[0].code() != 3:
                    raise
                time.sleep(0.2)
        md = c.list_topics(timeout=10)
        assert OFFSETS in md.topics, "committing an offset should have created the offsets topic"
    finally:
        c.close()
    assert _committed(bootstrap) == 42


def _code(fut):
    with pytest.raises(KafkaException) as e:
        fut.result(30)
    return e.value.args[0].code()


def test_produce_to_offsets_topic_is_refused(brokers):
    bootstrap, _ = brokers
    _ensure_offsets_topic(bootstrap)
    batch = kafka_wire.build_record_batch([kafka_wire.Record(b"k", b"v")])
    for host in bootstrap.split(","):
        with kafka_wire.Connection.to(host) as conn:
            r = kafka_wire.produce(conn, 9, OFFSETS, 0, batch)
        assert r.error_code in (INVALID_TOPIC_EXCEPTION,), r


def test_offsets_topic_cannot_be_deleted_grown_created_or_truncated(brokers):
    bootstrap, restart_all = brokers
    _ensure_offsets_topic(bootstrap)
    a = admin(bootstrap)
    assert _code(a.delete_topics([OFFSETS], request_timeout=15)[OFFSETS]) == INVALID_TOPIC_EXCEPTION
    md = a.list_topics(timeout=10)
    n = len(md.topics[OFFSETS].partitions)
    assert _code(a.create_partitions([NewPartitions(OFFSETS, n + 1)], request_timeout=15)[OFFSETS]) == INVALID_TOPIC_EXCEPTION
    assert _code(a.create_topics([NewTopic(OFFSETS, 1)], request_timeout=15)[OFFSETS]) in (INVALID_REQUEST, 36)
    # DeleteRecords on every partition (once each has a leader): each refused, so no group
    # loses its offsets
    deadline = time.monotonic() + 30
    while any(p.leader < 0 for p in a.list_topics(timeout=10).topics[OFFSETS].partitions.values()):
        assert time.monotonic() < deadline, "offsets partitions without a leader"
        time.sleep(0.2)
    tps = [TopicPartition(OFFSETS, p, -1) for p in range(n)]
    for tp, fut in a.delete_records(tps, request_timeout=15).items():
        assert _code(fut) == INVALID_TOPIC_EXCEPTION, tp
    # configs that decide retention are the broker's; others may be tuned
    res = ConfigResource(ConfigResource.Type.TOPIC, OFFSETS, set_config={"retention.ms": "1"})
    assert _code(a.alter_configs([res], request_timeout=15)[res]) == INVALID_CONFIG
    assert len(a.list_topics(timeout=10).topics[OFFSETS].partitions) == n
    # after a restart of every broker the group's offsets are still there
    restart_all()
    assert _committed(bootstrap) == 42


def test_topic_names_that_differ_only_in_dot_and_underscore_collide(brokers, topic_name):
    bootstrap, _ = brokers
    base = topic_name.replace(".", "-").replace("_", "-")
    create_topic(bootstrap, f"{base}.x", 1)
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(f"{base}_x", 1)], request_timeout=15)[f"{base}_x"]
    assert _code(fut) == INVALID_TOPIC_EXCEPTION
    assert f"{base}_x" not in a.list_topics(timeout=10).topics
