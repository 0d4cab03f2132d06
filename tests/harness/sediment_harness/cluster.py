"""Cluster: several `sediment serve` processes sharing one --peers list.

Each node is a plain Broker (same lifecycle: start, stop, kill = SIGKILL,
restart with the same data dir and ports); the cluster adds the --peers list,
the combined bootstrap string and "who leads this partition" from Metadata.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from . import kafka_wire
from .broker import Broker, BrokerError


CLUSTER_SECRET = "sediment-test-cluster-secret"


class Cluster:
    def __init__(self, workdir: Path | str, size: int = 3, *, bin=None, extra_args: Sequence[str] = (),
                 object_store: Optional[str] = None, env: Optional[dict] = None,
                 data_dirs: Optional[Sequence[Path]] = None) -> None:
        self.workdir = Path(workdir)
        # one bucket for the whole cluster, as in production: a new leader reads and extends
        # what the old one uploaded (file:// under the cluster's directory by default)
        self.bucket_dir = self.workdir / "bucket"
        self.object_store = object_store or f"file://{self.bucket_dir}"
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        # every broker of a cluster shares the secret it proves on the Raft port
        env = {"SEDIMENT_CLUSTER_SECRET": CLUSTER_SECRET, **(env or {})}
        self._bin, self._env, self._extra_args = bin, env, list(extra_args)
        self._data_dirs = list(data_dirs) if data_dirs else None
        self.nodes: list[Broker] = []
        self._place(size)

    def _place(self, size: int) -> None:
        """Fresh ports for `size` nodes, each with the --peers list naming them all."""
        ports = [Broker.allocate_ports() for _ in range(size)]
        peers = ",".join(f"{i + 1}=127.0.0.1:{p['raft']}" for i, p in enumerate(ports))
        if self.nodes:
            # the same Broker objects (whoever holds them sees the new ports)
            for n, p in zip(self.nodes, ports):
                n.ports = p
                n.extra_args[n.extra_args.index("--peers") + 1] = peers
            return
        self.nodes = [
            Broker(self.workdir / f"node{i + 1}", bin=self._bin, node_id=i + 1, ports=p, name=f"node-{i + 1}",
                   object_store=self.object_store, env=self._env, extra_args=["--peers", peers, *self._extra_args],
                   data_dir=self._data_dirs[i] if self._data_dirs else None)
            for i, p in enumerate(ports)
        ]

    def join(self, timeout: float = 60.0) -> Broker:
        """Starts one more broker (the next node id) whose --peers lists the cluster's brokers
        but not itself: it runs, waiting to be added (`sediment cluster add-broker`)."""
        node_id = len(self.nodes) + 1
        peers = ",".join(f"{n.node_id}=127.0.0.1:{n.ports['raft']}" for n in self.nodes)
        b = Broker(self.workdir / f"node{node_id}", bin=self._bin, node_id=node_id, name=f"node-{node_id}",
                   object_store=self.object_store, env=self._env, extra_args=["--peers", peers, *self._extra_args])
        self.nodes.append(b)
        b.start(timeout)
        return b

    # ---- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "Cluster":
        """Start every node, then wait until each answers and the cluster
        has registered all of them (Metadata lists every broker)."""
        # A port is free when picked but another process may take it before the broker binds
        # it: on the very first start of a cluster on fresh dirs, such a bind race is retried
        # with fresh ports for every node (the ports are in every node's --peers).
        first = all(n.starts == 0 for n in self.nodes) and self._data_dirs is None
        for attempt in range(3 if first else 1):
            for n in self.nodes:
                n._spawn()
            try:
                for n in self.nodes:
                    n._wait_ready(timeout)
            except BrokerError:
                lost = [n for n in self.nodes if not n.running() and n._looks_like_bind_error()]
                if not lost or attempt + 1 == (3 if first else 1):
                    raise
                for n in self.nodes:
                    n.kill()
                    shutil.rmtree(n.data_dir, ignore_errors=True)
                self._place(len(self.nodes))
                continue
            break
        self.wait_for_brokers(len(self.nodes), timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Waits until every live node answers /ready (metadata applied, every replica placed
        on it in sync with its leader)."""
        for n in self.live():
            n.wait_ready(timeout)

    def stop(self) -> None:
        for n in self.nodes:
            if n.running():
                n.stop()

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    def live(self) -> list[Broker]:
        return [n for n in self.nodes if n.running()]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    # ---- metadata --------------------------------------------------------

    def metadata(self, topics: Optional[list[str]] = None, via: Optional[Broker] = None) -> kafka_wire.MetadataResponse:
        """Metadata (v8) from one live node, or from `via`."""
        nodes = [via] if via else self.live()
        last = None
        for n in nodes:
            try:
                with kafka_wire.Connection.to(n.bootstrap, timeout=5) as c:
                    return kafka_wire.metadata(c, topics)
            except (OSError, kafka_wire.DecodeError) as e:
                last = e
        raise BrokerError(f"no node answered Metadata: {last}")

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = {n.node_id: len(self.metadata(via=n).brokers) for n in self.live()}
                if all(v >= count for v in seen.values()):
                    return
            except (BrokerError, OSError):
                pass
            time.sleep(0.1)
        raise BrokerError(f"brokers did not all register within {timeout}s: {seen}")

    def leader(self, topic: str, partition: int = 0, timeout: float = 30.0, exclude: Sequence[int] = ()) -> int:
        """The partition's leader as the live nodes report it (all must agree)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            views = set()
            for n in self.live():
                try:
                    md = self.metadata([topic], via=n)
                    p = md.topics[topic].partitions[partition]
                    views.add(p.leader if p.error_code == 0 else -1)
                except (BrokerError, OSError, KeyError, IndexError):
                    views.add(-1)
            last = views
            if len(views) == 1:
                (l,) = views
                if l > 0 and l not in exclude and self.node(l).running():
                    return l
            time.sleep(0.05)
        raise BrokerError(f"no agreed leader for {topic}-{partition} within {timeout}s (views {last})")

    def __repr__(self) -> str:
        return f"<Cluster {[repr(n) for n in self.nodes]}>"
