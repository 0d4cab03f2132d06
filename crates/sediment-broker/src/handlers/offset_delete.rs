//! OffsetDelete (KIP-496): deletes a group's offsets for topics it is not subscribed to
//! (GROUP_SUBSCRIBED_TO_TOPIC otherwise); any offsets of an empty group. Unknown partitions get
//! UNKNOWN_TOPIC_OR_PARTITION before the coordinator sees the request, as in Kafka.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::Reply;
use crate::broker::Broker;
use crate::group::err_code;

pub fn handle(broker: &Arc<Broker>, req: OffsetDeleteRequest, _version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    let mut results: Vec<Vec<Option<ErrorCode>>> = Vec::with_capacity(req.topics.len());
    let mut valid: Vec<(String, Vec<i32>)> = Vec::new();
    let mut slots: Vec<(usize, Vec<usize>)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = broker.topic(t.name.0.as_str());
        let mut tr = Vec::with_capacity(t.partitions.len());
        let mut parts = Vec::new();
        let mut idx = Vec::new();
        for (pi, p) in t.partitions.iter().enumerate() {
            // the partition must exist in the cluster; it need not be hosted by this coordinator
            if !topic.as_ref().is_some_and(|tp| (0..tp.partition_count()).contains(&p.partition_index)) {
                tr.push(Some(ErrorCode::UnknownTopicOrPartition));
            } else {
                tr.push(None);
                parts.push(p.partition_index);
                idx.push(pi);
            }
        }
        if !parts.is_empty() {
            valid.push((t.name.0.to_string(), parts));
            slots.push((ti, idx));
        }
        results.push(tr);
    }
    let error = |code: ErrorCode| {
        let mut r = OffsetDeleteResponse::default();
        r.error_code = code.code();
        Reply::Ready(ResponseKind::OffsetDelete(r))
    };
    let finish = move |req: &OffsetDeleteRequest, results: Vec<Vec<Option<ErrorCode>>>| {
        let mut r = OffsetDeleteResponse::default();
        for (t, tr) in req.topics.iter().zip(results) {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .zip(tr)
                .map(|(p, e)| {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = err_code(e);
                    rp
                })
                .collect();
            r.topics.push(rt);
        }
        ResponseKind::OffsetDelete(r)
    };
    if group.is_empty() {
        return error(ErrorCode::InvalidGroupId);
    }
    let shard = match broker.groups.shard_for(broker, &group, false) {
        Ok(Some(s)) => s,
        Ok(None) => return error(ErrorCode::GroupIdNotFound),
        Err(code) => return error(code),
    };
    let (per_topic, wait) = match shard.delete_offsets(&group, &valid) {
        Ok(x) => x,
        Err(code) => return error(code),
    };
    for ((ti, idx), tr) in slots.iter().zip(per_topic) {
        for (pi, e) in idx.iter().zip(tr) {
            results[*ti][*pi] = e;
        }
    }
    let Some(end) = wait else { return Reply::Ready(finish(&req, results)) };
    Reply::Later(
        async move {
            if let Err(e) = shard.wait_durable(end).await {
                return {
                    let mut r = OffsetDeleteResponse::default();
                    r.error_code = e.code();
                    ResponseKind::OffsetDelete(r)
                };
            }
            finish(&req, results)
        }
        .boxed(),
    )
}
