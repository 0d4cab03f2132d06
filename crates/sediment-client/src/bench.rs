//! The load generator behind `sediment bench`.
//!
//! Producers send fixed-size records for a duration (optionally rate-limited)
//! while consumers read the same topic from its end; or only one side runs.
//! Every producer and consumer has its own [`Client`] and so its own
//! connections, like separate client processes would.
//!
//! Produce latency is send-to-acknowledgement per record: each record carries
//! its send time as the producer's `u64` token, and the per-batch callback
//! records `now - token` for every record of the batch into an HDR histogram
//! (microseconds, 3 significant digits). The hot path allocates nothing per
//! record: the value is one shared buffer and the topic name a static string.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::protocol::StrBytes;
use rand::RngCore;
use serde_json::json;

use crate::admin::{Admin, NewTopic};
use crate::conn::Client;
use crate::consumer::{Consumer, ConsumerConfig, StartOffset};
use crate::error::Error;
use crate::partitioner::Keyless;
use crate::producer::{Acks, BatchCallback, BatchDelivery, Codec, Producer, ProducerConfig, ProducerRecord};

/// Which sides of the benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Producers and consumers concurrently.
    Both,
    /// Producers only.
    ProduceOnly,
    /// Consumers only, reading what the topic already holds.
    ConsumeOnly,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Bootstrap broker.
    pub bootstrap: String,
    /// Topic (created if missing).
    pub topic: String,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic (-1: the cluster's default).
    pub replication_factor: i16,
    /// Producer count.
    pub producers: usize,
    /// Consumer count.
    pub consumers: usize,
    /// Value size of each record.
    pub record_size: usize,
    /// Acks.
    pub acks: Acks,
    /// Producer batch size.
    pub batch_size: usize,
    /// Producer linger.
    pub linger: Duration,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
    /// Idempotent producers.
    pub idempotent: bool,
    /// Total records/s over all producers; 0 = unlimited.
    pub rate: u64,
    /// How long producers send (and consume-only consumers read at most).
    pub duration: Duration,
    /// Compression.
    pub compression: Codec,
    /// Which sides run.
    pub mode: BenchMode,
    /// Show live progress on stderr.
    pub progress: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl LatencySummary {
    /// Percentiles of `h` (all zero if it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary { p50: h.value_at_quantile(0.50), p99: h.value_at_quantile(0.99), p999: h.value_at_quantile(0.999), max: h.max() }
    }
}

/// What a benchmark measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The parameters.
    pub config: BenchConfig,
    /// Records acknowledged.
    pub produced_records: u64,
    /// Records that failed.
    pub produce_errors: u64,
    /// First produce error, if any.
    pub first_error: Option<String>,
    /// From the first send to the last acknowledgement.
    pub produce_elapsed: Duration,
    /// Records consumed.
    pub consumed_records: u64,
    /// Value+key bytes consumed.
    pub consumed_bytes: u64,
    /// From the start to the last consumed record.
    pub consume_elapsed: Duration,
    /// Produce latency.
    pub latency: LatencySummary,
}

/// Records/s and MiB/s for `records` of `bytes` total over `elapsed`.
pub fn rates(records: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    (records as f64 / secs, bytes as f64 / (1024.0 * 1024.0) / secs)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl BenchReport {
    /// Produce records/s and MiB/s (value bytes).
    pub fn produce_rates(&self) -> (f64, f64) {
        let bytes = self.produced_records.saturating_mul(self.config.record_size as u64);
        rates(self.produced_records, bytes, self.produce_elapsed)
    }

    /// Consume records/s and MiB/s.
    pub fn consume_rates(&self) -> (f64, f64) {
        rates(self.consumed_records, self.consumed_bytes, self.consume_elapsed)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let (p_rps, p_mibps) = self.produce_rates();
        let (c_rps, c_mibps) = self.consume_rates();
        json!({
            "produced_records": self.produced_records,
            "produce_errors": self.produce_errors,
            "produced_mib_per_s": round2(p_mibps),
            "produce_records_per_s": round2(p_rps),
            "consumed_records": self.consumed_records,
            "consumed_mib_per_s": round2(c_mibps),
            "consume_records_per_s": round2(c_rps),
            "latency_us": {
                "p50": self.latency.p50,
                "p99": self.latency.p99,
                "p999": self.latency.p999,
                "max": self.latency.max,
            },
            "acks": self.config.acks.to_string(),
            "idempotent": self.config.idempotent,
            "compression": self.config.compression.to_string(),
            "record_size": self.config.record_size,
            "partitions": self.config.partitions,
            "producers": self.producer_count(),
            "consumers": self.consumer_count(),
            "duration_s": self.config.duration.as_secs_f64(),
        })
    }

    fn producer_count(&self) -> usize {
        if self.config.mode == BenchMode::ConsumeOnly { 0 } else { self.config.producers }
    }

    fn consumer_count(&self) -> usize {
        if self.config.mode == BenchMode::ProduceOnly { 0 } else { self.config.consumers }
    }

    /// The report as human-readable lines.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "topic {} ({} partitions), {} producers, {} consumers, {} B records, acks={}, compression={}, {:.1} s\n",
            c.topic,
            c.partitions,
            self.producer_count(),
            self.consumer_count(),
            c.record_size,
            c.acks,
            c.compression,
            c.duration.as_secs_f64()
        );
        if c.mode != BenchMode::ConsumeOnly {
            let (rps, mibps) = self.produce_rates();
            s += &format!("produced {} records: {:.0} records/s, {:.2} MiB/s", self.produced_records, rps, mibps);
            if self.produce_errors > 0 {
                s += &format!(" ({} failed", self.produce_errors);
                if let Some(e) = &self.first_error {
                    s += &format!(", first: {e}");
                }
                s += ")";
            }
            s += &format!("\nproduce latency (us): p50 {} p99 {} p999 {} max {}\n", self.latency.p50, self.latency.p99, self.latency.p999, self.latency.max);
        }
        if c.mode != BenchMode::ProduceOnly {
            let (rps, mibps) = self.consume_rates();
            s += &format!("consumed {} records: {:.0} records/s, {:.2} MiB/s\n", self.consumed_records, rps, mibps);
        }
        s
    }
}

/// Counters shared by all tasks of a run.
struct Stats {
    start: Instant,
    produced: AtomicU64,
    produce_errors: AtomicU64,
    last_ack_ns: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    last_consume_ns: AtomicU64,
    producers_done: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn since_start_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 us .. 1 hour at 3 significant digits. `new_with_bounds` fails only if
    // low < 1, high < 2 * low or sigfig > 5, none of which holds for these constants.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Step between the payload windows of consecutive records (a prime, so
/// windows do not line up with batch boundaries).
const PAYLOAD_STRIDE: usize = 4099;

/// Text-like random bytes (lowercase words): compressible about as well as
/// typical JSON or log lines, unlike uniformly random bytes or one repeated value.
// the client library does not depend on the broker's crates (sediment_log::random); the load
// generator's payload need not be reproducible
#[allow(clippy::disallowed_methods)]
fn payload_pool(record_size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz      ";
    let mut raw = vec![0u8; record_size + 1024 * 1024];
    rand::rng().fill_bytes(&mut raw);
    for b in &mut raw {
        *b = ALPHABET[usize::from(*b) % ALPHABET.len()];
    }
    raw
}

/// Leaks `bytes` so records can carry it with `Bytes::from_static`: cloning
/// such a `Bytes` touches no shared reference count. One buffer per producer.
fn leak_static(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// Runs a benchmark.
pub async fn run(config: BenchConfig) -> anyhow::Result<BenchReport> {
    if config.record_size == 0 {
        anyhow::bail!("--record-size must be at least 1");
    }
    let client = Client::connect(&config.bootstrap).await?;
    let admin = Admin::new(client.clone());
    let mut config = config;
    match client.refresh_topic(&config.topic).await {
        Ok(info) => {
            if info.num_partitions() != config.partitions {
                eprintln!("topic \"{}\" exists with {} partitions; using it as is", config.topic, info.num_partitions());
                config.partitions = info.num_partitions();
            }
        }
        Err(Error::UnknownTopic(_)) if config.mode != BenchMode::ConsumeOnly => {
            let topic =
                NewTopic { name: config.topic.clone(), partitions: config.partitions, replication_factor: config.replication_factor, configs: Vec::new() };
            admin.create_topic(&topic, false).await?;
        }
        Err(e) => return Err(e.into()),
    }
    admin.wait_for_leaders(&config.topic, Duration::from_secs(30)).await?;

    // Connect everything first so the clock starts with the first record.
    let consume_target = Arc::new(AtomicU64::new(u64::MAX));
    let mut consumers = Vec::new();
    if config.mode != BenchMode::ProduceOnly && config.consumers > 0 {
        let n = config.consumers;
        let start = if config.mode == BenchMode::ConsumeOnly { StartOffset::Earliest } else { StartOffset::Latest };
        for i in 0..n {
            let parts: Vec<i32> = (0..config.partitions).filter(|p| *p as usize % n == i).collect();
            if parts.is_empty() {
                continue;
            }
            let c = Client::connect(&config.bootstrap).await?;
            consumers.push(Consumer::new(c, &config.topic, Some(&parts), start, ConsumerConfig::default()).await?);
        }
        if config.mode == BenchMode::ConsumeOnly {
            let total: i64 = consumers.iter().map(Consumer::lag).sum();
            consume_target.store(u64::try_from(total).unwrap_or(0), Ordering::Release);
        }
    }
    let mut producer_clients = Vec::new();
    if config.mode != BenchMode::ConsumeOnly {
        for _ in 0..config.producers {
            producer_clients.push(Client::connect(&config.bootstrap).await?);
        }
    }

    let stats = Arc::new(Stats {
        start: Instant::now(),
        produced: AtomicU64::new(0),
        produce_errors: AtomicU64::new(0),
        last_ack_ns: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        consumed_bytes: AtomicU64::new(0),
        last_consume_ns: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let consumer_tasks: Vec<_> =
        consumers.into_iter().map(|consumer| tokio::spawn(consume_loop(consumer, stats.clone(), consume_target.clone(), config.clone()))).collect();
    let histograms: Vec<Arc<Mutex<Histogram<u64>>>> = producer_clients.iter().map(|_| Arc::new(Mutex::new(new_histogram()))).collect();
    let producer_tasks: Vec<_> =
        producer_clients.into_iter().zip(&histograms).map(|(client, h)| tokio::spawn(produce_loop(client, config.clone(), stats.clone(), h.clone()))).collect();

    let progress = config.progress.then(|| spawn_progress(stats.clone(), config.mode));
    let mut first_task_error: Option<anyhow::Error> = None;
    for t in producer_tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_task_error.get_or_insert(e);
            }
            Err(e) => {
                first_task_error.get_or_insert(anyhow::anyhow!("producer task failed: {e}"));
            }
        }
    }
    stats.producers_done.store(true, Ordering::Release);
    if config.mode == BenchMode::Both {
        consume_target.store(stats.produced.load(Ordering::Acquire), Ordering::Release);
    }
    for t in consumer_tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_task_error.get_or_insert(e);
            }
            Err(e) => {
                first_task_error.get_or_insert(anyhow::anyhow!("consumer task failed: {e}"));
            }
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[2K");
    }
    if let Some(e) = first_task_error {
        return Err(e);
    }

    let mut merged = new_histogram();
    for h in &histograms {
        let h = h.lock().unwrap_or_else(PoisonError::into_inner);
        // Same bounds on both sides, so adding cannot fail.
        let _ = merged.add(&*h);
    }
    let first_error = stats.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(BenchReport {
        produced_records: stats.produced.load(Ordering::Acquire),
        produce_errors: stats.produce_errors.load(Ordering::Acquire),
        first_error,
        produce_elapsed: Duration::from_nanos(stats.last_ack_ns.load(Ordering::Acquire)),
        consumed_records: stats.consumed.load(Ordering::Acquire),
        consumed_bytes: stats.consumed_bytes.load(Ordering::Acquire),
        consume_elapsed: Duration::from_nanos(stats.last_consume_ns.load(Ordering::Acquire)),
        latency: LatencySummary::from_histogram(&merged),
        config,
    })
}

async fn produce_loop(client: Arc<Client>, config: BenchConfig, stats: Arc<Stats>, histogram: Arc<Mutex<Histogram<u64>>>) -> anyhow::Result<()> {
    let cb_stats = stats.clone();
    let callback: BatchCallback = Arc::new(move |d: &BatchDelivery<'_>| {
        let now = cb_stats.since_start_ns();
        let n = d.tokens.len() as u64;
        match d.result {
            Ok(_) => {
                {
                    let mut h = histogram.lock().unwrap_or_else(PoisonError::into_inner);
                    for &t in d.tokens {
                        h.saturating_record((now.saturating_sub(t) / 1000).max(1));
                    }
                }
                cb_stats.produced.fetch_add(n, Ordering::AcqRel);
                cb_stats.last_ack_ns.fetch_max(now, Ordering::AcqRel);
            }
            Err(e) => {
                cb_stats.produce_errors.fetch_add(n, Ordering::AcqRel);
                let mut first = cb_stats.first_error.lock().unwrap_or_else(PoisonError::into_inner);
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    });
    let producer_config = ProducerConfig {
        acks: config.acks,
        compression: config.compression,
        batch_size: config.batch_size,
        linger: config.linger,
        max_in_flight: config.max_in_flight,
        keyless: Keyless::Sticky,
        idempotent: config.idempotent,
        ..ProducerConfig::default()
    };
    let producer = Producer::with_callback(client, producer_config, callback);
    let payloads = Bytes::from_static(leak_static(payload_pool(config.record_size)));
    let span = payloads.len() - config.record_size;
    let topic = StrBytes::from_static_str(Box::leak(config.topic.clone().into_boxed_str()));
    let per_producer_rate = config.rate as f64 / config.producers.max(1) as f64;
    let start = stats.start;
    let end = start + config.duration;
    let mut sent: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if per_producer_rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / per_producer_rate);
            if due > now {
                tokio::time::sleep_until(due.min(end).into()).await;
                continue;
            }
        }
        let token = u64::try_from(now.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
        // A different window of the pool for every record, so batches do not
        // repeat one value (which would flatter compression).
        let at = (sent as usize).wrapping_mul(PAYLOAD_STRIDE) % span.max(1);
        let record = ProducerRecord {
            topic: topic.clone(),
            partition: None,
            key: None,
            value: Some(payloads.slice(at..at + config.record_size)),
            headers: Vec::new(),
            timestamp: None,
        };
        producer.send_tracked(record, token).await?;
        sent += 1;
    }
    producer.close().await?;
    Ok(())
}

async fn consume_loop(mut consumer: Consumer, stats: Arc<Stats>, target: Arc<AtomicU64>, config: BenchConfig) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let hard_end = stats.start + config.duration + Duration::from_secs(30);
    let mut idle_since = Instant::now();
    loop {
        records.clear();
        let n = consumer.poll_into(&mut records).await?;
        let now = Instant::now();
        if n > 0 {
            idle_since = now;
            let bytes: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len)).sum();
            stats.consumed.fetch_add(n as u64, Ordering::AcqRel);
            stats.consumed_bytes.fetch_add(bytes as u64, Ordering::AcqRel);
            stats.last_consume_ns.fetch_max(stats.since_start_ns(), Ordering::AcqRel);
        }
        let consumed = stats.consumed.load(Ordering::Acquire);
        let target = target.load(Ordering::Acquire);
        match config.mode {
            BenchMode::ConsumeOnly => {
                if consumed >= target || now >= stats.start + config.duration {
                    return Ok(());
                }
            }
            _ => {
                let done = stats.producers_done.load(Ordering::Acquire);
                if done && (consumed >= target || now.duration_since(idle_since) > Duration::from_secs(5)) {
                    return Ok(());
                }
            }
        }
        if now >= hard_end {
            return Ok(());
        }
    }
}

fn spawn_progress(stats: Arc<Stats>, mode: BenchMode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (0u64, 0u64, Instant::now());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let p = stats.produced.load(Ordering::Acquire);
            let c = stats.consumed.load(Ordering::Acquire);
            let secs = last.2.elapsed().as_secs_f64().max(1e-9);
            let mut line = format!("\r\x1b[2K{:>5.0} s", stats.start.elapsed().as_secs_f64());
            if mode != BenchMode::ConsumeOnly {
                line += &format!("  produced {:>10.0} records/s", (p - last.0) as f64 / secs);
            }
            if mode != BenchMode::ProduceOnly {
                line += &format!("  consumed {:>10.0} records/s", (c - last.1) as f64 / secs);
            }
            eprint!("{line}");
            last = (p, c, Instant::now());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_uniform_latencies() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        // 3 significant digits: within 0.1% of the exact rank.
        assert!((4995..=5005).contains(&s.p50), "p50 {}", s.p50);
        assert!((9890..=9910).contains(&s.p99), "p99 {}", s.p99);
        assert!((9980..=10_000).contains(&s.p999), "p999 {}", s.p999);
        assert!((9995..=10_010).contains(&s.max), "max {}", s.max);
    }

    #[test]
    fn percentiles_see_the_tail() {
        let mut h = new_histogram();
        for _ in 0..990 {
            h.record(100).unwrap();
        }
        for _ in 0..10 {
            h.record(50_000).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.p50, 100);
        assert_eq!(s.p99, 100);
        assert!((49_950..=50_050).contains(&s.p999));
        assert!(LatencySummary::from_histogram(&new_histogram()) == LatencySummary::default());
    }

    #[test]
    fn payload_pool_is_text_and_large_enough() {
        let pool = payload_pool(100);
        assert_eq!(pool.len(), 100 + 1024 * 1024);
        assert!(pool.iter().all(|b| b.is_ascii_lowercase() || *b == b' '));
    }

    #[test]
    fn rates_are_per_second_and_mib() {
        let (rps, mibps) = rates(2_000, 2 * 1024 * 1024, Duration::from_secs(2));
        assert_eq!(rps, 1000.0);
        assert_eq!(mibps, 1.0);
        assert_eq!(rates(5, 5, Duration::ZERO), (0.0, 0.0));
    }

    #[test]
    fn json_report_has_the_documented_keys() {
        let config = BenchConfig {
            bootstrap: "127.0.0.1:9092".into(),
            topic: "t".into(),
            partitions: 3,
            replication_factor: -1,
            producers: 2,
            consumers: 1,
            record_size: 1024,
            acks: Acks::All,
            batch_size: 1 << 18,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            idempotent: false,
            rate: 0,
            duration: Duration::from_secs(10),
            compression: Codec::None,
            mode: BenchMode::Both,
            progress: false,
        };
        let report = BenchReport {
            config,
            produced_records: 1024,
            produce_errors: 0,
            first_error: None,
            produce_elapsed: Duration::from_secs(1),
            consumed_records: 1024,
            consumed_bytes: 1024 * 1024,
            consume_elapsed: Duration::from_secs(2),
            latency: LatencySummary { p50: 1, p99: 2, p999: 3, max: 4 },
        };
        let j = report.to_json();
        for key in [
            "produced_records",
            "produced_mib_per_s",
            "produce_records_per_s",
            "consumed_mib_per_s",
            "consume_records_per_s",
            "latency_us",
            "acks",
            "idempotent",
            "record_size",
            "partitions",
            "producers",
            "consumers",
            "duration_s",
        ] {
            assert!(j.get(key).is_some(), "missing {key}");
        }
        assert_eq!(j["produced_mib_per_s"], 1.0);
        assert_eq!(j["consume_records_per_s"], 512.0);
        assert_eq!(j["latency_us"]["p999"], 3);
        assert_eq!(j["acks"], "all");
        assert!(report.to_text().contains("p99 2"));
    }
}
