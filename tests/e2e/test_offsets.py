"""ListOffsets (earliest, latest = high watermark, by timestamp via the time
index, max timestamp) and DeleteRecords."""

import re
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import OffsetSpec

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import admin, consume_range, consumer, create_topic, producer, watermarks

T0 = 1_700_000_000_000  # explicit record timestamps, far from "now"
# ...so far that the default retention.ms (7 days) would delete them: topics
# holding T0 records keep everything
KEEP = {"retention.ms": "-1"}


def _list_offset(a, topic, part, spec):
    tp = TopicPartition(topic, part)
    return a.list_offsets({tp: spec}, request_timeout=15)[tp].result(30)


def _offsets_for_time(bootstrap, topic, part, ts):
    c = consumer(bootstrap)
    try:
        (tp,) = c.offsets_for_times([TopicPartition(topic, part, ts)], timeout=15)
        assert tp.error is None, tp.error
        return tp.offset
    finally:
        c.close()


def _advertised(bootstrap, api):
    with kw.Connection.to(bootstrap) as c:
        return kw.api_versions(c)[api]


def _produce_timestamped(bootstrap, topic, timestamps, value_size=10_000, per_flush=7):
    p = producer(bootstrap, **{"linger.ms": 100, "message.max.bytes": 2_000_000})
    acked = []
    for i, ts in enumerate(timestamps):
        p.produce(topic, key=str(i).encode(), value=bytes([i % 256]) * value_size, partition=0,
                  timestamp=ts, on_delivery=lambda e, m: acked.append((e, m.offset(), m.timestamp())))
        if i % per_flush == per_flush - 1:
            p.flush(30)  # several batches of several records each
    assert p.flush(30) == 0
    assert all(e is None for e, _, _ in acked), acked[:3]
    return acked


@pytest.mark.timeout(300)
def test_list_offsets_by_timestamp_across_segments(broker, topic_name):
    n = 350  # ~3.5 MiB with 1 MiB segments: several segments, several time-index entries
    create_topic(broker.bootstrap, topic_name, 1, config={"segment.bytes": str(1024 * 1024), **KEEP})
    stamps = [T0 + 10 * i for i in range(n)]
    acked = _produce_timestamped(broker.bootstrap, topic_name, stamps)
    assert [o for _, o, _ in acked] == list(range(n))
    assert all(ts == (1, stamps[o]) for _, o, ts in acked), "CreateTime timestamps must be kept"

    # this broker holds only this topic: every 20-digit segment file is its
    segs = sorted(s for s in broker.data_dir.rglob("*.log") if re.fullmatch(r"\d{20}\.log", s.name))
    assert len(segs) >= 3, f"expected several 1 MiB segments, found {[str(s) for s in segs]}"

    a = admin(broker.bootstrap)

    def check_all():
        for i in (0, 1, 6, 7, 8, 100, 101, 199, 200, 298, n - 2, n - 1):
            # exact timestamp -> that record; just after -> the next one
            assert _offsets_for_time(broker.bootstrap, topic_name, 0, stamps[i]) == i, i
            exp_next = i + 1 if i + 1 < n else -1
            assert _offsets_for_time(broker.bootstrap, topic_name, 0, stamps[i] + 5) == exp_next, i
            res = _list_offset(a, topic_name, 0, OffsetSpec.for_timestamp(stamps[i]))
            assert (res.offset, res.timestamp) == (i, stamps[i])
        assert _offsets_for_time(broker.bootstrap, topic_name, 0, T0 - 100_000) == 0
        # nothing at or after the target: offset -1 (librdkafka's OFFSET_END)
        assert _offsets_for_time(broker.bootstrap, topic_name, 0, stamps[-1] + 1) == -1
        assert _list_offset(a, topic_name, 0, OffsetSpec.earliest()).offset == 0
        assert _list_offset(a, topic_name, 0, OffsetSpec.latest()).offset == n

    check_all()
    # the time index survives a crash (recovered or rebuilt on start)
    broker.kill()
    broker.restart()
    a = admin(broker.bootstrap)
    check_all()


def test_list_offsets_by_timestamp_out_of_order(broker, topic_name):
    """The answer is the first offset whose timestamp is >= the target, even
    when timestamps are not monotonic (Kafka's semantics)."""
    create_topic(broker.bootstrap, topic_name, 1, config=KEEP)
    stamps = [T0 + 100, T0 + 300, T0 + 200, T0 + 400, T0 + 50, T0 + 500]
    _produce_timestamped(broker.bootstrap, topic_name, stamps, value_size=10, per_flush=2)
    expect = {T0: 0, T0 + 100: 0, T0 + 150: 1, T0 + 250: 1, T0 + 300: 1, T0 + 350: 3,
              T0 + 450: 5, T0 + 500: 5, T0 + 501: -1}
    got = {ts: _offsets_for_time(broker.bootstrap, topic_name, 0, ts) for ts in expect}
    assert got == expect


def test_list_offsets_max_timestamp(broker, topic_name):
    """ListOffsets v7+ MAX_TIMESTAMP (-3): the offset of the record with the
    largest timestamp. Required only if v7+ is advertised."""
    lo, hi = _advertised(broker.bootstrap, kw.LIST_OFFSETS)
    if hi < 7:
        pytest.skip(f"ListOffsets advertised up to v{hi}: MAX_TIMESTAMP not offered")
    create_topic(broker.bootstrap, topic_name, 1, config=KEEP)
    stamps = [T0 + 100, T0 + 900, T0 + 200, T0 + 300]
    _produce_timestamped(broker.bootstrap, topic_name, stamps, value_size=10, per_flush=2)
    res = _list_offset(admin(broker.bootstrap), topic_name, 0, OffsetSpec.max_timestamp())
    assert (res.offset, res.timestamp) == (1, T0 + 900)


def test_latest_is_high_watermark(kafka, topic_name):
    """latest = the next offset to be written, not the last batch's base offset + 1."""
    create_topic(kafka.bootstrap, topic_name, 2)
    p = producer(kafka.bootstrap, **{"linger.ms": 200})
    for i in range(10):  # one batch of 10 records
        p.produce(topic_name, value=b"x%d" % i, partition=0)
    assert p.flush(30) == 0
    a = admin(kafka.bootstrap)
    assert _list_offset(a, topic_name, 0, OffsetSpec.latest()).offset == 10
    assert _list_offset(a, topic_name, 0, OffsetSpec.earliest()).offset == 0
    assert watermarks(kafka.bootstrap, topic_name, 0) == (0, 10)
    # empty partition: earliest == latest == 0
    assert _list_offset(a, topic_name, 1, OffsetSpec.latest()).offset == 0
    assert _list_offset(a, topic_name, 1, OffsetSpec.earliest()).offset == 0
    # the raw Fetch high watermark agrees
    with kw.Connection.to(kafka.leader_bootstrap(topic_name, 0)) as c:
        resp = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=0)
    assert resp.partitions[0].high_watermark == 10
    assert resp.partitions[0].log_start_offset == 0


def test_delete_records_moves_earliest(kafka, topic_name):
    create_topic(kafka.bootstrap, topic_name, 1)
    p = producer(kafka.bootstrap, **{"linger.ms": 0})
    for i in range(100):
        p.produce(topic_name, key=b"%d" % i, value=b"v%d" % i, partition=0)
        if i % 10 == 9:
            p.flush(30)
    assert p.flush(30) == 0
    a = admin(kafka.bootstrap)

    def delete(off):
        tp = TopicPartition(topic_name, 0, off)
        return a.delete_records([tp], operation_timeout=30, request_timeout=30)[tp].result(30)

    assert delete(45).low_watermark == 45  # inside a batch
    assert watermarks(kafka.bootstrap, topic_name, 0) == (45, 100)
    assert _list_offset(a, topic_name, 0, OffsetSpec.earliest()).offset == 45
    assert _list_offset(a, topic_name, 0, OffsetSpec.latest()).offset == 100

    # consuming from the beginning starts at the new log start offset
    c = consumer(kafka.bootstrap)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                first = m
        assert first is not None and first.offset() == 45 and first.value() == b"v45"
    finally:
        c.close()
    msgs = consume_range(kafka.bootstrap, topic_name, {0: (45, 100)})[0]
    assert [m.value() for m in msgs] == [b"v%d" % i for i in range(45, 100)]

    # a fetch below the log start offset is OFFSET_OUT_OF_RANGE
    with kw.Connection.to(kafka.leader_bootstrap(topic_name, 0)) as conn:
        resp = kw.fetch(conn, 12, topic_name, [(0, 10)], max_wait_ms=0)
        assert resp.partitions[0].error_code == kw.OFFSET_OUT_OF_RANGE
        assert resp.partitions[0].log_start_offset == 45

    # going backwards is a no-op that reports the current low watermark
    assert delete(20).low_watermark == 45
    # beyond the high watermark is OFFSET_OUT_OF_RANGE
    with pytest.raises(KafkaException) as ei:
        delete(101)
    assert ei.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    # -1 means "up to the high watermark"
    assert delete(-1).low_watermark == 100
    assert watermarks(kafka.bootstrap, topic_name, 0) == (100, 100)

    # new records continue the offset sequence
    acked = []
    p.produce(topic_name, value=b"after", partition=0, on_delivery=lambda e, m: acked.append((e, m.offset())))
    assert p.flush(30) == 0
    assert acked == [(None, 100)]
    assert watermarks(kafka.bootstrap, topic_name, 0) == (100, 101)


def test_max_timestamp_found_in_the_bucket(broker_factory, topic_name):
    """MAX_TIMESTAMP on a tiered topic: the record with the largest timestamp has left the
    local disk (uploaded, then dropped by local.retention.bytes); the answer still names it."""
    b = broker_factory(env={"SEDIMENT_RETENTION_CHECK_INTERVAL_MS": "200", "SEDIMENT_MIN_SEGMENT_BYTES": str(64 * 1024)})
    create_topic(b.bootstrap, topic_name, 1, config={**KEEP, "segment.bytes": str(64 * 1024),
                                                     "local.retention.bytes": str(128 * 1024)})
    stamps = [T0 + i for i in range(60)]
    stamps[1] = T0 + 10**9
    _produce_timestamped(b.bootstrap, topic_name, stamps, value_size=10_000, per_flush=1)
    logs = b.data_dir / "logs" / f"{topic_name}-0"
    deadline = time.monotonic() + 60
    while min(int(p.stem) for p in logs.glob("*.log")) <= 1:
        assert time.monotonic() < deadline, "the first segments never left the local disk"
        time.sleep(0.2)
    res = _list_offset(admin(b.bootstrap), topic_name, 0, OffsetSpec.max_timestamp())
    assert (res.offset, res.timestamp) == (1, T0 + 10**9)
