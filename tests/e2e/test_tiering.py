"""Tiered storage against real S3-compatible servers on loopback (moto, SeaweedFS, LocalStack):
sealed segments go to the bucket, local disk keeps only the hot tail, consumers read every
record from offset 0 byte for byte (cold, through the read-through cache, and again after a
restart with an empty cache). Faults: the bucket down under produce load, the local disk limit,
SIGKILL in the middle of an upload, objects deleted or damaged behind Sediment's back.

SEDIMENT_TIERING_MB sets the volume of the round-trip scenario (default 200 MiB; CI on a
small machine may use e.g. 64), SEDIMENT_S3_OUTAGE_S the length of the outage (default 20 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import admin, consumer, create_topic, producer, watermarks
from sediment_harness.s3.fixtures import localstack_session, s3_factory, s3_server  # noqa: F401

MiB = 1024 * 1024
VALUE = 16 * 1024
TOTAL_MB = int(os.environ.get("SEDIMENT_TIERING_MB", "200"))
OUTAGE_S = float(os.environ.get("SEDIMENT_S3_OUTAGE_S", "20"))
TS0 = 1_700_000_000_000  # record i has timestamp TS0 + i
PREFIX = "sediment"
ALL = ["moto", "seaweedfs", "localstack"]
RESTARTABLE = ["moto", "seaweedfs"]  # LocalStack is shared per session: not stopped by a test

pytestmark = pytest.mark.timeout(900)

SEG_RE = re.compile(r"/segments/(\d{20})-(\d{20})-(\d{10})\.seg$")


def payload(i: int, size: int = VALUE) -> bytes:
    block = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=64).digest()
    return (block * (size // 64 + 1))[:size]


def tiered_broker(broker_factory, s3, bucket, *, extra_args=(), env=None):
    e = dict(s3.env())
    e["SEDIMENT_RETENTION_CHECK_INTERVAL_MS"] = "500"
    e.update(env or {})
    return broker_factory(env=e, object_store=f"s3://{bucket}/{PREFIX}", extra_args=list(extra_args))


def tiered_topic(bootstrap, name, **extra):
    cfg = {"segment.bytes": str(MiB), "local.retention.bytes": str(2 * MiB), "retention.ms": "-1"}
    cfg.update({k.replace("_", "."): str(v) for k, v in extra.items()})
    create_topic(bootstrap, name, 1, config=cfg)


def produce(bootstrap, topic, start, n, size=VALUE, timeout=300, batch_size=900_000):
    p = producer(bootstrap, **{"linger.ms": 20, "batch.size": batch_size, "queue.buffering.max.kbytes": 512 * 1024,
                               "message.timeout.ms": 120_000})
    errs = []
    for i in range(start, start + n):
        while True:
            try:
                p.produce(topic, key=b"%d" % i, value=payload(i, size), partition=0, timestamp=TS0 + i,
                          on_delivery=lambda e, m: e and errs.append(e))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0 and not errs, f"{left} undelivered, errors: {errs[:5]}"


def segment_objects(s3, bucket, topic):
    """[(base, last, key, size)] of the topic's partition-0 segment objects, by base offset."""
    c = s3.client()
    out = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/topics/{topic}/"):
        for o in page.get("Contents", []):
            m = SEG_RE.search(o["Key"])
            if m and "/0/segments/" in o["Key"]:
                out.append((int(m.group(1)), int(m.group(2)), o["Key"], o["Size"]))
    return sorted(out)


def all_keys(s3, bucket, prefix=""):
    c = s3.client()
    keys = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def local_segments(broker, topic):
    d = broker.data_dir / "logs" / f"{topic}-0"
    out = []
    for p in d.glob("*.log"):
        if re.fullmatch(r"\d{20}", p.stem):
            try:
                out.append((int(p.stem), p.stat().st_size))
            except FileNotFoundError:  # local retention deleted it meanwhile
                pass
    return sorted(out)


def metric(broker, name):
    text = urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def bytes_queued_to(port):
    """Bytes on established loopback TCP connections to `port` that its server has not read
    yet (its receive queues) or that the clients could not send yet (their send queues)."""
    out = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        f = line.split()
        recv_q, send_q, local, peer = int(f[0]), int(f[1]), f[2], f[3]
        if local.endswith(f":{port}"):
            total += recv_q
        elif peer.endswith(f":{port}"):
            total += send_q
    return total


def read_counters(broker):
    """Cache hits and misses of cold reads, and ranged GETs sent to the bucket, so far."""
    text = urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=5).read().decode()
    out = {"hits": 0.0, "misses": 0.0, "get_range": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("sediment_cache_hits_total"):
            out["hits"] += float(value)
        elif name.startswith("sediment_cache_misses_total"):
            out["misses"] += float(value)
        elif name.startswith("sediment_object_store_requests_total") and 'op="get_range"' in name:
            out["get_range"] += float(value)
    return out


def counted(broker, fn):
    """Runs fn(); returns its result and how much each read counter grew meanwhile."""
    before = read_counters(broker)
    r = fn()
    after = read_counters(broker)
    return r, {k: after[k] - before[k] for k in before}


def wait_uploaded(broker, s3, bucket, topic, timeout=240.0):
    """Until every sealed local segment is in the bucket and the upload lag metric is zero."""
    deadline = time.monotonic() + timeout
    while True:
        segs = local_segments(broker, topic)
        objs = segment_objects(s3, bucket, topic)
        active_base = segs[-1][0] if segs else 0
        uploaded_end = objs[-1][1] + 1 if objs else 0
        lag = metric(broker, "sediment_tier_upload_lag_bytes")
        if uploaded_end >= active_base and lag == 0:
            return objs
        assert time.monotonic() < deadline, (
            f"uploads not done after {timeout}s: bucket ends at {uploaded_end}, active segment at {active_base}, lag {lag}"
        )
        time.sleep(0.5)


def check_contiguous(objs, start=0):
    assert objs, "no segment objects"
    assert objs[0][0] == start, f"first object starts at {objs[0][0]}, expected {start}"
    for (b0, l0, k0, _), (b1, _, k1, _) in zip(objs, objs[1:]):
        assert b1 == l0 + 1, f"gap or overlap between {k0} and {k1}"


def verify_range(bootstrap, topic, start, end, timeout=300.0, size=VALUE):
    """Consumes [start, end) with confluent-kafka and checks every record's offset, key,
    value and timestamp, streaming (nothing kept). Returns the elapsed seconds."""
    c = consumer(bootstrap, **{"fetch.max.bytes": 64 * MiB, "max.partition.fetch.bytes": 4 * MiB,
                               "queued.max.messages.kbytes": 256 * 1024})
    t0 = time.monotonic()
    expect = start
    errors = []
    try:
        c.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + timeout
        while expect < end:
            assert time.monotonic() < deadline, f"timed out at offset {expect} of [{start}, {end}); errors {errors[-3:]}"
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    errors.append(m.error())
                    assert not m.error().fatal(), m.error()
                    continue
                assert m.offset() == expect, f"offset {m.offset()}, expected {expect}"
                assert m.key() == b"%d" % expect, f"key at {expect}: {m.key()[:20]!r}"
                assert m.value() == payload(expect, size), f"value at offset {expect} differs"
                assert m.timestamp()[1] == TS0 + expect, f"timestamp at {expect}: {m.timestamp()}"
                expect += 1
                if expect >= end:
                    break
    finally:
        c.close()
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s3_server", ALL, indirect=True)
def test_round_trip_through_the_bucket(s3_server, broker_factory, topic_name):
    n = TOTAL_MB * MiB // VALUE
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket)
    tiered_topic(b.bootstrap, topic_name)
    t0 = time.monotonic()
    produce(b.bootstrap, topic_name, 0, n)
    produce_s = time.monotonic() - t0
    objs = wait_uploaded(b, s3_server, bucket, topic_name)

    # the bucket, through a plain S3 client
    check_contiguous(objs)
    segs = local_segments(b, topic_name)
    assert objs[-1][1] + 1 == segs[-1][0], "every sealed segment is uploaded"
    assert len(objs) >= TOTAL_MB - 4, f"{len(objs)} objects for {TOTAL_MB} MiB in 1 MiB segments"
    c = s3_server.client()
    for _, _, key, size in (objs[0], objs[len(objs) // 2], objs[-1]):
        tail = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - 96}-{size - 1}")["Body"].read()
        assert tail[:8] == b"SDMTSEG1", f"{key} has no segment footer"
    # the manifest mirror trails the uploads by at most a couple of seconds
    deadline = time.monotonic() + 30
    while True:
        keys = all_keys(s3_server, bucket, f"{PREFIX}/topics/{topic_name}/")
        roots = [k for k in keys if "/0/manifest/roots/" in k]
        assert 1 <= len(roots) <= 2, roots  # two only while a new root replaces the old one
        try:
            root = json.loads(c.get_object(Bucket=bucket, Key=roots[-1])["Body"].read())
            listed = root["tail"] + [e for ch in root["chunks"] for e in json.loads(
                c.get_object(Bucket=bucket, Key=f"{PREFIX}/{ch['key']}")["Body"].read())["entries"]]
        except c.exceptions.NoSuchKey:  # replaced between the listing and the read
            continue
        if len(roots) == 1 and sorted(e["base_offset"] for e in listed) == [o[0] for o in objs]:
            break
        assert time.monotonic() < deadline, f"the manifest root names {len(listed)} of {len(objs)} objects"
        time.sleep(0.5)
    assert root["log_start_offset"] == 0 and root["topic"] == topic_name
    metas = [k for k in keys if "/meta/" in k]
    assert len(metas) == 1, metas
    meta = json.loads(c.get_object(Bucket=bucket, Key=metas[0])["Body"].read())
    assert meta["name"] == topic_name and meta["partitions"] == 1
    assert meta["configs"]["local.retention.bytes"] == str(2 * MiB)

    # local disk: only the hot tail, once retention has run after the uploads committed (a
    # replicated partition deletes below the Raft snapshot it takes there)
    deadline = time.monotonic() + 30
    while True:
        segs = local_segments(b, topic_name)
        local_bytes = sum(s for _, s in segs)
        if local_bytes <= 4 * MiB or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert segs[0][0] > 0, "old segments left local disk"
    assert local_bytes <= 4 * MiB, f"{local_bytes} bytes on local disk, local.retention.bytes is 2 MiB"
    lo, hi = watermarks(b.bootstrap, topic_name, 0)
    assert (lo, hi) == (0, n), "earliest is the remote log start"

    # consume everything from offset 0 (cold: from the bucket), then by timestamp. Every object
    # below the local log start is read from the bucket: one chunk each (a segment is smaller
    # than a 4 MiB chunk), each chunk one cache miss and one ranged GET (the footer and indexes
    # one more); read again at once, every chunk is a cache hit and the bucket sees no GET
    remote_only = sum(1 for o in objs if o[0] < segs[0][0])
    cold_s, cold = counted(b, lambda: verify_range(b.bootstrap, topic_name, 0, n))
    assert remote_only <= cold["misses"] <= len(objs), (remote_only, cold)
    assert cold["misses"] <= cold["get_range"] <= 2 * len(objs), (len(objs), cold)
    warm_s, warm = counted(b, lambda: verify_range(b.bootstrap, topic_name, 0, n))
    assert warm["misses"] == 0 and warm["get_range"] == 0, warm
    assert warm["hits"] >= remote_only, (remote_only, warm)
    k = n // 3
    cc = consumer(b.bootstrap)
    try:
        (tp,) = cc.offsets_for_times([TopicPartition(topic_name, 0, TS0 + k)], timeout=30)
        assert tp.offset == k, f"timestamp lookup in the bucket gave {tp.offset}, expected {k}"
    finally:
        cc.close()

    # restart with an empty cache: every read goes to the bucket again
    b.stop()
    shutil.rmtree(b.data_dir / "cache", ignore_errors=True)
    b.start()
    replay_s, replay = counted(b, lambda: verify_range(b.bootstrap, topic_name, 0, n))
    assert replay["misses"] >= remote_only and replay["get_range"] >= replay["misses"], (remote_only, replay)
    assert not [l for l in b.log_text().splitlines() if " ERROR " in l], "errors in the broker log"
    print(f"{s3_server.name}: {TOTAL_MB} MiB produced in {produce_s:.1f}s, cold replay {cold_s:.1f}s "
          f"({cold['misses']:.0f} cache misses, {cold['get_range']:.0f} ranged GETs), warm replay {warm_s:.1f}s "
          f"({warm['hits']:.0f} hits, no GET), replay after restart {replay_s:.1f}s, {len(objs)} segment objects")


@pytest.mark.parametrize("s3_server", RESTARTABLE, indirect=True)
def test_bucket_outage_under_produce_load(s3_server, broker_factory, topic_name):
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket)
    tiered_topic(b.bootstrap, topic_name)
    size = 8 * 1024
    acked: list[int] = []
    errors: list = []
    stop = threading.Event()

    def load():
        p = producer(b.bootstrap, **{"linger.ms": 10, "message.timeout.ms": 60_000})
        i = 0
        while not stop.is_set():
            try:
                p.produce(topic_name, key=b"%d" % i, value=payload(i, size), partition=0, timestamp=TS0 + i,
                          on_delivery=lambda e, m: errors.append(e) if e else acked.append(m.offset()))
                i += 1
            except BufferError:
                pass
            p.poll(0.002 if i % 50 else 0.02)
        p.flush(60)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        time.sleep(3)
        with s3_server.outage():
            before = len(acked)
            local_before = len(local_segments(b, topic_name))
            time.sleep(OUTAGE_S)
            during = len(acked) - before
            assert during > 100, f"produce stalled during the outage ({during} acks)"
            assert metric(b, "sediment_tier_upload_lag_bytes") > 0, "upload lag should build up"
            assert len(local_segments(b, topic_name)) > local_before, "unuploaded segments stay on local disk"
        time.sleep(3)
    finally:
        stop.set()
        t.join(90)
    assert not errors, f"produce errors: {errors[:5]}"
    objs = wait_uploaded(b, s3_server, bucket, topic_name)
    check_contiguous(objs)
    if s3_server.outage_mode == "stop" or OUTAGE_S >= 30:
        # refused connections fail at once; a frozen server only after the retries time out
        assert "segment upload failed; produce continues on local disk" in b.log_text()
        assert "uploads resumed" in b.log_text()
    n = len(acked)
    assert sorted(acked) == list(range(n)), "every acked offset is dense"
    # every acked record survives, byte for byte (the older part from the bucket)
    size_of = lambda i: size  # noqa: E731
    c = consumer(b.bootstrap, **{"max.partition.fetch.bytes": 4 * MiB})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        expect = 0
        deadline = time.monotonic() + 300
        while expect < n:
            assert time.monotonic() < deadline, f"timed out at {expect} of {n}"
            for m in c.consume(5000, 0.5):
                if m.error():
                    continue
                assert m.offset() == expect and m.value() == payload(expect, size_of(expect)), f"record {expect}"
                expect += 1
    finally:
        c.close()


def test_local_disk_limit_refuses_produce_while_uploads_are_blocked(s3_factory, broker_factory, topic_name):
    s3 = s3_factory("moto")
    bucket = s3.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3, bucket, extra_args=["--max-local-bytes", str(6 * MiB)])
    tiered_topic(b.bootstrap, topic_name, local_retention_bytes=MiB)
    produce(b.bootstrap, topic_name, 0, 128)  # 2 MiB, uploaded
    wait_uploaded(b, s3, bucket, topic_name)
    p = producer(b.bootstrap, **{"linger.ms": 5, "retries": 0, "message.timeout.ms": 10_000})
    refused = []
    acked = []
    with s3.outage():
        for i in range(128, 128 + 1000):  # up to ~16 MiB, far past the limit
            p.produce(topic_name, key=b"%d" % i, value=payload(i), partition=0, timestamp=TS0 + i,
                      on_delivery=lambda e, m: refused.append(e) if e else acked.append(m.offset()))
            p.flush(15)
            if refused:
                break
        assert refused, "produce never refused past max_local_bytes"
        assert refused[0].code() == KafkaError.KAFKA_STORAGE_ERROR, refused[0]
        assert "local disk limit reached" in b.log_text()
    # the bucket is back: uploads drain, local retention frees the disk, produce works again
    wait_uploaded(b, s3, bucket, topic_name)
    deadline = time.monotonic() + 30
    while True:
        ok = []
        p.produce(topic_name, key=b"x", value=b"after", partition=0, on_delivery=lambda e, m: ok.append(e))
        p.flush(15)
        if ok and ok[0] is None:
            break
        assert time.monotonic() < deadline, f"produce still refused: {ok}"
        time.sleep(1)


@pytest.mark.parametrize("s3_server", RESTARTABLE, indirect=True)
def test_sigkill_mid_upload_uploads_each_segment_once(s3_server, broker_factory, topic_name):
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket)
    tiered_topic(b.bootstrap, topic_name)
    first = 6 * MiB // VALUE
    produce(b.bootstrap, topic_name, 0, first)
    wait_uploaded(b, s3_server, bucket, topic_name)
    n = first + 4 * MiB // VALUE
    s3_server.freeze()  # uploads of the next segments hang mid-request
    try:
        produce(b.bootstrap, topic_name, first, n - first)
        # the kill must land mid-upload: wait until a request body is on the wire to the
        # frozen server (the kernel has taken it; the server has not read it)
        deadline = time.monotonic() + 60
        while (queued := bytes_queued_to(s3_server.port)) < 256 * 1024:
            assert time.monotonic() < deadline, f"no upload reached the frozen server: {queued} bytes queued"
            time.sleep(0.1)
        b.kill()
    finally:
        s3_server.thaw()
    b.restart()
    objs = wait_uploaded(b, s3_server, bucket, topic_name)
    check_contiguous(objs)
    bases = [o[0] for o in objs]
    assert len(bases) == len(set(bases)), f"a segment was uploaded twice: {bases}"
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert not uploads, f"multipart leftovers: {uploads}"
    verify_range(b.bootstrap, topic_name, 0, n)


@pytest.mark.parametrize("s3_server", ALL, indirect=True)
def test_deleted_or_damaged_objects_are_fetch_errors(s3_server, broker_factory, topic_name):
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket)
    tiered_topic(b.bootstrap, topic_name)
    n = 8 * MiB // VALUE
    produce(b.bootstrap, topic_name, 0, n)
    objs = wait_uploaded(b, s3_server, bucket, topic_name)
    assert len(objs) >= 5
    b.stop()
    shutil.rmtree(b.data_dir / "cache", ignore_errors=True)  # nothing cached: reads go to the bucket
    c = s3_server.client()
    damaged, deleted = objs[1], objs[3]
    body = bytearray(c.get_object(Bucket=bucket, Key=damaged[2])["Body"].read())
    body[len(body) // 3] ^= 0xFF  # inside the records of a batch
    c.put_object(Bucket=bucket, Key=damaged[2], Body=bytes(body))
    c.delete_object(Bucket=bucket, Key=deleted[2])
    b.start()

    with kw.Connection.to(b.bootstrap) as conn:
        ok = kw.fetch(conn, 12, topic_name, [(0, objs[0][0])]).partitions[0]
        assert ok.error_code == 0 and ok.records, "an intact remote segment reads fine"
        assert all(batch.crc_ok for batch in kw.parse_record_batches(ok.records))
        for (base, last, key, _), what in ((damaged, "damaged"), (deleted, "deleted")):
            p = kw.fetch(conn, 12, topic_name, [(0, (base + last) // 2)]).partitions[0]
            assert p.error_code == 56, f"{what} object: error {p.error_code}, expected KAFKA_STORAGE_ERROR"
            assert not p.records, f"{what} object: records served"
    log = b.log_text()
    assert "remote segment unreadable" in log
    assert damaged[2].split(f"{PREFIX}/", 1)[1] in log and deleted[2].split(f"{PREFIX}/", 1)[1] in log
    assert "crc" in log.lower()

    # a real consumer reads the intact segment and never receives anything from the damaged one
    cons = consumer(b.bootstrap)
    got = []
    try:
        cons.assign([TopicPartition(topic_name, 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in cons.consume(1000, 0.5):
                if not m.error():
                    got.append(m.offset())
                    assert m.value() == payload(m.offset()), f"garbage at offset {m.offset()}"
    finally:
        cons.close()
    assert got == list(range(damaged[0])), f"consumed {len(got)} records, expected the {damaged[0]} before the damage"


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_a_replay_yields_to_producers_and_loses_nothing(s3_server, broker_factory, topic_name):
    """cold_read_bytes_per_sec_under_load: while producers are active a replay from the bucket
    keeps to the budget (the throttle metric moves), every record still arrives byte for byte,
    and producers are unaffected (every record delivered)."""
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket, env={"SEDIMENT_COLD_READ_BYTES_PER_SEC_UNDER_LOAD": "1MiB"})
    tiered_topic(b.bootstrap, topic_name)
    n = 12 * MiB // VALUE
    produce(b.bootstrap, topic_name, 0, n)
    wait_uploaded(b, s3_server, bucket, topic_name)
    b.stop()
    shutil.rmtree(b.data_dir / "cache", ignore_errors=True)
    b.start()
    assert metric(b, "sediment_cold_read_throttled_seconds_total") == 0

    live = f"{topic_name}-live"
    create_topic(b.bootstrap, live, 1)
    stop = threading.Event()
    delivered, errs, sent = [], [], [0]

    def keep_producing():
        p = producer(b.bootstrap, **{"linger.ms": 5})
        i = 0
        while not stop.is_set():
            p.produce(live, value=b"live-%d" % i, on_delivery=lambda e, m: errs.append(e) if e else delivered.append(1))
            p.poll(0.002)
            i += 1
        sent[0] = i
        p.flush(30)

    t = threading.Thread(target=keep_producing)
    t.start()
    try:
        time.sleep(0.5)
        failed = []

        def run_replay():
            try:
                verify_range(b.bootstrap, topic_name, 0, n)
            except BaseException as e:  # noqa: BLE001 - reported below
                failed.append(e)

        replay = threading.Thread(target=run_replay)
        replay.start()
        time.sleep(4)
    finally:
        stop.set()
        t.join()
    replay.join(120)
    assert not replay.is_alive() and not failed, failed
    assert not errs and len(delivered) == sent[0] > 0, f"{len(delivered)} of {sent[0]} delivered, errors {errs[:3]}"
    throttled = metric(b, "sediment_cold_read_throttled_seconds_total")
    assert throttled > 1.0, f"the replay waited {throttled} s for the budget while producers ran"
    # with the producers gone, a second replay runs free (the wait does not grow)
    time.sleep(1.5)
    verify_range(b.bootstrap, topic_name, 0, n)
    assert metric(b, "sediment_cold_read_throttled_seconds_total") == throttled


@pytest.mark.parametrize("s3_server", RESTARTABLE, indirect=True)
def test_the_bucket_follows_delete_records_and_retention(s3_server, broker_factory, topic_name):
    """The bucket keeps what the log keeps: DeleteRecords deletes the segment objects wholly
    below the new log start, retention.bytes the oldest ones; ListOffsets -4 (earliest local)
    and -5 (latest tiered) name the local log start and the bucket's last offset, over the
    wire; what remains reads back byte for byte."""
    seg = 64 * 1024
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    b = tiered_broker(broker_factory, s3_server, bucket, env={"SEDIMENT_MIN_SEGMENT_BYTES": str(seg)})
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(seg), "local.retention.bytes": str(2 * seg),
                                                     "retention.ms": "-1"})
    n, size = 480, 4096  # about 30 segments
    produce(b.bootstrap, topic_name, 0, n, size=size, batch_size=16 * 1024)  # batches well below a segment
    objs = wait_uploaded(b, s3_server, bucket, topic_name)
    check_contiguous(objs)
    assert len(objs) >= 20, f"{len(objs)} segment objects"

    def offsets(ts):
        with kw.Connection.to(b.bootstrap) as conn:
            r = kw.list_offsets(conn, topic_name, 0, ts)
        assert r.error_code == kw.NONE, r
        return r.offset

    # local retention has dropped the old segments from disk: the local log starts later
    deadline = time.monotonic() + 60
    while not (0 < offsets(kw.EARLIEST_LOCAL_TIMESTAMP) == local_segments(b, topic_name)[0][0]):
        assert time.monotonic() < deadline, (offsets(kw.EARLIEST_LOCAL_TIMESTAMP), local_segments(b, topic_name)[:2])
        time.sleep(0.2)
    assert offsets(kw.EARLIEST_TIMESTAMP) == 0
    assert offsets(kw.LATEST_TIMESTAMP) == n
    assert offsets(kw.LATEST_TIERED_TIMESTAMP) == segment_objects(s3_server, bucket, topic_name)[-1][1]

    # DeleteRecords into the sixth object: the five below it leave the bucket
    cut = objs[5][0] + 3
    tp = TopicPartition(topic_name, 0, cut)
    a = admin(b.bootstrap)  # kept: the futures need their client alive
    a.delete_records([tp], operation_timeout=30, request_timeout=30)[tp].result(30)
    assert offsets(kw.EARLIEST_TIMESTAMP) == cut
    deadline = time.monotonic() + 60
    while (left := segment_objects(s3_server, bucket, topic_name))[0][0] != objs[5][0]:
        assert left[0][0] <= objs[5][0], f"DeleteRecords to {cut} deleted the object holding it: {left[:2]}"
        assert time.monotonic() < deadline, f"objects below {cut} still in the bucket: {[o[:2] for o in left[:6]]}"
        time.sleep(0.2)
    assert not [k for k in all_keys(s3_server, bucket, f"{PREFIX}/topics/{topic_name}/")
                if (m := SEG_RE.search(k)) and int(m.group(2)) < cut], "a segment object below the log start"

    # retention.bytes: the oldest objects go while the partition would still hold at least the
    # limit without them (Kafka's rule: it ends less than one segment above the limit)
    limit = 8 * seg
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res], request_timeout=15)[res].result(30)
    deadline = time.monotonic() + 60
    while True:
        left = segment_objects(s3_server, bucket, topic_name)
        if sum(o[3] for o in left[1:]) < limit:
            break
        assert time.monotonic() < deadline, f"{len(left)} objects, {sum(o[3] for o in left)} bytes, limit {limit}"
        time.sleep(0.2)
    assert sum(o[3] for o in left) <= limit + 2 * seg, f"{len(left)} objects, {sum(o[3] for o in left)} bytes"
    check_contiguous(left, start=left[0][0])
    start = offsets(kw.EARLIEST_TIMESTAMP)
    assert start == left[0][0] > cut, (start, left[0][:2])
    lo, hi = watermarks(b.bootstrap, topic_name, 0)
    assert (lo, hi) == (start, n)
    verify_range(b.bootstrap, topic_name, start, n, size=size)
