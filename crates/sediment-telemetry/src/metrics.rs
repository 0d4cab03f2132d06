//! Every metric Sediment exports, in one place.
//!
//! Instruments are OpenTelemetry instruments on one `SdkMeterProvider`. Its readers are the
//! Prometheus exporter (pulled by `GET /metrics`, see [`render`]) and, when OTLP export is on, a
//! periodic OTLP reader: one instrumentation API, two exports that always agree.
//!
//! Hot-path cost: handles are *bound* to their label set once (per API key, per topic, per
//! `acks` value) and kept by the caller, so recording is an atomic add (counters) or a short
//! uncontended lock (histograms), never a label lookup. Per-partition gauges (offsets, segments,
//! size) are not recorded at all: they are read from the broker when a scrape asks for them,
//! through the [`StorageSource`] the broker registers.
//!
//! Names follow Prometheus conventions with Kafka's vocabulary: counters end in `_total` (the
//! exporter appends it), durations are histograms in seconds, sizes are in bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram, BoundUpDownCounter, Counter, Gauge, Histogram, MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};

/// Request latency buckets (seconds): 100 µs to 30 s, denser where fsync and network live.
pub const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// fsync latency buckets (seconds): 50 µs to 2.5 s.
pub const FSYNC_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Series per instrument before the SDK folds new label sets into an overflow series. Per-partition
/// gauges need one series per partition; 100 000 is the broker's partition limit per topic.
pub const CARDINALITY_LIMIT: usize = 100_000;

/// The instrumentation scope name of every instrument.
pub const METER_NAME: &str = "sediment";

/// One partition as the scrape-time gauges see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    pub segments: u64,
    pub size_bytes: u64,
    /// This node leads the partition (always, until replication lands).
    pub leader: bool,
}

/// Where the per-partition gauges come from: the broker implements it and registers itself with
/// [`Metrics::set_storage_source`]. Called at scrape time only.
pub trait StorageSource: Send + Sync {
    /// Every partition this node hosts.
    fn partition_stats(&self) -> Vec<PartitionStats>;
}

/// Counters and the latency histogram of one Kafka API, bound to its `api` label.
#[derive(Clone)]
pub struct ApiMetrics {
    api: &'static str,
    requests: BoundCounter<u64>,
    latency: BoundHistogram<f64>,
}

impl ApiMetrics {
    pub fn api(&self) -> &'static str {
        self.api
    }

    /// One request answered (or, for acks=0, processed) after `elapsed`.
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        self.requests.add(1);
        self.latency.record(elapsed.as_secs_f64());
    }
}

/// Byte and record counters of one topic, bound to its `topic` label. Every partition of the
/// topic holds a clone; they share one series.
#[derive(Clone)]
pub struct TopicMetrics {
    produce_bytes: BoundCounter<u64>,
    produce_records: BoundCounter<u64>,
    fetch_bytes: BoundCounter<u64>,
}

impl TopicMetrics {
    /// A record batch of `bytes` bytes holding `records` records was appended.
    #[inline]
    pub fn produced(&self, bytes: u64, records: u64) {
        self.produce_bytes.add(bytes);
        self.produce_records.add(records);
    }

    /// `bytes` bytes of record batches were returned to a fetch.
    #[inline]
    pub fn fetched(&self, bytes: u64) {
        if bytes > 0 {
            self.fetch_bytes.add(bytes);
        }
    }
}

/// Kinds of object store requests (`op` label of `sediment_object_store_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStoreOp {
    Get,
    GetRange,
    Put,
    PutPart,
    Delete,
    List,
    Head,
}

impl ObjectStoreOp {
    pub const ALL: [ObjectStoreOp; 7] = [
        ObjectStoreOp::Get,
        ObjectStoreOp::GetRange,
        ObjectStoreOp::Put,
        ObjectStoreOp::PutPart,
        ObjectStoreOp::Delete,
        ObjectStoreOp::List,
        ObjectStoreOp::Head,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectStoreOp::Get => "get",
            ObjectStoreOp::GetRange => "get_range",
            ObjectStoreOp::Put => "put",
            ObjectStoreOp::PutPart => "put_part",
            ObjectStoreOp::Delete => "delete",
            ObjectStoreOp::List => "list",
            ObjectStoreOp::Head => "head",
        }
    }
}

/// Tiered storage's metrics; exported with zero values on a broker without a bucket, so
/// dashboards and alerts work the same everywhere.
pub struct TierMetrics {
    upload_lag_bytes: Gauge<u64>,
    uploaded_bytes: BoundCounter<u64>,
    remote_bytes: Gauge<u64>,
    object_store_requests: Vec<BoundCounter<u64>>,
    object_store_errors: Vec<BoundCounter<u64>>,
    cache_hits: BoundCounter<u64>,
    cache_misses: BoundCounter<u64>,
    cold_read_throttled: BoundCounter<f64>,
}

impl TierMetrics {
    /// Cold reads waited this long for the under-load budget (produce traffic came first).
    pub fn cold_read_throttled(&self, seconds: f64) {
        self.cold_read_throttled.add(seconds);
    }

    /// Bytes of sealed local segments not yet committed to the bucket.
    pub fn set_upload_lag_bytes(&self, bytes: u64) {
        self.upload_lag_bytes.record(bytes, &[]);
    }

    /// Bytes of segments (with their indexes) uploaded.
    pub fn uploaded(&self, bytes: u64) {
        self.uploaded_bytes.add(bytes);
    }

    /// Bytes of remote segments listed in the manifests this node leads.
    pub fn set_remote_bytes(&self, bytes: u64) {
        self.remote_bytes.record(bytes, &[]);
    }

    /// One request to the object store.
    pub fn object_store_request(&self, op: ObjectStoreOp) {
        let i = ObjectStoreOp::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.object_store_requests[i].add(1);
    }

    /// One object store request failed (after its retries).
    pub fn object_store_error(&self, op: ObjectStoreOp) {
        let i = ObjectStoreOp::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.object_store_errors[i].add(1);
    }

    /// A cold read found its chunk in the read-through cache.
    pub fn cache_hit(&self) {
        self.cache_hits.add(1);
    }

    /// A cold read had to fetch its chunk from the bucket.
    pub fn cache_miss(&self) {
        self.cache_misses.add(1);
    }
}

/// Raft groups, for the `group` label of `sediment_raft_commit_latency_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftGroup {
    /// The metadata (controller) group.
    Metadata,
    /// A partition's data group.
    Partition,
}

/// Replication's instruments (zero on a single-node broker).
pub struct ReplicationMetrics {
    under_replicated: Gauge<u64>,
    follower_lag: Gauge<u64>,
    /// Followers reported so far: one that no longer follows anything here reads 0.
    lag_followers: Mutex<std::collections::BTreeSet<u64>>,
    quiesced: Gauge<u64>,
    commit_latency: [BoundHistogram<f64>; 2],
    leader_changes: BoundCounter<u64>,
}

impl ReplicationMetrics {
    /// Partitions led here whose in-sync voters are fewer than their replicas.
    pub fn set_under_replicated_partitions(&self, n: u64) {
        self.under_replicated.record(n, &[]);
    }

    /// The most Raft entries each follower lacks, over the partitions led here (`follower` is
    /// its node id).
    pub fn set_follower_lag(&self, lag: &std::collections::BTreeMap<u64, u64>) {
        let mut seen = self.lag_followers.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(lag.keys().copied());
        for id in seen.iter() {
            self.follower_lag.record(lag.get(id).copied().unwrap_or(0), &[KeyValue::new("follower", id.to_string())]);
        }
    }

    /// Partition groups on this node with their Raft timers stopped while idle, as leader and
    /// as follower.
    pub fn set_quiesced_partitions(&self, leading: u64, following: u64) {
        self.quiesced.record(leading, &[KeyValue::new("role", "leader")]);
        self.quiesced.record(following, &[KeyValue::new("role", "follower")]);
    }

    /// Time from a leader's append to its Raft commit.
    pub fn commit_latency(&self, group: RaftGroup, elapsed: Duration) {
        let i = match group {
            RaftGroup::Metadata => 0,
            RaftGroup::Partition => 1,
        };
        self.commit_latency[i].record(elapsed.as_secs_f64());
    }

    /// This node gained or lost the leadership of a partition.
    pub fn leader_changed(&self) {
        self.leader_changes.add(1);
    }
}

/// The instruments. Obtain with [`metrics`].
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    requests: Counter<u64>,
    request_latency: Histogram<f64>,
    request_errors: Counter<u64>,
    produce_bytes: Counter<u64>,
    produce_records: Counter<u64>,
    fetch_bytes: Counter<u64>,
    produce_latency: [BoundHistogram<f64>; 3],
    fetch_latency: Histogram<f64>,
    fsync_latency: Histogram<f64>,
    fsync_errors: BoundCounter<u64>,
    unreadable_batches: BoundCounter<u64>,
    connections_open: BoundUpDownCounter<i64>,
    connections_total: BoundCounter<u64>,
    connections_rejected: BoundCounter<u64>,
    pub tier: TierMetrics,
    pub replication: ReplicationMetrics,
    storage: Arc<StorageSlot>,
    _observables: Vec<ObservableGauge<i64>>,
    _observables_u64: Vec<ObservableGauge<u64>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);
static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// The process-wide instruments. Built on first use with the Prometheus reader only, unless
/// [`install`] ran first (the binary calls it at start-up, adding the OTLP reader if configured).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::build(None))
}

/// Builds the instruments with an extra reader (the OTLP periodic reader). Returns `false` if
/// the instruments were already built (then the extra reader is not attached).
pub fn install(extra: Option<opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>>, resource: opentelemetry_sdk::Resource) -> bool {
    let mut built = false;
    METRICS.get_or_init(|| {
        built = true;
        Metrics::build(Some((extra, resource)))
    });
    built
}

/// Marks the process as serving (`/ready` and `sediment_ready`).
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Release);
}

pub fn is_ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Prometheus text exposition (format 0.0.4) of every metric.
pub fn render() -> String {
    let m = metrics();
    m.storage.invalidate();
    let families = m.registry.gather();
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}

/// `Content-Type` of [`render`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Error code names as Kafka spells them (`UNKNOWN_TOPIC_OR_PARTITION`), from the Rust enum's
/// variant name (`UnknownTopicOrPartition`).
pub fn kafka_error_name(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Partition stats with their label sets.
type Snapshot = Arc<Vec<(Vec<KeyValue>, PartitionStats)>>;

/// Scrape-time partition stats, computed once per scrape for all gauges that need them.
struct StorageSlot {
    source: RwLock<Option<Weak<dyn StorageSource>>>,
    snapshot: Mutex<Option<(Instant, Snapshot)>>,
}

impl StorageSlot {
    /// Snapshots older than this are recomputed (OTLP collections); a Prometheus scrape always
    /// recomputes (see [`render`]).
    const MAX_AGE: Duration = Duration::from_millis(500);

    fn invalidate(&self) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn stats(&self) -> Snapshot {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, s)) = snap.as_ref()
            && at.elapsed() < Self::MAX_AGE
        {
            return s.clone();
        }
        let source = self.source.read().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(Weak::upgrade);
        let stats: Vec<_> = match source {
            Some(s) => s
                .partition_stats()
                .into_iter()
                .map(|p| (vec![KeyValue::new("topic", p.topic.clone()), KeyValue::new("partition", p.partition as i64)], p))
                .collect(),
            None => Vec::new(),
        };
        let stats = Arc::new(stats);
        *snap = Some((Instant::now(), stats.clone()));
        stats
    }
}

fn start_time() -> SystemTime {
    #[allow(clippy::disallowed_methods)] // below the log crate's clock: the process start, for a gauge
    *STARTED.get_or_init(SystemTime::now)
}

impl Metrics {
    fn build(
        readers: Option<(Option<opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>>, opentelemetry_sdk::Resource)>,
    ) -> Metrics {
        start_time();
        let registry = prometheus::Registry::new();
        let mut builder = SdkMeterProvider::builder().with_view(|i: &Instrument| {
            // Raise the SDK's default limit of 2000 series per instrument: one series per
            // partition must not overflow on a broker with many partitions.
            let _ = i;
            Stream::builder().with_cardinality_limit(CARDINALITY_LIMIT).build().ok()
        });
        match opentelemetry_prometheus::exporter().with_registry(registry.clone()).without_units().without_target_info().scope_info_enabled(false).build() {
            Ok(exporter) => builder = builder.with_reader(exporter),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the prometheus exporter; /metrics will be empty")
            }
        }
        if let Some((reader, resource)) = readers {
            builder = builder.with_resource(resource);
            if let Some(r) = reader {
                builder = builder.with_reader(r);
            }
        }
        let provider = builder.build();
        let meter = provider.meter(METER_NAME);
        let storage = Arc::new(StorageSlot { source: RwLock::new(None), snapshot: Mutex::new(None) });

        let requests = meter
            .u64_counter("sediment_requests")
            .with_unit("{request}")
            .with_description("Kafka requests handled, by API (acks=0 produce requests included)")
            .build();
        let request_latency = meter
            .f64_histogram("sediment_request_latency_seconds")
            .with_unit("s")
            .with_description("Kafka request latency by API, from the complete request frame to the response written")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let produce_bytes = meter
            .u64_counter("sediment_produce_bytes")
            .with_unit("By")
            .with_description("Bytes of record batches appended, by topic (Kafka's BytesInPerSec): the size of each accepted batch as sent, compressed")
            .build();
        let produce_records = meter
            .u64_counter("sediment_produce_records")
            .with_unit("{record}")
            .with_description("Records appended, by topic (Kafka's MessagesInPerSec), from each accepted batch's record count")
            .build();
        let fetch_bytes = meter
            .u64_counter("sediment_fetch_bytes")
            .with_unit("By")
            .with_description("Bytes of record batches returned by Fetch, by topic (Kafka's BytesOutPerSec)")
            .build();
        let request_errors = meter
            .u64_counter("sediment_request_errors")
            .with_unit("{response}")
            .with_description("Responses carrying an error code, by API and Kafka error name (each distinct code counted once per response)")
            .build();
        let produce_latency_h = meter
            .f64_histogram("sediment_produce_latency_seconds")
            .with_unit("s")
            .with_description("Produce request latency, from the complete request frame to the response written, by acks (0, 1, all)")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let produce_latency = ["0", "1", "all"].map(|a| produce_latency_h.bind(&[KeyValue::new("acks", a)]));
        let fetch_latency = meter
            .f64_histogram("sediment_fetch_latency_seconds")
            .with_unit("s")
            .with_description("Fetch request latency, from the complete request frame to the response written (includes long-poll waits)")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let fsync_latency = meter
            .f64_histogram("sediment_log_fsync_latency_seconds")
            .with_unit("s")
            .with_description("Duration of one group-commit fsync of a partition log (segment data, indexes)")
            .with_boundaries(FSYNC_BUCKETS.to_vec())
            .build();
        let fsync_errors =
            meter.u64_counter("sediment_log_fsync_errors").with_description("Failed fsyncs; the partition refuses writes until restart").build().bind(&[]);
        fsync_errors.add(0);
        let unreadable_batches = meter
            .u64_counter("sediment_unreadable_batches")
            .with_description("Stored record batches whose records could not be read (a lookup served around them)")
            .build()
            .bind(&[]);
        unreadable_batches.add(0);
        let connections_open = meter
            .i64_up_down_counter("sediment_connections_open")
            .with_unit("{connection}")
            .with_description("Kafka client connections open now")
            .build()
            .bind(&[]);
        connections_open.add(0);
        let connections_total =
            meter.u64_counter("sediment_connections").with_unit("{connection}").with_description("Kafka client connections accepted").build().bind(&[]);
        connections_total.add(0);
        let connections_rejected = meter
            .u64_counter("sediment_connections_rejected")
            .with_unit("{connection}")
            .with_description("Kafka client connections closed at accept because max_connections were open")
            .build()
            .bind(&[]);
        connections_rejected.add(0);

        let tier = TierMetrics {
            upload_lag_bytes: meter
                .u64_gauge("sediment_tier_upload_lag_bytes")
                .with_unit("By")
                .with_description("Bytes of sealed local segments not yet uploaded to the bucket")
                .build(),
            uploaded_bytes: meter
                .u64_counter("sediment_tier_uploaded_bytes")
                .with_unit("By")
                .with_description("Bytes of segments and indexes uploaded to the bucket")
                .build()
                .bind(&[]),
            remote_bytes: meter
                .u64_gauge("sediment_tier_remote_bytes")
                .with_unit("By")
                .with_description("Bytes of remote segments of the partitions this node leads")
                .build(),
            object_store_requests: {
                let c = meter
                    .u64_counter("sediment_object_store_requests")
                    .with_unit("{request}")
                    .with_description("Requests to the object store by operation")
                    .build();
                ObjectStoreOp::ALL.iter().map(|op| c.bind(&[KeyValue::new("op", op.as_str())])).collect()
            },
            object_store_errors: {
                let c = meter
                    .u64_counter("sediment_object_store_request_errors")
                    .with_unit("{request}")
                    .with_description("Object store requests that failed after retries, by operation")
                    .build();
                ObjectStoreOp::ALL.iter().map(|op| c.bind(&[KeyValue::new("op", op.as_str())])).collect()
            },
            cache_hits: meter.u64_counter("sediment_cache_hits").with_description("Cold reads served from the read-through cache").build().bind(&[]),
            cache_misses: meter.u64_counter("sediment_cache_misses").with_description("Cold reads that fetched their chunk from the bucket").build().bind(&[]),
            cold_read_throttled: meter
                .f64_counter("sediment_cold_read_throttled_seconds")
                .with_unit("s")
                .with_description("Time cold reads waited because the broker was taking produce traffic (cold_read_bytes_per_sec_under_load)")
                .build()
                .bind(&[]),
        };
        tier.set_upload_lag_bytes(0);
        tier.set_remote_bytes(0);
        tier.uploaded_bytes.add(0);
        tier.cache_hits.add(0);
        tier.cache_misses.add(0);
        tier.cold_read_throttled.add(0.0);

        let commit = meter
            .f64_histogram("sediment_raft_commit_latency_seconds")
            .with_unit("s")
            .with_description("Time from a leader's append to its Raft commit, by group")
            .with_boundaries(LATENCY_BUCKETS.to_vec())
            .build();
        let replication = ReplicationMetrics {
            under_replicated: meter
                .u64_gauge("sediment_under_replicated_partitions")
                .with_description("Partitions led here with fewer in-sync replicas than replicas")
                .build(),
            follower_lag: meter
                .u64_gauge("sediment_replication_follower_lag_entries")
                .with_description("Most Raft entries (record batches) a follower lacks of a partition led here, by follower node id")
                .build(),
            lag_followers: Mutex::new(Default::default()),
            quiesced: meter
                .u64_gauge("sediment_raft_quiesced_partitions")
                .with_description("Idle partition groups here whose Raft heartbeats and election timers are stopped, by role")
                .build(),
            commit_latency: ["metadata", "partition"].map(|g| commit.bind(&[KeyValue::new("group", g)])),
            leader_changes: meter.u64_counter("sediment_leader_changes").with_description("Partition leadership changes seen by this node").build().bind(&[]),
        };
        replication.set_under_replicated_partitions(0);
        replication.set_quiesced_partitions(0, 0);
        replication.leader_changes.add(0);

        let mut observables = Vec::new();
        let mut observables_u64 = Vec::new();
        type Field = fn(&PartitionStats) -> i64;
        let partition_gauges: [(&'static str, &'static str, &'static str, Field); 3] = [
            ("sediment_log_end_offset", "{offset}", "Log end offset (next offset to be written) per partition", |p| p.log_end_offset),
            (
                "sediment_log_high_watermark",
                "{offset}",
                "High watermark (first offset not yet durable/committed; consumers read below it) per partition",
                |p| p.high_watermark,
            ),
            ("sediment_log_start_offset", "{offset}", "Log start offset (first readable offset) per partition", |p| p.log_start_offset),
        ];
        for (name, unit, help, field) in partition_gauges {
            let slot = storage.clone();
            observables.push(
                meter
                    .i64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(help)
                    .with_callback(move |o| {
                        for (attrs, p) in slot.stats().iter() {
                            o.observe(field(p), attrs);
                        }
                    })
                    .build(),
            );
        }
        type FieldU = fn(&PartitionStats) -> u64;
        let partition_gauges_u: [(&'static str, &'static str, &'static str, FieldU); 2] = [
            ("sediment_log_segments", "{segment}", "Local log segments per partition", |p| p.segments),
            ("sediment_log_size_bytes", "By", "Bytes of local log segments per partition", |p| p.size_bytes),
        ];
        for (name, unit, help, field) in partition_gauges_u {
            let slot = storage.clone();
            observables_u64.push(
                meter
                    .u64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(help)
                    .with_callback(move |o| {
                        for (attrs, p) in slot.stats().iter() {
                            o.observe(field(p), attrs);
                        }
                    })
                    .build(),
            );
        }
        {
            let slot = storage.clone();
            observables_u64.push(
                meter
                    .u64_observable_gauge("sediment_partitions")
                    .with_unit("{partition}")
                    .with_description("Partitions hosted by this node, by role (leader; follower once replication lands)")
                    .with_callback(move |o| {
                        let stats = slot.stats();
                        let leaders = stats.iter().filter(|(_, p)| p.leader).count() as u64;
                        o.observe(leaders, &[KeyValue::new("role", "leader")]);
                        o.observe(stats.len() as u64 - leaders, &[KeyValue::new("role", "follower")]);
                    })
                    .build(),
            );
        }
        observables_u64.push(
            meter
                .u64_observable_gauge("sediment_ready")
                .with_description("1 when the broker serves Kafka requests (logs recovered, metadata loaded), 0 before")
                .with_callback(|o| o.observe(u64::from(is_ready()), &[]))
                .build(),
        );
        observables_u64.push(
            meter
                .u64_observable_gauge("sediment_build_info")
                .with_description("Always 1; the version label names the running build")
                .with_callback(|o| o.observe(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]))
                .build(),
        );
        observables.push(
            meter
                .i64_observable_gauge("process_start_time_seconds")
                .with_unit("s")
                .with_description("Start time of the process since the Unix epoch in seconds")
                .with_callback(|o| {
                    let secs = start_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                    o.observe(secs, &[]);
                })
                .build(),
        );

        Metrics {
            provider,
            registry,
            requests,
            request_latency,
            request_errors,
            produce_bytes,
            produce_records,
            fetch_bytes,
            produce_latency,
            fetch_latency,
            fsync_latency,
            fsync_errors,
            unreadable_batches,
            connections_open,
            connections_total,
            connections_rejected,
            tier,
            replication,
            storage,
            _observables: observables,
            _observables_u64: observables_u64,
        }
    }

    /// Registers the broker as the source of the per-partition gauges.
    pub fn set_storage_source(&self, source: Weak<dyn StorageSource>) {
        *self.storage.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
        self.storage.invalidate();
    }

    /// Bound request counter and latency histogram for one API (`api` is Kafka's request name,
    /// e.g. `Produce`). Bind once and keep the handle: the series exists (at zero) from then on.
    pub fn api(&self, api: &'static str) -> ApiMetrics {
        let attrs = [KeyValue::new("api", api)];
        ApiMetrics { api, requests: self.requests.bind(&attrs), latency: self.request_latency.bind(&attrs) }
    }

    /// A response of `api` carried `error` (a Kafka error name, see [`kafka_error_name`]).
    /// Not a hot path: only error responses get here.
    pub fn request_error(&self, api: &'static str, error: &str) {
        self.request_errors.add(1, &[KeyValue::new("api", api), KeyValue::new("error", error.to_string())]);
    }

    /// Bound byte and record counters for one topic.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        let attrs = [KeyValue::new("topic", topic.to_string())];
        TopicMetrics {
            produce_bytes: self.produce_bytes.bind(&attrs),
            produce_records: self.produce_records.bind(&attrs),
            fetch_bytes: self.fetch_bytes.bind(&attrs),
        }
    }

    /// Produce latency by acks (`-1` is all).
    #[inline]
    pub fn produce_latency(&self, acks: i16, elapsed: Duration) {
        let i = match acks {
            0 => 0,
            1 => 1,
            _ => 2,
        };
        self.produce_latency[i].record(elapsed.as_secs_f64());
    }

    #[inline]
    pub fn fetch_latency(&self, elapsed: Duration) {
        self.fetch_latency.record(elapsed.as_secs_f64(), &[]);
    }

    /// One fsync of a partition log.
    #[inline]
    pub fn fsync(&self, elapsed: Duration) {
        self.fsync_latency.record(elapsed.as_secs_f64(), &[]);
    }

    pub fn fsync_failed(&self) {
        self.fsync_errors.add(1);
    }

    /// A stored batch whose records could not be walked (written before validation, or damaged).
    pub fn unreadable_batch(&self) {
        self.unreadable_batches.add(1);
    }

    pub fn connection_opened(&self) {
        self.connections_total.add(1);
        self.connections_open.add(1);
    }

    pub fn connection_closed(&self) {
        self.connections_open.add(-1);
    }

    pub fn connection_rejected(&self) {
        self.connections_rejected.add(1);
    }

    /// Flushes and stops the metric readers (the OTLP reader exports a last time).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics provider shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(kafka_error_name("UnknownTopicOrPartition"), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(kafka_error_name("NotLeaderOrFollower"), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(kafka_error_name("RequestTimedOut"), "REQUEST_TIMED_OUT");
    }
}
