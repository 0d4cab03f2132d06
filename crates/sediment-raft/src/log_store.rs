//! A durable Raft log in one file, for small groups (the metadata group).
//!
//! File `raft.log`: a sequence of records `u32 length | u32 crc32c | postcard body`. The first
//! record is the header (the last purged log id); every other record is one entry. Appends go
//! to the end and are fsynced before openraft is told they are durable. Truncation and purge
//! rewrite the file (temp file, fsync, rename, fsync the directory): the metadata log is kept
//! short by snapshots, so a rewrite is a few KiB. A torn record at the end (a crash during an
//! append that was never acknowledged) is cut off at open.
//!
//! The vote lives in `raft.vote` (fsynced: a node must never vote twice in a term); the
//! committed log id in `raft.committed` (not fsynced: it is a hint that lets a restarted node
//! re-apply committed entries before hearing from a leader, and losing it is safe).
//!
//! Partition groups do not use this store: their Raft log is the partition's segment log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::network::{TypeConfig, decode, encode};

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "raft.vote";
const COMMITTED_FILE: &str = "raft.committed";

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    last_purged: Option<LogId<u64>>,
}

struct Inner<C: RaftTypeConfig> {
    dir: PathBuf,
    file: std::fs::File,
    entries: BTreeMap<u64, C::Entry>,
    last_purged: Option<LogId<u64>>,
}

/// The file-backed log store; clones share the same log (the reader handed to openraft too).
pub struct FileLogStore<C: RaftTypeConfig> {
    inner: Arc<Mutex<Inner<C>>>,
}

impl<C: RaftTypeConfig> Clone for FileLogStore<C> {
    fn clone(&self) -> Self {
        FileLogStore { inner: self.inner.clone() }
    }
}

fn io_write(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

/// Writes `value` as a one-record file `dir/name` (temp + rename; fsynced when `durable`).
pub fn save_small<T: Serialize>(dir: &Path, name: &str, value: &T, durable: bool) -> std::io::Result<()> {
    let data = record(&encode(value).map_err(std::io::Error::other)?);
    if durable {
        write_atomic(dir, name, &data)
    } else {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, dir.join(name))
    }
}

/// Reads a file written by [`save_small`]; `None` when it does not exist.
pub fn load_small<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    read_small(path)
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(8 + body.len());
    r.extend_from_slice(&(body.len() as u32).to_be_bytes());
    r.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// Splits `data` into record bodies; returns them and the length of the valid prefix.
fn records(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        let Some(body) = data.get(pos + 8..pos + 8 + len) else { break };
        if crc32c::crc32c(body) != crc {
            break;
        }
        out.push(body);
        pos += 8 + len;
    }
    (out, pos)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `data` to `dir/name` atomically and durably.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

impl<C: TypeConfig> FileLogStore<C>
where
    C::Entry: Clone,
{
    /// Opens (or creates) the log in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<FileLogStore<C>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut data = Vec::new();
        if path.exists() {
            std::fs::File::open(&path)?.read_to_end(&mut data)?;
        }
        let (recs, valid) = records(&data);
        let mut last_purged = None;
        let mut entries = BTreeMap::new();
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {m}", path.display()));
        for (i, body) in recs.iter().enumerate() {
            if i == 0 {
                let h: Header = decode(body).map_err(bad)?;
                last_purged = h.last_purged;
                continue;
            }
            let e: C::Entry = decode(body).map_err(bad)?;
            entries.insert(openraft::RaftLogId::get_log_id(&e).index, e);
        }
        if recs.is_empty() {
            // new (or a crash before the header reached disk): start with just the header
            write_atomic(dir, LOG_FILE, &record(&encode(&Header { format: 1, last_purged: None }).map_err(bad)?))?;
        } else if valid < data.len() {
            tracing::warn!(file = %path.display(), cut = data.len() - valid, "raft log: cutting off a torn tail");
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(FileLogStore { inner: Arc::new(Mutex::new(Inner { dir: dir.to_path_buf(), file, entries, last_purged })) })
    }
}

impl<C: TypeConfig> Inner<C> {
    /// Rewrites the whole file from memory (after truncate / purge).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut data = record(&encode(&Header { format: 1, last_purged: self.last_purged }).map_err(std::io::Error::other)?);
        for e in self.entries.values() {
            data.extend_from_slice(&record(&encode(e).map_err(std::io::Error::other)?));
        }
        write_atomic(&self.dir, LOG_FILE, &data)?;
        self.file = std::fs::OpenOptions::new().append(true).open(self.dir.join(LOG_FILE))?;
        Ok(())
    }
}

impl<C: TypeConfig> RaftLogReader<C> for FileLogStore<C>
where
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<C::Entry>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl<C: TypeConfig> RaftLogStorage<C> for FileLogStore<C>
where
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        let last = inner.entries.values().next_back().map(|e| *openraft::RaftLogId::get_log_id(e));
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last.or(inner.last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let inner = self.inner.lock().await;
        let data = encode(vote).map_err(io_write)?;
        write_atomic(&inner.dir, VOTE_FILE, &record(&data)).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        read_small(&inner.dir.join(VOTE_FILE)).map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        let inner = self.inner.lock().await;
        let data = encode(&committed).map_err(io_write)?;
        // not fsynced (see the module docs); rename keeps it whole
        let tmp = inner.dir.join(format!("{COMMITTED_FILE}.tmp"));
        std::fs::write(&tmp, record(&data)).and_then(|_| std::fs::rename(&tmp, inner.dir.join(COMMITTED_FILE))).map_err(io_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        match read_small::<Option<LogId<u64>>>(&inner.dir.join(COMMITTED_FILE)) {
            Ok(c) => Ok(c.flatten()),
            // a hint only: without it the node waits for the leader to tell it the commit point
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unreadable committed-index hint");
                Ok(None)
            }
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let mut data = Vec::new();
        for e in entries {
            data.extend_from_slice(&record(&encode(&e).map_err(io_write)?));
            inner.entries.insert(openraft::RaftLogId::get_log_id(&e).index, e);
        }
        let res = inner.file.write_all(&data).and_then(|_| inner.file.sync_data());
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
                Err(io_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.inner.lock().await;
        if inner.entries.range(log_id.index..).next().is_none() {
            return Ok(());
        }
        inner.entries.split_off(&log_id.index);
        inner.rewrite().map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.inner.lock().await;
        if inner.last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        inner.last_purged = Some(log_id);
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        inner.rewrite().map_err(io_write)
    }
}

/// Reads a one-record file; `None` when it does not exist.
fn read_small<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (recs, _) = records(&data);
    let Some(body) = recs.first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is corrupt", path.display())));
    };
    decode(body).map(Some).map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))
}
