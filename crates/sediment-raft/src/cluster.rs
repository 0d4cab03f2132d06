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
    /// Per partition, the replicas its Raft group was formed with (they seed its first
    /// membership; a replica added later joins the running group instead). Never changes.
    pub seeds: Vec<Vec<i32>>,
    /// Partitions moving to other brokers (AlterPartitionReassignments): while one is here its
    /// `assignments` entry is the union of both sets, so every broker involved hosts a replica.
    pub reassigning: BTreeMap<i32, Reassignment>,
}

/// A partition's replicas moving from one set of brokers to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub from: Vec<i32>,
    pub to: Vec<i32>,
}

impl Reassignment {
    /// Brokers that get a replica.
    pub fn adding(&self) -> Vec<i32> {
        self.to.iter().copied().filter(|b| !self.from.contains(b)).collect()
    }

    /// Brokers whose replica goes.
    pub fn removing(&self) -> Vec<i32> {
        self.from.iter().copied().filter(|b| !self.to.contains(b)).collect()
    }
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
    /// Per (topic id, partition), the in-sync replicas its leader last reported; a partition
    /// with no entry counts every replica in sync. Last, so that a state encoded before it
    /// existed still decodes ([`ClusterState::decode`]).
    pub isr: BTreeMap<(Uuid, i32), IsrRecord>,
}

/// A partition's in-sync replicas (Kafka's ISR) as reported by its leader in `epoch`: replicas
/// on live brokers whose log reached, within `replica_lag_time_max_ms`, where the leader's
/// was that long ago.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrRecord {
    pub epoch: i32,
    pub isr: Vec<i32>,
}

/// [`ClusterState`] as encoded before it carried the ISR.
#[derive(Deserialize)]
struct ClusterStateV1 {
    cluster_id: String,
    brokers: BTreeMap<i32, BrokerRecord>,
    topics: BTreeMap<String, TopicRecord>,
    producer_id_block_end: i64,
}

impl ClusterState {
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicRecord> {
        self.topics.values().find(|t| &t.id == id)
    }

    /// Decodes a state (a snapshot's) in the current encoding or any earlier one.
    pub fn decode(bytes: &[u8]) -> Result<ClusterState, String> {
        match crate::network::decode::<ClusterState>(bytes) {
            Ok(s) => Ok(s),
            Err(e) => match crate::network::decode::<ClusterStateV1>(bytes) {
                Ok(v1) => Ok(ClusterState {
                    cluster_id: v1.cluster_id,
                    brokers: v1.brokers,
                    topics: v1.topics,
                    producer_id_block_end: v1.producer_id_block_end,
                    isr: BTreeMap::new(),
                }),
                Err(_) => Err(e),
            },
        }
    }

    /// The in-sync replicas of a partition: as its leader last reported them, or every replica
    /// when none has reported.
    pub fn isr(&self, topic: &TopicRecord, partition: i32) -> Vec<i32> {
        let replicas = usize::try_from(partition).ok().and_then(|p| topic.assignments.get(p)).cloned().unwrap_or_default();
        match self.isr.get(&(topic.id, partition)) {
            // in replica order, and only replicas (a reassignment may have changed them since)
            Some(r) => replicas.into_iter().filter(|b| r.isr.contains(b)).collect(),
            None => replicas,
        }
    }
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets the cluster id if none is set yet (first writer wins).
    SetClusterId {
        cluster_id: String,
    },
    /// Adds or updates a broker (its addresses may change across restarts).
    RegisterBroker(BrokerRecord),
    /// Removes a broker (`sediment cluster remove-broker`); refused while any partition has a
    /// replica on it. Afterwards no new replica is placed there.
    UnregisterBroker {
        id: i32,
    },
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
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `count` partitions (new ones placed like at creation).
    CreatePartitions {
        name: String,
        count: i32,
        placement_start: u32,
    },
    /// Replaces a topic's config overrides.
    SetTopicConfig {
        name: String,
        config: BTreeMap<String, String>,
    },
    /// Reserves `count` producer ids; answered with the first.
    ReserveProducerIds {
        count: i64,
    },
    /// Starts moving partitions of `topic` to the given replicas (AlterPartitionReassignments);
    /// each partition's leader carries it out and reports [`MetaCommand::CompleteReassignment`].
    /// All or nothing: one invalid target refuses the whole command.
    ReassignPartitions {
        topic: String,
        targets: Vec<(i32, Vec<i32>)>,
    },
    /// A partition's Raft group now has exactly `replicas` as voters: the move is done.
    CompleteReassignment {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
    },
    /// A partition's Raft group elected `leader` in term `epoch` (ignored if older than what
    /// is recorded, or if the topic id no longer matches).
    SetPartitionLeader {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        epoch: i32,
    },
    /// A partition's leader in term `epoch` reports its in-sync replicas (ignored from a leader
    /// older than the one recorded, or naming brokers that hold no replica).
    SetPartitionIsr {
        topic_id: Uuid,
        partition: i32,
        epoch: i32,
        isr: Vec<i32>,
    },
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
    #[error("{0}")]
    InvalidReassignment(String),
    /// A topic name Kafka would not accept (and which could name a path outside the logs dir).
    #[error("{0}")]
    InvalidTopic(String),
    /// Every producer id up to i64::MAX has been handed out (Kafka: a fatal broker error).
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
}

/// Most producer ids one ReserveProducerIds hands out (a peer asks for 1000 at a time).
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// Most partitions one topic may have (the same cap the Kafka port applies).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// The internal topic whose partition count places consumer groups: never deleted or grown.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Also the answer to blank and membership entries.
    #[default]
    Done,
    Refused(MetaError),
    TopicCreated {
        id: Uuid,
        assignments: Vec<Vec<i32>>,
    },
    ProducerIds {
        start: i64,
    },
}

/// Replica placement: partition `p` gets `rf` consecutive brokers (in id order) starting at
/// `start + p`, so leaders (the first replica) rotate over the brokers and each broker leads
/// about `partitions / brokers` partitions.
pub fn place(brokers: &[i32], first_partition: i32, count: i32, rf: usize, start: u32) -> Vec<Vec<i32>> {
    let n = brokers.len();
    (first_partition..first_partition + count).map(|p| (0..rf).map(|j| brokers[(start as usize + p as usize + j) % n]).collect()).collect()
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
                // every command is checked again where it is applied: whoever proposed it, a
                // name becomes a directory on every broker
                if let Err(e) = sediment_protocol::names::validate_topic_name(name) {
                    return MetaResponse::Refused(MetaError::InvalidTopic(e));
                }
                if *partitions > MAX_PARTITIONS_PER_TOPIC {
                    return MetaResponse::Refused(MetaError::InvalidPartitions(format!(
                        "{partitions} partitions is more than a topic may have ({MAX_PARTITIONS_PER_TOPIC})"
                    )));
                }
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
                        seeds: assignments.clone(),
                        assignments: assignments.clone(),
                        created_ms: *created_ms,
                        reassigning: BTreeMap::new(),
                    },
                );
                MetaResponse::TopicCreated { id: *id, assignments }
            }
            MetaCommand::DeleteTopic { name } if name == OFFSETS_TOPIC => {
                MetaResponse::Refused(MetaError::InvalidTopic(format!("internal topic {name} cannot be deleted")))
            }
            MetaCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(t) => {
                    self.isr.retain(|(id, _), _| *id != t.id);
                    MetaResponse::Done
                }
                None => MetaResponse::Refused(MetaError::UnknownTopic(name.clone())),
            },
            MetaCommand::CreatePartitions { name, count, placement_start } => {
                if name == OFFSETS_TOPIC {
                    return MetaResponse::Refused(MetaError::InvalidTopic(format!("internal topic {name} has a fixed partition count")));
                }
                if *count > MAX_PARTITIONS_PER_TOPIC {
                    return MetaResponse::Refused(MetaError::InvalidPartitions(format!(
                        "{count} partitions is more than a topic may have ({MAX_PARTITIONS_PER_TOPIC})"
                    )));
                }
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
                t.seeds.extend(more.iter().cloned());
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
            MetaCommand::ReassignPartitions { topic, targets } => {
                let Some(t) = self.topics.get(topic) else {
                    return MetaResponse::Refused(MetaError::UnknownTopic(topic.clone()));
                };
                let mut moves = Vec::new();
                for (p, to) in targets {
                    let bad = |why: String| MetaResponse::Refused(MetaError::InvalidReassignment(format!("{topic}-{p}: {why}")));
                    let Some(current) = usize::try_from(*p).ok().and_then(|i| t.assignments.get(i)) else {
                        return MetaResponse::Refused(MetaError::InvalidPartitions(format!("{topic} has no partition {p}")));
                    };
                    if t.reassigning.contains_key(p) {
                        return bad("a reassignment is already in progress".into());
                    }
                    let mut distinct = to.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    if to.is_empty() || distinct.len() != to.len() {
                        return bad(format!("replicas {to:?} must be distinct and not empty"));
                    }
                    if let Some(b) = to.iter().find(|b| !self.brokers.contains_key(b)) {
                        return bad(format!("broker {b} is not registered"));
                    }
                    if to != current {
                        moves.push((*p, Reassignment { from: current.clone(), to: to.clone() }));
                    }
                }
                let t = self.topics.get_mut(topic).expect("checked above");
                for (p, r) in moves {
                    let union: Vec<i32> = r.from.iter().chain(r.adding().iter()).copied().collect();
                    t.assignments[p as usize] = union;
                    t.reassigning.insert(p, r);
                }
                MetaResponse::Done
            }
            MetaCommand::CompleteReassignment { topic_id, partition, replicas } => {
                if let Some(t) = self.topics.values_mut().find(|t| &t.id == topic_id)
                    && t.reassigning.get(partition).is_some_and(|r| &r.to == replicas)
                {
                    t.reassigning.remove(partition);
                    t.assignments[*partition as usize] = replicas.clone();
                    // the new replica set's leader reports its own
                    self.isr.remove(&(*topic_id, *partition));
                }
                MetaResponse::Done
            }
            MetaCommand::SetPartitionIsr { topic_id, partition, epoch, isr } => {
                if let Some(t) = self.topics.values().find(|t| &t.id == topic_id)
                    && let Some(p) = usize::try_from(*partition).ok()
                    && let (Some(replicas), Some(leader)) = (t.assignments.get(p), t.leaders.get(p))
                    && *epoch >= leader.1
                    && !isr.is_empty()
                    && isr.iter().all(|b| replicas.contains(b))
                {
                    self.isr.insert((*topic_id, *partition), IsrRecord { epoch: *epoch, isr: isr.clone() });
                }
                MetaResponse::Done
            }
            MetaCommand::ReserveProducerIds { count } => {
                let start = self.producer_id_block_end;
                match start.checked_add((*count).clamp(1, MAX_PRODUCER_ID_BLOCK)) {
                    Some(end) => {
                        self.producer_id_block_end = end;
                        MetaResponse::ProducerIds { start }
                    }
                    None => MetaResponse::Refused(MetaError::ProducerIdsExhausted),
                }
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
    fn isr_reports_are_fenced_by_epoch_and_replicas() {
        let mut s = ClusterState::default();
        for b in 1..=3 {
            s.apply(&broker(b));
        }
        s.apply(&create("t", 1, 3));
        let id = s.topics["t"].id;
        let t = s.topics["t"].clone();
        assert_eq!(s.isr(&t, 0), t.assignments[0], "no report: every replica in sync");
        s.apply(&MetaCommand::SetPartitionLeader { topic_id: id, partition: 0, leader: 1, epoch: 4 });
        s.apply(&MetaCommand::SetPartitionIsr { topic_id: id, partition: 0, epoch: 4, isr: vec![1, 2] });
        let in_order: Vec<i32> = t.assignments[0].iter().copied().filter(|b| *b != 3).collect();
        assert_eq!(s.isr(&t, 0), in_order);
        // a deposed leader's late report, a broker without a replica, an empty set: ignored
        s.apply(&MetaCommand::SetPartitionIsr { topic_id: id, partition: 0, epoch: 3, isr: vec![1] });
        s.apply(&MetaCommand::SetPartitionIsr { topic_id: id, partition: 0, epoch: 4, isr: vec![1, 9] });
        s.apply(&MetaCommand::SetPartitionIsr { topic_id: id, partition: 0, epoch: 4, isr: vec![] });
        s.apply(&MetaCommand::SetPartitionIsr { topic_id: id, partition: 5, epoch: 4, isr: vec![1] });
        assert_eq!(s.isr(&t, 0), in_order);
        s.apply(&MetaCommand::DeleteTopic { name: "t".into() });
        assert!(s.isr.is_empty());
    }

    #[test]
    fn a_state_encoded_before_the_isr_still_decodes() {
        #[derive(Serialize)]
        struct V1<'a> {
            cluster_id: &'a str,
            brokers: BTreeMap<i32, BrokerRecord>,
            topics: BTreeMap<String, TopicRecord>,
            producer_id_block_end: i64,
        }
        let mut s = ClusterState::default();
        s.apply(&broker(1));
        s.apply(&create("t", 2, 1));
        let old = V1 { cluster_id: "c", brokers: s.brokers.clone(), topics: s.topics.clone(), producer_id_block_end: 5 };
        let bytes = crate::network::encode(&old).unwrap();
        let back = ClusterState::decode(&bytes).unwrap();
        assert_eq!((back.cluster_id.as_str(), back.topics.len(), back.producer_id_block_end), ("c", 1, 5));
        assert!(back.isr.is_empty());
        let now = crate::network::encode(&back).unwrap();
        assert_eq!(ClusterState::decode(&now).unwrap(), back);
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
        assert_eq!(s.apply(&create("t", 3, 1)), MetaResponse::Refused(MetaError::InvalidReplicationFactor { requested: 1, available: 0 }));
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
        // a forged count cannot take the whole id space, nor overflow it
        assert_eq!(s.apply(&MetaCommand::ReserveProducerIds { count: i64::MAX }), MetaResponse::ProducerIds { start: 2000 });
        assert_eq!(s.producer_id_block_end, 2000 + MAX_PRODUCER_ID_BLOCK);
        s.producer_id_block_end = i64::MAX - 10;
        assert_eq!(s.apply(&MetaCommand::ReserveProducerIds { count: 1000 }), MetaResponse::Refused(MetaError::ProducerIdsExhausted));
        assert_eq!(s.producer_id_block_end, i64::MAX - 10);
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

    #[test]
    fn reassignment_hosts_both_sets_until_it_completes() {
        let mut s = ClusterState::default();
        for b in [1, 2, 3, 4] {
            s.apply(&broker(b));
        }
        let reassign = |targets: Vec<(i32, Vec<i32>)>| MetaCommand::ReassignPartitions { topic: "t".into(), targets };
        s.apply(&create("t", 2, 3));
        let from = s.topics["t"].assignments[0].clone();
        let to: Vec<i32> = vec![4, from[1], from[2]];
        // invalid targets refuse the whole command
        for bad in [vec![], vec![4, 4, 1], vec![9, 1, 2]] {
            assert!(matches!(s.apply(&reassign(vec![(0, to.clone()), (1, bad)])), MetaResponse::Refused(MetaError::InvalidReassignment(_))));
        }
        assert!(s.topics["t"].reassigning.is_empty());
        assert_eq!(s.apply(&reassign(vec![(0, to.clone())])), MetaResponse::Done);
        let t = &s.topics["t"];
        assert_eq!(t.assignments[0], [from.clone(), vec![4]].concat(), "both sets host it meanwhile");
        assert_eq!(t.reassigning[&0].removing(), vec![from[0]]);
        assert_eq!(t.seeds[0], from, "seeds never change");
        assert!(matches!(s.apply(&reassign(vec![(0, from.clone())])), MetaResponse::Refused(MetaError::InvalidReassignment(_))));
        // a completion for other replicas (stale) changes nothing; the right one finishes it
        let id = s.topics["t"].id;
        s.apply(&MetaCommand::CompleteReassignment { topic_id: id, partition: 0, replicas: from.clone() });
        assert!(s.topics["t"].reassigning.contains_key(&0));
        s.apply(&MetaCommand::CompleteReassignment { topic_id: id, partition: 0, replicas: to.clone() });
        assert_eq!(s.topics["t"].assignments[0], to);
        assert!(s.topics["t"].reassigning.is_empty());
    }

    #[test]
    fn the_state_machine_checks_what_it_applies() {
        let mut s = ClusterState::default();
        s.apply(&broker(1));
        let create = |name: &str, partitions: i32| MetaCommand::CreateTopic {
            name: name.into(),
            id: sediment_log::random::uuid_v4(),
            partitions,
            replication_factor: 1,
            config: BTreeMap::new(),
            placement_start: 0,
            created_ms: 0,
        };
        for bad in ["../../../../outside", "a/b", "", ".."] {
            assert!(matches!(s.apply(&create(bad, 1)), MetaResponse::Refused(MetaError::InvalidTopic(_))), "{bad:?}");
        }
        assert!(matches!(s.apply(&create("t", MAX_PARTITIONS_PER_TOPIC + 1)), MetaResponse::Refused(MetaError::InvalidPartitions(_))));
        assert!(matches!(s.apply(&create(OFFSETS_TOPIC, 4)), MetaResponse::TopicCreated { .. }));
        let del = MetaCommand::DeleteTopic { name: OFFSETS_TOPIC.into() };
        assert!(matches!(s.apply(&del), MetaResponse::Refused(MetaError::InvalidTopic(_))));
        let grow = MetaCommand::CreatePartitions { name: OFFSETS_TOPIC.into(), count: 8, placement_start: 0 };
        assert!(matches!(s.apply(&grow), MetaResponse::Refused(MetaError::InvalidTopic(_))));
        assert_eq!(s.topics.len(), 1);
    }
}
