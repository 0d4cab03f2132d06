//! OffsetCommit: partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION (as Kafka's
//! request handler does before the coordinator sees them); the rest are validated against the
//! group and written to `__consumer_offsets`. The response waits until the commit is durable.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::Reply;
use crate::broker::Broker;
use crate::group::coordinator::CommitRequest;
use crate::group::err_code;
use crate::group::records::OffsetValue;

pub fn handle(broker: &Arc<Broker>, req: OffsetCommitRequest, version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    let now = broker.groups.now_ms();
    // (topic index, partition index) -> result; None = pending on the coordinator
    let mut results: Vec<Vec<Option<ErrorCode>>> = Vec::with_capacity(req.topics.len());
    let mut offsets = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = broker.topic(t.name.0.as_str());
        let mut tr = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            // the partition must exist in the cluster; it need not be hosted by this coordinator
            if !topic.as_ref().is_some_and(|tp| (0..tp.partition_count()).contains(&p.partition_index)) {
                tr.push(Some(ErrorCode::UnknownTopicOrPartition));
                continue;
            }
            tr.push(None);
            slots.push((ti, pi));
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    commit_timestamp: now,
                },
            ));
        }
        results.push(tr);
    }
    let finish = move |req: &OffsetCommitRequest, results: Vec<Vec<Option<ErrorCode>>>| {
        let mut r = OffsetCommitResponse::default();
        for (t, tr) in req.topics.iter().zip(results) {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .zip(tr)
                .map(|(p, e)| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = err_code(e);
                    rp
                })
                .collect();
            r.topics.push(rt);
        }
        ResponseKind::OffsetCommit(r)
    };
    if offsets.is_empty() {
        return Reply::Ready(finish(&req, results));
    }
    if group.len() > crate::group::records::MAX_ID_BYTES {
        for &(ti, pi) in &slots {
            results[ti][pi] = Some(ErrorCode::InvalidGroupId);
        }
        return Reply::Ready(finish(&req, results));
    }
    let set_all = |results: &mut Vec<Vec<Option<ErrorCode>>>, slots: &[(usize, usize)], e: ErrorCode| {
        for &(ti, pi) in slots {
            results[ti][pi] = Some(e);
        }
    };
    let shard = match broker.groups.shard_for(broker, &group, true) {
        Ok(Some(s)) => s,
        Ok(None) => {
            set_all(&mut results, &slots, ErrorCode::CoordinatorNotAvailable);
            return Reply::Ready(finish(&req, results));
        }
        Err(code) => {
            set_all(&mut results, &slots, code);
            return Reply::Ready(finish(&req, results));
        }
    };
    let outcome = shard.commit(CommitRequest {
        group,
        member_id: req.member_id.to_string(),
        instance_id: if version >= 7 { req.group_instance_id.as_ref().map(|s| s.to_string()) } else { None },
        generation: req.generation_id_or_member_epoch,
        api_version: version,
        offsets,
    });
    for (&(ti, pi), e) in slots.iter().zip(&outcome.results) {
        results[ti][pi] = *e;
    }
    let Some(end) = outcome.wait_for else {
        return Reply::Ready(finish(&req, results));
    };
    Reply::Later(
        async move {
            let mut results = results;
            if let Err(e) = shard.wait_durable(end).await {
                for (&(ti, pi), r) in slots.iter().zip(&outcome.results) {
                    if r.is_none() {
                        results[ti][pi] = Some(e);
                    }
                }
            }
            finish(&req, results)
        }
        .boxed(),
    )
}
