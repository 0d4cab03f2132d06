//! The metadata group for real: three controllers on loopback TCP, each with its own peer
//! transport and data dir. Writes from any broker, leader loss, restart from disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sediment_raft::cluster::{BrokerRecord, MetaCommand, MetaResponse};
use sediment_raft::network::Registry;
use sediment_raft::transport::{self, Peers};
use sediment_raft::{ClusterState, Controller};
use tokio::sync::watch;

struct Node {
    id: u64,
    dir: PathBuf,
    addr: std::net::SocketAddr,
    controller: Option<Controller>,
    stop: Option<watch::Sender<bool>>,
}

async fn start_node(id: u64, dir: PathBuf, addr: std::net::SocketAddr, voters: &BTreeMap<u64, String>) -> Node {
    let listener = transport::testing::bind_again(addr).await;
    let registry = Registry::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let controller = Controller::start(id, &dir, voters, Peers::new(), &registry, false).await.unwrap();
    tokio::spawn(transport::serve_until(listener, registry, stop_rx));
    Node { id, dir, addr, controller: Some(controller), stop: Some(stop_tx) }
}

impl Node {
    fn c(&self) -> &Controller {
        self.controller.as_ref().unwrap()
    }

    async fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(c) = self.controller.take() {
            c.shutdown().await;
        }
    }
}

fn free_addr() -> std::net::SocketAddr {
    sediment_raft::transport::testing::listen_addr()
}

async fn cluster(dir: &std::path::Path) -> (Vec<Node>, BTreeMap<u64, String>) {
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().map(|a| a.to_string())).collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        nodes.push(start_node(id, dir.join(format!("n{id}")), *a, &voters).await);
    }
    (nodes, voters)
}

async fn wait_state(nodes: &[Node], what: &str, f: impl Fn(&ClusterState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if nodes.iter().filter(|n| n.controller.is_some()).all(|n| f(&n.c().state())) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_leader(nodes: &[Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live: Vec<_> = nodes.iter().filter(|n| n.controller.is_some()).collect();
        let leaders: Vec<_> = live.iter().map(|n| n.c().leader()).collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
            && live.iter().any(|n| n.id == *l)
        {
            return *l;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn create(name: &str, partitions: i32, rf: i16) -> MetaCommand {
    MetaCommand::CreateTopic {
        name: name.into(),
        id: sediment_log::random::uuid_v4(),
        partitions,
        replication_factor: rf,
        config: BTreeMap::new(),
        placement_start: 0,
        created_ms: 0,
    }
}

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_replicate_fail_over_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, voters) = cluster(tmp.path()).await;
    let leader = wait_leader(&nodes).await;

    // every broker registers through whichever node it is (followers forward)
    for n in &nodes {
        let rec = BrokerRecord { id: n.id as i32, host: "127.0.0.1".into(), port: 9000 + n.id as u16, raft_addr: n.addr.to_string(), rack: None };
        assert_eq!(n.c().write(MetaCommand::RegisterBroker(rec), T).await.unwrap(), MetaResponse::Done);
        // read-your-writes on the writing broker
        assert!(n.c().state().brokers.contains_key(&(n.id as i32)));
    }
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let r = follower.c().write(create("orders", 6, 3), T).await.unwrap();
    let MetaResponse::TopicCreated { assignments, .. } = r else { panic!("{r:?}") };
    assert_eq!(assignments.len(), 6);
    assert!(matches!(follower.c().write(create("orders", 1, 1), T).await.unwrap(), MetaResponse::Refused(_)));
    wait_state(&nodes, "topic on every broker", |s| s.topics.contains_key("orders") && s.brokers.len() == 3).await;

    // kill the leader: the other two elect a new one and keep taking writes
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[li].kill().await;
    let started = Instant::now();
    let new_leader = wait_leader(&nodes).await;
    assert_ne!(new_leader, leader);
    let failover = started.elapsed();
    let writer = nodes.iter().find(|n| n.controller.is_some()).unwrap();
    writer.c().write(create("after-failover", 2, 2), T).await.unwrap();
    wait_state(&nodes, "write after failover", |s| s.topics.contains_key("after-failover")).await;
    eprintln!("metadata failover took {failover:?}");

    // the old leader comes back (same dir) and catches up
    let (dir, addr) = (nodes[li].dir.clone(), nodes[li].addr);
    nodes[li] = start_node(leader, dir, addr, &voters).await;
    wait_state(&nodes, "restarted node catches up", |s| s.topics.contains_key("after-failover")).await;

    // whole-cluster restart from disk: state is recovered and writes work again
    let before = nodes[0].c().state();
    for n in nodes.iter_mut() {
        n.kill().await;
    }
    let mut again = Vec::new();
    for n in &nodes {
        again.push(start_node(n.id, n.dir.clone(), n.addr, &voters).await);
    }
    wait_leader(&again).await;
    wait_state(&again, "state recovered after full restart", |s| s.topics == before.topics && s.brokers == before.brokers).await;
    let r = again[2].c().write(MetaCommand::ReserveProducerIds { count: 1000 }, T).await.unwrap();
    assert_eq!(r, MetaResponse::ProducerIds { start: 0 });
    let r = again[0].c().write(MetaCommand::ReserveProducerIds { count: 1000 }, T).await.unwrap();
    assert_eq!(r, MetaResponse::ProducerIds { start: 1000 });
    for n in again.iter_mut() {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, _) = cluster(tmp.path()).await;
    wait_leader(&nodes).await;
    nodes[0].c().write(MetaCommand::SetClusterId { cluster_id: "c".into() }, T).await.unwrap();
    nodes[1].kill().await;
    nodes[2].kill().await;
    let r = nodes[0].c().write(create("lonely", 1, 1), Duration::from_secs(3)).await;
    assert!(r.is_err(), "a single node of three committed a write: {r:?}");
    assert!(!nodes[0].c().state().topics.contains_key("lonely"));
    nodes[0].kill().await;
}

/// Snapshots: past the snapshot threshold the log is purged, and a node that was down for
/// all of it catches up from the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_from_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, voters) = cluster(tmp.path()).await;
    wait_leader(&nodes).await;
    let (dir, addr) = (nodes[2].dir.clone(), nodes[2].addr);
    nodes[2].kill().await;
    let c = &nodes[0];
    // the topic creates need a broker to place replicas on
    c.c().write(MetaCommand::RegisterBroker(BrokerRecord { id: 1, host: "h".into(), port: 1, raft_addr: "r".into(), rack: None }), T).await.unwrap();
    let writers = (0..8).map(|w| async move {
        for i in 0..160 {
            c.c().write(create(&format!("t{w}-{i}"), 1, 1), T).await.unwrap();
        }
    });
    futures::future::join_all(writers).await;
    let m = c.c().raft.metrics().borrow().clone();
    assert!(m.snapshot.is_some(), "no snapshot after {:?} entries", m.last_log_index);
    let n3 = start_node(3, dir, addr, &voters).await;
    let want = c.c().state();
    let deadline = Instant::now() + Duration::from_secs(30);
    while n3.c().state().topics != want.topics {
        assert!(Instant::now() < deadline, "node 3 did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut n3 = n3;
    n3.kill().await;
    for n in nodes.iter_mut() {
        n.kill().await;
    }
}
