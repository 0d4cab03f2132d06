//! LeaveGroup: members leave (v3+: several at once, and admins may remove a static member by its
//! group instance id alone); the group rebalances without them.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let result = if group.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else {
        match broker.groups.shard_for(broker, &group, false) {
            Ok(Some(shard)) => shard.leave(&group, &members),
            Ok(None) => Err(ErrorCode::UnknownMemberId),
            Err(code) => Err(code),
        }
    };
    match result {
        Err(e) => r.error_code = e.code(),
        Ok(results) => {
            if version >= 3 {
                r.members = members
                    .into_iter()
                    .zip(results)
                    .map(|((id, instance), e)| {
                        let mut m = MemberResponse::default();
                        m.member_id = sb(id);
                        m.group_instance_id = instance.map(sb);
                        m.error_code = crate::group::err_code(e);
                        m
                    })
                    .collect();
            } else if let Some(Some(e)) = results.first() {
                r.error_code = e.code();
            }
        }
    }
    r
}
