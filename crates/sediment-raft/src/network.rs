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
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
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

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
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
/// replica refuses its vote to any candidate of a group that has had a leader (a log past the
/// index-0 membership every new group starts with) until it holds everything the first leader
/// it hears from had committed. A brand-new group or cluster, where every disk is empty, elects
/// as usual.
pub struct Recovery {
    active: std::sync::atomic::AtomicBool,
    /// The first leader commit index this replica heard; caught up once it has applied it.
    target: std::sync::Mutex<Option<u64>>,
    what: String,
}

impl Recovery {
    /// `active` when the replica's disk was lost (see the type docs); `what` names the group in
    /// logs.
    pub fn new(active: bool, what: impl Into<String>) -> Arc<Recovery> {
        Arc::new(Recovery { active: active.into(), target: std::sync::Mutex::new(None), what: what.into() })
    }

    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// An append from a current leader arrived carrying its commit index.
    fn appended(&self, leader_commit: Option<u64>) {
        if self.is_active() {
            let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
            t.get_or_insert(leader_commit.unwrap_or(0));
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
            self.active.store(false, std::sync::atomic::Ordering::Release);
            tracing::info!(group = %self.what, caught_up_to = t, "replica on a new disk caught up: it votes again");
        }
    }

    /// Ends the recovery as soon as `raft` has applied what the first leader had committed
    /// (without waiting for the next vote or append to notice).
    pub fn watch<C: TypeConfig>(self: &Arc<Self>, raft: &Raft<C>) {
        if !self.is_active() {
            return;
        }
        let (me, mut m) = (self.clone(), raft.metrics());
        tokio::spawn(async move {
            while me.is_active() {
                let applied = m.borrow_and_update().last_applied.map(|l| l.index);
                me.check(applied);
                if m.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Whether to refuse a vote to this candidate.
    pub fn refuses(&self, candidate_last_index: Option<u64>, applied: Option<u64>) -> bool {
        self.check(applied);
        self.is_active() && candidate_last_index.is_some_and(|i| i > 0)
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
                    let commit = req.leader_commit.map(|l| l.index);
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
                        if rec.refuses(req.last_log_id.map(|l| l.index), applied) {
                            tracing::debug!(group = %rec.what, candidate = ?req.vote, "vote refused: this replica's disk was lost and it has not caught up yet");
                            let no: Result<VoteResponse<u64>, RaftError<u64>> = Ok(VoteResponse { vote, vote_granted: false, last_log_id: None });
                            return encode(&no).map(Bytes::from);
                        }
                    }
                    encode(&raft.vote(req).await).map(Bytes::from)
                }
                KIND_SNAPSHOT => {
                    let req: InstallSnapshotRequest<C> = decode(&payload)?;
                    encode(&raft.install_snapshot(req).await).map(Bytes::from)
                }
                KIND_CAMPAIGN => {
                    let req: Campaign = decode(&payload)?;
                    let follows = {
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
pub fn spawn_election_watchdog<C: TypeConfig>(raft: Raft<C>) {
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
                    let jitter = std::time::Duration::from_millis(rand::random::<u64>() % max.max(1));
                    tokio::time::sleep(jitter).await;
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
    use super::Recovery;

    #[test]
    fn a_replica_on_a_lost_disk_votes_only_in_new_groups_until_caught_up() {
        let r = Recovery::new(true, "g");
        // a brand-new group: every candidate holds only the index-0 membership
        assert!(!r.refuses(Some(0), None));
        assert!(!r.refuses(None, None));
        // a group with history: refused, before and after a leader's first append, until applied
        assert!(r.refuses(Some(7), None));
        r.appended(Some(40));
        r.appended(Some(90)); // the first leader commit heard is the target
        assert!(r.refuses(Some(50), Some(39)));
        assert!(!r.refuses(Some(50), Some(40)));
        assert!(!r.is_active());
        // an intact disk never refuses
        let intact = Recovery::new(false, "g");
        assert!(!intact.refuses(Some(7), None));
    }
}
