//! Tiered storage: sealed segments of the local log go to object storage, a manifest per
//! partition lists them, and Fetch below the local log start reads them back through a
//! read-through cache.
//!
//! ```text
//!            ┌──────────────────────────── Tier (one per broker) ────────────────────────────┐
//!            │ store: Limit ▸ Retry ▸ Metrics ▸ [Fault] ▸ AmazonS3 | LocalFileSystem | InMemory│
//!            │ cache: ChunkCache (foyer hybrid, (object key, chunk) → bytes; segment indexes)  │
//!            │ upload permits, cold-read permits, TierStats (→ MetricsSink)                   │
//!            └──────────────▲───────────────────────────────────────▲────────────────────────┘
//!   RemoteLog per partition │ uploader task: upload ▸ commit ▸ mirror│ read / find_by_timestamp
//!                           │ retention: RaiseLogStart ▸ delete       │
//! ```
//!
//! Modules, one concern each: [`store`] (URL → `ObjectStore`), [`decorators`], [`paths`] (every
//! key), [`segment_object`] (the object format), [`manifest`] (remote segment list, local file,
//! bucket mirror), [`remote_log`] (per partition: uploader, reads), [`reader`] (the cache),
//! [`retention`], [`bucket`] (topic metadata objects), [`stats`].
//!
//! This crate depends on the log and protocol crates only; the broker wires it (it implements
//! [`LocalLog`] for its partitions) and decides who leads.

pub mod bucket;
pub mod decorators;
mod error;
pub mod manifest;
pub mod paths;
pub mod reader;
pub mod remote_log;
pub mod retention;
pub mod segment_object;
pub mod stats;
pub mod store;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use object_store::ObjectStore;
use tokio::sync::Semaphore;

pub use bucket::TopicMeta;
pub use error::{ErrorKind, Result, TierError};
pub use manifest::{Applied, Manifest, ManifestOp, RemoteSegment};
pub use paths::PartitionRef;
pub use reader::CacheConfig;
pub use remote_log::{LocalLog, RemoteLog, RemotePolicy, RemoteStatus};
pub use retention::RetentionPolicy;
pub use segment_object::UploadOptions;
pub use stats::{MetricsSink, OpKind, StatsSnapshot, TierStats};
pub use store::{StoreOptions, StoreUrl};

/// Settings of the tier.
#[derive(Debug, Clone)]
pub struct TierConfig {
    pub store: StoreOptions,
    pub cache: CacheConfig,
    pub upload: UploadOptions,
    /// Segment uploads in flight across all partitions.
    pub upload_concurrency: usize,
    /// How often an idle uploader looks for sealed segments (a roll also wakes it).
    pub upload_poll_interval: Duration,
    /// Longest pause between two attempts while the bucket fails.
    pub upload_backoff_max: Duration,
    /// How often remote retention runs per partition.
    pub retention_check_interval: Duration,
    /// The manifest is mirrored to the bucket after this many uploads...
    pub mirror_every: u32,
    /// ...or this long after the last mirror, whichever comes first.
    pub mirror_interval: Duration,
    /// How often a partition's leader looks for orphaned segment objects (see
    /// [`RemoteLog::sweep_orphans`]).
    pub orphan_sweep_interval: Duration,
    /// An orphan is deleted only once it is this old (an upload may still be in flight).
    pub orphan_grace: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            store: StoreOptions::default(),
            cache: CacheConfig::default(),
            upload: UploadOptions::default(),
            upload_concurrency: 4,
            upload_poll_interval: Duration::from_secs(1),
            upload_backoff_max: Duration::from_secs(5),
            retention_check_interval: Duration::from_secs(300),
            mirror_every: 16,
            mirror_interval: Duration::from_secs(2),
            orphan_sweep_interval: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
        }
    }
}

/// The tiered storage of one broker: the decorated store, the read-through cache, the budgets.
pub struct Tier {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) config: TierConfig,
    pub(crate) stats: Arc<TierStats>,
    pub(crate) cache: Arc<reader::ChunkCache>,
    pub(crate) upload_permits: Arc<Semaphore>,
    partitions: Mutex<Vec<Weak<RemoteLog>>>,
    description: String,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier").field("store", &self.description).finish()
    }
}

impl Tier {
    /// Opens the tier over an already decorated store (see [`store::decorate`]).
    pub async fn open(store: Arc<dyn ObjectStore>, stats: Arc<TierStats>, config: TierConfig) -> Result<Arc<Tier>> {
        let cache = Arc::new(reader::ChunkCache::open(store.clone(), stats.clone(), &config.cache).await?);
        let tier = Arc::new(Tier {
            description: store.to_string(),
            store,
            upload_permits: Arc::new(Semaphore::new(config.upload_concurrency.max(1))),
            config,
            stats,
            cache,
            partitions: Mutex::new(Vec::new()),
        });
        tokio::spawn(report(Arc::downgrade(&tier)));
        Ok(tier)
    }

    /// Builds the backend for `url`, decorates it and opens the tier.
    pub async fn from_url(url: &StoreUrl, config: TierConfig, sink: Option<Arc<dyn MetricsSink>>) -> Result<Arc<Tier>> {
        let stats = Arc::new(match sink {
            Some(s) => TierStats::with_sink(s),
            None => TierStats::default(),
        });
        let backend = store::backend(url)?;
        let store = store::decorate(backend, &config.store, stats.clone());
        let tier = Tier::open(store, stats, config).await?;
        tracing::info!(object_store = %url, "tiered storage ready");
        Ok(tier)
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn stats(&self) -> &Arc<TierStats> {
        &self.stats
    }

    pub fn config(&self) -> &TierConfig {
        &self.config
    }

    /// The remote side of one partition whose local log lives in `dir`. `fresh`: the partition
    /// was just created (no need to look for its manifest in the bucket).
    pub fn open_partition(self: &Arc<Self>, pref: PartitionRef, dir: PathBuf, fresh: bool) -> Result<Arc<RemoteLog>> {
        let rl = RemoteLog::open(self.clone(), pref, dir, fresh)?;
        let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        parts.retain(|w| w.strong_count() > 0);
        parts.push(Arc::downgrade(&rl));
        Ok(rl)
    }

    /// Total (upload lag bytes, lag segments, remote bytes) over the open partitions.
    pub fn totals(&self) -> (u64, u64, u64) {
        let parts: Vec<Arc<RemoteLog>> = self.partitions.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        parts.iter().map(|p| p.status()).fold((0, 0, 0), |a, s| (a.0 + s.lag_bytes, a.1 + s.lag_segments, a.2 + s.remote_bytes))
    }

    /// Writes a topic's metadata object (name, id, partitions, configs).
    pub async fn put_topic_meta(&self, meta: &TopicMeta) -> Result<()> {
        bucket::put_topic_meta(&self.store, meta).await
    }

    /// Deletes every object of a deleted topic.
    pub async fn delete_topic(&self, topic: &str, topic_id: &str) -> Result<usize> {
        bucket::delete_topic(&self.store, topic, topic_id).await
    }

    /// One listing at start-up, so a wrong bucket or credentials show in the log at once
    /// (the broker starts anyway: produce works without the bucket).
    pub async fn check(&self) -> Result<()> {
        use futures::StreamExt;
        let mut s = self.store.list(Some(&paths::topics_root()));
        match s.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(TierError::store("topics/", e)),
        }
    }

    /// The broker took produce traffic: cold reads keep to their under-load budget for a while
    /// (see [`CacheConfig::cold_read_bytes_per_sec_under_load`]). Cheap enough for every request.
    pub fn note_produce(&self) {
        self.cache.note_produce();
    }

    /// Flushes the disk cache (graceful shutdown).
    pub async fn close(&self) {
        for p in self.partitions.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade) {
            p.close();
        }
        self.cache.close().await;
    }
}

/// Pushes the lag and remote-size totals to the metrics sink once a second.
async fn report(tier: Weak<Tier>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(t) = tier.upgrade() else { return };
        if let Some(sink) = t.stats.sink() {
            let (lag, lag_segments, remote) = t.totals();
            sink.upload_lag(lag, lag_segments);
            sink.remote_bytes(remote);
        }
    }
}
