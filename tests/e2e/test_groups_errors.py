"""Consumer groups, bad input: requests a real broker refuses get Kafka's error codes
(raw protocol, tests/e2e/groups_wire.py), and the group stays usable by a real client
afterwards."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

import groups_wire as gw
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import BASE_CONF, create_topic, producer


def _produce(bootstrap, topic, n, partitions):
    p = producer(bootstrap)
    for i in range(n):
        p.produce(topic, key=b"%d" % i, value=b"v%d" % i, partition=i % partitions)
    assert p.flush(30) == 0


def test_find_coordinator_names_this_node(broker):
    with kw.Connection.to(broker.bootstrap) as c:
        err, msg, node, host, port = gw.find_coordinator_v3(c, "any-group")
        assert (err, node, host, port) == (0, 1, broker.host, broker.port)
        err, *_ = gw.find_coordinator_v3(c, "txn", key_type=1)
        assert err == 0
        err, msg, node, *_ = gw.find_coordinator_v3(c, "share", key_type=2)
        assert (err, node) == (gw.INVALID_REQUEST, -1)
        got = gw.find_coordinator_v4(c, ["a", "b"])
        assert [(k, e, n, p) for k, e, n, _, p, _ in got] == [("a", 0, 1, broker.port), ("b", 0, 1, broker.port)]


def test_unknown_groups_members_and_generations(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c:
        # nothing exists yet (but the coordinator, found first as a client does)
        assert gw.find_coordinator_v3(c, g)[0] == 0
        assert gw.heartbeat_v3(c, g, 0, "nobody") == gw.UNKNOWN_MEMBER_ID
        assert gw.sync_group_v3(c, g, 0, "nobody")[0] == gw.UNKNOWN_MEMBER_ID
        assert gw.join_group_v5(c, g, "nobody").error == gw.UNKNOWN_MEMBER_ID
        top, _ = gw.leave_group_v3(c, g, [("nobody", None)])
        assert top == gw.UNKNOWN_MEMBER_ID
        # commits naming a generation of a group that does not exist
        res = gw.offset_commit(c, 7, g, {(topic_name, 0): (5, "")}, generation=3, member_id="m")
        assert res == {(topic_name, 0): gw.ILLEGAL_GENERATION}
        res = gw.offset_commit(c, 9, g, {(topic_name, 0): (5, "")}, generation=3, member_id="m")
        assert res == {(topic_name, 0): gw.GROUP_ID_NOT_FOUND}
        assert gw.delete_groups_v2(c, [g]) == {g: gw.GROUP_ID_NOT_FOUND}
        assert gw.offset_delete_v0(c, g, {topic_name: [0]})[0] == gw.GROUP_ID_NOT_FOUND
        d = gw.describe_groups(c, [g], version=5)[g]
        assert (d.error, d.state) == (0, "Dead")
        d = gw.describe_groups(c, [g], version=6)[g]
        assert (d.error, d.state) == (gw.GROUP_ID_NOT_FOUND, "Dead")
        assert gw.offset_fetch_v7(c, g, {topic_name: [0]}) == (0, {(topic_name, 0): (-1, -1, "", 0)})

        # a group member, then every way of getting its identity wrong
        member, gen = gw.join_and_sync(c, g, topic_name, parts=[0, 1])
        assert gen == 1
        assert gw.heartbeat_v3(c, g, gen, member) == 0
        assert gw.heartbeat_v3(c, g, gen + 1, member) == gw.ILLEGAL_GENERATION
        assert gw.heartbeat_v3(c, g, gen, "someone-else") == gw.UNKNOWN_MEMBER_ID
        assert gw.heartbeat_v3(c, g, gen, member, instance_id="not-static") == gw.UNKNOWN_MEMBER_ID
        assert gw.sync_group_v3(c, g, gen + 5, member)[0] == gw.ILLEGAL_GENERATION
        commit = lambda **kw_: gw.offset_commit(c, 7, g, {(topic_name, 0): (1, "")}, **kw_)
        assert commit(generation=gen + 1, member_id=member) == {(topic_name, 0): gw.ILLEGAL_GENERATION}
        assert commit(generation=gen, member_id="intruder") == {(topic_name, 0): gw.UNKNOWN_MEMBER_ID}
        assert commit(generation=-1, member_id="") == {(topic_name, 0): gw.UNKNOWN_MEMBER_ID}, \
            "admin commits need an empty group"
        # unknown topics and partitions are refused per partition; the rest is written
        res = gw.offset_commit(c, 7, g, {(topic_name, 0): (3, "meta"), (topic_name, 9): (1, ""), ("no-such-topic", 0): (1, "")},
                               generation=gen, member_id=member)
        assert res == {(topic_name, 0): 0, (topic_name, 9): gw.UNKNOWN_TOPIC_OR_PARTITION,
                       ("no-such-topic", 0): gw.UNKNOWN_TOPIC_OR_PARTITION}
        # offset.metadata.max.bytes = 4096
        res = gw.offset_commit(c, 7, g, {(topic_name, 0): (4, "x" * 4096), (topic_name, 1): (4, "y" * 4097)},
                               generation=gen, member_id=member)
        assert res == {(topic_name, 0): 0, (topic_name, 1): gw.OFFSET_METADATA_TOO_LARGE}
        err, offs = gw.offset_fetch_v7(c, g, {topic_name: [0, 1]}, require_stable=True)
        assert err == 0
        assert offs[(topic_name, 0)][:3] == (4, -1, "x" * 4096)
        assert offs[(topic_name, 1)][0] == -1
        # an active group cannot be deleted, nor the offsets of a topic it subscribes to
        assert gw.delete_groups_v2(c, [g]) == {g: gw.NON_EMPTY_GROUP}
        err, res = gw.offset_delete_v0(c, g, {topic_name: [0], "no-such-topic": [0]})
        assert err == 0
        assert res == {(topic_name, 0): gw.GROUP_SUBSCRIBED_TO_TOPIC, ("no-such-topic", 0): gw.UNKNOWN_TOPIC_OR_PARTITION}
        d = gw.describe_groups(c, [g])[g]
        assert (d.state, d.protocol_type, d.protocol) == ("Stable", "consumer", "range")
        assert [m["member_id"] for m in d.members] == [member]
        assert d.members[0]["host"] == "/127.0.0.1"
        assert gw.assignment({topic_name: [0, 1]}) == d.members[0]["assignment"]

        # the member leaves: the group is empty, its offsets stay
        top, members = gw.leave_group_v3(c, g, [(member, None), ("ghost", None)])
        assert top == 0 and [e for _, _, e in members] == [0, gw.UNKNOWN_MEMBER_ID]
        assert gw.heartbeat_v3(c, g, gen, member) == gw.UNKNOWN_MEMBER_ID
        d = gw.describe_groups(c, [g])[g]
        assert (d.state, d.members) == ("Empty", [])
        assert gw.offset_fetch_v7(c, g, {topic_name: [0]})[1][(topic_name, 0)][0] == 4
        # now admin tools may commit and delete offsets, and delete the group
        assert gw.offset_commit(c, 7, g, {(topic_name, 1): (7, "")}) == {(topic_name, 1): 0}
        err, res = gw.offset_delete_v0(c, g, {topic_name: [1]})
        assert (err, res) == (0, {(topic_name, 1): 0})
        assert gw.offset_fetch_v7(c, g, {topic_name: [0, 1]})[1][(topic_name, 1)][0] == -1
        assert gw.delete_groups_v2(c, [g]) == {g: 0}
        assert gw.offset_fetch_v7(c, g, None) == (0, {})
        assert gw.describe_groups(c, [g], version=6)[g].error == gw.GROUP_ID_NOT_FOUND


def test_join_validation(broker, topic_name):
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c:
        assert gw.join_group_v5(c, "").error == gw.INVALID_GROUP_ID
        assert gw.heartbeat_v3(c, "", 0, "m") == gw.INVALID_GROUP_ID
        assert gw.join_group_v5(c, g, session_timeout_ms=1000).error == gw.INVALID_SESSION_TIMEOUT
        assert gw.join_group_v5(c, g, session_timeout_ms=3_600_000).error == gw.INVALID_SESSION_TIMEOUT
        assert gw.join_group_v5(c, g, protocols=()).error == gw.INCONSISTENT_GROUP_PROTOCOL
        assert gw.join_group_v5(c, g, protocol_type="").error == gw.INCONSISTENT_GROUP_PROTOCOL
        j = gw.join_group_v5(c, g)
        assert j.error == gw.MEMBER_ID_REQUIRED and j.member_id
        j = gw.join_group_v5(c, g, j.member_id)
        assert (j.error, j.generation, j.leader) == (0, 1, j.member_id)
        other = gw.join_group_v5(c, g, protocol_type="connect")
        assert other.error == gw.INCONSISTENT_GROUP_PROTOCOL
        other = gw.join_group_v5(c, g, protocols=(("sticky", b""),))
        assert other.error == gw.INCONSISTENT_GROUP_PROTOCOL
        # SyncGroup while CompletingRebalance with the wrong protocol name is refused
        d = gw.describe_groups(c, [g])[g]
        assert d.state == "CompletingRebalance"


def test_static_member_fencing(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c, kw.Connection.to(broker.bootstrap) as c2:
        old, gen = gw.join_and_sync(c, g, topic_name, instance_id="instance-1")
        assert old.startswith("instance-1-")
        # the same instance comes back (a restarted process): no rebalance, new member id
        j = gw.join_group_v5(c2, g, instance_id="instance-1", protocols=(("range", gw.subscription([topic_name])),))
        assert (j.error, j.generation) == (0, gen)
        assert j.member_id != old
        assert gw.sync_group_v3(c2, g, gen, j.member_id, instance_id="instance-1") == (0, gw.assignment({topic_name: [0]}))
        # the old incarnation is fenced everywhere
        assert gw.heartbeat_v3(c, g, gen, old, instance_id="instance-1") == gw.FENCED_INSTANCE_ID
        res = gw.offset_commit(c, 7, g, {(topic_name, 0): (1, "")}, generation=gen, member_id=old, instance_id="instance-1")
        assert res == {(topic_name, 0): gw.FENCED_INSTANCE_ID}
        assert gw.sync_group_v3(c, g, gen, old, instance_id="instance-1")[0] == gw.FENCED_INSTANCE_ID
        assert gw.join_group_v5(c, g, old, instance_id="instance-1").error == gw.FENCED_INSTANCE_ID
        _, res = gw.leave_group_v3(c, g, [(old, "instance-1")])
        assert res[0][2] == gw.FENCED_INSTANCE_ID
        # the new one works
        assert gw.heartbeat_v3(c2, g, gen, j.member_id, instance_id="instance-1") == 0
        res = gw.offset_commit(c2, 7, g, {(topic_name, 0): (2, "")}, generation=gen, member_id=j.member_id, instance_id="instance-1")
        assert res == {(topic_name, 0): 0}
        d = gw.describe_groups(c, [g])[g]
        assert d.state == "Stable" and [m["instance_id"] for m in d.members] == ["instance-1"]
        # an admin removes the static member by its instance id
        top, res = gw.leave_group_v3(c, g, [("", "instance-1")])
        assert (top, res[0][2]) == (0, 0)
        assert gw.describe_groups(c, [g])[g].state == "Empty"


def test_group_stays_usable_after_bad_requests(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 3)
    _produce(broker.bootstrap, topic_name, 30, 3)
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c:
        member, gen = gw.join_and_sync(c, g, topic_name, parts=[0, 1, 2])
        gw.offset_commit(c, 7, g, {(topic_name, p): (5, "") for p in range(3)}, generation=gen, member_id=member)
        for bad in (gen + 1, gen - 1, 99):
            assert gw.heartbeat_v3(c, g, bad, member) == gw.ILLEGAL_GENERATION
            assert gw.offset_commit(c, 7, g, {(topic_name, 0): (29, "")}, generation=bad, member_id=member) \
                == {(topic_name, 0): gw.ILLEGAL_GENERATION}
        assert gw.offset_fetch_v7(c, g, {topic_name: [0]})[1][(topic_name, 0)][0] == 5, "refused commits changed nothing"
        # the raw member goes away; a real consumer joins and resumes from the committed offsets
        gw.leave_group_v3(c, g, [(member, None)])
    consumer = Consumer({**BASE_CONF, "bootstrap.servers": broker.bootstrap, "group.id": g,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic_name])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 15 and time.monotonic() < deadline:
            for m in consumer.consume(50, 0.5):
                assert not m.error(), m.error()
                got.append((m.partition(), m.offset()))
        assert sorted(got) == sorted((p, o) for p in range(3) for o in range(5, 10)), got
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic_name, p) for p in range(3)], timeout=10)
        assert [tp.offset for tp in committed] == [10, 10, 10]
    finally:
        consumer.close()
    with kw.Connection.to(broker.bootstrap) as c:
        d = gw.describe_groups(c, [g])[g]
        assert d.state == "Empty" and d.protocol_type == "consumer"
        err, listed = gw.list_groups_v4(c, ["empty"])
        assert err == 0 and listed[g] == ("consumer", "Empty")
        assert g not in gw.list_groups_v4(c, ["Stable"])[1]
        epochs = {p.partition: p.leader_epoch for p in kw.metadata(c, [topic_name]).topics[topic_name].partitions}
        assert gw.offset_fetch_v8(c, {g: None, "nope": {topic_name: [0]}}) == {
            # librdkafka commits the leader epoch of the records it read
            g: (0, {(topic_name, p): (10, epochs[p], "", 0) for p in range(3)}),
            "nope": (0, {(topic_name, 0): (-1, -1, "", 0)}),
        }


def test_commit_too_large_for_the_offsets_log(broker_factory, topic_name, tmp_path):
    """Each partition's metadata is within offset.metadata.max.bytes, but together the commit is
    larger than a batch of __consumer_offsets may be (its max.message.bytes, here from the broker's
    topic defaults): INVALID_COMMIT_OFFSET_SIZE for every partition, and nothing is written."""
    cfg = tmp_path / "sediment.toml"
    cfg.write_text('[topic_defaults]\n"max.message.bytes" = "65536"\n')
    b = broker_factory(extra_args=["--config", str(cfg)])
    create_topic(b.bootstrap, topic_name, 20)
    g = f"{topic_name}-g"
    with kw.Connection.to(b.bootstrap) as c:
        big = {(topic_name, p): (1, "m" * 4000) for p in range(20)}
        assert set(gw.offset_commit(c, 7, g, big).values()) == {28}  # INVALID_COMMIT_OFFSET_SIZE
        assert gw.offset_fetch_v7(c, g, {topic_name: [0]})[1][(topic_name, 0)][0] == -1
        small = {(topic_name, p): (1, "m" * 4000) for p in range(5)}
        assert set(gw.offset_commit(c, 7, g, small).values()) == {0}
