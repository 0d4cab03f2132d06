//! JoinGroup: validates the request, hands it to the group's shard and parks the response until
//! the rebalance's join phase completes (`Reply::Later`). v4+ new members first get
//! MEMBER_ID_REQUIRED with their id (KIP-394); v5+ static members (KIP-345); v9 skip assignment.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::{Reply, RequestContext, sb};
use crate::broker::Broker;
use crate::group::records::MAX_ID_BYTES;
use crate::group::state::{JoinRequest, JoinResult, Protocol};
use crate::group::{client_host, err_code};

/// The first `max` bytes of `s`, cut at a character boundary (member ids embed the client id).
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub fn response(res: JoinResult, version: i16) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = err_code(res.error);
    r.generation_id = res.generation;
    if version >= 7 {
        r.protocol_type = res.protocol_type.map(sb);
        r.protocol_name = res.protocol_name.map(sb);
    } else {
        r.protocol_name = Some(sb(res.protocol_name.unwrap_or_default()));
    }
    r.leader = sb(res.leader);
    if version >= 9 {
        r.skip_assignment = res.skip_assignment;
    }
    r.member_id = sb(res.member_id);
    r.members = res
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = sb(id);
            if version >= 5 {
                m.group_instance_id = instance.map(sb);
            }
            m.metadata = metadata;
            m
        })
        .collect();
    r
}

fn ready(member_id: &str, code: ErrorCode, version: i16) -> Reply {
    Reply::Ready(ResponseKind::JoinGroup(response(JoinResult::error(member_id, code), version)))
}

pub fn handle(broker: &Arc<Broker>, ctx: &RequestContext, req: JoinGroupRequest, version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    if group.is_empty() || group.len() > MAX_ID_BYTES {
        return ready(&member_id, ErrorCode::InvalidGroupId, version);
    }
    if req.group_instance_id.as_ref().is_some_and(|i| i.len() > MAX_ID_BYTES) {
        return ready(&member_id, ErrorCode::InvalidRequest, version);
    }
    let cfg = broker.groups.config();
    if req.session_timeout_ms < cfg.min_session_timeout_ms || req.session_timeout_ms > cfg.max_session_timeout_ms {
        return ready(&member_id, ErrorCode::InvalidSessionTimeout, version);
    }
    let shard = match broker.groups.shard_for(broker, &group, true) {
        Ok(Some(s)) => s,
        Ok(None) => return ready(&member_id, ErrorCode::CoordinatorNotAvailable, version),
        Err(code) => return ready(&member_id, code, version),
    };
    let join = JoinRequest {
        member_id,
        instance_id: if version >= 5 { req.group_instance_id.map(|s| s.to_string()) } else { None },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.into_iter().map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata }).collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
        client_id: truncate(ctx.client_id.as_deref().unwrap_or_default(), 1024),
        client_host: client_host(&ctx.peer),
        api_version: version,
    };
    let rx = shard.join(&group, join, &broker.groups.new_member_suffix());
    Reply::Later(
        async move {
            let res = rx.await.unwrap_or_else(|_| JoinResult::error("", ErrorCode::NotCoordinator));
            ResponseKind::JoinGroup(response(res, version))
        }
        .boxed(),
    )
}
