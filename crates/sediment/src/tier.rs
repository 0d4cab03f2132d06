//! Tiered storage set-up: the object store from `object_store` (the bucket, a local directory
//! or memory), the read-through cache from `cache_dir`/`cache_size`, and the metrics bridge.

use std::sync::Arc;

use sediment_tier::{CacheConfig, StoreUrl, Tier, TierConfig};

use crate::config::{ObjectStoreUrl, ServeConfig};

/// Opens the broker's tier. The bucket is not required to be reachable: a failed first
/// listing is logged and uploads retry in the background while produce goes to local disk.
pub async fn open(cfg: &ServeConfig) -> anyhow::Result<Option<Arc<Tier>>> {
    let url = match &cfg.object_store {
        ObjectStoreUrl::File(p) => StoreUrl::File(p.clone()),
        ObjectStoreUrl::S3 { bucket, prefix } => StoreUrl::S3 { bucket: bucket.clone(), prefix: prefix.clone() },
        ObjectStoreUrl::Memory => StoreUrl::Memory,
    };
    let t = &cfg.tiering;
    let config = TierConfig {
        cache: CacheConfig {
            dir: (cfg.cache_size > 0).then(|| cfg.cache_dir.clone()),
            disk_bytes: cfg.cache_size,
            memory_bytes: t.cache_memory as usize,
            cold_read_concurrency: t.cold_read_concurrency,
            read_ahead_chunks: t.cold_read_ahead_chunks,
            cold_read_bytes_per_sec: t.cold_read_max_bytes_per_sec,
            cold_read_bytes_per_sec_under_load: t.cold_read_bytes_per_sec_under_load,
            ..CacheConfig::default()
        },
        orphan_sweep_interval: t.orphan_sweep_interval,
        orphan_grace: t.orphan_grace,
        // remote retention follows the broker's retention cadence
        retention_check_interval: cfg.broker.retention_check_interval,
        ..TierConfig::default()
    };
    let tier = Tier::from_url(&url, config, Some(Arc::new(sediment_broker::tiering::TelemetrySink)))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the object store {url}: {e}"))?;
    if let Err(e) = tier.check().await {
        tracing::warn!(object_store = %url, error = %e, "object store not reachable at start-up; produce continues on local disk and uploads retry");
    }
    Ok(Some(tier))
}
