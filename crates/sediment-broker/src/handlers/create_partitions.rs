//! CreatePartitions: grows a topic; shrinking is INVALID_PARTITIONS as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
    let mut r = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut res = CreatePartitionsTopicResult::default();
        res.name = t.name.clone();
        let assignments_ok = t.assignments.as_ref().is_none_or(|a| a.iter().all(|x| x.broker_ids.len() == 1 && x.broker_ids[0].0 == broker.node_id()));
        let result = if !assignments_ok {
            Err(crate::error::ApiError::new(ErrorCode::InvalidReplicaAssignment, "assignment names brokers that do not exist"))
        } else if let Err(e) = crate::topic_rules::client_may(t.name.0.as_str(), crate::topic_rules::ClientChange::AddPartitions) {
            Err(e)
        } else {
            broker.create_partitions_any(t.name.0.as_str(), t.count, req.validate_only).await
        };
        if let Err(e) = result {
            res.error_code = e.code.code();
            res.error_message = Some(sb(e.message));
        }
        r.results.push(res);
    }
    r
}
