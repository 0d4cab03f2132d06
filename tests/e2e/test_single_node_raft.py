"""One broker as the only voter of a Raft cluster of one (`single_node_raft`): proposals that
arrive while an entry is on its way to disk share the next entry (group commit), and every
producer still gets its own offsets, in order, exactly once."""

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import consume_range, create_topic, watermarks

RAFT_OF_ONE = {"SEDIMENT_SINGLE_NODE_RAFT": "true"}
N = 300


def test_pipelined_proposals_share_entries_and_keep_their_offsets(broker_factory, topic_name):
    b = broker_factory(env=RAFT_OF_ONE)
    create_topic(b.bootstrap, topic_name, 1)
    with kw.Connection.to(b.bootstrap) as c:
        # N produce requests on one connection, sent before any answer is read
        for i in range(N):
            batch = kw.build_record_batch([kw.Record(b"k%d" % i, b"v%d" % i)])
            body = kw.produce_request(9, topic_name, 0, batch, acks=-1)
            c.send_frame(kw.request_header(kw.PRODUCE, 9, 1000 + i, "coalesce", True) + body)
        bases = []
        for i in range(N):
            r = kw.Reader(c.recv_frame(30))
            assert r.int32() == 1000 + i, "answers come in request order"
            r.tagged_fields()
            (p,) = kw.parse_produce_response(9, r)
            assert p.error_code == kw.NONE
            bases.append(p.base_offset)
    assert bases == list(range(N)), "each request got its own offset, in order"
    assert watermarks(b.bootstrap, topic_name, 0) == (0, N)
    got = consume_range(b.bootstrap, topic_name, {0: (0, N)})[0]
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(i, b"k%d" % i, b"v%d" % i) for i in range(N)]
    # the Raft entry index holds fewer entries than there were batches: they were coalesced
    ridx = list((b.data_dir / "logs" / f"{topic_name}-0").glob("*.ridx"))
    entries = sum(f.stat().st_size for f in ridx) // 24
    assert entries < N, f"{entries} Raft entries for {N} batches: nothing was coalesced"
    # and a restart reads them back as they were
    b.restart()
    got = consume_range(b.bootstrap, topic_name, {0: (0, N)})[0]
    assert [(m.offset(), m.value()) for m in got] == [(i, b"v%d" % i) for i in range(N)]


def _epoch(bootstrap, topic) -> int:
    with kw.Connection.to(bootstrap) as c:
        (p,) = kw.metadata(c, [topic]).topics[topic].partitions
        return p.leader_epoch


def test_a_restart_leads_in_a_new_term_and_keeps_every_record(broker_factory, topic_name):
    """A restarted group of one does not resume leadership in the term it led before (a power
    cut may have taken entries of that term that a learner catching up already holds): it wins
    a new term, as a Kafka partition's leader epoch moves when its leader restarts, and the new
    term's first entry commits everything before it."""
    b = broker_factory(env=RAFT_OF_ONE)
    create_topic(b.bootstrap, topic_name, 1)
    with kw.Connection.to(b.bootstrap) as c:
        for i in range(20):
            batch = kw.build_record_batch([kw.Record(b"k%d" % i, b"v%d" % i)])
            assert kw.produce(c, 9, topic_name, 0, batch, acks=-1).error_code == kw.NONE
    epochs = [_epoch(b.bootstrap, topic_name)]
    for stop in (b.kill, b.stop):
        stop()
        b.restart()
        epochs.append(_epoch(b.bootstrap, topic_name))
    assert epochs[0] < epochs[1] < epochs[2], f"leader epochs across a SIGKILL and a stop: {epochs}"
    assert watermarks(b.bootstrap, topic_name, 0) == (0, 20)
    got = consume_range(b.bootstrap, topic_name, {0: (0, 20)})[0]
    assert [m.value() for m in got] == [b"v%d" % i for i in range(20)]

