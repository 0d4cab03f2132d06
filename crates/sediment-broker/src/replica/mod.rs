//! A replicated partition: its Raft group (openraft) with the partition's segment log as the
//! Raft log.
//!
//! * **One log.** A record batch is written once, into the segment log, by
//!   [`ReplicaLog::append`] on every replica; the Raft entry index
//!   ([`sediment_raft::entry_index`]) maps dense Raft indexes onto the batches' offsets and
//!   holds the entries that are not batches (blank, membership, refused no-ops), so the
//!   segments contain only records and consumers see no offset gaps.
//! * **Epochs.** The Raft term is the Kafka leader epoch: it is patched into each batch's
//!   partition leader epoch at append (single-term-leader mode: one leader per term).
//! * **Offsets.** Offsets are assigned at append: the leader patches the base offset to its log
//!   end; a follower receives the batch already patched and, its log matching the leader's up
//!   to that entry, lands it at the same offset (checked).
//! * **Idempotence.** The leader checks a proposal's producer sequence when appending it (the
//!   single point where proposals are ordered); a duplicate or out-of-order batch becomes a
//!   no-op entry and its proposer is answered with the original offsets or the error. Every
//!   replica records producer state as batches append, and rebuilds it after a truncation.
//! * **High watermark.** The state machine is the high watermark: applying committed entries
//!   raises it to the end of the last one. Consumers read below it only, so they never see a
//!   record a leader change could take back.
//! * **Durability.** Appends land in the page cache; one flusher per partition fsyncs the
//!   segment and the entry index and then tells openraft (group commit across proposals). A
//!   group of one with `fsync = always` tells openraft of record-only appends at once and holds
//!   the high watermark (and acks=all) at the fsynced offset instead (docs/design/0001).
//!
//! Files: `index.rs` (the entry index under the partition lock, epochs, adopting a pre-Raft
//! log), `log.rs` (openraft's log storage and the flusher), `sm.rs` (the state machine and its
//! snapshots), this file (the types, proposals and the [`Replica`] handle).

// openraft's StorageError is what its storage traits return; boxing it in our helpers would
// only move the allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::fs::File;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Config, Entry, EntryPayload, LogId, LogState, Membership, RaftLogReader, RaftSnapshotBuilder, ServerState, SnapshotMeta,
    SnapshotPolicy, StorageError, StorageIOError, StoredMembership, Vote,
};
use sediment_log::{AppendInfo, LogError, PartitionLog};
use sediment_protocol::ErrorCode;
use sediment_protocol::batch::{BatchHeader, BatchIter};
use sediment_raft::entry_index::{EntryIndex, EntryKind, EntryRecord, IndexError};
use sediment_raft::log_store::{load_small, save_small};
use sediment_raft::network::{NetworkFactory, RaftHandler, Registry, decode, encode};
use sediment_raft::quiesce::{Quiescer, QuietHandle};
use sediment_raft::transport::{GroupId, Peers};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::partition::{FsyncPolicy, Inner, Partition, off_worker};
use crate::producer_state::{BatchMeta, Verdict};

openraft::declare_raft_types!(
    /// Type config of partition groups.
    pub DataTc:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<DataTc>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type DataRaft = openraft::Raft<DataTc>;

/// A proposed (or replicated) record batch; an empty batch is a no-op entry, or, with
/// `log_start`, a DeleteRecords: the log start offset rises there when the entry is applied.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub batch: Bytes,
    /// Local only (never sent): on the leader's own proposals, who waits for the append
    /// outcome of each batch in `batch`, in order (0: nobody). Replicated entries arrive with
    /// none.
    #[serde(skip)]
    pub tokens: Vec<u64>,
    /// DeleteRecords: the new log start offset (the batch is empty).
    pub log_start: Option<i64>,
    /// Tiered storage: a change to the partition's remote segment list (the batch is empty).
    pub remote: Option<sediment_tier::ManifestOp>,
}

impl Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.log_start, &self.remote) {
            (Some(o), _) => write!(f, "Proposal(log start {o})"),
            (None, Some(op)) => write!(f, "Proposal(remote {op:?})"),
            (None, None) => write!(f, "Proposal({} bytes, {} tokens)", self.batch.len(), self.tokens.len()),
        }
    }
}

/// What appending a proposal did on the leader.
#[derive(Debug, Clone)]
pub enum Outcome {
    Appended(AppendInfo),
    /// An idempotent retry of a batch already in the log: its original offsets.
    Duplicate(BatchMeta),
    /// Refused by the producer-state rules (sequence gap, stale epoch...).
    Refused(ErrorCode, String),
}

const VOTE_FILE: &str = "raft.vote";
const PURGED_FILE: &str = "raft.purged";
const COMMITTED_FILE: &str = "raft.committed";
const APPLIED_FILE: &str = "raft.applied";
/// Bytes of batches one replication RPC carries at most (plus openraft's entry-count cap).
const MAX_RPC_BYTES: usize = 8 << 20;

mod index;
mod log;
mod sm;

pub use index::*;
pub use log::*;
pub use sm::*;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn st_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn raft_of(inner: &mut Inner) -> Result<&mut RaftIndex, StorageError<u64>> {
    inner.raft.as_mut().ok_or_else(|| st_err("partition is not replicated"))
}

/// Proposers waiting for their append outcome, by token.
#[derive(Default)]
pub struct Proposals {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// Proposers waiting for their entry's commit, by token.
    committing: Mutex<HashMap<u64, oneshot::Sender<Result<(), ProposeError>>>>,
    next: AtomicU64,
}

impl Proposals {
    /// Answers the commit waiters of `tokens` (one entry's).
    fn committed(&self, tokens: &[u64], r: Result<(), ProposeError>) {
        let mut m = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        for t in tokens {
            if let Some(tx) = m.remove(t) {
                let _ = tx.send(r.clone());
            }
        }
    }

    /// Forgets `tokens`: their proposers see NotLeader.
    fn fail(&self, tokens: &[u64]) {
        let (mut w, mut c) = (self.waiting.lock().unwrap_or_else(|e| e.into_inner()), self.committing.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tokens {
            w.remove(t);
            c.remove(t);
        }
    }

    fn notify(&self, token: u64, o: Outcome) {
        if token == 0 {
            return;
        }
        if let Some(tx) = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&token) {
            let _ = tx.send(o);
        }
    }
}

/// Timers of partition groups (see `sediment_raft::controller::raft_config` for why not
/// openraft's defaults). Snapshots are not taken on a schedule: the data is the log.
pub fn raft_config() -> Arc<Config> {
    let c = Config {
        cluster_name: "sediment-partition".into(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    };
    Arc::new(c.validate().expect("partition raft config is valid"))
}

/// The group id of a partition on the peer transport (never 0, the metadata group, nor
/// `u64::MAX`, the liveness beats).
pub fn group_id(topic_id: &uuid::Uuid, partition: i32) -> GroupId {
    let (hi, lo) = topic_id.as_u64_pair();
    let mut h = hi ^ lo.rotate_left(17) ^ (partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h.clamp(1, sediment_raft::quiesce::BEAT_GROUP - 1)
}

/// How long a restarted group of one waits for its own election before it serves anyway.
const LONE_ELECTION_WAIT: Duration = Duration::from_secs(10);

/// How long replicas of a new partition wait for its preferred replica to form the group.
const PREFERRED_HEAD_START: Duration = Duration::from_millis(1000);

async fn initialize(raft: &DataRaft, members: BTreeMap<u64, BasicNode>) -> anyhow::Result<()> {
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Why a proposal was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader of this partition (leader: {0:?})")]
    NotLeader(Option<u64>),
    #[error("the partition's Raft group stopped: {0}")]
    Stopped(String),
}

/// A running partition group on this broker.
pub struct Replica {
    pub raft: DataRaft,
    pub group: GroupId,
    node_id: u64,
    proposals: Arc<Proposals>,
    /// Set when the group is under quiescence (cluster mode): a write wakes it first.
    quiet: std::sync::OnceLock<QuietHandle<DataTc>>,
    /// The peer transport (cluster mode), for leadership transfers.
    peers: std::sync::OnceLock<Arc<Peers>>,
    /// A leadership transfer is under way: new proposals are refused meanwhile.
    transferring: std::sync::atomic::AtomicBool,
    /// Since when this broker leads the group (None when it does not).
    leading_since: Mutex<Option<Instant>>,
    /// Where this leader's log ended over the last lag bound (for its ISR).
    progress: crate::isr::Progress,
    /// Proposals waiting for the entry in flight to reach the disk (group commit).
    queue: Mutex<ProposalQueue>,
    /// The partition whose log this group is (it holds the replica, so not owned).
    partition: std::sync::Weak<Partition>,
    /// Checkpoints the state machine openraft drives.
    sm: sm::SmCheckpointer,
}

#[derive(Default)]
struct ProposalQueue {
    items: Vec<(Bytes, u64)>,
    bytes: usize,
    /// Items whose proposers wait for openraft's answer (not a lone voter's).
    commit_waiters: usize,
    /// When the last entry was handed to openraft, until a flush pass completes.
    in_flight_since: Option<Instant>,
}

/// Largest entry proposals are coalesced into.
const MAX_COALESCED_BYTES: usize = 4 << 20;
/// An entry in flight this long without a flush pass (a stopped group) no longer holds back the
/// queue.
const IN_FLIGHT_STALE: Duration = Duration::from_millis(100);

/// Added to a new leader's vote lease before it campaigns for another voter: its vote was
/// cast a moment before it learnt that it leads.
const LEASE_MARGIN: Duration = Duration::from_millis(100);

/// Why a leadership transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("broker {0} is not a voter of the partition")]
    NotAVoter(u64),
    #[error("broker {0} did not catch up in time")]
    Lagging(u64),
    #[error("broker {0} did not campaign: {1}")]
    Refused(u64, String),
    #[error("broker {0} cannot be reached: {1}")]
    Unreachable(u64, String),
    #[error("the election did not complete in time")]
    Timeout,
}

/// A proposal in flight: first its append outcome (acks=1), then its commit (acks=all).
pub struct Proposed {
    token: u64,
    proposals: Arc<Proposals>,
    appended: oneshot::Receiver<Outcome>,
    committed: Option<oneshot::Receiver<Result<(), ProposeError>>>,
    /// Proposed to the only voter of its group: the entry is committed and durable once the
    /// partition's high watermark passes its batch (see [`Proposed::committed`]), so nobody
    /// waits for openraft's answer.
    alone: Option<std::sync::Weak<Partition>>,
    /// The append outcome, once [`Proposed::appended`] returned it.
    outcome: Option<Outcome>,
}

impl Drop for Proposed {
    fn drop(&mut self) {
        self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
        self.proposals.committing.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
    }
}

/// Longest a committed entry of a group of one waits for its fsync before its proposers hear
/// of a failure (the produce request's own timeout is usually shorter).
const DURABLE_WAIT: Duration = Duration::from_secs(120);

/// Waits until the high watermark reaches `end`.
async fn wait_durable(p: &Partition, end: i64) -> Result<(), ProposeError> {
    match p.wait_for_hw(end, Instant::now() + DURABLE_WAIT).await {
        Ok(()) => Ok(()),
        Err(crate::partition::WaitError::StorageFailed) => Err(ProposeError::Stopped("the partition's fsync failed".into())),
        Err(crate::partition::WaitError::TimedOut) => Err(ProposeError::Stopped("the entry was not fsynced in time".into())),
    }
}

/// A commit waiter whose sender went: leadership moved before the entry committed.
fn commit_outcome(r: Result<Result<(), ProposeError>, oneshot::error::RecvError>) -> Result<(), ProposeError> {
    r.unwrap_or(Err(ProposeError::NotLeader(None)))
}

fn committed_err(r: Result<openraft::raft::ClientWriteResult<DataTc>, oneshot::error::RecvError>) -> Result<(), ProposeError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader(f.leader_id)),
        Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        // leadership moved before the entry committed: it may be truncated
        Err(_) => Err(ProposeError::NotLeader(None)),
    }
}

impl Proposed {
    /// The leader appended the proposal locally (or refused it).
    pub async fn appended(&mut self) -> Result<Outcome, ProposeError> {
        if let Some(o) = &self.outcome {
            return Ok(o.clone());
        }
        let o = match self.committed.as_mut() {
            None => (&mut self.appended).await.map_err(|_| ProposeError::NotLeader(None))?,
            Some(committed) => tokio::select! {
                biased;
                o = &mut self.appended => o.map_err(|_| ProposeError::NotLeader(None))?,
                c = committed => {
                    self.committed = None;
                    commit_outcome(c)?;
                    // committed implies appended: the outcome is already there
                    (&mut self.appended).await.map_err(|_| ProposeError::NotLeader(None))?
                }
            },
        };
        self.outcome = Some(o.clone());
        Ok(o)
    }

    /// The proposal's entry committed (a majority has it on disk). For a refused or duplicate
    /// batch this is the commit of its no-op entry, which follows the original batch.
    ///
    /// In a group of one the high watermark is the applied end (and, with `fsync = always`,
    /// no further than the fsync), so a batch below it is committed and durable: the proposer
    /// waits for it there, as on a Kafka leader, instead of for openraft's answer. A lone
    /// leader's entries are never cut: another replica can only lead with its vote, which it
    /// gives to no log that lacks them.
    pub async fn committed(mut self) -> Result<(), ProposeError> {
        if let Some(weak) = self.alone.take() {
            let end = match self.appended().await? {
                Outcome::Appended(info) => info.last_offset + 1,
                Outcome::Duplicate(meta) => meta.last_offset + 1,
                Outcome::Refused(..) => return Ok(()),
            };
            let Some(p) = weak.upgrade() else { return Err(ProposeError::NotLeader(None)) };
            return wait_durable(&p, end).await;
        }
        match self.committed.take() {
            Some(c) => commit_outcome(c.await),
            None => Ok(()),
        }
    }
}

impl Replica {
    /// Starts `p`'s Raft group on this broker (`p` opened with
    /// [`Partition::open_replicated`]); on a first start every replica seeds the same
    /// membership (`voters`: broker id → raft address).
    /// With `quiescer`, the group stops its timers while idle (see
    /// [`sediment_raft::quiesce`]). A new group's first leader is `preferred` when it is up:
    /// the other replicas give it a head start, as Kafka's controller makes the first replica
    /// the leader.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        p: Arc<Partition>,
        node_id: u64,
        group: GroupId,
        voters: &BTreeMap<u64, String>,
        preferred: Option<u64>,
        peers: Arc<Peers>,
        registry: &Registry,
        quiescer: Option<&Quiescer<DataTc>>,
        recovery: Option<Arc<sediment_raft::network::Recovery>>,
    ) -> anyhow::Result<Arc<Replica>> {
        let init_delay = preferred.filter(|p| *p != node_id).map(|_| PREFERRED_HEAD_START);
        let network = NetworkFactory::<DataTc>::new(peers.clone(), group);
        let replica = Self::start_on(p, node_id, group, voters, network, raft_config(), init_delay, recovery.clone()).await?;
        let _ = replica.peers.set(peers.clone());
        let on_append = quiescer.map(|q| {
            let h = q.add(group, replica.raft.clone());
            let _ = replica.quiet.set(h.clone());
            Arc::new(move || h.appended()) as Arc<dyn Fn() + Send + Sync>
        });
        registry.register(group, Arc::new(RaftHandler { raft: replica.raft.clone(), client: None, on_append, recovery }));
        Ok(replica)
    }

    /// Whether the group is quiesced on this broker.
    pub fn is_quiet(&self) -> bool {
        self.quiet.get().is_some_and(|q| q.is_quiet())
    }

    /// [`start`](Self::start) over any network (the deterministic simulation test passes an
    /// in-process one) and with the given timers. A new group is initialized at once, or after
    /// `init_delay` (replicas other than the preferred leader). `recovery`: this replica's disk
    /// was lost ([`sediment_raft::network::Recovery`]); it campaigns only when that allows.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_on<N: openraft::RaftNetworkFactory<DataTc>>(
        p: Arc<Partition>,
        node_id: u64,
        group: GroupId,
        voters: &BTreeMap<u64, String>,
        network: N,
        config: Arc<Config>,
        init_delay: Option<Duration>,
        recovery: Option<Arc<sediment_raft::network::Recovery>>,
    ) -> anyhow::Result<Arc<Replica>> {
        // A group of one whose log is gone but whose vote survived (fsync = never, then a power
        // cut): openraft would take it for initialized and wait forever for a membership nobody
        // can send. Nobody else votes in a group of one: its vote goes and the group starts again.
        if voters.len() == 1 && voters.contains_key(&node_id) {
            let lost = {
                let inner = p.lock();
                inner.raft.as_ref().filter(|r| r.last_log_id().is_none()).map(|_| inner.log.dir().to_path_buf())
            };
            if let Some(dir) = lost.filter(|d| d.join(VOTE_FILE).exists()) {
                tracing::warn!(topic = %p.topic, partition = p.index, "the Raft log of this group of one is gone but its vote is not; starting the group again");
                for f in [VOTE_FILE, COMMITTED_FILE, APPLIED_FILE] {
                    match std::fs::remove_file(dir.join(f)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
        }
        let led_before = {
            let dir = p.lock().log.dir().to_path_buf();
            load_small::<Vote<u64>>(&dir.join(VOTE_FILE)).ok().flatten().is_some_and(|v| v.committed && v.leader_id.voted_for == Some(node_id))
        };
        let proposals = Arc::new(Proposals::default());
        let log = ReplicaLog::new(p.clone(), proposals.clone());
        let sm = ReplicaSm::open(p.clone());
        let checkpointer = sm.checkpointer();
        let raft = DataRaft::new(node_id, config, network, log, sm).await?;
        if let Some(r) = &recovery {
            r.watch(&raft);
        }
        sediment_raft::network::spawn_election_watchdog(raft.clone(), recovery);
        let resumed = raft.is_initialized().await?;
        // no voters: a replica added to a running group (reassignment) waits for its leader
        if !voters.is_empty() && !resumed {
            let members: BTreeMap<u64, BasicNode> = voters.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
            match init_delay {
                None => initialize(&raft, members).await?,
                Some(d) => {
                    // the preferred replica initializes (and so campaigns) first; the others
                    // join its group from its first append, or start one without it if it is
                    // not there
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        if matches!(raft.is_initialized().await, Ok(false))
                            && let Err(e) = initialize(&raft, members).await
                        {
                            tracing::warn!(error = %e, "cannot initialize the partition's Raft group");
                        }
                    });
                }
            }
        }
        let replica = Arc::new(Replica {
            raft: raft.clone(),
            group,
            node_id,
            proposals,
            quiet: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            transferring: std::sync::atomic::AtomicBool::new(false),
            leading_since: Mutex::new(None),
            progress: crate::isr::Progress::default(),
            queue: Mutex::new(ProposalQueue::default()),
            partition: Arc::downgrade(&p),
            sm: checkpointer,
        });
        let _ = p.replica.set(replica.clone());
        // the Kafka leader epoch follows the Raft term
        let mut metrics = raft.metrics();
        let weak = Arc::downgrade(&p);
        let weak_replica = Arc::downgrade(&replica);
        tokio::spawn(async move {
            let mut was_leader = false;
            loop {
                let (term, leading) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.state == ServerState::Leader)
                };
                let became_leader = leading && !was_leader;
                if leading != was_leader {
                    sediment_telemetry::metrics().replication.leader_changed();
                    was_leader = leading;
                    if let Some(r) = weak_replica.upgrade() {
                        *r.leading_since.lock().unwrap_or_else(|e| e.into_inner()) = leading.then(Instant::now);
                        r.progress.reset();
                    }
                }
                let Some(p) = weak.upgrade() else { return };
                p.set_leader_epoch(term.min(i32::MAX as u64) as i32);
                if became_leader {
                    tracing::info!(topic = %p.topic, partition = p.index, epoch = term, "leading the partition");
                }
                drop(p);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        if resumed {
            // A restarted replica starts as a follower (`ReplicaLog::read_vote`). One that led
            // before campaigns at once, as it would have resumed leading: in a new term, which
            // it wins if its log is as long as a majority's. The only voter of its group always
            // does: it wins alone, and that term's first entry commits the whole log before the
            // partition serves (the committed index saved before the restart is only a hint
            // that may lag the log, so the high watermark would otherwise stay below records
            // acknowledged before it).
            let lone = raft.metrics().borrow().membership_config.membership().voter_ids().eq([node_id]);
            if lone || led_before {
                raft.trigger().elect().await?;
            }
            if lone {
                let leads = |m: &openraft::RaftMetrics<u64, BasicNode>| {
                    m.current_leader == Some(node_id) && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
                };
                if raft.wait(Some(LONE_ELECTION_WAIT)).metrics(leads, "lone voter leads").await.is_err() {
                    tracing::warn!(topic = %p.topic, partition = p.index, "the only voter did not lead its group after a restart in time");
                }
            }
        }
        Ok(replica)
    }

    /// The current leader's broker id, if known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// This broker's leader epoch if it leads the partition and has applied an entry of its
    /// own term, so every remote segment change an earlier leader committed is applied here
    /// (tiering uploads only then, and resumes from the uploaded end those changes left).
    pub fn leader_epoch(&self) -> Option<i32> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let applied_own_term = m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term);
        (m.state == ServerState::Leader && applied_own_term).then(|| m.current_term.min(i32::MAX as u64) as i32)
    }

    /// Tiered storage: commits a change to the remote segment list through the partition's
    /// Raft log; resolves once it is committed and applied here. Fails when this broker does
    /// not lead the partition (the upload it records is then not committed: the epoch fence).
    pub async fn commit_remote(&self, op: sediment_tier::ManifestOp) -> Result<(), ProposeError> {
        self.write_control(Proposal { remote: Some(op), ..Proposal::default() }).await
    }

    /// Proposes an entry that holds no records and waits until it is applied here.
    async fn write_control(&self, prop: Proposal) -> Result<(), ProposeError> {
        if !self.is_leader() || self.transferring.load(Ordering::Acquire) {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if let Some(q) = self.quiet.get() {
            q.wake();
        }
        match self.raft.client_write(prop).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader(f.leader_id)),
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Proposes one validated record batch. Fails fast when this broker is not the leader.
    pub async fn propose(&self, batch: Bytes) -> Result<Proposed, ProposeError> {
        if !self.is_leader() || self.transferring.load(Ordering::Acquire) {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if let Some(q) = self.quiet.get() {
            q.wake();
        }
        let token = self.proposals.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(token, tx);
        let alone = self.alone();
        let committed = if alone {
            None
        } else {
            let (ctx, crx) = oneshot::channel();
            self.proposals.committing.lock().unwrap_or_else(|e| e.into_inner()).insert(token, ctx);
            Some(crx)
        };
        let proposed =
            Proposed { token, proposals: self.proposals.clone(), appended: rx, committed, alone: alone.then(|| self.partition.clone()), outcome: None };
        // Group commit: openraft appends and fsyncs one entry at a time, so what arrives while
        // an entry of ours is on its way to disk goes into the next one, together.
        // taken and handed over under the queue's lock: entries keep the proposals' order
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.bytes += batch.len();
        q.items.push((batch, token));
        if !alone {
            q.commit_waiters += 1;
        }
        let stale = q.in_flight_since.is_some_and(|t| t.elapsed() > IN_FLIGHT_STALE);
        // Only a group of one coalesces: a follower of an earlier release reads one batch per
        // entry, so in a cluster that waits for a version every broker agrees on.
        if q.in_flight_since.is_none() || stale || q.bytes >= MAX_COALESCED_BYTES || !alone {
            self.submit(&mut q)?;
        }
        drop(q);
        Ok(proposed)
    }

    /// Whether this replica is its group's only member (no voter or learner to replicate to).
    pub(crate) fn alone(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).eq([self.node_id])
    }

    /// Hands the queued proposals to openraft as one entry (under the queue's lock: handing
    /// over is an unbounded channel send); their proposers hear of its commit.
    fn submit(&self, q: &mut ProposalQueue) -> Result<(), ProposeError> {
        use futures::FutureExt;
        q.in_flight_since = Some(Instant::now());
        q.bytes = 0;
        let waiters = std::mem::take(&mut q.commit_waiters);
        let mut items = std::mem::take(&mut q.items);
        let tokens: Vec<u64> = items.iter().map(|(_, t)| *t).collect();
        let batch = if items.len() == 1 {
            items.pop().map(|(b, _)| b).unwrap_or_default()
        } else {
            let mut all = bytes::BytesMut::with_capacity(items.iter().map(|(b, _)| b.len()).sum());
            items.iter().for_each(|(b, _)| all.extend_from_slice(b));
            all.freeze()
        };
        let handed = self.raft.client_write_ff(Proposal { batch, tokens: tokens.clone(), log_start: None, remote: None }).now_or_never();
        match handed.unwrap_or_else(|| Err(openraft::error::Fatal::Stopped)) {
            // a lone voter's proposers wait at the high watermark instead (`Proposed::committed`)
            Ok(_) if waiters == 0 => Ok(()),
            Ok(rx) => {
                let proposals = self.proposals.clone();
                tokio::spawn(async move { proposals.committed(&tokens, committed_err(rx.await)) });
                Ok(())
            }
            Err(e) => {
                q.in_flight_since = None;
                self.proposals.fail(&tokens);
                Err(ProposeError::Stopped(e.to_string()))
            }
        }
    }

    /// The partition's flusher finished a pass: openraft takes its next entry now, so what
    /// queued meanwhile goes as one.
    pub(crate) fn flushed(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.items.is_empty() {
            q.in_flight_since = None;
        } else {
            let _ = self.submit(&mut q);
        }
    }

    /// DeleteRecords: raises the partition's log start offset to `offset` on every replica,
    /// through a Raft entry. Returns once the entry is committed and applied here. Fails fast
    /// when this broker is not the leader.
    pub async fn raise_log_start(&self, offset: i64) -> Result<(), ProposeError> {
        self.write_control(Proposal { log_start: Some(offset), ..Proposal::default() }).await
    }

    /// [`propose`](Self::propose) without awaiting: handing the entry to the Raft core is an
    /// unbounded channel send, so proposals from one connection keep their request order even
    /// though their answers come later.
    pub fn propose_now(&self, batch: Bytes) -> Result<Proposed, ProposeError> {
        use futures::FutureExt;
        match self.propose(batch).now_or_never() {
            Some(r) => r,
            None => Err(ProposeError::Stopped("the Raft core did not take the proposal".into())),
        }
    }

    /// Voters of the group (the partition's replicas).
    pub fn voter_count(&self) -> usize {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().count()
    }

    /// Replicas (this leader included) whose log has everything committed so far: Kafka's
    /// in-sync replicas, for `min.insync.replicas`. Only meaningful on the leader.
    pub fn in_sync_replicas(&self) -> usize {
        let m = self.raft.metrics();
        let m = m.borrow();
        let Some(applied) = m.last_applied.map(|l| l.index) else { return 1 };
        match &m.replication {
            Some(r) => r.values().filter(|matched| matched.is_some_and(|l| l.index >= applied)).count().max(1),
            None => 1,
        }
    }

    /// The voters in sync with this leader (Kafka's ISR, see [`crate::isr`]) given the ISR as
    /// last committed (`current`), this leader first; empty when it does not lead. Records the
    /// log's progress as it goes, so it is meant to be called periodically.
    pub fn isr(&self, lag: Duration, current: &[u64], alive: impl Fn(u64) -> bool) -> Vec<u64> {
        let now = Instant::now();
        let (me, committed, matched) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                return Vec::new();
            }
            let last = m.last_log_index.unwrap_or(0);
            self.progress.record(now, last, lag);
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            let index_of = |id: u64| match &m.replication {
                _ if id == m.id => last,
                Some(r) => r.get(&id).copied().flatten().map_or(0, |l| l.index),
                None => 0,
            };
            let committed = m.last_applied.map_or(0, |l| l.index);
            (m.id, committed, voters.into_iter().map(|id| (id, index_of(id))).collect::<Vec<_>>())
        };
        let bound = now.checked_sub(lag).map_or(0, |t| self.progress.index_at(t));
        let view = crate::isr::View { leader: me, current, bound, committed };
        let mut isr = crate::isr::in_sync(&view, matched, alive);
        isr.sort_by_key(|id| *id != me);
        isr
    }

    /// Raft entries of this leader's log each follower (voter or learner) does not have yet;
    /// empty when this broker does not lead the group.
    pub fn follower_lag(&self) -> Vec<(u64, u64)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let (true, Some(r)) = (m.state == ServerState::Leader, &m.replication) else { return Vec::new() };
        let last = m.last_log_index.unwrap_or(0);
        r.iter().filter(|(id, _)| **id != m.id).map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index)))).collect()
    }

    /// How long this broker has led the group (None when it does not).
    pub fn led_for(&self) -> Option<Duration> {
        self.leading_since.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed())
    }

    /// Whether voter `id` has everything committed so far (leader only): Kafka's in-sync.
    pub fn in_sync(&self, id: u64) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let Some(applied) = m.last_applied.map(|l| l.index) else { return false };
        m.replication.as_ref().and_then(|r| r.get(&id)).is_some_and(|x| x.is_some_and(|l| l.index >= applied))
    }

    /// Whether voter `id` has every entry of the leader's log (leader only).
    pub fn caught_up(&self, id: u64) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let last = m.last_log_index;
        m.replication.as_ref().and_then(|r| r.get(&id)).is_some_and(|x| x.map(|l| l.index) == last)
    }

    /// Hands this broker's leadership to voter `to` (Kafka's preferred leader election).
    ///
    /// openraft 0.9 has no leadership transfer, so: stop taking proposals (producers get
    /// NOT_LEADER_OR_FOLLOWER and retry), wait until `to` has the whole log, and ask it to
    /// campaign. openraft renews a follower's lease on its vote on contact, but a leader's only
    /// when its vote changes, so once this broker has led for longer than the lease (the
    /// election timeout maximum) it grants the vote and steps down; with `to` voting for itself
    /// that is a majority of three. A younger leader first waits its lease out, taking
    /// proposals meanwhile: otherwise a broker stopping right after the previous one handed it
    /// partitions sees every campaign refused, and the target, back to follower on the next
    /// heartbeat, is refused again on each retry.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), TransferError> {
        if !self.is_leader() {
            return Err(TransferError::NotLeader);
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max) + LEASE_MARGIN;
        if let Some(age) = self.led_for()
            && age < lease
        {
            tokio::time::sleep(lease - age).await;
            if !self.is_leader() {
                return Err(TransferError::NotLeader);
            }
        }
        let (term, addr) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let node = m.membership_config.membership().get_node(&to).cloned();
            (m.current_term, node.map(|n| n.addr))
        };
        let (Some(addr), Some(peers)) = (addr, self.peers.get()) else {
            return Err(TransferError::NotAVoter(to));
        };
        self.transferring.store(true, Ordering::Release);
        let r = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            // proposals taken just before the pause may still be on their way into the log:
            // the target must have those too, or this leader refuses it its vote
            let submitted = || !self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            while submitted() || !self.caught_up(to) {
                if tokio::time::Instant::now() > deadline {
                    return Err(TransferError::Lagging(to));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let followed = sediment_raft::network::ask_to_campaign(peers, self.group, to, &addr, self.node_id, term).await.map_err(|e| match e {
                sediment_raft::transport::CallError::Unreachable { .. } => TransferError::Unreachable(to, e.to_string()),
                e => TransferError::Refused(to, e.to_string()),
            })?;
            if !followed {
                return Err(TransferError::Refused(to, "it does not follow this leader at this term".into()));
            }
            // done once the target leads, not when this broker steps down
            if sediment_raft::network::led_by(&self.raft, to, term, Duration::from_secs(3)).await { Ok(()) } else { Err(TransferError::Timeout) }
        }
        .await;
        self.transferring.store(false, Ordering::Release);
        r
    }

    /// Retention on a replicated partition: retention wants the log to start at `target`, but
    /// openraft may still need the entries below it (to replicate them to a lagging follower).
    /// So the Raft log's start moves first: a snapshot at the last entry below `target`, then a
    /// purge up to it, which openraft carries out once no replication in flight reads those
    /// entries; the purge then deletes the segments ([`ReplicaLog`]'s `purge`). A follower that
    /// still needs them gets the snapshot instead and restarts its log at `target`.
    pub async fn after_retention(&self, p: &Partition, target: i64) {
        let applied = self.raft.metrics().borrow().last_applied;
        let Some((point, _)) = retention_point(p, applied, Some(target)) else { return };
        {
            let mut inner = p.lock();
            let Some(r) = inner.raft.as_mut() else { return };
            if r.purged.is_some_and(|p| p.index >= point.index) {
                return;
            }
            r.snapshot_at = Some(target);
        }
        if self.raft.trigger().snapshot().await.is_err() {
            return;
        }
        let mut m = self.raft.metrics();
        let built =
            matches!(tokio::time::timeout(Duration::from_secs(30), m.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= point.index))).await, Ok(Ok(_)));
        if !built {
            tracing::warn!(topic = %p.topic, partition = p.index, index = point.index, "no snapshot at the retention point; the log keeps its start");
            return;
        }
        let _ = self.raft.trigger().purge_log(point.index).await;
        tracing::debug!(topic = %p.topic, partition = p.index, index = point.index, target, "raft log start moving to the retention point");
    }

    /// [`after_retention`](Self::after_retention) for this replica's own partition.
    pub async fn release_for_retention(&self, target: i64) {
        if let Some(p) = self.partition.upgrade() {
            self.after_retention(&p, target).await;
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// [`shutdown`](Self::shutdown) at the broker's graceful stop: the applied entry is
    /// recorded too, so the next start re-applies nothing.
    pub async fn stop(&self) {
        self.shutdown().await;
        if let Some(p) = self.partition.upgrade() {
            self.sm.save(&p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::end_offset_for;

    #[test]
    fn epoch_end_offsets_follow_kafka() {
        let epochs = [(1, 0), (3, 60), (4, 90)];
        assert_eq!(end_offset_for(&epochs, 4, 120), (4, 120), "latest epoch ends at the log end");
        assert_eq!(end_offset_for(&epochs, 3, 120), (3, 90));
        assert_eq!(end_offset_for(&epochs, 2, 120), (1, 60), "an epoch with no records answers the one below");
        assert_eq!(end_offset_for(&epochs, 1, 120), (1, 60));
        assert_eq!(end_offset_for(&epochs, 0, 120), (0, 0), "older than all known: the first start");
        assert_eq!(end_offset_for(&epochs, 5, 120), (-1, -1), "newer than all known");
        assert_eq!(end_offset_for(&epochs, -1, 120), (-1, -1));
        assert_eq!(end_offset_for(&[], 0, 0), (-1, -1));
    }
}
