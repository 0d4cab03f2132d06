//! Quiescence of idle partition groups, on real sockets: three brokers (three data dirs,
//! three peer transports on loopback), eight partitions replicated on all three.
//!
//! * idle groups go quiet on every broker and then send no Raft traffic at all, only the
//!   brokers' liveness beats;
//! * a write to a quiet group commits at once and wakes it, and it goes quiet again;
//! * leadership transfer (the preferred leader election) costs one election and no data;
//! * a broker restarting does not cost the groups it follows an election;
//! * SIGKILL-like death of the broker leading most groups: every group it led elects a new
//!   leader among the survivors (from the beats, not openraft's timers) and takes writes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use sediment_broker::partition::{FsyncPolicy, Partition};
use sediment_broker::replica::{DataTc, Outcome, Replica, group_id};
use sediment_log::LogConfig;
use sediment_protocol::batch::testing::batch_from_values;
use sediment_raft::network::{KIND_APPEND, KIND_VOTE, Registry};
use sediment_raft::quiesce::BEAT_GROUP;
use sediment_raft::transport::{self, Dispatch, GroupId, Peers};
use sediment_raft::{QuiesceConfig, Quiescer};
use tokio::sync::watch;

const GROUPS: i32 = 8;

/// Counts the Raft requests a broker receives, by kind.
#[derive(Default)]
struct Counts {
    appends: AtomicU64,
    votes: AtomicU64,
    beats: AtomicU64,
}

struct Counting {
    inner: Arc<Registry>,
    counts: Arc<Counts>,
}

impl Dispatch for Counting {
    fn dispatch(&self, group: GroupId, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let c = match (group, kind) {
            (BEAT_GROUP, _) => &self.counts.beats,
            (_, KIND_APPEND) => &self.counts.appends,
            (_, KIND_VOTE) => &self.counts.votes,
            _ => &self.counts.beats,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.inner.dispatch(group, kind, payload)
    }
}

struct Node {
    id: u64,
    replicas: Vec<Arc<Replica>>,
    quiescer: Arc<Quiescer<DataTc>>,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
}

fn config() -> QuiesceConfig {
    QuiesceConfig {
        beat_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(700),
        idle_after: Duration::from_millis(400),
        rank_delay: Duration::from_millis(250),
    }
}

async fn start(id: u64, dir: PathBuf, addr: std::net::SocketAddr, voters: &BTreeMap<u64, String>) -> Node {
    let listener = transport::testing::bind_again(addr).await;
    let registry = Registry::new();
    let peers = Peers::new();
    let quiescer = Quiescer::start(id, voters, peers.clone(), &registry, config());
    let mut replicas = Vec::new();
    for i in 0..GROUPS {
        let part = Partition::open_replicated("idle", i, dir.join(format!("idle-{i}")), LogConfig::default(), FsyncPolicy::Always).unwrap();
        let group = group_id(&uuid::Uuid::from_u128(7), i);
        replicas.push(Replica::start(part, id, group, voters, None, peers.clone(), &registry, Some(&quiescer), None).await.unwrap());
    }
    let counts = Arc::new(Counts::default());
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(transport::serve_until(listener, Arc::new(Counting { inner: registry, counts: counts.clone() }), stop_rx));
    Node { id, replicas, quiescer, counts, stop }
}

impl Node {
    /// Like SIGKILL for this broker: its transport closes and its groups stop.
    async fn kill(self) {
        let _ = self.stop.send(true);
        for r in &self.replicas {
            r.shutdown().await;
        }
    }
}

fn free_addr() -> std::net::SocketAddr {
    sediment_raft::transport::testing::listen_addr()
}

/// The index of each group's leader among `nodes`, once every group has one there.
async fn leaders(nodes: &[&Node], within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<Option<usize>> = (0..GROUPS as usize).map(|g| nodes.iter().position(|n| n.replicas[g].is_leader())).collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
        assert!(Instant::now() < deadline, "groups without a leader after {within:?}: {found:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(r: &Replica, tag: &str) -> i64 {
    let batch = Bytes::from(batch_from_values(&[tag.as_bytes().to_vec()], 1_000));
    let mut p = r.propose(batch).await.unwrap();
    let base = match p.appended().await.unwrap() {
        Outcome::Appended(info) => info.base_offset,
        other => panic!("{other:?}"),
    };
    p.committed().await.unwrap();
    base
}

async fn wait_all_quiet(nodes: &[&Node]) {
    let want_followers = nodes.len().saturating_sub(1) * GROUPS as usize;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats: Vec<_> = nodes.iter().map(|n| n.quiescer.stats()).collect();
        let leading: usize = stats.iter().map(|s| s.leading_quiet).sum();
        let following: usize = stats.iter().map(|s| s.following_quiet).sum();
        if leading == GROUPS as usize && following == want_followers {
            return;
        }
        assert!(Instant::now() < deadline, "groups not quiet: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terms(nodes: &[&Node], leaders: &[usize]) -> Vec<u64> {
    leaders.iter().enumerate().map(|(g, l)| nodes[*l].replicas[g].raft.metrics().borrow().current_term).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_go_quiet_wake_on_writes_and_fail_over() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.to_string())).collect();
    let dir = |i: usize| tmp.path().join(format!("n{}", i + 1));
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(start(i as u64 + 1, dir(i), *a, &voters).await);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let lead = leaders(&all, Duration::from_secs(20)).await;
    for (g, l) in lead.iter().enumerate() {
        assert_eq!(write(&all[*l].replicas[g], "first").await, 0);
    }

    // idle: quiet everywhere, then not one Raft request, only beats
    wait_all_quiet(&all).await;
    let before: Vec<(u64, u64, u64)> = all
        .iter()
        .map(|n| (n.counts.appends.load(Ordering::Relaxed), n.counts.votes.load(Ordering::Relaxed), n.counts.beats.load(Ordering::Relaxed)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (n, (a, v, b)) in all.iter().zip(before) {
        assert_eq!(n.counts.appends.load(Ordering::Relaxed), a, "node {} received appends while every group was quiet", n.id);
        assert_eq!(n.counts.votes.load(Ordering::Relaxed), v, "node {} received votes while every group was quiet", n.id);
        assert!(n.counts.beats.load(Ordering::Relaxed) > b + 10, "node {} stopped receiving beats", n.id);
    }

    // a write wakes its group, commits, and the group goes quiet again
    let terms_before = terms(&all, &lead);
    for (g, l) in lead.iter().enumerate() {
        assert_eq!(write(&all[*l].replicas[g], "second").await, 1);
    }
    wait_all_quiet(&all).await;
    assert_eq!(terms(&all, &lead), terms_before, "quiescing and waking cost no election");

    // leadership transfer (preferred leader election): one election, nothing lost
    let mut lead = lead;
    for g in [0usize, 1] {
        let from = lead[g];
        let to = (from + 1) % 3;
        let term = all[from].replicas[g].raft.metrics().borrow().current_term;
        all[from].replicas[g].transfer_leadership(all[to].id).await.unwrap();
        let now = leaders(&all, Duration::from_secs(5)).await;
        assert_eq!(now[g], to, "group {g} led by the transfer's target");
        assert_eq!(all[to].replicas[g].raft.metrics().borrow().current_term, term + 1, "one election");
        assert_eq!(write(&all[to].replicas[g], "third").await, 2);
        lead[g] = to;
    }
    let terms_before = terms(&all, &lead);
    wait_all_quiet(&all).await;
    drop(all);

    // a broker restarts: the groups it does not lead keep their leader and term
    let restarted = 2usize;
    let kept: Vec<usize> = (0..GROUPS as usize).filter(|g| lead[*g] != restarted).collect();
    let n = nodes.remove(restarted);
    n.kill().await;
    nodes.insert(restarted, start(restarted as u64 + 1, dir(restarted), addrs[restarted], &voters).await);
    let all: Vec<&Node> = nodes.iter().collect();
    tokio::time::sleep(Duration::from_secs(5)).await; // beyond openraft's election timers (3-4 s)
    for g in &kept {
        let r = &all[lead[*g]].replicas[*g];
        assert!(r.is_leader(), "group {g} lost its leader when a follower restarted");
        assert_eq!(r.raft.metrics().borrow().current_term, terms_before[*g], "group {g} held an election when a follower restarted");
    }
    let lead = leaders(&all, Duration::from_secs(20)).await;
    wait_all_quiet(&all).await;
    drop(all);

    // the broker leading the most groups dies: the survivors take over every group
    let victim = (0..3).max_by_key(|i| lead.iter().filter(|l| *l == i).count()).unwrap();
    let led_by_victim = lead.iter().filter(|l| **l == victim).count();
    assert!(led_by_victim > 0);
    let dead = nodes.remove(victim);
    dead.kill().await;
    let killed_at = Instant::now();
    let survivors: Vec<&Node> = nodes.iter().collect();
    let new_lead = leaders(&survivors, Duration::from_secs(15)).await;
    let failover = killed_at.elapsed();
    eprintln!("{led_by_victim} quiet groups failed over in {failover:?}");
    for (g, l) in new_lead.iter().enumerate() {
        write(&survivors[*l].replicas[g], "after").await;
    }
}
