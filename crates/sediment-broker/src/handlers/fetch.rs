//! Fetch with long-poll. The first pass runs in request order; if it finds fewer than `min_bytes`
//! the handler returns a future that waits for any requested partition's high watermark to move
//! (or `max_wait_ms`, or shutdown) and reads again. Records are served as stored (compressed
//! batches stay compressed). A partition with nothing new carries empty records, never null:
//! librdkafka drops a whole response with a null record set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use sediment_protocol::ErrorCode;
use uuid::Uuid;

use super::Reply;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::{Partition, ReadSource};

/// One requested partition, resolved once.
struct Want {
    topic_idx: usize,
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    partition: Result<Arc<Partition>, ErrorCode>,
}

struct Plan {
    version: i16,
    max_bytes: usize,
    min_bytes: usize,
    topics: Vec<(kafka_protocol::messages::TopicName, Uuid)>,
    wants: Vec<Want>,
}

fn error_partition(index: i32, code: ErrorCode) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = index;
    pd.error_code = code.code();
    pd.high_watermark = -1;
    pd.last_stable_offset = -1;
    pd.log_start_offset = -1;
    pd.records = Some(Bytes::new());
    pd
}

impl Plan {
    /// Reads every partition once. Returns the response parts, the bytes gathered, and whether an
    /// error should end the long poll early. Local reads complete without awaiting anything;
    /// reads below the local log start await the tiered-storage read-through cache.
    async fn read_all(&self) -> (Vec<PartitionData>, usize, bool) {
        let mut out = Vec::with_capacity(self.wants.len());
        let mut total = 0usize;
        let mut errors = false;
        for w in &self.wants {
            let p = match &w.partition {
                Ok(p) => p,
                Err(code) => {
                    errors = true;
                    out.push(error_partition(w.index, *code));
                    continue;
                }
            };
            if w.current_leader_epoch >= 0 && w.current_leader_epoch != p.leader_epoch() {
                errors = true;
                let code = if w.current_leader_epoch > p.leader_epoch() { ErrorCode::UnknownLeaderEpoch } else { ErrorCode::FencedLeaderEpoch };
                out.push(error_partition(w.index, code));
                continue;
            }
            let (start, hw, _leo) = p.offsets_all();
            let mut pd = PartitionData::default();
            pd.partition_index = w.index;
            pd.high_watermark = hw;
            pd.last_stable_offset = hw;
            pd.log_start_offset = start;
            pd.aborted_transactions = if self.version >= 4 { Some(Vec::new()) } else { None };
            pd.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
            let budget = w.max_bytes.min(self.max_bytes.saturating_sub(total));
            // KIP-74: the first batch of the first non-empty partition is returned even if it is
            // larger than the limits, so a consumer can always make progress.
            let min_one = total == 0;
            let records = if budget == 0 && !min_one {
                Ok(Bytes::new())
            } else {
                match p.read_tiered(w.fetch_offset, budget, min_one) {
                    ReadSource::Local(r) => r.map_err(|e| ApiError::from(&e)),
                    // tiered storage logs its own failures (with the object key)
                    ReadSource::Remote(f) => f.await.map_err(|e| ApiError::from(&e)),
                }
            };
            match records {
                Ok(b) => {
                    total += b.len();
                    pd.records = Some(b);
                }
                Err(e) => {
                    if e.code != ErrorCode::OffsetOutOfRange {
                        tracing::warn!(topic = %p.topic, partition = p.index, offset = w.fetch_offset, error = %e, "fetch read failed");
                    }
                    errors = true;
                    pd.error_code = e.code.code();
                    pd.records = Some(Bytes::new());
                }
            }
            out.push(pd);
        }
        (out, total, errors)
    }

    fn respond(&self, parts: Vec<PartitionData>) -> ResponseKind {
        let mut topics: Vec<FetchableTopicResponse> = self
            .topics
            .iter()
            .map(|(name, id)| {
                let mut t = FetchableTopicResponse::default();
                if self.version >= 13 {
                    t.topic_id = *id;
                } else {
                    t.topic = name.clone();
                }
                t
            })
            .collect();
        for (w, pd) in self.wants.iter().zip(parts) {
            if let (Ok(p), Some(records)) = (&w.partition, &pd.records) {
                p.metrics.fetched(records.len() as u64);
            }
            topics[w.topic_idx].partitions.push(pd);
        }
        let mut r = FetchResponse::default();
        r.responses = topics;
        r.session_id = 0;
        ResponseKind::Fetch(r)
    }
}

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> Reply {
    if version >= 7 && (req.session_id != 0 || req.session_epoch > 0) && req.session_epoch != -1 {
        // Sediment never hands out fetch sessions (it always answers session id 0), so an
        // incremental fetch names a session that does not exist.
        let mut r = FetchResponse::default();
        r.error_code = ErrorCode::FetchSessionIdNotFound.code();
        r.session_id = 0;
        return Reply::Ready(ResponseKind::Fetch(r));
    }
    let mut plan = Plan {
        version,
        max_bytes: if version >= 3 && req.max_bytes > 0 { req.max_bytes as usize } else { usize::MAX / 2 },
        min_bytes: req.min_bytes.max(0) as usize,
        topics: Vec::with_capacity(req.topics.len()),
        wants: Vec::new(),
    };
    for (ti, ft) in req.topics.into_iter().enumerate() {
        let topic = if version >= 13 { broker.topic_by_id(&ft.topic_id) } else { broker.topic(ft.topic.0.as_str()) };
        plan.topics.push((ft.topic.clone(), ft.topic_id));
        for fp in ft.partitions {
            let partition = match &topic {
                None if version >= 13 => Err(ErrorCode::UnknownTopicId),
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some(t) => t.leader_partition(fp.partition).cloned(),
            };
            plan.wants.push(Want {
                topic_idx: ti,
                index: fp.partition,
                fetch_offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes.max(0) as usize,
                current_leader_epoch: if version >= 9 { fp.current_leader_epoch } else { -1 },
                partition,
            });
        }
    }
    // clamped, so a client that vanishes mid-wait cannot hold its slot for long (consumers
    // send 500 ms by default and simply fetch again)
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(broker.config.fetch_max_wait);
    let deadline = Instant::now() + max_wait;
    let remote = plan.wants.iter().any(|w| w.partition.as_ref().is_ok_and(|p| p.reads_remote(w.fetch_offset)));
    // all-local requests are answered in request order without a task; a read from the bucket
    // (or a retention race that turns a local read into one) continues in the reply future
    let first = if remote { None } else { plan.read_all().now_or_never() };
    let Some((parts, total, errors)) = first else {
        let broker = broker.clone();
        return Reply::Later(
            async move {
                let (parts, total, errors) = plan.read_all().await;
                if total >= plan.min_bytes.max(1) || errors || Instant::now() >= deadline || plan.wants.is_empty() || broker.is_shutting_down() {
                    return plan.respond(parts);
                }
                long_poll(plan, parts, deadline, broker.shutdown_signal()).await
            }
            .boxed(),
        );
    };
    if total >= plan.min_bytes.max(1) || errors || max_wait.is_zero() || plan.wants.is_empty() || broker.is_shutting_down() {
        return Reply::Ready(plan.respond(parts));
    }
    Reply::Later(long_poll(plan, parts, deadline, broker.shutdown_signal()).boxed())
}

/// Waits for any requested partition's high watermark to move (or the deadline, or shutdown),
/// reading again each time, until `min_bytes` are there.
async fn long_poll(plan: Plan, parts: Vec<PartitionData>, deadline: Instant, mut shutdown: tokio::sync::watch::Receiver<bool>) -> ResponseKind {
    let mut receivers: Vec<_> = plan.wants.iter().filter_map(|w| w.partition.as_ref().ok().map(|p| p.subscribe())).collect();
    for r in receivers.iter_mut() {
        r.borrow_and_update();
    }
    let mut last = parts;
    loop {
        if receivers.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
            return plan.respond(last);
        }
        let closed = {
            let changed = select_all(receivers.iter_mut().map(|r| Box::pin(r.changed())));
            tokio::select! {
                (res, idx, _) = changed => res.is_err().then_some(idx),
                _ = tokio::time::sleep_until(deadline.into()) => return plan.respond(last),
                _ = shutdown.wait_for(|s| *s) => return plan.respond(last),
            }
        };
        if let Some(idx) = closed {
            // The partition went away (topic deleted): stop watching it.
            receivers.swap_remove(idx);
        }
        let (parts, total, errors) = plan.read_all().await;
        if total >= plan.min_bytes.max(1) || errors || Instant::now() >= deadline {
            return plan.respond(parts);
        }
        last = parts;
    }
}
