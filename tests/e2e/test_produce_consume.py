"""Produce and consume with real clients: confluent-kafka (librdkafka 2.16),
kafka-python 3.0 and kcat (librdkafka 2.0.2), verifying every key, value,
header and offset."""

import hashlib
import json
import shutil
import subprocess
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from sediment_harness.clients import consume_range, create_topic, producer, watermarks

N_BIG = 100_000


def _value(i: int) -> bytes:
    """Deterministic payload of 0..255 bytes (some empty) for record i."""
    h = hashlib.blake2b(str(i).encode(), digest_size=32).digest()
    n = h[0] if i % 97 else 0
    return (h * 8)[:n]


def _headers(i: int):
    if i % 7 == 0:
        return []
    hs = [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second")]
    if i % 5 == 0:
        hs.append(("null-value", None))
    if i % 3 == 0:
        hs.append(("bin", bytes(range(i % 256)) ))
    return hs


def _headers_kp(i: int):
    """kafka-python cannot send a header with a null value."""
    return [(k, v) for k, v in _headers(i) if v is not None]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_100k_keyed_records_with_headers_three_partitions(kafka, topic_name):
    create_topic(kafka.bootstrap, topic_name, 3)
    p = producer(kafka.bootstrap, **{
        "linger.ms": 20,
        "batch.num.messages": 5000,
        "queue.buffering.max.messages": 2 * N_BIG,
        "compression.type": "none",
    })
    delivered = [None] * N_BIG
    errors = []

    def cb(err, msg):
        i = int(msg.key()[4:])
        if err is not None:
            errors.append((i, err))
        else:
            delivered[i] = (msg.partition(), msg.offset())

    t0 = int(time.time() * 1000)
    for i in range(N_BIG):
        p.produce(topic_name, key=b"key-%06d" % i, value=_value(i), headers=_headers(i), on_delivery=cb)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0, "producer did not drain"
    t1 = int(time.time() * 1000)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    assert all(d is not None for d in delivered)

    per_part: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    for i, (part, off) in enumerate(delivered):
        per_part[part].append((off, i))
    for part, lst in per_part.items():
        assert lst, f"partition {part} received nothing: keys should spread over 3 partitions"
        offs = sorted(o for o, _ in lst)
        assert offs == list(range(len(offs))), f"partition {part}: offsets not dense from 0"
        assert watermarks(kafka.bootstrap, topic_name, part) == (0, len(offs))

    got = consume_range(kafka.bootstrap, topic_name, {q: (0, len(v)) for q, v in per_part.items()},
                        timeout=300)
    seen = 0
    for part, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(len(per_part[part])))
        for m in msgs:
            i = int(m.key()[4:])
            assert delivered[i] == (part, m.offset()), f"key {i} at {part}/{m.offset()}, acked at {delivered[i]}"
            assert m.key() == b"key-%06d" % i
            assert (m.value() or b"") == _value(i), f"value of key {i}"
            assert (m.headers() or []) == _headers(i), f"headers of key {i}: {m.headers()}"
            ts_type, ts = m.timestamp()
            assert ts_type == TIMESTAMP_CREATE_TIME
            assert t0 - 1000 <= ts <= t1 + 1000
            seen += 1
    assert seen == N_BIG


def test_kafka_python_round_trip(kafka, topic_name):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    create_topic(kafka.bootstrap, topic_name, 3)
    n = 3000
    # kafka-python 3 enables idempotence by default; this suite covers the plain
    # producer path (idempotence has its own suite, test_idempotence.py)
    prod = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5, enable_idempotence=False,
                         request_timeout_ms=15000)
    futs = []
    for i in range(n):
        futs.append(prod.send(topic_name, key=b"kp-%05d" % i, value=_value(i), headers=_headers_kp(i)))
    prod.flush(60)
    meta = [f.get(timeout=30) for f in futs]
    prod.close(10)
    by_part: dict[int, list[int]] = {}
    for i, md in enumerate(meta):
        by_part.setdefault(md.partition, []).append(md.offset)
    assert sorted(by_part) == [0, 1, 2]
    for part, offs in by_part.items():
        assert sorted(offs) == list(range(len(offs)))

    # read back with kafka-python
    cons = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=20000, check_crcs=True)
    cons.assign([KTP(topic_name, q) for q in range(3)])
    got = {}
    for rec in cons:
        got[int(rec.key[3:])] = rec
        if len(got) == n:
            break
    cons.close()
    assert len(got) == n
    for i, md in enumerate(meta):
        rec = got[i]
        assert (rec.partition, rec.offset) == (md.partition, md.offset)
        assert rec.value == _value(i)
        assert [(k, v) for k, v in rec.headers] == _headers_kp(i)

    # and the same records with librdkafka
    msgs = consume_range(kafka.bootstrap, topic_name, {q: (0, len(o)) for q, o in by_part.items()})
    for part, lst in msgs.items():
        for m in lst:
            i = int(m.key()[3:])
            assert (meta[i].partition, meta[i].offset) == (part, m.offset())
            assert (m.value() or b"") == _value(i)
            assert (m.headers() or []) == _headers_kp(i)


def _kcat():
    path = shutil.which("kcat")
    if not path:
        pytest.fail("kcat not installed (tests/run.sh installs it with apt-get)")
    return path


def test_kcat_round_trip(kafka, topic_name):
    kcat = _kcat()
    create_topic(kafka.bootstrap, topic_name, 3)
    n = 500
    lines = "".join(f"kc-{i:04d}\tvalue {i} {'x' * (i % 50)}\n" for i in range(n))
    r = subprocess.run(
        [kcat, "-b", kafka.bootstrap, "-P", "-t", topic_name, "-K", "\t",
         "-H", "origin=kcat", "-H", "dup=1", "-H", "dup=2", "-X", "acks=all"],
        input=lines.encode(), capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()

    r = subprocess.run(
        [kcat, "-b", kafka.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-J", "-q",
         "-X", "check.crcs=true"],
        capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    recs = [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]
    assert len(recs) == n, r.stderr.decode()[-2000:]
    by_part: dict[int, list[int]] = {}
    for rec in recs:
        i = int(rec["key"][3:])
        assert rec["payload"] == f"value {i} {'x' * (i % 50)}"
        assert rec["headers"] == ["origin", "kcat", "dup", "1", "dup", "2"]
        by_part.setdefault(rec["partition"], []).append(rec["offset"])
    for part, offs in by_part.items():
        assert offs == list(range(len(offs))), f"partition {part} offsets"
        assert watermarks(kafka.bootstrap, topic_name, part) == (0, len(offs))
    assert sum(len(v) for v in by_part.values()) == n

    # metadata listing works with the old librdkafka too
    r = subprocess.run([kcat, "-b", kafka.bootstrap, "-L", "-t", topic_name, "-J"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    md = json.loads(r.stdout)
    assert sorted(b["id"] for b in md["brokers"]) == ([1] if kafka.broker else [1, 2, 3])
    (t,) = md["topics"]
    assert t["topic"] == topic_name and len(t["partitions"]) == 3


def test_null_keys_values_and_empty_records(kafka, topic_name):
    create_topic(kafka.bootstrap, topic_name, 1)
    p = producer(kafka.bootstrap)
    cases = [(None, None), (None, b"v"), (b"k", None), (b"", b""), (b"k2", b"\x00" * 1000)]
    acked = []
    for k, v in cases:
        p.produce(topic_name, key=k, value=v, partition=0, on_delivery=lambda e, m: acked.append((e, m.offset())))
    assert p.flush(30) == 0
    assert [a for a in acked] == [(None, i) for i in range(len(cases))]
    msgs = consume_range(kafka.bootstrap, topic_name, {0: (0, len(cases))})[0]
    assert [(m.key(), m.value()) for m in msgs] == cases
