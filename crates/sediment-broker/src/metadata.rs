//! Durable cluster metadata for a single node: cluster id, node id, topics (name, id, partition
//! count, config overrides). Stored as one JSON document replaced atomically (write temp, fsync,
//! rename, fsync dir) on every change. The metadata Raft group replaces this file when
//! replication lands; its contents are the same records.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topic_config::TopicConfig;

/// One topic as the metadata store records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub config: TopicConfig,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Document {
    format: u32,
    cluster_id: String,
    node_id: i32,
    topics: BTreeMap<String, TopicRecord>,
    /// Producer ids below this were handed out (or reserved) before; allocation restarts here.
    #[serde(default)]
    producer_id_block_end: i64,
}

/// Failure to load or persist metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("data dir belongs to node {found}, not node {expected}; use the right --data-dir or --node-id")]
    NodeMismatch { expected: i32, found: i32 },
}

/// The node's durable metadata.
pub struct MetadataStore {
    path: PathBuf,
    doc: Document,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataError + '_ {
    move |source| MetadataError::Io { path: path.to_path_buf(), source }
}

impl MetadataStore {
    /// Opens `<dir>/metadata.json`, or creates it with `cluster_id` (a new random id when `None`).
    pub fn open(dir: &Path, node_id: i32, cluster_id: Option<&str>) -> Result<MetadataStore, MetadataError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join("metadata.json");
        if path.exists() {
            let text = fs::read_to_string(&path).map_err(io_err(&path))?;
            let doc: Document = serde_json::from_str(&text).map_err(|e| MetadataError::Corrupt { path: path.clone(), reason: e.to_string() })?;
            if doc.node_id != node_id {
                return Err(MetadataError::NodeMismatch { expected: node_id, found: doc.node_id });
            }
            return Ok(MetadataStore { path, doc });
        }
        let cluster_id = cluster_id.map_or_else(|| base64_uuid(sediment_log::random::uuid_v4()), str::to_string);
        let store = MetadataStore { path, doc: Document { format: 1, cluster_id, node_id, topics: BTreeMap::new(), producer_id_block_end: 0 } };
        store.persist()?;
        Ok(store)
    }

    pub fn cluster_id(&self) -> &str {
        &self.doc.cluster_id
    }

    /// Reserves the next block of `size` producer ids durably; returns its first id.
    pub fn reserve_producer_ids(&mut self, size: i64) -> Result<i64, MetadataError> {
        let start = self.doc.producer_id_block_end;
        self.doc.producer_id_block_end = start + size;
        if let Err(e) = self.persist() {
            self.doc.producer_id_block_end = start;
            return Err(e);
        }
        Ok(start)
    }

    /// Producer ids below this were handed out (or reserved) by this node.
    pub fn producer_id_block_end(&self) -> i64 {
        self.doc.producer_id_block_end
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.doc.topics.values()
    }

    /// Applies `change` to the topic map and persists; on a persist failure the change is undone.
    pub fn update<R>(&mut self, change: impl FnOnce(&mut BTreeMap<String, TopicRecord>) -> R) -> Result<R, MetadataError> {
        let before = self.doc.topics.clone();
        let r = change(&mut self.doc.topics);
        if let Err(e) = self.persist() {
            self.doc.topics = before;
            return Err(e);
        }
        Ok(r)
    }

    fn persist(&self) -> Result<(), MetadataError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.doc).map_err(|e| MetadataError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&text).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        Ok(())
    }
}

/// Kafka-style cluster id: URL-safe base64 of 16 random bytes, no padding (22 chars).
fn base64_uuid(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_checks_node() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let mut m = MetadataStore::open(dir.path(), 1, None).unwrap();
            m.update(|t| {
                t.insert(
                    "a".into(),
                    TopicRecord { name: "a".into(), id: sediment_log::random::uuid_v4(), partitions: 3, config: TopicConfig::default(), created_ms: 0 },
                )
            })
            .unwrap();
            m.cluster_id().to_string()
        };
        let m = MetadataStore::open(dir.path(), 1, None).unwrap();
        assert_eq!(m.cluster_id(), id);
        assert_eq!(id.len(), 22);
        assert_eq!(m.topics().next().unwrap().partitions, 3);
        assert!(matches!(MetadataStore::open(dir.path(), 2, None), Err(MetadataError::NodeMismatch { .. })));
    }
}
