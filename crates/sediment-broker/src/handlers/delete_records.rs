//! DeleteRecords: raises a partition's log start offset (offset -1 means the high watermark) and
//! deletes whole segments below it. Offsets above the high watermark are OFFSET_OUT_OF_RANGE.
//! On a tiered partition the remote log start moves too (a committed manifest change; the
//! objects below it are deleted from the bucket in the background), so the answer waits for it.
//! On a replicated partition the leader commits the new log start through the partition's Raft
//! group; every replica raises its own when it applies the entry (so a new leader never shows
//! the deleted records again), and the segments below go with the next retention pass (the
//! Raft snapshot-and-purge path). The answer waits for the commit.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::Reply;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest, _version: i16) -> Reply {
    let mut r = DeleteRecordsResponse::default();
    // (topic index, partition index in the topic result, partition, target) for remote raises
    let mut remote = Vec::new();
    // (topic index, partition index in the topic result, partition, target) for Raft raises
    let mut replicated = Vec::new();
    for t in req.topics {
        let topic = broker.topic(t.name.0.as_str());
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for q in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = q.partition_index;
            pr.low_watermark = -1;
            let part = match topic.as_ref() {
                Some(t) => match crate::topic_rules::client_may(&t.name, crate::topic_rules::ClientChange::DeleteRecords) {
                    Ok(()) => t.leader_partition(q.partition_index),
                    Err(e) => Err(e.code),
                },
                None => Err(ErrorCode::UnknownTopicOrPartition),
            };
            // the target (-1: the high watermark), which must lie within the log
            let part = part.and_then(|p| {
                let hw = p.high_watermark();
                let target = if q.offset == -1 { hw } else { q.offset };
                if target < 0 || target > hw { Err(ErrorCode::OffsetOutOfRange) } else { Ok((p, target)) }
            });
            match part {
                Err(code) => pr.error_code = code.code(),
                Ok((p, target)) if p.replica().is_some() => {
                    // tiered: the start is the bucket's, and the entry raises both
                    if target <= p.log_start_offset_all() {
                        pr.low_watermark = p.log_start_offset_all();
                    } else {
                        replicated.push((r.topics.len(), tr.partitions.len(), p.clone(), target));
                    }
                }
                Ok((p, target)) => match p.with_log(|l| l.delete_records_before(target)) {
                    Ok(start) => {
                        pr.low_watermark = start;
                        if p.remote().and_then(|r| r.log_start_offset()).is_some_and(|rs| rs < target) {
                            remote.push((r.topics.len(), tr.partitions.len(), p.clone(), target));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "delete records failed");
                        pr.error_code = crate::error::ApiError::from(&e).code.code();
                    }
                },
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    if remote.is_empty() && replicated.is_empty() {
        return Reply::Ready(ResponseKind::DeleteRecords(r));
    }
    Reply::Later(
        async move {
            let raises = replicated.into_iter().map(|(ti, pi, p, target)| async move {
                let Some(replica) = p.replica() else { return (ti, pi, Err(ErrorCode::NotLeaderOrFollower)) };
                let timeout = std::time::Duration::from_millis(req.timeout_ms.max(1) as u64);
                let res = match tokio::time::timeout(timeout, replica.raise_log_start(target)).await {
                    Ok(Ok(())) => Ok(p.log_start_offset_all()),
                    Ok(Err(crate::replica::ProposeError::NotLeader(_))) => Err(ErrorCode::NotLeaderOrFollower),
                    Ok(Err(e)) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "delete records failed");
                        Err(ErrorCode::UnknownServerError)
                    }
                    Err(_) => Err(ErrorCode::RequestTimedOut),
                };
                (ti, pi, res)
            });
            for (ti, pi, res) in futures::future::join_all(raises).await {
                let pr = &mut r.topics[ti].partitions[pi];
                match res {
                    Ok(start) => pr.low_watermark = start,
                    Err(code) => pr.error_code = code.code(),
                }
            }
            for (ti, pi, p, target) in remote {
                let Some(rl) = p.remote() else { continue };
                let pr = &mut r.topics[ti].partitions[pi];
                match rl.raise_log_start(target).await {
                    Ok(()) => pr.low_watermark = p.log_start_offset_all(),
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "delete records in the bucket failed");
                        pr.error_code = crate::error::ApiError::from(&e).code.code();
                    }
                }
            }
            ResponseKind::DeleteRecords(r)
        }
        .boxed(),
    )
}
