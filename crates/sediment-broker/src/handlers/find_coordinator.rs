//! FindCoordinator: this node coordinates every group and every transactional id (key types 0
//! and 1). Share groups (key type 2, v6) are not supported: INVALID_REQUEST, as a Kafka broker
//! without share groups answers. v4+ batches keys.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;

fn check(broker: &Broker, key_type: i8) -> Option<(ErrorCode, String)> {
    match key_type {
        // groups and transactions need replicated coordinator state: not in clusters yet
        0 | 1 if broker.cluster.is_some() => Some((
            ErrorCode::CoordinatorNotAvailable,
            "consumer groups and transactions are not available in multi-broker clusters yet".into(),
        )),
        0 | 1 => None,
        2 => Some((ErrorCode::InvalidRequest, "share groups are not supported by this broker".into())),
        other => Some((ErrorCode::InvalidRequest, format!("unknown coordinator key type {other}"))),
    }
}

pub fn handle(broker: &Arc<Broker>, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    let key_type = if version >= 1 { req.key_type } else { 0 };
    let host = sb(broker.config.advertised_host.clone());
    let port = broker.config.advertised_port as i32;
    let node = BrokerId(broker.node_id());
    if version < 4 {
        match check(broker, key_type) {
            None => {
                r.node_id = node;
                r.host = host;
                r.port = port;
                if version >= 1 {
                    // Kafka sends Errors.NONE.message() here.
                    r.error_message = Some(sb("NONE"));
                }
            }
            Some((code, msg)) => {
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
            c.key = key;
            match check(broker, key_type) {
                None => {
                    c.node_id = node;
                    c.host = host.clone();
                    c.port = port;
                }
                Some((code, msg)) => {
                    c.error_code = code.code();
                    c.error_message = Some(sb(msg));
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
            }
            c
        })
        .collect();
    r
}
