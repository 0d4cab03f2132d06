"""What one client can hold on the Kafka port is bounded, and a client that
goes away gives everything back at once:

* long polls whose clients disconnect free their connection slots
  immediately (with max_connections = 50, 60 abandoned 600 s polls used to
  lock every new client out for ten minutes);
* a Fetch waits at most fetch_max_wait_ms, whatever max_wait_ms asks;
* a connection with no complete request and nothing pending for
  connections_max_idle_ms (Kafka's connections.max.idle.ms) is closed, and so
  is a slowloris dribbling a frame byte by byte;
* a client that pipelines fetches and never reads is not read either once its
  unwritten responses fill its budget: the broker's memory stays flat;
* any request but Produce is capped at max_non_produce_request_bytes before
  its body is read (a 100 MiB Metadata request of empty names decoded into
  gigabytes).
"""

import socket
import struct
import time

import pytest

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import create_topic


def _fetch_frame(topic, corr, max_wait_ms, version=12, partition_max_bytes=1 << 20, max_bytes=50 << 20):
    body = kw.fetch_request(version, topic, [(0, 0)], max_wait_ms=max_wait_ms,
                            partition_max_bytes=partition_max_bytes, max_bytes=max_bytes)
    return kw.frame(kw.request_header(kw.FETCH, version, corr, "limits", True) + body)


def _raw(broker, timeout=10):
    host, port = broker.bootstrap.split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _alive(broker, timeout=5):
    with kw.Connection.to(broker.bootstrap, timeout=timeout) as c:
        assert kw.API_VERSIONS in kw.api_versions(c)


def _closed_within(s, seconds):
    """True if the broker closes the socket within `seconds`."""
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_abandoned_long_polls_free_their_slots(broker_factory, topic_name):
    b = broker_factory(env={"SEDIMENT_MAX_CONNECTIONS": "50", "SEDIMENT_FETCH_MAX_WAIT_MS": "300000"})
    create_topic(b.bootstrap, topic_name, 1)
    socks = []
    for i in range(60):
        try:
            s = _raw(b)
            s.sendall(_fetch_frame(topic_name, i, max_wait_ms=600_000))
            socks.append(s)
        except OSError:
            pass  # beyond the limit the broker closes at accept
    time.sleep(1.0)
    for s in socks:
        s.close()
    # the polls wait for data that never comes; every slot must come back at once (the broker
    # notices each closed socket on its own, so the first new clients may still race the last
    # of those): 45 new connections at once all work within 5 s
    deadline = time.monotonic() + 5
    while True:
        extra = []
        try:
            for _ in range(45):
                extra.append(kw.Connection.to(b.bootstrap, timeout=5))
            for c in extra:
                assert kw.API_VERSIONS in kw.api_versions(c)
            break
        except (OSError, kw.ConnectionClosed, TimeoutError) as e:
            assert time.monotonic() < deadline, f"new clients still refused 5 s after the pollers left: {e}"
            time.sleep(0.2)
        finally:
            for c in extra:
                c.close()


def test_a_fetch_waits_at_most_fetch_max_wait_ms(broker_factory, topic_name):
    b = broker_factory(env={"SEDIMENT_FETCH_MAX_WAIT_MS": "1500"})
    create_topic(b.bootstrap, topic_name, 1)
    with kw.Connection.to(b.bootstrap, timeout=30) as c:
        t = time.monotonic()
        r = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=600_000)
        took = time.monotonic() - t
    assert 1.2 < took < 10, took
    assert r.partitions[0].error_code == kw.NONE


def test_idle_and_slowloris_connections_are_closed(broker_factory, topic_name):
    b = broker_factory(env={"SEDIMENT_CONNECTIONS_MAX_IDLE_MS": "2000", "SEDIMENT_FETCH_MAX_WAIT_MS": "5000"})
    create_topic(b.bootstrap, topic_name, 1)
    silent = _raw(b)
    t = time.monotonic()
    assert _closed_within(silent, 10), "a silent connection stayed open"
    assert time.monotonic() - t >= 1.5

    # one byte every 300 ms never completes a request: closed after the idle time too
    slow = _raw(b)
    frame = _fetch_frame(topic_name, 1, 100)
    t = time.monotonic()
    closed = False
    for byte in frame[:-1]:
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.3)
        if time.monotonic() - t > 8:
            break
    assert closed or _closed_within(slow, 5), "a slowloris kept its connection"

    # a connection waiting on its own long poll is not idle: the answer arrives after 5 s
    with kw.Connection.to(b.bootstrap, timeout=20) as c:
        t = time.monotonic()
        r = kw.fetch(c, 12, topic_name, [(0, 0)], max_wait_ms=5_000)
        assert time.monotonic() - t > 4
        assert r.partitions[0].error_code == kw.NONE
        # and a client that keeps sending requests stays connected past the idle time
        for _ in range(6):
            time.sleep(0.5)
            assert kw.API_VERSIONS in kw.api_versions(c)


def test_a_client_that_never_reads_does_not_grow_the_broker(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, config={"max.message.bytes": str(2 << 20)})
    with kw.Connection.to(broker.bootstrap, timeout=60) as c:
        for i in range(10):  # 10 MiB in the partition
            batch = kw.build_record_batch([kw.Record(b"k", bytes([i]) * (1 << 20))])
            assert kw.produce(c, 9, topic_name, 0, batch).error_code == kw.NONE
    rss_before = broker.rss_bytes()
    s = _raw(broker)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sent = 0
    s.settimeout(1.0)
    for i in range(64):
        try:
            s.sendall(_fetch_frame(topic_name, i, 0, partition_max_bytes=10 << 20, max_bytes=50 << 20))
            sent += 1
        except socket.timeout:
            break  # the broker stopped reading this client: that is the point
    time.sleep(3)
    grew = broker.rss_bytes() - rss_before
    assert grew < 100 << 20, f"broker RSS grew {grew >> 20} MiB for a client that never reads ({sent} fetches sent)"
    s.close()
    _alive(broker)


def test_oversized_non_produce_requests_are_refused_before_their_body(broker):
    s = _raw(broker)
    rss_before = broker.rss_bytes()
    # a Metadata request claiming 50 MiB of empty topic names (under max_request_bytes): closed
    # once its header is in, never buffered or decoded
    header = kw.request_header(kw.METADATA, 8, 1, "limits")
    s.sendall(struct.pack(">i", len(header) + 50 * 1024 * 1024) + header + struct.pack(">i", 25 * 1024 * 1024))
    try:
        for _ in range(100):
            s.sendall(b"\x00\x00" * 32768)
    except OSError:
        pass  # closed while we were still sending
    assert _closed_within(s, 10)
    assert broker.rss_bytes() - rss_before < 64 << 20
    # under the cap, a large Metadata request is still answered
    names = [f"missing-{i}" for i in range(20000)]
    with kw.Connection.to(broker.bootstrap, timeout=30) as c:
        md = kw.metadata(c, names)
    assert len(md.topics) == 20000
    _alive(broker)


def test_a_create_topics_that_runs_out_of_file_descriptors_leaves_nothing(sediment_bin, tmp_path, topic_name):
    """With 256 file descriptors, 400 partitions cannot all open: the request fails with
    KAFKA_STORAGE_ERROR naming the limit, no directory of the topic stays behind, the broker
    (its metadata log included) keeps working and a smaller topic is created afterwards."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic
    from sediment_harness.clients import admin

    wrapper = tmp_path / "sediment-256-fds"
    wrapper.write_text(f"#!/bin/sh\nulimit -n 256\nexec {sediment_bin} \"$@\"\n")
    wrapper.chmod(0o755)
    from sediment_harness.broker import Broker
    b = Broker(tmp_path / "broker", bin=wrapper, env={"SEDIMENT_MAX_CONNECTIONS": "50"}).start()
    try:
        _create_beyond_the_descriptors(b, topic_name, admin(b.bootstrap))
    finally:
        b.stop()
    assert not b.panics()


def _create_beyond_the_descriptors(b, topic_name, a):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic
    fut = a.create_topics([NewTopic(topic_name, 400)], request_timeout=30)[topic_name]
    with pytest.raises(KafkaException) as e:
        fut.result(60)
    assert e.value.args[0].code() == 56, e.value  # KAFKA_STORAGE_ERROR
    assert "raise the limit" in e.value.args[0].str(), e.value
    logs = b.data_dir / "logs"
    deadline = time.monotonic() + 30
    while True:
        left = [p.name for p in logs.iterdir() if p.name.startswith(topic_name)] if logs.exists() else []
        if not left:
            break
        assert time.monotonic() < deadline, f"{len(left)} directories of the failed topic remain, e.g. {left[:3]}"
        time.sleep(0.2)
    assert topic_name not in a.list_topics(timeout=10).topics
    create_topic(b.bootstrap, topic_name + "-small", 10)
    _alive(b)


def test_large_requests_share_a_broker_wide_budget(broker_factory, topic_name):
    """queued_max_request_bytes bounds the bytes of large frames in flight over all
    connections: with a budget of one large request, a client dribbling a 2 MiB Produce holds
    it, a second large Produce waits (unread, unanswered) until the first completes, and small
    requests are answered meanwhile."""
    mib2 = str(2 << 20)
    b = broker_factory(env={"SEDIMENT_MAX_REQUEST_BYTES": mib2, "SEDIMENT_QUEUED_MAX_REQUEST_BYTES": mib2})
    create_topic(b.bootstrap, topic_name, 1, config={"max.message.bytes": str(3 << 20)})

    def produce_frame(corr, size):
        batch = kw.build_record_batch([kw.Record(b"k", b"x" * size)])
        body = kw.produce_request(9, topic_name, 0, batch, acks=1)
        return kw.frame(kw.request_header(kw.PRODUCE, 9, corr, "limits", True) + body)

    first = produce_frame(1, (2 << 20) - 4096)
    holder = _raw(b)
    holder.sendall(first[: 1 << 20])  # the header and half the body: the budget is taken
    time.sleep(0.5)
    waiting = _raw(b)
    waiting.sendall(produce_frame(2, 1 << 20))
    waiting.settimeout(2.0)
    with pytest.raises(socket.timeout):
        waiting.recv(1)  # not answered while the budget is held
    _alive(b)  # a small request passes meanwhile
    holder.sendall(first[1 << 20:])
    holder.settimeout(10)
    assert holder.recv(4), "the first request is answered once complete"
    waiting.settimeout(10)
    assert waiting.recv(4), "the second is read and answered once the first gave its share back"
    holder.close()
    waiting.close()
