"""Cluster membership: `sediment cluster add-broker|remove-broker` against three real brokers.

A fourth broker started with `--peers` naming the cluster (not itself) waits until it is added;
once added it votes in the metadata group, every broker lists it, and new topics place replicas
on it. Removing a broker is refused while it holds replicas; once removed, the quorum no longer
counts it: with it stopped and one more broker down, the remaining two still commit metadata.
"""

from __future__ import annotations

import subprocess
import time

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


def test_add_and_remove_a_broker(sediment_bin, cluster_factory, topic_name):
    c = cluster_factory(3)
    # the offsets topic exists before broker 4 joins, so no replica of it lands there (existing
    # partitions cannot move yet, and a broker holding replicas cannot leave)
    deadline = time.monotonic() + 60
    while True:
        with kw.Connection.to(c.node(1).bootstrap) as conn:
            if gw.find_coordinator_v3(conn, "membership")[0] == 0:
                break
        assert time.monotonic() < deadline, "no group coordinator"
        time.sleep(0.2)
    n4 = c.join()
    # running but not a member: nobody lists it, and it does not count for the quorum
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

    # new topics place replicas on it: 4 partitions x RF 3 over 4 brokers
    create_topic(c.bootstrap, topic_name, 4, replication_factor=3)
    md = admin_client(c.bootstrap).list_topics(topic_name, timeout=10)
    replicas = [set(p.replicas) for p in md.topics[topic_name].partitions.values()]
    assert sum(1 for r in replicas if 4 in r) == 3, replicas
    p = producer(c.bootstrap)
    for i in range(400):
        p.produce(topic_name, value=b"%d" % i, partition=i % 4)
    assert p.flush(60) == 0
    got = consume_range(n4.bootstrap, topic_name, {i: (0, 100) for i in range(4)}, timeout=60)
    assert sorted(int(m.value()) for ms in got.values() for m in ms) == list(range(400))

    # a broker holding replicas cannot leave
    rc, _, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "4")
    assert rc == 1 and "holds replicas" in err, err
    a = admin_client(c.bootstrap)
    a.delete_topics([topic_name])[topic_name].result(30)
    rc, _, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "4")
    assert rc == 0, err
    wait_brokers(c.nodes[:3], {1, 2, 3})
    n4.stop()
    rc, _, err = cli(sediment_bin, "cluster", "remove-broker", "--bootstrap", c.node(1).bootstrap, "--node-id", "4")
    assert rc == 1 and "not a member" in err, err

    # the quorum is three again: two of them commit metadata without broker 4
    c.node(3).kill()
    two = ",".join(n.bootstrap for n in c.nodes[:2])
    create_topic(two, topic_name + "-after", 1, replication_factor=2)
    c.node(3).restart()
    wait_brokers(c.nodes[:3], {1, 2, 3})
