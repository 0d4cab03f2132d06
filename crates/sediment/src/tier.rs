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
    let memory_bytes = (cfg.cache_size / 8).clamp(32 << 20, 512 << 20) as usize;
    let config = TierConfig {
        cache: CacheConfig {
            dir: (cfg.cache_size > 0).then(|| cfg.cache_dir.clone()),
            disk_bytes: cfg.cache_size,
            memory_bytes,
            ..CacheConfig::default()
        },
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
