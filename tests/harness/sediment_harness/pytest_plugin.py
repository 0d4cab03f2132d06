"""Pytest fixtures and hooks shared by every suite.

Load it from a suite's conftest.py:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
    from sediment_harness.pytest_plugin import *  # noqa: F401,F403

Fixtures:
    sediment_bin     the binary under test (SEDIMENT_BIN or the cargo target dir)
    broker_factory   make(**kwargs) -> started Broker; all are stopped at teardown
                     (graceful stop asserted), and any Rust panic in their logs
                     fails the test
    broker           one started single-node broker
    cluster_factory  make(size, **kwargs) -> started Cluster; stopped and checked as above
    kafka            one broker, then three (the test runs once with each): .bootstrap for
                     clients, .leader_bootstrap(topic, partition) for raw-wire requests that
                     must reach the partition's leader
    disks            make(count) -> LazyDisks (tests/lazyfs): power cuts and stalled paths;
                     unmounted at teardown

On a failed test the tail of every broker's log is attached to the report
("sediment log: broker-1" sections in the failure output).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .broker import Broker, default_binary

_BROKERS_KEY = pytest.StashKey[list]()
LOG_TAIL_LINES = int(os.environ.get("SEDIMENT_LOG_TAIL_LINES", "80"))


@pytest.fixture(autouse=True)
def _librdkafka_log_dedup():
    """Each test gets the first copies of every librdkafka message again."""
    from .clients import LOG_DEDUP

    LOG_DEDUP.reset()
    yield


@pytest.fixture(scope="session")
def sediment_bin() -> Path:
    path = default_binary()
    if not path.exists():
        pytest.fail(f"sediment binary not found at {path}: build it (cargo build -p sediment) or set SEDIMENT_BIN")
    return path


@pytest.fixture
def broker_factory(request, tmp_path, sediment_bin):
    brokers: list[Broker] = []
    request.node.stash[_BROKERS_KEY] = brokers

    def make(start: bool = True, name: str | None = None, **kwargs) -> Broker:
        idx = len(brokers) + 1
        b = Broker(tmp_path / f"broker{idx}", bin=sediment_bin, name=name or f"broker-{idx}", **kwargs)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    _stop_and_check(brokers)


def _stop_and_check(brokers: list[Broker]) -> None:
    """Teardown of every factory: stop what still runs (a graceful stop must succeed) and
    fail the test if any broker panicked or aborted."""
    problems = []
    for b in brokers:
        if b.running():
            try:
                b.stop()
            except AssertionError as e:
                problems.append(str(e))
        panics = b.panics()
        if panics:
            problems.append(f"{b.name} panicked or aborted:\n" + "\n".join(panics[:10]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def cluster_factory(request, tmp_path, sediment_bin):
    """Starts Clusters of `size` nodes; every node is stopped (and checked for
    panics) at the end, and their logs are attached to a failing test."""
    from .cluster import Cluster

    clusters: list[Cluster] = []

    def make(size: int = 3, start: bool = True, **kwargs) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(clusters) + 1}", size, bin=sediment_bin, **kwargs)
        clusters.append(c)
        request.node.stash.setdefault(_BROKERS_KEY, []).extend(c.nodes)
        if start:
            c.start()
        return c

    yield make
    _stop_and_check([b for c in clusters for b in c.nodes])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in item.stash.get(_BROKERS_KEY, []):
            status = f"running, pid {b.pid}" if b.running() else f"exit codes {b.exit_codes}"
            notable = "\n".join(b.notable_lines())
            if notable:
                report.sections.append((f"sediment log highlights: {b.name} ({status})", notable))
            tail = b.log_tail(LOG_TAIL_LINES)
            report.sections.append((f"sediment log tail: {b.name} ({b.log_path})", tail or "(empty)"))


@pytest.fixture
def disks(tmp_path):
    """make(count) -> that many new LazyDisks under the test's tmp dir, unmounted at teardown."""
    from .powerloss import LazyDisk

    made: list[LazyDisk] = []

    def make(count: int) -> list[LazyDisk]:
        new = [LazyDisk(tmp_path / f"disk{len(made) + i + 1}") for i in range(count)]
        made.extend(new)
        return new

    yield make
    for d in made:
        d.unmount()


class KafkaTarget:
    """What a suite that should hold for one broker and for a cluster talks to."""

    def __init__(self, broker=None, cluster=None):
        self.broker, self.cluster = broker, cluster

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap if self.broker else self.cluster.bootstrap

    def leader_bootstrap(self, topic: str, partition: int = 0) -> str:
        if self.broker:
            return self.broker.bootstrap
        return self.cluster.node(self.cluster.leader(topic, partition)).bootstrap

    def __repr__(self) -> str:
        return f"<KafkaTarget {self.broker or self.cluster}>"


@pytest.fixture(params=["one-broker", "three-brokers"])
def kafka(request, broker_factory, cluster_factory) -> KafkaTarget:
    """One broker, then a three-broker cluster: suites whose behaviour must not depend on the
    cluster's size (produce/consume, configs, offsets, DeleteRecords, compression) run on both."""
    if request.param == "one-broker":
        return KafkaTarget(broker=broker_factory())
    return KafkaTarget(cluster=cluster_factory(3))
