//! Topic metadata objects: what, besides the partition manifests, the bucket needs to rebuild a
//! topic from nothing (its name, id, partition count and config overrides). Written whenever
//! they change, as a new version; older versions are deleted after the new one is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TierError};
use crate::manifest::delete_all;
use crate::paths;

/// A topic as the bucket describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: String,
    pub partitions: i32,
    /// Topic config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
    /// When this version was written (also its version number).
    pub written_ms: i64,
}

/// Writes a new version of the topic's metadata and deletes the older ones.
pub async fn put_topic_meta(store: &Arc<dyn ObjectStore>, meta: &TopicMeta) -> Result<()> {
    let dir = paths::topic_meta_dir(&meta.name, &meta.id);
    let existing = versions(store, &dir).await?;
    let version = (meta.written_ms.max(0) as u64).max(existing.iter().map(|(v, _)| v + 1).max().unwrap_or(0));
    let key = paths::topic_meta(&meta.name, &meta.id, version);
    let body = serde_json::to_vec(meta).map_err(|e| TierError::Config(format!("cannot encode topic metadata: {e}")))?;
    store.put(&key, PutPayload::from(body)).await.map_err(|e| TierError::store(key.as_ref(), e))?;
    delete_all(store, existing.into_iter().map(|(_, p)| p).collect()).await
}

async fn versions(store: &Arc<dyn ObjectStore>, dir: &object_store::path::Path) -> Result<Vec<(u64, object_store::path::Path)>> {
    store
        .list(Some(dir))
        .try_filter_map(|o| async move { Ok(o.location.filename().and_then(paths::parse_version_name).map(|v| (v, o.location))) })
        .try_collect()
        .await
        .map_err(|e| TierError::store(dir.as_ref(), e))
}

/// The newest metadata of every topic (every id) the bucket holds.
pub async fn list_topics(store: &Arc<dyn ObjectStore>) -> Result<Vec<TopicMeta>> {
    let root = paths::topics_root();
    let metas: Vec<object_store::path::Path> = store
        .list(Some(&root))
        .try_filter_map(|o| async move {
            let is_meta = o.location.parts().count() == 5 && o.location.as_ref().contains("/meta/");
            Ok(is_meta.then_some(o.location))
        })
        .try_collect()
        .await
        .map_err(|e| TierError::store(root.as_ref(), e))?;
    let mut newest: BTreeMap<String, (u64, object_store::path::Path)> = BTreeMap::new();
    for p in metas {
        let Some(v) = p.filename().and_then(paths::parse_version_name) else {
            continue;
        };
        let dir = p.parent().map(|d| d.to_string()).unwrap_or_default();
        if newest.get(&dir).is_none_or(|(nv, _)| v > *nv) {
            newest.insert(dir, (v, p));
        }
    }
    let mut out = Vec::new();
    for (_, (_, p)) in newest {
        let b = store.get(&p).await.map_err(|e| TierError::store(p.as_ref(), e))?.bytes().await.map_err(|e| TierError::store(p.as_ref(), e))?;
        out.push(serde_json::from_slice(&b).map_err(|e| TierError::corrupt(p.as_ref(), e.to_string()))?);
    }
    Ok(out)
}

/// Deletes every object of a topic id (its segments, manifests and metadata).
pub async fn delete_topic(store: &Arc<dyn ObjectStore>, topic: &str, topic_id: &str) -> Result<usize> {
    let dir = paths::topic_dir(topic, topic_id);
    let all: Vec<object_store::path::Path> =
        store.list(Some(&dir)).map_ok(|o| o.location).try_collect().await.map_err(|e| TierError::store(dir.as_ref(), e))?;
    let n = all.len();
    delete_all(store, all).await?;
    Ok(n)
}
