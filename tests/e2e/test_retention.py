"""Segment rolling (segment.bytes, segment.ms) and retention (retention.bytes,
retention.ms by the records' timestamps), seen through the data dir and the
log start offset. Retention deletes whole sealed segments only, oldest first."""

import re
import time

from sediment_harness.clients import consume_range, create_topic, producer, watermarks

MiB = 1024 * 1024
VALUE = 10_000


def _segments(broker, topic):
    """The topic's segment files (it has one partition)."""
    return sorted(s for s in (broker.data_dir / "logs" / f"{topic}-0").glob("*.log") if re.fullmatch(r"\d{20}\.log", s.name))


def _produce(bootstrap, topic, n, start=0, timestamp=None):
    p = producer(bootstrap, **{"linger.ms": 20})
    errs = []
    for i in range(start, start + n):
        kw = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, key=b"%d" % i, value=bytes([i % 256]) * VALUE, partition=0,
                  on_delivery=lambda e, m: e and errs.append(e), **kw)
        if i % 20 == 19:
            p.flush(30)
    assert p.flush(30) == 0 and not errs, errs


def _wait_log_start_above(broker, topic, floor, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        lo, hi = watermarks(broker.bootstrap, topic, 0)
        if lo > floor:
            return lo, hi
        assert time.monotonic() < deadline, f"log start offset still {lo} after {timeout}s"
        time.sleep(0.3)


def _check_readable(broker, topic, lo, hi):
    msgs = consume_range(broker.bootstrap, topic, {0: (lo, hi)})[0]
    assert [m.offset() for m in msgs] == list(range(lo, hi))
    assert all(m.value() == bytes([int(m.key()) % 256]) * VALUE for m in msgs)


def test_segment_bytes_rolls_segments(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, config={"segment.bytes": str(MiB)})
    _produce(broker.bootstrap, topic_name, 400)  # ~4 MiB
    segs = _segments(broker, topic_name)
    assert 4 <= len(segs) <= 6, [s.name for s in segs]
    bases = [int(s.stem) for s in segs]
    assert bases[0] == 0 and bases == sorted(set(bases))
    # sealed segments stay within segment.bytes (a batch never spans two)
    assert all(s.stat().st_size <= MiB for s in segs[:-1]), [s.stat().st_size for s in segs]
    for s in segs:
        for ext in (".index", ".timeindex"):
            assert s.with_suffix(ext).exists(), f"{s.with_suffix(ext).name} missing"
    _check_readable(broker, topic_name, 0, 400)


def test_segment_ms_rolls_by_age(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, config={"segment.ms": "1000"})
    _produce(broker.bootstrap, topic_name, 2)
    time.sleep(1.5)
    _produce(broker.bootstrap, topic_name, 2, start=2)
    segs = _segments(broker, topic_name)
    assert len(segs) >= 2, [s.name for s in segs]
    _check_readable(broker, topic_name, 0, 4)


def test_retention_bytes_deletes_oldest_segments(broker_factory, topic_name):
    b = broker_factory(env={"SEDIMENT_RETENTION_CHECK_INTERVAL_MS": "200"})
    limit = int(1.5 * MiB)
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(MiB), "retention.bytes": str(limit)})
    _produce(b.bootstrap, topic_name, 450)  # ~4.5 MiB in 5 segments
    lo, hi = _wait_log_start_above(b, topic_name, 0)
    time.sleep(1.0)  # let retention finish its pass
    lo, hi = watermarks(b.bootstrap, topic_name, 0)
    assert hi == 450
    segs = _segments(b, topic_name)
    assert int(segs[0].stem) == lo, "the log start offset is the base of the oldest remaining segment"
    total = sum(s.stat().st_size for s in segs)
    assert total >= limit, f"retention deleted too much: {total} bytes left, retention.bytes={limit}"
    assert total - segs[0].stat().st_size < limit, (
        f"retention kept a segment it could delete: {total} bytes in {[s.name for s in segs]}"
    )
    _check_readable(b, topic_name, lo, hi)


def test_retention_ms_uses_record_timestamps(broker_factory, topic_name):
    b = broker_factory(env={"SEDIMENT_RETENTION_CHECK_INTERVAL_MS": "200"})
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(MiB), "retention.ms": str(86_400_000)})
    old = int(time.time() * 1000) - 10 * 86_400_000  # ten days ago, retention is one day
    _produce(b.bootstrap, topic_name, 250, timestamp=old)  # ~2.5 MiB of old records
    _produce(b.bootstrap, topic_name, 150, start=250)  # fresh ones
    lo, hi = _wait_log_start_above(b, topic_name, 0)
    assert hi == 400
    assert lo <= 250, f"fresh records deleted: log start {lo}"
    segs = _segments(b, topic_name)
    assert int(segs[0].stem) == lo
    _check_readable(b, topic_name, lo, hi)
