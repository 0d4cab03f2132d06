//! AlterPartitionReassignments and ListPartitionReassignments: moving partition replicas
//! between brokers (`kafka-reassign-partitions`, `sediment cluster remove-broker`).
//!
//! The controller records the move (the partition is hosted by both replica sets meanwhile);
//! the partition's leader adds each new replica to its Raft group as a learner, waits until it
//! caught up, switches the group's voters to the target set and reports the move complete; the
//! brokers that lost their replica then stop it and delete its data. Cancelling a move in
//! progress (null replicas) is not supported: INVALID_REQUEST. A single node holds every
//! replica itself: only a target of exactly this broker is accepted (nothing to do).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
use kafka_protocol::messages::list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use sediment_protocol::ErrorCode;
use sediment_raft::cluster::MetaCommand;

use super::sb;
use crate::broker::Broker;
use crate::error::ApiError;

pub async fn alter(broker: Arc<Broker>, req: AlterPartitionReassignmentsRequest, version: i16) -> AlterPartitionReassignmentsResponse {
    let mut r = AlterPartitionReassignmentsResponse::default();
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    if version >= 1 {
        r.allow_replication_factor_change = allow_rf_change;
    }
    for t in req.topics {
        let name = t.name.0.to_string();
        // per partition: Ok(target) to submit, or the answer now
        let mut answers: Vec<(i32, Result<Vec<i32>, ApiError>)> = Vec::new();
        let state = broker.cluster.as_ref().map(|c| c.state());
        let rec = state.as_ref().and_then(|s| s.topics.get(&name));
        for p in t.partitions {
            let check = || -> Result<Vec<i32>, ApiError> {
                let Some(replicas) = p.replicas.as_ref() else {
                    let moving = rec.is_some_and(|r| r.reassigning.contains_key(&p.partition_index));
                    return Err(if moving {
                        ApiError::new(ErrorCode::InvalidRequest, "cancelling a reassignment in progress is not supported")
                    } else {
                        ApiError::new(ErrorCode::NoReassignmentInProgress, "no reassignment of this partition is in progress")
                    });
                };
                let target: Vec<i32> = replicas.iter().map(|b| b.0).collect();
                if broker.cluster.is_none() {
                    return if target == [broker.node_id()] {
                        Ok(Vec::new())
                    } else {
                        Err(ApiError::new(ErrorCode::InvalidReplicaAssignment, "a single-node broker holds every replica itself"))
                    };
                }
                let Some(rec) = rec else {
                    return Err(ApiError::unknown_topic(&name));
                };
                let Some(current) = rec.assignments.get(p.partition_index.max(0) as usize).filter(|_| p.partition_index >= 0) else {
                    return Err(ApiError::new(ErrorCode::UnknownTopicOrPartition, format!("{name} has no partition {}", p.partition_index)));
                };
                let current_rf = rec.reassigning.get(&p.partition_index).map_or(current.len(), |m| m.from.len());
                if !allow_rf_change && target.len() != current_rf {
                    return Err(ApiError::new(
                        ErrorCode::InvalidReplicationFactor,
                        format!("the target has {} replicas, the partition {current_rf}, and replication factor changes are not allowed", target.len()),
                    ));
                }
                Ok(target)
            };
            answers.push((p.partition_index, check()));
        }
        let targets: Vec<(i32, Vec<i32>)> = answers.iter().filter_map(|(p, a)| a.as_ref().ok().filter(|t| !t.is_empty()).map(|t| (*p, t.clone()))).collect();
        // one controller command per topic: all of its valid moves start together or not at all
        let submitted: Result<(), ApiError> = match (&broker.cluster, targets.is_empty()) {
            (Some(c), false) => c.write(MetaCommand::ReassignPartitions { topic: name.clone(), targets }).await.map(|_| ()),
            _ => Ok(()),
        };
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name.clone();
        for (p, a) in answers {
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p;
            let err = match (a, &submitted) {
                (Err(e), _) => Some(e),
                (Ok(_), Err(e)) => Some(e.clone()),
                (Ok(_), Ok(())) => None,
            };
            if let Some(e) = err {
                pr.error_code = e.code.code();
                pr.error_message = Some(sb(e.message));
            }
            tr.partitions.push(pr);
        }
        r.responses.push(tr);
    }
    r
}

pub fn list(broker: &Arc<Broker>, req: ListPartitionReassignmentsRequest, _version: i16) -> ListPartitionReassignmentsResponse {
    let mut r = ListPartitionReassignmentsResponse::default();
    let Some(c) = broker.cluster.as_ref() else { return r };
    let state = c.state();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    for rec in state.topics.values() {
        if rec.reassigning.is_empty() {
            continue;
        }
        let only = match &wanted {
            Some(w) => match w.get(&rec.name) {
                Some(ps) => Some(ps),
                None => continue,
            },
            None => None,
        };
        let mut tr = OngoingTopicReassignment::default();
        tr.name = kafka_protocol::messages::TopicName(sb(rec.name.clone()));
        for (p, m) in &rec.reassigning {
            if only.is_some_and(|ps| !ps.contains(p)) {
                continue;
            }
            let mut pr = OngoingPartitionReassignment::default();
            pr.partition_index = *p;
            pr.replicas = rec.assignments[*p as usize].iter().map(|b| BrokerId(*b)).collect();
            pr.adding_replicas = m.adding().into_iter().map(BrokerId).collect();
            pr.removing_replicas = m.removing().into_iter().map(BrokerId).collect();
            tr.partitions.push(pr);
        }
        if !tr.partitions.is_empty() {
            r.topics.push(tr);
        }
    }
    r
}
