//! The records of the `__consumer_offsets` log, in Apache Kafka's own key and value schemas
//! (`group-coordinator/src/main/resources/common/message/*.json`), so the log is readable with
//! Kafka's tools:
//!
//! ```text
//! key   int16 version | fields (non-flexible)                value (null = tombstone)
//! ─────────────────────────────────────────────────────────────────────────────────────────────
//! 1     OffsetCommitKey  group, topic, partition              OffsetCommitValue v3: offset,
//!                                                             leaderEpoch, metadata, commitTimestamp
//! 2     GroupMetadataKey group                                GroupMetadataValue v3: protocolType,
//!                                                             generation, protocol?, leader?,
//!                                                             currentStateTimestamp, members[
//!                                                             memberId, groupInstanceId?, clientId,
//!                                                             clientHost, rebalanceTimeout,
//!                                                             sessionTimeout, subscription, assignment]
//! ```
//!
//! Sediment writes exactly these versions; it reads offset values v0–v3 and group values v0–v3,
//! and skips (with a warning) any key version it does not know, as Kafka does since KIP-915.
//! Records go into ordinary uncompressed v2 batches (producer id -1, no sequence) that the
//! broker builds itself: the batch is appended to the partition like any produced batch.
//!
//! It lives in the wire crate, free of I/O, because more than the broker reads these records:
//! the fuzz target `group_records` and, reading the bucket, the archive tools.

use crate::batch::{self, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2, put_varint};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

/// Longest group id or group instance id accepted (bytes): they must fit Kafka's int16-length
/// record strings with room to spare.
pub const MAX_ID_BYTES: usize = 16 * 1024;

/// Key version of an offset commit record.
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value versions written.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A committed offset (OffsetCommitValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One member in a GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Metadata of the selected protocol only.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's persisted state (GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// One decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// `None` is a tombstone (the offset was deleted).
    Offset { group: String, topic: String, partition: i32, value: Option<OffsetValue> },
    /// `None` is a tombstone (the group was deleted).
    Group { group: String, value: Option<GroupValue> },
}

impl OffsetsRecord {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group, .. } | OffsetsRecord::Group { group, .. } => group,
        }
    }

    /// The record's key and value bytes.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        match self {
            OffsetsRecord::Offset { group, topic, partition, value } => {
                let mut k = BytesMut::with_capacity(10 + group.len() + topic.len());
                k.put_i16(OFFSET_COMMIT_KEY_VERSION);
                put_str(&mut k, group);
                put_str(&mut k, topic);
                k.put_i32(*partition);
                let v = value.as_ref().map(|v| {
                    let mut b = BytesMut::with_capacity(24 + v.metadata.len());
                    b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                    b.freeze()
                });
                (k.freeze(), v)
            }
            OffsetsRecord::Group { group, value } => {
                let mut k = BytesMut::with_capacity(4 + group.len());
                k.put_i16(GROUP_METADATA_KEY_VERSION);
                put_str(&mut k, group);
                let v = value.as_ref().map(|g| {
                    let mut b = BytesMut::with_capacity(64);
                    b.put_i16(GROUP_METADATA_VALUE_VERSION);
                    put_str(&mut b, &g.protocol_type);
                    b.put_i32(g.generation);
                    put_nullable_str(&mut b, g.protocol.as_deref());
                    put_nullable_str(&mut b, g.leader.as_deref());
                    b.put_i64(g.state_timestamp);
                    b.put_i32(g.members.len() as i32);
                    for m in &g.members {
                        put_str(&mut b, &m.member_id);
                        put_nullable_str(&mut b, m.instance_id.as_deref());
                        put_str(&mut b, &m.client_id);
                        put_str(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (k.freeze(), v)
            }
        }
    }

    /// Decodes a record. `Ok(None)` for a key version Sediment does not know (skipped).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetsRecord>, String> {
        let mut k = key;
        let version = get_i16(&mut k)?;
        match version {
            0 | 1 => {
                let group = get_str(&mut k)?;
                let topic = get_str(&mut k)?;
                let partition = get_i32(&mut k)?;
                let value = match value {
                    None => None,
                    Some(mut v) => Some(decode_offset_value(&mut v)?),
                };
                Ok(Some(OffsetsRecord::Offset { group, topic, partition, value }))
            }
            2 => {
                let group = get_str(&mut k)?;
                let value = match value {
                    None => None,
                    Some(mut v) => Some(decode_group_value(&mut v)?),
                };
                Ok(Some(OffsetsRecord::Group { group, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(v: &mut &[u8]) -> Result<OffsetValue, String> {
    let version = get_i16(v)?;
    if !(0..=3).contains(&version) {
        return Err(format!("offset commit value version {version} is not supported"));
    }
    let offset = get_i64(v)?;
    let leader_epoch = if version >= 3 { get_i32(v)? } else { -1 };
    let metadata = get_str(v)?;
    let commit_timestamp = get_i64(v)?;
    if version == 1 {
        get_i64(v)?; // expireTimestamp
    }
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
}

fn decode_group_value(v: &mut &[u8]) -> Result<GroupValue, String> {
    let version = get_i16(v)?;
    if !(0..=3).contains(&version) {
        return Err(format!("group metadata value version {version} is not supported"));
    }
    let protocol_type = get_str(v)?;
    let generation = get_i32(v)?;
    let protocol = get_nullable_str(v)?;
    let leader = get_nullable_str(v)?;
    let state_timestamp = if version >= 2 { get_i64(v)? } else { -1 };
    let n = get_i32(v)?;
    if n < 0 {
        return Err("negative member count".into());
    }
    let mut members = Vec::with_capacity((n as usize).min(1024));
    for _ in 0..n {
        let member_id = get_str(v)?;
        let instance_id = if version >= 3 { get_nullable_str(v)? } else { None };
        let client_id = get_str(v)?;
        let client_host = get_str(v)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(v)? } else { -1 };
        let session_timeout_ms = get_i32(v)?;
        let subscription = get_bytes(v)?;
        let assignment = get_bytes(v)?;
        members.push(MemberValue { member_id, instance_id, client_id, client_host, rebalance_timeout_ms, session_timeout_ms, subscription, assignment });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
}

// ----- primitives (Kafka's classic encoding: int16-length strings, int32-length bytes) -----

/// Kafka's classic strings carry an int16 length: longer ones are cut at a character boundary
/// (the handlers refuse ids anywhere near that long, see [`MAX_ID_BYTES`]).
fn put_str(b: &mut BytesMut, s: &str) {
    let mut len = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_str(b, s),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn need(b: &[u8], n: usize) -> Result<(), String> {
    if b.len() < n { Err(format!("record truncated: need {n} bytes, have {}", b.len())) } else { Ok(()) }
}

fn get_i16(b: &mut &[u8]) -> Result<i16, String> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Result<i32, String> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Result<i64, String> {
    need(b, 8)?;
    Ok(b.get_i64())
}

fn get_nullable_str(b: &mut &[u8]) -> Result<Option<String>, String> {
    let n = get_i16(b)?;
    if n < 0 {
        return Ok(None);
    }
    need(b, n as usize)?;
    let s = std::str::from_utf8(&b[..n as usize]).map_err(|e| e.to_string())?.to_string();
    b.advance(n as usize);
    Ok(Some(s))
}

fn get_str(b: &mut &[u8]) -> Result<String, String> {
    get_nullable_str(b)?.ok_or_else(|| "null string in a non-nullable field".to_string())
}

fn get_bytes(b: &mut &[u8]) -> Result<Bytes, String> {
    let n = get_i32(b)?;
    if n < 0 {
        return Ok(Bytes::new());
    }
    need(b, n as usize)?;
    let v = Bytes::copy_from_slice(&b[..n as usize]);
    b.advance(n as usize);
    Ok(v)
}

// ----- batches -----

/// Builds one uncompressed v2 batch (base offset 0, patched on append) holding `records`, all
/// with timestamp `now_ms`. Producer id -1 and base sequence -1, as a non-idempotent producer.
pub fn build_batch(records: &[OffsetsRecord], now_ms: i64) -> BytesMut {
    let mut body = BytesMut::with_capacity(64 * records.len());
    let mut rec = BytesMut::with_capacity(256);
    for (i, r) in records.iter().enumerate() {
        let (key, value) = r.encode();
        rec.clear();
        rec.put_u8(0); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_varint(&mut rec, key.len() as i64);
        rec.put_slice(&key);
        match &value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.put_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(0); // base offset
    b.put_i32((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(-1); // partition leader epoch (patched on append)
    b.put_i8(MAGIC_V2);
    b.put_u32(0); // crc, below
    b.put_i16(0); // attributes: no compression, create time
    b.put_i32((n - 1).max(0)); // last offset delta
    b.put_i64(now_ms); // base timestamp
    b.put_i64(now_ms); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(n);
    b.put_slice(&body);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Splits `records` into batches of at most about `max_batch_bytes` each (a single record
/// larger than that gets a batch of its own).
pub fn build_batches(records: &[OffsetsRecord], now_ms: i64, max_batch_bytes: usize) -> Vec<BytesMut> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, r) in records.iter().enumerate() {
        let approx = approx_size(r);
        if i > start && size + approx > max_batch_bytes {
            out.push(build_batch(&records[start..i], now_ms));
            start = i;
            size = 0;
        }
        size += approx;
    }
    if start < records.len() {
        out.push(build_batch(&records[start..], now_ms));
    }
    out
}

fn approx_size(r: &OffsetsRecord) -> usize {
    match r {
        OffsetsRecord::Offset { group, topic, value, .. } => 40 + group.len() + topic.len() + value.as_ref().map_or(0, |v| v.metadata.len()),
        OffsetsRecord::Group { group, value } => {
            40 + group.len()
                + value.as_ref().map_or(0, |g| {
                    g.members.iter().map(|m| 40 + m.member_id.len() + m.client_id.len() + m.subscription.len() + m.assignment.len()).sum::<usize>()
                })
        }
    }
}

/// What [`decode_batches`] read.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The records, with their offsets.
    pub records: Vec<(i64, OffsetsRecord)>,
    /// The offset after the last whole batch.
    pub next: Option<i64>,
    /// Records that could not be decoded (skipped); an unreadable batch counts as one.
    pub bad: usize,
    /// Batches whose records did not even walk (forged counts, lengths, bombs).
    pub unreadable_batches: usize,
}

/// Decodes every record of the whole batches in `data` (a read of the log).
pub fn decode_batches(data: &Bytes) -> Decoded {
    let mut d = Decoded::default();
    for (h, raw) in batch::BatchIter::new(data) {
        d.next = Some(h.next_offset());
        if h.is_control() {
            continue;
        }
        // walk first (bounded: counts, lengths, decompressed size), so the full decode below
        // never allocates from a forged count or inflates a bomb
        if let Err(e) = crate::records::walk(raw, Default::default(), |_| std::ops::ControlFlow::Continue(())) {
            tracing::warn!(offset = h.base_offset, error = %e, "skipping unreadable batch in the offsets log");
            d.unreadable_batches += 1;
            d.bad += 1;
            continue;
        }
        let mut buf = Bytes::copy_from_slice(raw);
        let set = match RecordBatchDecoder::decode(&mut buf) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(offset = h.base_offset, error = %e, "skipping undecodable batch in the offsets log");
                d.bad += h.records_count.max(1) as usize;
                continue;
            }
        };
        for r in set.records {
            let Some(key) = r.key.as_ref() else {
                d.bad += 1;
                continue;
            };
            match OffsetsRecord::decode(key, r.value.as_deref()) {
                Ok(Some(rec)) => d.records.push((r.offset, rec)),
                Ok(None) => tracing::debug!(offset = r.offset, "skipping offsets log record with an unknown key version"),
                Err(e) => {
                    tracing::warn!(offset = r.offset, error = %e, "skipping undecodable offsets log record");
                    d.bad += 1;
                }
            }
        }
    }
    d
}

/// Kafka's partition for a group id: `abs(javaStringHashCode(group)) % partitions`
/// (`Utils.abs` maps `i32::MIN` to 0), so a group lands on the same partition number as in Kafka.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<OffsetsRecord> {
        vec![
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(OffsetValue { offset: 42, leader_epoch: 7, metadata: "meta".into(), commit_timestamp: 1000 }),
            },
            OffsetsRecord::Offset { group: "g".into(), topic: "t".into(), partition: 4, value: None },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    state_timestamp: 99,
                    members: vec![MemberValue {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 45_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
            OffsetsRecord::Group { group: "h".into(), value: None },
        ]
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let recs = sample();
        let b = build_batch(&recs, 1234).freeze();
        batch::verify_crc(&b).unwrap();
        let Decoded { records: got, next, bad, .. } = decode_batches(&b);
        assert_eq!(bad, 0);
        assert_eq!(next, Some(recs.len() as i64));
        assert_eq!(got.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), recs);
        assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn kafka_key_layout() {
        let (k, v) = OffsetsRecord::Offset {
            group: "ab".into(),
            topic: "t".into(),
            partition: 1,
            value: Some(OffsetValue { offset: 2, leader_epoch: -1, metadata: String::new(), commit_timestamp: 3 }),
        }
        .encode();
        assert_eq!(&k[..], &[0, 1, 0, 2, b'a', b'b', 0, 1, b't', 0, 0, 0, 1]);
        let v = v.unwrap();
        assert_eq!(&v[..2], &[0, 3]);
        assert_eq!(v.len(), 2 + 8 + 4 + 2 + 8);
    }

    #[test]
    fn unknown_key_versions_are_skipped() {
        assert_eq!(OffsetsRecord::decode(&[0, 9, 0, 0], None).unwrap(), None);
        assert!(OffsetsRecord::decode(&[0, 1, 0], None).is_err());
    }

    #[test]
    fn batches_split_by_size() {
        let recs: Vec<_> = (0..100)
            .map(|p| OffsetsRecord::Offset {
                group: "g".into(),
                topic: "topic".into(),
                partition: p,
                value: Some(OffsetValue { offset: 1, leader_epoch: -1, metadata: "x".repeat(100), commit_timestamp: 0 }),
            })
            .collect();
        let batches = build_batches(&recs, 0, 2000);
        assert!(batches.len() > 5);
        let total: usize = batches.iter().map(|b| decode_batches(&b.clone().freeze()).records.len()).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn java_hash_partitioning() {
        // "".hashCode() == 0; "a".hashCode() == 97; "polygenelubricants".hashCode() == i32::MIN
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // "my-group".hashCode() == -1_906_497_762
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
    }
}
