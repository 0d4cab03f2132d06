"""Raw group-coordinator requests for the consumer group suites (test_groups_*.py).

Written from the Kafka protocol specification on top of the harness's
kafka_wire primitives (Writer, Reader, Connection); it covers only the
request/response versions the tests use:

    FindCoordinator v3 (flexible), v4 (batched)
    JoinGroup v5, SyncGroup v3, Heartbeat v3, LeaveGroup v3   (classic encoding)
    OffsetCommit v7 (classic), v9 (flexible)
    OffsetFetch v7 (flexible, one group), v8 (flexible, many groups)
    DescribeGroups v5 (flexible), v6 (flexible, error message)
    ListGroups v4 (flexible, states filter)
    DeleteGroups v2 (flexible), OffsetDelete v0 (classic)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional, Sequence

from sediment_harness import kafka_wire as kw
from sediment_harness.kafka_wire import Reader, Writer

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
DELETE_GROUPS = 42
OFFSET_DELETE = 47

NONE = 0
OFFSET_METADATA_TOO_LARGE = 12
UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
INVALID_REQUEST = 42
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86


def subscription(topics: Sequence[str], version: int = 0) -> bytes:
    """ConsumerProtocolSubscription v0: the metadata of a 'consumer' protocol."""
    w = Writer().int16(version).array_len(len(topics))
    for t in topics:
        w.string(t)
    w.bytes_(None)
    return w.getvalue()


def assignment(parts: dict[str, Sequence[int]]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    w = Writer().int16(0).array_len(len(parts))
    for t, ps in parts.items():
        w.string(t).array_len(len(ps))
        for p in ps:
            w.int32(p)
    w.bytes_(None)
    return w.getvalue()


# ------------------------------------------------------------------ FindCoordinator


def find_coordinator_v3(c: kw.Connection, key: str, key_type: int = 0):
    w = Writer().compact_string(key).int8(key_type).tagged_fields()
    r = c.request(FIND_COORDINATOR, 3, w.getvalue(), flexible_request=True)
    r.int32()
    err = r.int16()
    msg = r.compact_string()
    node, host, port = r.int32(), r.compact_string(), r.int32()
    return err, msg, node, host, port


def find_coordinator_v4(c: kw.Connection, keys: Sequence[str], key_type: int = 0):
    w = Writer().int8(key_type).compact_array_len(len(keys))
    for k in keys:
        w.compact_string(k)
    w.tagged_fields()
    r = c.request(FIND_COORDINATOR, 4, w.getvalue(), flexible_request=True)
    r.int32()
    out = []
    for _ in range(r.compact_array_len() or 0):
        key, node, host, port, err, msg = r.compact_string(), r.int32(), r.compact_string(), r.int32(), r.int16(), r.compact_string()
        r.tagged_fields()
        out.append((key, err, node, host, port, msg))
    return out


# ------------------------------------------------------------------ JoinGroup v5


@dataclass
class JoinResponse:
    error: int
    generation: int
    protocol: Optional[str]
    leader: str
    member_id: str
    members: list[tuple[str, Optional[str], bytes]] = field(default_factory=list)


def join_group_v5(
    c: kw.Connection,
    group: str,
    member_id: str = "",
    *,
    instance_id: Optional[str] = None,
    protocol_type: str = "consumer",
    protocols: Sequence[tuple[str, bytes]] = (("range", subscription(["t"])),),
    session_timeout_ms: int = 10000,
    rebalance_timeout_ms: int = 10000,
    timeout: float = 30.0,
) -> JoinResponse:
    w = Writer().string(group).int32(session_timeout_ms).int32(rebalance_timeout_ms).string(member_id)
    w.string(instance_id).string(protocol_type).array_len(len(protocols))
    for name, meta in protocols:
        w.string(name).bytes_(meta)
    r = c.request(JOIN_GROUP, 5, w.getvalue(), timeout=timeout)
    r.int32()
    err, gen = r.int16(), r.int32()
    proto, leader, mid = r.string(), r.string(), r.string()
    members = []
    for _ in range(r.array_len() or 0):
        members.append((r.string(), r.string(), r.bytes_()))
    return JoinResponse(err, gen, proto, leader, mid, members)


def sync_group_v3(c: kw.Connection, group: str, generation: int, member_id: str, *,
                  instance_id: Optional[str] = None,
                  assignments: Sequence[tuple[str, bytes]] = (), timeout: float = 30.0) -> tuple[int, bytes]:
    w = Writer().string(group).int32(generation).string(member_id).string(instance_id).array_len(len(assignments))
    for m, a in assignments:
        w.string(m).bytes_(a)
    r = c.request(SYNC_GROUP, 3, w.getvalue(), timeout=timeout)
    r.int32()
    return r.int16(), r.bytes_() or b""


def heartbeat_v3(c: kw.Connection, group: str, generation: int, member_id: str,
                 instance_id: Optional[str] = None) -> int:
    w = Writer().string(group).int32(generation).string(member_id).string(instance_id)
    r = c.request(HEARTBEAT, 3, w.getvalue())
    r.int32()
    return r.int16()


def leave_group_v3(c: kw.Connection, group: str, members: Sequence[tuple[str, Optional[str]]]):
    w = Writer().string(group).array_len(len(members))
    for m, i in members:
        w.string(m).string(i)
    r = c.request(LEAVE_GROUP, 3, w.getvalue())
    r.int32()
    top = r.int16()
    out = []
    for _ in range(r.array_len() or 0):
        out.append((r.string(), r.string(), r.int16()))
    return top, out


# ------------------------------------------------------------------ OffsetCommit


def offset_commit(c: kw.Connection, version: int, group: str, offsets: dict[tuple[str, int], tuple[int, Optional[str]]],
                  *, generation: int = -1, member_id: str = "", instance_id: Optional[str] = None) -> dict[tuple[str, int], int]:
    """OffsetCommit v7 (classic) or v8/v9 (flexible); returns {(topic, partition): error}."""
    by_topic: dict[str, list[tuple[int, int, Optional[str]]]] = {}
    for (t, p), (o, meta) in offsets.items():
        by_topic.setdefault(t, []).append((p, o, meta))
    flex = version >= 8
    w = Writer()
    s = w.compact_string if flex else w.string
    s(group)
    w.int32(generation)
    s(member_id)
    s(instance_id)
    (w.compact_array_len if flex else w.array_len)(len(by_topic))
    for t, parts in by_topic.items():
        s(t)
        (w.compact_array_len if flex else w.array_len)(len(parts))
        for p, o, meta in parts:
            w.int32(p).int64(o).int32(-1)
            s(meta)
            if flex:
                w.tagged_fields()
        if flex:
            w.tagged_fields()
    if flex:
        w.tagged_fields()
    r = c.request(OFFSET_COMMIT, version, w.getvalue(), flexible_request=flex)
    r.int32()
    out = {}
    for _ in range((r.compact_array_len() if flex else r.array_len()) or 0):
        t = r.compact_string() if flex else r.string()
        for _ in range((r.compact_array_len() if flex else r.array_len()) or 0):
            p, e = r.int32(), r.int16()
            if flex:
                r.tagged_fields()
            out[(t, p)] = e
        if flex:
            r.tagged_fields()
    return out


# ------------------------------------------------------------------ OffsetFetch


def offset_fetch_v7(c: kw.Connection, group: str, topics: Optional[dict[str, Sequence[int]]], require_stable: bool = False):
    """OffsetFetch v7 (flexible, one group). Returns (top-level error,
    {(topic, partition): (offset, leader_epoch, metadata, error)})."""
    w = Writer().compact_string(group)
    if topics is None:
        w.compact_array_len(None)
    else:
        w.compact_array_len(len(topics))
        for t, ps in topics.items():
            w.compact_string(t).compact_array_len(len(ps))
            for p in ps:
                w.int32(p)
            w.tagged_fields()
    w.boolean(require_stable).tagged_fields()
    r = c.request(OFFSET_FETCH, 7, w.getvalue(), flexible_request=True)
    r.int32()
    out = {}
    for _ in range(r.compact_array_len() or 0):
        t = r.compact_string()
        for _ in range(r.compact_array_len() or 0):
            p, o, epoch, meta, e = r.int32(), r.int64(), r.int32(), r.compact_string(), r.int16()
            r.tagged_fields()
            out[(t, p)] = (o, epoch, meta, e)
        r.tagged_fields()
    err = r.int16()
    r.tagged_fields()
    return err, out


def offset_fetch_v8(c: kw.Connection, groups: dict[str, Optional[dict[str, Sequence[int]]]], require_stable: bool = True):
    """Returns {group: (error, {(topic, partition): (offset, leader_epoch, metadata, error)})}."""
    w = Writer().compact_array_len(len(groups))
    for g, topics in groups.items():
        w.compact_string(g)
        if topics is None:
            w.compact_array_len(None)
        else:
            w.compact_array_len(len(topics))
            for t, ps in topics.items():
                w.compact_string(t).compact_array_len(len(ps))
                for p in ps:
                    w.int32(p)
                w.tagged_fields()
        w.tagged_fields()
    w.boolean(require_stable).tagged_fields()
    r = c.request(OFFSET_FETCH, 8, w.getvalue(), flexible_request=True)
    r.int32()
    out = {}
    for _ in range(r.compact_array_len() or 0):
        g = r.compact_string()
        offs = {}
        for _ in range(r.compact_array_len() or 0):
            t = r.compact_string()
            for _ in range(r.compact_array_len() or 0):
                p, o, epoch, meta, e = r.int32(), r.int64(), r.int32(), r.compact_string(), r.int16()
                r.tagged_fields()
                offs[(t, p)] = (o, epoch, meta, e)
            r.tagged_fields()
        err = r.int16()
        r.tagged_fields()
        out[g] = (err, offs)
    return out


# ------------------------------------------------------------------ admin


@dataclass
class DescribedGroup:
    error: int
    error_message: Optional[str]
    group: str
    state: str
    protocol_type: str
    protocol: str
    members: list[dict]


def describe_groups(c: kw.Connection, groups: Sequence[str], version: int = 5) -> dict[str, DescribedGroup]:
    assert version in (5, 6)
    w = Writer().compact_array_len(len(groups))
    for g in groups:
        w.compact_string(g)
    w.boolean(False).tagged_fields()
    r = c.request(DESCRIBE_GROUPS, version, w.getvalue(), flexible_request=True)
    r.int32()
    out = {}
    for _ in range(r.compact_array_len() or 0):
        err = r.int16()
        msg = r.compact_string() if version >= 6 else None
        gid, state, ptype, pdata = r.compact_string(), r.compact_string(), r.compact_string(), r.compact_string()
        members = []
        for _ in range(r.compact_array_len() or 0):
            m = {
                "member_id": r.compact_string(),
                "instance_id": r.compact_string(),
                "client_id": r.compact_string(),
                "host": r.compact_string(),
                "metadata": r.compact_bytes(),
                "assignment": r.compact_bytes(),
            }
            r.tagged_fields()
            members.append(m)
        r.int32()  # authorized operations
        r.tagged_fields()
        out[gid] = DescribedGroup(err, msg, gid, state, ptype, pdata, members)
    return out


def list_groups_v4(c: kw.Connection, states: Sequence[str] = ()) -> tuple[int, dict[str, tuple[str, str]]]:
    w = Writer().compact_array_len(len(states))
    for s in states:
        w.compact_string(s)
    w.tagged_fields()
    r = c.request(LIST_GROUPS, 4, w.getvalue(), flexible_request=True)
    r.int32()
    err = r.int16()
    out = {}
    for _ in range(r.compact_array_len() or 0):
        g, ptype, state = r.compact_string(), r.compact_string(), r.compact_string()
        r.tagged_fields()
        out[g] = (ptype, state)
    return err, out


def delete_groups_v2(c: kw.Connection, groups: Sequence[str]) -> dict[str, int]:
    w = Writer().compact_array_len(len(groups))
    for g in groups:
        w.compact_string(g)
    w.tagged_fields()
    r = c.request(DELETE_GROUPS, 2, w.getvalue(), flexible_request=True)
    r.int32()
    out = {}
    for _ in range(r.compact_array_len() or 0):
        g, e = r.compact_string(), r.int16()
        r.tagged_fields()
        out[g] = e
    return out


def offset_delete_v0(c: kw.Connection, group: str, topics: dict[str, Sequence[int]]) -> tuple[int, dict[tuple[str, int], int]]:
    w = Writer().string(group).array_len(len(topics))
    for t, ps in topics.items():
        w.string(t).array_len(len(ps))
        for p in ps:
            w.int32(p)
    r = c.request(OFFSET_DELETE, 0, w.getvalue())
    err = r.int16()
    r.int32()
    out = {}
    for _ in range(r.array_len() or 0):
        t = r.string()
        for _ in range(r.array_len() or 0):
            p, e = r.int32(), r.int16()
            out[(t, p)] = e
    return err, out


def join_and_sync(c: kw.Connection, group: str, topic: str, *, instance_id: Optional[str] = None,
                  parts: Sequence[int] = (0,)) -> tuple[str, int]:
    """A single-member group: join (twice if MEMBER_ID_REQUIRED) and sync as leader, assigning
    `parts` of `topic` to itself. Returns (member id, generation)."""
    j = join_group_v5(c, group, instance_id=instance_id, protocols=(("range", subscription([topic])),))
    if j.error == MEMBER_ID_REQUIRED:
        j = join_group_v5(c, group, j.member_id, instance_id=instance_id, protocols=(("range", subscription([topic])),))
    assert j.error == NONE, j
    err, _ = sync_group_v3(c, group, j.generation, j.member_id, instance_id=instance_id,
                           assignments=[(j.member_id, assignment({topic: list(parts)}))])
    assert err == NONE, err
    return j.member_id, j.generation


def unpack_i16(b: bytes) -> int:
    return struct.unpack(">h", b[:2])[0]
