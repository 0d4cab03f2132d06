//! ListOffsets: latest is the high watermark (the next offset to be written and visible),
//! earliest the log start (remote segments included), EARLIEST_LOCAL the local log start,
//! LATEST_TIERED the last offset in the bucket; MAX_TIMESTAMP and timestamps use the records'
//! own timestamps found through the time index and then the exact record inside the batch —
//! in the remote segments' time indexes first when the bucket holds older records than the
//! local disk (those lookups await the read-through cache, so the reply may come later).

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use sediment_protocol::{ErrorCode, records};

use super::Reply;
use crate::broker::Broker;
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The first record at or after `t` in `batch`. A batch whose records cannot be read (stored
/// before produce validation walked records, or damaged) is served around: the answer falls
/// back to the batch's start and the metric counts it; the lookup never allocates from it.
fn search(batch: &[u8], h: &sediment_protocol::batch::BatchHeader, t: i64) -> Option<(i64, i64)> {
    match records::first_offset_at_or_after(batch, t) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(base_offset = h.base_offset, error = %e, "stored batch unreadable; answering with its first offset");
            sediment_telemetry::metrics().unreadable_batch();
            Some((h.base_offset, h.max_timestamp))
        }
    }
}

/// The first record at or after `t` in a batch found by timestamp (never below `start`), if it
/// is below the high watermark.
fn record_at(batch: &[u8], t: i64, start: i64, hw: i64) -> Result<(i64, i64), ErrorCode> {
    let Ok(h) = sediment_protocol::batch::BatchHeader::parse(batch) else { return Err(ErrorCode::KafkaStorageError) };
    // The batch's max timestamp is >= t, so some record qualifies; if none is found fall back
    // to the batch start, which is never after the answer.
    let (off, found_ts) = search(batch, &h, t).unwrap_or((h.base_offset, h.max_timestamp));
    // DeleteRecords may put the log start inside a batch: never answer below it.
    let off = off.max(start);
    if off >= hw { Ok((-1, -1)) } else { Ok((off, found_ts)) }
}

/// The record with the batch's max timestamp, if it is below the high watermark.
fn max_record(batch: &[u8], hw: i64) -> Result<(i64, i64), ErrorCode> {
    let Ok(h) = sediment_protocol::batch::BatchHeader::parse(batch) else { return Err(ErrorCode::KafkaStorageError) };
    match search(batch, &h, h.max_timestamp) {
        Some((off, t)) if off < hw => Ok((off, t)),
        Some(_) => Ok((-1, -1)),
        None => Ok((h.base_offset, h.max_timestamp)),
    }
}

/// (offset, timestamp) for one query, or an error code.
async fn lookup(p: &Partition, ts: i64, version: i16) -> Result<(i64, i64), ErrorCode> {
    let (start, hw, _) = p.offsets();
    match ts {
        LATEST => Ok((hw, -1)),
        EARLIEST => Ok((p.log_start_offset_all(), -1)),
        EARLIEST_LOCAL if version >= 8 => Ok((start, -1)),
        LATEST_TIERED if version >= 9 => Ok((p.remote().map_or(-1, |r| r.latest_tiered_offset()), -1)),
        MAX_TIMESTAMP if version >= 7 => {
            let local = p.with_log(|l| l.find_batch_with_max_timestamp()).map_err(|e| {
                tracing::warn!(error = %e, "max timestamp lookup failed");
                ErrorCode::KafkaStorageError
            })?;
            let local_max = local.as_deref().and_then(|b| sediment_protocol::batch::BatchHeader::parse(b).ok()).map(|h| h.max_timestamp);
            // the bucket's records below the local log may hold the largest timestamp; on a tie
            // theirs is the earlier offset, which Kafka answers
            if let Some(r) = p.remote() {
                let remote_max = r.manifest_snapshot().segments.iter().filter(|s| s.base_offset < start).map(|s| s.max_timestamp).max();
                if let Some(rm) = remote_max.filter(|rm| *rm >= 0 && local_max.is_none_or(|lm| *rm >= lm)) {
                    match r.find_batch_by_timestamp(rm).await {
                        Ok(Some(batch)) => return max_record(&batch, hw),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "remote max timestamp lookup failed");
                            return Err(crate::error::tier_error_code(e.kind()));
                        }
                    }
                }
            }
            match local {
                Some(batch) => max_record(&batch, hw),
                None => Ok((-1, -1)),
            }
        }
        t if t >= 0 => {
            // the bucket holds the records below the local log start: look there first
            if let Some(r) = p.remote()
                && r.manifest_snapshot().segments.iter().any(|s| s.max_timestamp >= t && s.base_offset < start)
            {
                match r.find_batch_by_timestamp(t).await {
                    Ok(Some(batch)) => return record_at(&batch, t, p.log_start_offset_all(), hw),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "remote timestamp lookup failed");
                        return Err(crate::error::tier_error_code(e.kind()));
                    }
                }
            }
            let batch = p.with_log(|l| l.find_batch_by_timestamp(t)).map_err(|e| {
                tracing::warn!(error = %e, "timestamp lookup failed");
                ErrorCode::KafkaStorageError
            })?;
            let Some(batch) = batch else { return Ok((-1, -1)) };
            record_at(&batch, t, start, hw)
        }
        _ => Err(ErrorCode::InvalidRequest),
    }
}

pub fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> Reply {
    // Answered at once unless a lookup has to read the bucket: then the same future finishes
    // in the reply (responses still go out in request order).
    let mut fut = Box::pin(respond(broker.clone(), req, version));
    match (&mut fut).now_or_never() {
        Some(r) => Reply::Ready(ResponseKind::ListOffsets(r)),
        None => Reply::Later(async move { ResponseKind::ListOffsets(fut.await) }.boxed()),
    }
}

async fn respond(broker: Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    for t in req.topics {
        let topic = broker.topic(t.name.0.as_str());
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for q in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = q.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            let part = match topic.as_ref() {
                Some(t) => t.leader_partition(q.partition_index),
                None => Err(ErrorCode::UnknownTopicOrPartition),
            };
            match part {
                Err(code) => pr.error_code = code.code(),
                Ok(p) => {
                    if version >= 4 && q.current_leader_epoch >= 0 && q.current_leader_epoch != p.leader_epoch() {
                        pr.error_code =
                            if q.current_leader_epoch > p.leader_epoch() { ErrorCode::UnknownLeaderEpoch.code() } else { ErrorCode::FencedLeaderEpoch.code() };
                    } else {
                        match lookup(p, q.timestamp, version).await {
                            Ok((offset, ts)) => {
                                pr.offset = offset;
                                pr.timestamp = ts;
                                if version >= 4 {
                                    pr.leader_epoch = p.leader_epoch();
                                }
                            }
                            Err(code) => pr.error_code = code.code(),
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}
