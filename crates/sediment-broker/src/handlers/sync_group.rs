//! SyncGroup: the leader hands in the assignment (persisted before anyone gets it); followers
//! wait for it (`Reply::Later`). In a Stable group every member gets its assignment at once.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use sediment_protocol::ErrorCode;

use super::{Reply, sb};
use crate::broker::Broker;
use crate::group::err_code;
use crate::group::state::{SyncRequest, SyncResult};

pub fn response(res: SyncResult, version: i16) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.error_code = err_code(res.error);
    if version >= 5 {
        r.protocol_type = res.protocol_type.map(sb);
        r.protocol_name = res.protocol_name.map(sb);
    }
    r.assignment = res.assignment;
    r
}

fn ready(code: ErrorCode, version: i16) -> Reply {
    Reply::Ready(ResponseKind::SyncGroup(response(SyncResult::error(code), version)))
}

pub fn handle(broker: &Arc<Broker>, req: SyncGroupRequest, version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return ready(ErrorCode::InvalidGroupId, version);
    }
    let shard = match broker.groups.shard_for(broker, &group, false) {
        Ok(Some(s)) => s,
        Ok(None) => return ready(ErrorCode::UnknownMemberId, version),
        Err(code) => return ready(code, version),
    };
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: if version >= 3 { req.group_instance_id.map(|s| s.to_string()) } else { None },
        generation: req.generation_id,
        protocol_type: if version >= 5 { req.protocol_type.map(|s| s.to_string()) } else { None },
        protocol_name: if version >= 5 { req.protocol_name.map(|s| s.to_string()) } else { None },
        assignments: req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    };
    let rx = shard.sync(&group, sync);
    Reply::Later(
        async move {
            let res = rx.await.unwrap_or_else(|_| SyncResult::error(ErrorCode::NotCoordinator));
            ResponseKind::SyncGroup(response(res, version))
        }
        .boxed(),
    )
}
