"""The Raft port trusts only its peers.

Brokers prove they hold the cluster secret (an HMAC challenge-response) before
the Raft port reads a frame of theirs. A stranger who sends the 30-odd bytes
that a metadata write takes (here: delete a topic, which once deleted it and
its acked records on every broker) is dropped after its first bytes, changes
nothing, and the cluster keeps serving. A broker started with the wrong secret
cannot join its peers.
"""

import json
import shutil
import socket
import struct
import time
import urllib.request

import pytest

from sediment_harness.clients import consume_range, create_topic, producer, watermarks


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _delete_topic_frame(topic: str, corr: int = 1) -> bytes:
    """A metadata-group client request, as brokers forward writes to the controller's leader:
    group 0, kind 4 (client), ForwardRequest::Write(MetaCommand::DeleteTopic { name })."""
    name = topic.encode()
    payload = _varint(0) + _varint(4) + _varint(len(name)) + name
    body = struct.pack(">QQB", corr, 0, 4) + payload
    return struct.pack(">I", len(body)) + body


def _raft_addr(node):
    return ("127.0.0.1", node.ports["raft"])


def _hundred_records(bootstrap, topic):
    """A replication-factor-3 topic holding the values b"0".."99", all acknowledged."""
    create_topic(bootstrap, topic, 1, replication_factor=3)
    p = producer(bootstrap)
    for i in range(100):
        p.produce(topic, value=b"%d" % i)
    assert p.flush(30) == 0


def test_a_stranger_on_the_raft_port_changes_nothing(cluster_factory, topic_name):
    c = cluster_factory(3)
    _hundred_records(c.bootstrap, topic_name)

    for node in c.nodes:
        s = socket.create_connection(_raft_addr(node), timeout=5)
        try:
            s.sendall(_delete_topic_frame(topic_name))
            s.settimeout(10)
            # the broker reads the bytes as a hello, finds no magic, and hangs up without a word
            got = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except ConnectionResetError:
                pass
            assert got == b"", f"node {node.node_id} answered a stranger: {got[:64]!r}"
        finally:
            s.close()
    time.sleep(1.0)
    assert watermarks(c.bootstrap, topic_name, 0, timeout=30) == (0, 100)
    got = consume_range(c.bootstrap, topic_name, {0: (0, 100)}, timeout=60)[0]
    assert [int(m.value()) for m in got] == list(range(100))
    for node in c.nodes:
        assert node.running()
        assert "did not prove cluster membership" in node.log_text(), f"node {node.node_id} did not log the refusal"


def test_a_broker_with_the_wrong_secret_cannot_join(cluster_factory, topic_name):
    c = cluster_factory(3, start=False)
    c.nodes[2].env["SEDIMENT_CLUSTER_SECRET"] = "a-different-secret-entirely"
    for n in c.nodes[:2]:
        n._spawn()
    for n in c.nodes[:2]:
        n._wait_ready(60)
    c.nodes[2]._spawn()
    # two brokers with the right secret form the cluster (2 of its 3 voters) and serve; the
    # third is refused on every connection and never registers
    deadline = time.monotonic() + 60
    while True:
        try:
            brokers = {n.node_id: sorted(b[0] for b in c.metadata(via=n).brokers) for n in c.nodes[:2]}
            if all(v == [1, 2] for v in brokers.values()):
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the two brokers with the secret did not form the cluster"
        time.sleep(0.2)
    two = ",".join(n.bootstrap for n in c.nodes[:2])
    create_topic(two, topic_name, 1, replication_factor=2)
    p = producer(two)
    for i in range(10):
        p.produce(topic_name, value=b"%d" % i)
    assert p.flush(30) == 0
    time.sleep(2)
    for n in c.nodes[:2]:
        assert sorted(b[0] for b in c.metadata(via=n).brokers) == [1, 2]
    assert c.nodes[2].running()
    logs = c.nodes[0].log_text() + c.nodes[1].log_text()
    assert "did not prove cluster membership" in logs


def test_two_clusters_sharing_a_secret_refuse_each_other(cluster_factory, topic_name):
    """The harness gives every cluster the same secret, as a copied config would. Broker 1 of
    cluster A restarts on the Raft address broker 1 of cluster B had (an address reused after B1
    went away): B's leader keeps sending to that address, and A1 refuses every connection because
    the two know different cluster ids. A's data and membership stay as they were."""
    a = cluster_factory(3)
    b = cluster_factory(3)
    _hundred_records(a.bootstrap, topic_name)
    a_id, b_id = a.metadata().cluster_id, b.metadata().cluster_id
    assert a_id and b_id and a_id != b_id

    b1, a1 = b.node(1), a.node(1)
    b1.stop()
    a1.stop()
    a1.ports["raft"] = b1.ports["raft"]
    a1.start()
    deadline = time.monotonic() + 30
    while "belongs to another cluster" not in a1.log_tail(2000, since_last_start=True):
        assert time.monotonic() < deadline, "B's brokers were not refused at B1's old address"
        time.sleep(0.2)
    # the dialling side learns why
    b_logs = b.node(2).log_text() + b.node(3).log_text()
    deadline = time.monotonic() + 15
    while "cluster id mismatch" not in b_logs:
        assert time.monotonic() < deadline, "B's brokers did not log the mismatch"
        time.sleep(0.2)
        b_logs = b.node(2).log_text() + b.node(3).log_text()

    # A is untouched: its id, its three brokers, every record; B serves on its two others
    assert a.metadata(via=a.node(2)).cluster_id == a_id
    assert sorted(x[0] for x in a.metadata(via=a.node(2)).brokers) == [1, 2, 3]
    got = consume_range(a.node(2).bootstrap, topic_name, {0: (0, 100)})
    assert [m.value() for m in got[0]] == [b"%d" % i for i in range(100)]
    assert b.metadata(via=b.node(2)).cluster_id == b_id
    create_topic(b.node(2).bootstrap, topic_name + "-b", 1, replication_factor=2)


def test_a_cluster_whose_port_was_taken_starts_on_fresh_ports(cluster_factory):
    """The harness: a port picked for a node and taken by someone else before the node binds it
    (another test's broker, under pytest-xdist) fails that node's first start; the cluster starts
    again on fresh ports for every node."""
    c = cluster_factory(3, start=False)
    taken = c.node(2).ports["kafka"]
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    try:
        c.start()
    finally:
        squatter.close()
    assert c.node(2).ports["kafka"] != taken
    assert sorted(x[0] for x in c.metadata().brokers) == [1, 2, 3]


ID_A = "QUFBQUFBQUFBQUFBQUFBQQ"  # Kafka's format: 16 bytes, URL-safe base64, 22 characters
ID_B = "QkJCQkJCQkJCQkJCQkJCQg"


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_a_pinned_cluster_id_keeps_a_broker_on_an_empty_disk_out_of_other_clusters(cluster_factory, topic_name, pinned):
    """`cluster_id` (Kafka's cluster.id) set on every broker is the cluster's id from the first
    start. B1 loses its disk and comes back on the Raft address A1 had (A1 went away), so A's
    brokers dial it: pinned, B1 refuses them from the first connection and reports B's id.
    Unpinned (the negative control), B1 has no id to compare before its first sync and refuses
    nothing in the same time."""
    a = cluster_factory(3, env={"SEDIMENT_CLUSTER_ID": ID_A} if pinned else {})
    b = cluster_factory(3, env={"SEDIMENT_CLUSTER_ID": ID_B} if pinned else {})
    a_id, b_id = a.metadata().cluster_id, b.metadata().cluster_id
    if pinned:
        assert (a_id, b_id) == (ID_A, ID_B)
    _hundred_records(a.bootstrap, topic_name)

    b1, a1 = b.node(1), a.node(1)
    b1.stop()
    a1.stop()
    shutil.rmtree(b1.data_dir)
    b1.ports["raft"] = a1.ports["raft"]
    b1._spawn()  # not ready-waited: B cannot reach it at this address
    deadline = time.monotonic() + (30 if pinned else 15)
    refused = False
    while not refused and time.monotonic() < deadline:
        refused = "belongs to another cluster" in b1.log_tail(2000, since_last_start=True)
        time.sleep(0.2)
    assert refused == pinned, b1.log_tail(40)
    if pinned:
        with urllib.request.urlopen(f"{b1.admin_url}/v1/cluster", timeout=5) as r:
            assert json.load(r)["cluster_id"] == ID_B
    # A is untouched: its id, every record
    assert a.metadata(via=a.node(2)).cluster_id == a_id
    got = consume_range(a.node(2).bootstrap, topic_name, {0: (0, 100)})
    assert [m.value() for m in got[0]] == [b"%d" % i for i in range(100)]


def test_a_broker_refuses_a_data_dir_of_another_cluster_id(broker_factory):
    """A lone broker (both paths) pinned to one cluster id refuses, at start, a data dir
    written for another, naming both."""
    for raft_of_one in ("false", "true"):
        b = broker_factory(env={"SEDIMENT_CLUSTER_ID": ID_A, "SEDIMENT_SINGLE_NODE_RAFT": raft_of_one})
        with urllib.request.urlopen(f"{b.admin_url}/v1/cluster", timeout=5) as r:
            assert json.load(r)["cluster_id"] == ID_A
        b.stop()
        b.env["SEDIMENT_CLUSTER_ID"] = ID_B
        code, log = b.run_to_exit(timeout=30)
        assert code == 1 and ID_A in log and ID_B in log, (code, log[-2000:])
