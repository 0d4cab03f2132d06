//! Metadata: brokers, topics and partitions; auto-creates requested topics when allowed.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::{Broker, Topic};
use sediment_raft::ClusterState;

fn topic_entry(b: &Broker, cluster: Option<&ClusterState>, t: &Topic) -> MetadataResponseTopic {
    let mut mt = MetadataResponseTopic::default();
    mt.name = Some(TopicName(sb(t.name.clone())));
    mt.topic_id = t.id;
    mt.is_internal = t.name == crate::group::OFFSETS_TOPIC;
    let rec = cluster.and_then(|c| c.topics.get(&t.name)).filter(|r| r.id == t.id);
    mt.partitions = (0..t.partition_count())
        .map(|i| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = i;
            let Some(rec) = rec else {
                // single node: this broker holds every partition
                mp.leader_id = BrokerId(b.node_id());
                mp.leader_epoch = t.partition(i).map_or(0, |p| p.leader_epoch());
                mp.replica_nodes = vec![BrokerId(b.node_id())];
                mp.isr_nodes = vec![BrokerId(b.node_id())];
                return mp;
            };
            let replicas: Vec<BrokerId> = rec.assignments.get(i as usize).map(|r| r.iter().map(|id| BrokerId(*id)).collect()).unwrap_or_default();
            // a hosted replica knows the current leader from its Raft group; otherwise the
            // leader the group last reported to the controller
            let (leader, epoch) = match t.partition(i).and_then(|p| p.replica().map(|r| (p, r))) {
                Some((p, r)) => (r.leader().map_or(-1, |l| l as i32), p.leader_epoch()),
                None => rec.leaders.get(i as usize).copied().unwrap_or((-1, -1)),
            };
            if leader < 0 {
                mp.error_code = ErrorCode::LeaderNotAvailable.code();
            }
            mp.leader_id = BrokerId(leader);
            mp.leader_epoch = epoch;
            // the ISR its leader last committed, less the brokers that stopped beating (a
            // dead leader cannot report its own death)
            let alive = |id: i32| b.cluster.as_ref().is_none_or(|c| c.quiescer.is_alive(id as u64));
            let isr = cluster.map(|c| c.isr(rec, i)).unwrap_or_default();
            mp.isr_nodes = isr.into_iter().filter(|id| alive(*id)).map(BrokerId).collect();
            mp.offline_replicas = replicas.iter().copied().filter(|id| !alive(id.0)).collect();
            mp.replica_nodes = replicas;
            mp
        })
        .collect();
    mt
}

fn error_entry(name: Option<String>, id: uuid::Uuid, code: ErrorCode) -> MetadataResponseTopic {
    let mut mt = MetadataResponseTopic::default();
    mt.name = name.map(|n| TopicName(sb(n)));
    mt.topic_id = id;
    mt.error_code = code.code();
    mt
}

pub fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    let state = broker.cluster.as_ref().map(|c| c.state());
    let cluster = state.as_deref();
    // a cluster member that has not applied the metadata yet answers "not available yet"
    // (retriable) for topics it does not know, and creates none
    let mut behind = false;
    match (cluster, &broker.cluster) {
        (Some(_), Some(c)) => {
            let (listed, b) = broker.listed_brokers().unwrap_or_default();
            behind = b;
            r.brokers = listed
                .iter()
                .map(|b| {
                    let mut mb = MetadataResponseBroker::default();
                    mb.node_id = BrokerId(b.id);
                    mb.host = sb(b.host.clone());
                    mb.port = b.port as i32;
                    mb.rack = b.rack.clone().map(sb);
                    mb
                })
                .collect();
            if version >= 1 {
                r.controller_id = BrokerId(c.controller.leader().map_or(-1, |l| l as i32));
            }
        }
        _ => {
            let mut mb = MetadataResponseBroker::default();
            mb.node_id = BrokerId(broker.node_id());
            mb.host = sb(broker.config.advertised_host.clone());
            mb.port = broker.config.advertised_port as i32;
            r.brokers = vec![mb];
            if version >= 1 {
                r.controller_id = BrokerId(broker.node_id());
            }
        }
    }
    if version >= 2 {
        let id = broker.cluster_id();
        // null while a cluster member has not learned the cluster's id yet (Kafka: nullable)
        r.cluster_id = (!id.is_empty()).then(|| sb(id));
    }
    // v0 treats an empty list as "all topics"; v1+ uses null for that.
    let all = match &req.topics {
        None => true,
        Some(t) if t.is_empty() && version == 0 => true,
        _ => false,
    };
    if all {
        r.topics = broker.topics().iter().map(|t| topic_entry(broker, cluster, t)).collect();
        return r;
    }
    // v4+ lets the client forbid auto-creation; before v4 it is always allowed.
    let allow_create = broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation) && !behind;
    for rt in req.topics.unwrap_or_default() {
        let entry = match rt.name {
            Some(name) => {
                let name = name.0.to_string();
                match broker.topic(&name) {
                    Some(t) => topic_entry(broker, cluster, &t),
                    None if allow_create && broker.cluster.is_some() => {
                        if crate::broker::validate_topic_name(&name).is_err() {
                            error_entry(Some(name), uuid::Uuid::nil(), ErrorCode::InvalidTopicException)
                        } else {
                            let b = broker.clone();
                            let n = name.clone();
                            tokio::spawn(async move {
                                if let Err(e) = b.create_topic_any(&n, -1, -1, BTreeMap::new(), false).await {
                                    tracing::debug!(topic = %n, error = %e, "auto-create refused");
                                }
                            });
                            error_entry(Some(name), uuid::Uuid::nil(), ErrorCode::LeaderNotAvailable)
                        }
                    }
                    None if allow_create => match broker.create_topic(&name, -1, -1, BTreeMap::new(), false) {
                        Ok(t) => topic_entry(broker, cluster, &t),
                        Err(e) if e.code == ErrorCode::TopicAlreadyExists => match broker.topic(&name) {
                            Some(t) => topic_entry(broker, cluster, &t),
                            None => error_entry(Some(name), uuid::Uuid::nil(), ErrorCode::LeaderNotAvailable),
                        },
                        Err(e) => {
                            tracing::debug!(topic = %name, error = %e, "auto-create refused");
                            error_entry(Some(name), uuid::Uuid::nil(), e.code)
                        }
                    },
                    None => {
                        let code = if crate::broker::validate_topic_name(&name).is_err() {
                            ErrorCode::InvalidTopicException
                        } else if behind {
                            ErrorCode::LeaderNotAvailable
                        } else {
                            ErrorCode::UnknownTopicOrPartition
                        };
                        error_entry(Some(name), uuid::Uuid::nil(), code)
                    }
                }
            }
            None => match broker.topic_by_id(&rt.topic_id) {
                Some(t) => topic_entry(broker, cluster, &t),
                None => error_entry(None, rt.topic_id, ErrorCode::UnknownTopicId),
            },
        };
        r.topics.push(entry);
    }
    r
}
