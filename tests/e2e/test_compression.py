"""Every compression codec from every client: stored and served as produced
(the batch attributes on the wire keep the producer's codec), and readable by
the other clients (librdkafka sends raw snappy, kafka-python xerial-framed)."""

import json
import shutil
import subprocess

import pytest

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer, watermarks

CODECS = ["gzip", "snappy", "lz4", "zstd"]
N = 2000


def _value(i: int) -> bytes:
    # compressible, distinct
    return (f"record {i} " + "sediment settles in layers " * (1 + i % 5)).encode()


def _produce_confluent(bootstrap, topic, codec):
    p = producer(bootstrap, **{"compression.type": codec, "linger.ms": 50, "batch.num.messages": 500})
    acked = []
    for i in range(N):
        p.produce(topic, key=b"c%05d" % i, value=_value(i), partition=0, headers=[("i", str(i).encode())],
                  on_delivery=lambda e, m: acked.append((e, m.offset())))
    assert p.flush(60) == 0
    assert all(e is None for e, _ in acked), acked[:3]
    return [o for _, o in acked]


def _produce_kafka_python(bootstrap, topic, codec):
    from kafka import KafkaProducer
    from kafka import codec as kcodec

    available = {"gzip": kcodec.has_gzip, "snappy": kcodec.has_snappy, "lz4": kcodec.has_lz4,
                 "zstd": kcodec.has_zstd}
    assert available[codec](), f"kafka-python cannot {codec}: codec library missing from tests/requirements.txt"
    # kafka-python 3 enables idempotence by default; this suite covers the plain
    # producer path (idempotence has its own suite, test_idempotence.py)
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec, enable_idempotence=False,
                         linger_ms=50, batch_size=64 * 1024, request_timeout_ms=15000)
    futs = [prod.send(topic, key=b"c%05d" % i, value=_value(i), partition=0,
                      headers=[("i", str(i).encode())]) for i in range(N)]
    prod.flush(60)
    offs = [f.get(timeout=30).offset for f in futs]
    prod.close(10)
    return offs


def _produce_kcat(bootstrap, topic, codec):
    kcat = shutil.which("kcat")
    assert kcat, "kcat not installed"
    lines = "".join(f"c{i:05d}\t{_value(i).decode()}\n" for i in range(N))
    r = subprocess.run([kcat, "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K", "\t", "-z", codec,
                        "-X", "acks=all", "-X", "linger.ms=50"],
                       input=lines.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert "error" not in r.stderr.decode().lower(), r.stderr.decode()
    return list(range(N))


PRODUCERS = {"confluent": _produce_confluent, "kafka-python": _produce_kafka_python, "kcat": _produce_kcat}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", list(PRODUCERS))
def test_codec_round_trip(kafka, topic_name, client, codec):
    create_topic(kafka.bootstrap, topic_name, 1)
    offsets = PRODUCERS[client](kafka.bootstrap, topic_name, codec)
    assert offsets == list(range(N))
    assert watermarks(kafka.bootstrap, topic_name, 0) == (0, N)

    # on the wire: every batch keeps the producer's codec and a valid CRC
    with kw.Connection.to(kafka.leader_bootstrap(topic_name, 0)) as c:
        batches = kw.fetch_batches(c, topic_name, 0, 0, N)
    assert batches, "no batches fetched"
    assert all(b.crc_ok for b in batches), "served batch with a bad CRC-32C"
    # The CRC-32C covers the attributes, so a valid CRC proves the broker served
    # each batch's codec as the producer wrote it. Producers may still send a
    # batch uncompressed when compression would not shrink it (librdkafka does
    # for small batches under load), so: only the chosen codec or none, and the
    # bulk of the records compressed.
    want = kw.CODEC_IDS[codec]
    codecs = {b.compression for b in batches}
    assert codecs <= {want, 0}, f"batches served with codecs {codecs}, produced as {codec}"
    compressed = sum(b.records_count for b in batches if b.compression == want)
    assert compressed >= 0.9 * N, f"only {compressed}/{N} records in {codec} batches"
    assert [b.base_offset for b in batches][0] == 0
    assert batches[-1].last_offset == N - 1
    for prev, nxt in zip(batches, batches[1:]):
        assert nxt.base_offset == prev.last_offset + 1, "gap or overlap between batches"

    # librdkafka reads them
    msgs = consume_range(kafka.bootstrap, topic_name, {0: (0, N)})[0]
    assert [m.offset() for m in msgs] == list(range(N))
    for i, m in enumerate(msgs):
        assert m.key() == b"c%05d" % i
        assert m.value() == _value(i)

    # kafka-python reads them
    from kafka import KafkaConsumer, TopicPartition as KTP
    cons = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=20000, check_crcs=True)
    cons.assign([KTP(topic_name, 0)])
    got = []
    for rec in cons:
        got.append(rec)
        if len(got) == N:
            break
    cons.close()
    assert [(r.offset, r.key, r.value) for r in got] == [(i, b"c%05d" % i, _value(i)) for i in range(N)]

    # kcat (librdkafka 2.0.2) reads them
    kcat = shutil.which("kcat")
    r = subprocess.run([kcat, "-b", kafka.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e",
                        "-J", "-q"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    recs = [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]
    assert [(x["offset"], x["payload"]) for x in recs] == [(i, _value(i).decode()) for i in range(N)]
