//! Quiescing idle Raft groups, with broker liveness in their place.
//!
//! openraft keeps every group's leader sending heartbeats and every follower's election timer
//! running, so a broker hosting 1,000 idle partitions spends a large share of a core on
//! heartbeats that say nothing. Here, as in CockroachDB's quiescence:
//!
//! * **Liveness.** Every broker sends each peer one small *beat* per
//!   [`QuiesceConfig::beat_interval`] over the shared transport (group [`BEAT_GROUP`]). A peer
//!   unheard for [`QuiesceConfig::dead_after`] is dead. A beat carries the sender's
//!   incarnation (fresh on every process start), so a restart is seen even when it is quicker
//!   than `dead_after`.
//! * **Leader quiesces.** A leader whose group has been idle for
//!   [`QuiesceConfig::idle_after`] (log end unchanged, applied, and every live voter matched
//!   up to it) stops its heartbeats and ticker and lists `(group, term, last index)` in its
//!   beats to the group's voters.
//! * **Followers quiesce.** A follower that finds the listed leader and term in its own state,
//!   and has applied up to the listed index, stops its ticker (and with it its election timer).
//!   One it cannot agree with (another leader or term, a group it does not host yet, entries it
//!   has but does not know are committed) is sent back in the beat's answer, and the leader
//!   wakes that group.
//! * **Waking.** A leader wakes on a write (the broker calls [`QuietHandle::wake`] before
//!   proposing), on any change of its term or log, when a voter restarts or returns from the
//!   dead, and when a follower refuses. A waking leader sends a heartbeat at once. A follower
//!   wakes on the first append it receives, when its term or leader changes, and when its
//!   leader stops listing the group for two beats.
//! * **Failover.** When a peer dies, every group here that it led, quiet or not, campaigns
//!   as soon as the other voters' leader lease has run out, instead of waiting for openraft's
//!   election timer on top of that lease. The survivors campaign one after the other
//!   ([`QuiesceConfig::rank_delay`] apart, by node id) rather than at once, so their votes
//!   do not split.
//!
//! Safety never depends on this: quiescing only switches timers off, and any Raft message
//! still reaches the group. What it trades is liveness detection: a quiet group learns of its
//! leader's death from the beats, within `dead_after`, instead of its own election timer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::network::{GroupHandler, Registry, TypeConfig, decode, encode};
use crate::transport::{GroupId, Peers};

/// The transport group id beats travel under (partition groups never hash to it).
pub const BEAT_GROUP: GroupId = u64::MAX;
/// The request kind of a beat.
pub const KIND_BEAT: u8 = 5;

/// Timers of liveness and quiescence.
#[derive(Debug, Clone)]
pub struct QuiesceConfig {
    /// How often a broker tells each peer it is alive (and which groups it leads quietly).
    pub beat_interval: Duration,
    /// A peer unheard for this long is dead: the groups it led quietly elect a new leader.
    pub dead_after: Duration,
    /// A leader quiesces its group after this long without a change.
    pub idle_after: Duration,
    /// Gap between the campaigns of successive surviving followers of a dead quiet leader.
    pub rank_delay: Duration,
}

impl Default for QuiesceConfig {
    fn default() -> Self {
        QuiesceConfig {
            beat_interval: Duration::from_millis(250),
            dead_after: Duration::from_millis(1500),
            idle_after: Duration::from_millis(1000),
            rank_delay: Duration::from_millis(300),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Beat {
    from: u64,
    incarnation: u64,
    /// `(group, term, last log index)` of the groups the sender leads quietly, with the
    /// receiver among their voters.
    quiet: Vec<(GroupId, u64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct BeatAck {
    incarnation: u64,
    /// Listed groups the receiver could not quiesce under the sender: wake them.
    wake: Vec<GroupId>,
}

#[derive(Debug, Clone)]
enum Mode {
    /// Timers on. `since` is when the leader's `(term, index)` last changed (or stopped being
    /// quiescable).
    Active { term: u64, index: Option<u64>, since: Instant },
    /// Quiet leader at `term` with log end `index`.
    Leading { term: u64, index: u64, voters: Vec<u64> },
    /// Quiet follower of `leader` at `term`. `unlisted` counts the leader's beats that did
    /// not list the group.
    Following { leader: u64, term: u64, unlisted: u8 },
}

/// One group's quiescence state.
pub struct QuietGroup<C: TypeConfig> {
    id: GroupId,
    raft: Raft<C>,
    mode: Mutex<Mode>,
    /// `mode` is not `Active`: the fast path of [`QuietHandle::wake`] and of appends.
    quiet: AtomicBool,
}

impl<C: TypeConfig> QuietGroup<C> {
    fn set_timers(&self, on: bool) {
        let rc = self.raft.runtime_config();
        rc.heartbeat(on);
        rc.tick(on);
    }

    fn mode(&self) -> std::sync::MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Back to normal Raft timers. A leader sends a heartbeat at once so that its followers
    /// wake too (their election timers restart from it, so none campaigns).
    fn wake(&self, why: &'static str) -> bool {
        let mut m = self.mode();
        let was_leading = match &*m {
            Mode::Active { .. } => return false,
            Mode::Leading { .. } => true,
            Mode::Following { .. } => false,
        };
        *m = Mode::Active { term: 0, index: None, since: Instant::now() };
        self.quiet.store(false, Ordering::Release);
        self.set_timers(true);
        drop(m);
        tracing::debug!(group = self.id, why, "group woke");
        if was_leading {
            let raft = self.raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
        }
        true
    }
}

/// What a replica keeps to wake its group.
#[derive(Clone)]
pub struct QuietHandle<C: TypeConfig> {
    group: Arc<QuietGroup<C>>,
}

impl<C: TypeConfig> QuietHandle<C> {
    /// Call before proposing: a quiet group resumes its timers (cheap when already awake).
    pub fn wake(&self) {
        if self.group.quiet.load(Ordering::Acquire) {
            self.group.wake("write");
        }
    }

    /// Call after the group accepted an append from its leader.
    pub fn appended(&self) {
        if self.group.quiet.load(Ordering::Acquire) {
            self.group.wake("append");
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.group.quiet.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone)]
struct PeerState {
    addr: String,
    last: Option<Instant>,
    incarnation: u64,
    alive: bool,
    in_flight: Arc<AtomicBool>,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuietStats {
    pub groups: usize,
    pub leading_quiet: usize,
    pub following_quiet: usize,
}

/// Liveness beats and the quiescence of this broker's groups.
pub struct Quiescer<C: TypeConfig> {
    me: u64,
    incarnation: u64,
    cfg: QuiesceConfig,
    groups: RwLock<HashMap<GroupId, Arc<QuietGroup<C>>>>,
    peers: Mutex<BTreeMap<u64, PeerState>>,
    transport: Arc<Peers>,
    beats_sent: AtomicU64,
    watched: Mutex<Vec<Arc<dyn FastFailover>>>,
}

impl<C: TypeConfig> Quiescer<C> {
    /// Starts beating to `peers` (id → raft address; this node is skipped) and serving their
    /// beats through `registry`. The tasks stop when the returned `Arc` is dropped.
    pub fn start(me: u64, peers: &BTreeMap<u64, String>, transport: Arc<Peers>, registry: &Registry, cfg: QuiesceConfig) -> Arc<Quiescer<C>> {
        let incarnation = loop {
            let i = sediment_log::random::random::<u64>();
            if i != 0 {
                break i;
            }
        };
        let peers = peers
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| {
                let st = PeerState { addr: addr.clone(), last: None, incarnation: 0, alive: false, in_flight: Arc::default() };
                (*id, st)
            })
            .collect();
        let q = Arc::new(Quiescer {
            me,
            incarnation,
            cfg,
            groups: RwLock::default(),
            peers: Mutex::new(peers),
            transport,
            beats_sent: AtomicU64::new(0),
            watched: Mutex::default(),
        });
        registry.register(BEAT_GROUP, Arc::new(BeatHandler { q: Arc::downgrade(&q) }));
        tokio::spawn(run(Arc::downgrade(&q)));
        q
    }

    /// Follows the cluster's membership: beats go to every broker in `peers` (id → raft
    /// address; this node is skipped), a new broker starts as not alive, a removed one is
    /// forgotten.
    pub fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        let mut known = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|id, _| peers.contains_key(id));
        for (id, addr) in peers.iter().filter(|(id, _)| **id != self.me) {
            match known.get_mut(id) {
                Some(st) => st.addr.clone_from(addr),
                None => {
                    let st = PeerState { addr: addr.clone(), last: None, incarnation: 0, alive: false, in_flight: Arc::default() };
                    known.insert(*id, st);
                }
            }
        }
    }

    /// Puts a group under quiescence; it starts awake.
    pub fn add(&self, id: GroupId, raft: Raft<C>) -> QuietHandle<C> {
        let group =
            Arc::new(QuietGroup { id, raft, mode: Mutex::new(Mode::Active { term: 0, index: None, since: Instant::now() }), quiet: AtomicBool::new(false) });
        self.groups.write().unwrap_or_else(|e| e.into_inner()).insert(id, group.clone());
        QuietHandle { group }
    }

    pub fn remove(&self, id: GroupId) {
        self.groups.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    pub fn stats(&self) -> QuietStats {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let mut s = QuietStats { groups: groups.len(), ..QuietStats::default() };
        for g in groups.values() {
            match &*g.mode() {
                Mode::Leading { .. } => s.leading_quiet += 1,
                Mode::Following { .. } => s.following_quiet += 1,
                Mode::Active { .. } => {}
            }
        }
        s
    }

    /// Whether `peer` has been heard from within `dead_after`.
    pub fn is_alive(&self, peer: u64) -> bool {
        peer == self.me || self.lock_peers().get(&peer).is_some_and(|p| p.alive)
    }

    /// Beats sent so far (for tests).
    pub fn beats_sent(&self) -> u64 {
        self.beats_sent.load(Ordering::Relaxed)
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all_groups(&self) -> Vec<Arc<QuietGroup<C>>> {
        self.groups.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Records a sign of life from `peer`; a restart or a return from the dead wakes the quiet
    /// groups it votes in (so that it hears from their leaders before its own timers fire,
    /// and catches up on what it missed).
    fn heard(&self, peer: u64, incarnation: u64) {
        let wake = {
            let mut peers = self.lock_peers();
            let Some(p) = peers.get_mut(&peer) else { return };
            let restarted = p.incarnation != 0 && p.incarnation != incarnation;
            let returned = !p.alive;
            p.last = Some(Instant::now());
            p.incarnation = incarnation;
            p.alive = true;
            if restarted || returned {
                tracing::info!(peer, restarted, "peer is alive");
            }
            restarted || returned
        };
        if wake {
            for g in self.all_groups() {
                let votes_there = matches!(&*g.mode(), Mode::Leading { voters, .. } if voters.contains(&peer));
                if votes_there {
                    g.wake("voter back");
                }
            }
        }
    }

    /// Serves a peer's beat: quiesce what it lists, report what cannot be.
    fn on_beat(&self, beat: Beat) -> BeatAck {
        self.heard(beat.from, beat.incarnation);
        let mut wake = Vec::new();
        let listed: HashSet<GroupId> = beat.quiet.iter().map(|(g, _, _)| *g).collect();
        let groups = self.all_groups();
        let by_id: HashMap<GroupId, &Arc<QuietGroup<C>>> = groups.iter().map(|g| (g.id, g)).collect();
        for (gid, term, index) in &beat.quiet {
            let Some(g) = by_id.get(gid) else {
                wake.push(*gid);
                continue;
            };
            let agrees = {
                let m = g.raft.metrics();
                let m = m.borrow();
                // Applied, not just appended: a quiet leader sends no heartbeat to carry its
                // commit index, so a follower that agreed with the entries alone kept a stale
                // high watermark until the next write (seen for a minute under load). Refusing
                // wakes the leader, whose heartbeat brings the commit.
                m.state == ServerState::Follower
                    && m.current_leader == Some(beat.from)
                    && m.current_term == *term
                    && m.last_log_index.is_some_and(|i| i >= *index)
                    && m.last_applied.is_some_and(|l| l.index >= *index)
            };
            let mut mode = g.mode();
            match &mut *mode {
                Mode::Following { leader, term: t, unlisted, .. } if *leader == beat.from && *t == *term => *unlisted = 0,
                Mode::Active { .. } if agrees => {
                    *mode = Mode::Following { leader: beat.from, term: *term, unlisted: 0 };
                    g.quiet.store(true, Ordering::Release);
                    g.set_timers(false);
                }
                Mode::Active { .. } => wake.push(*gid),
                // quiet under another leader or term: let the stale one sort itself out
                _ => wake.push(*gid),
            }
        }
        for g in &groups {
            if listed.contains(&g.id) {
                continue;
            }
            let stale = {
                let mut mode = g.mode();
                match &mut *mode {
                    Mode::Following { leader, unlisted, .. } if *leader == beat.from => {
                        *unlisted += 1;
                        *unlisted >= 2
                    }
                    _ => false,
                }
            };
            if stale {
                g.wake("leader stopped listing");
            }
        }
        BeatAck { incarnation: self.incarnation, wake }
    }

    /// The beat for `peer`: the groups led quietly here that it votes in.
    fn beat_for(&self, peer: u64) -> Beat {
        let mut quiet = Vec::new();
        for g in self.groups.read().unwrap_or_else(|e| e.into_inner()).values() {
            if let Mode::Leading { term, index, voters } = &*g.mode()
                && voters.contains(&peer)
            {
                quiet.push((g.id, *term, *index));
            }
        }
        Beat { from: self.me, incarnation: self.incarnation, quiet }
    }

    fn send_beats(self: &Arc<Self>) {
        let targets: Vec<(u64, String, Arc<AtomicBool>)> = self.lock_peers().iter().map(|(id, p)| (*id, p.addr.clone(), p.in_flight.clone())).collect();
        for (peer, addr, in_flight) in targets {
            if in_flight.swap(true, Ordering::AcqRel) {
                continue; // the previous beat to this peer is still on its way
            }
            let body = match encode(&self.beat_for(peer)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a beat");
                    in_flight.store(false, Ordering::Release);
                    continue;
                }
            };
            self.beats_sent.fetch_add(1, Ordering::Relaxed);
            let client = self.transport.client(peer, &addr);
            let q = Arc::downgrade(self);
            let timeout = self.cfg.dead_after;
            tokio::spawn(async move {
                let answer = client.call(BEAT_GROUP, KIND_BEAT, &body, timeout).await;
                in_flight.store(false, Ordering::Release);
                let (Ok(answer), Some(q)) = (answer, q.upgrade()) else { return };
                let Ok(ack) = decode::<BeatAck>(&answer) else { return };
                q.heard(peer, ack.incarnation);
                for gid in ack.wake {
                    let g = q.groups.read().unwrap_or_else(|e| e.into_inner()).get(&gid).cloned();
                    if let Some(g) = g {
                        g.wake("follower refused");
                    }
                }
            });
        }
    }

    /// Marks peers unheard for `dead_after` as dead; returns the ones that just died, with
    /// when they were last heard.
    fn reap_peers(&self) -> Vec<(u64, Option<Instant>)> {
        let now = Instant::now();
        let mut died = Vec::new();
        for (id, p) in self.lock_peers().iter_mut() {
            if p.alive && p.last.is_none_or(|l| now.duration_since(l) >= self.cfg.dead_after) {
                p.alive = false;
                died.push((*id, p.last));
            }
        }
        for (id, _) in &died {
            tracing::warn!(peer = id, dead_after = ?self.cfg.dead_after, "peer unheard: considered dead");
        }
        died
    }

    /// One pass over the groups: quiesce idle leaders, wake whatever changed.
    fn check_groups(self: &Arc<Self>) {
        let now = Instant::now();
        let alive: HashMap<u64, bool> = self.lock_peers().iter().map(|(id, p)| (*id, p.alive)).collect();
        let is_alive = |id: u64| id == self.me || alive.get(&id).copied().unwrap_or(false);
        for g in self.all_groups() {
            let m = g.raft.metrics();
            let m = m.borrow();
            let leading = m.state == ServerState::Leader && m.current_leader == Some(self.me);
            let mut mode = g.mode();
            match &mut *mode {
                Mode::Active { term, index, since } => {
                    if !leading {
                        *index = None;
                        continue;
                    }
                    let last = m.last_log_index;
                    let settled = last.is_some()
                        && m.last_applied.map(|l| l.index) == last
                        && m.membership_config.membership().voter_ids().all(|v| {
                            v == self.me || !is_alive(v) || m.replication.as_ref().and_then(|r| r.get(&v)).is_some_and(|x| x.map(|l| l.index) == last)
                        });
                    if !settled || (*term, *index) != (m.current_term, last) {
                        *term = m.current_term;
                        *index = if settled { last } else { None };
                        *since = now;
                        continue;
                    }
                    if now.duration_since(*since) < self.cfg.idle_after {
                        continue;
                    }
                    let voters: Vec<u64> = m.membership_config.membership().voter_ids().filter(|v| *v != self.me).collect();
                    *mode = Mode::Leading { term: m.current_term, index: last.unwrap_or(0), voters };
                    g.quiet.store(true, Ordering::Release);
                    g.set_timers(false);
                }
                Mode::Leading { term, index, .. } => {
                    if !leading || m.current_term != *term || m.last_log_index != Some(*index) {
                        drop(mode);
                        drop(m);
                        g.wake("leader state changed");
                    }
                }
                Mode::Following { leader, term, .. } => {
                    if m.current_term != *term || m.current_leader != Some(*leader) {
                        drop(mode);
                        drop(m);
                        g.wake("follower state changed");
                    }
                }
            }
        }
    }

    /// `dead` (last heard at `last_heard`) stopped beating: every group here that follows it,
    /// quiet or not (and the [`watch`](Self::watch)ed ones), campaigns for its leadership
    /// without waiting for openraft's election timer (leader lease plus a random timeout,
    /// 3-4 s here). The campaign waits until the other voters' lease on the dead leader has
    /// run out (they refuse votes before that), then the survivors go in node id order,
    /// `rank_delay` apart, so their votes do not split.
    fn on_peer_dead(self: &Arc<Self>, dead: u64, last_heard: Option<Instant>) {
        let now = Instant::now();
        let mut candidates: Vec<Candidate<C>> = Vec::new();
        for g in self.all_groups() {
            candidates.push((Arc::new(g.raft.clone()), Some(g)));
        }
        for w in self.watched.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            candidates.push((w.clone(), None));
        }
        for (raft, quiet) in candidates {
            let Some((term, voters)) = raft.follows(dead) else { continue };
            let rank = voters.iter().filter(|v| **v != dead && **v < self.me && self.is_alive(**v)).count() as u32;
            // at least one beat from now: a peer that was only slow gets to answer first
            // the other voters may have heard from the dead leader up to a beat after this
            // broker did
            let margin = self.cfg.beat_interval + LEASE_MARGIN;
            let lease_end = last_heard.map_or(now, |t| t + raft.lease() + margin).max(now + self.cfg.beat_interval);
            let at = lease_end + self.cfg.rank_delay * rank;
            let q = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let still_dead = q.upgrade().is_some_and(|q| !q.is_alive(dead));
                if still_dead && raft.follows(dead).is_some_and(|(t, _)| t == term) {
                    tracing::debug!(dead, term, "campaigning: the leader's broker is dead");
                    if let Some(g) = quiet {
                        g.wake("leader dead");
                    }
                    raft.campaign().await;
                }
            });
        }
    }

    /// Also fail `group` over early when its leader's broker dies (for a group that is not
    /// quiesced, like the metadata group).
    pub fn watch(&self, group: Arc<dyn FastFailover>) {
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).push(group);
    }
}

/// A Raft group that can campaign when its leader's broker is known dead.
pub trait FastFailover: Send + Sync + 'static {
    /// `(term, voters)` if this node is a follower of `leader` now.
    fn follows(&self, leader: u64) -> Option<(u64, Vec<u64>)>;
    /// How long the group's voters refuse to vote after hearing from a leader.
    fn lease(&self) -> Duration;
    /// Starts an election now, whatever the timers say.
    fn campaign(&self) -> BoxFuture<'static, ()>;
}

impl<C: TypeConfig> FastFailover for Raft<C> {
    fn follows(&self, leader: u64) -> Option<(u64, Vec<u64>)> {
        let m = self.metrics();
        let m = m.borrow();
        (m.state != ServerState::Leader && m.current_leader == Some(leader)).then(|| (m.current_term, m.membership_config.membership().voter_ids().collect()))
    }

    fn lease(&self) -> Duration {
        // openraft's leader lease is its maximum election timeout
        Duration::from_millis(self.config().election_timeout_max)
    }

    fn campaign(&self) -> BoxFuture<'static, ()> {
        let raft = self.clone();
        Box::pin(async move {
            let _ = raft.trigger().elect().await;
        })
    }
}

/// A group that may campaign, with its quiescence state when it has one.
type Candidate<C> = (Arc<dyn FastFailover>, Option<Arc<QuietGroup<C>>>);

/// Slack past the other voters' leader lease before campaigning, beyond the beat interval
/// (transit and scheduling).
const LEASE_MARGIN: Duration = Duration::from_millis(150);

async fn run<C: TypeConfig>(q: Weak<Quiescer<C>>) {
    let interval = match q.upgrade() {
        Some(q) => q.cfg.beat_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_run = Instant::now();
    loop {
        tick.tick().await;
        let Some(q) = q.upgrade() else { return };
        let now = Instant::now();
        if now.duration_since(last_run) > q.cfg.dead_after / 2 {
            // this process did not run for a while (stopped, starved): its peers' silence
            // says nothing about them, so start their clocks again
            tracing::warn!(stalled = ?now.duration_since(last_run), "liveness loop stalled; not judging peers this round");
            for p in q.lock_peers().values_mut() {
                if p.alive {
                    p.last = Some(now);
                }
            }
        }
        last_run = now;
        q.send_beats();
        for (dead, last_heard) in q.reap_peers() {
            q.on_peer_dead(dead, last_heard);
        }
        q.check_groups();
    }
}

struct BeatHandler<C: TypeConfig> {
    q: Weak<Quiescer<C>>,
}

impl<C: TypeConfig> GroupHandler for BeatHandler<C> {
    fn handle(&self, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let q = self.q.upgrade();
        Box::pin(async move {
            if kind != KIND_BEAT {
                return Err(format!("unknown beat kind {kind}"));
            }
            let q = q.ok_or("this broker is stopping")?;
            let beat: Beat = decode(&payload)?;
            encode(&q.on_beat(beat)).map(Bytes::from)
        })
    }
}
