//! Opening a data dir a single-node broker of an earlier release wrote: its topics lived in
//! `meta/metadata.json` and its partitions had no Raft group. Today a single broker is a
//! cluster of one voter, so such a dir is adopted once, at start, in two steps:
//!
//! 1. [`adopt_partitions`], before the controller starts: every partition log gets the Raft
//!    entries of a group of one ([`RaftIndex::adopt`]); the segments stay as they are.
//! 2. [`adopt_metadata`], once this broker is registered and before clients are served: the
//!    controller records the topics with their ids, configs and creation times, and hands out
//!    producer ids only above those the old broker reserved (an idempotent producer's id is
//!    never given twice).
//!
//! A marker in `meta/` says where the adoption stands, so a crash at any point is finished by
//! the next start, and a finished one is never run again. Committed offsets need nothing: they
//! are records of `__consumer_offsets`, adopted like any partition.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sediment_log::PartitionLog;
use sediment_raft::{MetaCommand, MetaError, MetaResponse};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, partition_dir};
use crate::metadata::{MetadataStore, TopicRecord};
use crate::replica::RaftIndex;
use crate::topic_config::BrokerDefaults;
use sediment_log::clock::now_ms;

/// `meta/` file naming an adoption in progress (or finished, with `done`).
const MARKER: &str = "adopted.json";

/// What an adoption found and where it stands (the marker file's content).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    started_ms: i64,
    done: bool,
    topics: usize,
    partitions: usize,
}

/// A single-node layout still to adopt.
#[derive(Debug, Clone)]
pub struct Legacy {
    pub cluster_id: String,
    pub topics: Vec<TopicRecord>,
    /// Producer ids below this were handed out by the old broker.
    pub producer_id_block_end: i64,
    meta_dir: PathBuf,
}

impl Legacy {
    pub fn partitions(&self) -> usize {
        self.topics.iter().map(|t| t.partitions.max(0) as usize).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("cannot adopt partition {topic}-{partition}: {source}")]
    Partition { topic: String, partition: i32, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("adoption marker {path}: {source}")]
    Marker { path: PathBuf, source: std::io::Error },
    #[error(
        "{data_dir} holds {topics} topic(s) written by a single-node broker of an earlier release; start it once on its own (without --peers) to adopt them, then join it to a cluster"
    )]
    NotAlone { data_dir: PathBuf, topics: usize },
    #[error("the controller refused an adopted topic: {0}")]
    Controller(String),
}

/// Whether `data_dir` holds a single-node layout not yet (wholly) adopted; `alone`: this broker
/// is its cluster's only voter (an adoption needs nobody else's agreement, and places every
/// partition here). Run before the controller starts.
pub fn pending(data_dir: &Path, node_id: i32, alone: bool) -> Result<Option<Legacy>, AdoptError> {
    let meta_dir = data_dir.join("meta");
    let marker = read_marker(&meta_dir)?;
    if marker.as_ref().is_some_and(|m| m.done) || !meta_dir.join("metadata.json").exists() {
        return Ok(None);
    }
    // a cluster member's metadata log with no adoption under way: its topics are the controller's
    if marker.is_none() && meta_dir.join("raft").exists() {
        return Ok(None);
    }
    let store = MetadataStore::open(&meta_dir, node_id, None)?;
    let topics: Vec<TopicRecord> = store.topics().cloned().collect();
    if topics.is_empty() && store.producer_id_block_end() == 0 {
        return Ok(None);
    }
    if !alone {
        return Err(AdoptError::NotAlone { data_dir: data_dir.to_path_buf(), topics: topics.len() });
    }
    Ok(Some(Legacy { cluster_id: store.cluster_id().to_string(), producer_id_block_end: store.producer_id_block_end(), topics, meta_dir }))
}

/// Step 1: gives every partition log of `legacy` its Raft entries (blocking: reads every
/// segment's batch headers once). Returns the entries written.
pub fn adopt_partitions(data_dir: &Path, legacy: &Legacy, node_id: i32, raft_addr: &str, defaults: &BrokerDefaults) -> Result<u64, AdoptError> {
    let started_ms = read_marker(&legacy.meta_dir)?.map_or_else(now_ms, |m| m.started_ms);
    write_marker(&legacy.meta_dir, &Marker { started_ms, done: false, topics: legacy.topics.len(), partitions: legacy.partitions() })?;
    tracing::info!(
        topics = legacy.topics.len(),
        partitions = legacy.partitions(),
        "adopting a single-node data dir of an earlier release: each partition becomes a Raft group of one"
    );
    // the metadata log starts now, on a disk that lost nothing: without its directory the
    // controller would take this start for one on an empty disk (replicas abstaining from
    // elections until caught up, see `ClusterCtx::disk_lost`)
    let raft_dir = legacy.meta_dir.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|source| AdoptError::Marker { path: raft_dir, source })?;
    let logs = data_dir.join("logs");
    let mut entries = 0;
    for t in &legacy.topics {
        for index in 0..t.partitions {
            let fail = |source: Box<dyn std::error::Error + Send + Sync>| AdoptError::Partition { topic: t.name.clone(), partition: index, source };
            let dir = partition_dir(&logs, &t.name, index).map_err(|e| fail(e.into()))?;
            if !dir.exists() {
                continue; // never written: opens empty, like a new partition
            }
            // the log's own settings do not matter for reading it; recovery runs as at any start
            let log = PartitionLog::open(&dir, t.config.log_config_for(defaults, false)).map_err(|e| fail(e.into()))?;
            match RaftIndex::adopt(&log, node_id as u64, raft_addr).map_err(|e| fail(e.into()))? {
                Some(n) => {
                    tracing::info!(topic = %t.name, partition = index, entries = n, log_end_offset = log.log_end_offset(), "partition adopted");
                    entries += n;
                }
                None => tracing::debug!(topic = %t.name, partition = index, "partition adopted before"),
            }
            log.close().map_err(|e| fail(e.into()))?;
        }
    }
    Ok(entries)
}

/// Step 2: records `legacy`'s topics and producer ids in the controller (idempotent: a topic
/// the controller already holds under the same id is left alone), then marks the adoption
/// done. Run once this broker is registered, before clients are served.
pub async fn adopt_metadata(b: &Arc<Broker>, legacy: &Legacy) -> Result<(), AdoptError> {
    let Some(ctx) = b.cluster.clone() else { return Ok(()) };
    let refused = |e: crate::error::ApiError| AdoptError::Controller(e.to_string());
    for t in &legacy.topics {
        let cmd = MetaCommand::CreateTopic {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions,
            replication_factor: 1,
            config: t.config.overrides.clone(),
            placement_start: 0,
            created_ms: t.created_ms,
        };
        match ctx.controller.write(cmd, ADOPT_WRITE_TIMEOUT).await {
            Ok(MetaResponse::Refused(MetaError::TopicExists(_))) if ctx.state().topics.get(&t.name).is_some_and(|r| r.id == t.id) => {}
            Ok(MetaResponse::Refused(e)) => return Err(AdoptError::Controller(format!("topic {}: {e}", t.name))),
            Ok(_) => {}
            Err(e) => return Err(AdoptError::Controller(format!("topic {}: {e}", t.name))),
        }
    }
    // served only once each topic is open here with its leaders, as it was before the restart
    for t in &legacy.topics {
        crate::cluster::applied_locally("adopted topic", || b.topic(&t.name).is_some_and(|x| x.id == t.id)).await.map_err(refused)?;
        b.leaders_elected(&t.name, 0..t.partitions).await;
    }
    // the controller hands out ids from its own counter: move it past the old broker's blocks
    loop {
        let next = ctx.state().producer_id_block_end;
        if next >= legacy.producer_id_block_end {
            break;
        }
        let count = (legacy.producer_id_block_end - next).min(sediment_raft::cluster::MAX_PRODUCER_ID_BLOCK);
        ctx.write(MetaCommand::ReserveProducerIds { count }).await.map_err(refused)?;
    }
    let started_ms = read_marker(&legacy.meta_dir)?.map_or_else(now_ms, |m| m.started_ms);
    write_marker(&legacy.meta_dir, &Marker { started_ms, done: true, topics: legacy.topics.len(), partitions: legacy.partitions() })?;
    tracing::info!(topics = legacy.topics.len(), partitions = legacy.partitions(), elapsed_ms = now_ms() - started_ms, "single-node data dir adopted");
    Ok(())
}

const ADOPT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn read_marker(meta_dir: &Path) -> Result<Option<Marker>, AdoptError> {
    let path = meta_dir.join(MARKER);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| AdoptError::Marker { path, source: std::io::Error::other(e) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AdoptError::Marker { path, source }),
    }
}

fn write_marker(meta_dir: &Path, m: &Marker) -> Result<(), AdoptError> {
    let path = meta_dir.join(MARKER);
    let body = serde_json::to_vec_pretty(m).map_err(|e| AdoptError::Marker { path: path.clone(), source: std::io::Error::other(e) })?;
    sediment_raft::log_store::write_atomic(meta_dir, MARKER, &body).map_err(|source| AdoptError::Marker { path, source })
}
