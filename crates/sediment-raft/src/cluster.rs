//! The cluster metadata the controller group replicates: brokers, topics, partition
//! assignments, topic configs and producer-id blocks, and the commands that change them.
//!
//! `apply` is deterministic (every broker applies the same commands in the same order and
//! reaches the same state): anything random (topic ids, the placement start) is chosen by the
//! proposer and carried in the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker as registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: i32,
    /// Kafka listener clients are told to use.
    pub host: String,
    pub port: u16,
    /// Raft listener (peer transport).
    pub raft_addr: String,
    pub rack: Option<String>,
}

/// One topic: its id, config overrides and, per partition, its replicas (the first is the
/// preferred leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub config: BTreeMap<String, String>,
    pub assignments: Vec<Vec<i32>>,
    /// Per partition, the leader its Raft group last reported and that leader's epoch (term);
    /// `(-1, -1)` until one is reported. Brokers that host no replica of a partition learn its
    /// leader from here.
    pub leaders: Vec<(i32, i32)>,
    pub created_ms: i64,
}

impl TopicRecord {
    pub fn partitions(&self) -> i32 {
        self.assignments.len() as i32
    }

    pub fn replication_factor(&self) -> i16 {
        self.assignments.first().map_or(0, |r| r.len() as i16)
    }
}

/// The replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set once by the first leader; empty until then.
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Producer ids below this were handed out (blocks reserved by brokers).
    pub producer_id_block_end: i64,
}

impl ClusterState {
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicRecord> {
        self.topics.values().find(|t| &t.id == id)
    }
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets the cluster id if none is set yet (first writer wins).
    SetClusterId { cluster_id: String },
    /// Adds or updates a broker (its addresses may change across restarts).
    RegisterBroker(BrokerRecord),
    /// Removes a broker (`sediment cluster remove-broker`); refused while any partition has a
    /// replica on it. Afterwards no new replica is placed there.
    UnregisterBroker { id: i32 },
    /// Creates a topic, placing `partitions` × `replication_factor` replicas over the
    /// registered brokers starting at `placement_start`.
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        config: BTreeMap<String, String>,
        placement_start: u32,
        created_ms: i64,
    },
    DeleteTopic { name: String },
    /// Grows a topic to `count` partitions (new ones placed like at creation).
    CreatePartitions { name: String, count: i32, placement_start: u32 },
    /// Replaces a topic's config overrides.
    SetTopicConfig { name: String, config: BTreeMap<String, String> },
    /// Reserves `count` producer ids; answered with the first.
    ReserveProducerIds { count: i64 },
    /// A partition's Raft group elected `leader` in term `epoch` (ignored if older than what
    /// is recorded, or if the topic id no longer matches).
    SetPartitionLeader { topic_id: Uuid, partition: i32, leader: i32, epoch: i32 },
}

/// Why a command was refused (mapped onto Kafka error codes by the broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("topic \"{0}\" already exists")]
    TopicExists(String),
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("replication factor {requested} is larger than the {available} available brokers")]
    InvalidReplicationFactor { requested: i16, available: usize },
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("broker {id} still holds replicas of {partitions} partition(s) (first: {example}); move or delete them first")]
    BrokerHostsReplicas { id: i32, partitions: usize, example: String },
}

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Also the answer to blank and membership entries.
    #[default]
    Done,
    Refused(MetaError),
    TopicCreated { id: Uuid, assignments: Vec<Vec<i32>> },
    ProducerIds { start: i64 },
}

/// Replica placement: partition `p` gets `rf` consecutive brokers (in id order) starting at
/// `start + p`, so leaders (the first replica) rotate over the brokers and each broker leads
/// about `partitions / brokers` partitions.
pub fn place(brokers: &[i32], first_partition: i32, count: i32, rf: usize, start: u32) -> Vec<Vec<i32>> {
    let n = brokers.len();
    (first_partition..first_partition + count)
        .map(|p| (0..rf).map(|j| brokers[(start as usize + p as usize + j) % n]).collect())
        .collect()
}

impl ClusterState {
    /// Applies one command.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        match cmd {
            MetaCommand::SetClusterId { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                MetaResponse::Done
            }
            MetaCommand::RegisterBroker(b) => {
                self.brokers.insert(b.id, b.clone());
                MetaResponse::Done
            }
            MetaCommand::UnregisterBroker { id } => {
                let hosted: Vec<String> = self
                    .topics
                    .values()
                    .flat_map(|t| t.assignments.iter().enumerate().filter(|(_, r)| r.contains(id)).map(move |(p, _)| format!("{}-{p}", t.name)))
                    .collect();
                if let Some(example) = hosted.first() {
                    return MetaResponse::Refused(MetaError::BrokerHostsReplicas { id: *id, partitions: hosted.len(), example: example.clone() });
                }
                self.brokers.remove(id);
                MetaResponse::Done
            }
            MetaCommand::CreateTopic { name, id, partitions, replication_factor, config, placement_start, created_ms } => {
                if self.topics.contains_key(name) {
                    return MetaResponse::Refused(MetaError::TopicExists(name.clone()));
                }
                let brokers: Vec<i32> = self.brokers.keys().copied().collect();
                let rf = *replication_factor;
                if rf < 1 || rf as usize > brokers.len() {
                    return MetaResponse::Refused(MetaError::InvalidReplicationFactor { requested: rf, available: brokers.len() });
                }
                if *partitions < 1 {
                    return MetaResponse::Refused(MetaError::InvalidPartitions(format!("number of partitions must be at least 1, got {partitions}")));
                }
                let assignments = place(&brokers, 0, *partitions, rf as usize, *placement_start);
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        name: name.clone(),
                        id: *id,
                        config: config.clone(),
                        leaders: vec![(-1, -1); assignments.len()],
                        assignments: assignments.clone(),
                        created_ms: *created_ms,
                    },
                );
                MetaResponse::TopicCreated { id: *id, assignments }
            }
            MetaCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => MetaResponse::Done,
                None => MetaResponse::Refused(MetaError::UnknownTopic(name.clone())),
            },
            MetaCommand::CreatePartitions { name, count, placement_start } => {
                let brokers: Vec<i32> = self.brokers.keys().copied().collect();
                let Some(t) = self.topics.get_mut(name) else {
                    return MetaResponse::Refused(MetaError::UnknownTopic(name.clone()));
                };
                let current = t.partitions();
                if *count <= current {
                    return MetaResponse::Refused(MetaError::InvalidPartitions(format!(
                        "topic currently has {current} partitions, which is higher than or equal to the requested {count}"
                    )));
                }
                let rf = t.replication_factor().max(1) as usize;
                if rf > brokers.len() {
                    return MetaResponse::Refused(MetaError::InvalidReplicationFactor { requested: rf as i16, available: brokers.len() });
                }
                let more = place(&brokers, current, count - current, rf, *placement_start);
                t.leaders.extend(more.iter().map(|_| (-1, -1)));
                t.assignments.extend(more);
                MetaResponse::Done
            }
            MetaCommand::SetTopicConfig { name, config } => match self.topics.get_mut(name) {
                Some(t) => {
                    t.config = config.clone();
                    MetaResponse::Done
                }
                None => MetaResponse::Refused(MetaError::UnknownTopic(name.clone())),
            },
            MetaCommand::SetPartitionLeader { topic_id, partition, leader, epoch } => {
                if let Some(t) = self.topics.values_mut().find(|t| &t.id == topic_id)
                    && let Some(slot) = usize::try_from(*partition).ok().and_then(|p| t.leaders.get_mut(p))
                    && *epoch >= slot.1
                {
                    *slot = (*leader, *epoch);
                }
                MetaResponse::Done
            }
            MetaCommand::ReserveProducerIds { count } => {
                let start = self.producer_id_block_end;
                self.producer_id_block_end += count.max(&1);
                MetaResponse::ProducerIds { start }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> MetaCommand {
        MetaCommand::RegisterBroker(BrokerRecord { id, host: "h".into(), port: 1, raft_addr: "r".into(), rack: None })
    }

    fn create(name: &str, partitions: i32, rf: i16) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            id: Uuid::from_u128(7),
            partitions,
            replication_factor: rf,
            config: BTreeMap::new(),
            placement_start: 0,
            created_ms: 1,
        }
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let a = place(&[1, 2, 3], 0, 6, 3, 0);
        assert_eq!(a[0], vec![1, 2, 3]);
        assert_eq!(a[1], vec![2, 3, 1]);
        let mut leaders = [0; 4];
        for r in &a {
            leaders[r[0] as usize] += 1;
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 3, "a broker holds two replicas of one partition: {r:?}");
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
    }

    #[test]
    fn commands_validate_and_apply() {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&create("t", 3, 1)),
            MetaResponse::Refused(MetaError::InvalidReplicationFactor { requested: 1, available: 0 })
        );
        for b in [1, 2, 3] {
            s.apply(&broker(b));
        }
        assert!(matches!(s.apply(&create("t", 3, 4)), MetaResponse::Refused(MetaError::InvalidReplicationFactor { .. })));
        assert!(matches!(s.apply(&create("t", 3, 3)), MetaResponse::TopicCreated { .. }));
        assert_eq!(s.apply(&create("t", 3, 3)), MetaResponse::Refused(MetaError::TopicExists("t".into())));
        assert!(matches!(
            s.apply(&MetaCommand::CreatePartitions { name: "t".into(), count: 2, placement_start: 0 }),
            MetaResponse::Refused(MetaError::InvalidPartitions(_))
        ));
        s.apply(&MetaCommand::CreatePartitions { name: "t".into(), count: 5, placement_start: 0 });
        assert_eq!(s.topics["t"].partitions(), 5);
        assert_eq!(s.topics["t"].replication_factor(), 3);
        assert_eq!(s.apply(&MetaCommand::ReserveProducerIds { count: 1000 }), MetaResponse::ProducerIds { start: 0 });
        assert_eq!(s.apply(&MetaCommand::ReserveProducerIds { count: 1000 }), MetaResponse::ProducerIds { start: 1000 });
        s.apply(&MetaCommand::SetClusterId { cluster_id: "a".into() });
        s.apply(&MetaCommand::SetClusterId { cluster_id: "b".into() });
        assert_eq!(s.cluster_id, "a");
        // a broker holding replicas stays; once they are gone it can leave, and is not placed on
        assert!(matches!(
            s.apply(&MetaCommand::UnregisterBroker { id: 3 }),
            MetaResponse::Refused(MetaError::BrokerHostsReplicas { id: 3, partitions: 5, .. })
        ));
        assert_eq!(s.apply(&MetaCommand::DeleteTopic { name: "t".into() }), MetaResponse::Done);
        assert_eq!(s.apply(&MetaCommand::DeleteTopic { name: "t".into() }), MetaResponse::Refused(MetaError::UnknownTopic("t".into())));
        assert_eq!(s.apply(&MetaCommand::UnregisterBroker { id: 3 }), MetaResponse::Done);
        assert!(matches!(s.apply(&create("u", 2, 3)), MetaResponse::Refused(MetaError::InvalidReplicationFactor { available: 2, .. })));
        let MetaResponse::TopicCreated { assignments, .. } = s.apply(&create("u", 2, 2)) else { panic!("not created") };
        assert!(assignments.iter().flatten().all(|b| *b != 3), "{assignments:?}");
    }
}
