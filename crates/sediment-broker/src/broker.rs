//! The broker's state: configuration, durable metadata and the partitions it hosts.
//!
//! Reads of the topic map are lock-free in practice (an `RwLock` around a map of `Arc`s that
//! writers replace wholesale); admin changes are serialized by the metadata store's lock, which
//! also persists them before they become visible.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::error::ApiError;
use crate::metadata::{MetadataError, MetadataStore, TopicRecord};
use crate::partition::{FsyncPolicy, Partition};
use crate::topic_config::{self, BrokerDefaults, TopicConfig};
use sediment_protocol::ErrorCode;

/// Everything the broker needs to run, already validated by the binary.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to (Metadata, DescribeCluster).
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub max_request_bytes: usize,
    /// Largest frame of any request but Produce (those decode into structures many times their
    /// wire size).
    pub max_non_produce_request_bytes: usize,
    /// Kafka's `queued.max.request.bytes`: bytes of large request frames being received or
    /// processed at once, over all connections.
    pub queued_max_request_bytes: usize,
    /// Kafka's `connections.max.idle.ms`: a connection with no complete request and nothing
    /// pending for this long is closed.
    pub connections_max_idle: std::time::Duration,
    /// Kafka's replica.lag.time.max.ms: a replica that has not reached where its leader's log
    /// ended this long ago is out of the ISR (a dead broker's replicas at once).
    pub replica_lag_time_max: Duration,
    /// The longest a Fetch waits for data, whatever its `max_wait_ms` asks.
    pub fetch_max_wait: std::time::Duration,
    pub max_connections: usize,
    /// Smallest `segment.bytes` a topic may have (Kafka 4: 1 MiB).
    pub min_segment_bytes: u64,
    /// How much of a compressed produce batch is read before it is accepted.
    pub batch_validation: sediment_protocol::batch::ValidationMode,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub fsync: FsyncPolicy,
    /// Broker-level defaults for topic configs, keyed by topic config name.
    pub topic_defaults: BTreeMap<String, String>,
    pub retention_check_interval: Duration,
    /// Cluster mode: how often a partition leader checks whether the partition's preferred
    /// replica (the first in its assignment) should lead instead; `None` turns leadership
    /// rebalancing off (Kafka's `auto.leader.rebalance.enable=false`).
    pub leader_rebalance_interval: Option<Duration>,
    /// Kafka's `producer.id.expiration.ms`: idle producers' state is dropped after this.
    pub producer_id_expiration_ms: i64,
    /// The group coordinator's settings (`crate::group`).
    pub groups: crate::group::GroupConfig,
    /// Tiered storage: when the partition logs on this broker hold more than this many bytes
    /// (uploads are behind, e.g. the bucket is unreachable), produce fails with
    /// KAFKA_STORAGE_ERROR instead of filling the disk. `None`: no limit.
    pub max_local_bytes: Option<u64>,
    /// The cluster id this broker belongs to (Kafka's `cluster.id`), when the operator pins
    /// it: a new data dir takes it, and a broker whose metadata names another refuses to start.
    /// `None`: a new single node draws one, and a cluster keeps the first its brokers proposed.
    pub cluster_id: Option<String>,
}

/// Default of `max_non_produce_request_bytes`: 4 MiB (an OffsetCommit of ~200,000 partitions, a
/// Metadata request naming 100,000 topics).
pub const DEFAULT_MAX_NON_PRODUCE_REQUEST_BYTES: usize = 4 << 20;

impl BrokerConfig {
    /// A config for tests: ephemeral port, given data dir.
    pub fn for_tests(data_dir: &Path) -> BrokerConfig {
        BrokerConfig {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 0,
            data_dir: data_dir.to_path_buf(),
            max_request_bytes: sediment_protocol::frame::DEFAULT_MAX_REQUEST_BYTES,
            max_non_produce_request_bytes: DEFAULT_MAX_NON_PRODUCE_REQUEST_BYTES,
            queued_max_request_bytes: 512 << 20,
            connections_max_idle: std::time::Duration::from_secs(600),
            replica_lag_time_max: Duration::from_secs(30),
            fetch_max_wait: std::time::Duration::from_secs(30),
            max_connections: 1024,
            // in-process tests roll tiny segments on purpose
            min_segment_bytes: 14,
            batch_validation: Default::default(),
            auto_create_topics: true,
            num_partitions: 1,
            fsync: FsyncPolicy::Always,
            topic_defaults: BTreeMap::new(),
            retention_check_interval: Duration::from_secs(300),
            leader_rebalance_interval: Some(Duration::from_secs(10)),
            producer_id_expiration_ms: 86_400_000,
            groups: crate::group::GroupConfig::default(),
            max_local_bytes: None,
            cluster_id: None,
        }
    }
}

/// A topic and its partitions. Replaced wholesale when its partitions or configs change.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub config: TopicConfig,
    /// One slot per partition: `Some` when this broker hosts it (always on a single node; in a
    /// cluster, the partitions with a replica here).
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    /// The partition if this broker hosts it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i)).and_then(|p| p.as_ref())
    }

    /// Partitions of the topic, hosted here or not.
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The partition, if this broker may serve clients for it: hosted here and, when
    /// replicated, led from here. Otherwise the error a Kafka broker answers.
    pub fn leader_partition(&self, index: i32) -> Result<&Arc<Partition>, ErrorCode> {
        if index < 0 || index >= self.partition_count() {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        match self.partition(index) {
            Some(p) if p.replica().is_none_or(|r| r.is_leader()) => Ok(p),
            _ => Err(ErrorCode::NotLeaderOrFollower),
        }
    }

    /// The partitions this broker hosts.
    pub fn hosted(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().flatten()
    }
}

/// Failure to start the broker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot open partition {topic}-{partition}: {source}")]
    Partition { topic: String, partition: i32, source: sediment_log::LogError },
    #[error("invalid broker topic defaults: {0}")]
    Defaults(String),
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot load consumer groups: {0}")]
    Groups(String),
    #[error("cannot open the remote log of {topic}-{partition}: {source}")]
    Tier { topic: String, partition: i32, source: sediment_tier::TierError },
    #[error("this data dir belongs to cluster {found}, not to the configured cluster_id {configured}")]
    ClusterIdMismatch { configured: String, found: String },
}

pub struct Broker {
    pub config: BrokerConfig,
    pub defaults: BrokerDefaults,
    meta: Mutex<MetadataStore>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    by_id: RwLock<HashMap<Uuid, Arc<Topic>>>,
    cluster_id: String,
    shutdown: watch::Receiver<bool>,
    /// (next producer id, end of the reserved block).
    producer_ids: Mutex<(i64, i64)>,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::GroupCoordinator,
    /// Tiered storage (the bucket and the read-through cache), if configured.
    pub tier: Option<Arc<sediment_tier::Tier>>,
    /// Bytes of all partition logs on this broker (refreshed every few hundred ms and bumped by
    /// appends in between), checked against `max_local_bytes`.
    local_bytes: AtomicU64,
    /// When a refused produce was last logged (rate limit of that log line).
    disk_full_logged_ms: std::sync::atomic::AtomicI64,
    /// Cluster mode (`--peers` names other brokers): the controller and this broker's peers.
    pub cluster: Option<Arc<crate::cluster::ClusterCtx>>,
    /// Bytes of large request frames being received or processed, over all connections
    /// (Kafka's `queued.max.request.bytes`): a connection waits for its share before it reads
    /// the body of a frame, so many large requests at once slow down instead of exhausting memory.
    pub request_budget: Arc<tokio::sync::Semaphore>,
}

/// Producer ids reserved per metadata write (Kafka's ProducerIdManager uses blocks of 1000).
pub(crate) const PRODUCER_ID_BLOCK: i64 = 1000;

use sediment_log::clock::now_ms;

/// Kafka's legal topic names: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    sediment_protocol::names::validate_topic_name(name)
}

impl Broker {
    /// Opens the data dir: metadata, then every partition log (recovering torn tails).
    pub fn open(config: BrokerConfig, shutdown: watch::Receiver<bool>) -> Result<Arc<Broker>, StartError> {
        Self::open_with_tier(config, shutdown, None)
    }

    /// [`open`](Self::open) with tiered storage: every partition of a non-internal topic gets
    /// its remote side, and tiered topics keep only `local.retention.*` on disk.
    pub fn open_with_tier(config: BrokerConfig, shutdown: watch::Receiver<bool>, tier: Option<Arc<sediment_tier::Tier>>) -> Result<Arc<Broker>, StartError> {
        Self::open_inner(config, shutdown, tier, None)
    }

    /// Opens a broker that is a member of a cluster: topics come from the controller (applied
    /// by [`crate::cluster::follow`]), partitions are replicated by their Raft groups.
    /// A cluster member; with a `tier`, its replicated partitions tier too (the leader uploads,
    /// every replica applies the remote segment list its partition's Raft log commits).
    pub fn open_cluster(
        config: BrokerConfig,
        shutdown: watch::Receiver<bool>,
        ctx: Arc<crate::cluster::ClusterCtx>,
        tier: Option<Arc<sediment_tier::Tier>>,
    ) -> Result<Arc<Broker>, StartError> {
        Self::open_inner(config, shutdown, tier, Some(ctx))
    }

    fn open_inner(
        config: BrokerConfig,
        shutdown: watch::Receiver<bool>,
        tier: Option<Arc<sediment_tier::Tier>>,
        cluster: Option<Arc<crate::cluster::ClusterCtx>>,
    ) -> Result<Arc<Broker>, StartError> {
        let defaults = BrokerDefaults::new(&config.topic_defaults).map_err(StartError::Defaults)?;
        let logs = config.data_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| StartError::DataDir { path: logs.clone(), source })?;
        remove_deleted_dirs(&logs);
        let meta = MetadataStore::open(&config.data_dir.join("meta"), config.node_id, config.cluster_id.as_deref())?;
        // a lone broker's id is its metadata's; a cluster's is the controller's (checked there)
        if cluster.is_none()
            && let Some(want) = &config.cluster_id
            && meta.cluster_id() != want
        {
            return Err(StartError::ClusterIdMismatch { configured: want.clone(), found: meta.cluster_id().to_string() });
        }
        let cluster_id = config.cluster_id.clone().unwrap_or_else(|| meta.cluster_id().to_string());
        let mut topics = HashMap::new();
        let mut by_id = HashMap::new();
        // in a cluster, the topics are the controller's (metadata.json keeps node id and cluster id)
        let local_topics: Vec<TopicRecord> = if cluster.is_some() { Vec::new() } else { meta.topics().cloned().collect() };
        for rec in &local_topics {
            let mut partitions = Vec::new();
            for p in 0..rec.partitions {
                let part = open_partition(&logs, &rec.name, &rec.id, p, &rec.config, &defaults, config.fsync, tier.as_ref(), false).map_err(|e| match e {
                    PartitionOpenError::Log(source) => StartError::Partition { topic: rec.name.clone(), partition: p, source },
                    PartitionOpenError::Tier(source) => StartError::Tier { topic: rec.name.clone(), partition: p, source },
                })?;
                partitions.push(Some(part));
            }
            let t = Arc::new(Topic { name: rec.name.clone(), id: rec.id, config: rec.config.clone(), partitions });
            by_id.insert(rec.id, t.clone());
            topics.insert(rec.name.clone(), t);
        }
        tracing::info!(topics = topics.len(), cluster_id = %cluster_id, "metadata loaded");
        let groups_config = config.groups.clone();
        let request_budget = Arc::new(tokio::sync::Semaphore::new(config.queued_max_request_bytes.min(u32::MAX as usize)));
        let broker = Arc::new(Broker {
            config,
            defaults,
            meta: Mutex::new(meta),
            topics: RwLock::new(topics),
            by_id: RwLock::new(by_id),
            cluster_id,
            shutdown,
            producer_ids: Mutex::new((0, 0)),
            groups: crate::group::GroupCoordinator::new(groups_config),
            tier,
            local_bytes: AtomicU64::new(0),
            request_budget,
            disk_full_logged_ms: std::sync::atomic::AtomicI64::new(0),
            cluster: cluster.clone(),
        });
        match &cluster {
            // a cluster's consumer groups live on its replicated __consumer_offsets partitions
            // (cluster::open_replica starts each one's coordinator)
            Some(ctx) => {
                let rec = sediment_raft::BrokerRecord {
                    id: broker.config.node_id,
                    host: broker.config.advertised_host.clone(),
                    port: broker.config.advertised_port,
                    // filled in by `register` from the metadata group's membership
                    raft_addr: String::new(),
                    rack: None,
                };
                crate::cluster::register(ctx.clone(), rec, broker.cluster_id.clone());
                tokio::spawn(crate::cluster::follow(Arc::downgrade(&broker), ctx.clone()));
                if let Some(every) = broker.config.leader_rebalance_interval {
                    tokio::spawn(crate::cluster::rebalance_leaders(Arc::downgrade(&broker), ctx.clone(), every));
                }
                tokio::spawn(crate::cluster::maintain_isr(Arc::downgrade(&broker), ctx.clone()));
            }
            None => broker.groups.start(&broker).map_err(StartError::Groups)?,
        }
        tokio::spawn(retention_loop(Arc::downgrade(&broker), broker.config.retention_check_interval));
        if broker.config.max_local_bytes.is_some() {
            broker.refresh_local_bytes();
            tokio::spawn(local_usage_loop(Arc::downgrade(&broker)));
        }
        for t in broker.topics() {
            let created = broker.meta.lock().unwrap_or_else(|e| e.into_inner()).topics().find(|r| r.id == t.id).map_or(0, |r| r.created_ms);
            crate::tiering::publish_topic(broker.tier.as_ref(), &t.name, &t.id, t.partitions.len() as i32, &t.config, created);
        }
        Ok(broker)
    }

    /// Kafka's cluster id: the controller's in a cluster (until applied, the pinned
    /// `cluster_id`, else empty), else this node's.
    pub fn cluster_id(&self) -> String {
        match &self.cluster {
            // empty until this broker has applied the controller's: a broker that restarted on
            // an empty disk must not announce an id of its own (clients would see two clusters)
            Some(c) => {
                let applied = c.state().cluster_id.clone();
                if applied.is_empty() { self.config.cluster_id.clone().unwrap_or_default() } else { applied }
            }
            None => self.cluster_id.clone(),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn logs_dir(&self) -> PathBuf {
        self.config.data_dir.join("logs")
    }

    pub(crate) fn install(&self, topic: Arc<Topic>) {
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).insert(topic.id, topic.clone());
        self.topics.write().unwrap_or_else(|e| e.into_inner()).insert(topic.name.clone(), topic);
    }

    /// Removes a topic from the maps (if they still hold this incarnation of it).
    pub(crate) fn uninstall(&self, topic: &Topic) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.get(&topic.name).is_some_and(|t| t.id == topic.id) {
            topics.remove(&topic.name);
        }
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).remove(&topic.id);
    }

    /// Stops a removed topic's partitions and deletes their directories in the background.
    pub(crate) fn remove_topic_dirs(&self, topic: &Topic) {
        for p in topic.hosted() {
            self.remove_partition_dir(&topic.name, &topic.id, p);
        }
    }

    /// Undoes a topic creation that failed part-way: the partitions opened so far and the
    /// directory of the one that failed (`upto`) are removed.
    pub(crate) fn discard_partitions(&self, topic: &str, opened: Vec<Option<Arc<Partition>>>, upto: i32) {
        let count = opened.len();
        for p in opened.iter().flatten() {
            p.shutdown();
            if let Some(r) = p.remote() {
                r.close();
            }
        }
        // close their files first: with the descriptors exhausted, removing needs them back
        drop(opened);
        let logs = self.logs_dir();
        for index in 0..=upto {
            if let Ok(dir) = partition_dir(&logs, topic, index)
                && dir.exists()
            {
                tokio::spawn(remove_dir_retrying(dir));
            }
        }
        tracing::warn!(topic, partitions = count, "topic creation failed part-way; removed what it had created");
    }

    /// Stops a partition here and deletes its directory (renamed at once, removed in the
    /// background; a restart finishes what a crash interrupted).
    pub(crate) fn remove_partition_dir(&self, topic: &str, id: &Uuid, p: &Partition) {
        p.shutdown();
        if let Some(r) = p.remote() {
            r.close();
        }
        let logs = self.logs_dir();
        let dir = match partition_dir(&logs, topic, p.index) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(topic, partition = p.index, error = %e, "not removing a partition dir outside the logs dir");
                return;
            }
        };
        let tomb = logs.join(format!("{}-{}.{}-delete", topic, p.index, id.simple()));
        if let Err(e) = std::fs::rename(&dir, &tomb) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rename deleted partition dir");
            return;
        }
        tokio::spawn(remove_dir_retrying(tomb));
    }

    /// Validates a topic's config overrides.
    pub fn validate_configs(&self, configs: &BTreeMap<String, String>) -> Result<(), ApiError> {
        for (k, v) in configs {
            topic_config::validate(k, v).map_err(|m| ApiError::new(ErrorCode::InvalidConfig, m))?;
        }
        // Kafka 4's floor (KIP-1030): tiny segments cost three files and an upload per append
        if let Some(v) = configs.get("segment.bytes")
            && let Ok(n) = v.parse::<i64>()
            && n < self.config.min_segment_bytes as i64
        {
            return Err(ApiError::new(ErrorCode::InvalidConfig, format!("segment.bytes {n} is below the minimum of {} bytes", self.config.min_segment_bytes)));
        }
        Ok(())
    }

    /// Creates a topic (or only validates the request). `partitions` < 1 means the default.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, ApiError> {
        validate_topic_name(name).map_err(|m| ApiError::new(ErrorCode::InvalidTopicException, m))?;
        let partitions = if partitions == -1 { self.config.num_partitions } else { partitions };
        crate::topic_rules::check_partition_count(partitions)?;
        if replication_factor != -1 && replication_factor != 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {replication_factor} is larger than the 1 available broker"),
            ));
        }
        self.validate_configs(&configs)?;
        crate::descriptors::check_room(partitions as u64)?;
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if self.topic(name).is_some() {
            return Err(ApiError::new(ErrorCode::TopicAlreadyExists, format!("topic \"{name}\" already exists")));
        }
        {
            let existing = self.topics();
            crate::topic_rules::check_collision(name, existing.iter().map(|t| t.name.as_str()))?;
        }
        let config = TopicConfig { overrides: configs };
        let id = sediment_log::random::uuid_v4();
        if validate_only {
            return Ok(Arc::new(Topic { name: name.into(), id, config, partitions: Vec::new() }));
        }
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            match open_partition(&self.logs_dir(), name, &id, p, &config, &self.defaults, self.config.fsync, self.tier.as_ref(), true) {
                Ok(part) => parts.push(Some(part)),
                Err(e) => {
                    // out of file descriptors or disk: leave nothing of the topic behind
                    self.discard_partitions(name, std::mem::take(&mut parts), p);
                    return Err(ApiError::new(ErrorCode::KafkaStorageError, format!("cannot create partition {name}-{p}: {e}")));
                }
            }
        }
        let created_ms = now_ms();
        let rec = TopicRecord { name: name.into(), id, partitions, config: config.clone(), created_ms };
        if let Err(e) = meta.update(|t| t.insert(name.to_string(), rec)) {
            self.discard_partitions(name, std::mem::take(&mut parts), partitions - 1);
            return Err(ApiError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        crate::tiering::publish_topic(self.tier.as_ref(), name, &id, partitions, &config, created_ms);
        let topic = Arc::new(Topic { name: name.into(), id, config, partitions: parts });
        self.install(topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes a topic and, in the background, its data.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        if name == crate::group::OFFSETS_TOPIC {
            return Err(ApiError::new(ErrorCode::InvalidTopicException, format!("internal topic {name} cannot be deleted")));
        }
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = self.topic(name) else {
            return Err(ApiError::unknown_topic(name));
        };
        meta.update(|t| t.remove(name)).map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, e.to_string()))?;
        self.uninstall(&topic);
        self.remove_topic_dirs(&topic);
        crate::tiering::forget_topic(self.tier.as_ref(), name, &topic.id);
        tracing::info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), ApiError> {
        if name == crate::group::OFFSETS_TOPIC {
            // Groups are placed by hash of their id over the partition count: it must not change.
            return Err(ApiError::new(ErrorCode::InvalidTopicException, format!("the partition count of internal topic {name} is fixed")));
        }
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = self.topic(name) else {
            return Err(ApiError::unknown_topic(name));
        };
        let current = topic.partitions.len() as i32;
        crate::topic_rules::check_partition_growth(current, count)?;
        crate::descriptors::check_room((count - current) as u64)?;
        if validate_only {
            return Ok(());
        }
        let mut parts = topic.partitions.clone();
        for p in current..count {
            let part = open_partition(&self.logs_dir(), name, &topic.id, p, &topic.config, &self.defaults, self.config.fsync, self.tier.as_ref(), true)
                .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, format!("cannot create partition {name}-{p}: {e}")))?;
            parts.push(Some(part));
        }
        meta.update(|t| {
            if let Some(r) = t.get_mut(name) {
                r.partitions = count;
            }
        })
        .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, e.to_string()))?;
        self.install(Arc::new(Topic { name: topic.name.clone(), id: topic.id, config: topic.config.clone(), partitions: parts }));
        let created = meta.topics().find(|r| r.id == topic.id).map_or(0, |r| r.created_ms);
        crate::tiering::publish_topic(self.tier.as_ref(), name, &topic.id, count, &topic.config, created);
        tracing::info!(topic = name, from = current, to = count, "partitions created");
        Ok(())
    }

    /// Replaces a topic's config overrides after validating them.
    pub fn set_topic_config(&self, name: &str, overrides: BTreeMap<String, String>, validate_only: bool) -> Result<(), ApiError> {
        self.validate_configs(&overrides)?;
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = self.topic(name) else {
            return Err(ApiError::unknown_topic(name));
        };
        if validate_only {
            return Ok(());
        }
        let config = TopicConfig { overrides };
        meta.update(|t| {
            if let Some(r) = t.get_mut(name) {
                r.config = config.clone();
            }
        })
        .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, e.to_string()))?;
        crate::tiering::reconfigure(self.tier.as_ref(), name, &config, &self.defaults, topic.hosted());
        let created = meta.topics().find(|r| r.id == topic.id).map_or(0, |r| r.created_ms);
        crate::tiering::publish_topic(self.tier.as_ref(), name, &topic.id, topic.partitions.len() as i32, &config, created);
        self.install(Arc::new(Topic { name: topic.name.clone(), id: topic.id, config, partitions: topic.partitions.clone() }));
        tracing::info!(topic = name, "topic config changed");
        Ok(())
    }

    /// The next id of the current block, if any is left.
    pub(crate) fn take_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        (ids.0 < ids.1).then(|| {
            ids.0 += 1;
            ids.0 - 1
        })
    }

    /// Installs a new block starting at `start` and hands out its first id.
    pub(crate) fn refill_producer_ids(&self, start: i64) -> i64 {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        *ids = (start + 1, start + PRODUCER_ID_BLOCK);
        start
    }

    /// A new producer id for an idempotent producer; ids are never reused, across restarts too.
    pub fn next_producer_id(&self) -> Result<i64, ApiError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.0 >= ids.1 {
            let start = self
                .meta
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve_producer_ids(PRODUCER_ID_BLOCK)
                .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, format!("cannot reserve producer ids: {e}")))?;
            *ids = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Flushes and closes every partition log (graceful shutdown).
    pub fn flush_all(&self) {
        // one fsync per partition: on several threads, so 10,000 partitions do not take 10,000
        // fsyncs in a row out of the grace period
        let all: Vec<(String, Arc<Partition>)> = self.topics().iter().flat_map(|t| t.hosted().map(|p| (t.name.clone(), p.clone()))).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..SHUTDOWN_FLUSH_THREADS.min(all.len()) {
                s.spawn(|| {
                    while let Some((topic, p)) = all.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(e) = p.shut_down() {
                            tracing::error!(%topic, partition = p.index, error = %e, "flush on shutdown failed");
                        }
                    }
                });
            }
        });
    }

    /// Stops every partition Raft group on this broker (graceful shutdown, before
    /// [`flush_all`](Self::flush_all)); peers elect new leaders for what this broker led.
    pub async fn stop_replicas(&self) {
        use futures::StreamExt;
        let replicas: Vec<Arc<crate::replica::Replica>> = self.topics().iter().flat_map(|t| t.hosted()).filter_map(|p| p.replica().cloned()).collect();
        futures::stream::iter(replicas).for_each_concurrent(SHUTDOWN_CONCURRENCY, |r| async move { r.stop().await }).await;
        if let Some(c) = &self.cluster {
            c.controller.shutdown().await;
        }
    }

    /// Bytes of all partition logs on this broker, summed now.
    pub fn refresh_local_bytes(&self) -> u64 {
        let topics = self.topics();
        let total = topics.iter().flat_map(|t| t.hosted()).map(|p| p.size_bytes()).sum();
        self.local_bytes.store(total, Ordering::Relaxed);
        total
    }

    /// Counts appended bytes towards the local disk limit until the next refresh.
    pub fn note_appended(&self, bytes: u64) {
        if self.config.max_local_bytes.is_some() {
            self.local_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// `Some(message)` when the partition logs hold more than `max_local_bytes`: produce must
    /// fail rather than fill the disk (the uploads are behind; the message says by how much).
    pub fn local_disk_full(&self) -> Option<String> {
        let limit = self.config.max_local_bytes?;
        let used = self.local_bytes.load(Ordering::Relaxed);
        if used <= limit {
            return None;
        }
        let (lag, lag_segments, _) = self.tier.as_ref().map_or((0, 0, 0), |t| t.totals());
        let why = format!(
            "local disk limit reached: partition logs hold {used} bytes, max_local_bytes is {limit}; {lag} bytes in {lag_segments} sealed segments wait for upload to the object store (is the bucket reachable?)"
        );
        let now = now_ms();
        let last = self.disk_full_logged_ms.load(Ordering::Relaxed);
        if now - last >= 5_000 && self.disk_full_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::error!(reason = %why, "produce refused with KAFKA_STORAGE_ERROR");
        }
        Some(why)
    }

    /// One retention pass over every partition.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for t in self.topics() {
            for p in t.hosted() {
                let expired = p.expire_producers(now, self.config.producer_id_expiration_ms);
                if expired > 0 {
                    tracing::debug!(topic = %t.name, partition = p.index, expired, "expired idle producer ids");
                }
                // tiered partitions: local.retention.*, and only segments already in the bucket
                match p.apply_local_retention(now) {
                    Ok(out) if out.segments_deleted > 0 => {
                        tracing::info!(topic = %t.name, partition = p.index, segments = out.segments_deleted, bytes = out.bytes_deleted, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = %t.name, partition = p.index, error = %e, "retention pass failed"),
                }
                // replicated: the Raft log lets go of the entries first, then they are deleted
                if let (Some(r), Some(target)) = (p.replica().cloned(), p.retention_wanted(now)) {
                    let p = p.clone();
                    tokio::spawn(async move { r.after_retention(&p, target).await });
                }
            }
        }
    }
}

/// Removes a directory in the background, retrying for about a minute: right after its
/// partition stopped, tasks may still hold its files, or the process may be out of descriptors
/// (the reason a creation was undone). A restart removes what is left of a `-delete` dir.
async fn remove_dir_retrying(dir: PathBuf) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=12 {
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return,
            Ok(Err(e)) if attempt == 12 => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted partition dir"),
            Ok(Err(_)) => {}
            Err(e) => return tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted partition dir"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// `<logs>/<topic>-<partition>`, Kafka's layout.
/// A partition's directory under `logs`. Refuses any name that is not a valid topic name (and
/// so could name a path outside `logs`), whoever supplied it.
pub fn partition_dir(logs: &Path, topic: &str, partition: i32) -> std::io::Result<PathBuf> {
    validate_topic_name(topic).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if partition < 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("partition {partition} of {topic}")));
    }
    Ok(logs.join(format!("{topic}-{partition}")))
}

#[derive(Debug, thiserror::Error)]
enum PartitionOpenError {
    #[error(transparent)]
    Log(#[from] sediment_log::LogError),
    #[error(transparent)]
    Tier(#[from] sediment_tier::TierError),
}

/// Opens one partition and, with tiered storage, its remote side. `fresh`: just created.
#[allow(clippy::too_many_arguments)]
fn open_partition(
    logs: &Path,
    name: &str,
    id: &Uuid,
    index: i32,
    config: &TopicConfig,
    defaults: &BrokerDefaults,
    fsync: FsyncPolicy,
    tier: Option<&Arc<sediment_tier::Tier>>,
    fresh: bool,
) -> Result<Arc<Partition>, PartitionOpenError> {
    let tiered = crate::tiering::is_tiered(tier, name, config, defaults);
    let dir = partition_dir(logs, name, index).map_err(|source| sediment_log::LogError::Io { op: "place partition dir", path: logs.to_path_buf(), source })?;
    let part = Partition::open(name, index, dir.clone(), config.log_config_for(defaults, tiered), fsync)?;
    if let Some(tier) = tier {
        crate::tiering::attach(tier, name, id, &part, dir, fresh, config, defaults)?;
    }
    Ok(part)
}

/// Keeps `local_bytes` exact enough for the `max_local_bytes` check.
async fn local_usage_loop(weak: std::sync::Weak<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut was_full = false;
    loop {
        tick.tick().await;
        let Some(b) = weak.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        b.refresh_local_bytes();
        match b.local_disk_full() {
            Some(_) => was_full = true,
            None if was_full => {
                tracing::info!("local disk back under max_local_bytes; produce accepted again");
                was_full = false;
            }
            None => {}
        }
    }
}

fn remove_deleted_dirs(logs: &Path) {
    let Ok(entries) = std::fs::read_dir(logs) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with("-delete")
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove deleted partition dir");
        }
    }
}

async fn retention_loop(weak: std::sync::Weak<Broker>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(b) = weak.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        let b2 = b.clone();
        drop(b);
        let _ = tokio::task::spawn_blocking(move || b2.enforce_retention()).await;
    }
}

/// Partition Raft groups stopped at once on shutdown.
const SHUTDOWN_CONCURRENCY: usize = 256;
/// Threads that fsync the partitions on shutdown (fsyncs of different files overlap on NVMe).
const SHUTDOWN_FLUSH_THREADS: usize = 8;
