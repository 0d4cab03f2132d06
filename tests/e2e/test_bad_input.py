"""Bad input gets the Kafka-correct answer (an error code, or a closed
connection where Kafka closes it), while a second client keeps producing and
consuming and nothing already written is lost.

Kafka's own behaviour, which these tests hold the broker to:
  * a frame it cannot parse (garbage, truncated header or body, negative or
    oversized length > socket.request.max.bytes): the connection is closed,
    without allocating the announced size;
  * an unknown API key or an unsupported version of an API other than
    ApiVersions: the request cannot be decoded, Kafka closes the connection; a
    broker may instead answer with the same correlation id and keep the
    connection, which clients also survive (both are accepted, hanging is not);
  * ApiVersions at an unsupported version: UNSUPPORTED_VERSION in the v0
    format (tests in test_api_versions.py);
  * a record batch with a wrong CRC or broken framing: CORRUPT_MESSAGE (2);
  * a batch larger than max.message.bytes: MESSAGE_TOO_LARGE (10).
"""

import random
import struct
import time

import pytest
from confluent_kafka import KafkaError

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import Witness, consume_range, create_topic, producer, seed_over_the_wire, watermarks


@pytest.fixture
def witness(broker):
    w = Witness(broker.bootstrap).start()
    time.sleep(0.3)  # let it get going before the misbehaviour
    yield w
    w.close()  # stops its threads if the test failed before check()


def _alive(broker):
    with kw.Connection.to(broker.bootstrap, timeout=10) as c:
        assert kw.API_VERSIONS in kw.api_versions(c)


def _expect_closed(conn, what, timeout=10.0):
    try:
        conn.wait_closed(timeout)
    except TimeoutError:
        pytest.fail(f"{what}: broker kept the connection open (Kafka closes it)")


def _closed_or_answered(conn, corr_payload_corr: int, what: str) -> str:
    """Either the broker closes the connection, or it answers with the request's
    correlation id and the connection stays usable. Anything else (a hang, a
    wrong correlation id) fails."""
    try:
        resp = conn.recv_frame(timeout=10)
    except kw.ConnectionClosed:
        return "closed"
    except OSError as e:
        pytest.fail(f"{what}: {e!r}")
    except TimeoutError:
        pytest.fail(f"{what}: no answer and no close within 10 s")
    (corr,) = struct.unpack(">i", resp[:4])
    assert corr == corr_payload_corr, f"{what}: answered with correlation id {corr}"
    # the connection must still work
    assert kw.API_VERSIONS in kw.api_versions(conn)
    return "answered"


GARBAGE = {
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301012c010001280303") + bytes(range(32)) + b"\x00" * 64,
    "negative-length": struct.pack(">i", -1) + b"\x00" * 32,
    "zero-length": struct.pack(">i", 0),
    "frame-shorter-than-header": kw.frame(b"\x00\x03\x00"),
    "truncated-client-id": kw.frame(struct.pack(">hhih", kw.METADATA, 8, 7, 500) + b"abcd"),
    "truncated-body": kw.frame(kw.request_header(kw.METADATA, 8, 7) + struct.pack(">i", 0x7FFFFFFF) + b"\x00\x05to"),
    "truncated-flexible-body": kw.frame(
        kw.request_header(kw.PRODUCE, 9, 7, flexible=True) + b"\x00\xff\xff\x00\x00\x27\x10\xff\xff\xff\xff\x0f"),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_closes_the_connection(broker, witness, kind):
    with kw.Connection.to(broker.bootstrap) as c:
        c.send_raw(GARBAGE[kind])
        _expect_closed(c, kind)
    _alive(broker)
    witness.check()


@pytest.mark.parametrize("length", [200 * 1024 * 1024, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0],
                         ids=["200MiB", "2GiB-1", "2GiB", "4GiB-16"])
def test_huge_frame_length_closes_without_allocating(broker, witness, length):
    rss_before = broker.rss_bytes()
    with kw.Connection.to(broker.bootstrap) as c:
        c.send_raw(struct.pack(">I", length) + kw.request_header(kw.METADATA, 8, 1) + b"\x00" * 1000)
        _expect_closed(c, f"frame length {length}")
    rss_after = broker.rss_bytes()
    assert rss_after - rss_before < 64 * 1024 * 1024, (
        f"broker RSS grew from {rss_before >> 20} MiB to {rss_after >> 20} MiB on a {length}-byte frame header"
    )
    _alive(broker)
    witness.check()


@pytest.mark.parametrize("api_key", [9999, 32767, -1, 1000])
def test_unknown_api_key(broker, witness, api_key):
    with kw.Connection.to(broker.bootstrap) as c:
        c.send_frame(kw.request_header(api_key, 0, 4242) + b"\x00" * 16)
        _closed_or_answered(c, 4242, f"api key {api_key}")
    _alive(broker)
    witness.check()


@pytest.mark.parametrize("api", [kw.PRODUCE, kw.FETCH, kw.METADATA, kw.LIST_OFFSETS, kw.CREATE_TOPICS])
def test_unsupported_version(broker, witness, api):
    with kw.Connection.to(broker.bootstrap) as c:
        lo, hi = kw.api_versions(c)[api]
    for version in (hi + 1, 999):
        with kw.Connection.to(broker.bootstrap) as c:
            c.send_frame(kw.request_header(api, version, 4343, flexible=True) + b"\x00" * 16)
            _closed_or_answered(c, 4343, f"api {api} v{version}")
    _alive(broker)
    witness.check()


def _seed(broker, topic, n=5):
    seed_over_the_wire(broker.bootstrap, topic, n)


def _check_seed(broker, topic, n=5, extra=()):
    assert watermarks(broker.bootstrap, topic, 0) == (0, n + len(extra))
    msgs = consume_range(broker.bootstrap, topic, {0: (0, n + len(extra))})[0]
    assert [m.value() for m in msgs] == [b"seed-value-%d" % i for i in range(n)] + list(extra)


GOOD_BAD = kw.Record(b"bad", b"must-not-be-stored" * 10)


def _bad_batch(kind: str) -> bytes:
    good = kw.build_record_batch([GOOD_BAD])
    if kind == "bad-crc":
        return kw.build_record_batch([GOOD_BAD], corrupt_crc=True)
    if kind == "flipped-payload-bit":
        b = bytearray(good)
        b[-5] ^= 0x01  # the CRC no longer matches the records
        return bytes(b)
    if kind == "length-too-long":
        b = bytearray(good)
        struct.pack_into(">i", b, 8, len(good) - 12 + 100)
        return bytes(b)
    if kind == "two-batches":
        return good + good
    if kind == "empty-records":
        return b""
    if kind == "trailing-partial-batch":
        return good + good[:30]
    raise ValueError(kind)


# What Apache Kafka answers (ProduceRequest.validateRecords, LogValidator):
#   bad-crc, flipped-payload-bit  CORRUPT_MESSAGE (2)
#   length-too-long               no complete batch -> INVALID_RECORD (87);
#                                 CORRUPT_MESSAGE is as good an answer
#   two-batches, empty-records    INVALID_RECORD (87): v3+ allows exactly one batch
#   trailing-partial-batch        Kafka's batch iterator stops at the partial tail,
#                                 stores the complete batch and trims the rest; a
#                                 rejection (2 or 87) is also safe
EXPECTED = {
    "bad-crc": {kw.CORRUPT_MESSAGE},
    "flipped-payload-bit": {kw.CORRUPT_MESSAGE},
    "length-too-long": {kw.INVALID_RECORD, kw.CORRUPT_MESSAGE},
    "two-batches": {kw.INVALID_RECORD},
    "empty-records": {kw.INVALID_RECORD},
    "trailing-partial-batch": {kw.NONE, kw.INVALID_RECORD, kw.CORRUPT_MESSAGE},
}


@pytest.mark.parametrize("produce_version", [7, 8, 9])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_corrupt_batch_is_rejected(broker, witness, topic_name, produce_version, kind):
    _seed(broker, topic_name)
    stored = []
    with kw.Connection.to(broker.bootstrap) as c:
        r = kw.produce(c, produce_version, topic_name, 0, _bad_batch(kind))
        assert r.error_code in EXPECTED[kind], r
        if r.error_code == kw.NONE:  # Kafka's trim of a partial trailing batch
            assert r.base_offset == 5
            stored = [GOOD_BAD.value]
        # the same connection keeps working, and offsets continue without a gap
        ok = kw.build_record_batch([kw.Record(b"after", b"after-value")])
        r = kw.produce(c, produce_version, topic_name, 0, ok)
        assert (r.error_code, r.base_offset) == (kw.NONE, 5 + len(stored))
    _check_seed(broker, topic_name, extra=stored + [b"after-value"])
    witness.check()


@pytest.mark.parametrize("produce_version", [7, 9])
def test_oversized_batch_is_message_too_large(broker, witness, topic_name, produce_version):
    limit = 10_000
    create_topic(broker.bootstrap, topic_name, 1, config={"max.message.bytes": str(limit)})
    with kw.Connection.to(broker.bootstrap) as c:
        small = kw.build_record_batch([kw.Record(b"s", b"v" * (limit // 2))])
        assert len(small) < limit
        r = kw.produce(c, produce_version, topic_name, 0, small)
        assert (r.error_code, r.base_offset) == (kw.NONE, 0)
        # one big record, and many small records adding up over the limit
        for big in (kw.build_record_batch([kw.Record(b"b", b"v" * (2 * limit))]),
                    kw.build_record_batch([kw.Record(b"m%d" % i, b"v" * 100) for i in range(200)])):
            assert len(big) > limit
            r = kw.produce(c, produce_version, topic_name, 0, big)
            assert r.error_code == kw.MESSAGE_TOO_LARGE, r
        r = kw.produce(c, produce_version, topic_name, 0, small)
        assert (r.error_code, r.base_offset) == (kw.NONE, 1)
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 2)

    # a real client gets the error in its delivery report
    p = producer(broker.bootstrap)
    res = []
    p.produce(topic_name, value=b"x" * (2 * limit), partition=0, on_delivery=lambda e, m: res.append(e))
    p.flush(30)
    assert len(res) == 1 and res[0] is not None and res[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, res
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 2)
    witness.check()


def test_produce_to_unknown_partition_and_bad_acks(broker, witness, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    b = kw.build_record_batch([kw.Record(b"k", b"v")])
    with kw.Connection.to(broker.bootstrap) as c:
        r = kw.produce(c, 9, topic_name, 5, b)
        assert r.error_code == kw.UNKNOWN_TOPIC_OR_PARTITION
        r = kw.produce(c, 9, topic_name, 0, b, acks=2)
        assert r.error_code == kw.INVALID_REQUIRED_ACKS
        r = kw.produce(c, 9, topic_name, 0, b)
        assert (r.error_code, r.base_offset) == (kw.NONE, 0)
    witness.check()


def test_random_frames_do_not_hurt_the_broker(broker, witness):
    """A fuzz-style burst: 300 seeded random frames (random API key and version
    among the advertised ones, random body) on fresh connections. Each is
    answered or closed, never hangs; the broker and the witness carry on.
    Produce and Fetch are left out: a random body may legitimately ask for no
    answer (acks=0) or for a very long wait (max_wait_ms)."""
    rng = random.Random(20240611)
    with kw.Connection.to(broker.bootstrap) as c:
        apis = kw.api_versions(c)
    keys = sorted(k for k in apis if k not in (kw.PRODUCE, kw.FETCH))
    outcomes = {"closed": 0, "answered": 0}
    for i in range(300):
        key = rng.choice(keys)
        lo, hi = apis[key]
        version = rng.randint(lo, hi)
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        flexible = rng.random() < 0.5
        what = f"frame {i}: api {key} v{version} flexible={flexible} body={body.hex()}"
        with kw.Connection.to(broker.bootstrap) as c:
            c.send_frame(kw.request_header(key, version, 5000 + i, flexible=flexible) + body)
            outcomes[_closed_or_answered(c, 5000 + i, what)] += 1
        time.sleep(0.01)
        if not broker.running():
            pytest.fail(f"the broker died on {what}")
    _alive(broker)
    witness.check()
    assert sum(outcomes.values()) == 300
