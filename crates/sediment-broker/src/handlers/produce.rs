//! Produce: validate each partition's batch (header, CRC-32C, size, timestamps), patch its base
//! offset and append it, in request order. acks=0 sends nothing back, acks=1 answers after the
//! append, acks=all (-1) answers once the high watermark (fsynced offset) covers the batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::FutureExt;
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use sediment_protocol::ErrorCode;
use sediment_protocol::batch;

use super::{Reply, sb};
use crate::broker::{Broker, Topic};
use crate::error::ApiError;
use crate::partition::{AppendError, Appended, Partition, WaitError};
use crate::replica::{Outcome as Proposal, ProposeError, Proposed};
use sediment_log::clock::now_ms;

struct Outcome {
    topic_idx: usize,
    resp: PartitionProduceResponse,
    /// acks=all: the partition and the offset the high watermark must reach.
    wait: Option<(Arc<Partition>, i64)>,
    /// A replicated partition: the proposal whose append (acks=1) or commit (acks=all) answers,
    /// its size and its log append time.
    proposed: Option<(Arc<Partition>, Proposed, u64, Option<i64>)>,
}

/// What [`append_one`] did.
enum Appendage {
    /// Appended locally: the response and the offset acks=all waits for.
    Done(PartitionProduceResponse, i64),
    /// Handed to the partition's Raft group (with the batch's size, for the metrics, and the
    /// log append time stamped into it, if the topic uses LogAppendTime).
    Proposed(Proposed, u64, Option<i64>),
}

/// A refused partition: the error, and the record that failed validation if one did (Kafka
/// names it in the response's `record_errors`, v8+).
struct Refusal {
    error: ApiError,
    record_index: Option<i32>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal { error, record_index: None }
    }
}

fn partition_error(index: i32, e: &ApiError) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = e.code.code();
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    p.error_message = Some(sb(e.message.clone()));
    p
}

fn refused(index: i32, r: &Refusal) -> PartitionProduceResponse {
    let mut p = partition_error(index, &r.error);
    if let Some(batch_index) = r.record_index {
        let mut e = BatchIndexAndErrorMessage::default();
        e.batch_index = batch_index;
        e.batch_index_error_message = Some(sb(r.error.message.clone()));
        p.record_errors.push(e);
    }
    p
}

fn append_one(broker: &Broker, topic: &Topic, partition: &Partition, records: Option<&bytes::Bytes>, acks: i16) -> Result<Appendage, Refusal> {
    crate::topic_rules::client_may(&topic.name, crate::topic_rules::ClientChange::Produce)?;
    let Some(records) = records else {
        return Err(ApiError::new(ErrorCode::InvalidRecord, "produce request without records").into());
    };
    if partition.watermark().failed {
        return Err(ApiError::new(ErrorCode::KafkaStorageError, "partition log failed an fsync; it refuses writes until the broker restarts").into());
    }
    if let Some(why) = broker.local_disk_full() {
        // the uploads are behind (bucket unreachable?): refuse rather than fill the disk
        return Err(ApiError::new(ErrorCode::KafkaStorageError, why).into());
    }
    let replica = partition.replica();
    if let Some(r) = replica {
        if !r.is_leader() {
            return Err(ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!("broker {} is not the leader of this partition (leader: {:?})", broker.node_id(), r.leader()),
            )
            .into());
        }
        let min_isr = topic.config.min_insync_replicas(&broker.defaults);
        // the ISR every broker reports (a leader that took over counts itself before it has
        // committed its first ISR); the leader is always in it, so with min.insync.replicas at
        // its default of 1 the lookup is skipped
        let in_sync = || match broker.isr_of(&topic.name, partition.index) {
            Some(isr) => isr.len() + usize::from(!isr.contains(&broker.node_id())),
            None => r.in_sync_replicas(),
        };
        if acks == -1 && min_isr > 1 {
            let in_sync = in_sync();
            if min_isr as usize > in_sync {
                return Err(
                    ApiError::new(ErrorCode::NotEnoughReplicas, format!("min.insync.replicas is {min_isr} but only {in_sync} replicas are in sync")).into()
                );
            }
        }
    } else if acks == -1 && topic.config.min_insync_replicas(&broker.defaults) > 1 {
        return Err(ApiError::new(
            ErrorCode::NotEnoughReplicas,
            format!("min.insync.replicas is {} but only 1 replica is in sync", topic.config.min_insync_replicas(&broker.defaults)),
        )
        .into());
    }
    let max = topic.config.max_message_bytes(&broker.defaults);
    let validated = batch::validate_produce_records(records, max, broker.config.batch_validation).map_err(|e| {
        tracing::debug!(topic = %topic.name, partition = partition.index, error = %e, "produce batch refused by validation");
        Refusal { error: ApiError::new(e.code(), e.to_string()), record_index: e.record_index() }
    })?;
    let header = validated.header;
    let now = now_ms();
    let log_append_time = topic.config.log_append_time(&broker.defaults);
    // The records' own timestamps where they were walked (Kafka checks each record), else the
    // header's maximum.
    let (min_ts, max_ts) = validated.records.map_or((header.max_timestamp, header.max_timestamp), |s| (s.min_timestamp, s.max_timestamp));
    if !log_append_time {
        let before = topic.config.timestamp_before_max_ms(&broker.defaults);
        let after = topic.config.timestamp_after_max_ms(&broker.defaults);
        for ts in [min_ts, max_ts] {
            if ts >= 0 && (now.saturating_sub(ts) > before || ts.saturating_sub(now) > after) {
                return Err(
                    ApiError::new(ErrorCode::InvalidTimestamp, format!("record timestamp {ts} is outside the allowed range around broker time {now}")).into()
                );
            }
        }
    }
    // The one copy on the produce path: the frame is shared, the log patches the header in place.
    let mut buf = BytesMut::from(&records[..]);
    if log_append_time {
        batch::set_log_append_time(&mut buf, now);
    } else if validated.records.is_some() && max_ts != header.max_timestamp {
        // as Kafka does: the stored max timestamp is the records' own, so the time index is true
        batch::set_max_timestamp(&mut buf, max_ts);
    }
    let header = batch::BatchHeader {
        max_timestamp: if log_append_time {
            now
        } else if validated.records.is_some() {
            max_ts
        } else {
            header.max_timestamp
        },
        ..header
    };
    if let Some(r) = replica {
        // ordered with this connection's other requests: the proposal is queued now
        let len = records.len() as u64;
        partition.trace_next_fsync();
        return r.propose_now(buf.freeze()).map(|p| Appendage::Proposed(p, len, log_append_time.then_some(now))).map_err(|e| propose_error(e).into());
    }
    let appended = partition.append(&header, &mut buf, now).map_err(|e| match e {
        AppendError::Log(e) => {
            tracing::error!(topic = %topic.name, partition = partition.index, error = %e, "append failed");
            Refusal::from(ApiError::from(&e))
        }
        AppendError::Producer(code, msg) => ApiError::new(code, msg).into(),
    })?;
    match appended {
        // bytes in: the whole batch as sent (header and compressed records), as Kafka counts it
        Appended::New(info) => {
            partition.metrics.produced(records.len() as u64, (info.last_offset - info.base_offset + 1) as u64);
            broker.note_appended(records.len() as u64);
        }
        Appended::Duplicate(meta) => {
            tracing::debug!(topic = %topic.name, partition = partition.index, producer_id = header.producer_id, base_offset = meta.base_offset, "duplicate batch answered with its original offsets");
        }
    }
    let mut p = PartitionProduceResponse::default();
    p.index = partition.index;
    p.base_offset = appended.base_offset();
    p.log_append_time_ms = if log_append_time { now } else { -1 };
    p.log_start_offset = partition.log_start_offset();
    Ok(Appendage::Done(p, appended.last_offset() + 1))
}

fn propose_error(e: ProposeError) -> ApiError {
    ApiError::from(&e)
}

/// Waits for a proposal's append (and, for acks=all, its commit) and builds the answer.
#[allow(clippy::too_many_arguments)]
async fn settle(
    broker: &Broker,
    partition: &Partition,
    proposed: Proposed,
    bytes: u64,
    log_append_time: Option<i64>,
    index: i32,
    acks: i16,
    deadline: Instant,
) -> PartitionProduceResponse {
    let work = async {
        let mut proposed = proposed;
        let (base, records) = match proposed.appended().await.map_err(propose_error)? {
            Proposal::Appended(info) => (info.base_offset, Some(info.last_offset - info.base_offset + 1)),
            Proposal::Duplicate(meta) => (meta.base_offset, None),
            Proposal::Refused(code, msg) => return Err(ApiError::new(code, msg)),
        };
        if acks == -1 {
            let appended_at = Instant::now();
            proposed.committed().await.map_err(propose_error)?;
            sediment_telemetry::metrics().replication.commit_latency(sediment_telemetry::RaftGroup::Partition, appended_at.elapsed());
        }
        Ok((base, records))
    };
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok((base, records))) => {
            if let Some(n) = records {
                partition.metrics.produced(bytes, n as u64);
                broker.note_appended(bytes);
            }
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.base_offset = base;
            p.log_append_time_ms = log_append_time.unwrap_or(-1);
            p.log_start_offset = partition.log_start_offset();
            p
        }
        Ok(Err(e)) => partition_error(index, &e),
        Err(_) => partition_error(index, &ApiError::new(ErrorCode::RequestTimedOut, "timed out waiting for the replicas")),
    }
}

/// The same error for every partition of the request (request-level refusals).
fn refuse_all(req: &ProduceRequest, e: &ApiError) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    for t in &req.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        tr.topic_id = t.topic_id;
        tr.partition_responses = t.partition_data.iter().map(|p| partition_error(p.index, e)).collect();
        resp.responses.push(tr);
    }
    resp
}

pub fn handle(broker: &Arc<Broker>, req: ProduceRequest, version: i16) -> Reply {
    let acks = req.acks;
    if !matches!(acks, -1..=1) {
        // Kafka answers INVALID_REQUIRED_ACKS for every partition.
        let e = ApiError::new(ErrorCode::InvalidRequiredAcks, format!("acks={acks} is not one of -1, 0, 1"));
        return Reply::Ready(ResponseKind::Produce(refuse_all(&req, &e)));
    }
    if req.transactional_id.is_some() {
        let e = ApiError::new(ErrorCode::TransactionalIdAuthorizationFailed, "transactions are not supported by this broker yet");
        return Reply::Ready(ResponseKind::Produce(refuse_all(&req, &e)));
    }
    if let Some(tier) = &broker.tier {
        // replays from the bucket yield to producers (cold_read_bytes_per_sec_under_load)
        tier.note_produce();
    }
    let mut topics: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (ti, td) in req.topic_data.iter().enumerate() {
        let topic = if version >= 13 { broker.topic_by_id(&td.topic_id) } else { broker.topic(td.name.0.as_str()) };
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        tr.topic_id = td.topic_id;
        topics.push(tr);
        for pd in &td.partition_data {
            let result = match &topic {
                None if version >= 13 => Err(ApiError::new(ErrorCode::UnknownTopicId, format!("unknown topic id {}", td.topic_id)).into()),
                None => Err(ApiError::unknown_topic(&td.name.0).into()),
                Some(t) => match t.partition(pd.index) {
                    None => Err(ApiError::unknown_partition(&t.name, pd.index).into()),
                    Some(p) => append_one(broker, t, p, pd.records.as_ref(), acks).map(|a| (a, p.clone())),
                },
            };
            match result {
                Ok((Appendage::Done(resp, end), p)) => outcomes.push(Outcome { topic_idx: ti, resp, wait: (acks == -1).then_some((p, end)), proposed: None }),
                Ok((Appendage::Proposed(proposed, len, lat), p)) => {
                    let mut resp = PartitionProduceResponse::default();
                    resp.index = pd.index;
                    outcomes.push(Outcome { topic_idx: ti, resp, wait: None, proposed: Some((p, proposed, len, lat)) })
                }
                Err(r) => {
                    tracing::debug!(topic = %td.name.0, partition = pd.index, error = %r.error, "produce refused");
                    outcomes.push(Outcome { topic_idx: ti, resp: refused(pd.index, &r), wait: None, proposed: None });
                }
            }
        }
    }
    if acks == 0 {
        return Reply::None;
    }
    let finish = move |topics: Vec<TopicProduceResponse>, outcomes: Vec<Outcome>| {
        let mut topics = topics;
        for o in outcomes {
            topics[o.topic_idx].partition_responses.push(o.resp);
        }
        let mut resp = ProduceResponse::default();
        resp.responses = topics;
        ResponseKind::Produce(resp)
    };
    if outcomes.iter().all(|o| o.wait.is_none() && o.proposed.is_none()) || (acks == 1 && outcomes.iter().all(|o| o.proposed.is_none())) {
        return Reply::Ready(finish(topics, outcomes));
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let deadline = Instant::now() + timeout;
    let broker = broker.clone();
    Reply::Later(
        async move {
            let mut outcomes = outcomes;
            for o in outcomes.iter_mut() {
                if let Some((p, proposed, len, lat)) = o.proposed.take() {
                    o.resp = settle(&broker, &p, proposed, len, lat, o.resp.index, acks, deadline).await;
                }
                if let Some((p, end)) = o.wait.take() {
                    match p.wait_for_hw(end, deadline).await {
                        Ok(()) => {}
                        Err(WaitError::TimedOut) => {
                            o.resp = partition_error(o.resp.index, &ApiError::new(ErrorCode::RequestTimedOut, "timed out waiting for the batch to be fsynced"));
                        }
                        Err(WaitError::StorageFailed) => {
                            o.resp = partition_error(o.resp.index, &ApiError::new(ErrorCode::KafkaStorageError, "fsync failed; the batch may not be durable"));
                        }
                    }
                }
            }
            finish(topics, outcomes)
        }
        .boxed(),
    )
}
