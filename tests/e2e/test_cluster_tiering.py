"""Tiered storage on replicated partitions: three brokers, one bucket (moto S3 on loopback).

Only the partition's leader uploads, and it commits each upload through the partition's Raft
log, so every replica applies the same remote segment list and trims its own disk to
`local.retention.*`. When the leader is SIGKILLed, the new leader resumes uploading where the
old one stopped, without uploading the committed segments again. A broker that comes back with
an empty disk gets the list with the leader's snapshot, not from its peers' history, and
consumers read every record from offset 0 through whichever broker leads.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest

from sediment_harness.clients import create_topic, watermarks
from sediment_harness.s3.fixtures import s3_factory, s3_server  # noqa: F401
from test_tiering import PREFIX, VALUE, local_segments, metric, produce, segment_objects, verify_range

KiB = 1024
SEGMENT = 256 * KiB
RECORDS = 8 * 1024 * KiB // VALUE  # 8 MiB per phase

pytestmark = pytest.mark.timeout(600)


def uploaded_bytes(node) -> float:
    return metric(node, "sediment_tier_uploaded_bytes_total") or 0.0


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


def bucket_covers(s3, bucket, topic, end):
    """The partition's segment objects once they cover [0, end) with no gap; None before."""
    objs = segment_objects(s3, bucket, topic)
    covered = 0
    for base, last, _, _ in objs:
        if base > covered:
            return None
        covered = max(covered, last + 1)
    return objs if covered >= end else None


def sealed_end(node, topic):
    """Base offset of the node's active (last) local segment: everything below is sealed."""
    segs = local_segments(node, topic)
    return segs[-1][0] if segs else 0


def manifest_of(node, topic):
    """The node's applied remote segment list of partition 0 (None before it has one)."""
    try:
        with open(node.data_dir / "logs" / f"{topic}-0" / "remote-manifest.json") as f:
            return json.load(f)["manifest"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_leader_uploads_and_a_new_leader_resumes(s3_server, cluster_factory, topic_name):
    bucket = s3_server.bucket(f"b-{uuid.uuid4().hex[:10]}")
    env = dict(s3_server.env())
    env["SEDIMENT_RETENTION_CHECK_INTERVAL_MS"] = "500"
    env["SEDIMENT_MIN_SEGMENT_BYTES"] = str(SEGMENT)  # below Kafka's 1 MiB floor, to roll often
    c = cluster_factory(3, object_store=f"s3://{bucket}/{PREFIX}", env=env)
    create_topic(c.bootstrap, topic_name, 1, replication_factor=3,
                 config={"segment.bytes": str(SEGMENT), "local.retention.bytes": str(2 * SEGMENT), "retention.ms": "-1"})

    # phase 1: the first leader uploads every sealed segment, once
    produce(c.bootstrap, topic_name, 0, RECORDS)
    first = c.leader(topic_name, 0)
    objs = wait_for("uploads of the first leader",
                    lambda: bucket_covers(s3_server, bucket, topic_name, sealed_end(c.node(first), topic_name)))
    bases = [o[0] for o in objs]
    assert len(bases) == len(set(bases)) and len(objs) >= 8, f"{len(objs)} objects: {bases}"
    for n in c.nodes:
        if n.node_id != first:
            assert uploaded_bytes(n) == 0, f"follower {n.node_id} uploaded"
    assert uploaded_bytes(c.node(first)) > 0
    # every replica applied the same list and trimmed its own disk to local.retention.bytes
    for n in c.nodes:
        wait_for(f"node {n.node_id} trims its local log",
                 lambda n=n: local_segments(n, topic_name) and local_segments(n, topic_name)[0][0] > 0
                 # local.retention.bytes plus the active segment; the producer's batches are
                 # ~0.9 MiB, so a segment holds one whole batch past segment.bytes
                 and sum(s for _, s in local_segments(n, topic_name)) <= 3 * 1024 * KiB)
        m = manifest_of(n, topic_name)
        assert m and m["uploaded_end"] >= objs[-1][1] + 1, (n.node_id, m and m["uploaded_end"])
    assert watermarks(c.bootstrap, topic_name, 0) == (0, RECORDS), "earliest is the bucket's log start"

    # phase 2: SIGKILL the leader; the new one resumes at the uploaded end
    c.node(first).kill()
    shutil.rmtree(c.node(first).data_dir)  # and its disk is lost
    second = c.leader(topic_name, 0, timeout=60, exclude=[first])
    before = {o[2] for o in segment_objects(s3_server, bucket, topic_name)}
    produce(",".join(n.bootstrap for n in c.live()), topic_name, RECORDS, RECORDS)
    objs = wait_for("uploads of the second leader",
                    lambda: bucket_covers(s3_server, bucket, topic_name, sealed_end(c.node(second), topic_name)))
    new = [o for o in objs if o[2] not in before]
    assert new, "the new leader uploaded nothing"
    old_end = max(int(k.split("/segments/")[1][21:41]) + 1 for k in before)
    # nothing committed is uploaded again: a new object starts at the old uploaded end, or (when
    # this leader's segments roll at other offsets) one straddles it
    straddling = [o for o in new if o[0] < old_end]
    assert len(straddling) <= 1 and all(o[1] >= old_end for o in new), (old_end, [o[:2] for o in new])
    assert uploaded_bytes(c.node(second)) > 0

    # the broker with the empty disk returns: it gets the leader's snapshot (log start and the
    # remote segment list), not the whole history
    c.node(first).start()
    wait_for("the wiped broker catches up",
             lambda: local_segments(c.node(first), topic_name)
             and (manifest_of(c.node(first), topic_name) or {}).get("uploaded_end", 0) >= objs[-1][1] + 1,
             timeout=120)
    assert local_segments(c.node(first), topic_name)[0][0] > 0, "the wiped broker copied the whole history"
    listed = {(s["base_offset"], s["last_offset"]) for s in manifest_of(c.node(first), topic_name)["segments"]}
    assert listed <= {(o[0], o[1]) for o in objs}, "the wiped broker lists segments the bucket does not hold"
    assert min(listed)[0] == 0, "the wiped broker's list starts at offset 0"

    # every record from offset 0, byte for byte, through whoever leads after one more kill
    c.node(second).kill()
    c.leader(topic_name, 0, timeout=60, exclude=[second])
    live = ",".join(n.bootstrap for n in c.live())
    verify_range(live, topic_name, 0, 2 * RECORDS)
    c.node(second).start()
