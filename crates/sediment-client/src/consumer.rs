//! The consumer: a fetch loop over one or all partitions of a topic, without
//! consumer groups.
//!
//! Start positions come from ListOffsets (earliest = log start, latest = high
//! watermark) or are given explicitly. Each [`Consumer::poll`] sends one Fetch
//! per partition leader, concurrently, with the long-poll parameters of
//! [`ConsumerConfig`], and decodes the returned record batches with
//! `RecordBatchDecoder` (every codec, CRC checked). A batch can start before
//! the requested offset (the broker returns whole batches), so records below
//! the position are skipped; a partial batch at the end of a response is left
//! for the next fetch. Control batches are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::conn::{Client, TopicInfo};
use crate::error::{Error, Result};

/// ListOffsets timestamp meaning "the log start offset".
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp meaning "the high watermark".
pub const LATEST_TIMESTAMP: i64 = -1;

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset in every partition read.
    At(i64),
    /// The first offset whose timestamp is at or after this time (ms).
    Timestamp(i64),
}

/// Long-poll and size parameters of Fetch.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering.
    pub min_bytes: i32,
    /// Response size limit.
    pub max_bytes: i32,
    /// Per-partition size limit.
    pub partition_max_bytes: i32,
    /// 0 = read_uncommitted, 1 = read_committed.
    pub isolation_level: i8,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 64 * 1024 * 1024,
            partition_max_bytes: 8 * 1024 * 1024,
            isolation_level: 0,
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers (duplicate keys merged by the decoder).
    pub headers: IndexMap<StrBytes, Option<Bytes>>,
}

/// Offsets of a set of partitions for `timestamp` (`EARLIEST_TIMESTAMP`,
/// `LATEST_TIMESTAMP` or a time in ms), asking each partition's leader.
/// Partitions for which the broker found no offset map to -1.
pub async fn list_offsets(client: &Client, topic: &str, partitions: &[i32], timestamp: i64) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<i32> = partitions.to_vec();
    let mut last_err: Option<Error> = None;
    for attempt in 0..10 {
        if todo.is_empty() {
            return Ok(out);
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            client.refresh_topic(topic).await?;
        }
        let info = client.topic(topic).await?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in &todo {
            if info.partition(p).is_none() {
                return Err(Error::UnknownPartition { topic: topic.to_owned(), partition: p });
            }
            by_leader.entry(info.leader(p).unwrap_or(-1)).or_default().push(p);
        }
        let mut retry = Vec::new();
        for (leader, parts) in by_leader {
            if leader < 0 {
                last_err = Some(Error::broker(format!("cannot list offsets of topic \"{topic}\""), ResponseError::LeaderNotAvailable.code(), None));
                retry.extend(parts);
                continue;
            }
            match list_offsets_at(client, leader, topic, &parts, timestamp).await {
                Ok(results) => {
                    for (p, r) in results {
                        match r {
                            Ok(o) => {
                                out.insert(p, o);
                            }
                            Err(e) if e.is_retriable() => {
                                last_err = Some(e);
                                retry.push(p);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.is_retriable() => {
                    last_err = Some(e);
                    retry.extend(parts);
                }
                Err(e) => return Err(e),
            }
        }
        todo = retry;
    }
    match last_err {
        Some(e) if !todo.is_empty() => Err(e),
        _ => Ok(out),
    }
}

async fn list_offsets_at(client: &Client, leader: i32, topic: &str, partitions: &[i32], timestamp: i64) -> Result<Vec<(i32, Result<i64>)>> {
    let conn = client.node_connection(leader).await?;
    let timeout_ms = i32::try_from(conn.request_timeout().as_millis()).unwrap_or(i32::MAX);
    let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_isolation_level(0).with_timeout_ms(timeout_ms).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(partitions.iter().map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp)).collect()),
    ]);
    let resp = conn.send(&req).await?;
    let mut out = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let found = resp.topics.iter().filter(|t| &**t.name == topic).flat_map(|t| t.partitions.iter()).find(|r| r.partition_index == p);
        let r = match found {
            None => Err(Error::protocol(conn.addr(), format!("ListOffsets response lacks partition {p}"))),
            Some(r) if r.error_code != 0 => Err(Error::broker(format!("cannot list offsets of topic \"{topic}\" partition {p}"), r.error_code, None)),
            Some(r) => Ok(r.offset),
        };
        out.push((p, r));
    }
    Ok(out)
}

/// Read position and last known bounds of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPosition {
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub offset: i64,
    /// High watermark from the last fetch (or the start).
    pub high_watermark: i64,
    /// Log start offset from the last fetch (-1 if unknown).
    pub log_start_offset: i64,
    /// Current fetch size limit (doubles when a batch does not fit).
    max_bytes: i32,
}

/// Reads one topic from given positions.
pub struct Consumer {
    client: Arc<Client>,
    topic: String,
    topic_bytes: StrBytes,
    info: Arc<TopicInfo>,
    config: ConsumerConfig,
    positions: Vec<PartitionPosition>,
    stale_metadata: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("topic", &self.topic).field("positions", &self.positions).finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `partitions` of `topic` (all partitions if `None`), starting at `start`.
    pub async fn new(client: Arc<Client>, topic: &str, partitions: Option<&[i32]>, start: StartOffset, config: ConsumerConfig) -> Result<Consumer> {
        let info = client.refresh_topic(topic).await?;
        let parts: Vec<i32> = match partitions {
            Some(ps) => {
                for &p in ps {
                    if info.partition(p).is_none() {
                        return Err(Error::UnknownPartition { topic: topic.to_owned(), partition: p });
                    }
                }
                ps.to_vec()
            }
            None => info.partitions.iter().map(|p| p.partition).collect(),
        };
        let latest = list_offsets(&client, topic, &parts, LATEST_TIMESTAMP).await?;
        let earliest = list_offsets(&client, topic, &parts, EARLIEST_TIMESTAMP).await?;
        let starts = match start {
            StartOffset::Earliest => earliest.clone(),
            StartOffset::Latest => latest.clone(),
            StartOffset::At(o) => parts.iter().map(|&p| (p, o)).collect(),
            StartOffset::Timestamp(ts) => {
                // No offset at or after `ts` means: start at the end.
                let mut m = list_offsets(&client, topic, &parts, ts).await?;
                for (p, o) in &mut m {
                    if *o < 0 {
                        *o = latest.get(p).copied().unwrap_or(0);
                    }
                }
                m
            }
        };
        let positions = parts
            .iter()
            .map(|&p| PartitionPosition {
                partition: p,
                offset: starts.get(&p).copied().unwrap_or(0),
                high_watermark: latest.get(&p).copied().unwrap_or(-1),
                log_start_offset: earliest.get(&p).copied().unwrap_or(-1),
                max_bytes: config.partition_max_bytes.max(1),
            })
            .collect();
        Ok(Consumer { client, topic: topic.to_owned(), topic_bytes: StrBytes::from_string(topic.to_owned()), info, config, positions, stale_metadata: false })
    }

    /// Topic being read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Current positions.
    pub fn positions(&self) -> &[PartitionPosition] {
        &self.positions
    }

    /// Whether every partition's position has reached its last known high watermark.
    pub fn caught_up(&self) -> bool {
        self.positions.iter().all(|p| p.offset >= p.high_watermark)
    }

    /// Records behind the last known high watermarks, summed over partitions.
    pub fn lag(&self) -> i64 {
        self.positions.iter().map(|p| (p.high_watermark - p.offset).max(0)).sum()
    }

    /// One fetch round: at most `max_wait` (plus network time) per leader.
    /// Returns the records read, in offset order per partition; may be empty.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        let mut out = Vec::new();
        self.poll_into(&mut out).await?;
        Ok(out)
    }

    /// Like [`Consumer::poll`], appending to `out`; returns how many records were added.
    pub async fn poll_into(&mut self, out: &mut Vec<ConsumedRecord>) -> Result<usize> {
        if self.stale_metadata {
            match self.client.refresh_topic(&self.topic).await {
                Ok(info) => {
                    self.info = info;
                    self.stale_metadata = false;
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(topic = %self.topic, error = %e, "metadata refresh failed, will retry");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, pos) in self.positions.iter().enumerate() {
            by_leader.entry(self.info.leader(pos.partition).unwrap_or(-1)).or_default().push(i);
        }
        if let Some(leaderless) = by_leader.remove(&-1) {
            tracing::debug!(topic = %self.topic, partitions = leaderless.len(), "partitions without leader");
            self.stale_metadata = true;
            if by_leader.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(0);
            }
        }
        let requests: Vec<(i32, Vec<usize>, FetchRequest)> = by_leader
            .into_iter()
            .map(|(leader, idxs)| {
                let req = self.fetch_request(&idxs);
                (leader, idxs, req)
            })
            .collect();
        let client = &self.client;
        let wait = self.config.max_wait;
        let topic_id = self.info.id;
        let results = futures::future::join_all(requests.into_iter().map(|(leader, idxs, req)| async move {
            let res = async {
                let conn = client.node_connection(leader).await?;
                let cap = topic_id.is_nil().then_some(12);
                let version = conn.version_capped(ApiKey::Fetch, cap)?;
                let resp: FetchResponse = conn.send_at(&req, version, conn.request_timeout() + wait).await?;
                Ok::<_, Error>((resp, version))
            }
            .await;
            (idxs, res)
        }))
        .await;
        let before = out.len();
        let mut first_err: Option<Error> = None;
        for (idxs, res) in results {
            let (resp, version) = match res {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "fetch failed, will retry");
                    self.stale_metadata = true;
                    continue;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            if resp.error_code != 0 {
                let e = Error::broker(format!("cannot fetch from topic \"{}\"", self.topic), resp.error_code, None);
                if e.is_retriable() {
                    self.stale_metadata = true;
                    continue;
                }
                first_err.get_or_insert(e);
                continue;
            }
            for topic in resp.responses {
                let ours = if version >= 13 { topic.topic_id == self.info.id } else { *topic.topic == self.topic_bytes };
                if !ours {
                    continue;
                }
                for pd in topic.partitions {
                    let Some(&i) = idxs.iter().find(|&&i| self.positions[i].partition == pd.partition_index) else {
                        continue;
                    };
                    if let Err(e) = self.apply_partition(i, pd, out) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if self.stale_metadata && out.len() == before {
            // Leadership is moving; do not spin on immediate errors.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(out.len() - before)
    }

    fn fetch_request(&self, idxs: &[usize]) -> FetchRequest {
        let partitions = idxs
            .iter()
            .map(|&i| {
                let pos = &self.positions[i];
                FetchPartition::default().with_partition(pos.partition).with_fetch_offset(pos.offset).with_partition_max_bytes(pos.max_bytes)
            })
            .collect();
        let max_wait_ms = i32::try_from(self.config.max_wait.as_millis()).unwrap_or(i32::MAX);
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.max_bytes)
            .with_isolation_level(self.config.isolation_level)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(TopicName(self.topic_bytes.clone())).with_topic_id(self.info.id).with_partitions(partitions)])
    }

    fn apply_partition(&mut self, i: usize, pd: PartitionData, out: &mut Vec<ConsumedRecord>) -> Result<()> {
        let pos = &mut self.positions[i];
        if pd.error_code != 0 {
            let code = ResponseError::try_from_code(pd.error_code).unwrap_or(ResponseError::Unknown(pd.error_code));
            if code == ResponseError::OffsetOutOfRange {
                return Err(Error::Invalid(format!(
                    "offset {} is out of range for partition {} of topic \"{}\" (log start {}, high watermark {})",
                    pos.offset, pos.partition, self.topic, pos.log_start_offset, pos.high_watermark
                )));
            }
            let e = Error::broker(format!("cannot fetch topic \"{}\" partition {}", self.topic, pos.partition), pd.error_code, None);
            if e.is_retriable() {
                self.stale_metadata = true;
                return Ok(());
            }
            return Err(e);
        }
        if pd.high_watermark >= 0 {
            pos.high_watermark = pd.high_watermark;
        }
        if pd.log_start_offset >= 0 {
            pos.log_start_offset = pd.log_start_offset;
        }
        let Some(records) = pd.records else { return Ok(()) };
        if records.is_empty() {
            return Ok(());
        }
        let (next, complete_batches) = decode_batches(records, pos.partition, pos.offset, out)
            .map_err(|detail| Error::Invalid(format!("cannot decode records of topic \"{}\" partition {}: {detail}", self.topic, pos.partition)))?;
        if complete_batches == 0 {
            // The first batch did not fit the fetch size: ask for more next time.
            if pos.max_bytes >= self.config.max_bytes {
                return Err(Error::Invalid(format!(
                    "record batch at offset {} of topic \"{}\" partition {} is larger than the fetch limit of {} bytes",
                    pos.offset, self.topic, pos.partition, self.config.max_bytes
                )));
            }
            pos.max_bytes = pos.max_bytes.saturating_mul(2).min(self.config.max_bytes);
        }
        pos.offset = pos.offset.max(next);
        Ok(())
    }
}

/// Decodes the complete record batches in `records`, appending the records at
/// or after `position` to `out`. Returns the offset after the last complete
/// batch (at least `position`) and the number of complete batches seen.
pub fn decode_batches(mut records: Bytes, partition: i32, position: i64, out: &mut Vec<ConsumedRecord>) -> std::result::Result<(i64, usize), String> {
    let mut next = position;
    let mut complete = 0usize;
    while records.len() >= 12 {
        let base = i64::from_be_bytes(records[0..8].try_into().map_err(|_| "short batch header")?);
        let len = i32::from_be_bytes(records[8..12].try_into().map_err(|_| "short batch header")?);
        let len = usize::try_from(len).map_err(|_| format!("negative batch length at offset {base}"))?;
        if records.len() < 12 + len {
            break; // A partial batch at the end of the response.
        }
        let mut batch = records.split_to(12 + len);
        complete += 1;
        if batch.len() < 61 {
            return Err(format!("record batch at offset {base} is too short ({} bytes)", batch.len()));
        }
        let magic = batch[16];
        if magic != 2 {
            return Err(format!("record batch at offset {base} has unsupported format v{magic}"));
        }
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let last_delta = i32::from_be_bytes([batch[23], batch[24], batch[25], batch[26]]);
        let batch_next = base.saturating_add(i64::from(last_delta)).saturating_add(1);
        let control = attributes & (1 << 5) != 0;
        if batch_next > next && !control {
            let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| format!("{e}"))?;
            out.reserve(set.records.len());
            for r in set.records {
                if r.offset < next || r.control {
                    continue;
                }
                out.push(ConsumedRecord { partition, offset: r.offset, timestamp: r.timestamp, key: r.key, value: r.value, headers: r.headers });
            }
        }
        next = next.max(batch_next);
    }
    Ok((next, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::{Codec, encode_batch};
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, TimestampType};

    fn batch_at(base: i64, n: usize, codec: Codec) -> Bytes {
        let mut records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: 0,
                timestamp: 1000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: IndexMap::new(),
            })
            .collect();
        let b = encode_batch(&mut records, codec, 64 * n).unwrap();
        // The broker assigns the base offset by patching the first 8 bytes.
        let mut m = BytesMut::from(&b[..]);
        m[..8].copy_from_slice(&base.to_be_bytes());
        m.freeze()
    }

    #[test]
    fn skips_records_below_position_and_advances_past_batches() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch_at(10, 5, Codec::None));
        all.extend_from_slice(&batch_at(15, 5, Codec::Zstd));
        let mut out = Vec::new();
        let (next, n) = decode_batches(all.freeze(), 3, 12, &mut out).unwrap();
        assert_eq!((next, n), (20, 2));
        let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (12..20).collect::<Vec<_>>());
        assert!(out.iter().all(|r| r.partition == 3));
        assert_eq!(out[0].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(out[0].timestamp, 1002);
    }

    #[test]
    fn partial_trailing_batch_is_left_for_next_fetch() {
        let first = batch_at(0, 3, Codec::None);
        let second = batch_at(3, 3, Codec::Lz4);
        let mut all = BytesMut::new();
        all.extend_from_slice(&first);
        all.extend_from_slice(&second[..second.len() - 5]);
        let mut out = Vec::new();
        let (next, n) = decode_batches(all.freeze(), 0, 0, &mut out).unwrap();
        assert_eq!((next, n, out.len()), (3, 1, 3));
        // Only a partial batch: nothing complete.
        let mut out = Vec::new();
        let (next, n) = decode_batches(second.slice(..20), 0, 3, &mut out).unwrap();
        assert_eq!((next, n, out.len()), (3, 0, 0));
    }

    #[test]
    fn corrupt_batch_is_an_error() {
        let b = batch_at(0, 3, Codec::None);
        let mut m = BytesMut::from(&b[..]);
        let last = m.len() - 1;
        m[last] ^= 0xff;
        let mut out = Vec::new();
        assert!(decode_batches(m.freeze(), 0, 0, &mut out).is_err());
    }
}
