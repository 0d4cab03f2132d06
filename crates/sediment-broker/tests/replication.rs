//! Partition replication on real sockets: three replicas of one partition (three data dirs,
//! three peer transports on loopback), the segment log as the Raft log.
//!
//! * openraft's storage suite against the segment-log Raft storage;
//! * acks=all proposals commit on a majority and every replica ends with byte-identical
//!   batches at identical offsets, the term as the leader epoch;
//! * the leader is killed mid-stream: a new one is elected, keeps taking proposals, and the
//!   old one comes back from its disk, truncates any uncommitted suffix and catches up;
//! * idempotent retries become no-op entries answered with the original offsets;
//! * retention on the leader moves the Raft log's start; a follower that was down meanwhile
//!   installs the snapshot there (its log restarts at the leader's log start) and catches up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use sediment_broker::partition::{FsyncPolicy, Partition};
use sediment_broker::replica::{DataTc, Outcome, Proposals, Replica, ReplicaLog, ReplicaSm, group_id};
use sediment_log::LogConfig;
use sediment_protocol::batch::{BatchIter, compute_crc, testing::batch_from_values};
use sediment_raft::network::Registry;
use sediment_raft::transport::{self, Peers};
use sediment_raft::{QuiesceConfig, Quiescer};
use tokio::sync::watch;

struct SuiteBuilder;

impl StoreBuilder<DataTc, ReplicaLog, ReplicaSm, tempfile::TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, ReplicaLog, ReplicaSm), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open_replicated("suite", 0, dir.path().join("p"), LogConfig::default(), FsyncPolicy::Always).unwrap();
        let log = ReplicaLog::new(p.clone(), Arc::new(Proposals::default()));
        let sm = ReplicaSm::open(p);
        Ok((dir, log, sm))
    }
}

#[test]
#[allow(clippy::result_large_err)] // openraft's own error type
fn openraft_storage_suite_on_the_segment_log() -> Result<(), StorageError<u64>> {
    Suite::<DataTc, ReplicaLog, ReplicaSm, SuiteBuilder, tempfile::TempDir>::test_all(SuiteBuilder)
}

struct Node {
    id: u64,
    dir: PathBuf,
    addr: std::net::SocketAddr,
    part: Option<Arc<Partition>>,
    replica: Option<Arc<Replica>>,
    stop: Option<watch::Sender<bool>>,
    /// Liveness beats: failover as the broker does it (see `sediment_raft::quiesce`).
    quiescer: Option<Arc<Quiescer<DataTc>>>,
}

const TOPIC: &str = "orders";

async fn start(id: u64, dir: PathBuf, addr: std::net::SocketAddr, voters: &BTreeMap<u64, String>) -> Node {
    start_with(id, dir, addr, voters, LogConfig::default()).await
}

async fn start_with(id: u64, dir: PathBuf, addr: std::net::SocketAddr, voters: &BTreeMap<u64, String>, config: LogConfig) -> Node {
    let listener = transport::testing::bind_again(addr).await;
    let registry = Registry::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let part = Partition::open_replicated(TOPIC, 0, dir.join("orders-0"), config, FsyncPolicy::Always).unwrap();
    let group = group_id(&uuid::Uuid::from_u128(42), 0);
    let peers = Peers::new();
    let quiescer = Quiescer::start(id, voters, peers.clone(), &registry, QuiesceConfig::default());
    let replica = Replica::start(part.clone(), id, group, voters, None, peers, &registry, Some(&quiescer), None).await.unwrap();
    tokio::spawn(transport::serve_until(listener, registry, stop_rx));
    Node { id, dir, addr, part: Some(part), replica: Some(replica), stop: Some(stop_tx), quiescer: Some(quiescer) }
}

impl Node {
    fn r(&self) -> &Arc<Replica> {
        self.replica.as_ref().unwrap()
    }

    fn p(&self) -> &Arc<Partition> {
        self.part.as_ref().unwrap()
    }

    /// The node goes away: the transport closes and Raft stops (what it had written stays, as
    /// after a process kill; power loss, which takes back unsynced writes, is what
    /// `replication_sim.rs` and the e2e power-loss suite simulate).
    async fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(r) = self.replica.take() {
            r.shutdown().await;
        }
        self.quiescer = None;
        self.part = None;
    }
}

fn free_addr() -> std::net::SocketAddr {
    sediment_raft::transport::testing::listen_addr()
}

async fn leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = nodes.iter().position(|n| n.replica.is_some() && n.r().is_leader()) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn values(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
}

/// Proposes a 3-record batch on the leader and waits for its commit; returns its base offset.
async fn produce_all(node: &Node, tag: &str) -> Result<i64, String> {
    let batch = Bytes::from(batch_from_values(&values(tag, 3), 1_000));
    let mut p = node.r().propose(batch).await.map_err(|e| e.to_string())?;
    let base = match p.appended().await.map_err(|e| e.to_string())? {
        Outcome::Appended(info) => info.base_offset,
        other => return Err(format!("{other:?}")),
    };
    p.committed().await.map_err(|e| e.to_string())?;
    Ok(base)
}

/// Every batch of the replica's log up to its high watermark.
fn committed_batches(p: &Partition) -> Vec<(i64, i32, Vec<u8>)> {
    let hw = p.high_watermark();
    let mut out = Vec::new();
    let mut off = p.log_start_offset();
    while off < hw {
        let data = p.read(off, 1 << 20, true).unwrap();
        if data.is_empty() {
            break;
        }
        for (h, b) in BatchIter::new(&data) {
            out.push((h.base_offset, h.partition_leader_epoch, b.to_vec()));
            off = h.next_offset();
        }
    }
    out
}

async fn wait_hw(nodes: &[Node], hw: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        while n.p().high_watermark() < hw {
            assert!(Instant::now() < deadline, "node {} stuck at hw {} < {hw}", n.id, n.p().high_watermark());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_commit_fail_over_and_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().map(|a| a.to_string())).collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(start(i as u64 + 1, tmp.path().join(format!("b{}", i + 1)), *a, &voters).await);
    }
    let li = leader(&nodes).await;
    // followers refuse proposals
    let fi = (li + 1) % 3;
    assert!(nodes[fi].r().propose(Bytes::from(batch_from_values(&values("x", 1), 0))).await.is_err());

    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(produce_all(&nodes[li], &format!("a{i}")).await.unwrap());
    }
    assert_eq!(acked, (0..20).map(|i| i * 3).collect::<Vec<i64>>(), "offsets are dense: no Raft entry takes an offset");
    let term1 = nodes[li].p().leader_epoch();
    wait_hw(&nodes, 60).await;

    // kill the leader; the survivors elect a new one (higher epoch) and keep committing
    let old = nodes[li].id;
    let (dir, addr) = (nodes[li].dir.clone(), nodes[li].addr);
    nodes[li].kill().await;
    let started = Instant::now();
    let nl = leader(&nodes).await;
    eprintln!("partition failover took {:?}", started.elapsed());
    assert_ne!(nodes[nl].id, old);
    for i in 0..20 {
        let mut tries = 0;
        loop {
            match produce_all(&nodes[nl], &format!("b{i}")).await {
                Ok(o) => {
                    acked.push(o);
                    break;
                }
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("retrying after: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(nodes[nl].p().leader_epoch() > term1, "the leader epoch is the Raft term and grows with elections");

    // the old leader returns from its disk and catches up
    nodes[li] = start(old, dir, addr, &voters).await;
    let hw = nodes[nl].p().high_watermark();
    assert_eq!(hw, 120);
    wait_hw(&nodes, hw).await;
    let reference = committed_batches(nodes[nl].p());
    assert_eq!(reference.len(), 40);
    let mut expected_offset = 0;
    for (base, _, b) in &reference {
        assert_eq!(*base, expected_offset, "gap or overlap");
        let n = BatchIter::new(b).next().unwrap().0.records_count as i64;
        expected_offset += n;
    }
    for n in &nodes {
        assert_eq!(committed_batches(n.p()), reference, "replica {} differs from the leader", n.id);
    }
    // OffsetForLeaderEpoch: the first term's records end where the new leader's start, and
    // every replica (the restarted old leader too) answers the same
    let term2 = nodes[nl].p().leader_epoch();
    assert_eq!(nodes[nl].p().end_offset_for_epoch(term1), (term1, 60));
    assert_eq!(nodes[nl].p().end_offset_for_epoch(term2), (term2, 120));
    assert_eq!(nodes[nl].p().end_offset_for_epoch(term2 + 1), (-1, -1));
    for n in &nodes {
        assert_eq!(n.p().end_offset_for_epoch(term1), (term1, 60), "replica {}", n.id);
    }
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}

/// An idempotent batch with producer id `pid`, epoch 0 and base sequence `seq`.
fn idempotent(values: &[Vec<u8>], pid: i64, seq: i32) -> Bytes {
    let mut b = batch_from_values(values, 5);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_become_no_ops_with_the_original_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().map(|a| a.to_string())).collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(start(i as u64 + 1, tmp.path().join(format!("b{}", i + 1)), *a, &voters).await);
    }
    let li = leader(&nodes).await;
    let r = nodes[li].r().clone();
    let first = idempotent(&values("i", 2), 7, 0);
    let mut p = r.propose(first.clone()).await.unwrap();
    let Outcome::Appended(info) = p.appended().await.unwrap() else { panic!() };
    p.committed().await.unwrap();
    // the retry of the same batch: answered with the original offsets, not appended again
    let mut p = r.propose(first).await.unwrap();
    match p.appended().await.unwrap() {
        Outcome::Duplicate(m) => assert_eq!((m.base_offset, m.last_offset), (info.base_offset, info.last_offset)),
        other => panic!("{other:?}"),
    }
    p.committed().await.unwrap();
    // a sequence gap is refused
    let mut p = r.propose(idempotent(&values("j", 1), 7, 5)).await.unwrap();
    assert!(matches!(p.appended().await.unwrap(), Outcome::Refused(..)));
    let mut p = r.propose(idempotent(&values("k", 1), 7, 2)).await.unwrap();
    let Outcome::Appended(next) = p.appended().await.unwrap() else { panic!() };
    assert_eq!(next.base_offset, 2);
    p.committed().await.unwrap();
    wait_hw(&nodes, 3).await;
    for n in &nodes {
        let b = committed_batches(n.p());
        assert_eq!(b.len(), 2, "replica {} holds {} batches", n.id, b.len());
    }
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_retention_restarts_at_its_log_start() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().map(|a| a.to_string())).collect();
    // small segments and a byte limit, so that retention deletes most of the log
    let config = LogConfig { segment_bytes: 4096, retention_bytes: 16 * 1024, ..LogConfig::default() };
    let dir = |i: usize| tmp.path().join(format!("r{}", i + 1));
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(start_with(i as u64 + 1, dir(i), *a, &voters, config).await);
    }
    let li = leader(&nodes).await;
    for i in 0..10 {
        produce_all(&nodes[li], &format!("early{i}")).await.unwrap();
    }
    wait_hw(&nodes, 30).await;

    // a follower goes away; the others write on and apply retention
    let fi = (li + 1) % 3;
    let (fid, faddr) = (nodes[fi].id, nodes[fi].addr);
    nodes[fi].kill().await;
    for i in 0..400 {
        produce_all(&nodes[li], &format!("later-record-with-some-padding-{i:04}")).await.unwrap();
    }
    let hw = nodes[li].p().high_watermark();
    assert_eq!(hw, 30 + 400 * 3);
    wait_hw(&nodes, hw).await;
    // a retention pass, as the broker runs it: nothing goes before the Raft log lets go of it
    let now = sediment_log::clock::now_ms();
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        let out = n.p().apply_local_retention(now).unwrap();
        assert_eq!(out.segments_deleted, 0, "node {} deleted segments the Raft log still holds", n.id);
        let target = n.p().retention_wanted(now).expect("retention wants to delete");
        assert!(target > 30);
        n.r().after_retention(n.p(), target).await;
    }
    // openraft purges once no replication in flight (to the dead follower) reads the entries,
    // and the purge deletes the segments
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        while n.p().log_start_offset() <= 30 {
            assert!(Instant::now() < deadline, "node {} never deleted its old segments", n.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let start = nodes[li].p().log_start_offset();
    // openraft reports the purge a moment after the storage carried it out (and deleted the
    // segments)
    let mut m = nodes[li].r().raft.metrics();
    let purged = tokio::time::timeout(Duration::from_secs(10), m.wait_for(|m| m.purged.is_some())).await.map(|r| r.is_ok());
    drop(m);
    assert_eq!(purged, Ok(true), "the leader's Raft log start moved");

    // the follower returns: it cannot get the deleted entries, so it restarts at the leader's
    // log start from the snapshot, then catches up entry by entry
    nodes[fi] = start_with(fid, dir(fi), faddr, &voters, config).await;
    wait_hw(&nodes, hw).await;
    let leader_now = leader(&nodes).await;
    assert_eq!(
        nodes[fi].p().log_start_offset(),
        start,
        "the follower's log restarts at the leader's log start (leader {} then, {} now, whose log starts at {}; follower snapshot {:?}, leader snapshot {:?})",
        nodes[li].id,
        nodes[leader_now].id,
        nodes[leader_now].p().log_start_offset(),
        nodes[fi].r().raft.metrics().borrow().snapshot,
        nodes[li].r().raft.metrics().borrow().snapshot,
    );
    assert_eq!(committed_batches(nodes[fi].p()), committed_batches(nodes[li].p()));
    // and it takes part in new commits
    let next = produce_all(&nodes[li], "after").await.unwrap();
    assert_eq!(next, hw);
    wait_hw(&nodes, hw + 3).await;
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}

/// DeleteRecords on a replicated partition: the leader commits the new log start as a Raft
/// entry; every replica raises its log start when it applies it (a follower that was away
/// included, after catching up), keeps it across a restart, and retention then deletes the
/// segments wholly below it through the snapshot-and-purge path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_records_raises_the_log_start_on_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().map(|a| a.to_string())).collect();
    // no time or size retention: only the log start offset makes segments due
    let config = LogConfig { segment_bytes: 4096, retention_ms: -1, retention_bytes: -1, ..LogConfig::default() };
    let dir = |i: usize| tmp.path().join(format!("r{}", i + 1));
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        nodes.push(start_with(i as u64 + 1, dir(i), *a, &voters, config).await);
    }
    let li = leader(&nodes).await;
    let fi = (li + 1) % 3;
    let (fid, faddr) = (nodes[fi].id, nodes[fi].addr);
    nodes[fi].kill().await;
    for i in 0..200 {
        produce_all(&nodes[li], &format!("record-with-some-padding-{i:04}")).await.unwrap();
    }
    let hw = nodes[li].p().high_watermark();
    assert_eq!(hw, 600);
    wait_hw(&nodes, hw).await;
    let segments = |n: &Node| n.p().with_log(|l| l.segments().len());
    assert!(segments(&nodes[li]) > 3, "the test needs several segments");

    nodes[li].r().raise_log_start(301).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        while n.p().log_start_offset() != 301 {
            assert!(Instant::now() < deadline, "node {} never applied the new log start", n.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(n.p().with_log(|l| l.read(300, 1024, hw, true)).is_err(), "node {} still serves offset 300", n.id);
    }
    // nothing was deleted yet: the Raft log still names those segments
    assert_eq!(nodes[li].p().with_log(|l| l.segments()[0].base_offset), 0);

    // a retention pass, as the broker runs it, deletes the segments wholly below the log start
    let now = sediment_log::clock::now_ms();
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        let target = n.p().retention_wanted(now).expect("segments below the log start are due");
        assert!(target > 0 && target <= 301, "node {}: retention target {target}", n.id);
        n.r().after_retention(n.p(), target).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in nodes.iter().filter(|n| n.part.is_some()) {
        while n.p().with_log(|l| l.segments()[0].base_offset) == 0 {
            assert!(Instant::now() < deadline, "node {} never deleted the segments below its log start", n.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.p().log_start_offset(), 301, "node {}: retention must not lower the log start", n.id);
    }

    // the follower that was away catches up (from the snapshot) and applies the raise too
    nodes[fi] = start_with(fid, dir(fi), faddr, &voters, config).await;
    wait_hw(&nodes, hw).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes[fi].p().log_start_offset() != 301 {
        assert!(Instant::now() < deadline, "the returning follower's log start is {}", nodes[fi].p().log_start_offset());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and the leader keeps it across a restart
    let (lid, laddr) = (nodes[li].id, nodes[li].addr);
    nodes[li].kill().await;
    nodes[li] = start_with(lid, dir(li), laddr, &voters, config).await;
    assert_eq!(nodes[li].p().log_start_offset(), 301);
    let l2 = leader(&nodes).await;
    assert_eq!(produce_all(&nodes[l2], "after").await.unwrap(), hw);
    wait_hw(&nodes, hw + 3).await;
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}
