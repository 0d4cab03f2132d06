"""__consumer_offsets belongs to the group coordinator: clients cannot append to it, delete it
or change its partition count (Kafka answers INVALID_TOPIC_EXCEPTION for appends to internal
topics; Sediment refuses the other two the same way because either would lose or misplace
committed offsets)."""

import pytest
from confluent_kafka.admin import NewPartitions
from confluent_kafka import KafkaException, TopicPartition

from sediment_harness import kafka_wire
from sediment_harness.clients import admin, consumer, create_topic

OFFSETS = "__consumer_offsets"
INVALID_TOPIC_EXCEPTION = 17


def _ensure_offsets_topic(bootstrap):
    """The coordinator creates the offsets topic when groups are first used: commit once."""
    create_topic(bootstrap, "internal-topics-probe", partitions=1)
    c = consumer(bootstrap, **{"group.id": "internal-topics-probe", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("internal-topics-probe", 0, 0)], asynchronous=False)
        md = c.list_topics(timeout=10)
        assert OFFSETS in md.topics, "committing an offset should have created the offsets topic"
    finally:
        c.close()


def test_produce_to_offsets_topic_is_refused(broker):
    _ensure_offsets_topic(broker.bootstrap)
    batch = kafka_wire.build_record_batch([kafka_wire.Record(b"k", b"v")])
    with kafka_wire.Connection.to(broker.bootstrap) as conn:
        r = kafka_wire.produce(conn, 9, OFFSETS, 0, batch)
    assert r.error_code == INVALID_TOPIC_EXCEPTION


def test_offsets_topic_cannot_be_deleted_or_grown(broker):
    _ensure_offsets_topic(broker.bootstrap)
    a = admin(broker.bootstrap)
    with pytest.raises(KafkaException) as e:
        a.delete_topics([OFFSETS], request_timeout=15)[OFFSETS].result(30)
    assert e.value.args[0].code() == INVALID_TOPIC_EXCEPTION
    md = a.list_topics(timeout=10)
    n = len(md.topics[OFFSETS].partitions)
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions(OFFSETS, n + 1)], request_timeout=15)[OFFSETS].result(30)
    assert e.value.args[0].code() == INVALID_TOPIC_EXCEPTION
    assert len(a.list_topics(timeout=10).topics[OFFSETS].partitions) == n
