//! Heartbeat: keeps a member's session alive and tells it when the group rebalances
//! (REBALANCE_IN_PROGRESS).

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use sediment_protocol::ErrorCode;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        r.error_code = ErrorCode::InvalidGroupId.code();
        return r;
    }
    let instance = if version >= 3 { req.group_instance_id.as_ref().map(|s| s.to_string()) } else { None };
    let result = match broker.groups.shard_for(broker, &group, false) {
        Ok(Some(shard)) => shard.heartbeat(&group, req.member_id.as_str(), instance.as_deref(), req.generation_id),
        Ok(None) => Err(ErrorCode::UnknownMemberId),
        Err(code) => Err(code),
    };
    if let Err(e) = result {
        r.error_code = e.code();
    }
    r
}
