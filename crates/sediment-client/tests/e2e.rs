//! End to end against a real `sediment serve` process: topic create, produce
//! 10k records with keys and headers to 3 partitions (CLI and library),
//! consume them all back and compare, describe configs, alter, delete; and a
//! short `sediment bench`.
//!
//! The broker binary is `$SEDIMENT_BIN`, else `$CARGO_TARGET_DIR/debug/sediment`,
//! else `target/debug/sediment` in the workspace. Build it first with
//! `cargo build -p sediment`; the test fails with that hint if it is missing.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sediment_client::Client;
use sediment_client::admin::{Admin, ConfigSource};
use sediment_client::consumer::{Consumer, ConsumerConfig, StartOffset};
use sediment_client::partitioner::key_partition;
use sediment_client::producer::{Producer, ProducerConfig, ProducerRecord};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn sediment_bin() -> PathBuf {
    let path = match std::env::var_os("SEDIMENT_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            target.join("debug/sediment")
        }
    };
    assert!(path.is_file(), "sediment binary not found at {}: run `cargo build -p sediment` first or set SEDIMENT_BIN", path.display());
    path
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running broker, killed on drop.
struct Broker {
    child: std::process::Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    async fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let (kafka, admin, raft) = (free_port(), free_port(), free_port());
        let addr = format!("127.0.0.1:{kafka}");
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = std::process::Command::new(sediment_bin())
            .current_dir(dir.path())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &addr])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--raft-listen", &format!("127.0.0.1:{raft}")])
            .env_remove("SEDIMENT_BOOTSTRAP")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sediment serve");
        let mut broker = Broker { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("broker exited with {status} before it was ready:\n{}", broker.log());
            }
            if Client::connect(&broker.addr).await.is_ok() {
                return broker;
            }
            assert!(Instant::now() < deadline, "broker not ready after 60 s:\n{}", broker.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Runs `sediment ARGS --bootstrap ADDR` with `stdin`; returns (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str], stdin: Option<Vec<u8>>) -> (i32, String, String) {
        let mut child = Command::new(sediment_bin())
            .args(args)
            .args(["--bootstrap", &self.addr])
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(&input).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.expect("cli timed out").unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    async fn cli_ok(&self, args: &[&str], stdin: Option<Vec<u8>>) -> String {
        let (code, out, err) = self.cli(args, stdin).await;
        assert_eq!(code, 0, "sediment {args:?} failed: {err}\nbroker log:\n{}", self.log());
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_produce_consume_configs_delete() {
    let broker = Broker::start().await;
    const N: usize = 10_000;

    // Usage errors exit 2 before connecting.
    let (code, _, _) = broker.cli(&["produce"], None).await;
    assert_eq!(code, 2);

    let out = broker.cli_ok(&["topic", "create", "e2e", "--partitions", "3", "--config", "retention.ms=3600000"], None).await;
    assert!(out.contains("created topic \"e2e\""), "{out}");
    let (code, _, err) = broker.cli(&["topic", "create", "e2e", "--partitions", "3"], None).await;
    assert_eq!((code, err.trim()), (1, "error: topic \"e2e\" already exists"));
    let listed = broker.cli_ok(&["topic", "list"], None).await;
    assert!(listed.lines().any(|l| l == "e2e"), "{listed}");

    // CLI produce: keys before ':', two headers on every record.
    let input: String = (0..N).map(|i| format!("key-{}:value-{i}\n", i % 101)).collect();
    let (code, _, err) =
        broker.cli(&["produce", "--topic", "e2e", "--key-separator", ":", "--header", "src=cli", "--header", "run=1"], Some(input.into_bytes())).await;
    assert_eq!(code, 0, "produce failed: {err}\n{}", broker.log());
    assert!(err.contains(&format!("produced {N} records")), "{err}");

    // CLI consume everything back.
    let out = broker
        .cli_ok(
            &["consume", "--topic", "e2e", "--from-beginning", "--max-messages", &N.to_string(), "--timeout-ms", "15000", "--format", "%p|%o|%k|%v|%h"],
            None,
        )
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), N, "consumed {} of {N}", lines.len());
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut values = Vec::with_capacity(N);
    for line in &lines {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 5, "{line}");
        let (p, o, k, v, h) = (f[0].parse::<i32>().unwrap(), f[1].parse::<i64>().unwrap(), f[2], f[3], f[4]);
        let i: usize = v.strip_prefix("value-").unwrap().parse().unwrap();
        assert_eq!(k, format!("key-{}", i % 101));
        assert_eq!(p, key_partition(k.as_bytes(), 3), "key {k} not where the Java client would put it");
        assert_eq!(h, "src=cli,run=1");
        per_partition.entry(p).or_default().push(o);
        values.push(i);
    }
    values.sort_unstable();
    assert_eq!(values, (0..N).collect::<Vec<_>>());
    for (p, offsets) in &per_partition {
        assert_eq!(*offsets, (0..offsets.len() as i64).collect::<Vec<_>>(), "partition {p} offsets");
    }

    // Library produce: per-record headers and explicit timestamps, then read back exactly.
    let client = Client::connect(&broker.addr).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut sent = HashMap::new();
    let mut futures = Vec::new();
    for i in 0..N {
        let r = ProducerRecord::new("e2e", format!("lib-{i}"))
            .with_key(format!("k{i}"))
            .with_header("i", i.to_string())
            .with_header("parity", if i % 2 == 0 { "even" } else { "odd" });
        let r = ProducerRecord { timestamp: Some(1_700_000_000_000 + i as i64), ..r };
        futures.push((i, producer.send(r).await.unwrap()));
    }
    producer.close().await.unwrap();
    for (i, f) in futures {
        let d = f.await.unwrap();
        assert_eq!(d.partition, key_partition(format!("k{i}").as_bytes(), 3));
        sent.insert((d.partition, d.offset), i);
    }
    let mut consumer = Consumer::new(client.clone(), "e2e", None, StartOffset::Earliest, ConsumerConfig::default()).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 * N {
        assert!(Instant::now() < deadline, "library consumer got {} of {}", got.len(), 2 * N);
        consumer.poll_into(&mut got).await.unwrap();
    }
    assert_eq!(got.len(), 2 * N);
    let mut matched = 0;
    for r in &got {
        let Some(&i) = sent.get(&(r.partition, r.offset)) else { continue };
        matched += 1;
        assert_eq!(r.value.as_deref(), Some(format!("lib-{i}").as_bytes()));
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
        assert_eq!(r.headers.get(&b"i"[..]), Some(&Some(Bytes::from(i.to_string()))));
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        assert_eq!(r.headers.get(&b"parity"[..]), Some(&Some(Bytes::from(parity))));
    }
    assert_eq!(matched, N);

    // Describe: partitions with offsets, and every config with its source.
    let out = broker.cli_ok(&["topic", "describe", "e2e"], None).await;
    assert!(out.contains("partitions: 3"), "{out}");
    let admin = Admin::new(client.clone());
    let d = admin.describe_topic("e2e").await.unwrap();
    assert_eq!(d.partitions.iter().filter_map(|p| p.high_watermark).sum::<i64>(), 2 * N as i64);
    let configs = admin.describe_configs("e2e").await.unwrap();
    let get =
        |cs: &[sediment_client::admin::ConfigEntry], k: &str| cs.iter().find(|c| c.name == k).cloned().unwrap_or_else(|| panic!("no config {k} in {cs:?}"));
    let retention = get(&configs, "retention.ms");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(!retention.is_default);
    assert!(get(&configs, "segment.bytes").is_default, "segment.bytes should be a default");
    assert!(out.contains("retention.ms") && out.contains("3600000") && out.contains("DYNAMIC_TOPIC_CONFIG"), "{out}");

    // Alter: set, then delete back to the default.
    broker.cli_ok(&["topic", "alter", "e2e", "--set", "retention.ms=7200000", "--set", "segment.ms=600000"], None).await;
    let configs = admin.describe_configs("e2e").await.unwrap();
    assert_eq!(get(&configs, "retention.ms").value.as_deref(), Some("7200000"));
    assert_eq!(get(&configs, "segment.ms").value.as_deref(), Some("600000"));
    broker.cli_ok(&["topic", "alter", "e2e", "--delete", "retention.ms"], None).await;
    let configs = admin.describe_configs("e2e").await.unwrap();
    assert!(get(&configs, "retention.ms").is_default);
    assert_eq!(get(&configs, "segment.ms").value.as_deref(), Some("600000"));

    // Delete.
    let out = broker.cli_ok(&["topic", "delete", "e2e"], None).await;
    assert!(out.contains("deleted topic \"e2e\""));
    let listed = broker.cli_ok(&["topic", "list"], None).await;
    assert!(!listed.lines().any(|l| l == "e2e"), "{listed}");
    let (code, _, err) = broker.cli(&["topic", "describe", "e2e"], None).await;
    assert_eq!((code, err.trim()), (1, "error: topic \"e2e\" does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_json() {
    let broker = Broker::start().await;
    let out = broker.cli_ok(&["bench", "--topic", "b", "--partitions", "2", "--duration", "1", "--record-size", "200", "--rate", "5000", "--json"], None).await;
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let produced = j["produced_records"].as_u64().unwrap();
    assert!((3_000..=6_000).contains(&produced), "{j}");
    assert_eq!(j["consume_records_per_s"].as_f64().map(|r| r > 0.0), Some(true), "{j}");
    assert!(j["latency_us"]["p50"].as_u64().unwrap() > 0);
    assert!(j["latency_us"]["p50"].as_u64() <= j["latency_us"]["p99"].as_u64());
    assert_eq!(j["partitions"], 2);
    assert_eq!(j["acks"], "all");
}
