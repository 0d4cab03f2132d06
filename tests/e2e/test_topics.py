"""Topic administration: CreateTopics, Metadata, DeleteTopics, CreatePartitions,
auto-creation, and durability of topic metadata across restarts."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewPartitions, NewTopic

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import (
    admin, consume_range, create_topic, producer, watermarks,
)


def _topics(a):
    return a.list_topics(timeout=15).topics


def _error_code(fut, timeout=30):
    try:
        fut.result(timeout)
    except KafkaException as e:
        return e.args[0].code()
    return KafkaError.NO_ERROR


def _produce_n(bootstrap, topic, n, partition=0, prefix="v"):
    p = producer(bootstrap)
    acked = []
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"{prefix}{i}".encode(), partition=partition,
                  on_delivery=lambda err, msg: acked.append((err, msg.offset())))
    assert p.flush(30) == 0
    assert all(e is None for e, _ in acked), acked
    return [o for _, o in acked]


def test_create_list_describe_delete(broker, topic_name):
    a = admin(broker.bootstrap)
    names = {f"{topic_name}-a": 1, f"{topic_name}-b": 3, f"{topic_name}-c": 8}
    futs = a.create_topics(
        [NewTopic(n, num_partitions=p, replication_factor=1) for n, p in names.items()],
        operation_timeout=30,
    )
    for n, f in futs.items():
        assert f.result(30) is None, n

    topics = _topics(a)
    for n, p in names.items():
        assert n in topics, f"{n} missing from list_topics"
        t = topics[n]
        assert t.error is None
        assert sorted(t.partitions) == list(range(p))
        for pm in t.partitions.values():
            assert pm.leader == 1
            assert pm.replicas == [1]
            assert pm.isrs == [1]
            assert pm.error is None

    # describe_topics
    from confluent_kafka import TopicCollection
    desc = a.describe_topics(TopicCollection(list(names)), request_timeout=15)
    for n, f in desc.items():
        d = f.result(30)
        assert d.name == n
        assert len(d.partitions) == names[n]
        assert all(pi.leader.id == 1 for pi in d.partitions)

    # delete one; the others stay
    gone = f"{topic_name}-b"
    a.delete_topics([gone], operation_timeout=30)[gone].result(30)
    deadline = time.monotonic() + 10
    while gone in _topics(a) and time.monotonic() < deadline:
        time.sleep(0.2)
    topics = _topics(a)
    assert gone not in topics
    assert f"{topic_name}-a" in topics and f"{topic_name}-c" in topics

    # deleting an unknown topic is UNKNOWN_TOPIC_OR_PARTITION
    code = _error_code(a.delete_topics([f"{topic_name}-nope"], operation_timeout=30)[f"{topic_name}-nope"])
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_recreated_topic_starts_empty(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    _produce_n(broker.bootstrap, topic_name, 50)
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 50)
    a = admin(broker.bootstrap)
    a.delete_topics([topic_name], operation_timeout=30)[topic_name].result(30)
    deadline = time.monotonic() + 15
    while True:
        code = _error_code(a.create_topics([NewTopic(topic_name, 2, 1)], operation_timeout=30)[topic_name])
        if code == KafkaError.NO_ERROR:
            break
        assert code == KafkaError.TOPIC_ALREADY_EXISTS, code  # deletion may still be in progress
        assert time.monotonic() < deadline, "topic never went away after DeleteTopics"
        time.sleep(0.2)
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 0)
    assert watermarks(broker.bootstrap, topic_name, 1) == (0, 0)
    offsets = _produce_n(broker.bootstrap, topic_name, 3, prefix="new")
    assert offsets == [0, 1, 2]
    msgs = consume_range(broker.bootstrap, topic_name, {0: (0, 3)})[0]
    assert [m.value() for m in msgs] == [b"new0", b"new1", b"new2"]


@pytest.mark.parametrize(
    "topic,partitions,rf,config,expected",
    [
        ("bad/name", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        ("bad name", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        (".", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        ("..", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        ("x" * 250, 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        ("ok-zero-partitions", 0, 1, {}, KafkaError.INVALID_PARTITIONS),
        ("ok-rf-3", 1, 3, {}, KafkaError.INVALID_REPLICATION_FACTOR),
        ("ok-unknown-config", 1, 1, {"no.such.config": "1"}, KafkaError.INVALID_CONFIG),
        ("ok-bad-config-value", 1, 1, {"retention.ms": "not-a-number"}, KafkaError.INVALID_CONFIG),
        ("ok-bad-cleanup-policy", 1, 1, {"cleanup.policy": "shred"}, KafkaError.INVALID_CONFIG),
    ],
    ids=["slash", "space", "dot", "dotdot", "too-long", "zero-partitions",
         "rf-3", "unknown-config", "bad-config-value", "bad-cleanup-policy"],
)
def test_create_topic_validation(broker, topic, partitions, rf, config, expected):
    a = admin(broker.bootstrap)
    nt = NewTopic(topic, num_partitions=partitions, replication_factor=rf, config=config)
    code = _error_code(a.create_topics([nt], operation_timeout=30)[topic])
    assert code == expected, f"{topic!r}: got {KafkaError(code).name()}, expected {KafkaError(expected).name()}"
    assert topic not in _topics(a)


def test_create_existing_topic_and_validate_only(broker, topic_name):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name, 2, client=a)
    code = _error_code(a.create_topics([NewTopic(topic_name, 4, 1)], operation_timeout=30)[topic_name])
    assert code == KafkaError.TOPIC_ALREADY_EXISTS
    assert len(_topics(a)[topic_name].partitions) == 2

    dry = f"{topic_name}-dry"
    fut = a.create_topics([NewTopic(dry, 3, 1)], validate_only=True, operation_timeout=30)[dry]
    assert fut.result(30) is None
    assert dry not in _topics(a)
    # validate_only still validates
    code = _error_code(a.create_topics([NewTopic(dry, 0, 1)], validate_only=True, operation_timeout=30)[dry])
    assert code == KafkaError.INVALID_PARTITIONS


def test_default_partition_count(broker, topic_name):
    """CreateTopics v4+ with num_partitions -1 uses the broker default (num.partitions=1)."""
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic(topic_name)], operation_timeout=30)[topic_name].result(30)
    assert sorted(_topics(a)[topic_name].partitions) == [0]


def test_create_partitions(broker, topic_name):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name, 2, client=a)
    _produce_n(broker.bootstrap, topic_name, 10, partition=1)

    # validate_only changes nothing
    a.create_partitions([NewPartitions(topic_name, 6)], validate_only=True, operation_timeout=30)[topic_name].result(30)
    assert len(_topics(a)[topic_name].partitions) == 2

    a.create_partitions([NewPartitions(topic_name, 5)], operation_timeout=30)[topic_name].result(30)
    deadline = time.monotonic() + 10
    while len(_topics(a)[topic_name].partitions) != 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    parts = _topics(a)[topic_name].partitions
    assert sorted(parts) == [0, 1, 2, 3, 4]
    assert all(p.leader == 1 for p in parts.values())

    # the new partitions take writes; the old data is untouched
    assert _produce_n(broker.bootstrap, topic_name, 3, partition=4) == [0, 1, 2]
    assert watermarks(broker.bootstrap, topic_name, 1) == (0, 10)
    assert watermarks(broker.bootstrap, topic_name, 4) == (0, 3)

    # shrinking or keeping the count is INVALID_PARTITIONS
    for n in (3, 5):
        code = _error_code(a.create_partitions([NewPartitions(topic_name, n)], operation_timeout=30)[topic_name])
        assert code == KafkaError.INVALID_PARTITIONS, n
    code = _error_code(a.create_partitions([NewPartitions(f"{topic_name}-nope", 3)], operation_timeout=30)[f"{topic_name}-nope"])
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_metadata_auto_creates_topics(broker, topic_name):
    """Metadata with allow_auto_topic_creation creates the topic with
    num.partitions (1); without it the topic stays unknown."""
    with kw.Connection.to(broker.bootstrap) as c:
        no = f"{topic_name}-no"
        md = kw.metadata(c, [no], allow_auto_topic_creation=False)
        assert md.topics[no].error_code == kw.UNKNOWN_TOPIC_OR_PARTITION
        md = kw.metadata(c, None)
        assert no not in md.topics

        yes = f"{topic_name}-yes"
        md = kw.metadata(c, [yes], allow_auto_topic_creation=True)
        # Kafka answers LEADER_NOT_AVAILABLE while the new topic settles
        assert md.topics[yes].error_code in (kw.NONE, kw.LEADER_NOT_AVAILABLE)
        deadline = time.monotonic() + 10
        while True:
            t = kw.metadata(c, [yes], allow_auto_topic_creation=False).topics[yes]
            if t.error_code == kw.NONE and t.partitions and all(p.leader == 1 for p in t.partitions):
                break
            assert time.monotonic() < deadline, f"auto-created topic never became ready: {t}"
            time.sleep(0.1)
        assert [p.partition for p in t.partitions] == [0]
        assert t.partitions[0].replicas == [1] and t.partitions[0].isr == [1]
        assert yes in kw.metadata(c, None).topics


def test_producer_auto_creates_topic(broker, topic_name):
    """A plain client producing to a new topic just works (librdkafka asks
    Metadata with auto-creation on)."""
    p = producer(broker.bootstrap)
    res = []
    p.produce(topic_name, key=b"k", value=b"v", on_delivery=lambda e, m: res.append((e, m.partition(), m.offset())))
    assert p.flush(30) == 0
    assert res == [(None, 0, 0)]
    assert sorted(_topics(admin(broker.bootstrap))[topic_name].partitions) == [0]


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_topics_and_data_survive_restart(broker, topic_name, how):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name, 3, config={"retention.ms": "86400000"}, client=a)
    a.create_partitions([NewPartitions(topic_name, 4)], operation_timeout=30)[topic_name].result(30)
    _produce_n(broker.bootstrap, topic_name, 25, partition=3)
    tp = TopicPartition(topic_name, 3, 5)
    a.delete_records([tp], operation_timeout=30)[tp].result(30)
    deleted = f"{topic_name}-deleted"
    create_topic(broker.bootstrap, deleted, 1, client=a)
    a.delete_topics([deleted], operation_timeout=30)[deleted].result(30)

    if how == "sigterm":
        broker.stop()
    else:
        broker.kill()
    broker.restart()

    a = admin(broker.bootstrap)
    topics = _topics(a)
    assert sorted(topics[topic_name].partitions) == [0, 1, 2, 3]
    assert deleted not in topics
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res], request_timeout=15)[res].result(30)
    assert cfg["retention.ms"].value == "86400000"
    # the log start offset moved by DeleteRecords is durable too
    assert watermarks(broker.bootstrap, topic_name, 3) == (5, 25)
    msgs = consume_range(broker.bootstrap, topic_name, {3: (5, 25)})[3]
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(5, 25)]


def _create_topics_v5(conn, name: str, partitions: int, rf: int, validate_only: bool = False):
    """CreateTopics v5 (flexible) on the wire; returns (error, num_partitions, replication_factor)
    of the one topic. v5 is the first version whose answer carries the created layout."""
    from sediment_harness import kafka_wire as kw
    w = kw.Writer()
    w.compact_array_len(1).compact_string(name).int32(partitions).int16(rf)
    w.compact_array_len(0).compact_array_len(0).tagged_fields()
    w.int32(30000).boolean(validate_only).tagged_fields()
    r = conn.request(kw.CREATE_TOPICS, 5, w.getvalue(), flexible_request=True, timeout=30)
    r.int32()  # throttle
    assert r.compact_array_len() == 1
    r.compact_string()
    err = r.int16()
    r.compact_string()  # message
    return err, r.int32(), r.int16()


def test_create_topics_answers_the_real_replication_factor(cluster_factory, topic_name):
    from sediment_harness import kafka_wire as kw
    c = cluster_factory(3)
    with kw.Connection.to(c.nodes[0].bootstrap, timeout=30) as conn:
        assert _create_topics_v5(conn, topic_name, 2, -1) == (0, 2, 3)
        assert _create_topics_v5(conn, topic_name + "-rf2", 1, 2) == (0, 1, 2)
        assert _create_topics_v5(conn, topic_name + "-check", 4, -1, validate_only=True) == (0, 4, 3)
