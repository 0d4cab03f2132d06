//! openraft's network traits over the shared peer transport, and the registry that routes an
//! incoming request to the group it names.
//!
//! Every group on a broker talks to a peer through that peer's single [`PeerClient`]; a
//! request carries its group id. Bodies are postcard-encoded openraft messages, answers are
//! `Result<Response, RaftError>` encoded the same way, so a remote `RaftError` (a higher vote,
//! a fatal storage error) reaches the local core as openraft expects.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::transport::{CallError, Dispatch, GroupId, PeerClient, Peers};

pub const KIND_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_SNAPSHOT: u8 = 3;
/// An application request for the group (e.g. a metadata write forwarded to the leader).
pub const KIND_CLIENT: u8 = 4;
/// The leader asks this follower to campaign now ([`Campaign`]): leadership transfer.
pub const KIND_CAMPAIGN: u8 = 6;
/// A replica asks the group's leader how far it has applied ([`leader_applied`]): readiness.
pub const KIND_SYNC_STATUS: u8 = 7;
/// A replica back on an empty disk asks a voter for its current term ([`Recovery`]).
pub const KIND_TERM: u8 = 8;

/// The index this node has applied, if it leads the group and has applied an entry of its own
/// term (`None` otherwise). Until then a leader (one restored from its saved vote after a
/// restart, say) may not have applied everything committed before it, and a follower that
/// caught up with that index would not be in sync.
pub fn applied_if_leader<C: TypeConfig>(raft: &Raft<C>) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    leader_applied_own_term(&m).then(|| m.last_applied.map_or(0, |l| l.index))
}

/// Whether `m` shows a leader that has applied an entry of its current term: by Raft's leader
/// completeness, it has then applied everything committed before it.
pub fn leader_applied_own_term(m: &openraft::RaftMetrics<u64, openraft::BasicNode>) -> bool {
    m.state == openraft::ServerState::Leader && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
}

/// Set when this broker begins its controlled shutdown: from then on it refuses to campaign
/// when a leader asks it to (a preferred-leader rebalance would otherwise hand back the very
/// leaderships it is handing away). Process-wide: the broker, not a group, is leaving.
static LEAVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This broker is shutting down: it takes no leadership from now on (see [`LEAVING`]).
pub fn set_leaving() {
    LEAVING.store(true, std::sync::atomic::Ordering::Release);
}

/// Leadership transfer: asks voter `to` at `addr` to campaign now in `group`, as its leader
/// `leader` at `term` ([`KIND_CAMPAIGN`]). `Ok(true)` when it followed that leader at that term
/// and started an election; `Ok(false)` when it did not follow it (it then does nothing).
pub async fn ask_to_campaign(peers: &Peers, group: GroupId, to: u64, addr: &str, leader: u64, term: u64) -> Result<bool, CallError> {
    let remote = |message: String| CallError::Remote { addr: addr.to_string(), message };
    let req = encode(&Campaign { leader, term }).map_err(remote)?;
    let answer = peers.client(to, addr).call(group, KIND_CAMPAIGN, &req, std::time::Duration::from_secs(2)).await?;
    decode::<bool>(&answer).map_err(remote)
}

/// Waits up to `within` until `raft` sees voter `to` lead at a term above `term` (a node learns
/// it from the new leader's first append; stepping down alone may mean the election failed).
pub async fn led_by<C: TypeConfig>(raft: &Raft<C>, to: u64, term: u64, within: std::time::Duration) -> bool {
    let mut m = raft.metrics();
    matches!(tokio::time::timeout(within, m.wait_for(|m| m.current_term > term && m.current_leader == Some(to))).await, Ok(Ok(_)))
}

/// Asks voter `id` at `addr` for its current term in `group` (see [`Recovery::learn_term`]).
pub async fn voter_term(peers: &Peers, id: u64, addr: &str, group: GroupId, timeout: std::time::Duration) -> Result<VoterState, CallError> {
    let answer = peers.client(id, addr).call(group, KIND_TERM, &[], timeout).await?;
    decode::<VoterState>(&answer).map_err(|e| CallError::Remote { addr: addr.to_string(), message: e })
}

/// Asks the broker at `leader_addr`, which leads `group`, how far it has applied: `Ok(None)`
/// when it does not lead the group (any more). A replica is in sync once it has applied that
/// far itself: the follower's own log decides, not the leader's view of it, which can still
/// show what a follower held before it lost its disk.
pub async fn leader_applied(peers: &Peers, leader: u64, leader_addr: &str, group: GroupId, timeout: std::time::Duration) -> Result<Option<u64>, CallError> {
    let answer = peers.client(leader, leader_addr).call(group, KIND_SYNC_STATUS, &[], timeout).await?;
    decode::<Option<u64>>(&answer).map_err(|e| CallError::Remote { addr: leader_addr.to_string(), message: e })
}

/// A leader's request that the receiver take over its leadership. The receiver campaigns only
/// if it still follows `leader` at `term`; it answers whether it did.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Campaign {
    pub leader: u64,
    pub term: u64,
}

/// Node ids are broker ids; nodes carry their raft address.
pub trait TypeConfig: RaftTypeConfig<NodeId = u64, Node = BasicNode> {}
impl<T: RaftTypeConfig<NodeId = u64, Node = BasicNode>> TypeConfig for T {}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(v).map_err(|e| format!("encode: {e}"))
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("decode: {e}"))
}

/// Creates the per-target clients of one group.
pub struct NetworkFactory<C> {
    peers: Arc<Peers>,
    group: GroupId,
    _c: PhantomData<fn() -> C>,
}

impl<C> NetworkFactory<C> {
    pub fn new(peers: Arc<Peers>, group: GroupId) -> Self {
        NetworkFactory { peers, group, _c: PhantomData }
    }
}

pub struct GroupClient<C> {
    client: Arc<PeerClient>,
    target: u64,
    group: GroupId,
    _c: PhantomData<fn() -> C>,
}

impl<C: TypeConfig> RaftNetworkFactory<C> for NetworkFactory<C> {
    type Network = GroupClient<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupClient<C> {
        GroupClient { client: self.peers.client(target, &node.addr), target, group: self.group, _c: PhantomData }
    }
}

fn rpc_err<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout { .. } | CallError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

fn codec_err<E: std::error::Error>(m: String) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
}

impl<C: TypeConfig> GroupClient<C> {
    async fn call<Req, Resp, E>(&self, kind: u8, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(codec_err)?;
        let answer = self.client.call(self.group, kind, &body, option.hard_ttl()).await.map_err(rpc_err)?;
        let r: Result<Resp, E> = decode(&answer).map_err(codec_err)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C: TypeConfig> RaftNetwork<C> for GroupClient<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(KIND_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(KIND_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(KIND_VOTE, &rpc, &option).await
    }
}

/// Handles the requests addressed to one group on this broker.
pub trait GroupHandler: Send + Sync + 'static {
    fn handle(&self, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// Application requests of a group (kind [`KIND_CLIENT`]).
pub trait ClientHandler: Send + Sync + 'static {
    fn handle(&self, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// Serves a group's Raft RPCs from its local `Raft`, and its client requests from `client`.
pub struct RaftHandler<C: TypeConfig> {
    pub raft: Raft<C>,
    pub client: Option<Arc<dyn ClientHandler>>,
    /// Called after the group accepted an append from a current leader (quiescence wakes a
    /// quiet follower there: see [`crate::quiesce`]).
    pub on_append: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Set when this replica's disk was lost: it abstains from elections until caught up.
    pub recovery: Option<Arc<Recovery>>,
}

/// A replica whose disk was empty when its broker started, in a group with a history.
///
/// Raft is safe only while every voter remembers its vote and every entry it acknowledged. A
/// broker back on an empty (or replaced) disk remembers neither: if it voted like any other
/// replica, it would elect a candidate that lacks entries it had helped commit (commit on A and
/// B; B loses its disk; stale C asks B for a vote and wins), and those entries would be gone.
/// So, as Kafka's KIP-853 keeps a replaced disk out of the quorum until it caught up, such a
/// replica refuses its vote (and does not campaign) until it holds everything the first leader
/// it hears from had committed, that leader having committed an entry of its own term. A
/// brand-new group or cluster, where no other voter has a history, elects as usual.
///
/// It forgot its term too. A leader deposed while cut off from the others still sends appends
/// at its old term; a replica that remembered a newer term refuses them, a wiped one would
/// take them and help the deposed leader commit over entries the group had already
/// committed. So before it takes any append or snapshot, the replica asks every other voter
/// for its current term ([`Recovery::learn_term`]) and from then on refuses leaders below the
/// highest it heard: that is at least the term it had itself, since any term it voted or
/// followed in is held by the candidate or leader it voted for or followed. Until every other
/// voter has answered it takes nothing; with a voter down as well, the group has no safe
/// majority anyway (two of three brokers without the history).
///
/// The state survives restarts ([`Recovery::open`] keeps a marker file until caught up): a
/// replica that restarts half-way through has a disk again, but not the history it once
/// acknowledged.
pub struct Recovery {
    active: std::sync::atomic::AtomicBool,
    /// The first leader commit index this replica heard; caught up once it has applied it.
    target: std::sync::Mutex<Option<u64>>,
    /// What the other voters answered, once all have.
    floor: std::sync::Mutex<Option<Learnt>>,
    /// Present while recovering (see [`Recovery::open`]).
    marker: Option<std::path::PathBuf>,
    /// See [`Recovery::form_with_majority`].
    majority_forms: std::sync::atomic::AtomicBool,
    what: String,
}

/// What the other voters of a recovering replica's group said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Learnt {
    /// The highest current term among them.
    term: u64,
    /// None of them had a history (a leader or an entry past the index-0 membership), so
    /// nothing was ever committed: a brand-new group.
    fresh: bool,
}

/// A voter's answer to [`KIND_TERM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VoterState {
    pub term: u64,
    /// It has followed or been a leader, or holds an entry past the index-0 membership. Every
    /// commit leaves this on a majority, so when no other voter has it, nothing was committed.
    pub history: bool,
}

impl VoterState {
    pub fn of(m: &openraft::RaftMetrics<u64, BasicNode>) -> VoterState {
        VoterState { term: m.current_term, history: m.vote.is_committed() || m.last_log_index.is_some_and(|i| i > 0) }
    }
}

/// The file that marks a replica directory as recovering from a lost disk.
pub const RECOVERING_FILE: &str = "recovering-from-disk-loss";

impl Recovery {
    /// `active` when the replica's disk was lost (see the type docs); `what` names the group in
    /// logs.
    pub fn new(active: bool, what: impl Into<String>) -> Arc<Recovery> {
        Self::with_marker(active, None, what.into())
    }

    fn with_marker(active: bool, marker: Option<std::path::PathBuf>, what: String) -> Arc<Recovery> {
        Arc::new(Recovery {
            active: active.into(),
            target: std::sync::Mutex::new(None),
            floor: std::sync::Mutex::new(None),
            marker,
            majority_forms: false.into(),
            what,
        })
    }

    /// The recovery state of the replica whose files live in `dir`: active when `lost` (its
    /// disk was found empty) or when an earlier start had not finished recovering. While active,
    /// the marker file [`RECOVERING_FILE`] in `dir` is on disk (written and fsynced here); it is
    /// removed once caught up.
    pub fn open(dir: &std::path::Path, lost: bool, what: impl Into<String>) -> std::io::Result<Arc<Recovery>> {
        let marker = dir.join(RECOVERING_FILE);
        let active = lost || marker.exists();
        if active && !marker.exists() {
            std::fs::create_dir_all(dir)?;
            crate::log_store::write_atomic(dir, RECOVERING_FILE, b"this replica's disk was lost; it votes again once caught up\n")?;
        }
        let what = what.into();
        if active && !lost {
            tracing::info!(group = %what, "replica still recovering from a lost disk (an earlier start had not caught up)");
        }
        Ok(Self::with_marker(active, Some(marker), what))
    }

    /// Whether an append or snapshot from a leader of `term` may reach the replica: always once
    /// caught up (openraft then holds a term at least the floor), before that only from a
    /// leader at or above the other voters' highest term, once learnt.
    pub fn admits(&self, term: u64) -> bool {
        !self.is_active() || self.floor().is_some_and(|f| term >= f)
    }

    /// The other voters' highest term, once learnt.
    pub fn floor(&self) -> Option<u64> {
        self.learnt().map(|l| l.term)
    }

    /// Whether the other voters, once learnt, showed a brand-new group.
    pub fn fresh(&self) -> bool {
        self.learnt().is_some_and(|l| l.fresh)
    }

    fn learnt(&self) -> Option<Learnt> {
        *self.floor.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn set_learnt(&self, term: u64, fresh: bool) {
        *self.floor.lock().unwrap_or_else(|e| e.into_inner()) = Some(Learnt { term, fresh });
    }

    /// Lets a brand-new group form with a majority: learning ends once the voters that answered
    /// and this one make a majority and none of them has a history, without waiting for the
    /// rest. For the metadata group, so that a new cluster forms with two of its three brokers
    /// up. The price is one case it cannot tell from a new cluster: this broker's disk lost
    /// after it committed with a voter that is now down, while the one that answers was never
    /// reached by any leader since the cluster formed.
    pub fn form_with_majority(&self) {
        self.majority_forms.store(true, std::sync::atomic::Ordering::Release);
    }

    /// [`Recovery::learn_term`] over the peer transport: `others` maps each other voter's id to
    /// its raft address.
    pub fn learn_term_from(self: &Arc<Self>, peers: &Arc<Peers>, group: GroupId, others: HashMap<u64, String>) {
        let (peers, others) = (peers.clone(), Arc::new(others));
        let ids = others.keys().copied().collect();
        self.learn_term(ids, move |id| {
            let (peers, others) = (peers.clone(), others.clone());
            async move {
                let addr = others.get(&id)?;
                match voter_term(&peers, id, addr, group, std::time::Duration::from_secs(2)).await {
                    Ok(state) => Some(state),
                    Err(e) => {
                        tracing::debug!(group, voter = id, error = %e, "no term from the voter yet");
                        None
                    }
                }
            }
        });
    }

    /// Learns the floor in the background: asks each of `others` (every voter but this one)
    /// for its current term with `ask`, round after round until all have answered, and keeps
    /// the highest. Returns at once when the replica is not recovering.
    pub fn learn_term<F, Fut>(self: &Arc<Self>, others: Vec<u64>, ask: F)
    where
        F: Fn(u64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<VoterState>> + Send,
    {
        if !self.is_active() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut heard: HashMap<u64, VoterState> = HashMap::new();
            let mut pause = std::time::Duration::from_millis(50);
            let (started, mut warned) = (tokio::time::Instant::now(), false);
            loop {
                let missing: Vec<u64> = others.iter().copied().filter(|id| !heard.contains_key(id)).collect();
                let answers = futures::future::join_all(missing.iter().map(|id| ask(*id))).await;
                heard.extend(missing.iter().zip(answers).filter_map(|(id, t)| Some((*id, t?))));
                if heard.len() == others.len() {
                    break;
                }
                let majority = others.len().div_ceil(2) + 1; // of every voter, this one included
                if me.majority_forms.load(std::sync::atomic::Ordering::Acquire) && heard.len() + 1 >= majority && heard.values().all(|v| !v.history) {
                    break;
                }
                if !me.is_active() {
                    return;
                }
                if !warned && started.elapsed() > std::time::Duration::from_secs(30) {
                    warned = true;
                    let silent: Vec<u64> = others.iter().copied().filter(|id| !heard.contains_key(id)).collect();
                    tracing::warn!(group = %me.what, ?silent, "replica on a new disk still waits for these voters' term: it takes no appends until they answer");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            let learnt = Learnt { term: heard.values().map(|v| v.term).max().unwrap_or(0), fresh: heard.values().all(|v| !v.history) };
            *me.floor.lock().unwrap_or_else(|e| e.into_inner()) = Some(learnt);
            tracing::info!(group = %me.what, floor = learnt.term, fresh = learnt.fresh, "replica on a new disk learnt the voters' term: it takes appends from leaders at or above it");
        });
    }

    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// An append from a current leader arrived carrying its commit index, if that index is one
    /// of the leader's own term.
    fn appended(&self, leader_commit: Option<u64>) {
        if let Some(c) = leader_commit
            && self.is_active()
        {
            self.target.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(c);
        }
    }

    /// Ends the recovery once the replica has applied what the first leader had committed.
    fn check(&self, applied: Option<u64>) {
        if !self.is_active() {
            return;
        }
        let target = *self.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = target
            && applied.unwrap_or(0) >= t
        {
            self.finish(t);
        }
    }

    /// Ends the recovery: the replica holds everything committed up to `t` (applied).
    fn finish(&self, t: u64) {
        if let Some(m) = &self.marker {
            // openraft holds the applied entries durably (it applies only what its log store
            // flushed), so the marker can go
            let removed = std::fs::remove_file(m).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) });
            if let Err(e) = removed.and_then(|_| m.parent().map_or(Ok(()), crate::log_store::sync_dir)) {
                // still recovering on the next start: safe, only slower
                tracing::warn!(group = %self.what, error = %e, "cannot remove the disk-loss marker");
            }
        }
        self.active.store(false, std::sync::atomic::Ordering::Release);
        tracing::info!(group = %self.what, caught_up_to = t, "replica on a new disk caught up: it votes again");
    }

    /// Ends the recovery as soon as `raft` has applied what the first leader had committed
    /// (without waiting for the next vote or append to notice), and keeps `raft` from
    /// campaigning meanwhile unless [`Recovery::may_campaign`].
    pub fn watch<C: TypeConfig>(self: &Arc<Self>, raft: &Raft<C>) {
        if !self.is_active() {
            return;
        }
        raft.runtime_config().elect(false);
        let (me, raft, mut m) = (self.clone(), raft.clone(), raft.metrics());
        tokio::spawn(async move {
            let mut electing = false;
            loop {
                let (applied, led) = {
                    let x = m.borrow_and_update();
                    (x.last_applied.map(|l| l.index), leader_applied_own_term(&x))
                };
                me.check(applied);
                // elected (a brand-new group) and applied an entry of its own term: it holds
                // everything committed (leader completeness); a leader hears no append to
                // learn a target from
                if led && me.is_active() {
                    me.finish(applied.unwrap_or(0));
                }
                let may = me.may_campaign();
                if may != electing {
                    raft.runtime_config().elect(may);
                    electing = may;
                }
                if !me.is_active() {
                    return;
                }
                // the floor is learnt elsewhere: look again now and then
                tokio::select! {
                    changed = m.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                }
            }
        });
    }

    /// Whether the replica may campaign: once caught up, or in a group where no other voter
    /// has a history (a brand-new cluster, every disk empty). In a group with a history it could
    /// not win (every voter holds a longer log), and each campaign would raise its term above
    /// the leader's, which it would then depose with its first answer.
    pub fn may_campaign(&self) -> bool {
        !self.is_active() || self.fresh()
    }

    /// Whether to refuse a vote to this candidate.
    /// `applied`: the replica's own applied index. Refused until caught up, except in a
    /// brand-new group (no other voter has a history: nothing was ever committed). A candidate's
    /// log says nothing here: a replica that lagged holds no more than a new one, and electing
    /// it with this replica's vote would lose what only the third replica holds.
    pub fn refuses(&self, applied: Option<u64>) -> bool {
        self.check(applied);
        self.is_active() && !self.fresh()
    }
}

impl<C> GroupHandler for RaftHandler<C>
where
    C: TypeConfig,
    C::SnapshotData: tokio::io::AsyncRead + tokio::io::AsyncWrite + tokio::io::AsyncSeek + Unpin,
{
    fn handle(&self, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let raft = self.raft.clone();
        let client = self.client.clone();
        let on_append = self.on_append.clone();
        let recovery = self.recovery.clone();
        Box::pin(async move {
            match kind {
                KIND_APPEND => {
                    let req: AppendEntriesRequest<C> = decode(&payload)?;
                    if let Some(rec) = &recovery
                        && !rec.admits(req.vote.leader_id().term)
                    {
                        return Err(format!(
                            "{}: append of term {} refused: this replica's disk was lost and the voters' term is {:?}",
                            rec.what,
                            req.vote.leader_id().term,
                            rec.floor()
                        ));
                    }
                    // a leader's commit index covers everything committed before it only once it
                    // has committed an entry of its own term (a leader just elected, or restarted,
                    // may know less): only such a commit index is a recovery target
                    let commit = req.leader_commit.filter(|c| c.leader_id.term == req.vote.leader_id().term).map(|l| l.index);
                    let r = raft.append_entries(req).await;
                    if let Ok(resp) = &r
                        && !matches!(resp, AppendEntriesResponse::HigherVote(_))
                    {
                        if let Some(f) = &on_append {
                            f();
                        }
                        if let Some(rec) = &recovery {
                            rec.appended(commit);
                        }
                    }
                    encode(&r).map(Bytes::from)
                }
                KIND_VOTE => {
                    let req: VoteRequest<u64> = decode(&payload)?;
                    if let Some(rec) = &recovery {
                        let (vote, applied) = {
                            let m = raft.metrics();
                            let m = m.borrow();
                            (m.vote, m.last_applied.map(|l| l.index))
                        };
                        if rec.refuses(applied) {
                            tracing::debug!(group = %rec.what, candidate = ?req.vote, "vote refused: this replica's disk was lost and it has not caught up yet");
                            let no: Result<VoteResponse<u64>, RaftError<u64>> = Ok(VoteResponse { vote, vote_granted: false, last_log_id: None });
                            return encode(&no).map(Bytes::from);
                        }
                    }
                    encode(&raft.vote(req).await).map(Bytes::from)
                }
                KIND_SNAPSHOT => {
                    let req: InstallSnapshotRequest<C> = decode(&payload)?;
                    if let Some(rec) = &recovery
                        && !rec.admits(req.vote.leader_id().term)
                    {
                        return Err(format!(
                            "{}: snapshot of term {} refused: this replica's disk was lost and the voters' term is {:?}",
                            rec.what,
                            req.vote.leader_id().term,
                            rec.floor()
                        ));
                    }
                    encode(&raft.install_snapshot(req).await).map(Bytes::from)
                }
                KIND_CAMPAIGN => {
                    let req: Campaign = decode(&payload)?;
                    let follows = !LEAVING.load(std::sync::atomic::Ordering::Acquire) && {
                        let m = raft.metrics();
                        let m = m.borrow();
                        m.state == openraft::ServerState::Follower && m.current_leader == Some(req.leader) && m.current_term == req.term
                    };
                    if follows {
                        raft.trigger().elect().await.map_err(|e| e.to_string())?;
                    }
                    encode(&follows).map(Bytes::from)
                }
                KIND_SYNC_STATUS => encode(&applied_if_leader(&raft)).map(Bytes::from),
                KIND_TERM => encode(&VoterState::of(&raft.metrics().borrow())).map(Bytes::from),
                KIND_CLIENT => match client {
                    Some(c) => c.handle(payload).await,
                    None => Err("this group takes no client requests".into()),
                },
                other => Err(format!("unknown request kind {other}")),
            }
        })
    }
}

/// Routes incoming requests by group id.
#[derive(Default)]
pub struct Registry {
    groups: RwLock<HashMap<GroupId, Arc<dyn GroupHandler>>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    pub fn register(&self, group: GroupId, handler: Arc<dyn GroupHandler>) {
        self.groups.write().unwrap_or_else(|e| e.into_inner()).insert(group, handler);
    }

    pub fn unregister(&self, group: GroupId) {
        self.groups.write().unwrap_or_else(|e| e.into_inner()).remove(&group);
    }
}

impl Dispatch for Registry {
    fn dispatch(&self, group: GroupId, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let h = self.groups.read().unwrap_or_else(|e| e.into_inner()).get(&group).cloned();
        match h {
            Some(h) => h.handle(kind, payload),
            None => Box::pin(async move { Err(format!("group {group} is not hosted here")) }),
        }
    }
}

/// openraft 0.9 draws each node's election timeout once, at start, and elections fire on
/// ticks. Two followers whose fixed timeouts land on nearly the same tick campaign together,
/// split the vote, and do it again every round: CI saw a group stay leaderless for over 20 s.
/// This watchdog breaks the tie: a group leaderless for three maximum election timeouts
/// campaigns after a fresh random delay, each round. It sleeps on the group's metrics, so an
/// idle group costs nothing. Ends when the group stops.
/// A replica recovering from a lost disk (`recovery`) campaigns only when it may.
pub fn spawn_election_watchdog<C: TypeConfig>(raft: Raft<C>, recovery: Option<Arc<Recovery>>) {
    tokio::spawn(async move {
        let max = raft.config().election_timeout_max;
        let stuck_after = std::time::Duration::from_millis(max * 3);
        let mut m = raft.metrics();
        loop {
            if m.wait_for(|x| x.current_leader.is_none() && x.running_state.is_ok()).await.is_err() {
                return;
            }
            let led = match tokio::time::timeout(stuck_after, m.wait_for(|x| x.current_leader.is_some())).await {
                Ok(Ok(_)) => Some(true),
                Ok(Err(_)) => None,
                Err(_) => Some(false),
            };
            match led {
                Some(true) => continue,
                None => return,
                Some(false) => {
                    let jitter = std::time::Duration::from_millis(sediment_log::random::random::<u64>() % max.max(1));
                    tokio::time::sleep(jitter).await;
                    if recovery.as_ref().is_some_and(|r| !r.may_campaign()) {
                        continue;
                    }
                    if m.borrow().current_leader.is_none() {
                        tracing::info!(jitter_ms = jitter.as_millis() as u64, "group leaderless for a while: campaigning to break a split vote");
                        if raft.trigger().elect().await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Recovery, VoterState};

    #[test]
    fn a_replica_on_a_lost_disk_votes_only_in_new_groups_until_caught_up() {
        let r = Recovery::new(true, "g");
        // a group with history: refused, before and after a leader's first append, until applied
        assert!(r.refuses(None));
        r.set_learnt(4, false);
        // a leader that has not committed in its own term yet names no target
        r.appended(None);
        assert!(r.refuses(Some(0)));
        r.appended(Some(40));
        r.appended(Some(90)); // the first leader commit heard is the target
        assert!(r.refuses(Some(39)));
        assert!(!r.refuses(Some(40)));
        assert!(!r.is_active());
        // a brand-new group: no other voter has a history
        let fresh = Recovery::new(true, "g");
        assert!(fresh.refuses(None), "not before the voters answered");
        fresh.set_learnt(1, true);
        assert!(!fresh.refuses(None));
        // an intact disk never refuses
        let intact = Recovery::new(false, "g");
        assert!(!intact.refuses(None));
        assert!(intact.admits(0));
    }

    #[tokio::test]
    async fn a_replica_on_a_lost_disk_takes_appends_only_from_leaders_at_the_voters_term() {
        let r = Recovery::new(true, "g");
        assert!(!r.admits(9), "nothing before the voters answered");
        assert!(!r.may_campaign());
        // voter 2 answers at once, voter 3 only on the third round
        let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a = asked.clone();
        r.learn_term(vec![2, 3], move |id| {
            let n = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                match id {
                    2 => Some(VoterState { term: 5, history: true }),
                    _ if n >= 3 => Some(VoterState { term: 7, history: false }),
                    _ => None,
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while r.floor().is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(r.floor(), Some(7), "the highest term of all the other voters");
        assert!(!r.admits(5) && !r.admits(6), "a deposed leader's appends are refused");
        assert!(r.admits(7) && r.admits(8));
        assert!(!r.may_campaign(), "a group with a history: no campaign until caught up");
        // a brand-new cluster: the others may have campaigned, but none has had a leader
        let fresh = Recovery::new(true, "g");
        fresh.learn_term(vec![2, 3], |_| async { Some(VoterState { term: 1, history: false }) });
        while fresh.floor().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(fresh.may_campaign() && fresh.admits(1));
        // the metadata group of a new cluster forms with a majority: voter 3 never answers
        let meta = Recovery::new(true, "metadata");
        meta.form_with_majority();
        meta.learn_term(vec![2, 3], |id| async move { (id == 2).then_some(VoterState { term: 1, history: false }) });
        while meta.floor().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(meta.fresh());
        // but not when the voter that answered has a history
        let stuck = Recovery::new(true, "metadata");
        stuck.form_with_majority();
        stuck.learn_term(vec![2, 3], |id| async move { (id == 2).then_some(VoterState { term: 4, history: true }) });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(stuck.floor(), None, "a group with a history waits for every voter");
    }

    #[test]
    fn the_disk_loss_marker_outlives_a_restart_until_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recovery::open(dir.path(), true, "g").unwrap();
        assert!(r.is_active());
        drop(r);
        // restarted before catching up: the disk is no longer empty, the history still gone
        let r = Recovery::open(dir.path(), false, "g").unwrap();
        assert!(r.is_active());
        r.appended(Some(3));
        r.set_learnt(2, false);
        assert!(!r.refuses(Some(3)));
        assert!(!dir.path().join(super::RECOVERING_FILE).exists());
        assert!(!Recovery::open(dir.path(), false, "g").unwrap().is_active());
    }
}
