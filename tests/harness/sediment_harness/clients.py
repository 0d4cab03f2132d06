"""Real Kafka clients pointed at a Broker, with the strict settings tests want.

confluent-kafka (librdkafka) is the reference client here. Helpers:

    admin(bootstrap)                       AdminClient
    create_topic(bootstrap, name, ...)     CreateTopics, waits for the result
    producer(bootstrap, **conf)            Producer with acks=all, no idempotence
    consumer(bootstrap, **conf)            Consumer for assign() use, CRC checks on
    consume_range(bootstrap, topic, {p: (start, end)})
                                           every record in [start, end) per partition
    Witness                                a second client producing and consuming
                                           in the background while a test misbehaves
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# librdkafka logs go to the "librdkafka" logger: pytest shows them with a
# failed test instead of spraying them over the terminal
LOGGER = logging.getLogger("librdkafka")


class _Dedup(logging.Filter):
    """Pass the first few of each kind of librdkafka message (digits masked),
    so a client reconnecting to a dead broker for 30 s does not bury the
    failure report. reset() starts over (the pytest plugin calls it per test)."""

    LIMIT = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {}

    def reset(self) -> None:
        self.seen.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        if n == self.LIMIT + 1:
            record.msg = f"{record.getMessage()} (further copies of this message suppressed)"
            record.args = ()
        return n <= self.LIMIT + 1


LOG_DEDUP = _Dedup()
LOGGER.addFilter(LOG_DEDUP)

# librdkafka settings shared by every client the tests create
BASE_CONF = {
    "logger": LOGGER,
    "socket.timeout.ms": 10000,
    "topic.metadata.refresh.interval.ms": 2000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
}


def admin(bootstrap: str, **conf) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **BASE_CONF, **conf})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: Optional[dict] = None,
                 timeout: float = 30.0, client: Optional[AdminClient] = None, replication_factor: int = 1) -> None:
    a = client or admin(bootstrap)
    futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                                     config=config or {})], operation_timeout=timeout,
                           request_timeout=timeout)
    futs[name].result(timeout)


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        **BASE_CONF,
    }
    base.update(conf)
    return Producer(base)


def consumer(bootstrap: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        # librdkafka refuses to build a consumer without group.id; the tests use
        # assign() with explicit offsets, so the group is never joined.
        "group.id": f"sediment-tests-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        "enable.partition.eof": False,
        **BASE_CONF,
    }
    base.update(conf)
    return Consumer(base)


def consume_range(
    bootstrap: str,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    timeout: float = 60.0,
    consumer_conf: Optional[dict] = None,
) -> dict[int, list]:
    """Read every record with start <= offset < end of each partition.

    Returns {partition: [Message, ...]} in offset order. Fails on a consumer
    error that names a partition, on an offset outside the range, and on a
    timeout (with whatever was read so far in the message)."""
    out: dict[int, list] = {p: [] for p in ranges}
    pending = {p for p, (s, e) in ranges.items() if e > s}
    if not pending:
        return out
    c = consumer(bootstrap, **(consumer_conf or {}))
    errors = []
    try:
        c.assign([TopicPartition(topic, p, ranges[p][0]) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                got = {p: len(v) for p, v in out.items()}
                raise AssertionError(
                    f"timed out reading {topic} {ranges}: got {got}; consumer errors: {errors[-5:]}"
                )
            batch = c.consume(num_messages=10000, timeout=0.5)
            for m in batch:
                if m.error():
                    err = m.error()
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or (m.topic() == topic and m.partition() in ranges):
                        raise KafkaException(err)
                    errors.append(err)
                    continue
                p = m.partition()
                start, end = ranges[p]
                if m.offset() >= end:
                    pending.discard(p)
                    continue
                if m.offset() < start:
                    raise AssertionError(f"{topic}[{p}] returned offset {m.offset()} below {start}")
                out[p].append(m)
                if m.offset() == end - 1:
                    pending.discard(p)
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()


@dataclass
class Witness:
    """A well-behaved second client: produces numbered records with acks=all
    to its own topic and consumes them back, in the background.

    start() creates the topic and writes a few records first; check() stops
    the traffic and asserts that every produce succeeded, the consumer saw
    every record exactly once and in order, and a fresh read from offset 0
    returns everything ever acknowledged (nothing written before was lost)."""

    bootstrap: str
    topic: str = field(default_factory=lambda: f"witness-{uuid.uuid4().hex[:8]}")
    interval: float = 0.02
    produced: list = field(default_factory=list)  # (seq, offset)
    consumed: list = field(default_factory=list)  # (seq, offset)
    errors: list = field(default_factory=list)

    def start(self) -> "Witness":
        create_topic(self.bootstrap, self.topic, 1)
        self._stop = threading.Event()
        self._prod_done = threading.Event()
        self._abort = False
        self._consume_deadline = float("inf")
        self._p = producer(self.bootstrap, **{"linger.ms": 0})
        # some data that exists before the misbehaviour starts
        for i in range(20):
            self._send(i)
        self._p.flush(30)
        if len(self.produced) != 20:
            raise AssertionError(f"witness could not write its initial records: {self.errors}")
        self._seq = 20
        self._prod_thread = threading.Thread(target=self._produce_loop, daemon=True)
        self._cons_thread = threading.Thread(target=self._consume_loop, daemon=True)
        self._prod_thread.start()
        self._cons_thread.start()
        return self

    def _send(self, seq: int) -> None:
        def cb(err, msg, seq=seq):
            if err is not None:
                self.errors.append(f"produce {seq}: {err}")
            else:
                self.produced.append((seq, msg.offset()))

        self._p.produce(self.topic, key=str(seq).encode(), value=f"witness-{seq}".encode(),
                        partition=0, on_delivery=cb)
        self._p.poll(0)

    def _produce_loop(self) -> None:
        while not self._stop.is_set():
            self._send(self._seq)
            self._seq += 1
            self._p.poll(self.interval)
        if self._abort:
            self._p.purge(in_queue=True, in_flight=True, blocking=False)
            self._p.flush(5)
        else:
            self._p.flush(30)
        self._prod_done.set()

    def _consume_loop(self) -> None:
        c = consumer(self.bootstrap, **{"fetch.wait.max.ms": 100})
        try:
            c.assign([TopicPartition(self.topic, 0, 0)])
            while True:
                if self._prod_done.is_set() and len(self.consumed) >= len(self.produced):
                    break
                for m in c.consume(num_messages=1000, timeout=0.2):
                    if m.error():
                        if m.error().fatal() or m.topic() == self.topic:
                            self.errors.append(f"consume: {m.error()}")
                        continue
                    self.consumed.append((int(m.key()), m.offset()))
                if self._prod_done.is_set() and time.monotonic() > self._consume_deadline:
                    break
        finally:
            c.close()

    def close(self) -> None:
        """Stop the background traffic without checking anything (idempotent)."""
        if not hasattr(self, "_stop"):
            return
        self._abort = True
        self._consume_deadline = time.monotonic()
        self._stop.set()
        self._prod_thread.join(40)
        self._cons_thread.join(40)

    def check(self, min_during: int = 5) -> None:
        before = len(self.produced)
        self._consume_deadline = time.monotonic() + 45
        self._stop.set()
        self._prod_thread.join(60)
        self._cons_thread.join(60)
        assert not self.errors, f"witness client saw errors: {self.errors[:10]}"
        produced = sorted(self.produced)
        assert len(produced) >= 20 + min_during, (
            f"witness produced only {len(produced)} records (before stop: {before})"
        )
        seqs = [s for s, _ in produced]
        assert seqs == list(range(len(seqs))), "witness deliveries missing"
        offsets = [o for _, o in produced]
        assert offsets == list(range(len(offsets))), f"witness offsets not dense: {offsets[:50]}"
        assert self.consumed == produced, (
            f"witness consumer saw {len(self.consumed)} records, producer acked {len(produced)}; "
            f"first mismatch at {next((i for i, (a, b) in enumerate(zip(self.consumed, produced)) if a != b), None)}"
        )
        # a fresh read of everything: nothing already written was lost
        got = consume_range(self.bootstrap, self.topic, {0: (0, len(produced))})[0]
        assert [(int(m.key()), m.offset()) for m in got] == produced
        assert all(m.value() == f"witness-{int(m.key())}".encode() for m in got)


def seed_over_the_wire(bootstrap: str, topic: str, n: int = 5) -> None:
    """Creates `topic` (one partition) and produces `n` one-record batches to it with the
    harness's own wire client: keys b"seed<i>", values b"seed-value-<i>", offsets 0..n-1."""
    from . import kafka_wire as kw
    create_topic(bootstrap, topic, 1)
    with kw.Connection.to(bootstrap) as c:
        for i in range(n):
            b = kw.build_record_batch([kw.Record(b"seed%d" % i, b"seed-value-%d" % i)])
            assert kw.produce(c, 9, topic, 0, b).error_code == kw.NONE
