//! AddRaftVoter and RemoveRaftVoter (KIP-853): `sediment cluster add-broker|remove-broker`.
//!
//! Every Sediment broker is a voter of the metadata group, so these change the cluster's
//! brokers: adding catches the new broker up as a learner and then makes it a voter (answered
//! once it votes); removing first unregisters it (refused while a partition still has a
//! replica there) and then takes it out of the quorum. Any broker takes the request and
//! forwards it to the metadata leader. A single-node broker answers INVALID_REQUEST.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse};
use kafka_protocol::protocol::StrBytes;
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::cluster::ClusterCtx;
use crate::error::ApiError;

/// How long a membership change may take when the request gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn add(broker: Arc<Broker>, req: AddRaftVoterRequest, _version: i16) -> AddRaftVoterResponse {
    let mut r = AddRaftVoterResponse::default();
    let outcome = async {
        let ctx = cluster_of(&broker, req.cluster_id.as_ref())?;
        if !ctx.peers.authenticated() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "this broker runs alone without a cluster secret and listens for no peer: restart it with cluster_secret_file (or SEDIMENT_CLUSTER_SECRET) to add brokers",
            ));
        }
        let Some(l) = req.listeners.first() else {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "no listener: the new broker's raft address is needed"));
        };
        if req.voter_id < 0 || l.host.is_empty() || l.port == 0 {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("broker {} at {}:{} is not a valid member", req.voter_id, l.host, l.port)));
        }
        let addr = format!("{}:{}", l.host, l.port);
        ctx.add_broker(req.voter_id, addr, timeout(req.timeout_ms)).await
    }
    .await;
    if let Err(e) = outcome {
        r.error_code = e.code.code();
        r.error_message = Some(sb(e.message));
    }
    r
}

pub async fn remove(broker: Arc<Broker>, req: RemoveRaftVoterRequest, _version: i16) -> RemoveRaftVoterResponse {
    let mut r = RemoveRaftVoterResponse::default();
    let outcome = async {
        let ctx = cluster_of(&broker, req.cluster_id.as_ref())?;
        ctx.remove_broker(req.voter_id, DEFAULT_TIMEOUT).await
    }
    .await;
    if let Err(e) = outcome {
        r.error_code = e.code.code();
        r.error_message = Some(sb(e.message));
    }
    r
}

fn timeout(ms: i32) -> Duration {
    if ms > 0 { Duration::from_millis(ms as u64) } else { DEFAULT_TIMEOUT }
}

/// The cluster this broker belongs to, checking the request's cluster id if it names one.
fn cluster_of<'a>(broker: &'a Arc<Broker>, cluster_id: Option<&StrBytes>) -> Result<&'a Arc<ClusterCtx>, ApiError> {
    let Some(ctx) = broker.cluster.as_ref() else {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "this broker is not part of a cluster (start the brokers with --peers)"));
    };
    if let Some(id) = cluster_id.filter(|id| !id.is_empty())
        && id.as_str() != broker.cluster_id()
    {
        return Err(ApiError::new(ErrorCode::InconsistentClusterId, format!("cluster id {id} is not this cluster's ({})", broker.cluster_id())));
    }
    Ok(ctx)
}
