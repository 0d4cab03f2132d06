//! The client against an in-memory mock broker (tests/common): version
//! negotiation, admin, produce/consume round trips with every codec, the
//! partitioner's placement of keys, acks=0, and the load generator.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Caps, MockBroker};
use kafka_protocol::messages::ApiKey;
use sediment_client::admin::{Admin, AlterOp, ConfigSource, NewTopic};
use sediment_client::bench::{self, BenchConfig, BenchMode};
use sediment_client::consumer::{Consumer, ConsumerConfig, StartOffset};
use sediment_client::partitioner::key_partition;
use sediment_client::producer::{Acks, Codec, Producer, ProducerConfig, ProducerRecord};
use sediment_client::{Client, Error};

async fn consume_all(client: std::sync::Arc<Client>, topic: &str, want: usize) -> Vec<sediment_client::consumer::ConsumedRecord> {
    let mut consumer = Consumer::new(client, topic, None, StartOffset::Earliest, ConsumerConfig::default()).await.unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < want {
        assert!(std::time::Instant::now() < deadline, "only {} of {want} records consumed", out.len());
        consumer.poll_into(&mut out).await.unwrap();
    }
    out
}

#[tokio::test]
async fn negotiates_highest_common_versions() {
    let broker = MockBroker::start(Caps::default()).await;
    let client = Client::connect(&broker.addr).await.unwrap();
    let conn = client.bootstrap_connection().await.unwrap();
    assert_eq!(conn.version(ApiKey::Produce).unwrap(), 13);
    assert_eq!(conn.version(ApiKey::Fetch).unwrap(), 17);
    assert_eq!(conn.version(ApiKey::Metadata).unwrap(), 12);
    assert!(!conn.supports(ApiKey::JoinGroup));

    let broker = MockBroker::start(Caps { produce: 9, fetch: 12, metadata: 9 }).await;
    let client = Client::connect(&broker.addr).await.unwrap();
    let conn = client.bootstrap_connection().await.unwrap();
    assert_eq!(conn.version(ApiKey::Produce).unwrap(), 9);
    assert_eq!(conn.version(ApiKey::Fetch).unwrap(), 12);
}

#[tokio::test]
async fn admin_round_trip() {
    let broker = MockBroker::start(Caps::default()).await;
    let admin = Admin::new(Client::connect(&broker.addr).await.unwrap());
    let topic = NewTopic { name: "orders".into(), partitions: 3, replication_factor: -1, configs: vec![("retention.ms".into(), "1000".into())] };
    let created = admin.create_topic(&topic, true).await.unwrap();
    assert_eq!(created.partitions, 3);
    assert!(admin.list_topics().await.unwrap().is_empty(), "validate-only created nothing");
    admin.create_topic(&topic, false).await.unwrap();
    let err = admin.create_topic(&topic, false).await.unwrap_err();
    assert_eq!(err.to_string(), "topic \"orders\" already exists");
    let bad = NewTopic { name: "bad".into(), partitions: 0, ..topic.clone() };
    let err = admin.create_topic(&bad, false).await.unwrap_err();
    assert_eq!(err.to_string(), "cannot create topic \"bad\": INVALID_PARTITIONS (error code 37): number of partitions must be positive");

    let listed = admin.list_topics().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].partitions), ("orders", 3));

    let d = admin.describe_topic("orders").await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert!(d.partitions.iter().all(|p| p.leader == 1 && p.high_watermark == Some(0) && p.log_start_offset == Some(0)));

    let configs = admin.describe_configs("orders").await.unwrap();
    let get = |cs: &[sediment_client::admin::ConfigEntry], k: &str| cs.iter().find(|c| c.name == k).cloned().unwrap();
    assert_eq!(get(&configs, "retention.ms").value.as_deref(), Some("1000"));
    assert_eq!(get(&configs, "retention.ms").source, ConfigSource::DynamicTopic);
    assert!(get(&configs, "cleanup.policy").is_default);

    admin.alter_configs("orders", &[AlterOp::Set("cleanup.policy".into(), "compact".into()), AlterOp::Delete("retention.ms".into())], false).await.unwrap();
    let configs = admin.describe_configs("orders").await.unwrap();
    assert_eq!(get(&configs, "cleanup.policy").value.as_deref(), Some("compact"));
    assert!(!get(&configs, "cleanup.policy").is_default);
    assert!(get(&configs, "retention.ms").is_default);

    admin.delete_topic("orders").await.unwrap();
    let err = admin.delete_topic("orders").await.unwrap_err();
    assert_eq!(err.to_string(), "topic \"orders\" does not exist");
    let err = admin.describe_configs("orders").await.unwrap_err();
    assert!(matches!(err, Error::UnknownTopic(_)));
    let err = admin.describe_topic("nope").await.unwrap_err();
    assert_eq!(err.to_string(), "topic \"nope\" does not exist");
}

async fn produce_consume(caps: Caps, codec: Codec) {
    let broker = MockBroker::start(caps).await;
    broker.create("t", 3);
    let client = Client::connect(&broker.addr).await.unwrap();
    let config = ProducerConfig { compression: codec, batch_size: 16 * 1024, linger: Duration::from_millis(2), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config);
    let mut futures = Vec::new();
    for i in 0..10_000u32 {
        let r = ProducerRecord::new("t", format!("value-{i}"))
            .with_key(format!("key-{}", i % 97))
            .with_header("i", i.to_string())
            .with_header("codec", codec.to_string());
        futures.push(producer.send(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut placed: HashMap<(i32, i64), u32> = HashMap::new();
    for (i, f) in futures.into_iter().enumerate() {
        let d = f.await.unwrap();
        let key = format!("key-{}", i % 97);
        assert_eq!(d.partition, key_partition(key.as_bytes(), 3), "key placement like the Java client");
        assert!(placed.insert((d.partition, d.offset), i as u32).is_none(), "unique offsets");
    }
    producer.close().await.unwrap();

    let records = consume_all(client, "t", 10_000).await;
    assert_eq!(records.len(), 10_000);
    for r in &records {
        let i = placed[&(r.partition, r.offset)];
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        assert_eq!(r.key.as_deref(), Some(format!("key-{}", i % 97).as_bytes()));
        assert_eq!(r.headers.get(&b"i"[..]), Some(&Some(Bytes::from(i.to_string()))));
    }
    let st = broker.state.lock().unwrap();
    assert!(st.produce_versions.iter().all(|v| *v == caps.produce.min(13)));
    assert!(st.fetch_versions.iter().all(|v| *v == caps.fetch.min(17)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_every_codec_with_topic_ids() {
    for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        produce_consume(Caps::default(), codec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_with_topic_names() {
    produce_consume(Caps { produce: 12, fetch: 12, metadata: 9 }, Codec::Lz4).await;
}

#[tokio::test]
async fn acks_zero_and_explicit_partitions() {
    let broker = MockBroker::start(Caps::default()).await;
    broker.create("z", 2);
    let client = Client::connect(&broker.addr).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::None, ..ProducerConfig::default() });
    let mut fs = Vec::new();
    for i in 0..100 {
        fs.push(producer.send(ProducerRecord::new("z", format!("{i}")).with_partition(1)).await.unwrap());
    }
    producer.close().await.unwrap();
    for f in fs {
        assert_eq!(f.await.unwrap(), sediment_client::producer::Delivery { partition: 1, offset: -1 });
    }
    let records = consume_all(client, "z", 100).await;
    assert!(records.iter().all(|r| r.partition == 1));
}

#[tokio::test]
async fn failures_are_reported_per_record() {
    let broker = MockBroker::start(Caps::default()).await;
    broker.create("t", 2);
    let client = Client::connect(&broker.addr).await.unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    let missing = producer.send(ProducerRecord::new("missing", "x")).await.unwrap();
    let bad_partition = producer.send(ProducerRecord::new("t", "x").with_partition(5)).await.unwrap();
    let ok = producer.send(ProducerRecord::new("t", "x").with_partition(0)).await.unwrap();
    assert_eq!(missing.await.unwrap_err().to_string(), "topic \"missing\" does not exist");
    assert_eq!(bad_partition.await.unwrap_err().to_string(), "partition 5 of topic \"t\" does not exist");
    assert_eq!(ok.await.unwrap().offset, 0);
    producer.close().await.unwrap();
}

#[tokio::test]
async fn consumer_skips_records_before_its_start_offset() {
    let broker = MockBroker::start(Caps::default()).await;
    broker.create("t", 1);
    let client = Client::connect(&broker.addr).await.unwrap();
    // One batch holding offsets 0..50.
    let producer = Producer::new(client.clone(), ProducerConfig { linger: Duration::from_millis(50), ..Default::default() });
    for i in 0..50 {
        producer.send_tracked(ProducerRecord::new("t", format!("{i}")), 0).await.unwrap();
    }
    producer.close().await.unwrap();
    assert_eq!(broker.state.lock().unwrap().topics["t"].partitions[0].batches.len(), 1);
    let mut c = Consumer::new(client.clone(), "t", Some(&[0]), StartOffset::At(42), ConsumerConfig::default()).await.unwrap();
    let got = c.poll().await.unwrap();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), (42..50).collect::<Vec<_>>());
    assert!(c.caught_up());
    // Latest starts at the end.
    let mut c = Consumer::new(client.clone(), "t", None, StartOffset::Latest, ConsumerConfig { max_wait: Duration::from_millis(10), ..Default::default() })
        .await
        .unwrap();
    assert!(c.poll().await.unwrap().is_empty());
    // Out of range is a readable error.
    let mut c = Consumer::new(client, "t", None, StartOffset::At(500), ConsumerConfig::default()).await.unwrap();
    let err = c.poll().await.unwrap_err().to_string();
    assert!(err.starts_with("offset 500 is out of range for partition 0 of topic \"t\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produces_and_consumes_everything() {
    let broker = MockBroker::start(Caps::default()).await;
    let config = BenchConfig {
        bootstrap: broker.addr.clone(),
        replication_factor: -1,
        topic: "bench".into(),
        partitions: 3,
        producers: 2,
        consumers: 2,
        record_size: 100,
        acks: Acks::All,
        batch_size: 16 * 1024,
        linger: Duration::from_millis(1),
        max_in_flight: 5,
        idempotent: false,
        rate: 20_000,
        duration: Duration::from_millis(500),
        compression: Codec::None,
        mode: BenchMode::Both,
        progress: false,
    };
    let report = bench::run(config.clone()).await.unwrap();
    assert_eq!(report.produce_errors, 0);
    // Rate-limited to 20k/s for 0.5 s: never more than the limit allows (a loaded machine may
    // produce fewer, so the lower bound only checks that the bench produced at all).
    assert!((1..=11_000).contains(&report.produced_records), "{}", report.produced_records);
    assert_eq!(report.consumed_records, report.produced_records);
    assert_eq!(report.consumed_bytes, report.produced_records * 100);
    assert!(report.latency.p50 > 0 && report.latency.p50 <= report.latency.p99);
    let j = report.to_json();
    assert_eq!(j["produced_records"], report.produced_records);

    // Consume-only reads back what is there.
    let report = bench::run(BenchConfig { mode: BenchMode::ConsumeOnly, ..config }).await.unwrap();
    assert!(report.consumed_records >= 1);
}

/// Client-side throughput ceiling against the mock (run in release:
/// `cargo test --release -p sediment-client --test mock_broker -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "throughput measurement, run manually in release mode"]
async fn bench_throughput_against_mock() {
    let broker = MockBroker::start(Caps::default()).await;
    // MOCK_BENCH="PRODUCERS,CONSUMERS,CODEC" runs one case (for profiling).
    let cases = match std::env::var("MOCK_BENCH") {
        Ok(v) => {
            let f: Vec<&str> = v.split(',').collect();
            let codec = match f[2] {
                "lz4" => Codec::Lz4,
                "zstd" => Codec::Zstd,
                _ => Codec::None,
            };
            vec![(f[0].parse().unwrap(), f[1].parse().unwrap(), codec)]
        }
        Err(_) => vec![(1, 1, Codec::None), (2, 0, Codec::None), (1, 0, Codec::Lz4)],
    };
    for (producers, consumers, codec) in cases {
        let config = BenchConfig {
            // MOCK_BENCH_BOOTSTRAP points the measurement at a real broker instead.
            bootstrap: std::env::var("MOCK_BENCH_BOOTSTRAP").unwrap_or_else(|_| broker.addr.clone()),
            topic: format!("bench-{producers}-{consumers}-{codec}"),
            partitions: 3,
            replication_factor: -1,
            producers,
            consumers,
            record_size: 1024,
            acks: Acks::Leader,
            batch_size: 256 * 1024,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            idempotent: false,
            rate: 0,
            duration: Duration::from_secs(3),
            compression: codec,
            mode: if consumers == 0 { BenchMode::ProduceOnly } else { BenchMode::Both },
            progress: false,
        };
        let report = bench::run(config).await.unwrap();
        println!("{}", report.to_json());
    }
}
