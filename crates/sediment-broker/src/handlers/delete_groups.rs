//! DeleteGroups: an empty group is removed with its offsets (tombstones in `__consumer_offsets`);
//! a group with members is NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND. Answers once the
//! tombstones are durable.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::Reply;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: DeleteGroupsRequest, _version: i16) -> Reply {
    let mut results = Vec::with_capacity(req.groups_names.len());
    let mut waits = Vec::new();
    for (i, id) in req.groups_names.iter().enumerate() {
        let group = id.0.to_string();
        let outcome = match broker.groups.shard_for(broker, &group, false) {
            Ok(Some(shard)) => shard.delete_group(&group).map(|end| end.map(|e| (shard, e))),
            Ok(None) => Err(ErrorCode::GroupIdNotFound),
            Err(code) => Err(code),
        };
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        match outcome {
            Ok(Some(w)) => waits.push((i, w)),
            Ok(None) => {}
            Err(e) => r.error_code = e.code(),
        }
        results.push(r);
    }
    let finish = |results: Vec<DeletableGroupResult>| {
        let mut resp = DeleteGroupsResponse::default();
        resp.results = results;
        ResponseKind::DeleteGroups(resp)
    };
    if waits.is_empty() {
        return Reply::Ready(finish(results));
    }
    Reply::Later(
        async move {
            let mut results = results;
            for (i, (shard, end)) in waits {
                if let Err(e) = shard.wait_durable(end).await {
                    results[i].error_code = e.code();
                }
            }
            finish(results)
        }
        .boxed(),
    )
}
