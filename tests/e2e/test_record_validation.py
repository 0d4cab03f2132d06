"""Produce validation reads every record, as Apache Kafka's log validator does.

A batch whose CRC is right can still lie beneath it: a records_count that does
not match the records, a record section of random bytes, a compression bomb, a
control or transactional batch from a client outside any transaction. Each is
refused with the code Kafka answers (INVALID_RECORD, naming the record in
record_errors; INVALID_TXN_STATE for a transactional batch), nothing is stored,
and the partition keeps taking and serving good records.

A batch stored before this validation (or accepted by `batch_validation =
relaxed`, which trusts what is inside the compression) is served around: a
timestamp lookup that reaches it answers without decoding it, and the broker
stays up across restarts.
"""

import struct
import time
import zlib

import pytest
from confluent_kafka import TopicPartition

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import Witness, consume_range, consumer, create_topic, seed_over_the_wire, watermarks


@pytest.fixture
def witness(broker):
    w = Witness(broker.bootstrap).start()
    time.sleep(0.3)
    yield w
    w.close()


def _seed(broker, topic, n=5):
    seed_over_the_wire(broker.bootstrap, topic, n)


def _still_serves(broker, topic, n=5, after=b"after-value"):
    """A good batch after the refusal lands at offset n, and every record reads back."""
    with kw.Connection.to(broker.bootstrap) as c:
        r = kw.produce(c, 9, topic, 0, kw.build_record_batch([kw.Record(b"after", after)]))
        assert (r.error_code, r.base_offset) == (kw.NONE, n), r
    assert watermarks(broker.bootstrap, topic, 0) == (0, n + 1)
    msgs = consume_range(broker.bootstrap, topic, {0: (0, n + 1)})[0]
    assert [m.value() for m in msgs] == [b"seed-value-%d" % i for i in range(n)] + [after]


def _offsets_for_times(broker, topic, ts):
    c = consumer(broker.bootstrap)
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)
        return tp
    finally:
        c.close()


GOOD = kw.Record(b"k", b"v" * 40)


def _good():
    return kw.build_record_batch([GOOD])


def _gzip_batch(record_bytes: bytes, records_count: int, last_offset_delta: int) -> bytes:
    body = zlib.compressobj(wbits=31)
    data = body.compress(record_bytes) + body.flush()
    return kw.forge_batch(_good(), body=data, attributes=kw.COMPRESSION_GZIP,
                          records_count=records_count, last_offset_delta=last_offset_delta)


def _gzip_bomb(inflated: int) -> bytes:
    """One record whose value is `inflated` zero bytes, gzip-compressed in
    pieces (the whole never sits in this process's memory)."""
    prefix = kw.Writer().int8(0).varint(0).varint(0).varint(-1).varint(inflated).getvalue()
    suffix = kw.Writer().varint(0).getvalue()
    length = kw.Writer().varint(len(prefix) + inflated + len(suffix)).getvalue()
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(length + prefix)]
    chunk = bytes(1 << 20)
    for _ in range(inflated >> 20):
        out.append(z.compress(chunk))
    out.append(z.compress(suffix))
    out.append(z.flush())
    return kw.forge_batch(_good(), body=b"".join(out), attributes=kw.COMPRESSION_GZIP,
                          records_count=1, last_offset_delta=0)


def _forged(kind: str) -> bytes:
    good = _good()
    if kind == "count-2^31-1":
        # the report: one real record, a count and delta that move the log end by 2^31
        return kw.forge_batch(good, records_count=2**31 - 1, last_offset_delta=2**31 - 2)
    if kind == "count-2":
        return kw.forge_batch(good, records_count=2, last_offset_delta=1)
    if kind == "count-short":
        two = kw.build_record_batch([GOOD, GOOD])
        return kw.forge_batch(two, records_count=1, last_offset_delta=0)
    if kind == "random-body":
        import random
        rng = random.Random(7)
        return kw.forge_batch(good, body=bytes(rng.getrandbits(8) for _ in range(200)))
    if kind == "offset-delta-gap":
        gap = kw.build_record_batch([GOOD, kw.Record(b"k2", b"v2", offset_delta=5)])
        return kw.forge_batch(gap, last_offset_delta=1)
    if kind == "gzip-forged-count":
        return _gzip_batch(kw.encode_record(GOOD, 0), 1000, 999)
    if kind == "gzip-garbage":
        return kw.forge_batch(good, body=b"\x1f\x8b\x08\x00" + bytes(range(60)), attributes=kw.COMPRESSION_GZIP)
    raise ValueError(kind)


# (Kafka's answer, the record_errors batch_index it names, or None)
FORGED = {
    "count-2^31-1": (kw.INVALID_RECORD, 1),
    "count-2": (kw.INVALID_RECORD, 1),
    "count-short": (kw.INVALID_RECORD, 1),
    "random-body": (kw.INVALID_RECORD, 0),
    "offset-delta-gap": (kw.INVALID_RECORD, 1),
    "gzip-forged-count": (kw.INVALID_RECORD, 1),
    "gzip-garbage": (kw.CORRUPT_MESSAGE, None),
}


@pytest.mark.parametrize("kind", list(FORGED))
def test_a_batch_that_lies_under_its_crc_is_refused(broker, witness, topic_name, kind):
    _seed(broker, topic_name)
    code, index = FORGED[kind]
    with kw.Connection.to(broker.bootstrap) as c:
        r = kw.produce(c, 9, topic_name, 0, _forged(kind))
    assert r.error_code == code, r
    if index is not None:
        assert [e[0] for e in r.record_errors] == [index], r
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 5), "nothing of the refused batch is stored"
    # a timestamp lookup over the partition still works (it aborted the broker before)
    tp = _offsets_for_times(broker, topic_name, 0)
    assert (tp.error.code() if tp.error else 0, tp.offset) == (0, 0)
    _still_serves(broker, topic_name)
    witness.check()


@pytest.mark.parametrize("attributes,code", [(0x20, kw.INVALID_RECORD), (0x10, kw.INVALID_TXN_STATE)],
                         ids=["control", "transactional"])
def test_control_and_transactional_batches_from_clients_are_refused(broker, topic_name, attributes, code):
    _seed(broker, topic_name)
    with kw.Connection.to(broker.bootstrap) as c:
        b = kw.build_record_batch([GOOD], producer_id=-1, attributes=attributes)
        r = kw.produce(c, 9, topic_name, 0, b)
    assert r.error_code == code, r
    _still_serves(broker, topic_name)


def test_a_compression_bomb_is_refused_within_bounded_memory(broker, witness, topic_name):
    _seed(broker, topic_name)
    bomb = _gzip_bomb(400 << 20)  # 400 MiB of zeros in well under 1 MiB
    assert len(bomb) < 1 << 20, len(bomb)
    rss_before = broker.rss_bytes()
    with kw.Connection.to(broker.bootstrap, timeout=60) as c:
        r = kw.produce(c, 9, topic_name, 0, bomb, timeout=60)
    assert r.error_code == kw.INVALID_RECORD, r
    assert "inflate" in (r.error_message or ""), r
    grew = broker.rss_bytes() - rss_before
    assert grew < 64 << 20, f"broker RSS grew {grew >> 20} MiB walking a compressed batch"
    # a bomb under the cap is a valid batch: stored, byte counts intact
    ok = _gzip_bomb(8 << 20)
    with kw.Connection.to(broker.bootstrap, timeout=60) as c:
        r = kw.produce(c, 9, topic_name, 0, ok, timeout=60)
    assert (r.error_code, r.base_offset) == (kw.NONE, 5), r
    msgs = consume_range(broker.bootstrap, topic_name, {0: (5, 6)})[0]
    assert len(msgs[0].value()) == 8 << 20 and not any(msgs[0].value()[:4096])
    witness.check()


def test_the_header_max_timestamp_is_replaced_by_the_records_own(broker, topic_name):
    """Kafka rewrites a batch's max timestamp from its records, so a lookup by
    timestamp finds a record whose batch header understated it."""
    create_topic(broker.bootstrap, topic_name, 1)
    base = int(time.time() * 1000) - 60_000
    records = [kw.Record(b"k%d" % i, b"v%d" % i, timestamp_delta=i * 1000) for i in range(5)]
    b = bytearray(kw.build_record_batch(records, base_timestamp=base))
    struct.pack_into(">q", b, 35, base)  # header claims max = base; the records reach base + 4 s
    b = kw.forge_batch(bytes(b))
    with kw.Connection.to(broker.bootstrap) as c:
        assert kw.produce(c, 9, topic_name, 0, b).error_code == kw.NONE
    tp = _offsets_for_times(broker, topic_name, base + 3000)
    assert tp.offset == 3, tp


def test_a_bad_batch_already_stored_is_served_around(broker_factory, topic_name):
    """`batch_validation = relaxed` takes a compressed batch on its header: a
    forged count inside gzip is stored as the report found it (the log end moves
    by 2^31). A timestamp lookup that reaches it answers from the batch header,
    counts it in sediment_unreadable_batches_total, and the broker stays up,
    also after a restart."""
    from sediment_harness.metrics import scrape, val
    broker = broker_factory(env={"SEDIMENT_BATCH_VALIDATION": "relaxed"})
    create_topic(broker.bootstrap, topic_name, 1)
    now = int(time.time() * 1000)
    with kw.Connection.to(broker.bootstrap) as c:
        old = kw.build_record_batch([kw.Record(b"old", b"old-value")], base_timestamp=now - 3_600_000)
        assert kw.produce(c, 9, topic_name, 0, old).error_code == kw.NONE
        forged = bytearray(_gzip_batch(kw.encode_record(GOOD, 0), 2**31 - 1, 2**31 - 2))
        # its header claims a later record than the one it holds, so a lookup walks past it
        struct.pack_into(">q", forged, 35, now + 60_000)
        r = kw.produce(c, 9, topic_name, 0, kw.forge_batch(bytes(forged)))
    assert (r.error_code, r.base_offset) == (kw.NONE, 1), r
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 1 + 2**31 - 1)
    before = val(scrape(broker)[1], "sediment_unreadable_batches_total")
    for attempt in range(2):
        assert _offsets_for_times(broker, topic_name, 0).offset == 0
        # at its one real record: found without reading further
        assert _offsets_for_times(broker, topic_name, now - 60_000).offset == 1
        # past that record, under the header's max: the walk meets the forged count and the
        # answer falls back to the batch's first offset
        assert _offsets_for_times(broker, topic_name, now + 30_000).offset == 1
        assert _offsets_for_times(broker, topic_name, now + 3_600_000).offset == -1
        assert broker.running()
        if attempt == 0:
            broker.restart()
    # the counter restarted with the broker; the second round's lookup counted again
    assert val(scrape(broker)[1], "sediment_unreadable_batches_total") >= 1, before


def test_replicated_partitions_validate_and_answer_log_append_time(cluster_factory, topic_name):
    """The same door on an RF=3 partition: a forged count is refused and never
    replicated, and a LogAppendTime topic answers the append time the leader
    stamped into the batch (it answered -1 when replicated)."""
    c = cluster_factory(3)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3,
                 config={"message.timestamp.type": "LogAppendTime"})
    leader = c.node(c.leader(topic_name, 0))
    before = int(time.time() * 1000)
    with kw.Connection.to(leader.bootstrap) as conn:
        r = kw.produce(conn, 9, topic_name, 0, _forged("count-2^31-1"))
        assert (r.error_code, [e[0] for e in r.record_errors]) == (kw.INVALID_RECORD, [1]), r
        r = kw.produce(conn, 9, topic_name, 0, kw.build_record_batch([GOOD], base_timestamp=1_000))
        assert (r.error_code, r.base_offset) == (kw.NONE, 0), r
    after = int(time.time() * 1000)
    assert before <= r.log_append_time_ms <= after, r
    assert watermarks(c.bootstrap, topic_name, 0, timeout=30) == (0, 1)
    [m] = consume_range(c.bootstrap, topic_name, {0: (0, 1)}, timeout=60)[0]
    assert m.timestamp()[1] == r.log_append_time_ms, m.timestamp()
