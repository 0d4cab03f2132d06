//! Cluster mode: this broker as one member of a multi-broker cluster.
//!
//! * The metadata group ([`sediment_raft::Controller`]) holds brokers, topics, placements and
//!   configs; admin requests on any broker become controller commands.
//! * [`follow`] applies the controller's state to this broker: for every partition with a
//!   replica here it opens the partition log and starts its Raft group
//!   ([`crate::replica::Replica`]); deleted topics are stopped and their data removed.
//! * Partition leaders report themselves to the controller so that brokers without a replica
//!   of a partition can still name its leader in Metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use sediment_protocol::ErrorCode;
use sediment_raft::cluster::{BrokerRecord, ClusterState, MetaCommand, MetaError, MetaResponse, TopicRecord};
use sediment_raft::network::Registry;
use sediment_raft::transport::{self, Peers};
use sediment_raft::{Controller, MembershipChange, MembershipError, QuiesceConfig, Quiescer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::{Broker, Topic, partition_dir};
use crate::error::ApiError;
use crate::partition::Partition;
use crate::replica::{DataTc, Replica, group_id};
use crate::topic_config::TopicConfig;

/// How long an admin request waits for the controller.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// This broker's membership in the cluster.
pub struct ClusterCtx {
    pub node_id: i32,
    pub controller: Controller,
    pub peers: Arc<Peers>,
    pub registry: Arc<Registry>,
    /// Liveness beats, and quiescence of this broker's idle partition groups.
    pub quiescer: Arc<Quiescer<DataTc>>,
    /// This broker started on a disk with no metadata log: it may have lost its disk, so its
    /// replicas of groups that existed before it started abstain from elections until caught
    /// up ([`sediment_raft::network::Recovery`]).
    pub disk_lost: bool,
    /// When this broker started (ms since the epoch).
    pub started_ms: i64,
    /// Set once [`follow`] has applied the controller's state to the topic map a first time.
    applied: watch::Sender<bool>,
}

impl ClusterCtx {
    /// Starts the peer transport on `raft_listener` and this broker's member of the metadata
    /// group (state in `meta_dir`); `voters` (broker id → raft address) seeds a new cluster.
    /// A lone voter with no cluster key has no listener: nobody may talk to it.
    pub async fn start(
        node_id: i32,
        meta_dir: &Path,
        raft_listener: Option<TcpListener>,
        voters: &BTreeMap<i32, String>,
        key: Option<sediment_raft::ClusterKey>,
        configured_id: Option<&str>,
    ) -> anyhow::Result<Arc<ClusterCtx>> {
        let registry = Registry::new();
        let peers = Peers::with_key(key.clone());
        let voters: BTreeMap<u64, String> = voters.iter().map(|(k, v)| (*k as u64, v.clone())).collect();
        let disk_lost = !meta_dir.exists();
        if disk_lost {
            tracing::info!(dir = %meta_dir.display(), "no metadata log on disk: a new broker, or one back on an empty disk; it votes once caught up");
        }
        let started_ms = sediment_log::clock::now_ms();
        // peers compare cluster ids once this broker knows its own (see sediment_raft::transport):
        // a pinned id from the first connection on, so a new broker never joins another cluster
        // that shares the secret; otherwise a restarted broker knows it from its log before its
        // listener opens, and a new one from its first sync
        if let Some(id) = configured_id {
            peers.set_cluster_id(id);
        }
        let controller = Controller::start(node_id as u64, meta_dir, &voters, peers.clone(), &registry, disk_lost).await?;
        let mut states = controller.subscribe();
        let known = states.borrow().cluster_id.clone();
        if let Some(want) = configured_id
            && !known.is_empty()
            && known != want
        {
            anyhow::bail!("this broker's metadata log belongs to cluster {known}, not to the configured cluster_id {want}");
        }
        if !known.is_empty() {
            peers.set_cluster_id(&known);
        }
        let ids = peers.clone();
        let pinned = configured_id.map(str::to_string);
        tokio::spawn(async move {
            let mut mismatch_logged = false;
            loop {
                let id = states.borrow_and_update().cluster_id.clone();
                match &pinned {
                    // a broker of the cluster without the pinned id registered first (said once:
                    // this wakes on every metadata change)
                    Some(want) if !id.is_empty() && &id != want && !mismatch_logged => {
                        mismatch_logged = true;
                        tracing::error!(cluster_id = %id, configured = %want, "the cluster took another id than the configured cluster_id; set the same cluster_id on every broker")
                    }
                    Some(_) => {}
                    None if !id.is_empty() => ids.set_cluster_id(&id),
                    None => {}
                }
                if states.changed().await.is_err() {
                    return;
                }
            }
        });
        let quiescer = Quiescer::start(node_id as u64, &voters, peers.clone(), &registry, QuiesceConfig::default());
        quiescer.watch(Arc::new(controller.raft.clone()));
        if let Some(listener) = raft_listener {
            let registry2 = registry.clone();
            tokio::spawn(async move {
                // the listener lives as long as the process
                let (_keep, stop) = tokio::sync::watch::channel(false);
                transport::serve_with(listener, registry2, stop, key).await
            });
        }
        Ok(Arc::new(ClusterCtx { node_id, controller, peers, registry, quiescer, disk_lost, started_ms, applied: watch::channel(false).0 }))
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.controller.state()
    }

    /// Whether the controller's state names this broker and a cluster id: before that, new
    /// topics cannot place replicas here and Metadata has no broker list to give.
    pub fn is_registered(&self) -> bool {
        let state = self.state();
        state.brokers.contains_key(&self.node_id) && !state.cluster_id.is_empty()
    }

    /// Registered, and the controller's state applied to this broker's topics once (after a
    /// restart, every topic it knew is open again): what a Kafka broker waits for before it
    /// serves clients.
    pub fn is_caught_up(&self) -> bool {
        *self.applied.borrow() && self.is_registered()
    }

    /// Waits until [`is_caught_up`](Self::is_caught_up) holds, at most `timeout`; whether it does.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        let mut state = self.controller.subscribe();
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while !self.is_caught_up() {
                tokio::select! {
                    r = state.changed() => if r.is_err() { return },
                    r = applied.changed() => if r.is_err() { return },
                }
            }
        })
        .await;
        self.is_caught_up()
    }

    /// Commits a metadata command; refusals become the Kafka error a broker would answer.
    pub async fn write(&self, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        let started = std::time::Instant::now();
        let r = self.controller.write(cmd, WRITE_TIMEOUT).await;
        if r.is_ok() {
            sediment_telemetry::metrics().replication.commit_latency(sediment_telemetry::RaftGroup::Metadata, started.elapsed());
        }
        match r {
            Ok(MetaResponse::Refused(e)) => Err(meta_error(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(ApiError::from(&e)),
        }
    }
}

fn meta_error(e: MetaError) -> ApiError {
    ApiError::from(&e)
}

impl ClusterCtx {
    /// `sediment cluster add-broker`: makes broker `id` (raft address `raft_addr`, started with
    /// `--peers` naming this cluster) a member of the metadata group. Returns once it caught up
    /// and votes; it then registers itself, and new topics place replicas on it.
    pub async fn add_broker(&self, id: i32, raft_addr: String, timeout: Duration) -> Result<(), ApiError> {
        self.controller.change_membership(MembershipChange::Add { id: id as u64, addr: raft_addr }, timeout).await.map_err(membership_error)?;
        self.quiescer.set_peers(&self.controller.voters());
        Ok(())
    }

    /// `sediment cluster remove-broker`: unregisters broker `id` (refused while a partition has
    /// a replica there) and removes it from the metadata group, so the quorum no longer counts it.
    pub async fn remove_broker(&self, id: i32, timeout: Duration) -> Result<(), ApiError> {
        let known = self.state().brokers.contains_key(&id) || self.controller.voters().contains_key(&(id as u64));
        if !known {
            return Err(ApiError::new(ErrorCode::VoterNotFound, format!("broker {id} is not a member of this cluster")));
        }
        self.write(MetaCommand::UnregisterBroker { id }).await?;
        self.controller.change_membership(MembershipChange::Remove { id: id as u64 }, timeout).await.map_err(membership_error)?;
        self.quiescer.set_peers(&self.controller.voters());
        Ok(())
    }
}

fn membership_error(e: MembershipError) -> ApiError {
    ApiError::from(&e)
}

/// Registers this broker (and proposes a cluster id, first writer wins), retrying in the
/// background until a majority of the metadata group answers.
///
/// The record's raft address is the one the metadata group's membership names for this broker
/// (its `--peers` entry, or the address `add-broker` gave): a broker that joins a running
/// cluster waits until it has been added and has learned the membership.
pub fn register(ctx: Arc<ClusterCtx>, mut rec: BrokerRecord, proposed_cluster_id: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            if let Some(addr) = ctx.controller.voters().get(&(rec.id as u64)).filter(|a| !a.is_empty()) {
                rec.raft_addr.clone_from(addr);
            }
            if rec.raft_addr.is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            let r = async {
                ctx.write(MetaCommand::SetClusterId { cluster_id: proposed_cluster_id.clone() }).await?;
                ctx.write(MetaCommand::RegisterBroker(rec.clone())).await
            }
            .await;
            match r {
                Ok(_) => {
                    tracing::info!(node_id = rec.id, "registered with the controller");
                    return;
                }
                Err(e) => {
                    tracing::info!(error = %e, "registration with the controller not done yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
}

/// Applies the controller's state to this broker, each time it changes, until the broker goes.
pub async fn follow(broker: Weak<Broker>, ctx: Arc<ClusterCtx>) {
    let mut rx = ctx.controller.subscribe();
    loop {
        let state = rx.borrow_and_update().clone();
        let Some(b) = broker.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        reconcile(&b, &ctx, &state).await;
        ctx.applied.send_replace(true);
        // liveness beats follow membership changes (a broker added or removed)
        let voters = ctx.controller.voters();
        if !voters.is_empty() {
            ctx.quiescer.set_peers(&voters);
        }
        drop(b);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn reconcile(b: &Arc<Broker>, ctx: &Arc<ClusterCtx>, state: &ClusterState) {
    let me = ctx.node_id;
    // What each topic holds here and what it lacks; the missing replicas of every topic then
    // open together: each costs a few fsyncs (its log, its vote, its first entries), which one
    // topic at a time made a restart with many topics wait for them in turn
    struct Plan<'a> {
        rec: &'a TopicRecord,
        existing: Option<Arc<Topic>>,
        config: TopicConfig,
        slots: Vec<Option<Arc<Partition>>>,
        changed: bool,
    }
    let mut plans = Vec::with_capacity(state.topics.len());
    let mut to_open = Vec::new();
    for rec in state.topics.values() {
        let existing = b.topic(&rec.name).filter(|t| t.id == rec.id);
        let mut slots: Vec<Option<Arc<Partition>>> = Vec::with_capacity(rec.assignments.len());
        let mut changed = existing.is_none();
        for (i, replicas) in rec.assignments.iter().enumerate() {
            let have = existing.as_ref().and_then(|t| t.partition(i as i32)).cloned();
            if !replicas.contains(&me) {
                // moved to other brokers (a completed reassignment): stop it, delete its data
                if let Some(p) = have {
                    retire_replica(b, ctx, &rec.name, &rec.id, &p).await;
                    changed = true;
                }
                slots.push(None);
                continue;
            }
            if have.is_none() {
                to_open.push((plans.len(), i));
            }
            slots.push(have);
        }
        plans.push(Plan { rec, existing, config: TopicConfig { overrides: rec.config.clone() }, slots, changed });
    }
    if !to_open.is_empty() {
        use futures::StreamExt;
        let plans_ref = &plans;
        let opened: Vec<(usize, usize, anyhow::Result<Arc<Partition>>)> = futures::stream::iter(to_open)
            .map(|(t, i)| async move {
                let plan = &plans_ref[t];
                (t, i, open_replica(b, ctx, state, plan.rec, i as i32, &plan.config).await)
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
        for (t, i, r) in opened {
            match r {
                Ok(p) => {
                    plans[t].slots[i] = Some(p);
                    plans[t].changed = true;
                }
                Err(e) => tracing::error!(topic = %plans[t].rec.name, partition = i, error = %e, "cannot open replica"),
            }
        }
    }
    for Plan { rec, existing, config, slots, changed } in plans {
        let config_changed = existing.as_ref().is_some_and(|t| t.config != config);
        if config_changed {
            crate::tiering::reconfigure(b.tier.as_ref(), &rec.name, &config, &b.defaults, slots.iter().flatten());
        }
        let grown = existing.as_ref().is_some_and(|t| t.partitions.len() != slots.len());
        // the topic's metadata object in the bucket: written by one broker, the first replica
        // of partition 0
        if (changed || config_changed || grown) && rec.assignments.first().and_then(|r| r.first()) == Some(&me) {
            crate::tiering::publish_topic(b.tier.as_ref(), &rec.name, &rec.id, rec.assignments.len() as i32, &config, rec.created_ms);
        }
        if changed || config_changed || grown {
            b.install(Arc::new(Topic { name: rec.name.clone(), id: rec.id, config, partitions: slots }));
            tracing::info!(topic = %rec.name, partitions = rec.assignments.len(), "topic applied from the controller");
        }
    }
    for t in b.topics() {
        if state.topics.get(&t.name).is_none_or(|r| r.id != t.id) {
            remove_local(b, &t).await;
        }
    }
}

async fn open_replica(
    b: &Arc<Broker>,
    ctx: &Arc<ClusterCtx>,
    state: &ClusterState,
    rec: &TopicRecord,
    index: i32,
    config: &TopicConfig,
) -> anyhow::Result<Arc<Partition>> {
    let dir = partition_dir(&b.config.data_dir.join("logs"), &rec.name, index)?;
    let tiered = crate::tiering::is_tiered(b.tier.as_ref(), &rec.name, config, &b.defaults);
    let log_config = config.log_config_for(&b.defaults, tiered);
    let (name, fsync, dir2) = (rec.name.clone(), b.config.fsync, dir.clone());
    let p = tokio::task::spawn_blocking(move || Partition::open_replicated(&name, index, dir2, log_config, fsync)).await??;
    if let Some(tier) = b.tier.as_ref() {
        // before the group starts, so the entries it applies find the remote side. `fresh`:
        // a replica's remote segment list comes from its Raft log and snapshots (every
        // replica applies the leader's changes), never from the bucket's mirror
        crate::tiering::attach(tier, &rec.name, &rec.id, &p, dir.clone(), true, config, &b.defaults)?;
    }
    // The replicas the partition was created with seed its group; a replica added later
    // (reassignment) starts empty and the leader brings it in, so it seeds nothing.
    let seeds = rec.seeds.get(index as usize).cloned().unwrap_or_default();
    let voters: BTreeMap<u64, String> = if seeds.contains(&ctx.node_id) {
        seeds.iter().filter_map(|id| state.brokers.get(id).map(|br| (*id as u64, br.raft_addr.clone()))).collect()
    } else {
        BTreeMap::new()
    };
    let group = group_id(&rec.id, index);
    let preferred = rec.assignments[index as usize].first().map(|b| *b as u64);
    let (peers, registry) = (ctx.peers.clone(), &ctx.registry);
    // a group that existed before this broker started on an empty disk may hold entries this
    // replica once acknowledged: it abstains from elections until caught up
    let recovery = sediment_raft::network::Recovery::open(&dir, ctx.disk_lost && rec.created_ms < ctx.started_ms, format!("{}-{index}", rec.name))?;
    // and it takes no append before it knows the other replicas' term
    let others: std::collections::HashMap<u64, String> = rec.assignments[index as usize]
        .iter()
        .filter(|id| **id != ctx.node_id)
        .filter_map(|id| state.brokers.get(id).map(|br| (*id as u64, br.raft_addr.clone())))
        .collect();
    recovery.learn_term_from(&ctx.peers, group, others);
    let replica = Replica::start(p.clone(), ctx.node_id as u64, group, &voters, preferred, peers, registry, Some(&ctx.quiescer), Some(recovery)).await?;
    if rec.name == crate::group::coordinator::OFFSETS_TOPIC {
        let max_batch_bytes = config.max_message_bytes(&b.defaults).max(64 * 1024);
        tokio::spawn(crate::group::coordinator::lead_offsets_partition(Arc::downgrade(b), p.clone(), replica.clone(), max_batch_bytes));
    }
    tokio::spawn(carry_out_reassignments(Arc::downgrade(ctx), replica.clone(), rec.id, index));
    tokio::spawn(report_leadership(Arc::downgrade(ctx), replica, rec.id, index));
    Ok(p)
}

/// Stops this broker's replica of a partition that moved elsewhere and deletes its data.
async fn retire_replica(b: &Arc<Broker>, ctx: &Arc<ClusterCtx>, topic: &str, id: &uuid::Uuid, p: &Arc<Partition>) {
    stop_group(ctx, p).await;
    b.remove_partition_dir(topic, id, p);
    tracing::info!(topic, partition = p.index, "replica moved to other brokers; removed here");
}

/// Stops a partition's Raft group here and takes it off the transport and quiescence.
async fn stop_group(ctx: &ClusterCtx, p: &Partition) {
    if let Some(r) = p.replica() {
        r.shutdown().await;
        ctx.registry.unregister(r.group);
        ctx.quiescer.remove(r.group);
    }
}

/// The partition's leader carries out a reassignment the controller recorded: each new
/// replica joins the group as a learner and catches up (blocking), the voters switch to the
/// target set in one membership change, and the controller hears that the move is complete.
/// Any step that fails is retried; a new leader picks up where the old one stopped (each step
/// is idempotent).
async fn carry_out_reassignments(ctx: Weak<ClusterCtx>, replica: Arc<Replica>, topic_id: uuid::Uuid, partition: i32) {
    let Some(c) = ctx.upgrade() else { return };
    let mut state_rx = c.controller.subscribe();
    drop(c);
    let mut m = replica.raft.metrics();
    loop {
        let pending = state_rx.borrow_and_update().topic_by_id(&topic_id).and_then(|t| t.reassigning.get(&partition).cloned());
        if let (Some(target), true) = (pending, replica.leader_epoch().is_some()) {
            let Some(c) = ctx.upgrade() else { return };
            match move_replicas(&c, &replica, &target.to).await {
                Ok(()) => {
                    let done = MetaCommand::CompleteReassignment { topic_id, partition, replicas: target.to.clone() };
                    match c.write(done).await {
                        Ok(_) => tracing::info!(partition, from = ?target.from, to = ?target.to, "partition reassigned"),
                        Err(e) => tracing::warn!(partition, error = %e, "cannot record the completed reassignment; retrying"),
                    }
                }
                Err(e) => tracing::warn!(partition, to = ?target.to, error = %e, "reassignment step failed; retrying"),
            }
            drop(c);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::select! {
            r = state_rx.changed() => if r.is_err() { return },
            r = m.changed() => if r.is_err() { return },
        }
    }
}

async fn move_replicas(c: &ClusterCtx, replica: &Replica, to: &[i32]) -> anyhow::Result<()> {
    let state = c.state();
    let voters: std::collections::BTreeSet<u64> = replica.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    for b in to.iter().map(|b| *b as u64).filter(|b| !voters.contains(b)) {
        let addr = state.brokers.get(&(b as i32)).map(|r| r.raft_addr.clone()).ok_or_else(|| anyhow::anyhow!("broker {b} is not registered"))?;
        replica.raft.add_learner(b, openraft::BasicNode::new(addr), false).await?;
        // openraft's own "caught up" allows a lag of thousands of entries: wait until the
        // learner has everything the leader had when it was added, so the voter switch never
        // leaves fewer complete copies than before
        let target = replica.raft.metrics().borrow().last_log_index;
        replica
            .raft
            .wait(Some(REASSIGN_STEP_TIMEOUT))
            .metrics(
                |m| match m.replication.as_ref() {
                    Some(r) => r.get(&b).is_some_and(|matched| matched.map(|l| l.index) >= target),
                    None => true, // no longer the leader: stop waiting
                },
                "new replica caught up",
            )
            .await
            .map_err(|e| anyhow::anyhow!("broker {b} did not catch up within {}s: {e}", REASSIGN_STEP_TIMEOUT.as_secs()))?;
        if !replica.is_leader() {
            anyhow::bail!("no longer the leader");
        }
    }
    let target: std::collections::BTreeSet<u64> = to.iter().map(|b| *b as u64).collect();
    if voters != target {
        tokio::time::timeout(REASSIGN_STEP_TIMEOUT, replica.raft.change_membership(target, false))
            .await
            .map_err(|_| anyhow::anyhow!("the membership change did not commit within {}s", REASSIGN_STEP_TIMEOUT.as_secs()))??;
    }
    Ok(())
}

/// Longest wait for one step of a reassignment (a new replica catching up, the voter switch).
const REASSIGN_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// When this broker becomes a partition's leader, tell the controller (so Metadata on every
/// broker names it).
async fn report_leadership(ctx: Weak<ClusterCtx>, replica: Arc<Replica>, topic_id: uuid::Uuid, partition: i32) {
    let mut m = replica.raft.metrics();
    let mut reported = None;
    loop {
        let (leading, term) = {
            let x = m.borrow_and_update();
            (x.state == openraft::ServerState::Leader, x.current_term)
        };
        if leading && reported != Some(term) {
            let Some(c) = ctx.upgrade() else { return };
            let cmd = MetaCommand::SetPartitionLeader { topic_id, partition, leader: c.node_id, epoch: term.min(i32::MAX as u64) as i32 };
            match c.write(cmd).await {
                Ok(_) => reported = Some(term),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot report partition leadership yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}

/// How often a leader re-evaluates the ISR of the partitions it leads.
const ISR_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Kafka's ISR maintenance (the leader's AlterPartition): every second, each partition led
/// here gets its in-sync replicas computed ([`Replica::isr`]), and when they differ from what
/// the controller holds, the leader commits them (`SetPartitionIsr`), so Metadata on every
/// broker reports the same ISR. Writes happen only when the set changes.
pub async fn maintain_isr(broker: Weak<Broker>, ctx: Arc<ClusterCtx>) {
    let mut tick = tokio::time::interval(ISR_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        let lag = b.config.replica_lag_time_max;
        let state = ctx.state();
        let mut changes = Vec::new();
        for t in b.topics() {
            let Some(rec) = state.topics.get(&t.name).filter(|r| r.id == t.id) else { continue };
            for p in t.hosted() {
                let Some(r) = p.replica() else { continue };
                let mut recorded = state.isr(rec, p.index);
                let current: Vec<u64> = recorded.iter().map(|id| *id as u64).collect();
                let isr: Vec<i32> = r.isr(lag, &current, |id| ctx.quiescer.is_alive(id)).into_iter().map(|id| id as i32).collect();
                if isr.is_empty() {
                    continue; // not the leader
                }
                let mut now = isr.clone();
                now.sort_unstable();
                recorded.sort_unstable();
                if now != recorded {
                    changes.push(MetaCommand::SetPartitionIsr { topic_id: rec.id, partition: p.index, epoch: p.leader_epoch(), isr });
                }
            }
        }
        drop(b);
        for cmd in changes {
            if let MetaCommand::SetPartitionIsr { partition, isr, .. } = &cmd {
                tracing::info!(partition, isr = ?isr, "in-sync replicas changed");
            }
            match tokio::time::timeout(Duration::from_secs(5), ctx.write(cmd)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot report in-sync replicas yet"),
                Err(_) => tracing::debug!("reporting in-sync replicas timed out"),
            }
        }
    }
}

/// A leader hands a partition to its preferred replica only after leading it this long: the
/// transfer needs its own vote's lease (openraft's maximum election timeout) to have run out.
const MIN_LEADERSHIP_AGE: Duration = Duration::from_secs(5);

/// Transfers in flight at once from one broker.
const REBALANCE_CONCURRENCY: usize = 8;

/// Kafka's preferred leader election (`auto.leader.rebalance.enable`), run by every broker for
/// the partitions it leads: each `every`, a partition whose preferred replica (the first of its
/// assignment, spread across brokers at creation) is another broker that is alive and has the
/// whole log is handed to it. So leadership returns to a broker that restarted, and leaders
/// stay spread however the first elections went.
pub async fn rebalance_leaders(broker: Weak<Broker>, ctx: Arc<ClusterCtx>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        let state = ctx.state();
        let mut moves = Vec::new();
        for t in b.topics() {
            let Some(rec) = state.topics.get(&t.name) else { continue };
            for p in t.hosted() {
                let Some(r) = p.replica() else { continue };
                // a partition that is moving keeps its leader until the move is done
                if rec.reassigning.contains_key(&p.index) {
                    continue;
                }
                let Some(&preferred) = rec.assignments.get(p.index as usize).and_then(|a| a.first()) else { continue };
                if preferred == ctx.node_id || !r.is_leader() || r.led_for().is_none_or(|d| d < MIN_LEADERSHIP_AGE) {
                    continue;
                }
                let to = preferred as u64;
                // in sync is enough to try: the transfer itself pauses writes until the target
                // has the whole log
                if ctx.quiescer.is_alive(to) && r.in_sync(to) {
                    moves.push((t.name.clone(), p.index, r.clone(), to));
                }
            }
        }
        drop(b);
        use futures::StreamExt;
        futures::stream::iter(moves)
            .for_each_concurrent(REBALANCE_CONCURRENCY, |(topic, partition, r, to)| async move {
                match r.transfer_leadership(to).await {
                    Ok(()) => tracing::info!(%topic, partition, to, "leadership moved to the preferred replica"),
                    Err(e) => tracing::debug!(%topic, partition, to, error = %e, "leadership not moved to the preferred replica"),
                }
            })
            .await;
    }
}

/// Leaderships handed over at once during a controlled shutdown.
const SHUTDOWN_TRANSFER_CONCURRENCY: usize = 16;

/// What a controlled shutdown did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandOver {
    /// Partitions this broker led when the shutdown began.
    pub led: usize,
    /// Of those, how many it handed to another replica.
    pub moved: usize,
}

/// Kafka's controlled shutdown (`controlled.shutdown.enable`): before a stopping broker closes
/// its listener, every partition it leads is handed to an in-sync replica on a live broker
/// (the preferred replica first), so producers pause only for the hand-over instead of waiting
/// out an election after the broker is gone. Partitions not handed over within `within` fail
/// over as after a crash.
pub async fn controlled_shutdown(b: &Arc<Broker>, within: Duration) -> HandOver {
    let Some(ctx) = b.cluster.clone() else { return HandOver::default() };
    let state = ctx.state();
    let mut moves = Vec::new();
    for t in b.topics() {
        let rec = state.topics.get(&t.name).filter(|r| r.id == t.id);
        for p in t.hosted() {
            let Some(r) = p.replica().filter(|r| r.is_leader()) else { continue };
            // the ISR in replica order (the preferred replica first), live brokers only
            let targets: Vec<u64> = rec
                .map(|rec| state.isr(rec, p.index))
                .unwrap_or_default()
                .into_iter()
                .filter(|id| *id != ctx.node_id && ctx.quiescer.is_alive(*id as u64))
                .map(|id| id as u64)
                .collect();
            moves.push((t.name.clone(), p.index, r.clone(), targets));
        }
    }
    let led = moves.len();
    let moved = std::sync::atomic::AtomicUsize::new(0);
    use futures::StreamExt;
    let hand_over = futures::stream::iter(moves).for_each_concurrent(SHUTDOWN_TRANSFER_CONCURRENCY, |(topic, partition, r, mut targets)| {
        let (moved, ctx) = (&moved, &ctx);
        async move {
            // rounds until one target takes over or `within` runs out: under load a target can
            // miss one round's catch-up or election bound and make the next
            loop {
                if !targets.iter().any(|to| ctx.quiescer.is_alive(*to)) {
                    return; // nobody to hand it to (one replica, or the others are down)
                }
                for to in targets.clone() {
                    // the last round's election may have completed after its wait ended
                    if !r.is_leader() {
                        if r.leader().is_some_and(|l| l != ctx.node_id as u64) {
                            moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        return;
                    }
                    if !ctx.quiescer.is_alive(to) || !r.in_sync(to) {
                        continue; // stopped meanwhile (brokers stopping one after another), or behind
                    }
                    match r.transfer_leadership(to).await {
                        Ok(()) => {
                            moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(%topic, partition, to, "leadership handed over for shutdown");
                            return;
                        }
                        // stopped (its liveness beats have not timed out yet)
                        Err(e @ crate::replica::TransferError::Unreachable(..)) => {
                            tracing::debug!(%topic, partition, to, error = %e, "leadership not handed over");
                            targets.retain(|t| *t != to);
                        }
                        Err(e) => tracing::info!(%topic, partition, to, error = %e, "leadership not handed over; trying again"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let _ = tokio::time::timeout(within, hand_over).await;
    HandOver { led, moved: moved.load(std::sync::atomic::Ordering::Relaxed) }
}

/// Controlled shutdown of the controller: hands the metadata leadership, if held here, to a
/// live voter that has the whole metadata log (see [`Controller::hand_over`]). Run after the
/// partitions moved, so their leadership changes are committed by this leader first.
pub async fn hand_over_controller(b: &Arc<Broker>, within: Duration) -> Option<u64> {
    let ctx = b.cluster.clone()?;
    ctx.controller.hand_over(|id| ctx.quiescer.is_alive(id), within).await
}

/// Stops a deleted topic's replicas here and removes their data.
async fn remove_local(b: &Arc<Broker>, t: &Arc<Topic>) {
    b.uninstall(t);
    // the topic's objects in the bucket: deleted by one broker, partition 0's leader
    if t.partition(0).and_then(|p| p.replica().cloned()).is_some_and(|r| r.is_leader()) {
        crate::tiering::forget_topic(b.tier.as_ref(), &t.name, &t.id);
    }
    if let Some(c) = b.cluster.as_ref() {
        for p in t.hosted() {
            stop_group(c, p).await;
        }
    }
    b.remove_topic_dirs(t);
    tracing::info!(topic = %t.name, "topic removed (deleted through the controller)");
}

/// Replicas a broker opens at once when the controller places new partitions on it.
const OPEN_CONCURRENCY: usize = 64;

/// Longest CreateTopics and CreatePartitions wait for the new partitions' first leaders.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Replication factor of topics created without one: 3, or fewer on a smaller cluster.
pub const DEFAULT_REPLICATION_FACTOR: i16 = 3;

/// Polls `done` until it holds or [`WRITE_TIMEOUT`] passes (the controller's state reaches this
/// broker's topic map through [`follow`], a moment after the write commits).
pub(crate) async fn applied_locally(what: &str, done: impl Fn() -> bool) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::new(ErrorCode::RequestTimedOut, format!("{what} committed but not applied on this broker in time")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn placement_start() -> u32 {
    sediment_log::random::random::<u32>()
}

impl Broker {
    /// The replication factor of an existing topic: its replicas per partition in a cluster,
    /// 1 on a single node.
    pub fn replication_factor_of(&self, name: &str) -> i16 {
        match &self.cluster {
            Some(c) => c.state().topics.get(name).map_or(1, |t| t.replication_factor()),
            None => 1,
        }
    }

    /// The replication factor a topic created with `requested` (-1: the default) gets.
    pub fn default_replication_factor(&self, requested: i16) -> i16 {
        if requested != -1 {
            return requested;
        }
        match &self.cluster {
            Some(c) => DEFAULT_REPLICATION_FACTOR.min(c.state().brokers.len().max(1) as i16),
            None => 1,
        }
    }

    /// Creates a topic: locally on a single node, through the controller in a cluster.
    pub async fn create_topic_any(
        self: &Arc<Self>,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, ApiError> {
        let Some(c) = self.cluster.clone() else {
            return self.create_topic(name, partitions, replication_factor, configs, validate_only);
        };
        crate::broker::validate_topic_name(name).map_err(|m| ApiError::new(ErrorCode::InvalidTopicException, m))?;
        let partitions = if partitions == -1 { self.config.num_partitions } else { partitions };
        crate::topic_rules::check_partition_count(partitions)?;
        self.validate_configs(&configs)?;
        let state = c.state();
        let brokers = state.brokers.len();
        let rf = if replication_factor == -1 { DEFAULT_REPLICATION_FACTOR.min(brokers.max(1) as i16) } else { replication_factor };
        if rf < 1 || rf as usize > brokers {
            return Err(ApiError::new(ErrorCode::InvalidReplicationFactor, format!("replication factor {rf} is larger than the {brokers} registered brokers")));
        }
        if state.topics.contains_key(name) {
            return Err(ApiError::new(ErrorCode::TopicAlreadyExists, format!("topic \"{name}\" already exists")));
        }
        crate::topic_rules::check_collision(name, state.topics.keys().map(String::as_str))?;
        // this broker's share of the replicas (placement spreads them evenly)
        crate::descriptors::check_room((partitions as u64 * rf as u64).div_ceil(brokers.max(1) as u64))?;
        let id = sediment_log::random::uuid_v4();
        if validate_only {
            return Ok(Arc::new(Topic { name: name.into(), id, config: TopicConfig { overrides: configs }, partitions: vec![None; partitions as usize] }));
        }
        let cmd = MetaCommand::CreateTopic {
            name: name.into(),
            id,
            partitions,
            replication_factor: rf,
            config: configs,
            placement_start: placement_start(),
            created_ms: sediment_log::clock::now_ms(),
        };
        c.write(cmd).await?;
        applied_locally("topic creation", || self.topic(name).is_some_and(|t| t.id == id)).await?;
        self.undo_if_not_opened(&c, name, id, partitions).await?;
        self.leaders_elected(name, 0..partitions).await;
        tracing::info!(topic = name, partitions, replication_factor = rf, "topic created through the controller");
        self.topic(name).ok_or_else(|| ApiError::new(ErrorCode::UnknownTopicOrPartition, format!("topic \"{name}\" was deleted meanwhile")))
    }

    /// Deletes a topic: locally on a single node, through the controller in a cluster.
    pub async fn delete_topic_any(self: &Arc<Self>, name: &str) -> Result<uuid::Uuid, ApiError> {
        let Some(c) = self.cluster.clone() else {
            return self.delete_topic(name);
        };
        let Some(rec) = c.state().topics.get(name).cloned() else {
            return Err(ApiError::unknown_topic(name));
        };
        c.write(MetaCommand::DeleteTopic { name: name.into() }).await?;
        applied_locally("topic deletion", || self.topic(name).is_none_or(|t| t.id != rec.id)).await?;
        Ok(rec.id)
    }

    /// Grows a topic: locally on a single node, through the controller in a cluster.
    pub async fn create_partitions_any(self: &Arc<Self>, name: &str, count: i32, validate_only: bool) -> Result<(), ApiError> {
        let Some(c) = self.cluster.clone() else {
            return self.create_partitions(name, count, validate_only);
        };
        let Some(rec) = c.state().topics.get(name).cloned() else {
            return Err(ApiError::unknown_topic(name));
        };
        let current = rec.partitions();
        crate::topic_rules::check_partition_growth(current, count)?;
        let rf = rec.assignments.first().map_or(1, |r| r.len()) as u64;
        crate::descriptors::check_room(((count - current).max(0) as u64 * rf).div_ceil(c.state().brokers.len().max(1) as u64))?;
        if validate_only {
            return Ok(());
        }
        c.write(MetaCommand::CreatePartitions { name: name.into(), count, placement_start: placement_start() }).await?;
        applied_locally("partition creation", || self.topic(name).is_some_and(|t| t.partition_count() >= count)).await?;
        self.leaders_elected(name, current..count).await;
        Ok(())
    }

    /// A new topic some partition of which this broker was to host but could not open (out of
    /// file descriptors, a full or failing disk): the creation is undone (deleted through the
    /// controller, every directory of it removed here) and refused with KAFKA_STORAGE_ERROR,
    /// rather than leaving a topic with a partition nobody serves.
    async fn undo_if_not_opened(&self, c: &Arc<ClusterCtx>, name: &str, id: uuid::Uuid, partitions: i32) -> Result<(), ApiError> {
        let Some(rec) = c.state().topics.get(name).filter(|r| r.id == id).cloned() else { return Ok(()) };
        let topic = self.topic(name).filter(|t| t.id == id);
        let failed = rec
            .assignments
            .iter()
            .enumerate()
            .find(|(i, replicas)| replicas.contains(&c.node_id) && topic.as_ref().is_none_or(|t| t.partition(*i as i32).is_none()))
            .map(|(i, _)| i as i32);
        let Some(index) = failed else { return Ok(()) };
        tracing::warn!(topic = name, partition = index, "a partition of the new topic cannot be opened here; undoing the creation");
        c.write(MetaCommand::DeleteTopic { name: name.into() }).await?;
        applied_locally("topic deletion", || self.topic(name).is_none_or(|t| t.id != id)).await?;
        self.discard_partitions(name, Vec::new(), partitions - 1);
        Err(ApiError::new(ErrorCode::KafkaStorageError, format!("cannot open partition {name}-{index} on broker {}; the topic was not created", c.node_id)))
    }

    /// Waits, at most [`LEADER_WAIT`], until each of `partitions` of topic `name` has a leader
    /// (known here from its replica, or reported to the controller), so a client that produces
    /// right after CreateTopics or CreatePartitions finds one, as with Kafka, whose controller
    /// names the leaders in the creation itself. Past the bound the creation still succeeds:
    /// clients retry NOT_LEADER_OR_FOLLOWER meanwhile.
    pub(crate) async fn leaders_elected(&self, name: &str, partitions: std::ops::Range<i32>) {
        let elected = || {
            let (Some(t), Some(c)) = (self.topic(name), self.cluster.as_ref()) else { return true };
            let state = c.state();
            let rec = state.topics.get(name).filter(|r| r.id == t.id);
            partitions.clone().all(|i| {
                t.partition(i).and_then(|p| p.replica()).is_some_and(|r| r.leader().is_some())
                    || rec.and_then(|r| r.leaders.get(i as usize)).is_some_and(|(leader, _)| *leader >= 0)
            })
        };
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while !elected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Replaces a topic's config overrides: locally on a single node, through the controller
    /// in a cluster.
    pub async fn set_topic_config_any(self: &Arc<Self>, name: &str, overrides: BTreeMap<String, String>, validate_only: bool) -> Result<(), ApiError> {
        let Some(c) = self.cluster.clone() else {
            return self.set_topic_config(name, overrides, validate_only);
        };
        self.validate_configs(&overrides)?;
        if !c.state().topics.contains_key(name) {
            return Err(ApiError::unknown_topic(name));
        }
        if validate_only {
            return Ok(());
        }
        c.write(MetaCommand::SetTopicConfig { name: name.into(), config: overrides.clone() }).await?;
        applied_locally("config change", || self.topic(name).is_some_and(|t| t.config.overrides == overrides)).await
    }

    /// A new producer id; in a cluster, blocks of ids come from the controller so no two
    /// brokers hand out the same one.
    pub async fn next_producer_id_any(self: &Arc<Self>) -> Result<i64, ApiError> {
        let Some(c) = self.cluster.clone() else {
            return self.next_producer_id();
        };
        if let Some(id) = self.take_producer_id() {
            return Ok(id);
        }
        let start = match c.write(MetaCommand::ReserveProducerIds { count: crate::broker::PRODUCER_ID_BLOCK }).await? {
            MetaResponse::ProducerIds { start } => start,
            MetaResponse::Refused(e) => return Err(meta_error(e)),
            other => return Err(ApiError::new(ErrorCode::UnknownServerError, format!("unexpected controller answer {other:?}"))),
        };
        Ok(self.refill_producer_ids(start))
    }
}

/// The address of node `id` in a group's current membership.
fn member_addr<C: sediment_raft::network::TypeConfig>(raft: &openraft::Raft<C>, id: u64) -> Option<String> {
    raft.metrics().borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Whether this broker's replica of `group` is in sync: it asks the leader how far the group
/// has applied and waits (briefly) until it has applied that far itself. `Err` names why not.
async fn replica_in_sync<C: sediment_raft::network::TypeConfig>(
    ctx: &ClusterCtx,
    raft: &openraft::Raft<C>,
    group: sediment_raft::GroupId,
    what: &str,
) -> Result<(), String> {
    let me = ctx.node_id as u64;
    let leader = raft.metrics().borrow().current_leader;
    let Some(leader) = leader else { return Err(format!("{what} has no leader yet")) };
    if leader == me {
        // a leader restored after a restart may still be applying what was committed before
        let mut m = raft.metrics();
        let caught_up = m.wait_for(sediment_raft::network::leader_applied_own_term);
        return match tokio::time::timeout(Duration::from_secs(2), caught_up).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!("{what} is led here and still applying what was committed before this term")),
        };
    }
    let Some(addr) = member_addr(raft, leader) else { return Err(format!("{what}: leader {leader} has no address yet")) };
    let target = match sediment_raft::network::leader_applied(&ctx.peers, leader, &addr, group, Duration::from_secs(2)).await {
        Ok(Some(index)) => index,
        Ok(None) => return Err(format!("{what}: broker {leader} no longer leads it, or is still applying its log")),
        Err(e) => return Err(format!("{what}: cannot ask its leader {leader}: {e}")),
    };
    let mut m = raft.metrics();
    let applied = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| m.last_applied.map_or(0, |l| l.index);
    match tokio::time::timeout(Duration::from_secs(2), m.wait_for(|x| applied(x) >= target)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(format!("{what} is catching up with its leader {leader} (applied {} of {target})", applied(&raft.metrics().borrow()))),
    }
}

impl Broker {
    /// The brokers Metadata and DescribeCluster list: the controller's, and always this one.
    /// A broker that has not applied the metadata yet (just started, or back on an empty disk)
    /// knows no broker at all, and a client told of none forgets every broker it knew
    /// (librdkafka decommissions the brokers missing from a Metadata answer) and is left with
    /// nobody to ask. `None` outside a cluster.
    pub fn listed_brokers(&self) -> Option<(Vec<sediment_raft::BrokerRecord>, bool)> {
        let ctx = self.cluster.as_ref()?;
        let state = ctx.state();
        let mut brokers: Vec<_> = state.brokers.values().cloned().collect();
        let behind = !state.brokers.contains_key(&ctx.node_id);
        if behind {
            brokers.push(sediment_raft::BrokerRecord {
                id: ctx.node_id,
                host: self.config.advertised_host.clone(),
                port: self.config.advertised_port,
                raft_addr: String::new(),
                rack: None,
            });
            brokers.sort_by_key(|b| b.id);
        }
        Some((brokers, behind))
    }

    /// A partition's in-sync replicas as Metadata reports them: what its leader last committed,
    /// less brokers that stopped beating. `None` outside a cluster or for an unknown topic.
    pub fn isr_of(&self, topic: &str, partition: i32) -> Option<Vec<i32>> {
        let ctx = self.cluster.as_ref()?;
        let state = ctx.state();
        let rec = state.topics.get(topic)?;
        Some(state.isr(rec, partition).into_iter().filter(|id| ctx.quiescer.is_alive(*id as u64)).collect())
    }

    /// Whether this broker may report ready in a cluster: it follows the metadata leader with
    /// everything applied, and every partition the metadata places here is open and in sync
    /// with its leader (or led here). A rolling restart that waits for this before stopping the
    /// next broker never takes a second replica of a partition away while the first is still
    /// copying it. `Err` names the first thing missing (and how many replicas are in sync).
    pub async fn readiness(self: &Arc<Self>) -> Result<usize, String> {
        let Some(ctx) = self.cluster.clone() else { return Ok(0) };
        replica_in_sync(&ctx, &ctx.controller.raft, sediment_raft::METADATA_GROUP, "the metadata log").await?;
        if !ctx.is_caught_up() {
            return Err("not registered with the controller yet".into());
        }
        let state = ctx.state();
        let mut hosted = Vec::new();
        for rec in state.topics.values() {
            for (index, replicas) in rec.assignments.iter().enumerate() {
                if replicas.contains(&ctx.node_id) {
                    hosted.push((rec.name.clone(), index as i32));
                }
            }
        }
        let total = hosted.len();
        // ask the leaders concurrently, a bounded number at a time
        let checks = futures::stream::iter(hosted.into_iter().map(|(name, index)| {
            let ctx = ctx.clone();
            let b = self.clone();
            async move {
                let what = format!("{name}-{index}");
                let Some(p) = b.topic(&name).and_then(|t| t.partition(index).cloned()) else {
                    return Err(format!("{what} is not open here yet"));
                };
                let Some(r) = p.replica() else { return Err(format!("{what} has no replica running here yet")) };
                replica_in_sync(&ctx, &r.raft, r.group, &what).await
            }
        }))
        .buffer_unordered(64);
        let results: Vec<Result<(), String>> = checks.collect().await;
        let behind: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        match behind.first() {
            None => Ok(total),
            Some(first) => Err(format!("{} of {total} replicas in sync; {first}", total - behind.len())),
        }
    }
}
