"""Crash safety: SIGKILL the broker while an acks=all producer sends, restart
on the same data dir, and check that every acknowledged record is there, in
order, and that nothing corrupt is served. Also a torn tail written by hand
into the active segment is cut off by recovery."""

import re

import pytest

from acks_common import AckLog, payload as _payload, produce_until_crash, verify
from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, producer, watermarks

PARTS = 3


def _produce_until_killed(broker, topic, start_seq, acks, run_for: float) -> int:
    return produce_until_crash(broker.bootstrap, topic, PARTS, start_seq, acks, run_for, crash=broker.kill)


def _verify(broker, topic, acks):
    return verify(broker.bootstrap, topic, PARTS, acks)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_during_acks_all_production(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTS)
    acks = AckLog()
    seq = 0
    for round_ in range(3):
        seq = _produce_until_killed(broker, topic_name, seq, acks, run_for=1.0 + 0.5 * round_)
        broker.restart()
        hw = _verify(broker, topic_name, acks)
    assert len(acks.acked) >= 1500

    # the log takes new writes after the last recovered offset
    p = producer(broker.bootstrap)
    res = []
    p.produce(topic_name, key=str(seq).encode(), value=_payload(seq), headers=[("seq", str(seq).encode())],
              partition=seq % PARTS, on_delivery=lambda e, m: res.append((e, m.offset())))
    assert p.flush(30) == 0
    assert res == [(None, hw[seq % PARTS][1])]


def _segments(broker):
    return sorted(s for s in broker.data_dir.rglob("*.log") if re.fullmatch(r"\d{20}\.log", s.name))


@pytest.mark.parametrize("tail", ["half-batch", "zeros", "bad-crc-batch"])
def test_torn_tail_is_truncated_on_recovery(broker, topic_name, tail):
    create_topic(broker.bootstrap, topic_name, 1)
    with kw.Connection.to(broker.bootstrap) as c:
        for i in range(10):
            b = kw.build_record_batch([kw.Record(b"%d" % i, b"value-%d" % i)])
            assert kw.produce(c, 9, topic_name, 0, b).error_code == kw.NONE
    broker.kill()
    segs = _segments(broker)
    assert len(segs) == 1, f"expected one segment file, found {segs}"
    seg = segs[0]
    nxt = kw.build_record_batch([kw.Record(b"torn", b"x" * 500)], base_offset=10)
    if tail == "half-batch":
        garbage = nxt[: len(nxt) // 2]
    elif tail == "zeros":
        garbage = b"\x00" * 4096  # preallocated or unwritten pages
    else:
        garbage = bytearray(nxt)
        garbage[-1] ^= 0xFF  # complete batch, wrong CRC
        garbage = bytes(garbage)
    with open(seg, "ab") as f:
        f.write(garbage)

    broker.restart()
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 10)
    msgs = consume_range(broker.bootstrap, topic_name, {0: (0, 10)})[0]
    assert [m.value() for m in msgs] == [b"value-%d" % i for i in range(10)]
    with kw.Connection.to(broker.bootstrap) as c:
        r = kw.produce(c, 9, topic_name, 0, kw.build_record_batch([kw.Record(b"new", b"after")]))
        assert (r.error_code, r.base_offset) == (kw.NONE, 10)
        batches = kw.fetch_batches(c, topic_name, 0, 0, 11)
    assert all(b.crc_ok for b in batches)
    assert [b.base_offset for b in batches] == list(range(11))
    assert batches[-1].records[0][3] == b"after"
