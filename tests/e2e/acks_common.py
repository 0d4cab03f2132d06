"""What an acks=all producer was told, and whether the log still holds it.

Shared by the crash suites (SIGKILL, power loss): a producer sends continuously until a crash
callback fires with requests in flight; afterwards every acknowledged record must be readable
at the offset its acknowledgement named, intact, in order, with dense offsets.
"""

import hashlib
import threading
import time
from typing import Callable

from confluent_kafka import KafkaException

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, producer, watermarks


def payload(seq: int) -> bytes:
    h = hashlib.sha256(str(seq).encode()).digest()
    return h * (1 + seq % 8)


class AckLog:
    """What the producer was told: (seq, partition, offset) for each delivered record."""

    def __init__(self):
        self.acked = []
        self.failed = 0
        self.lock = threading.Lock()

    def cb(self, err, msg):
        with self.lock:
            if err is None:
                self.acked.append((int(msg.key()), msg.partition(), msg.offset()))
            else:
                self.failed += 1


def produce_until_crash(bootstrap: str, topic: str, parts: int, start_seq: int, acks: AckLog,
                        run_for: float, crash: Callable[[], None], min_acked: int = 500) -> int:
    """Send continuously with acks=all; after run_for seconds (and at least min_acked new
    acknowledgements) call crash() while sends are in flight; return the next sequence number."""
    p = producer(bootstrap, **{
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 200,
        "max.in.flight.requests.per.connection": 1,  # keeps acked records in send order
        "message.timeout.ms": 6000,
        "request.timeout.ms": 4000,
        "retries": 1000000,
        "queue.buffering.max.messages": 1000000,
    })
    seq = start_seq
    t0 = time.monotonic()
    crashed = False
    acked_before = len(acks.acked)
    while not crashed:
        if seq - start_seq - (len(acks.acked) - acked_before) - acks.failed > 5000:
            p.poll(0.005)  # enough in flight: let acknowledgements catch up
            continue
        for _ in range(50):
            p.produce(topic, key=str(seq).encode(), value=payload(seq),
                      headers=[("seq", str(seq).encode())], partition=seq % parts, on_delivery=acks.cb)
            seq += 1
        p.poll(0.01)  # ~5k records/s: plenty in flight, little to verify
        if time.monotonic() - t0 > run_for and len(acks.acked) > acked_before + min_acked:
            crash()  # with requests in flight
            crashed = True
        elif time.monotonic() - t0 > 60:
            raise AssertionError(f"only {len(acks.acked) - acked_before} records acked in 60 s")
    # whatever was not acknowledged before the crash will never be: drop it
    # (in-flight records may or may not have reached the log; they are not acked)
    p.poll(0.2)
    p.purge(in_queue=True, in_flight=True, blocking=True)
    p.flush(30)
    assert len(p) == 0
    print(f"round from seq {start_seq}: sent {seq - start_seq}, acked {len(acks.acked) - acked_before}")
    return seq


def _watermarks_once_served(bootstrap: str, topic: str, parts: int) -> dict:
    """Each partition's (low, high) watermarks, asked until the broker answers: one that lost its
    metadata log with the power (fsync=never) may take a while to serve the partitions again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return {q: watermarks(bootstrap, topic, q) for q in range(parts)}
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def lost_acks(bootstrap: str, topic: str, parts: int, acks: AckLog) -> list:
    """The acknowledged records not readable where their acknowledgement said: (seq, partition,
    offset), empty if none. Everything that is readable must be intact and dense."""
    hw = _watermarks_once_served(bootstrap, topic, parts)
    for q, (lo, _) in hw.items():
        assert lo == 0
    got = consume_range(bootstrap, topic, {q: (0, hi) for q, (_, hi) in hw.items()}, timeout=120)
    at = {}
    for q, msgs in got.items():
        # dense offsets, every record intact (librdkafka checks CRCs: check.crcs=true)
        assert [m.offset() for m in msgs] == list(range(hw[q][1])), f"partition {q}: gap in offsets"
        for m in msgs:
            seq = int(m.key())
            assert m.value() == payload(seq), f"corrupt value at {q}/{m.offset()}"
            assert m.headers() == [("seq", str(seq).encode())]
            assert seq % parts == q
            at[(q, m.offset())] = seq
    return [(s, q, o) for s, q, o in acks.acked if at.get((q, o)) != s]


def verify(bootstrap: str, topic: str, parts: int, acks: AckLog,
           leader_of: Callable[[int], str] | None = None) -> dict:
    """Every acknowledged record is there, in order, served with valid CRCs (fetched raw from
    leader_of(partition), by default the single broker). Returns the watermarks
    {partition: (low, high)}."""
    missing = lost_acks(bootstrap, topic, parts, acks)
    assert not missing, f"{len(missing)} acked records lost or moved, first: {missing[:5]}"
    # and in order: per partition, acked sequence numbers rise with the offset
    for q in range(parts):
        seqs = [s for s, qq, o in sorted(acks.acked, key=lambda x: (x[1], x[2])) if qq == q]
        assert seqs == sorted(seqs), f"partition {q}: acked records out of order"
    hw = _watermarks_once_served(bootstrap, topic, parts)
    # the batches on the wire have valid CRCs
    for q, (_, hi) in hw.items():
        with kw.Connection.to(leader_of(q) if leader_of else bootstrap) as c:
            for b in kw.fetch_batches(c, topic, q, 0, hi):
                assert b.crc_ok, f"partition {q}: batch at {b.base_offset} served with a bad CRC"
    return hw
