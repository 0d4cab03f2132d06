"""Consumer group administration with real admin clients (confluent-kafka AdminClient,
kafka-python KafkaAdminClient) and `sediment group list|describe`: listing with state filters,
describing members and assignments, altering, listing and deleting committed offsets, deleting
groups; `__consumer_offsets` is an internal topic."""

from __future__ import annotations

import subprocess
import time

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

import groups_wire as gw
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import BASE_CONF, create_topic, producer


def _admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, **BASE_CONF})


def _produce(bootstrap, topic, n, partitions):
    p = producer(bootstrap)
    for i in range(n):
        p.produce(topic, value=b"%d" % i, partition=i % partitions)
    assert p.flush(30) == 0


def test_admin_clients_manage_groups_and_offsets(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 3)
    other = f"{topic_name}-other"
    create_topic(broker.bootstrap, other, 1)
    _produce(broker.bootstrap, topic_name, 30, 3)
    a = _admin(broker.bootstrap)
    g, simple = f"{topic_name}-g", f"{topic_name}-simple"

    # admin commits (AlterConsumerGroupOffsets = OffsetCommit with generation -1) create a group
    res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(simple, [
        TopicPartition(topic_name, 0, 7), TopicPartition(topic_name, 1, 8), TopicPartition(other, 0, 1)])])
    res[simple].result(30)
    got = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(simple)])[simple].result(30)
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in got.topic_partitions) == \
        sorted([(topic_name, 0, 7), (topic_name, 1, 8), (other, 0, 1)])

    # an active group: one member with two assigned partitions
    with kw.Connection.to(broker.bootstrap) as c:
        member, gen = gw.join_and_sync(c, g, topic_name, parts=[0, 2])
        assert gw.offset_commit(c, 7, g, {(topic_name, 0): (3, "m"), (other, 0): (1, "")}, generation=gen,
                                member_id=member) == {(topic_name, 0): 0, (other, 0): 0}

        listed = a.list_consumer_groups(request_timeout=30).result(30)
        states = {x.group_id: x.state for x in listed.valid}
        assert states[g] == ConsumerGroupState.STABLE
        assert states[simple] == ConsumerGroupState.EMPTY
        only_empty = a.list_consumer_groups(states={ConsumerGroupState.EMPTY}, request_timeout=30).result(30)
        assert {x.group_id for x in only_empty.valid} >= {simple} and g not in {x.group_id for x in only_empty.valid}

        d = a.describe_consumer_groups([g, simple])
        dg = d[g].result(30)
        assert dg.state == ConsumerGroupState.STABLE and dg.partition_assignor == "range"
        assert [m.member_id for m in dg.members] == [member]
        assert sorted((tp.topic, tp.partition) for tp in dg.members[0].assignment.topic_partitions) == \
            [(topic_name, 0), (topic_name, 2)]
        assert d[simple].result(30).state == ConsumerGroupState.EMPTY

        # a group with members can be deleted neither whole nor for a subscribed topic
        with pytest.raises(Exception) as e:
            a.delete_consumer_groups([g])[g].result(30)
        assert "NON_EMPTY_GROUP" in str(e.value) or "not empty" in str(e.value).lower()
        # offsets of a topic the group does not subscribe to can go (OffsetDelete)
        err, res = gw.offset_delete_v0(c, g, {other: [0], topic_name: [0]})
        assert (err, res) == (0, {(other, 0): 0, (topic_name, 0): gw.GROUP_SUBSCRIBED_TO_TOPIC})
        gw.leave_group_v3(c, g, [(member, None)])

    # empty now: delete both groups; their offsets are gone
    for grp, f in a.delete_consumer_groups([g, simple]).items():
        f.result(30)
    listed = a.list_consumer_groups(request_timeout=30).result(30)
    assert not {g, simple} & {x.group_id for x in listed.valid}
    with kw.Connection.to(broker.bootstrap) as c:
        assert gw.offset_fetch_v7(c, simple, None) == (0, {})


def test_kafka_python_admin_manages_groups(broker, topic_name):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka.admin import MemberToRemove
    create_topic(broker.bootstrap, topic_name, 2)
    other = f"{topic_name}-other"
    create_topic(broker.bootstrap, other, 1)
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c:
        member, gen = gw.join_and_sync(c, g, topic_name, instance_id="instance-1", parts=[0, 1])
        assert gw.offset_commit(c, 7, g, {(topic_name, 1): (4, ""), (other, 0): (2, "")}, generation=gen,
                                member_id=member, instance_id="instance-1") == {(topic_name, 1): 0, (other, 0): 0}
        ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            listed = ka.list_groups(states_filter=["Stable"])
            assert {"group_id": g, "protocol_type": "consumer", "group_state": "Stable", "group_type": "classic"} in listed
            assert not ka.list_groups(states_filter=["Empty"])
            d = ka.describe_groups([g])[g]
            assert (d["group_state"], d["protocol_data"], d["error"]) == ("Stable", "range", None)
            (m,) = d["members"]
            assert (m["member_id"], m["group_instance_id"], m["client_host"]) == (member, "instance-1", "/127.0.0.1")
            assert m["member_metadata"]["topics"] == [topic_name]
            assert m["member_assignment"]["assigned_partitions"] == [{"topic": topic_name, "partitions": [0, 1]}]
            offs = ka.list_group_offsets({g: None})[g]
            assert {(tp.topic, tp.partition): o.offset for tp, o in offs.items()} == {(topic_name, 1): 4, (other, 0): 2}
            res = ka.delete_group_offsets(g, [KTP(topic_name, 1), KTP(other, 0)])
            assert {tp.topic: e.__name__ for tp, e in res.items()} == {topic_name: "GroupSubscribedToTopicError", other: "NoError"}
            # an admin removes the static member by its group instance id (LeaveGroup v3+)
            res = ka.remove_group_members(g, [MemberToRemove(group_instance_id="instance-1")])
            assert [e.__name__ for e in res.values()] == ["NoError"]
            assert ka.describe_groups([g])[g]["group_state"] == "Empty"
            assert gw.heartbeat_v3(c, g, gen, member, instance_id="instance-1") == gw.UNKNOWN_MEMBER_ID
            assert ka.delete_groups([g, "no-such-group"]) == {g: "OK", "no-such-group": "GroupIdNotFoundError"}
        finally:
            ka.close()


def test_consumer_offsets_is_an_internal_topic(broker, topic_name):
    with kw.Connection.to(broker.bootstrap) as c:
        assert gw.offset_commit(c, 7, "g", {}) == {}  # no topics: nothing happens, nothing created
        assert "__consumer_offsets" not in kw.metadata(c, None).topics
        create_topic(broker.bootstrap, topic_name, 1)
        gw.offset_commit(c, 7, "g", {(topic_name, 0): (1, "")})
        md = kw.metadata(c, None)
        t = md.topics["__consumer_offsets"]
        assert t.is_internal and len(t.partitions) == 8
        assert not md.topics[topic_name].is_internal


def _sediment(bin_, *args, timeout=60):
    return subprocess.run([str(bin_), *args], capture_output=True, text=True, timeout=timeout)


def test_sediment_group_cli_shows_members_assignments_and_lag(broker, topic_name, sediment_bin):
    create_topic(broker.bootstrap, topic_name, 3)
    _produce(broker.bootstrap, topic_name, 30, 3)  # 10 per partition
    g = f"{topic_name}-g"
    with kw.Connection.to(broker.bootstrap) as c:
        member, gen = gw.join_and_sync(c, g, topic_name, parts=[0, 1, 2])
        gw.offset_commit(c, 7, g, {(topic_name, 0): (10, ""), (topic_name, 1): (4, "")}, generation=gen, member_id=member)
        r = _sediment(sediment_bin, "group", "list", "--bootstrap", broker.bootstrap)
        assert r.returncode == 0, r.stderr
        row = next(l for l in r.stdout.splitlines() if l.startswith(g))
        assert row.split() == [g, "Stable", "consumer"]
        r = _sediment(sediment_bin, "group", "describe", g, "--bootstrap", broker.bootstrap)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert f"group {g}  state Stable  protocol consumer/range" in out, out
        assert f"{topic_name}:0,1,2" in out, out
        rows = {tuple(l.split()[:2]): l.split() for l in out.splitlines() if l.startswith(topic_name + " ")}
        assert rows[(topic_name, "0")][2:] == ["10", "10", "0", member]
        assert rows[(topic_name, "1")][2:] == ["4", "10", "6", member]
        assert rows[(topic_name, "2")][2:] == ["-", "10", "-", member]
    r = _sediment(sediment_bin, "group", "describe", "no-such-group", "--bootstrap", broker.bootstrap)
    assert r.returncode == 1 and "does not exist" in r.stderr, (r.returncode, r.stdout, r.stderr)


@pytest.mark.timeout(120)
def test_offsets_log_is_compacted_by_snapshots(broker_factory, topic_name):
    """With a low snapshot threshold the offsets log is rewritten as a snapshot and the history
    before it dropped; a restart loads only the snapshot and what came after it."""
    b = broker_factory(env={"SEDIMENT_OFFSETS_SNAPSHOT_MIN_RECORDS": "200", "SEDIMENT_OFFSETS_TOPIC_NUM_PARTITIONS": "1"})
    create_topic(b.bootstrap, topic_name, 2)
    with kw.Connection.to(b.bootstrap) as c:
        for i in range(1, 1001):
            res = gw.offset_commit(c, 7, "compacted", {(topic_name, 0): (i, ""), (topic_name, 1): (2 * i, "")})
            assert set(res.values()) == {0}
        deadline = time.monotonic() + 30
        while "offsets log compacted" not in b.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "offsets log compacted" in b.log_text()
    b.stop()
    b.start()

    def loaded_lines():
        # the single-node path loads every shard at once, the Raft path each partition it leads
        # (once it leads it, which may come just after /ready)
        return [l for l in b.log_tail(10_000, since_last_start=True).splitlines()
                if "group coordinator loaded" in l or ("coordinating the groups of an offsets partition" in l and "no longer" not in l)]

    deadline = time.monotonic() + 30
    while not loaded_lines() and time.monotonic() < deadline:
        time.sleep(0.1)
    loaded = loaded_lines()[-1]
    records = int(loaded.split("records=")[1].split()[0])
    assert records < 500, f"a restart replayed {records} records of 2000 written: {loaded}"
    with kw.Connection.to(b.bootstrap) as c:
        _, offs = gw.offset_fetch_v7(c, "compacted", {topic_name: [0, 1]})
        assert (offs[(topic_name, 0)][0], offs[(topic_name, 1)][0]) == (1000, 2000)
