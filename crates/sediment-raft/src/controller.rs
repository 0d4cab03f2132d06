//! The metadata Raft group (the controller): every broker is a voter, every broker applies
//! the same [`MetaCommand`]s to its [`ClusterState`] and serves Metadata from it.
//!
//! Writes go to the group's leader: a broker that is not the leader forwards the command over
//! the peer transport ([`KIND_CLIENT`]) and retries while leadership moves. The applied state is
//! published on a `watch` channel that the broker follows to open and close its partitions.
//!
//! Snapshots are the whole `ClusterState` (small: topics and brokers), written to
//! `snapshot.bin` next to the log; the log is purged behind them.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Config, Entry, EntryPayload, LogId, Raft, RaftSnapshotBuilder, SnapshotMeta, SnapshotPolicy, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::cluster::{ClusterState, MetaCommand, MetaResponse};
use crate::log_store::{FileLogStore, write_atomic};
use crate::network::{ClientHandler, KIND_CLIENT, NetworkFactory, RaftHandler, Registry, decode, encode};
use crate::transport::{GroupId, Peers};

/// The metadata group's id on the peer transport.
pub const METADATA_GROUP: GroupId = 0;

openraft::declare_raft_types!(
    /// Type config of the metadata group.
    pub MetaTc:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<MetaTc>,
        SnapshotData = Cursor<Vec<u8>>,
);

const SNAPSHOT_FILE: &str = "snapshot.bin";

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

struct SmInner {
    dir: PathBuf,
    state: ClusterState,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// The metadata state machine; clones share it (openraft gets one, the snapshot builder another).
#[derive(Clone)]
pub struct MetaStateMachine {
    inner: Arc<Mutex<SmInner>>,
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl MetaStateMachine {
    /// Opens the state machine in `dir`, starting from the last snapshot if there is one.
    pub fn open(dir: &Path) -> std::io::Result<MetaStateMachine> {
        std::fs::create_dir_all(dir)?;
        let mut inner = SmInner {
            dir: dir.to_path_buf(),
            state: ClusterState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            snapshot_seq: 0,
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("metadata snapshot: {m}"));
                let snap: StoredSnapshot = decode(&bytes).map_err(bad)?;
                inner.state = ClusterState::decode(&snap.data).map_err(bad)?;
                inner.last_applied = snap.meta.last_log_id;
                inner.membership = snap.meta.last_membership.clone();
                inner.snapshot = Some(snap);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (tx, _) = watch::channel(Arc::new(inner.state.clone()));
        Ok(MetaStateMachine { inner: Arc::new(Mutex::new(inner)), tx: Arc::new(tx) })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }
}

impl SmInner {
    fn install(&mut self, snap: StoredSnapshot) -> Result<(), StorageError<u64>> {
        let bytes = encode(&snap).map_err(sm_err)?;
        write_atomic(&self.dir, SNAPSHOT_FILE, &bytes).map_err(sm_err)?;
        self.snapshot = Some(snap);
        Ok(())
    }
}

impl RaftSnapshotBuilder<MetaTc> for MetaStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTc>, StorageError<u64>> {
        let mut inner = self.inner.lock().await;
        let data = encode(&inner.state).map_err(sm_err)?;
        inner.snapshot_seq += 1;
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
            None => format!("none-{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone(), snapshot_id };
        inner.install(StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<MetaTc> for MetaStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<MetaTc>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        for e in entries {
            inner.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => MetaResponse::Done,
                EntryPayload::Normal(cmd) => inner.state.apply(&cmd),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(e.log_id), m);
                    MetaResponse::Done
                }
            });
        }
        self.tx.send_replace(Arc::new(inner.state.clone()));
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let state = ClusterState::decode(&data).map_err(sm_err)?;
        let mut inner = self.inner.lock().await;
        inner.install(StoredSnapshot { meta: meta.clone(), data })?;
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        self.tx.send_replace(Arc::new(inner.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaTc>>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }))
    }
}

/// Timers of the metadata group. openraft's defaults (50 ms heartbeats, 150–300 ms elections)
/// misfire on a loaded 2-core machine; these still fail over within about two seconds.
pub fn raft_config(cluster: &str) -> Arc<Config> {
    let c = Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Config::default()
    };
    Arc::new(c.validate().expect("metadata raft config is valid"))
}

/// Why a metadata write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no metadata commit within {0:?} (is a majority of brokers up?)")]
    NoLeader(Duration),
    #[error("metadata group stopped: {0}")]
    Fatal(String),
}

/// Why a membership change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("the membership change did not finish within {0:?} (is a majority of brokers up, and is the new broker running?)")]
    Timeout(Duration),
    /// The broker is a member already, at another address.
    #[error("{0}")]
    AlreadyMember(String),
    #[error("{0}")]
    Refused(String),
}

/// This broker's member of the metadata group.
pub struct Controller {
    pub raft: Raft<MetaTc>,
    node_id: u64,
    peers: Arc<Peers>,
    state: watch::Receiver<Arc<ClusterState>>,
}

/// Forwarded writes: apply on this node if it leads, else tell the caller who does.
struct Forwarded {
    raft: Raft<MetaTc>,
}

/// What a broker asks the metadata leader for.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ForwardRequest {
    Write(MetaCommand),
    Membership(MembershipChange),
}

/// Whether `bytes` decode as a forwarded request, exactly as [`Forwarded`] decodes a peer's
/// payload. Only for the fuzz targets (`fuzz/`): the request type is private.
#[doc(hidden)]
pub fn fuzz_decode_forward(bytes: &[u8]) -> bool {
    decode::<ForwardRequest>(bytes).is_ok()
}

/// Whether `bytes` decode as a leader's answer to a forwarded request, exactly as
/// `forward_request` decodes it. Only for the fuzz targets (`fuzz/`): the type is private.
#[doc(hidden)]
pub fn fuzz_decode_forward_answer(bytes: &[u8]) -> bool {
    decode::<ForwardAnswer>(bytes).is_ok()
}

/// A change of the metadata group's voters (`sediment cluster add-broker|remove-broker`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds broker `id` (raft address `addr`): first as a learner, which catches up, then as a voter.
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
}

#[derive(Serialize, Deserialize)]
enum ForwardAnswer {
    Applied(MetaResponse, LogId<u64>),
    NotLeader(Option<u64>),
    /// A membership change is done (or was refused).
    Changed(Result<(), Refusal>),
}

impl ClientHandler for Forwarded {
    fn handle(&self, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            let answer = match decode(&payload)? {
                ForwardRequest::Write(cmd) => match raft.client_write(cmd).await {
                    Ok(r) => ForwardAnswer::Applied(r.data, r.log_id),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ForwardAnswer::NotLeader(f.leader_id),
                    Err(e) => return Err(e.to_string()),
                },
                ForwardRequest::Membership(change) => match change_membership(&raft, &change).await {
                    Err(Refusal::NotLeader) => ForwardAnswer::NotLeader(None),
                    other => ForwardAnswer::Changed(other),
                },
            };
            encode(&answer).map(Bytes::from)
        })
    }
}

#[derive(Serialize, Deserialize)]
enum Refusal {
    NotLeader,
    AlreadyMember(String),
    Refused(String),
}

fn refusal(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Refusal {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Refusal::NotLeader,
        other => Refusal::Refused(other.to_string()),
    }
}

/// Applies `change` on the leader. Adding waits (blocking) until the new member's log caught
/// up as a learner, then makes it a voter, so a slow newcomer never holds the quorum back.
/// Both are idempotent: adding a voter with the same address, or removing a non-member, is done.
async fn change_membership(raft: &Raft<MetaTc>, change: &MembershipChange) -> Result<(), Refusal> {
    let membership = raft.metrics().borrow().membership_config.clone();
    let m = membership.membership();
    let mut voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
    match change {
        MembershipChange::Add { id, addr } => {
            if voters.contains(id) {
                return match m.get_node(id) {
                    Some(n) if &n.addr == addr => Ok(()),
                    Some(n) => Err(Refusal::AlreadyMember(format!("broker {id} is already a member at {}", n.addr))),
                    None => Ok(()),
                };
            }
            raft.add_learner(*id, BasicNode::new(addr), true).await.map_err(refusal)?;
            voters.insert(*id);
            raft.change_membership(voters, false).await.map_err(refusal)?;
            tracing::info!(broker = id, addr = %addr, "broker added to the metadata group");
        }
        MembershipChange::Remove { id } => {
            if !voters.contains(id) && m.get_node(id).is_none() {
                return Ok(());
            }
            voters.remove(id);
            if voters.is_empty() {
                return Err(Refusal::Refused(format!("broker {id} is the last member")));
            }
            raft.change_membership(voters, false).await.map_err(refusal)?;
            tracing::info!(broker = id, "broker removed from the metadata group");
        }
    }
    Ok(())
}

impl Controller {
    /// Starts this broker's member of the metadata group with its state in `dir`. `voters`
    /// (id → raft address, this node included) seeds the group on a first start; afterwards
    /// membership comes from the log. `disk_lost`: `dir` did not exist, so this broker may be
    /// back on an empty disk and abstains from elections until caught up
    /// ([`crate::network::Recovery`]).
    pub async fn start(
        node_id: u64,
        dir: &Path,
        voters: &BTreeMap<u64, String>,
        peers: Arc<Peers>,
        registry: &Registry,
        disk_lost: bool,
    ) -> anyhow::Result<Controller> {
        let log = FileLogStore::<MetaTc>::open(dir)?;
        let sm = MetaStateMachine::open(dir)?;
        let state = sm.subscribe();
        let net = NetworkFactory::<MetaTc>::new(peers.clone(), METADATA_GROUP);
        let raft = Raft::new(node_id, raft_config("sediment-metadata"), net, log, sm).await?;
        let recovery = crate::network::Recovery::open(dir, disk_lost, "metadata")?;
        recovery.watch(&raft);
        // the configured voters: a wiped broker knows no later membership
        let others = voters.iter().filter(|(id, _)| **id != node_id).map(|(id, a)| (*id, a.clone())).collect();
        recovery.form_with_majority();
        recovery.learn_term_from(&peers, METADATA_GROUP, others);
        registry.register(
            METADATA_GROUP,
            Arc::new(RaftHandler {
                raft: raft.clone(),
                client: Some(Arc::new(Forwarded { raft: raft.clone() })),
                on_append: None,
                recovery: Some(recovery.clone()),
            }),
        );
        crate::network::spawn_election_watchdog(raft.clone(), Some(recovery.clone()));
        if !voters.contains_key(&node_id) {
            // joining a running cluster: its leader adds this broker (`sediment cluster
            // add-broker`) and replicates the metadata here; seeding a membership would fork it
            if !raft.is_initialized().await? {
                tracing::warn!(node_id, peers = ?voters.keys().collect::<Vec<_>>(), "not a member of the cluster yet: waiting to be added (sediment cluster add-broker --node-id {node_id} --raft-address HOST:PORT)");
            }
        } else if !raft.is_initialized().await? {
            let members: BTreeMap<u64, BasicNode> = voters.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
            // Every voter seeds the same membership at log index 0; whoever wins the first
            // election carries it. A node that already has a log refuses, which is fine.
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id, voters = voters.len(), "metadata group initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Controller { raft, node_id, peers, state })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The applied metadata, as of now.
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// Follows the applied metadata.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The metadata leader, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Controlled shutdown of the controller: if this broker leads the metadata group, asks the
    /// live voter (`alive`) that holds the whole log to campaign, and waits until it leads, in
    /// rounds until `within` runs out. Writes keep going meanwhile: a round whose target fell
    /// behind, or whose campaign this leader's young vote lease refused, is followed by another.
    /// Returns the new leader, or `None` when this broker did not lead or no voter took over.
    pub async fn hand_over(&self, alive: impl Fn(u64) -> bool, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        let me = self.node_id;
        loop {
            let m = self.raft.metrics().borrow().clone();
            if m.current_leader != Some(me) {
                return m.current_leader.filter(|l| *l != me);
            }
            let members = m.membership_config.membership();
            if !members.voter_ids().any(|v| v != me && alive(v)) {
                return None; // nobody to hand it to (a group of one, or the others are down)
            }
            let caught_up = m.replication.as_ref().and_then(|r| {
                r.iter()
                    .filter(|(id, matched)| **id != me && alive(**id) && members.voter_ids().any(|v| v == **id) && matched.map(|l| l.index) == m.last_log_index)
                    .map(|(id, _)| *id)
                    .next()
            });
            if let Some(to) = caught_up
                && let Some(addr) = members.get_node(&to).map(|n| n.addr.clone())
            {
                let asked = crate::network::ask_to_campaign(&self.peers, METADATA_GROUP, to, &addr, me, m.current_term).await;
                if matches!(asked, Ok(true)) && crate::network::led_by(&self.raft, to, m.current_term, Duration::from_secs(3)).await {
                    return Some(to);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Commits `cmd` through the leader (forwarding if needed) and returns what applying it
    /// produced. Retries while there is no leader or leadership moves, up to `timeout`. Once
    /// this returns, the command is applied on this broker's state too.
    pub async fn write(&self, cmd: MetaCommand, timeout: Duration) -> Result<MetaResponse, WriteError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let leader = self.leader();
            let attempt: Result<Option<(MetaResponse, LogId<u64>)>, WriteError> = match leader {
                // a leader cut off from its majority never commits: the deadline bounds the
                // wait (the entry may still commit later, as with any timed-out request)
                Some(l) if l == self.node_id => match tokio::time::timeout_at(deadline.into(), self.raft.client_write(cmd.clone())).await {
                    Err(_) => Err(WriteError::NoLeader(timeout)),
                    Ok(Ok(r)) => Ok(Some((r.data, r.log_id))),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(None),
                    Ok(Err(RaftError::APIError(e))) => Err(WriteError::Fatal(e.to_string())),
                    Ok(Err(RaftError::Fatal(e))) => Err(WriteError::Fatal(e.to_string())),
                },
                Some(l) => self.forward(l, &cmd, deadline).await,
                None => Ok(None),
            };
            match attempt? {
                Some((resp, log_id)) => {
                    // read-your-writes on this broker: wait until it applied the entry too
                    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
                    let _ = self.raft.wait(Some(left)).applied_index_at_least(Some(log_id.index), "metadata write applied").await;
                    return Ok(resp);
                }
                None => {
                    if Instant::now() + backoff > deadline {
                        return Err(WriteError::NoLeader(timeout));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    async fn forward(&self, leader: u64, cmd: &MetaCommand, deadline: Instant) -> Result<Option<(MetaResponse, LogId<u64>)>, WriteError> {
        match self.forward_request(leader, &ForwardRequest::Write(cmd.clone()), deadline).await? {
            Some(ForwardAnswer::Applied(r, log_id)) => Ok(Some((r, log_id))),
            _ => Ok(None),
        }
    }

    /// Sends `req` to the metadata leader; `None` when it could not be asked or no longer leads.
    async fn forward_request(&self, leader: u64, req: &ForwardRequest, deadline: Instant) -> Result<Option<ForwardAnswer>, WriteError> {
        let addr = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().get_node(&leader).map(|n| n.addr.clone())
        };
        let Some(addr) = addr else { return Ok(None) };
        let body = encode(req).map_err(WriteError::Fatal)?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
        match self.peers.client(leader, &addr).call(METADATA_GROUP, KIND_CLIENT, &body, left).await {
            Ok(bytes) => match decode::<ForwardAnswer>(&bytes).map_err(WriteError::Fatal)? {
                ForwardAnswer::NotLeader(_) => Ok(None),
                a => Ok(Some(a)),
            },
            Err(e) => {
                tracing::debug!(leader, error = %e, "metadata request forward failed; retrying");
                Ok(None)
            }
        }
    }

    /// Changes the metadata group's voters through its leader (forwarding if needed), retrying
    /// while leadership moves, up to `timeout`. Adding returns once the new broker caught up and
    /// votes.
    pub async fn change_membership(&self, change: MembershipChange, timeout: Duration) -> Result<(), MembershipError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let outcome = match self.leader() {
                Some(l) if l == self.node_id => match tokio::time::timeout_at(deadline.into(), change_membership(&self.raft, &change)).await {
                    Err(_) => return Err(MembershipError::Timeout(timeout)),
                    Ok(Err(Refusal::NotLeader)) => None,
                    Ok(r) => Some(r),
                },
                Some(l) => match self.forward_request(l, &ForwardRequest::Membership(change.clone()), deadline).await {
                    Ok(Some(ForwardAnswer::Changed(r))) => Some(r),
                    Ok(_) => None,
                    Err(e) => Some(Err(Refusal::Refused(e.to_string()))),
                },
                None => None,
            };
            match outcome {
                Some(Ok(())) => return Ok(()),
                Some(Err(Refusal::AlreadyMember(r))) => return Err(MembershipError::AlreadyMember(r)),
                Some(Err(Refusal::Refused(r))) => return Err(MembershipError::Refused(r)),
                Some(Err(Refusal::NotLeader)) | None => {
                    if Instant::now() + backoff > deadline {
                        return Err(MembershipError::Timeout(timeout));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// The metadata group's voters and their raft addresses, as this broker knows them.
    pub fn voters(&self) -> BTreeMap<u64, String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let mem = m.membership();
        mem.voter_ids().map(|id| (id, mem.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default())).collect()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a forwarded metadata write takes on the wire; `tests/e2e/test_raft_port.py`
    /// sends exactly these as a stranger would, so its check of the Raft port can fail.
    #[test]
    fn a_forwarded_delete_topic_encodes_as_the_raft_port_test_sends_it() {
        let req = ForwardRequest::Write(MetaCommand::DeleteTopic { name: "t".into() });
        assert_eq!(encode(&req).unwrap(), vec![0, 4, 1, b't']);
    }
}
