//! DescribeCluster: this broker is the whole cluster and its controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    // endpoint_type 1 = brokers; 2 = controllers (v1+). Both are this node.
    if version >= 1 && !matches!(req.endpoint_type, 1 | 2) {
        r.error_code = ErrorCode::UnsupportedEndpointType.code();
        r.error_message = Some(sb(format!("endpoint type {} is not supported", req.endpoint_type)));
        return r;
    }
    if version >= 1 {
        r.endpoint_type = req.endpoint_type;
    }
    r.cluster_id = sb(broker.cluster_id());
    if let Some(c) = &broker.cluster {
        r.controller_id = BrokerId(c.controller.leader().map_or(-1, |l| l as i32));
        r.brokers = broker
            .listed_brokers()
            .unwrap_or_default()
            .0
            .iter()
            .map(|rec| {
                let mut b = DescribeClusterBroker::default();
                b.broker_id = BrokerId(rec.id);
                b.host = sb(rec.host.clone());
                b.port = rec.port as i32;
                b.rack = rec.rack.clone().map(sb);
                b
            })
            .collect();
        return r;
    }
    r.controller_id = BrokerId(broker.node_id());
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.node_id());
    b.host = sb(broker.config.advertised_host.clone());
    b.port = broker.config.advertised_port as i32;
    r.brokers = vec![b];
    r
}
