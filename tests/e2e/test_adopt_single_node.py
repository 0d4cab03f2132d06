"""A data dir written by a single-node broker (the single-node path, as the previous release ran
it) opens as a Raft group of one (`single_node_raft`): adopted once at start, logged,
idempotent, with nothing acknowledged lost; and a dir that ran as a Raft group is never opened
by the single-node path.

The dir comes from fixtures/single_node_dir.tar.gz, written by that release's binary
(fixtures/make_single_node_dir.py says how and what it holds)."""

import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import ConfigResource

from sediment_harness import kafka_wire
from sediment_harness.clients import admin, consume_range, producer, watermarks

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "single_node_dir.tar.gz"
RAFT_OF_ONE = {"SEDIMENT_SINGLE_NODE_RAFT": "true"}


def _unpack(tmp_path: Path) -> tuple[Path, dict]:
    work = tmp_path / "old"
    work.mkdir()
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(work, filter="data")
    data = work / "data"
    meta = json.loads((data / "meta" / "metadata.json").read_text())
    return data, meta


def _topics(b) -> dict:
    with urllib.request.urlopen(f"{b.admin_url}/v1/topics", timeout=10) as r:
        return {t["name"]: t for t in json.load(r)["topics"]}


def _init_producer_id(bootstrap) -> int:
    with kafka_wire.Connection.to(bootstrap) as conn:
        r = conn.request(22, 1, kafka_wire.Writer().string(None).int32(60_000).getvalue())
        r.int32()
        assert r.int16() == 0
        return r.int64()


def _check_everything_is_there(b, meta, end: int = 100) -> None:
    """`end`: the high watermark of each `plain` partition (100 old records, then new ones)."""
    # topics keep their ids and configs
    topics = _topics(b)
    for name in ("plain", "tiered", "__consumer_offsets"):
        assert topics[name]["id"] == meta["topics"][name]["id"], f"{name} changed its topic id"
    assert topics["plain"]["configs"] == {"retention.ms": "604800000"}
    a = admin(b.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, "plain")
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "604800000" and not configs["retention.ms"].is_default
    # every acknowledged record, at its offset, from disk and from the bucket
    assert [watermarks(b.bootstrap, "plain", p) for p in range(3)] == [(0, end), (0, end), (10, end)]
    got = consume_range(b.bootstrap, "plain", {0: (0, 100), 1: (0, 100), 2: (10, 100)})
    for p, msgs in got.items():
        first = 10 if p == 2 else 0
        assert [(m.offset(), m.key(), m.value()) for m in msgs] == [
            (i, f"k{p}-{i}".encode(), f"v{p}-{i}".encode()) for i in range(first, 100)], f"plain[{p}]"
    assert watermarks(b.bootstrap, "tiered", 0) == (0, 400)
    tiered = consume_range(b.bootstrap, "tiered", {0: (0, 400)})[0]
    assert [m.value() for m in tiered] == [(f"tiered-{i}-" * 40).encode() for i in range(400)]
    # committed offsets
    req = ConsumerGroupTopicPartitions("g1")
    offsets = a.list_consumer_group_offsets([req])["g1"].result(10)
    assert sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions) == [(0, 40), (1, 50), (2, 60)]


def test_a_single_node_dir_of_the_previous_release_is_adopted_once_and_loses_nothing(broker_factory, tmp_path):
    data, meta = _unpack(tmp_path)
    b = broker_factory(data_dir=data, start=False, env=RAFT_OF_ONE)
    b.start()
    assert b.log_count("single-node data dir adopted") == 1, b.log_tail(40)
    adopted = b.log_count("partition adopted")
    assert adopted >= 4, b.log_tail(40)
    # the cluster is the old broker's
    with kafka_wire.Connection.to(b.bootstrap) as conn:
        assert kafka_wire.metadata(conn, None).cluster_id == meta["cluster_id"]
    _check_everything_is_there(b, meta)
    # new producer ids come after every id the old broker handed out
    assert _init_producer_id(b.bootstrap) >= meta["producer_id_block_end"]
    # writes continue where the old log ended, in the partitions' Raft groups
    p = producer(b.bootstrap)
    for part in range(3):
        p.produce("plain", key=b"new", value=b"after", partition=part)
    assert p.flush(30) == 0
    assert [watermarks(b.bootstrap, "plain", part)[1] for part in range(3)] == [101, 101, 101]

    # a restart does not adopt again (the marker says done) and keeps it all, the new records too
    b.stop()
    marker = json.loads((data / "meta" / "adopted.json").read_text())
    assert marker["done"] and marker["topics"] == 3
    b.restart()
    assert b.log_count("single-node data dir adopted") == 1
    assert b.log_count("partition adopted") == adopted
    _check_everything_is_there(b, meta, end=101)
    got = consume_range(b.bootstrap, "plain", {p: (100, 101) for p in range(3)})
    assert all(msgs[0].value() == b"after" for msgs in got.values())


def test_an_adoption_cut_short_is_finished_by_the_next_start(broker_factory, tmp_path):
    """SIGKILL right after the partition logs got their Raft entries (before the controller
    recorded the topics): the next start finishes it and nothing is lost."""
    data, meta = _unpack(tmp_path)
    b = broker_factory(data_dir=data, start=False, env={**RAFT_OF_ONE, "SEDIMENT_FAILPOINT": "adopt-after-partitions"})
    code, out = b.run_to_exit()
    assert code == 86 and "partition logs adopted" in out, out
    marker = json.loads((data / "meta" / "adopted.json").read_text())
    assert not marker["done"]
    b.env.pop("SEDIMENT_FAILPOINT")
    b.start()
    assert b.log_count("single-node data dir adopted") == 1, b.log_tail(40)
    _check_everything_is_there(b, meta)


def test_a_single_node_dir_refuses_to_join_a_cluster_before_it_is_adopted(broker_factory, tmp_path):
    data, _ = _unpack(tmp_path)
    b = broker_factory(data_dir=data, start=False, extra_args=["--peers", "1=127.0.0.1:1,2=127.0.0.1:2"],
                       env={"SEDIMENT_CLUSTER_SECRET": "a-cluster-secret-of-enough-bytes"})
    code, out = b.run_to_exit()
    assert code == 1, out
    assert "start it once on its own (without --peers) to adopt them" in out


def test_a_dir_that_ran_as_a_raft_group_is_not_opened_by_the_single_node_path(broker_factory, tmp_path):
    """The single-node path would append without Raft entries, and the next Raft start would cut
    what it appended: it refuses such a dir and names the setting."""
    data, _ = _unpack(tmp_path)
    b = broker_factory(data_dir=data, start=False, env=RAFT_OF_ONE)
    b.start()
    b.stop()
    b.env.pop("SEDIMENT_SINGLE_NODE_RAFT")
    code, out = b.run_to_exit()
    assert code == 1 and "single_node_raft = true" in out, out
