"""Cluster membership: `sediment cluster add-broker|remove-broker` against real brokers.

A fourth broker started with `--peers` naming the cluster (not itself) waits until it is added;
once added it votes in the metadata group and every broker lists it. Removing broker 3 moves its
partition replicas to broker 4 (AlterPartitionReassignments: 4 joins each partition's Raft group
as a learner, catches up with the existing records, becomes a voter, and 3 drops its copy), then
takes 3 out of the quorum: with 3 gone and 2 down, brokers 1 and 4 still commit metadata and
records. A broker whose replicas have nowhere to go is not removed.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import groups_wire as gw
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer
from sediment_harness.clients import admin as admin_client

pytestmark = pytest.mark.timeout(300)


def cli(sediment_bin, *args, timeout=120):
    r = subprocess.run([str(sediment_bin), *args], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def brokers_seen(node) -> set[int]:
    md = admin_client(node.bootstrap).list_topics(timeout=10)
    return set(md.brokers)


def wait_brokers(nodes, expected: set[int], timeout=60.0):
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        seen = {}
        for n in nodes:
            try:
                seen[n.node_id] = brokers_seen(n)
            except Exception as e:  # noqa: BLE001 - a broker still starting
                seen[n.node_id] = repr(e)
        if all(v == expected for v in seen.values()):
            return
        time.sleep(0.3)
    raise AssertionError(f"brokers not {expected} everywhere: {seen}")


def hosted(node, topic: str) -> dict[int, int]:
    """{partition: high watermark} of the topic's replicas on `node` (admin API)."""
    try:
        with urllib.request.urlopen(f"{node.admin_url}/v1/topics/{topic}", timeout=5) as r:
            t = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise
    return {p["partition"]: p["high_watermark"] for p in t["partitions"]}


def test_add_a_broker_move_replicas_to_it_and_remove_another(sediment_bin, cluster_factory, topic_name):
    c = cluster_factory(3)
    # the offsets topic and a topic with data exist before broker 4 joins: placed on 1, 2, 3
    deadline = time.monotonic() + 60
    while True:
        with kw.Connection.to(c.node(1).bootstrap) as conn:
            if gw.find_coordinator_v3(conn, "membership")[0] == 0:
                break
        assert time.monotonic() < deadline, "no group coordinator"
        time.sleep(0.2)
    create_topic(c.bootstrap, topic_name, 4, replication_factor=3)
    p = producer(c.bootstrap)
    for i in range(400):
        p.produce(topic_name, value=b"%d" % i, partition=i % 4)
    assert p.flush(60) == 0

    n4 = c.join()
    # running but not a member: nobody lists it
    time.sleep(1)
    assert brokers_seen(c.node(1)) == {1, 2, 3}
    rc, out, err = cli(sediment_bin, "cluster", "add-broker", "--bootstrap", c.node(2).bootstrap,
                       "--node-id", "4", "--raft-address", f"127.0.0.1:{n4.ports['raft']}", "--timeout", "60")
    assert rc == 0, err
    wait_brokers(c.nodes, {1, 2, 3, 4})
    rc, out, err = cli(sediment_bin, "cluster", "describe", "--bootstrap", n4.bootstrap)
    assert rc == 0 and all(f"\n{b} " in out for b in (1, 2, 3, 4)), (out, err)
    # adding it again is a no-op; another address for the same id is refused
    assert cli(sediment_bin, "cluster", "add-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "4",
               "--raft-address", f"127.0.0.1:{n4.ports['raft']}")[0] == 0
    rc, _, err = cli(sediment_bin, "cluster", "add-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "4",
                     "--raft-address", "127.0.0.1:1")
    assert rc == 1 and "already a member" in err, err

    # remove broker 3: its replicas move to broker 4 (the only broker not holding them yet),
    # which catches up with the existing records; then 3 leaves the quorum
    rc, out, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap,
                       "--node-id", "3", "--timeout", "120", timeout=180)
    assert rc == 0, err
    assert "moved to other brokers" in out and not out.startswith("broker 3 removed (0 "), out
    wait_brokers([c.node(1), c.node(2), n4], {1, 2, 4})
    md = admin_client(c.bootstrap).list_topics(topic_name, timeout=10)
    for pid, pm in md.topics[topic_name].partitions.items():
        assert sorted(pm.replicas) == [1, 2, 4], (pid, pm.replicas)
    deadline = time.monotonic() + 60
    while hosted(n4, topic_name) != {i: 100 for i in range(4)}:
        assert time.monotonic() < deadline, f"broker 4 holds {hosted(n4, topic_name)}"
        time.sleep(0.3)
    deadline = time.monotonic() + 30
    while hosted(c.node(3), topic_name):
        assert time.monotonic() < deadline, f"broker 3 still hosts {hosted(c.node(3), topic_name)}"
        time.sleep(0.3)
    assert not list((c.node(3).data_dir / "logs").glob(f"{topic_name}-*")), "broker 3 kept the moved replicas' data"
    c.node(3).stop()
    rc, _, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "3")
    assert rc == 1 and "not a member" in err, err

    # the quorum is {1, 2, 4}: with broker 2 down, 1 and 4 commit metadata and records
    c.node(2).kill()
    two = ",".join(n.bootstrap for n in (c.node(1), n4))
    create_topic(two, topic_name + "-after", 1, replication_factor=2)
    p = producer(two)
    for i in range(400, 480):
        p.produce(topic_name, value=b"%d" % i, partition=i % 4)
    assert p.flush(60) == 0
    got = consume_range(two, topic_name, {i: (0, 120) for i in range(4)}, timeout=60)
    assert sorted(int(m.value()) for ms in got.values() for m in ms) == list(range(480))

    # nowhere to move broker 1's replicas (every other broker holds them): refused, nothing changes
    c.node(2).restart()
    rc, _, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "1")
    assert rc == 1 and "already holds a replica" in err, err
    wait_brokers([c.node(1), c.node(2), n4], {1, 2, 4})


def test_a_lone_broker_without_a_cluster_secret_refuses_to_add_brokers(broker_factory, sediment_bin):
    """A broker running alone as a Raft group of one without a secret listens for no peer, so
    nobody could join it: add-broker says so and what to change, instead of timing out."""
    broker = broker_factory(env={"SEDIMENT_SINGLE_NODE_RAFT": "true"})
    rc, _, err = cli(sediment_bin, "cluster", "add-broker", "--bootstrap", broker.bootstrap, "--node-id", "2",
                     "--raft-address", "127.0.0.1:1", "--timeout", "5")
    assert rc == 1 and "without a cluster secret" in err, err
    rc, out, err = cli(sediment_bin, "cluster", "describe", "--bootstrap", broker.bootstrap)
    assert rc == 0 and "\n1 " in out and "\n2 " not in out, (out, err)
