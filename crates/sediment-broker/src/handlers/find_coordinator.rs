//! FindCoordinator. A group's coordinator (key type 0) is the leader of its
//! `__consumer_offsets` partition. A transactional id (key type 1) is placed the same way; its
//! coordinator answers InitProducerId with the refusal of a broker without transactions. Share
//! groups (key type 2, v6) are not supported: INVALID_REQUEST, as a Kafka broker without share
//! groups answers. v4+ batches keys.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::group::coordinator::OFFSETS_TOPIC;
use crate::group::records::partition_for;

/// The coordinator of `key`: this broker on a single node; in a cluster, for a group, the
/// leader of its `__consumer_offsets` partition (the topic is created on first use, answering
/// COORDINATOR_NOT_AVAILABLE meanwhile, as Kafka does).
fn coordinator(broker: &Arc<Broker>, key_type: i8, key: &str) -> Result<(i32, String, i32), (ErrorCode, String)> {
    match key_type {
        0 | 1 => {}
        2 => return Err((ErrorCode::InvalidRequest, "share groups are not supported by this broker".into())),
        other => return Err((ErrorCode::InvalidRequest, format!("unknown coordinator key type {other}"))),
    }
    let Some(ctx) = &broker.cluster else {
        return Ok((broker.node_id(), broker.config.advertised_host.clone(), broker.config.advertised_port as i32));
    };
    let state = ctx.state();
    let Some(rec) = state.topics.get(OFFSETS_TOPIC) else {
        broker.groups.create_offsets_topic(broker);
        return Err((ErrorCode::CoordinatorNotAvailable, "the offsets topic is being created".into()));
    };
    let index = partition_for(key, rec.partitions());
    let hosted = broker.topic(OFFSETS_TOPIC).and_then(|t| t.partition(index).and_then(|p| p.replica().cloned()));
    let leader = match hosted {
        Some(r) => r.leader().map_or(-1, |l| l as i32),
        None => rec.leaders.get(index as usize).map_or(-1, |l| l.0),
    };
    match state.brokers.get(&leader) {
        Some(b) => Ok((b.id, b.host.clone(), b.port as i32)),
        None => Err((ErrorCode::CoordinatorNotAvailable, format!("offsets partition {index} has no leader yet"))),
    }
}

pub fn handle(broker: &Arc<Broker>, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    let key_type = if version >= 1 { req.key_type } else { 0 };
    if version < 4 {
        match coordinator(broker, key_type, req.key.as_str()) {
            Ok((node, host, port)) => {
                r.node_id = BrokerId(node);
                r.host = sb(host);
                r.port = port;
                if version >= 1 {
                    // Kafka sends Errors.NONE.message() here.
                    r.error_message = Some(sb("NONE"));
                }
            }
            Err((code, msg)) => {
                r.error_code = code.code();
                r.node_id = BrokerId(-1);
                r.port = -1;
                if version >= 1 {
                    r.error_message = Some(sb(msg));
                }
            }
        }
        return r;
    }
    r.coordinators = req
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            match coordinator(broker, key_type, key.as_str()) {
                Ok((node, host, port)) => {
                    c.node_id = BrokerId(node);
                    c.host = sb(host);
                    c.port = port;
                }
                Err((code, msg)) => {
                    c.error_code = code.code();
                    c.error_message = Some(sb(msg));
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
            }
            c.key = key;
            c
        })
        .collect();
    r
}
