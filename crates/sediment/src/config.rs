//! `sediment serve` configuration: flags > `SEDIMENT_*` environment > TOML file (`--config`) >
//! defaults. Everything is validated before any socket opens; an error names the bad key in one
//! line and the process exits with code 2.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use sediment_broker::{BrokerConfig, FsyncPolicy};
use sediment_telemetry::{LogFormat, OtlpSettings};

/// Flags of `sediment serve`. Each is optional so that unset flags do not override the
/// environment or the file.
#[derive(clap::Args, Debug, Default, Serialize)]
pub struct ServeArgs {
    /// TOML config file (same keys as the flags, with underscores: node_id, listen, ...)
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit (0 if valid, 2 with the bad key otherwise)
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,
    /// This broker's node id [default: 1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i32>,
    /// Kafka listener address [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Address clients are told to connect to [default: the listen address]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_listener: Option<String>,
    /// Admin HTTP address for /metrics, /health, /ready [default: 127.0.0.1:9644]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Raft peer listener [default: 127.0.0.1:9093]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_listen: Option<String>,
    /// Data directory [default: ./sediment-data]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Object store URL: file://PATH, s3://BUCKET/PREFIX or memory:// [default: file://<data-dir>/objects]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store: Option<String>,
    /// The cluster's voters, this node included: ID=HOST:RAFTPORT,...
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// The cluster id (Kafka's cluster.id: 22 characters of URL-safe base64, as `kafka-storage random-uuid` prints), the same on every broker [default: drawn by the first broker]
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Read-through cache directory [default: <data-dir>/cache]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Read-through cache size, e.g. 1073741824, 512MiB, 4GiB [default: 1GiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<String>,
    /// Memory tier of the read-through cache, e.g. 2GiB [default: cache size / 8, 32MiB..512MiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_memory: Option<String>,
    /// fsync policy: always (group commit; default) or never (page cache only; can lose acked data on a crash)
    #[arg(long, value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<String>,
    /// Tiered storage: refuse produce (KAFKA_STORAGE_ERROR) once the partition logs on this broker
    /// hold more than this, e.g. 50GiB, while uploads are behind [default: no limit]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_local_bytes: Option<String>,
    /// Log line format: text (default) or json (one JSON object per line). Filter with RUST_LOG
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// A size written as a string (`"4GiB"`) or a plain integer of bytes: TOML integers and
/// `SEDIMENT_*` values that look like numbers arrive as integers.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Text(String),
    Bytes(u64),
}

impl SizeValue {
    fn into_string(self) -> String {
        match self {
            SizeValue::Text(s) => s,
            SizeValue::Bytes(n) => n.to_string(),
        }
    }
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    SizeValue::deserialize(d).map(SizeValue::into_string)
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<SizeValue>::deserialize(d).map(|v| v.map(SizeValue::into_string))
}

/// The file/env/flag schema. Unknown keys are errors.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node_id: i32,
    pub listen: String,
    pub advertised_listener: Option<String>,
    pub admin_listen: String,
    pub raft_listen: String,
    pub data_dir: PathBuf,
    pub object_store: Option<String>,
    pub peers: Option<String>,
    /// Pins the cluster id (Kafka's `cluster.id`).
    pub cluster_id: Option<String>,
    /// The secret every broker of a cluster shares; peers prove they hold it before the Raft
    /// port reads a frame of theirs. Required in cluster mode (this or `cluster_secret_file`).
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret (a mounted Kubernetes Secret); surrounding whitespace
    /// is ignored.
    pub cluster_secret_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    #[serde(deserialize_with = "size")]
    pub cache_size: String,
    /// Memory tier of the read-through cache (a size); unset: cache_size / 8, 32 MiB..512 MiB.
    #[serde(default, deserialize_with = "opt_size")]
    pub cache_memory: Option<String>,
    /// Kafka's remote.log.manager.fetch.max.bytes.per.second (KIP-956): cap on the bytes per
    /// second cold reads fetch from the bucket (a size); unset: no cap.
    #[serde(default, deserialize_with = "opt_size")]
    pub cold_read_max_bytes_per_sec: Option<String>,
    /// While this broker takes produce traffic (any in the last second), cold reads serve at most
    /// this many bytes per second, cache hits included (a size); unset: no cap.
    #[serde(default, deserialize_with = "opt_size")]
    pub cold_read_bytes_per_sec_under_load: Option<String>,
    /// Bucket GETs of cold reads in flight at once (Kafka: remote.log.reader.threads).
    pub cold_read_concurrency: usize,
    /// Chunks a sequential cold reader fetches ahead of itself (0: none).
    pub cold_read_ahead_chunks: usize,
    /// How often a partition leader lists its bucket prefix for orphaned segment objects.
    pub remote_orphan_sweep_interval_ms: u64,
    /// An unreferenced object younger than this is left alone (an upload may be in flight).
    pub remote_orphan_grace_ms: u64,
    /// Tiered storage: local disk limit of the partition logs (a size, e.g. 50GiB).
    #[serde(default, deserialize_with = "opt_size")]
    pub max_local_bytes: Option<String>,
    pub fsync: String,
    /// `text` or `json`.
    pub log_format: String,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    /// A broker without peers runs as the only voter of a Raft cluster of one (the code path
    /// every cluster runs) instead of the single-node path. Off until group commit across
    /// proposals makes small batches as fast there.
    pub single_node_raft: bool,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    /// Largest frame of any request but Produce.
    pub max_non_produce_request_bytes: usize,
    /// Kafka's connections.max.idle.ms.
    pub connections_max_idle_ms: u64,
    /// Kafka's replica.lag.time.max.ms: how far behind a replica may fall and stay in sync.
    pub replica_lag_time_max_ms: u64,
    /// Kafka's queued.max.request.bytes: large request frames in flight over all connections.
    #[serde(deserialize_with = "size")]
    pub queued_max_request_bytes: String,
    /// Smallest segment.bytes a topic may have (Kafka 4: 1 MiB).
    pub min_segment_bytes: u64,
    /// The longest a Fetch waits for data, whatever its max_wait_ms asks.
    pub fetch_max_wait_ms: u64,
    /// `strict` (default) decompresses every compressed produce batch and walks its records, as
    /// Kafka does; `relaxed` checks compressed batches by header and CRC only.
    pub batch_validation: String,
    pub retention_check_interval_ms: u64,
    /// Cluster mode: Kafka's leader.imbalance.check.interval.seconds, in ms; 0 turns leadership
    /// rebalancing off (auto.leader.rebalance.enable=false).
    pub leader_rebalance_interval_ms: u64,
    /// Kafka's producer.id.expiration.ms: idle idempotent producers' state is dropped after this.
    pub producer_id_expiration_ms: i64,
    /// Consumer groups (Kafka's names with underscores; see sediment_broker::group::GroupConfig).
    /// group.initial.rebalance.delay.ms: 0 here (Kafka: 3000), so a new group's first member
    /// gets its assignment at once.
    pub group_initial_rebalance_delay_ms: i64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Partitions of __consumer_offsets when it is created (Kafka: 50).
    pub offsets_topic_num_partitions: i32,
    pub offset_metadata_max_bytes: usize,
    pub offsets_commit_timeout_ms: u64,
    /// offsets.retention.minutes, in ms (-1: never expire).
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    /// Records appended to an offsets partition before it is compacted by a snapshot.
    pub offsets_snapshot_min_records: u64,
    /// Broker-wide defaults for topic configs, by Kafka topic config name.
    pub topic_defaults: BTreeMap<String, String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let g = sediment_broker::group::GroupConfig::default();
        RawConfig {
            node_id: 1,
            listen: "127.0.0.1:9092".into(),
            advertised_listener: None,
            admin_listen: "127.0.0.1:9644".into(),
            raft_listen: "127.0.0.1:9093".into(),
            data_dir: PathBuf::from("./sediment-data"),
            object_store: None,
            peers: None,
            cluster_id: None,
            cluster_secret: None,
            cluster_secret_file: None,
            cache_dir: None,
            cache_size: "1GiB".into(),
            cache_memory: None,
            cold_read_max_bytes_per_sec: None,
            cold_read_bytes_per_sec_under_load: None,
            cold_read_concurrency: 8,
            cold_read_ahead_chunks: 4,
            remote_orphan_sweep_interval_ms: 3_600_000,
            remote_orphan_grace_ms: 3_600_000,
            max_local_bytes: None,
            fsync: "always".into(),
            log_format: "text".into(),
            num_partitions: 1,
            auto_create_topics: true,
            single_node_raft: false,
            max_connections: 10_000,
            max_request_bytes: sediment_protocol_max(),
            max_non_produce_request_bytes: sediment_broker::broker::DEFAULT_MAX_NON_PRODUCE_REQUEST_BYTES,
            connections_max_idle_ms: 600_000,
            replica_lag_time_max_ms: 30_000,
            queued_max_request_bytes: "512MiB".into(),
            min_segment_bytes: 1 << 20,
            fetch_max_wait_ms: 30_000,
            batch_validation: "strict".into(),
            retention_check_interval_ms: 300_000,
            leader_rebalance_interval_ms: 10_000,
            producer_id_expiration_ms: 86_400_000,
            group_initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
            group_min_session_timeout_ms: g.min_session_timeout_ms,
            group_max_session_timeout_ms: g.max_session_timeout_ms,
            offsets_topic_num_partitions: g.offsets_topic_partitions,
            offset_metadata_max_bytes: g.offset_metadata_max_bytes,
            offsets_commit_timeout_ms: g.offset_commit_timeout_ms,
            offsets_retention_ms: g.offsets_retention_ms,
            offsets_retention_check_interval_ms: g.offsets_retention_check_interval_ms,
            offsets_snapshot_min_records: g.offsets_snapshot_min_records,
            topic_defaults: BTreeMap::new(),
        }
    }
}

fn sediment_protocol_max() -> usize {
    100 * 1024 * 1024
}

const KEYS: &[&str] = &[
    "node_id",
    "listen",
    "advertised_listener",
    "admin_listen",
    "raft_listen",
    "data_dir",
    "object_store",
    "peers",
    "cluster_id",
    "cluster_secret",
    "cluster_secret_file",
    "cache_dir",
    "cache_size",
    "cache_memory",
    "cold_read_max_bytes_per_sec",
    "cold_read_bytes_per_sec_under_load",
    "cold_read_concurrency",
    "cold_read_ahead_chunks",
    "remote_orphan_sweep_interval_ms",
    "remote_orphan_grace_ms",
    "max_local_bytes",
    "fsync",
    "log_format",
    "num_partitions",
    "auto_create_topics",
    "single_node_raft",
    "max_connections",
    "max_request_bytes",
    "batch_validation",
    "max_non_produce_request_bytes",
    "connections_max_idle_ms",
    "replica_lag_time_max_ms",
    "queued_max_request_bytes",
    "min_segment_bytes",
    "fetch_max_wait_ms",
    "retention_check_interval_ms",
    "leader_rebalance_interval_ms",
    "producer_id_expiration_ms",
    "group_initial_rebalance_delay_ms",
    "group_min_session_timeout_ms",
    "group_max_session_timeout_ms",
    "offsets_topic_num_partitions",
    "offset_metadata_max_bytes",
    "offsets_commit_timeout_ms",
    "offsets_retention_ms",
    "offsets_retention_check_interval_ms",
    "offsets_snapshot_min_records",
];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub broker: BrokerConfig,
    pub admin_listen: SocketAddr,
    pub raft_listen: SocketAddr,
    pub object_store: ObjectStoreUrl,
    pub peers: BTreeMap<i32, String>,
    /// Without peers: run as the only voter of a cluster of one.
    pub single_node_raft: bool,
    /// Cluster mode: the key peers prove membership with.
    pub cluster_key: Option<sediment_raft::ClusterKey>,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub tiering: TieringSettings,
    pub log_format: LogFormat,
    /// OpenTelemetry export, from the standard `OTEL_*` variables (validated with the rest).
    pub otlp: OtlpSettings,
}

/// Read-path and bucket-housekeeping settings of tiered storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieringSettings {
    pub cache_memory: u64,
    pub cold_read_max_bytes_per_sec: Option<u64>,
    pub cold_read_bytes_per_sec_under_load: Option<u64>,
    pub cold_read_concurrency: usize,
    pub cold_read_ahead_chunks: usize,
    pub orphan_sweep_interval: Duration,
    pub orphan_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
    Memory,
}

/// One-line config error naming the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid config {key}: {msg}"))
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = v.rsplit_once(':').ok_or_else(|| bad(key, format!("\"{v}\" is not HOST:PORT")))?;
    if host.is_empty() {
        return Err(bad(key, format!("\"{v}\" has no host")));
    }
    port.parse::<u16>().map_err(|_| bad(key, format!("\"{port}\" is not a port")))?;
    v.to_socket_addrs().map_err(|e| bad(key, format!("cannot resolve \"{v}\": {e}")))?.next().ok_or_else(|| bad(key, format!("\"{v}\" resolves to no address")))
}

/// Parses `123`, `512MiB`, `4GiB`, `10MB`, `1G`.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_peers(v: &str) -> Result<BTreeMap<i32, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| bad("peers", format!("\"{part}\" is not ID=HOST:PORT")))?;
        let id: i32 = id.trim().parse().map_err(|_| bad("peers", format!("\"{id}\" is not a node id")))?;
        let addr = addr.trim();
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("peers", format!("\"{addr}\" is not HOST:PORT")))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("peers", format!("\"{addr}\" is not HOST:PORT")));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(bad("peers", format!("node id {id} appears twice")));
        }
    }
    Ok(out)
}

fn parse_object_store(v: &str) -> Result<ObjectStoreUrl, ConfigError> {
    if let Some(path) = v.strip_prefix("file://") {
        if path.is_empty() {
            return Err(bad("object_store", "file:// needs a path"));
        }
        return Ok(ObjectStoreUrl::File(PathBuf::from(path)));
    }
    if let Some(rest) = v.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("object_store", "s3:// needs a bucket name"));
        }
        return Ok(ObjectStoreUrl::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
    }
    if v == "memory://" || v == "memory:" {
        return Ok(ObjectStoreUrl::Memory);
    }
    Err(bad("object_store", format!("\"{v}\" is not file://PATH, s3://BUCKET/PREFIX or memory://")))
}

/// Merges defaults, the file, the environment and the flags, then validates.
pub fn load(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = &args.config {
        if !path.exists() {
            return Err(ConfigError(format!("invalid config --config: file {} does not exist", path.display())));
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed("SEDIMENT_").only(KEYS)).merge(Serialized::defaults(args));
    let raw: RawConfig = fig.extract().map_err(|e| {
        let e = e.into_iter().next().map(|e| {
            let key = e.path.join(".");
            let mut msg = e.kind.to_string();
            if let figment::error::Kind::UnknownField(f, _) = &e.kind {
                msg = format!("unknown key \"{f}\"");
            }
            if key.is_empty() { format!("invalid config: {msg}") } else { format!("invalid config {key}: {msg}") }
        });
        ConfigError(e.unwrap_or_else(|| "invalid config".into()))
    })?;
    let mut cfg = validate(raw)?;
    cfg.otlp = OtlpSettings::from_env().map_err(|e| ConfigError(format!("invalid config {e}")))?;
    Ok(cfg)
}

fn validate(raw: RawConfig) -> Result<ServeConfig, ConfigError> {
    if raw.node_id < 0 {
        return Err(bad("node_id", format!("{} is negative", raw.node_id)));
    }
    let listen = parse_addr("listen", &raw.listen)?;
    let (adv_host, adv_port) = match &raw.advertised_listener {
        Some(a) => {
            let (h, p) = a.rsplit_once(':').ok_or_else(|| bad("advertised_listener", format!("\"{a}\" is not HOST:PORT")))?;
            let p: u16 = p.parse().map_err(|_| bad("advertised_listener", format!("\"{p}\" is not a port")))?;
            if h.is_empty() || p == 0 {
                return Err(bad("advertised_listener", format!("\"{a}\" needs a host and a non-zero port")));
            }
            (h.trim_matches(|c| c == '[' || c == ']').to_string(), p)
        }
        None => {
            if listen.ip().is_unspecified() {
                return Err(bad("advertised_listener", format!("required when listen is {listen} (clients cannot connect to an unspecified address)")));
            }
            (listen.ip().to_string(), listen.port())
        }
    };
    let admin_listen = parse_addr("admin_listen", &raw.admin_listen)?;
    let raft_listen = parse_addr("raft_listen", &raw.raft_listen)?;
    let object_store = match &raw.object_store {
        Some(v) => parse_object_store(v)?,
        None => ObjectStoreUrl::File(raw.data_dir.join("objects")),
    };
    let peers = match &raw.peers {
        Some(p) => parse_peers(p)?,
        None => BTreeMap::new(),
    };
    // A node missing from the list joins the running cluster the list names (it waits until
    // `sediment cluster add-broker` adds it); a list of one other node names no cluster.
    if !peers.is_empty() && !peers.contains_key(&raw.node_id) && peers.len() < 2 {
        return Err(bad("peers", format!("the voter list does not include this node ({}); to join a running cluster, list its brokers", raw.node_id)));
    }
    if let Some(id) = &raw.cluster_id
        && !valid_cluster_id(id)
    {
        return Err(bad(
            "cluster_id",
            format!("\"{id}\" is not a cluster id: 22 characters of URL-safe base64 (16 bytes), as `kafka-storage random-uuid` prints"),
        ));
    }
    let secret = match (&raw.cluster_secret, &raw.cluster_secret_file) {
        (Some(_), Some(_)) => return Err(bad("cluster_secret", "set cluster_secret or cluster_secret_file, not both")),
        (Some(s), None) => Some(s.trim().to_string()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).map_err(|e| bad("cluster_secret_file", format!("cannot read {}: {e}", f.display())))?.trim().to_string())
        }
        (None, None) => None,
    };
    let cluster_key = if peers.len() > 1 {
        let Some(secret) = secret else {
            return Err(bad(
                "cluster_secret",
                "required with peers: every broker of the cluster sets the same secret of at least 16 bytes (cluster_secret_file, or SEDIMENT_CLUSTER_SECRET)",
            ));
        };
        let key_name = if raw.cluster_secret_file.is_some() { "cluster_secret_file" } else { "cluster_secret" };
        Some(sediment_raft::ClusterKey::new(secret).map_err(|e| bad(key_name, e))?)
    } else {
        None
    };
    let max_local_bytes = match &raw.max_local_bytes {
        Some(v) => Some(parse_size(v).filter(|n| *n > 0).ok_or_else(|| bad("max_local_bytes", format!("\"{v}\" is not a positive size (e.g. 50GiB)")))?),
        None => None,
    };
    let cache_size = parse_size(&raw.cache_size).ok_or_else(|| bad("cache_size", format!("\"{}\" is not a size (e.g. 512MiB, 4GiB)", raw.cache_size)))?;
    let cache_memory = match &raw.cache_memory {
        Some(v) => {
            parse_size(v).filter(|n| *n >= 8 << 20).ok_or_else(|| bad("cache_memory", format!("\"{v}\" is not a size of at least 8MiB (e.g. 512MiB, 4GiB)")))?
        }
        None => (cache_size / 8).clamp(32 << 20, 512 << 20),
    };
    let rate = |key: &str, v: &Option<String>| match v {
        Some(v) => parse_size(v)
            .filter(|n| *n >= 1 << 20)
            .map(Some)
            .ok_or_else(|| bad(key, format!("\"{v}\" is not a rate of at least 1MiB (bytes per second, e.g. 100MiB)"))),
        None => Ok(None),
    };
    let cold_read_max_bytes_per_sec = rate("cold_read_max_bytes_per_sec", &raw.cold_read_max_bytes_per_sec)?;
    let cold_read_bytes_per_sec_under_load = rate("cold_read_bytes_per_sec_under_load", &raw.cold_read_bytes_per_sec_under_load)?;
    if raw.cold_read_concurrency == 0 {
        return Err(bad("cold_read_concurrency", "must be at least 1"));
    }
    if raw.remote_orphan_sweep_interval_ms == 0 {
        return Err(bad("remote_orphan_sweep_interval_ms", "must be positive"));
    }
    let tiering = TieringSettings {
        cache_memory,
        cold_read_max_bytes_per_sec,
        cold_read_bytes_per_sec_under_load,
        cold_read_concurrency: raw.cold_read_concurrency,
        cold_read_ahead_chunks: raw.cold_read_ahead_chunks,
        orphan_sweep_interval: Duration::from_millis(raw.remote_orphan_sweep_interval_ms),
        orphan_grace: Duration::from_millis(raw.remote_orphan_grace_ms),
    };
    let fsync = match raw.fsync.as_str() {
        "always" => FsyncPolicy::Always,
        "never" => FsyncPolicy::Never,
        other => return Err(bad("fsync", format!("\"{other}\" is not always or never"))),
    };
    let log_format: LogFormat = raw.log_format.parse().map_err(|e| bad("log_format", e))?;
    if raw.num_partitions < 1 {
        return Err(bad("num_partitions", "must be at least 1"));
    }
    if raw.max_connections == 0 {
        return Err(bad("max_connections", "must be at least 1"));
    }
    if raw.max_request_bytes < 1024 {
        return Err(bad("max_request_bytes", "must be at least 1024"));
    }
    if raw.max_non_produce_request_bytes < 64 * 1024 {
        return Err(bad("max_non_produce_request_bytes", "must be at least 65536"));
    }
    let queued_max_request_bytes = parse_size(&raw.queued_max_request_bytes).filter(|n| *n >= raw.max_request_bytes as u64).ok_or_else(|| {
        bad("queued_max_request_bytes", format!("\"{}\" is not a size of at least max_request_bytes ({})", raw.queued_max_request_bytes, raw.max_request_bytes))
    })?;
    if raw.connections_max_idle_ms < 1000 {
        return Err(bad("connections_max_idle_ms", "must be at least 1000"));
    }
    if !(1000..=3_600_000).contains(&raw.replica_lag_time_max_ms) {
        return Err(bad("replica_lag_time_max_ms", "must be between 1000 and 3600000"));
    }
    if !(100..=300_000).contains(&raw.fetch_max_wait_ms) {
        return Err(bad("fetch_max_wait_ms", "must be between 100 and 300000"));
    }
    if let Some(v) = raw.topic_defaults.get("segment.bytes")
        && v.parse::<u64>().is_ok_and(|n| n < raw.min_segment_bytes)
    {
        return Err(bad("topic_defaults", format!("segment.bytes {v} is below min_segment_bytes ({})", raw.min_segment_bytes)));
    }
    let batch_validation = raw.batch_validation.parse().map_err(|e: String| bad("batch_validation", e))?;
    if raw.producer_id_expiration_ms < 1 {
        return Err(bad("producer_id_expiration_ms", "must be positive"));
    }
    if raw.retention_check_interval_ms == 0 {
        return Err(bad("retention_check_interval_ms", "must be positive"));
    }
    let groups = sediment_broker::group::GroupConfig {
        offsets_topic_partitions: raw.offsets_topic_num_partitions,
        initial_rebalance_delay_ms: raw.group_initial_rebalance_delay_ms,
        min_session_timeout_ms: raw.group_min_session_timeout_ms,
        max_session_timeout_ms: raw.group_max_session_timeout_ms,
        offset_metadata_max_bytes: raw.offset_metadata_max_bytes,
        offset_commit_timeout_ms: raw.offsets_commit_timeout_ms,
        offsets_retention_ms: raw.offsets_retention_ms,
        offsets_retention_check_interval_ms: raw.offsets_retention_check_interval_ms,
        offsets_snapshot_min_records: raw.offsets_snapshot_min_records,
        ..Default::default()
    };
    if let Err((key, msg)) = groups.validate() {
        return Err(bad(key, msg));
    }
    if let Err(e) = sediment_broker::topic_config::BrokerDefaults::new(&raw.topic_defaults) {
        return Err(bad("topic_defaults", e));
    }
    let cache_dir = raw.cache_dir.clone().unwrap_or_else(|| raw.data_dir.join("cache"));
    Ok(ServeConfig {
        broker: BrokerConfig {
            node_id: raw.node_id,
            listen,
            advertised_host: adv_host,
            advertised_port: adv_port,
            data_dir: raw.data_dir,
            max_request_bytes: raw.max_request_bytes,
            max_connections: raw.max_connections,
            // never above the frame limit itself
            max_non_produce_request_bytes: raw.max_non_produce_request_bytes.min(raw.max_request_bytes),
            min_segment_bytes: raw.min_segment_bytes.max(14),
            connections_max_idle: Duration::from_millis(raw.connections_max_idle_ms),
            replica_lag_time_max: Duration::from_millis(raw.replica_lag_time_max_ms),
            queued_max_request_bytes: queued_max_request_bytes as usize,
            fetch_max_wait: Duration::from_millis(raw.fetch_max_wait_ms),
            batch_validation,
            auto_create_topics: raw.auto_create_topics,
            num_partitions: raw.num_partitions,
            fsync,
            topic_defaults: raw.topic_defaults,
            retention_check_interval: Duration::from_millis(raw.retention_check_interval_ms),
            leader_rebalance_interval: (raw.leader_rebalance_interval_ms > 0).then(|| Duration::from_millis(raw.leader_rebalance_interval_ms)),
            producer_id_expiration_ms: raw.producer_id_expiration_ms,
            groups,
            max_local_bytes,
            cluster_id: raw.cluster_id,
        },
        admin_listen,
        raft_listen,
        object_store,
        peers,
        single_node_raft: raw.single_node_raft,
        cluster_key,
        cache_dir,
        cache_size,
        tiering,
        log_format,
        otlp: OtlpSettings::off(),
    })
}

/// Kafka's cluster id format: a 16-byte UUID in URL-safe base64 without padding (22
/// characters, the last carrying 2 bits, so one of A, Q, g, w).
fn valid_cluster_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 22 && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_') && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(&args()).unwrap();
        assert_eq!(c.broker.node_id, 1);
        assert_eq!(c.broker.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9644");
        assert_eq!(c.raft_listen.to_string(), "127.0.0.1:9093");
        assert_eq!(c.broker.data_dir, PathBuf::from("./sediment-data"));
        assert_eq!(c.object_store, ObjectStoreUrl::File(PathBuf::from("./sediment-data/objects")));
    }

    #[test]
    fn a_cluster_id_is_kafkas_format() {
        let mut a = args();
        assert_eq!(load(&a).unwrap().broker.cluster_id, None);
        a.cluster_id = Some("MkU3OEVBNTcwNTJENDM2Qg".into());
        assert_eq!(load(&a).unwrap().broker.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qg"));
        for bad in ["", "short", "MkU3OEVBNTcwNTJENDM2QgA", "MkU3OEVBNTcwNTJENDM2Q=", "MkU3OEVBNTcwNTJENDM2QB", "MkU3OEVBNTcwNTJ+NDM2Qg"] {
            a.cluster_id = Some(bad.into());
            let e = load(&a).unwrap_err().to_string();
            assert!(e.contains("cluster_id") && e.contains("22 characters"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "node_id = 7\nlisten = \"127.0.0.1:19092\"\n[topic_defaults]\n\"retention.ms\" = \"1000\"\n").unwrap();
        let mut a = args();
        a.config = Some(f);
        a.node_id = Some(9);
        let c = load(&a).unwrap();
        assert_eq!(c.broker.node_id, 9);
        assert_eq!(c.broker.listen.port(), 19092);
        assert_eq!(c.broker.topic_defaults.get("retention.ms").map(String::as_str), Some("1000"));
    }

    #[test]
    fn tiering_settings() {
        let t = load(&args()).unwrap().tiering;
        assert_eq!(t.cache_memory, 128 << 20, "1/8 of the 1 GiB default cache");
        assert_eq!((t.cold_read_max_bytes_per_sec, t.cold_read_bytes_per_sec_under_load), (None, None));
        assert_eq!(t.orphan_sweep_interval, Duration::from_secs(3600));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "cold_read_bytes_per_sec_under_load = \"64MiB\"\ncold_read_max_bytes_per_sec = \"1GiB\"\nremote_orphan_grace_ms = 5000\n").unwrap();
        let mut a = args();
        a.config = Some(f.clone());
        a.cache_memory = Some("3GiB".into());
        let t = load(&a).unwrap().tiering;
        assert_eq!(t.cache_memory, 3 << 30);
        assert_eq!(t.cold_read_bytes_per_sec_under_load, Some(64 << 20));
        assert_eq!(t.cold_read_max_bytes_per_sec, Some(1 << 30));
        assert_eq!(t.orphan_grace, Duration::from_secs(5));
        for (body, key) in [
            ("cold_read_bytes_per_sec_under_load = \"10\"\n", "cold_read_bytes_per_sec_under_load"),
            ("cold_read_max_bytes_per_sec = \"fast\"\n", "cold_read_max_bytes_per_sec"),
            ("cold_read_concurrency = 0\n", "cold_read_concurrency"),
            ("remote_orphan_sweep_interval_ms = 0\n", "remote_orphan_sweep_interval_ms"),
        ] {
            std::fs::write(&f, body).unwrap();
            let mut a = args();
            a.config = Some(f.clone());
            assert!(load(&a).unwrap_err().0.contains(key), "{body}");
        }
        let mut a = args();
        a.cache_memory = Some("1MiB".into());
        assert!(load(&a).unwrap_err().0.contains("cache_memory"));
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "bogus_key = 1\n").unwrap();
        let mut a = args();
        a.config = Some(f);
        assert!(load(&a).unwrap_err().0.contains("bogus_key"));
        let mut a = args();
        a.listen = Some("nope".into());
        assert!(load(&a).unwrap_err().0.contains("listen"));
        let mut a = args();
        a.peers = Some("2=127.0.0.1:9093".into());
        assert!(load(&a).unwrap_err().0.contains("peers"));
        // not in a list of a running cluster's brokers: joins it
        let mut a = args();
        a.peers = Some("2=127.0.0.1:9093,3=127.0.0.1:9094".into());
        let secret = dir.path().join("secret.toml");
        std::fs::write(&secret, "cluster_secret = \"a-secret-of-enough-length\"\n").unwrap();
        a.config = Some(secret);
        assert_eq!(load(&a).expect("joining").peers.len(), 2);
        let mut a = args();
        a.cache_size = Some("lots".into());
        assert!(load(&a).unwrap_err().0.contains("cache_size"));
        let mut a = args();
        a.object_store = Some("ftp://x".into());
        assert!(load(&a).unwrap_err().0.contains("object_store"));
    }

    #[test]
    fn log_format() {
        assert_eq!(load(&args()).unwrap().log_format, LogFormat::Text);
        let mut a = args();
        a.log_format = Some("json".into());
        assert_eq!(load(&a).unwrap().log_format, LogFormat::Json);
        a.log_format = Some("xml".into());
        assert!(load(&a).unwrap_err().0.contains("log_format"));
    }

    #[test]
    fn max_local_bytes() {
        assert_eq!(load(&args()).unwrap().broker.max_local_bytes, None);
        let mut a = args();
        a.max_local_bytes = Some("2GiB".into());
        assert_eq!(load(&a).unwrap().broker.max_local_bytes, Some(2 << 30));
        a.max_local_bytes = Some("0".into());
        assert!(load(&a).unwrap_err().0.contains("max_local_bytes"));
    }

    #[test]
    fn group_settings_come_from_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "group_initial_rebalance_delay_ms = 3000\noffsets_topic_num_partitions = 50\n").unwrap();
        let mut a = args();
        a.config = Some(f.clone());
        let c = load(&a).unwrap();
        assert_eq!(c.broker.groups.initial_rebalance_delay_ms, 3000);
        assert_eq!(c.broker.groups.offsets_topic_partitions, 50);
        assert_eq!(load(&args()).unwrap().broker.groups.initial_rebalance_delay_ms, 0, "Sediment's default");
        std::fs::write(&f, "group_max_session_timeout_ms = 1000\n").unwrap();
        assert!(load(&a).unwrap_err().0.contains("group_max_session_timeout_ms"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn a_cluster_needs_a_secret_of_16_bytes() {
        let mut a = args();
        a.peers = Some("1=127.0.0.1:9191,2=127.0.0.1:9192".into());
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("cluster_secret"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "cluster_secret = \"short\"\n").unwrap();
        a.config = Some(f.clone());
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("cluster_secret") && e.contains("16"), "{e}");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a-secret-of-enough-length\n").unwrap();
        std::fs::write(&f, format!("cluster_secret_file = {:?}\n", secret.display().to_string())).unwrap();
        assert!(load(&a).unwrap().cluster_key.is_some());
        // one node: no cluster, no secret needed
        a.config = None;
        a.peers = None;
        assert!(load(&args()).unwrap().cluster_key.is_none());
    }

    #[test]
    fn sizes_may_be_plain_integers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "cache_size = 2147483648\nmax_local_bytes = 1000000000\ncache_memory = \"64MiB\"\n").unwrap();
        let mut a = args();
        a.config = Some(f);
        let c = load(&a).unwrap();
        assert_eq!(c.cache_size, 2 << 30);
        assert_eq!(c.broker.max_local_bytes, Some(1_000_000_000));
        assert_eq!(c.tiering.cache_memory, 64 << 20);
    }
}
