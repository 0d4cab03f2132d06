"""Idempotent producers (issue 3): retries forced by a proxy that drops Produce responses
must not duplicate or reorder anything, across a broker restart too; and the broker answers
sequence gaps and stale epochs with Kafka's error codes.

Two producers: confluent-kafka (librdkafka sends one request per partition at a time when
idempotent) and `sediment produce` (up to five requests in flight, as Kafka's Java client),
whose retries race each other and meet OUT_OF_ORDER_SEQUENCE_NUMBER on the way."""

import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer

from sediment_harness import kafka_wire
from sediment_harness.clients import consume_range, create_topic, watermarks
from sediment_harness.proxy import KafkaProxy

PRODUCE = 0
N = 20_000


def _proxied_broker(broker_factory):
    """A broker that advertises a proxy in front of it, so every client request passes the proxy."""
    from sediment_harness.ports import free_port

    proxy_port = free_port()
    b = broker_factory(extra_args=["--advertised-listener", f"127.0.0.1:{proxy_port}"])
    proxy = KafkaProxy("127.0.0.1", b.port, port=proxy_port, seed=42)
    return b, proxy


def _produce_all(client, bootstrap, topic, start, count, acked, errors):
    if client == "sediment":
        _produce_all_cli(bootstrap, topic, start, count, acked, errors)
        return
    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        "batch.num.messages": 200,
        "message.timeout.ms": 120_000,
        "retry.backoff.ms": 20,
        "socket.timeout.ms": 5_000,
    })

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(int(msg.value().decode()))

    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), key=str(i % 97).encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 500 == 0:
            p.poll(0)
            time.sleep(0.03)  # ~1.2 s for N records: long enough to restart the broker under it
    remaining = p.flush(120)
    assert remaining == 0, f"{remaining} records never delivered"


def _produce_all_cli(bootstrap, topic, start, count, acked, errors):
    """`sediment produce` (idempotent by default with acks=all), fed a few hundred lines at a
    time so the stream lasts long enough to restart the broker under it. It exits 0 only when
    every record was acknowledged."""
    import os

    binary = os.environ["SEDIMENT_TEST_BIN"]
    p = subprocess.Popen(
        [binary, "produce", "--bootstrap", bootstrap, "--topic", topic, "--batch-size", "8192", "--linger-ms", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    for i in range(start, start + count, 250):
        p.stdin.write(b"".join(b"%d\n" % j for j in range(i, min(i + 250, start + count))))
        p.stdin.flush()
        time.sleep(0.03)  # ~2.4 s for N records: long enough to restart the broker under it
    p.stdin.close()
    err = p.stderr.read()
    if p.wait(timeout=240) != 0:
        errors.append(err.decode(errors="replace").strip())
    else:
        acked.extend(range(start, start + count))


def _assert_exactly_once_in_order(bootstrap, topic, expected):
    low, high = watermarks(bootstrap, topic, 0)
    records = consume_range(bootstrap, topic, {0: (low, high)})[0]
    values = [int(r.value().decode()) for r in records]
    dupes = len(values) - len(set(values))
    assert dupes == 0, f"{dupes} duplicated records"
    assert values == sorted(values), "records out of order"
    assert values == list(range(expected)), f"gap or extra: got {len(values)} records, expected {expected}"


CLIENTS = ["confluent-kafka", "sediment"]


@pytest.fixture
def cli_bin(sediment_bin, monkeypatch):
    monkeypatch.setenv("SEDIMENT_TEST_BIN", str(sediment_bin))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", CLIENTS)
def test_retries_through_dropped_responses_leave_no_duplicates(broker_factory, topic_name, client, cli_bin):
    b, proxy = _proxied_broker(broker_factory)
    with proxy:
        create_topic(b.bootstrap, topic_name, partitions=1)
        proxy.drop_response(PRODUCE, 0.05)
        acked, errors = [], []
        _produce_all(client, proxy.address, topic_name, 0, N, acked, errors)
        assert not errors, errors[:5]
        assert proxy.dropped >= 5, f"the proxy dropped only {proxy.dropped} responses; the test forced no retries"
        assert sorted(acked) == list(range(N))
        _assert_exactly_once_in_order(b.bootstrap, topic_name, N)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", CLIENTS)
def test_no_duplicates_across_a_broker_restart(broker_factory, topic_name, client, cli_bin):
    b, proxy = _proxied_broker(broker_factory)
    with proxy:
        create_topic(b.bootstrap, topic_name, partitions=1)
        proxy.drop_response(PRODUCE, 0.05)
        acked, errors = [], []
        t = threading.Thread(target=_produce_all, args=(client, proxy.address, topic_name, 0, N, acked, errors))
        t.start()
        # restart the broker in the middle of the stream: the producer keeps its id and
        # sequences, the broker must rebuild its producer state from disk
        deadline = time.time() + 60
        def progress():
            # confluent-kafka reports each delivery; the CLI only its exit, so ask the broker
            return len(acked) if client == "confluent-kafka" else watermarks(b.bootstrap, topic_name, 0)[1]

        while progress() < N // 3 and time.time() < deadline:
            time.sleep(0.02)
        assert t.is_alive(), "the stream ended before the restart; the test restarted nothing"
        b.kill()
        b.restart()
        t.join(240)
        assert not t.is_alive()
        assert not errors, errors[:5]
        assert sorted(acked) == list(range(N))
        _assert_exactly_once_in_order(b.bootstrap, topic_name, N)


INIT_PRODUCER_ID = 22


def _init_producer_id(bootstrap):
    """InitProducerId v1 (non-flexible): transactional_id null, timeout 60 s."""
    with kafka_wire.Connection.to(bootstrap) as conn:
        body = kafka_wire.Writer().string(None).int32(60_000).getvalue()
        r = conn.request(INIT_PRODUCER_ID, 1, body)
        r.int32()  # throttle
        err = r.int16()
        pid = r.int64()
        epoch = r.int16()
        assert err == 0, f"InitProducerId failed with error {err}"
        return pid, epoch


def _idempotent_batch(pid, epoch, seq, count):
    records = [kafka_wire.Record(b"k", b"v%d" % i) for i in range(count)]
    return kafka_wire.build_record_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _produce(conn, topic, batch):
    r = kafka_wire.produce(conn, 9, topic, 0, batch)
    return r.error_code, r.base_offset


def test_sequence_gaps_and_stale_epochs_get_kafka_codes(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    pid, epoch = _init_producer_id(broker.bootstrap)
    assert pid >= 0 and epoch == 0
    with kafka_wire.Connection.to(broker.bootstrap) as conn:
        # seq 0..2 accepted
        assert _produce(conn, topic_name, _idempotent_batch(pid, 0, 0, 3)) == (0, 0)
        # exact retry: NONE with the original base offset, nothing appended
        assert _produce(conn, topic_name, _idempotent_batch(pid, 0, 0, 3)) == (0, 0)
        # gap: OUT_OF_ORDER_SEQUENCE_NUMBER (45)
        assert _produce(conn, topic_name, _idempotent_batch(pid, 0, 10, 1))[0] == 45
        # next in sequence
        assert _produce(conn, topic_name, _idempotent_batch(pid, 0, 3, 1)) == (0, 3)
        # bump the epoch, then a write with the old epoch: INVALID_PRODUCER_EPOCH (47)
        assert _produce(conn, topic_name, _idempotent_batch(pid, 1, 0, 1)) == (0, 4)
        assert _produce(conn, topic_name, _idempotent_batch(pid, 0, 4, 1))[0] == 47
        # a new epoch must start at sequence 0
        assert _produce(conn, topic_name, _idempotent_batch(pid, 2, 5, 1))[0] == 45
    low, high = watermarks(broker.bootstrap, topic_name, 0)
    assert (low, high) == (0, 5), "rejected or duplicate batches must not be appended"


def test_init_producer_id_ids_are_unique_across_restarts(broker):
    ids = {_init_producer_id(broker.bootstrap)[0] for _ in range(5)}
    broker.stop()
    broker.restart()
    after = {_init_producer_id(broker.bootstrap)[0] for _ in range(5)}
    assert len(ids) == 5 and len(after) == 5
    assert not ids & after, "a producer id was handed out twice"


def test_every_retry_in_the_window_gets_its_own_offsets_across_a_snapshot(broker, topic_name):
    """Retries of each of the last five batches (Kafka's window) are answered with that batch's
    own offsets, after a crash whose restart loads the producer state from a snapshot (written
    when the segment rolled) rather than replaying batches; an older one is refused."""
    create_topic(broker.bootstrap, topic_name, partitions=1, config={"segment.bytes": str(1 << 20)})
    pid, epoch = _init_producer_id(broker.bootstrap)
    value = b"x" * (60 << 10)

    def batch(seq):
        return kafka_wire.build_record_batch([kafka_wire.Record(b"k", value)], producer_id=pid,
                                             producer_epoch=epoch, base_sequence=seq)

    part_dir = broker.data_dir / "logs" / f"{topic_name}-0"
    sent = []  # (seq, base offset)
    with kafka_wire.Connection.to(broker.bootstrap) as conn:
        # until the 1 MiB segment rolls, which writes a producer snapshot as of the log end
        while not list(part_dir.glob("*.snapshot")):
            seq = len(sent)
            assert seq < 40, "the segment never rolled"
            code, base = _produce(conn, topic_name, batch(seq))
            assert code == 0
            sent.append((seq, base))
    end = sent[-1][1] + 1
    snaps = sorted(int(p.name.split(".")[0]) for p in part_dir.glob("*.snapshot"))
    assert snaps == [end] and len(sent) > 6, (snaps, end, len(sent))
    broker.kill()
    broker.restart()
    assert "replayed_batches=0" in broker.log_tail(200, since_last_start=True)
    with kafka_wire.Connection.to(broker.bootstrap) as conn:
        for seq, base in sent[-5:]:
            assert _produce(conn, topic_name, batch(seq)) == (0, base), f"retry of seq {seq}"
        code, _ = _produce(conn, topic_name, batch(sent[-6][0]))
        assert code != 0, "a retry older than the window was accepted"
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, end), "a retry was appended again"
