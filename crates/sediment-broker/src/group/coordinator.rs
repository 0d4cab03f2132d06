//! The async glue around the group state machine.
//!
//! One [`Shard`] per partition of `__consumer_offsets` (a group lives on partition
//! `abs(javaHash(group)) % partitions`, as in Kafka). A shard's state sits behind a std mutex that
//! is held only for in-memory work and page-cache appends, never across an await:
//!
//! * JoinGroup/SyncGroup park a `oneshot` sender under a waiter id; the state machine's effects
//!   release them (`Reply::Later` on the connection awaits the receiver).
//! * Group records and offset commits are appended to the shard's partition under the lock, so
//!   the log order is the state order; responses that need durability wait for the partition's
//!   high watermark (the fsynced offset) outside the lock.
//! * A timer task per shard sleeps until the state machine's next deadline (session, rebalance,
//!   initial delay, sync), fires it, expires old offsets, and on shutdown answers every parked
//!   request with NOT_COORDINATOR.
//! * Compaction: once enough records were appended since the last snapshot, the shard rolls the
//!   log, appends a snapshot of its live state (every group's last record and every offset), waits
//!   for it to be durable and raises the log start offset to it (`delete_records_before`), which
//!   deletes the older segments. Loading at start therefore reads at most one snapshot plus the
//!   records written after it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use sediment_protocol::ErrorCode;
use tokio::sync::{Notify, oneshot, watch};

use super::GroupConfig;
use super::offsets::OffsetStore;
use super::records::{self, GroupValue, OffsetValue, OffsetsRecord};
use super::state::{Effect, Groups, JoinRequest, JoinResult, Limits, PersistToken, SyncRequest, SyncResult, Waiter};
use crate::broker::Broker;
use crate::partition::{AppendError, Partition, WaitError};
use crate::replica::Replica;

/// Kafka's name for the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Largest batch the snapshot writes at once.
const SNAPSHOT_BATCH_BYTES: usize = 512 * 1024;
/// Bytes read per step when loading a shard.
const LOAD_READ_BYTES: usize = 4 << 20;

pub use sediment_log::clock::{Clock, SystemClock};

/// The coordinator: the shards, created when `__consumer_offsets` exists (at start) or is first
/// needed (a group operation creates it).
/// Longest a group's first request waits for `__consumer_offsets` to be created and led.
const OFFSETS_TOPIC_WAIT: Duration = Duration::from_secs(10);

pub struct GroupCoordinator {
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    shards: OnceLock<Vec<Arc<Shard>>>,
    init: Mutex<()>,
    next_waiter: Arc<AtomicU64>,
    /// Cluster mode: the shards of the offsets partitions this broker leads, by partition (see
    /// [`lead_offsets_partition`]).
    led: RwLock<HashMap<i32, Arc<Shard>>>,
    /// Cluster mode: the offsets topic's creation is under way.
    creating: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").field("config", &self.config).field("shards", &self.shards.get().map(|s| s.len())).finish()
    }
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: GroupConfig, clock: Arc<dyn Clock>) -> GroupCoordinator {
        GroupCoordinator {
            config,
            clock,
            shards: OnceLock::new(),
            init: Mutex::new(()),
            next_waiter: Arc::new(AtomicU64::new(1)),
            led: RwLock::new(HashMap::new()),
            creating: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Loads the shards if `__consumer_offsets` exists (broker start; blocking reads).
    pub fn start(&self, broker: &Broker) -> Result<(), String> {
        self.shards(broker, false).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The shards, if the offsets topic exists (or was just created because `create`).
    fn shards(&self, broker: &Broker, create: bool) -> Result<Option<&Vec<Arc<Shard>>>, ErrorCode> {
        if let Some(s) = self.shards.get() {
            return Ok(Some(s));
        }
        let _guard = self.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.shards.get() {
            return Ok(Some(s));
        }
        let topic = match broker.topic(OFFSETS_TOPIC) {
            Some(t) => t,
            None if !create => return Ok(None),
            None => {
                let mut configs = BTreeMap::new();
                configs.insert("retention.ms".to_string(), "-1".to_string());
                configs.insert("retention.bytes".to_string(), "-1".to_string());
                configs.insert("segment.bytes".to_string(), self.config.offsets_segment_bytes.to_string());
                match broker.create_topic(OFFSETS_TOPIC, self.config.offsets_topic_partitions, -1, configs, false) {
                    Ok(t) => t,
                    Err(e) if e.code == ErrorCode::TopicAlreadyExists => broker.topic(OFFSETS_TOPIC).ok_or(ErrorCode::CoordinatorLoadInProgress)?,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot create the offsets topic");
                        return Err(ErrorCode::CoordinatorNotAvailable);
                    }
                }
            }
        };
        let max_batch_bytes = topic.config.max_message_bytes(&broker.defaults).max(64 * 1024);
        let mut shards = Vec::with_capacity(topic.partitions.len());
        let started = Instant::now();
        let mut loaded = 0usize;
        for p in topic.hosted() {
            let shard = self.new_shard(p.clone(), None, max_batch_bytes);
            loaded += shard.load().map_err(|e| {
                tracing::error!(partition = p.index, error = %e, "cannot load offsets partition");
                ErrorCode::CoordinatorLoadInProgress
            })?;
            tokio::spawn(run_timers(shard.clone(), broker.shutdown_signal()));
            shards.push(shard);
        }
        tracing::info!(partitions = shards.len(), records = loaded, elapsed_ms = started.elapsed().as_millis() as u64, "group coordinator loaded");
        let _ = self.shards.set(shards);
        Ok(self.shards.get())
    }

    /// Before a group's first request that may create its state (FindCoordinator, JoinGroup,
    /// OffsetCommit): when `__consumer_offsets` does not exist yet, creates it and waits, at most
    /// [`OFFSETS_TOPIC_WAIT`], until the group's partition has a leader and, led here, has
    /// loaded its groups. The first consumer of a new cluster is then answered at once; Kafka
    /// answers COORDINATOR_NOT_AVAILABLE meanwhile and clients retry after a backoff, which is
    /// what a request still gets past the bound.
    pub async fn await_offsets_topic(&self, broker: &Arc<Broker>, group: &str) {
        // the single-node path creates and loads its shards in the request itself
        if broker.cluster.is_none() || broker.topic(OFFSETS_TOPIC).is_some() {
            return;
        }
        self.create_offsets_topic(broker);
        let deadline = tokio::time::Instant::now() + OFFSETS_TOPIC_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(topic) = broker.topic(OFFSETS_TOPIC) {
                let p = records::partition_for(group, topic.partition_count());
                if self.led.read().unwrap_or_else(|e| e.into_inner()).contains_key(&p) {
                    return;
                }
                let leader = match topic.partition(p).and_then(|x| x.replica()) {
                    Some(r) => r.leader(),
                    None => broker
                        .cluster
                        .as_ref()
                        .and_then(|c| c.state().topics.get(OFFSETS_TOPIC).and_then(|rec| rec.leaders.get(p as usize)).filter(|l| l.0 >= 0).map(|l| l.0 as u64)),
                };
                if leader.is_some_and(|l| l != broker.node_id() as u64) {
                    return; // coordinated elsewhere: FindCoordinator names it
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cluster mode: creates `__consumer_offsets` through the controller, once, in the
    /// background (replication factor min(3, brokers), like any topic).
    pub fn create_offsets_topic(&self, broker: &Arc<Broker>) {
        if self.creating.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "-1".to_string());
        configs.insert("retention.bytes".to_string(), "-1".to_string());
        configs.insert("segment.bytes".to_string(), self.config.offsets_segment_bytes.to_string());
        let (b, partitions) = (broker.clone(), self.config.offsets_topic_partitions);
        tokio::spawn(async move {
            match b.create_topic_any(OFFSETS_TOPIC, partitions, -1, configs, false).await {
                Ok(_) => tracing::info!(partitions, "offsets topic created"),
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                Err(e) => tracing::warn!(error = %e, "cannot create the offsets topic yet"),
            }
            b.groups.creating.store(false, Ordering::Release);
        });
    }

    fn new_shard(&self, partition: Arc<Partition>, replica: Option<Arc<Replica>>, max_batch_bytes: usize) -> Arc<Shard> {
        let limits = Limits { initial_rebalance_delay_ms: self.config.initial_rebalance_delay_ms, ..Limits::default() };
        Arc::new(Shard {
            index: partition.index,
            partition,
            replica,
            max_batch_bytes,
            config: self.config.clone(),
            clock: self.clock.clone(),
            next_waiter: self.next_waiter.clone(),
            wake: Notify::new(),
            state: Mutex::new(ShardState {
                groups: Groups::new(limits),
                offsets: OffsetStore::default(),
                persisted_groups: HashMap::new(),
                joins: HashMap::new(),
                syncs: HashMap::new(),
                records_since_snapshot: 0,
                live_at_snapshot: 0,
                snapshot_running: false,
                next_offset: 0,
                commits: BTreeMap::new(),
            }),
        })
    }

    /// The shard owning `group`. `create`: create the offsets topic if it does not exist yet
    /// (operations that only read answer "nothing" instead).
    ///
    /// In a cluster the shard lives on the leader of the group's offsets partition: elsewhere
    /// the answer is NOT_COORDINATOR (the client asks FindCoordinator again), and before the
    /// offsets topic exists COORDINATOR_NOT_AVAILABLE (FindCoordinator creates it).
    pub fn shard_for(&self, broker: &Broker, group: &str, create: bool) -> Result<Option<Arc<Shard>>, ErrorCode> {
        if broker.cluster.is_some() {
            // not open here (never created, or this broker restarted and has not opened it
            // yet): this broker coordinates nothing. Answering "no offsets" instead would make a
            // consumer that asked a just-restarted broker reset its position.
            let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
                return Err(if create { ErrorCode::CoordinatorNotAvailable } else { ErrorCode::NotCoordinator });
            };
            let p = records::partition_for(group, topic.partition_count());
            if let Some(s) = self.led.read().unwrap_or_else(|e| e.into_inner()).get(&p) {
                return Ok(Some(s.clone()));
            }
            let leads = topic.partition(p).and_then(|p| p.replica().cloned()).is_some_and(|r| r.is_leader());
            return Err(if leads { ErrorCode::CoordinatorLoadInProgress } else { ErrorCode::NotCoordinator });
        }
        let Some(shards) = self.shards(broker, create)? else { return Ok(None) };
        let p = records::partition_for(group, shards.len() as i32);
        Ok(shards.get(p as usize).cloned())
    }

    /// Every shard that exists (on this broker).
    pub fn all_shards(&self) -> Vec<Arc<Shard>> {
        let led = self.led.read().unwrap_or_else(|e| e.into_inner());
        if !led.is_empty() {
            return led.values().cloned().collect();
        }
        drop(led);
        self.shards.get().cloned().unwrap_or_default()
    }

    /// A fresh suffix for a new member id.
    pub fn new_member_suffix(&self) -> String {
        sediment_log::random::uuid_v4().to_string()
    }
}

/// The mutable state of one shard.
pub struct ShardState {
    pub groups: Groups,
    pub offsets: OffsetStore,
    /// The last record written for each group (what a snapshot keeps).
    persisted_groups: HashMap<String, GroupValue>,
    joins: HashMap<Waiter, oneshot::Sender<JoinResult>>,
    syncs: HashMap<Waiter, oneshot::Sender<SyncResult>>,
    records_since_snapshot: u64,
    live_at_snapshot: u64,
    snapshot_running: bool,
    /// Replicated shard: the offset the next proposal will start at (the coordinator is the
    /// partition's only writer, and Raft's own entries take no offsets).
    next_offset: i64,
    /// Replicated shard: the commit of each proposal not yet below the high watermark, by the
    /// offset after it.
    commits: BTreeMap<i64, Commit>,
}

/// A proposal's commit, awaitable by several requests.
type Commit = futures::future::Shared<futures::future::BoxFuture<'static, Result<(), ErrorCode>>>;

/// A commit to validate and write.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub api_version: i16,
    pub offsets: Vec<(String, i32, OffsetValue)>,
}

/// What a commit did before waiting: one result per requested offset (None: written), and the
/// log offset the high watermark must reach before the response.
#[derive(Debug)]
pub struct CommitOutcome {
    pub results: Vec<Option<ErrorCode>>,
    pub wait_for: Option<i64>,
}

/// One partition of an OffsetFetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// One coordinator shard: a `__consumer_offsets` partition and the groups that hash to it.
pub struct Shard {
    pub index: i32,
    partition: Arc<Partition>,
    /// Cluster mode: the partition's Raft group, which this broker leads; writes are proposed
    /// through it and are durable once committed.
    replica: Option<Arc<Replica>>,
    max_batch_bytes: usize,
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    next_waiter: Arc<AtomicU64>,
    wake: Notify,
    state: Mutex<ShardState>,
}

/// Kafka's mapping of an append error for offset commits (`handleOperationException`).
fn commit_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge | ErrorCode::InvalidFetchSize => ErrorCode::InvalidCommitOffsetSize,
        other => group_error(other),
    }
}

/// Kafka's `appendGroupMetadataErrorToResponseError`.
fn group_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::UnknownTopicOrPartition | ErrorCode::NotEnoughReplicas | ErrorCode::RequestTimedOut => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge | ErrorCode::InvalidFetchSize => ErrorCode::UnknownServerError,
        other => other,
    }
}

impl Shard {
    /// Locks the state, first making every write the high watermark passed visible.
    pub fn lock(&self) -> MutexGuard<'_, ShardState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let hw = self.partition.high_watermark();
        st.offsets.apply_durable(hw);
        if !st.commits.is_empty() {
            st.commits = st.commits.split_off(&(hw + 1));
        }
        st
    }

    fn waiter(&self) -> Waiter {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    // ------------------------------------------------------------------ membership

    pub fn join(self: &Arc<Self>, group: &str, req: JoinRequest, suffix: &str) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let waiter = self.waiter();
        let now = self.now_ms();
        let mut st = self.lock();
        st.joins.insert(waiter, tx);
        let fx = st.groups.join(group, req, waiter, suffix, now);
        self.run_effects(&mut st, fx);
        drop(st);
        self.wake.notify_one();
        rx
    }

    pub fn sync(self: &Arc<Self>, group: &str, req: SyncRequest) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let waiter = self.waiter();
        let now = self.now_ms();
        let mut st = self.lock();
        st.syncs.insert(waiter, tx);
        let fx = st.groups.sync(group, req, waiter, now);
        self.run_effects(&mut st, fx);
        drop(st);
        self.wake.notify_one();
        rx
    }

    pub fn heartbeat(&self, group: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), ErrorCode> {
        let now = self.now_ms();
        let r = self.lock().groups.heartbeat(group, member_id, instance_id, generation, now);
        self.wake.notify_one();
        r
    }

    pub fn leave(self: &Arc<Self>, group: &str, members: &[(String, Option<String>)]) -> Result<Vec<Option<ErrorCode>>, ErrorCode> {
        let now = self.now_ms();
        let mut st = self.lock();
        let (r, fx) = st.groups.leave(group, members, now);
        self.run_effects(&mut st, fx);
        drop(st);
        self.wake.notify_one();
        r
    }

    // ------------------------------------------------------------------ offsets

    /// Validates and appends a commit. The caller answers after [`Shard::wait_durable`].
    pub fn commit(self: &Arc<Self>, req: CommitRequest) -> CommitOutcome {
        let now = self.now_ms();
        let n = req.offsets.len();
        let mut st = self.lock();
        if let Err(e) = st.groups.validate_offset_commit(&req.group, &req.member_id, req.instance_id.as_deref(), req.generation, req.api_version, now) {
            return CommitOutcome { results: vec![Some(e); n], wait_for: None };
        }
        let mut results = Vec::with_capacity(n);
        let mut recs = Vec::with_capacity(n);
        for (topic, partition, value) in &req.offsets {
            if value.metadata.len() > self.config.offset_metadata_max_bytes {
                results.push(Some(ErrorCode::OffsetMetadataTooLarge));
            } else {
                results.push(None);
                recs.push(OffsetsRecord::Offset { group: req.group.clone(), topic: topic.clone(), partition: *partition, value: Some(value.clone()) });
            }
        }
        if recs.is_empty() {
            return CommitOutcome { results, wait_for: None };
        }
        match self.append(&mut st, &recs) {
            Ok(end) => {
                for r in recs {
                    if let OffsetsRecord::Offset { group, topic, partition, value } = r {
                        st.offsets.stage(end, &group, &topic, partition, value);
                    }
                }
                CommitOutcome { results, wait_for: Some(end) }
            }
            Err(code) => {
                let e = commit_error(code);
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(e);
                }
                CommitOutcome { results, wait_for: None }
            }
        }
    }

    /// Waits until the log is durable up to `end` (exclusive), then makes it visible.
    pub async fn wait_durable(&self, end: i64) -> Result<(), ErrorCode> {
        if let Some(replica) = &self.replica {
            // the proposal's own commit, not the high watermark: after a leader change another
            // leader's writes may cover these offsets
            let commit = self.state.lock().unwrap_or_else(|e| e.into_inner()).commits.get(&end).cloned();
            let Some(c) = commit else {
                // committed already (the high watermark passed it), if this is still the leader
                return if replica.is_leader() && self.partition.high_watermark() >= end { Ok(()) } else { Err(ErrorCode::NotCoordinator) };
            };
            let timeout = Duration::from_millis(self.config.offset_commit_timeout_ms);
            let r = tokio::time::timeout(timeout, c).await.unwrap_or(Err(ErrorCode::CoordinatorNotAvailable));
            drop(self.lock());
            return r;
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.offset_commit_timeout_ms);
        let r = self.partition.wait_for_hw(end, deadline).await;
        drop(self.lock());
        match r {
            Ok(()) => Ok(()),
            Err(WaitError::TimedOut) => Err(group_error(ErrorCode::RequestTimedOut)),
            Err(WaitError::StorageFailed) => Err(group_error(ErrorCode::KafkaStorageError)),
        }
    }

    /// The group's committed offsets: the requested partitions (-1 when none is committed), or
    /// all of them. Also the end of the group's writes not yet durable, if any.
    pub fn fetch_offsets(&self, group: &str, topics: Option<&[(String, Vec<i32>)]>) -> (Vec<FetchedOffset>, Option<i64>) {
        let st = self.lock();
        let pending = st.offsets.pending_end(group);
        let missing =
            |topic: &str, partition: i32| FetchedOffset { topic: topic.to_string(), partition, offset: -1, leader_epoch: -1, metadata: String::new() };
        let found = |topic: &str, partition: i32, v: &OffsetValue| FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata.clone(),
        };
        let mut out = Vec::new();
        match topics {
            Some(topics) => {
                for (t, parts) in topics {
                    for &p in parts {
                        out.push(match st.offsets.get(group, t, p) {
                            Some(v) => found(t, p, v),
                            None => missing(t, p),
                        });
                    }
                }
            }
            None => {
                if let Some(all) = st.offsets.group(group) {
                    for ((t, p), v) in all {
                        out.push(found(t, *p, v));
                    }
                }
            }
        }
        (out, pending)
    }

    /// DeleteGroups for one group: tombstones for its record and every offset. Returns the log
    /// offset to wait for.
    pub fn delete_group(self: &Arc<Self>, group: &str) -> Result<Option<i64>, ErrorCode> {
        let mut st = self.lock();
        st.groups.validate_delete(group)?;
        let mut recs: Vec<OffsetsRecord> = st
            .offsets
            .keys_including_staged(group)
            .into_iter()
            .map(|(topic, partition)| OffsetsRecord::Offset { group: group.to_string(), topic, partition, value: None })
            .collect();
        recs.push(OffsetsRecord::Group { group: group.to_string(), value: None });
        let end = self.append_all(&mut st, &recs).map_err(group_error)?;
        st.groups.remove_group(group);
        st.persisted_groups.remove(group);
        tracing::info!(group, offsets = recs.len() - 1, "group deleted");
        Ok(Some(end))
    }

    /// OffsetDelete: `Err` is a group-level error; otherwise one result per partition and the log
    /// offset to wait for.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(self: &Arc<Self>, group: &str, topics: &[(String, Vec<i32>)]) -> Result<(Vec<Vec<Option<ErrorCode>>>, Option<i64>), ErrorCode> {
        let mut st = self.lock();
        let g = st.groups.get(group).ok_or(ErrorCode::GroupIdNotFound)?;
        use super::state::GroupState;
        if matches!(g.state(), GroupState::Stable | GroupState::PreparingRebalance | GroupState::CompletingRebalance) && !g.uses_consumer_protocol() {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let mut results = Vec::with_capacity(topics.len());
        let mut recs = Vec::new();
        for (topic, parts) in topics {
            if g.is_subscribed_to(topic) {
                results.push(vec![Some(ErrorCode::GroupSubscribedToTopic); parts.len()]);
                continue;
            }
            let keys = st.offsets.keys_including_staged(group);
            for &p in parts {
                if keys.contains(&(topic.clone(), p)) {
                    recs.push(OffsetsRecord::Offset { group: group.to_string(), topic: topic.clone(), partition: p, value: None });
                }
            }
            results.push(vec![None; parts.len()]);
        }
        if recs.is_empty() {
            return Ok((results, None));
        }
        let end = self.append_all(&mut st, &recs).map_err(group_error)?;
        Ok((results, Some(end)))
    }

    // ------------------------------------------------------------------ log

    /// Appends records as one batch under the state lock; stages offset tombstones and records
    /// group values. Returns the offset after the batch.
    fn append_all(self: &Arc<Self>, st: &mut ShardState, recs: &[OffsetsRecord]) -> Result<i64, ErrorCode> {
        let end = self.append(st, recs)?;
        for r in recs {
            match r {
                OffsetsRecord::Offset { group, topic, partition, value } => st.offsets.stage(end, group, topic, *partition, value.clone()),
                OffsetsRecord::Group { group, value: Some(v) } => {
                    st.persisted_groups.insert(group.clone(), v.clone());
                }
                OffsetsRecord::Group { group, value: None } => {
                    st.persisted_groups.remove(group);
                }
            }
        }
        Ok(end)
    }

    /// One batch into the partition (page cache). Raw append errors: the caller maps them.
    fn append(self: &Arc<Self>, st: &mut ShardState, recs: &[OffsetsRecord]) -> Result<i64, ErrorCode> {
        if self.partition.watermark().failed {
            return Err(ErrorCode::KafkaStorageError);
        }
        let now = self.now_ms();
        let mut batch = records::build_batch(recs, now);
        if batch.len() > self.max_batch_bytes {
            return Err(ErrorCode::MessageTooLarge);
        }
        if let Some(r) = &self.replica {
            let proposed = r.propose_now(batch.freeze()).map_err(|_| ErrorCode::NotCoordinator)?;
            let end = st.next_offset + recs.len() as i64;
            st.next_offset = end;
            let commit: futures::future::BoxFuture<'static, Result<(), ErrorCode>> =
                Box::pin(async move { proposed.committed().await.map_err(|_| ErrorCode::NotCoordinator) });
            st.commits.insert(end, futures::FutureExt::shared(commit));
            st.records_since_snapshot += recs.len() as u64;
            self.maybe_snapshot(st);
            return Ok(end);
        }
        let end = append_batch(&self.partition, &mut batch, now)?;
        st.records_since_snapshot += recs.len() as u64;
        self.maybe_snapshot(st);
        Ok(end)
    }

    /// Carries out the state machine's effects (the state lock is held).
    fn run_effects(self: &Arc<Self>, st: &mut ShardState, fx: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(e) = queue.pop_front() {
            match e {
                Effect::Join { waiter, result } => {
                    if let Some(tx) = st.joins.remove(&waiter) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Sync { waiter, result } => {
                    if let Some(tx) = st.syncs.remove(&waiter) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Persist { group, value, token } => {
                    let rec = OffsetsRecord::Group { group: group.clone(), value };
                    match self.append_all(st, std::slice::from_ref(&rec)) {
                        Ok(end) => {
                            if token != PersistToken::None {
                                let shard = self.clone();
                                tokio::spawn(async move {
                                    let err = shard.wait_durable(end).await.err();
                                    let now = shard.now_ms();
                                    let mut st = shard.lock();
                                    let fx = st.groups.persisted(&group, token, err, now);
                                    shard.run_effects(&mut st, fx);
                                    drop(st);
                                    shard.wake.notify_one();
                                });
                            }
                        }
                        Err(code) => {
                            let now = self.now_ms();
                            queue.extend(st.groups.persisted(&group, token, Some(group_error(code)), now));
                        }
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ load, snapshot, expiry

    /// Replays the partition from its log start offset (blocking reads). Returns the number of
    /// records replayed.
    fn load(self: &Arc<Self>) -> Result<usize, sediment_log::LogError> {
        let now = self.now_ms();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (start, hw, _) = self.partition.offsets();
        let mut pos = start;
        let mut n = 0usize;
        let mut skipped = 0usize;
        while pos < hw {
            let data = self.partition.read(pos, LOAD_READ_BYTES, true)?;
            if data.is_empty() {
                break;
            }
            let records::Decoded { records: recs, next, bad, unreadable_batches } = records::decode_batches(&data);
            skipped += bad;
            for _ in 0..unreadable_batches {
                sediment_telemetry::metrics().unreadable_batch();
            }
            for (_, r) in recs {
                n += 1;
                match r {
                    OffsetsRecord::Offset { group, topic, partition, value } => st.offsets.apply(&group, &topic, partition, value),
                    OffsetsRecord::Group { group, value } => {
                        match &value {
                            Some(v) => st.persisted_groups.insert(group.clone(), v.clone()),
                            None => st.persisted_groups.remove(&group),
                        };
                        st.groups.load(&group, value, now);
                    }
                }
            }
            match next {
                Some(nx) if nx > pos => pos = nx,
                _ => break,
            }
        }
        let offset_groups: Vec<String> = st.offsets.groups().cloned().collect();
        for g in offset_groups {
            st.groups.ensure_simple(&g, now);
        }
        if skipped > 0 {
            tracing::warn!(partition = self.index, skipped, "offsets log records skipped while loading");
        }
        st.records_since_snapshot = n as u64;
        st.live_at_snapshot = (st.offsets.len() + st.persisted_groups.len()) as u64;
        st.next_offset = hw;
        if n > 0 {
            tracing::debug!(partition = self.index, records = n, groups = st.groups.len(), offsets = st.offsets.len(), "offsets partition loaded");
        }
        self.maybe_snapshot(&mut st);
        Ok(n)
    }

    fn maybe_snapshot(self: &Arc<Self>, st: &mut ShardState) {
        let threshold = self.config.offsets_snapshot_min_records.max(2 * st.live_at_snapshot);
        if st.snapshot_running || st.records_since_snapshot < threshold {
            return;
        }
        st.snapshot_running = true;
        if let Some(replica) = self.replica.clone() {
            // Not inline: the append that got us here stages its records after it returns, and
            // the snapshot must contain them (its log start drops their log records).
            let shard = self.clone();
            tokio::spawn(async move {
                let mut st = shard.lock();
                shard.snapshot_replicated(&mut st, replica);
            });
            return;
        }
        let shard = self.clone();
        tokio::spawn(async move {
            let s2 = shard.clone();
            let written = tokio::task::spawn_blocking(move || s2.write_snapshot()).await;
            match written {
                Ok(Ok((start, end, live))) => {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    match shard.partition.wait_for_hw(end, deadline).await {
                        Ok(()) => match shard.partition.with_log(|l| l.delete_records_before(start)) {
                            Ok(log_start) => tracing::info!(partition = shard.index, log_start, live, "offsets log compacted"),
                            Err(e) => tracing::warn!(partition = shard.index, error = %e, "cannot drop the offsets log before the snapshot"),
                        },
                        Err(e) => tracing::warn!(partition = shard.index, error = ?e, "offsets snapshot not durable; keeping the older log"),
                    }
                }
                Ok(Err(e)) => tracing::warn!(partition = shard.index, error = %e, "offsets snapshot failed"),
                Err(e) => tracing::error!(partition = shard.index, error = %e, "offsets snapshot task panicked"),
            }
            shard.lock().snapshot_running = false;
        });
    }

    /// Every live record, groups first (what a snapshot writes).
    fn live_records(st: &ShardState) -> Vec<OffsetsRecord> {
        let mut recs: Vec<OffsetsRecord> = Vec::new();
        let mut groups: Vec<(&String, &GroupValue)> = st.persisted_groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (g, v) in groups {
            recs.push(OffsetsRecord::Group { group: g.clone(), value: Some(v.clone()) });
        }
        let mut latest: Vec<_> = st.offsets.latest().into_iter().collect();
        latest.sort_by(|a, b| a.0.cmp(&b.0));
        for (g, offs) in latest {
            for ((topic, partition), v) in offs {
                recs.push(OffsetsRecord::Offset { group: g.clone(), topic, partition, value: Some(v) });
            }
        }
        recs
    }

    /// The snapshot of a replicated shard (under the state lock): the live records are
    /// proposed through Raft like any append, and once they are committed the log start rises
    /// to the first of them through the partition's Raft group (replicated DeleteRecords), on
    /// every replica; retention's snapshot-and-purge then deletes the older segments. A new
    /// coordinator's load therefore reads one snapshot plus what followed it.
    fn snapshot_replicated(self: &Arc<Self>, st: &mut ShardState, replica: Arc<Replica>) {
        let now = self.now_ms();
        let recs = Self::live_records(st);
        let start = st.next_offset;
        let mut last = None;
        for b in records::build_batches(&recs, now, SNAPSHOT_BATCH_BYTES.min(self.max_batch_bytes)) {
            match replica.propose_now(b.freeze()) {
                Ok(p) => last = Some(p),
                Err(e) => {
                    tracing::debug!(partition = self.index, error = %e, "offsets snapshot not proposed");
                    st.snapshot_running = false;
                    return;
                }
            }
        }
        st.next_offset = start + recs.len() as i64;
        st.records_since_snapshot = 0;
        st.live_at_snapshot = recs.len() as u64;
        let shard = self.clone();
        tokio::spawn(async move {
            let committed = match last {
                Some(p) => p.committed().await,
                None => Ok(()),
            };
            match committed {
                Ok(()) => match replica.raise_log_start(start).await {
                    Ok(()) => tracing::info!(partition = shard.index, log_start = start, live = recs.len(), "offsets log compacted"),
                    Err(e) => tracing::warn!(partition = shard.index, error = %e, "cannot raise the offsets log start to the snapshot"),
                },
                Err(e) => tracing::warn!(partition = shard.index, error = %e, "offsets snapshot not committed; keeping the older log"),
            }
            shard.lock().snapshot_running = false;
        });
    }

    /// Rolls the log and appends every live record. Returns (snapshot start, end, records).
    fn write_snapshot(self: &Arc<Self>) -> Result<(i64, i64, usize), String> {
        let now = self.now_ms();
        let mut st = self.lock();
        let recs = Self::live_records(&st);
        self.partition.with_log(|l| l.roll()).map_err(|e| e.to_string())?;
        let start = self.partition.log_end_offset();
        let mut end = start;
        for mut b in records::build_batches(&recs, now, SNAPSHOT_BATCH_BYTES.min(self.max_batch_bytes)) {
            end = append_batch(&self.partition, &mut b, now).map_err(|e| format!("append failed: {e}"))?;
        }
        st.records_since_snapshot = 0;
        st.live_at_snapshot = recs.len() as u64;
        Ok((start, end, recs.len()))
    }

    /// Offsets retention (Kafka's `offsets.retention.minutes`): expired offsets get tombstones;
    /// an empty group left without offsets is deleted.
    fn expire_offsets(self: &Arc<Self>, now: i64) {
        let retention = self.config.offsets_retention_ms;
        if retention < 0 {
            return;
        }
        let mut st = self.lock();
        let mut recs = Vec::new();
        let mut drop_groups = Vec::new();
        let group_ids: Vec<String> = st.offsets.groups().cloned().collect();
        for gid in group_ids {
            use super::state::GroupState;
            let g = st.groups.get(&gid);
            // (base timestamp per offset, or None for "never expires now"), per Kafka's conditions.
            let empty_since = match g {
                None => Some(None),
                Some(g) if g.protocol_type().is_none() => Some(None),
                Some(g) if g.state() == GroupState::Empty => Some(Some(g.state_timestamp())),
                Some(g) if g.uses_consumer_protocol() && g.state() == GroupState::Stable => Some(None),
                Some(_) => None,
            };
            let Some(base) = empty_since else { continue };
            let stable_consumer = g.is_some_and(|g| g.state() == GroupState::Stable);
            let Some(offs) = st.offsets.group(&gid) else { continue };
            let mut expired = 0;
            for ((topic, partition), v) in offs {
                if stable_consumer && g.is_some_and(|g| g.is_subscribed_to(topic)) {
                    continue;
                }
                let ts = base.unwrap_or(v.commit_timestamp);
                if now.saturating_sub(ts) >= retention && st.offsets.pending_end(&gid).is_none() {
                    recs.push(OffsetsRecord::Offset { group: gid.clone(), topic: topic.clone(), partition: *partition, value: None });
                    expired += 1;
                }
            }
            if expired > 0 && expired == offs.len() && g.is_none_or(|g| g.state() == GroupState::Empty) {
                drop_groups.push(gid.clone());
            }
        }
        if recs.is_empty() {
            return;
        }
        for g in &drop_groups {
            if st.persisted_groups.contains_key(g) {
                recs.push(OffsetsRecord::Group { group: g.clone(), value: None });
            }
        }
        let n = recs.len();
        for chunk in recs.chunks(1000) {
            if let Err(e) = self.append_all(&mut st, chunk) {
                tracing::warn!(partition = self.index, error = ?e, "cannot write expired offset tombstones");
                return;
            }
        }
        for g in &drop_groups {
            st.groups.remove_group(g);
        }
        tracing::info!(partition = self.index, tombstones = n, groups_removed = drop_groups.len(), "expired offsets removed");
    }

    /// Answers every parked request with NOT_COORDINATOR (shutdown).
    fn abort_waiters(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, tx) in st.joins.drain() {
            let _ = tx.send(JoinResult::error("", ErrorCode::NotCoordinator));
        }
        for (_, tx) in st.syncs.drain() {
            let _ = tx.send(SyncResult::error(ErrorCode::NotCoordinator));
        }
    }
}

/// Appends one batch the coordinator built; returns the offset after it, or the error code.
fn append_batch(partition: &Partition, batch: &mut [u8], now: i64) -> Result<i64, ErrorCode> {
    let header = sediment_protocol::batch::BatchHeader::parse(batch).map_err(|e| e.code())?;
    match partition.append(&header, batch, now) {
        Ok(appended) => Ok(appended.last_offset() + 1),
        Err(AppendError::Log(e)) => {
            tracing::error!(partition = partition.index, error = %e, "append to the offsets log failed");
            Err(crate::error::ApiError::from(&e).code)
        }
        Err(AppendError::Producer(code, msg)) => {
            tracing::error!(partition = partition.index, error = %msg, "append to the offsets log refused");
            Err(code)
        }
    }
}

async fn run_timers(shard: Arc<Shard>, mut shutdown: watch::Receiver<bool>) {
    let mut last_expiry = shard.now_ms();
    loop {
        let now = shard.now_ms();
        let next = shard.state.lock().unwrap_or_else(|e| e.into_inner()).groups.next_deadline();
        let wait = next.map(|d| (d - now).clamp(0, 1000)).unwrap_or(1000) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shard.wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => {
                shard.abort_waiters();
                return;
            }
        }
        let now = shard.now_ms();
        {
            let mut st = shard.lock();
            let fx = st.groups.tick(now);
            if !fx.is_empty() {
                shard.run_effects(&mut st, fx);
            }
        }
        if now - last_expiry >= shard.config.offsets_retention_check_interval_ms {
            last_expiry = now;
            shard.expire_offsets(now);
        }
    }
}

/// Cluster mode: coordinates the groups of offsets partition `p` while this broker leads it.
///
/// On becoming leader it waits until every entry of its log is committed (its own term's first
/// entry included, so nothing an old leader wrote is still undecided), loads the shard from the
/// log and serves its groups; when it loses the leadership it drops the shard, answering parked
/// joins and syncs NOT_COORDINATOR, and clients find the new coordinator. Runs until the
/// replica stops.
pub async fn lead_offsets_partition(broker: Weak<Broker>, p: Arc<Partition>, replica: Arc<Replica>, max_batch_bytes: usize) {
    use openraft::ServerState;
    let mut m = replica.raft.metrics();
    loop {
        let term = match m.wait_for(|x| x.state == ServerState::Leader).await {
            Ok(x) => x.current_term,
            Err(_) => return,
        };
        let leading = |x: &openraft::RaftMetrics<u64, openraft::BasicNode>| x.state == ServerState::Leader && x.current_term == term;
        while leading(&m.borrow()) && p.high_watermark() < p.log_end_offset() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !leading(&m.borrow()) {
            continue;
        }
        let Some(b) = broker.upgrade() else { return };
        let shard = b.groups.new_shard(p.clone(), Some(replica.clone()), max_batch_bytes);
        let started = Instant::now();
        let s2 = shard.clone();
        let loaded = tokio::task::spawn_blocking(move || s2.load()).await;
        match loaded {
            Ok(Ok(n)) => tracing::info!(
                partition = p.index,
                term,
                records = n,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "coordinating the groups of an offsets partition"
            ),
            Ok(Err(e)) => {
                tracing::error!(partition = p.index, error = %e, "cannot load offsets partition");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(partition = p.index, error = %e, "offsets partition load panicked");
                return;
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(run_timers(shard.clone(), stop_rx));
        b.groups.led.write().unwrap_or_else(|e| e.into_inner()).insert(p.index, shard.clone());
        let mut shutdown = b.shutdown_signal();
        drop(b);
        let shutting_down = tokio::select! {
            r = m.wait_for(|x| !leading(x)) => { let _ = r; false }
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if let Some(b) = broker.upgrade() {
            b.groups.led.write().unwrap_or_else(|e| e.into_inner()).remove(&p.index);
        }
        let _ = stop_tx.send(true);
        tracing::info!(partition = p.index, term, "no longer coordinating the groups of an offsets partition");
        if shutting_down {
            return;
        }
    }
}
