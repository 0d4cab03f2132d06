"""Produce and Fetch at the wire level: batches pass through byte for byte,
long-poll on max_wait_ms/min_bytes, empty (not null) record sets, max_bytes
and per-partition limits, many partitions per request."""

import threading
import time

import pytest
from confluent_kafka import TopicPartition

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consumer, create_topic, producer


def _batch(n, size, tag="r", base_ts=None):
    recs = [kw.Record(f"{tag}{i}".encode(), bytes([i % 251]) * size, [("h", f"{tag}{i}".encode())])
            for i in range(n)]
    return kw.build_record_batch(recs, base_timestamp=base_ts)


@pytest.mark.parametrize("fetch_version", [11, 12])
@pytest.mark.parametrize("produce_version", [7, 8, 9])
def test_raw_produce_fetch_passes_batches_through(broker, topic_name, produce_version, fetch_version):
    create_topic(broker.bootstrap, topic_name, 1)
    sent = [_batch(3, 100, "a"), _batch(1, 10, "b"), _batch(5, 1000, "c")]
    with kw.Connection.to(broker.bootstrap) as c:
        expect_base = 0
        for b in sent:
            r = kw.produce(c, produce_version, topic_name, 0, b)
            assert r.error_code == kw.NONE, r
            assert r.base_offset == expect_base
            assert r.log_start_offset in (0, -1)
            expect_base += kw.parse_record_batches(b)[0].records_count
        resp = kw.fetch(c, fetch_version, topic_name, [(0, 0)], max_wait_ms=0)
    assert resp.error_code == kw.NONE
    (p,) = resp.partitions
    assert p.error_code == kw.NONE
    assert p.high_watermark == 9
    assert p.last_stable_offset == 9
    assert p.log_start_offset == 0
    got = kw.parse_record_batches(p.records, allow_partial_tail=False)
    assert [g.base_offset for g in got] == [0, 3, 4]
    for s, g in zip(sent, got):
        assert g.crc_ok
        # only the base offset and the partition leader epoch may differ (the
        # CRC does not cover them); everything else is the producer's bytes
        assert g.raw[8:12] == s[8:12]
        assert g.raw[16:] == s[16:]
    assert [r[2] for r in got[2].records] == [b"c%d" % i for i in range(5)]
    assert [r[0] for r in got[2].records] == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("fetch_version", [11, 12])
def test_empty_fetch_returns_empty_not_null_records(broker, topic_name, fetch_version):
    """librdkafka drops the whole response on a NULL record set
    ("invalid MessageSetSize -1")."""
    create_topic(broker.bootstrap, topic_name, 2)
    with kw.Connection.to(broker.bootstrap) as c:
        kw.produce(c, 9, topic_name, 1, _batch(2, 10))
        t = time.monotonic()
        resp = kw.fetch(c, fetch_version, topic_name, [(0, 0), (1, 2)], max_wait_ms=0)
        assert time.monotonic() - t < 2.0, "max_wait_ms=0 must not wait"
    parts = {p.partition: p for p in resp.partitions}
    assert set(parts) == {0, 1}
    for idx, hwm in [(0, 0), (1, 2)]:
        p = parts[idx]
        assert p.error_code == kw.NONE
        assert p.high_watermark == hwm
        assert p.records is not None, f"partition {idx}: NULL record set"
        assert p.records == b""


def test_fetch_long_poll_waits_then_returns_on_data(broker, topic_name):
    """A fetch with nothing to return waits max_wait_ms; data arriving during
    the wait completes it at once."""
    create_topic(broker.bootstrap, topic_name, 1)
    with kw.Connection.to(broker.bootstrap) as c:
        # nothing arrives: the broker holds the request for about max_wait_ms
        t = time.monotonic()
        resp = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=1500, min_bytes=1)
        waited = time.monotonic() - t
        assert 1.2 <= waited < 5.0, f"empty fetch answered after {waited:.2f}s, max_wait_ms=1500"
        assert resp.partitions[0].records == b""

        # data arrives 1 s into a 5 s wait
        produced = []

        def later():
            time.sleep(1.0)
            with kw.Connection.to(broker.bootstrap) as c2:
                produced.append(kw.produce(c2, 9, topic_name, 0, _batch(1, 10, "late")).error_code)

        th = threading.Thread(target=later)
        t = time.monotonic()
        th.start()
        resp = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=5000, min_bytes=1)
        waited = time.monotonic() - t
        th.join()
        assert produced == [kw.NONE], f"the late produce answered {produced}"
    (p,) = resp.partitions
    batches = kw.parse_record_batches(p.records or b"")
    assert len(batches) == 1 and batches[0].records[0][2] == b"late0", p
    assert 0.8 <= waited < 3.0, f"fetch answered after {waited:.2f}s; data was produced after 1 s"


def test_fetch_min_bytes_waits_for_enough_data(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    with kw.Connection.to(broker.bootstrap) as c:
        kw.produce(c, 9, topic_name, 0, _batch(1, 10))
        t = time.monotonic()
        resp = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=1500, min_bytes=1024 * 1024)
        waited = time.monotonic() - t
    assert 1.2 <= waited < 5.0, f"min_bytes not reached, expected a ~1.5 s wait, got {waited:.2f}s"
    batches = kw.parse_record_batches(resp.partitions[0].records)
    assert len(batches) == 1, "the data available at the deadline is returned"


def test_consumer_long_poll_gets_record_quickly(broker, topic_name):
    """confluent-kafka with fetch.wait.max.ms=5000 receives a record produced
    1 s after it started waiting well before the 5 s wait ends."""
    create_topic(broker.bootstrap, topic_name, 2)
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    p.produce(topic_name, value=b"warm-up", partition=1)  # connect and learn metadata first
    assert p.flush(30) == 0
    c = consumer(broker.bootstrap, **{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        # let the consumer connect and park a fetch on the empty partition
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            assert m is None or m.error(), "a record appeared on an empty partition"
        t0 = time.monotonic()
        produced_at = None
        msg = None
        while time.monotonic() - t0 < 8.0:
            if produced_at is None and time.monotonic() - t0 >= 1.0:
                p.produce(topic_name, value=b"wake-up", partition=0)
                p.poll(0)
                produced_at = time.monotonic()
            m = c.poll(0.05)
            if m is not None and not m.error():
                msg = m
                break
        assert msg is not None, "record never arrived"
        elapsed = time.monotonic() - t0
        assert msg.value() == b"wake-up"
        assert elapsed < 3.0, f"record produced at +1 s arrived at +{elapsed:.2f}s (fetch.wait.max.ms=5000)"
    finally:
        c.close()
        p.flush(10)


def test_many_partitions_and_byte_limits(broker, topic_name):
    parts = 8
    create_topic(broker.bootstrap, topic_name, parts)
    batch = _batch(5, 1024)  # ~5.2 KiB
    bsize = len(batch)
    with kw.Connection.to(broker.bootstrap) as c:
        for q in range(parts):
            for _ in range(4):
                assert kw.produce(c, 9, topic_name, q, batch).error_code == kw.NONE

        # one request, all partitions, generous limits: everything comes back
        resp = kw.fetch(c, 12, topic_name, [(q, 0) for q in range(parts)], max_wait_ms=0,
                        partition_max_bytes=1024 * 1024)
        assert sorted(p.partition for p in resp.partitions) == list(range(parts))
        for p in resp.partitions:
            bs = kw.parse_record_batches(p.records)
            assert [b.base_offset for b in bs] == [0, 5, 10, 15], p.partition
            assert all(b.crc_ok for b in bs)

        # per-partition limit of 2.5 batches: 1..2 whole batches per partition, never over the limit
        limit = int(bsize * 2.5)
        resp = kw.fetch(c, 12, topic_name, [(q, 0) for q in range(parts)], max_wait_ms=0,
                        partition_max_bytes=limit)
        for p in resp.partitions:
            assert len(p.records) <= limit, f"partition {p.partition}: {len(p.records)} > {limit}"
            assert 1 <= len(kw.parse_record_batches(p.records)) <= 2

        # response limit of 3 batches across 8 partitions
        limit = bsize * 3
        resp = kw.fetch(c, 12, topic_name, [(q, 0) for q in range(parts)], max_wait_ms=0,
                        max_bytes=limit, partition_max_bytes=1024 * 1024)
        total = sum(len(p.records or b"") for p in resp.partitions)
        assert total <= limit, f"response carried {total} record bytes, max_bytes={limit}"
        assert sum(len(kw.parse_record_batches(p.records or b"")) for p in resp.partitions) >= 1
        assert all(p.records is not None for p in resp.partitions)


def test_oversized_first_batch_is_still_returned(broker, topic_name):
    """KIP-74: if the first batch is larger than max_bytes / partition_max_bytes
    it is returned anyway, so consumers always make progress."""
    create_topic(broker.bootstrap, topic_name, 1)
    big = _batch(10, 10_000)
    with kw.Connection.to(broker.bootstrap) as c:
        assert kw.produce(c, 9, topic_name, 0, big).error_code == kw.NONE
        resp = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=0, max_bytes=1000,
                        partition_max_bytes=1000)
    bs = kw.parse_record_batches(resp.partitions[0].records)
    assert len(bs) == 1 and bs[0].raw[16:] == big[16:]


def test_fetch_errors(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    with kw.Connection.to(broker.bootstrap) as c:
        kw.produce(c, 9, topic_name, 0, _batch(3, 10))
        resp = kw.fetch(c, 12, topic_name, [(0, 4)], max_wait_ms=0)
        assert resp.partitions[0].error_code == kw.OFFSET_OUT_OF_RANGE
        resp = kw.fetch(c, 12, topic_name, [(7, 0)], max_wait_ms=0)
        assert resp.partitions[0].error_code == kw.UNKNOWN_TOPIC_OR_PARTITION
        resp = kw.fetch(c, 12, f"{topic_name}-missing", [(0, 0)], max_wait_ms=0)
        assert resp.partitions[0].error_code == kw.UNKNOWN_TOPIC_OR_PARTITION
        # at the high watermark: no error, empty records
        resp = kw.fetch(c, 12, topic_name, [(0, 3)], max_wait_ms=0)
        assert resp.partitions[0].error_code == kw.NONE and resp.partitions[0].records == b""
