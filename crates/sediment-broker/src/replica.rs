//! A replicated partition: its Raft group (openraft) with the partition's segment log as the
//! Raft log.
//!
//! * **One log.** A record batch is written once, into the segment log, by
//!   [`ReplicaLog::append`] on every replica; the Raft entry index
//!   ([`sediment_raft::entry_index`]) maps dense Raft indexes onto the batches' offsets and
//!   holds the entries that are not batches (blank, membership, refused no-ops), so the
//!   segments contain only records and consumers see no offset gaps.
//! * **Epochs.** The Raft term is the Kafka leader epoch: it is patched into each batch's
//!   partition leader epoch at append (single-term-leader mode: one leader per term).
//! * **Offsets.** Offsets are assigned at append: the leader patches the base offset to its log
//!   end; a follower receives the batch already patched and, its log matching the leader's up
//!   to that entry, lands it at the same offset (checked).
//! * **Idempotence.** The leader checks a proposal's producer sequence when appending it (the
//!   single point where proposals are ordered); a duplicate or out-of-order batch becomes a
//!   no-op entry and its proposer is answered with the original offsets or the error. Every
//!   replica records producer state as batches append, and rebuilds it after a truncation.
//! * **High watermark.** The state machine is the high watermark: applying committed entries
//!   raises it to the end of the last one. Consumers read below it only, so they never see a
//!   record a leader change could take back.
//! * **Durability.** Appends land in the page cache; one flusher per partition fsyncs the
//!   segment and the entry index and then tells openraft (group commit across proposals).

// openraft's StorageError is what its storage traits return; boxing it in our helpers would
// only move the allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::fs::File;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Config, Entry, EntryPayload, LogId, LogState, Membership, RaftLogReader, RaftSnapshotBuilder, ServerState, SnapshotMeta,
    SnapshotPolicy, StorageError, StorageIOError, StoredMembership, Vote,
};
use sediment_log::{AppendInfo, LogError, PartitionLog};
use sediment_protocol::ErrorCode;
use sediment_protocol::batch::{BatchHeader, BatchIter};
use sediment_raft::entry_index::{EntryIndex, EntryKind, EntryRecord, IndexError};
use sediment_raft::log_store::{load_small, save_small};
use sediment_raft::network::{NetworkFactory, RaftHandler, Registry, decode, encode};
use sediment_raft::quiesce::{Quiescer, QuietHandle};
use sediment_raft::transport::{GroupId, Peers};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::partition::{FsyncPolicy, Inner, Partition, off_worker};
use crate::producer_state::{BatchMeta, Verdict};

openraft::declare_raft_types!(
    /// Type config of partition groups.
    pub DataTc:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<DataTc>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type DataRaft = openraft::Raft<DataTc>;

/// A proposed (or replicated) record batch; an empty batch is a no-op entry, or, with
/// `log_start`, a DeleteRecords: the log start offset rises there when the entry is applied.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub batch: Bytes,
    /// Local only (never sent): on the leader's own proposals, who waits for the append
    /// outcome of each batch in `batch`, in order (0: nobody). Replicated entries arrive with
    /// none.
    #[serde(skip)]
    pub tokens: Vec<u64>,
    /// DeleteRecords: the new log start offset (the batch is empty).
    pub log_start: Option<i64>,
    /// Tiered storage: a change to the partition's remote segment list (the batch is empty).
    pub remote: Option<sediment_tier::ManifestOp>,
}

impl Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.log_start, &self.remote) {
            (Some(o), _) => write!(f, "Proposal(log start {o})"),
            (None, Some(op)) => write!(f, "Proposal(remote {op:?})"),
            (None, None) => write!(f, "Proposal({} bytes, {} tokens)", self.batch.len(), self.tokens.len()),
        }
    }
}

/// What appending a proposal did on the leader.
#[derive(Debug, Clone)]
pub enum Outcome {
    Appended(AppendInfo),
    /// An idempotent retry of a batch already in the log: its original offsets.
    Duplicate(BatchMeta),
    /// Refused by the producer-state rules (sequence gap, stale epoch...).
    Refused(ErrorCode, String),
}

const VOTE_FILE: &str = "raft.vote";
const PURGED_FILE: &str = "raft.purged";
const COMMITTED_FILE: &str = "raft.committed";
const APPLIED_FILE: &str = "raft.applied";
/// Bytes of batches one replication RPC carries at most (plus openraft's entry-count cap).
const MAX_RPC_BYTES: usize = 8 << 20;

/// Why a replicated partition could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaOpenError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("raft state of {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The Raft side of a replicated partition's log, kept under the partition lock with the log.
pub struct RaftIndex {
    pub(crate) index: EntryIndex,
    purged: Option<LogId<u64>>,
    dir: PathBuf,
    /// Kafka's leader-epoch cache: (epoch, first offset written in it), ascending; built from
    /// the entry index at open, extended on append, cut on truncation.
    pub(crate) epochs: Vec<(i32, i64)>,
    /// The offset retention wants the log to start at: the next snapshot is taken at the last
    /// entry below it (see [`Replica::after_retention`]).
    snapshot_at: Option<i64>,
}

impl RaftIndex {
    /// Opens the entry index in `dir` and makes it and `log` agree (after a crash either may
    /// hold entries the other lost; neither were acknowledged).
    pub fn open(dir: &Path, log: &mut PartitionLog) -> Result<RaftIndex, ReplicaOpenError> {
        let mut index = EntryIndex::open(dir)?;
        if let Some(cut) = index.reconcile(log.log_end_offset())? {
            tracing::warn!(dir = %dir.display(), from = cut, to = log.log_end_offset(), "cutting batches no Raft entry names");
            log.truncate_to(cut)?;
        }
        let purged =
            load_small::<Option<LogId<u64>>>(&dir.join(PURGED_FILE)).map_err(|source| ReplicaOpenError::Io { path: dir.join(PURGED_FILE), source })?.flatten();
        if let Some(p) = purged {
            index.set_floor(p.index);
        }
        let epochs = epochs_of(&index)?;
        Ok(RaftIndex { index, purged, dir: dir.to_path_buf(), epochs, snapshot_at: None })
    }

    /// The first offset the Raft log still holds entries for: retention may delete the log
    /// below it and no further (openraft may still need to replicate those entries).
    pub(crate) fn released_offset(&self, log_end_offset: i64) -> i64 {
        let Some(p) = self.purged else { return i64::MIN };
        match self.index.get(p.index + 1) {
            Ok(Some(rec)) => rec.base_offset,
            _ => log_end_offset,
        }
    }

    /// Records that a batch of `term` starts at `offset`.
    fn note_epoch(&mut self, term: u64, offset: i64) {
        let epoch = term.min(i32::MAX as u64) as i32;
        if self.epochs.last().is_none_or(|&(e, _)| e < epoch) {
            self.epochs.push((epoch, offset));
        }
    }

    /// Forgets epochs that start at or after `offset` (truncated away).
    fn cut_epochs(&mut self, offset: i64) {
        self.epochs.retain(|&(_, start)| start < offset);
    }

    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.index.last().map(|(i, r)| log_id(r.term, i)).or(self.purged)
    }
}

/// Written into a partition directory once [`RaftIndex::adopt`] gave its log Raft entries.
const ADOPTED_FILE: &str = "raft.adopted";
/// Where [`RaftIndex::adopt`] builds the entry index before moving it in.
const ADOPTING_DIR: &str = "raft.adopting";
/// Raft state files a half-done adoption may have left next to the log (never a pre-Raft
/// log's own files).
const RAFT_STATE_FILES: [&str; 5] = [VOTE_FILE, PURGED_FILE, COMMITTED_FILE, APPLIED_FILE, "raft.membership"];

impl RaftIndex {
    /// Gives a log written before its partition had a Raft group (a single-node data dir of an
    /// earlier release) the Raft entries of a group of one: entry 0 is the group's founding
    /// membership (`node_id` alone, as `initialize` would write it), then one entry per batch
    /// on disk, in term 0, the leader epoch those batches carry (so OffsetForLeaderEpoch
    /// answers for them as it did). At start openraft elects the single voter, whose first
    /// entry commits them all; the segments are not rewritten.
    ///
    /// The index is built in a side directory, synced, moved in, and only then marked adopted:
    /// a crash part-way leaves no entry [`RaftIndex::open`] would reconcile the log against, and
    /// the next start builds it again. A log that cannot be read to its end is refused rather
    /// than cut. Returns the entries written, or `None` if the directory was adopted before.
    pub fn adopt(log: &PartitionLog, node_id: u64, raft_addr: &str) -> Result<Option<u64>, ReplicaOpenError> {
        let dir = log.dir().to_path_buf();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplicaOpenError::Io { path, source }
        };
        if dir.join(ADOPTED_FILE).exists() {
            return Ok(None);
        }
        // what an interrupted adoption moved in already (a pre-Raft log has none of these)
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".ridx") || RAFT_STATE_FILES.contains(&name) {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        let side = dir.join(ADOPTING_DIR);
        match std::fs::remove_dir_all(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&side)(e)),
            _ => {}
        }
        std::fs::create_dir(&side).map_err(io(&side))?;
        let mut index = EntryIndex::open(&side)?;
        let floor = log.segments().first().map_or(log.log_start_offset(), |s| s.base_offset).min(log.log_start_offset());
        let members: BTreeMap<u64, BasicNode> = [(node_id, BasicNode::new(raft_addr))].into();
        let membership = Membership::new(vec![members.keys().copied().collect()], members);
        let payload = encode(&membership).map_err(|e| io(&side)(std::io::Error::other(e)))?;
        index.append(0, EntryRecord { base_offset: floor, term: 0, last_offset_delta: 0, kind: EntryKind::Membership }, Some(payload))?;
        let leo = log.log_end_offset();
        let (mut offset, mut next_index) = (floor, 1u64);
        while offset < leo {
            let bytes = log.read_retained(offset, 16 << 20, leo, true)?.execute()?;
            let mut next = offset;
            for (h, _) in BatchIter::new(&bytes) {
                let rec = EntryRecord { base_offset: h.base_offset, term: 0, last_offset_delta: h.last_offset_delta, kind: EntryKind::Batch };
                index.append(next_index, rec, None)?;
                next_index += 1;
                next = h.next_offset();
            }
            if next <= offset {
                let reason = format!("no readable batch at offset {offset} (log end {leo}): the log cannot be adopted whole");
                return Err(ReplicaOpenError::Io { path: dir, source: std::io::Error::other(reason) });
            }
            offset = next;
        }
        for f in index.sync_handles()? {
            f.sync_all().map_err(io(&side))?;
        }
        drop(index);
        let mut moved = Vec::new();
        for entry in std::fs::read_dir(&side).map_err(io(&side))? {
            let from = entry.map_err(io(&side))?.path();
            let Some(name) = from.file_name() else { continue };
            let to = dir.join(name);
            // the membership file is written atomically through a temp name: only finished files
            std::fs::rename(&from, &to).map_err(io(&to))?;
            moved.push(to);
        }
        for f in &moved {
            File::open(f).and_then(|f| f.sync_all()).map_err(io(f))?;
        }
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        save_small(&dir, ADOPTED_FILE, &next_index, true).map_err(io(&dir.join(ADOPTED_FILE)))?;
        std::fs::remove_dir_all(&side).map_err(io(&side))?;
        Ok(Some(next_index))
    }
}

/// The epoch cache of an entry index: one pass over its records, a chunk at a time.
fn epochs_of(index: &EntryIndex) -> Result<Vec<(i32, i64)>, IndexError> {
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let (Some(first), Some(last)) = (index.first_index(), index.last_index()) else { return Ok(epochs) };
    let mut i = first;
    while i <= last {
        let end = (i + sediment_raft::entry_index::CHUNK_ENTRIES).min(last + 1);
        for (_, r) in index.range(i, end)? {
            let epoch = r.term.min(i32::MAX as u64) as i32;
            if r.kind == EntryKind::Batch && epochs.last().is_none_or(|&(e, _)| e < epoch) {
                epochs.push((epoch, r.base_offset));
            }
        }
        i = end;
    }
    Ok(epochs)
}

/// Kafka's `LeaderEpochFileCache.endOffsetFor`: the largest epoch at or below `requested`
/// and the offset where the next epoch starts (the log end for the latest epoch);
/// (-1, -1) when `requested` is newer than every epoch here. An epoch older than all known
/// answers with the requested epoch and the first known epoch's start.
pub fn end_offset_for(epochs: &[(i32, i64)], requested: i32, log_end_offset: i64) -> (i32, i64) {
    if requested < 0 {
        return (-1, -1);
    }
    if epochs.last().is_some_and(|&(e, _)| e == requested) {
        return (requested, log_end_offset);
    }
    let higher = epochs.iter().find(|&&(e, _)| e > requested);
    let floor = epochs.iter().rev().find(|&&(e, _)| e <= requested);
    match (higher, floor) {
        (None, _) => (-1, -1),
        (Some(&(_, start)), None) => (requested, start),
        (Some(&(_, start)), Some(&(e, _))) => (e, start),
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn st_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn raft_of(inner: &mut Inner) -> Result<&mut RaftIndex, StorageError<u64>> {
    inner.raft.as_mut().ok_or_else(|| st_err("partition is not replicated"))
}

/// Proposers waiting for their append outcome, by token.
#[derive(Default)]
pub struct Proposals {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// Proposers waiting for their entry's commit, by token.
    committing: Mutex<HashMap<u64, oneshot::Sender<Result<(), ProposeError>>>>,
    next: AtomicU64,
}

impl Proposals {
    /// Answers the commit waiters of `tokens` (one entry's).
    fn committed(&self, tokens: &[u64], r: Result<(), ProposeError>) {
        let mut m = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        for t in tokens {
            if let Some(tx) = m.remove(t) {
                let _ = tx.send(r.clone());
            }
        }
    }

    /// Forgets `tokens`: their proposers see NotLeader.
    fn fail(&self, tokens: &[u64]) {
        let (mut w, mut c) = (self.waiting.lock().unwrap_or_else(|e| e.into_inner()), self.committing.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tokens {
            w.remove(t);
            c.remove(t);
        }
    }

    fn notify(&self, token: u64, o: Outcome) {
        if token == 0 {
            return;
        }
        if let Some(tx) = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&token) {
            let _ = tx.send(o);
        }
    }
}

/// An append's flush callback for the flusher to complete after the fsync, or `None`: the
/// append completed its callback itself and asks only for an fsync pass.
type FlushReq = Option<LogFlushed<DataTc>>;

/// The partition log as openraft's log storage. `light` readers return batch entries without
/// their bytes: openraft's core reads committed entries back only to apply them, and applying
/// needs the entries' positions, not their records (replication uses full readers).
pub struct ReplicaLog {
    p: Arc<Partition>,
    proposals: Arc<Proposals>,
    flush_tx: mpsc::UnboundedSender<FlushReq>,
    light: bool,
    /// When the committed-index hint was last written (at most once a second: openraft
    /// saves it before every apply, and a stale hint is safe).
    committed_saved: Option<Instant>,
}

impl ReplicaLog {
    /// The log storage of `p` (opened with [`Partition::open_replicated`]); starts its flusher.
    pub fn new(p: Arc<Partition>, proposals: Arc<Proposals>) -> ReplicaLog {
        let (flush_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(p.clone(), rx));
        ReplicaLog { p, proposals, flush_tx, light: true, committed_saved: None }
    }

    fn append_one(&self, inner: &mut Inner, e: Entry<DataTc>, now_ms: i64) -> Result<(), StorageError<u64>> {
        let idx = e.log_id.index;
        let term = e.log_id.leader_id.term;
        let leo = inner.log.log_end_offset();
        let meta_rec = |kind| EntryRecord { base_offset: leo, term, last_offset_delta: 0, kind };
        match e.payload {
            EntryPayload::Blank => raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Blank), None).map_err(st_err),
            EntryPayload::Membership(m) => {
                let payload = encode(&m).map_err(st_err)?;
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Membership), Some(payload)).map_err(st_err)
            }
            EntryPayload::Normal(Proposal { log_start: Some(offset), .. }) => {
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::LogStart), Some(offset.to_be_bytes().to_vec())).map_err(st_err)
            }
            EntryPayload::Normal(Proposal { remote: Some(op), .. }) => {
                let payload = encode(&op).map_err(st_err)?;
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Remote), Some(payload)).map_err(st_err)
            }
            EntryPayload::Normal(prop) if prop.batch.is_empty() => raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Noop), None).map_err(st_err),
            EntryPayload::Normal(prop) => {
                // one or more batches: the leader's coalesced proposals (each with its token), or
                // a replicated entry, whose batches land where the leader put them (checked)
                let leader = !prop.tokens.is_empty();
                // the proposal's buffer is unique here (the produce path's copy, or the decoded
                // RPC), so this takes it over without copying
                let mut buf = prop.batch.try_into_mut().unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
                let (mut first, mut end, mut i) = (None::<i64>, leo, 0usize);
                while !buf.is_empty() {
                    let header = BatchHeader::parse(&buf).map_err(st_err)?;
                    let mut one = buf.split_to(header.total_len().min(buf.len()));
                    let token = prop.tokens.get(i).copied().unwrap_or(0);
                    i += 1;
                    if leader {
                        // the idempotence rules decide here, where proposals are ordered
                        match inner.producers.check(&header) {
                            Verdict::Append => {}
                            Verdict::Duplicate(meta) => {
                                self.proposals.notify(token, Outcome::Duplicate(meta));
                                continue;
                            }
                            Verdict::Reject(code, msg) => {
                                self.proposals.notify(token, Outcome::Refused(code, msg));
                                continue;
                            }
                        }
                    } else if header.base_offset != inner.log.log_end_offset() {
                        return Err(st_err(format!(
                            "replicated batch for offset {} arrived at log end {}: logs diverged",
                            header.base_offset,
                            inner.log.log_end_offset()
                        )));
                    }
                    let info = inner.log.append(&mut one, term as i32, now_ms).map_err(st_err)?;
                    if header.has_producer_id() {
                        let mut assigned = header;
                        assigned.base_offset = info.base_offset;
                        inner.producers.record(&assigned, now_ms);
                    }
                    first.get_or_insert(info.base_offset);
                    end = info.last_offset + 1;
                    self.p.after_append(inner, one.len());
                    self.proposals.notify(token, Outcome::Appended(info));
                }
                let Some(base) = first else {
                    // every batch refused: the entry keeps its index and holds no records
                    return raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Noop), None).map_err(st_err);
                };
                let rec = EntryRecord { base_offset: base, term, last_offset_delta: (end - base - 1).min(i32::MAX as i64) as i32, kind: EntryKind::Batch };
                let r = raft_of(inner)?;
                r.index.append(idx, rec, None).map_err(st_err)?;
                r.note_epoch(term, base);
                Ok(())
            }
        }
    }

    /// Entries `[start, end)` (at most `max_bytes` of batches, at least one entry).
    fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        let recs = {
            let mut inner = self.p.lock();
            raft_of(&mut inner)?.index.range(start, end).map_err(read_err)?
        };
        let membership = |inner: &mut Inner, i: u64| -> Result<Membership<u64, BasicNode>, StorageError<u64>> {
            let bytes = raft_of(inner)?.index.membership(i).ok_or_else(|| read_err(format!("membership entry {i} has no payload")))?.to_vec();
            decode(&bytes).map_err(read_err)
        };
        let mut out = Vec::with_capacity(recs.len());
        let mut pending: Vec<Bytes> = Vec::new(); // batches read ahead, in offset order
        let mut next_read: Option<i64> = None;
        let mut bytes = 0usize;
        for (i, r) in recs {
            let id = log_id(r.term, i);
            let payload = match r.kind {
                EntryKind::Blank => EntryPayload::Blank,
                EntryKind::Noop => EntryPayload::Normal(Proposal::default()),
                EntryKind::Hole => continue,
                EntryKind::Membership => EntryPayload::Membership(membership(&mut self.p.lock(), i)?),
                EntryKind::LogStart => {
                    let offset = {
                        let mut inner = self.p.lock();
                        raft_of(&mut inner)?.index.payload(i).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)
                    };
                    let offset = offset.ok_or_else(|| read_err(format!("log start entry {i} has no offset")))?;
                    EntryPayload::Normal(Proposal { log_start: Some(offset), ..Proposal::default() })
                }
                EntryKind::Remote => {
                    let bytes = {
                        let mut inner = self.p.lock();
                        raft_of(&mut inner)?.index.payload(i).map(|b| b.to_vec())
                    };
                    let bytes = bytes.ok_or_else(|| read_err(format!("remote entry {i} has no payload")))?;
                    let op = decode(&bytes).map_err(read_err)?;
                    EntryPayload::Normal(Proposal { remote: Some(op), ..Proposal::default() })
                }
                EntryKind::Batch if self.light => EntryPayload::Normal(Proposal::default()),
                EntryKind::Batch => {
                    if bytes >= max_bytes && !out.is_empty() {
                        break;
                    }
                    // every batch of the entry (a leader may coalesce several into one)
                    let end = r.next_offset();
                    let mut parts: Vec<Bytes> = Vec::new();
                    let mut reached = r.base_offset;
                    while reached < end {
                        if pending.is_empty() {
                            let from = next_read.unwrap_or(reached).max(reached);
                            let plan = {
                                let inner = self.p.lock();
                                inner.log.read_retained(from, (max_bytes - bytes.min(max_bytes)).max(1), i64::MAX, true).map_err(read_err)?
                            };
                            let data = plan.execute().map_err(read_err)?;
                            let mut pos = 0;
                            for (h, b) in BatchIter::new(&data) {
                                pending.push(data.slice(pos..pos + b.len()));
                                pos += b.len();
                                next_read = Some(h.next_offset());
                            }
                            pending.reverse();
                        }
                        let Some(batch) = pending.pop() else { break };
                        let h = BatchHeader::parse(&batch).map_err(read_err)?;
                        if h.base_offset != reached {
                            return Err(read_err(format!("entry {i} needs offset {reached} but the log has {}", h.base_offset)));
                        }
                        reached = h.next_offset();
                        parts.push(batch);
                    }
                    if reached < end {
                        // truncated under us: return what we have (the caller retries)
                        break;
                    }
                    let batch = if parts.len() == 1 {
                        parts.pop().unwrap_or_default()
                    } else {
                        let mut all = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                        parts.iter().for_each(|p| all.extend_from_slice(p));
                        all.freeze()
                    };
                    bytes += batch.len();
                    EntryPayload::Normal(Proposal { batch, tokens: Vec::new(), log_start: None, remote: None })
                }
            };
            out.push(Entry { log_id: id, payload });
        }
        Ok(out)
    }
}

/// Group commit for a replicated partition: fsync segment + entry index once for every append
/// queued meanwhile, then acknowledge them in order (a `None` asks for a pass only) and raise
/// the high watermark where it waits for the fsync.
async fn flusher(p: Arc<Partition>, mut rx: mpsc::UnboundedReceiver<FlushReq>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.extend(first);
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        if p.policy == FsyncPolicy::Never {
            let any = !batch.is_empty();
            for cb in batch.drain(..) {
                cb.log_io_completed(Ok(()));
            }
            if let Some(r) = p.replica().filter(|_| any) {
                r.flushed();
            }
            continue;
        }
        let prepared = {
            let mut inner = p.lock();
            let job = inner.log.begin_flush();
            let files = inner.raft.as_mut().map(|r| r.index.sync_handles()).transpose();
            let offset = job.as_ref().map_or_else(|| inner.log.log_end_offset(), |j| j.target_offset());
            files.map(|f| (job, f.unwrap_or_default(), offset))
        };
        let started = Instant::now();
        let res = match prepared {
            Ok((job, files, offset)) => p
                .timed_fsync(tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                    let done = job.map(|j| j.run()).transpose().map_err(std::io::Error::other)?;
                    for f in files {
                        f.sync_data()?;
                    }
                    Ok(done)
                }))
                .instrument(p.fsync_span(offset))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        match res {
            Ok(done) => {
                sediment_telemetry::metrics().fsync(started.elapsed());
                if let Some(d) = done {
                    p.lock().log.complete_flush(d);
                }
                let any = !batch.is_empty();
                for cb in batch.drain(..) {
                    cb.log_io_completed(Ok(()));
                }
                if let Some(r) = p.replica().filter(|_| any) {
                    r.flushed();
                }
                p.raise_hw(None);
            }
            Err(e) => {
                sediment_telemetry::metrics().fsync_failed();
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed; the partition's Raft group stops");
                p.wm_tx.send_modify(|w| w.failed = true);
                for cb in batch.drain(..) {
                    cb.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<DataTc> for ReplicaLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        let (start, end) = range_bounds(&range);
        self.read_entries(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        self.read_entries(start, end, MAX_RPC_BYTES)
    }
}

impl RaftLogStorage<DataTc> for ReplicaLog {
    type LogReader = ReplicaLog;

    async fn get_log_state(&mut self) -> Result<LogState<DataTc>, StorageError<u64>> {
        let mut inner = self.p.lock();
        let r = raft_of(&mut inner)?;
        Ok(LogState { last_purged_log_id: r.purged, last_log_id: r.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> ReplicaLog {
        ReplicaLog { p: self.p.clone(), proposals: self.proposals.clone(), flush_tx: self.flush_tx.clone(), light: false, committed_saved: None }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let dir = self.p.lock().log.dir().to_path_buf();
        off_worker(|| save_small(&dir, VOTE_FILE, vote, true)).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let dir = self.p.lock().log.dir().to_path_buf();
        load_small(&dir.join(VOTE_FILE)).map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        if self.committed_saved.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        self.committed_saved = Some(Instant::now());
        let dir = self.p.lock().log.dir().to_path_buf();
        // a hint (see sediment_raft::log_store): not fsynced
        off_worker(|| save_small(&dir, COMMITTED_FILE, &committed, false)).map_err(st_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let (dir, last) = {
            let inner = self.p.lock();
            (inner.log.dir().to_path_buf(), inner.raft.as_ref().and_then(|r| r.last_log_id()))
        };
        let saved = load_small::<Option<LogId<u64>>>(&dir.join(COMMITTED_FILE)).ok().flatten().flatten();
        // a hint, and never past the log: a group of one acknowledges appends before their
        // fsync, so after a power cut the hint can name an entry the disk did not keep
        Ok(match (saved, last) {
            (Some(c), Some(l)) if c.index > l.index => Some(l),
            (Some(_), None) => None,
            (c, _) => c,
        })
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<DataTc>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<DataTc>> + Send,
        I::IntoIter: Send,
    {
        let now = sediment_log::clock::now_ms();
        // off the runtime's workers (a stalled disk must not stop the runtime)
        let records_only = off_worker(|| {
            let mut inner = self.p.lock();
            entries.into_iter().try_fold(true, |only, e| {
                let records = matches!(&e.payload, EntryPayload::Normal(Proposal { log_start: None, remote: None, .. }));
                self.append_one(&mut inner, e, now).map(|()| only && records)
            })
        })?;
        // openraft's core awaits this callback before it appends again: a group that takes
        // records before their fsync (see `Partition::acks_before_fsync`) completes it now, so
        // an acks=1 batch does not wait for the fsync of the entry ahead of it. Entries that
        // change more than records (membership, log start, remote segments, a leader's blank)
        // commit only once they and everything before them are on disk.
        if records_only && self.p.acks_before_fsync() {
            callback.log_io_completed(Ok(()));
            if let Some(r) = self.p.replica() {
                r.flushed();
            }
            return self.flush_tx.send(None).map_err(|_| st_err("partition flusher stopped"));
        }
        self.flush_tx.send(Some(callback)).map_err(|_| st_err("partition flusher stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        off_worker(|| self.truncate_now(log_id))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        off_worker(|| self.purge_now(log_id))
    }
}

impl ReplicaLog {
    fn truncate_now(&self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.p.lock();
        let Some(rec) = raft_of(&mut inner)?.index.get(log_id.index).map_err(st_err)? else {
            return Ok(()); // past the end
        };
        let r = raft_of(&mut inner)?;
        r.index.truncate(log_id.index).map_err(st_err)?;
        r.cut_epochs(rec.base_offset);
        if rec.base_offset < inner.log.log_end_offset() {
            inner.log.truncate_to(rec.base_offset).map_err(st_err)?;
            self.p.reload_producers(&mut inner);
        }
        tracing::info!(topic = %self.p.topic, partition = self.p.index, index = log_id.index, offset = rec.base_offset, "truncated an uncommitted suffix");
        let (start, leo) = (inner.log.log_start_offset(), inner.log.log_end_offset());
        self.p.wm_tx.send_modify(|w| w.high_watermark = w.high_watermark.min(leo).max(start));
        Ok(())
    }

    fn purge_now(&self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.p.lock();
        let r = raft_of(&mut inner)?;
        if r.purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        save_small(&r.dir, PURGED_FILE, &Some(log_id), true).map_err(st_err)?;
        r.purged = Some(log_id);
        r.index.purge(log_id.index).map_err(st_err)?;
        drop(inner);
        // the entries are gone from Raft's view: retention may now delete their segments
        match self.p.apply_local_retention(sediment_log::clock::now_ms()) {
            Ok(out) if out.segments_deleted > 0 => {
                tracing::info!(topic = %self.p.topic, partition = self.p.index, segments = out.segments_deleted, bytes = out.bytes_deleted, "retention deleted segments");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(topic = %self.p.topic, partition = self.p.index, error = %e, "retention after a raft purge failed"),
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Default)]
struct AppliedCheckpoint {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    /// The log end offset at the snapshot's last entry.
    next_offset: i64,
    /// Tiered storage: the remote segment list as applied when the snapshot was built (at or
    /// after its last entry; the ops after that entry apply to it again as no-ops).
    manifest: Option<sediment_tier::Manifest>,
    /// Idempotent producers' state as of `next_offset` (`ProducerStateTable::encode`): a
    /// replica that restarts its log from the snapshot would otherwise forget every producer
    /// and, once it leads, refuse their next batch as out of order.
    producers: Option<Vec<u8>>,
}

/// A snapshot written by a broker that did not send producer state yet.
#[derive(Deserialize)]
struct SnapshotDataV1 {
    next_offset: i64,
    manifest: Option<sediment_tier::Manifest>,
}

fn decode_snapshot(data: &[u8]) -> Result<SnapshotData, String> {
    decode::<SnapshotData>(data)
        .or_else(|_| decode::<SnapshotDataV1>(data).map(|v| SnapshotData { next_offset: v.next_offset, manifest: v.manifest, producers: None }))
}

struct SmState {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    checkpointed: Instant,
    seq: u64,
}

/// The partition's state machine: the high watermark. Clones share it.
#[derive(Clone)]
pub struct ReplicaSm {
    p: Arc<Partition>,
    st: Arc<tokio::sync::Mutex<SmState>>,
}

impl ReplicaSm {
    pub fn open(p: Arc<Partition>) -> ReplicaSm {
        let (dir, purged, last) = {
            let inner = p.lock();
            (inner.log.dir().to_path_buf(), inner.raft.as_ref().and_then(|r| r.purged), inner.raft.as_ref().and_then(|r| r.last_log_id()))
        };
        let mut cp: AppliedCheckpoint = load_small(&dir.join(APPLIED_FILE)).ok().flatten().unwrap_or_default();
        // A group of one applies entries before they are fsynced (docs/design/0001): after a
        // power cut the checkpoint can name an entry the log lost. What the log kept was applied.
        if let (Some(a), Some(l)) = (cp.applied, last)
            && a.index > l.index
        {
            tracing::warn!(topic = %p.topic, partition = p.index, checkpoint = a.index, log_end = l.index, "applied checkpoint past the log (a power cut took back unsynced entries); starting from the log's end");
            cp.applied = Some(l);
        }
        // The checkpoint is written at most once a second, so it can lag a purge that followed
        // a snapshot; but purged entries were applied (a snapshot never passes the applied
        // entry). Starting below the purge point would build a snapshot openraft refuses.
        let applied = match (cp.applied, purged) {
            (Some(a), Some(p)) if p.index > a.index => Some(p),
            (None, Some(p)) => Some(p),
            (a, _) => a,
        };
        ReplicaSm {
            p,
            st: Arc::new(tokio::sync::Mutex::new(SmState { applied, membership: cp.membership, snapshot: None, checkpointed: Instant::now(), seq: 0 })),
        }
    }

    /// Applies a committed manifest op to this replica's remote side. Only a local I/O failure
    /// (the manifest file) stops the state machine; an op the manifest refuses is logged.
    async fn apply_remote(&self, remote: &Arc<sediment_tier::RemoteLog>, op: sediment_tier::ManifestOp) -> Result<(), StorageError<u64>> {
        match remote.apply_replicated(op).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == sediment_tier::ErrorKind::LocalIo => {
                tracing::error!(topic = %self.p.topic, partition = self.p.index, error = %e, "cannot apply a remote segment change");
                Err(st_err(e))
            }
            Err(e) => {
                tracing::error!(topic = %self.p.topic, partition = self.p.index, error = %e, "remote segment change refused by the manifest; ignored");
                Ok(())
            }
        }
    }

    fn checkpoint(&self, st: &mut SmState) {
        let dir = self.p.lock().log.dir().to_path_buf();
        let cp = AppliedCheckpoint { applied: st.applied, membership: st.membership.clone() };
        if let Err(e) = save_small(&dir, APPLIED_FILE, &cp, false) {
            tracing::warn!(topic = %self.p.topic, partition = self.p.index, error = %e, "cannot checkpoint the applied index");
        }
        st.checkpointed = Instant::now();
    }
}

/// The retention point of a replicated partition: the last Raft entry lying wholly below
/// `target` (default: where retention asked the log to start, else the log start offset), never
/// past `applied`.
fn retention_point(p: &Partition, applied: Option<LogId<u64>>, target: Option<i64>) -> Option<(LogId<u64>, i64)> {
    let applied = applied?;
    let mut inner = p.lock();
    let start = inner.log.log_start_offset();
    let r = inner.raft.as_mut()?;
    let target = target.or(r.snapshot_at).unwrap_or(start);
    let (i, rec) = r.index.last_ending_at_or_below(target).ok().flatten()?;
    if i > applied.index {
        return None;
    }
    Some((log_id(rec.term, i), rec.next_offset()))
}

impl RaftSnapshotBuilder<DataTc> for ReplicaSm {
    /// A partition's snapshot is a position, not data: the state at the retention point (the
    /// last entry retention deleted) is "the log starts at this offset". A follower behind the
    /// leader's retention installs it by starting its log empty there, as a Kafka follower
    /// truncates to the leader's log start offset, and the leader replicates everything after
    /// it. Without a retention point (nothing deleted) the snapshot is at the applied entry.
    async fn build_snapshot(&mut self) -> Result<Snapshot<DataTc>, StorageError<u64>> {
        let mut st = self.st.lock().await;
        let (last_log_id, next_offset) = match retention_point(&self.p, st.applied, None) {
            Some((id, next)) => (Some(id), next),
            None => (st.applied, self.p.high_watermark()),
        };
        let manifest = self.p.remote().map(|r| r.manifest_snapshot());
        let producers = {
            let mut table = self.p.lock().producers.clone();
            table.truncate_from(next_offset);
            Some(table.encode())
        };
        let data = encode(&SnapshotData { next_offset, manifest, producers }).map_err(st_err)?;
        st.seq += 1;
        let snapshot_id = format!("{}-{}", last_log_id.map_or(0, |l| l.index), st.seq);
        let meta = SnapshotMeta { last_log_id, last_membership: st.membership.clone(), snapshot_id };
        st.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<DataTc> for ReplicaSm {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let st = self.st.lock().await;
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<DataTc>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.st.lock().await;
        let mut n = 0;
        let mut membership_changed = false;
        let mut last = None;
        for e in entries {
            n += 1;
            match &e.payload {
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    membership_changed = true;
                }
                // DeleteRecords, committed: every replica raises its log start (durably) when it
                // applies it; the segments below go later with the retention snapshot and purge.
                EntryPayload::Normal(Proposal { log_start: Some(offset), .. }) => {
                    let raised = self.p.with_log(|l| l.raise_log_start(*offset));
                    if let Err(e) = raised {
                        tracing::error!(topic = %self.p.topic, partition = self.p.index, offset, error = %e, "cannot raise the log start offset");
                        return Err(st_err(e));
                    }
                    // below the local log: the bucket's start rises too
                    if let Some(remote) = self.p.remote() {
                        self.apply_remote(remote, sediment_tier::ManifestOp::RaiseLogStart(*offset)).await?;
                    }
                }
                // tiered storage: an upload or remote retention, committed by the leader
                EntryPayload::Normal(Proposal { remote: Some(op), .. }) => match self.p.remote() {
                    Some(remote) => self.apply_remote(remote, op.clone()).await?,
                    None => {
                        tracing::warn!(topic = %self.p.topic, partition = self.p.index, "remote segment entry on a partition without tiered storage; ignored")
                    }
                },
                _ => {}
            }
            last = Some(e.log_id);
        }
        if let Some(last) = last {
            st.applied = Some(last);
            let rec = {
                let mut inner = self.p.lock();
                inner.raft.as_mut().and_then(|r| r.index.get(last.index).ok().flatten())
            };
            if let Some(rec) = rec {
                self.p.raise_hw(Some(rec.next_offset()));
            }
            if membership_changed || st.checkpointed.elapsed() > Duration::from_secs(1) {
                self.checkpoint(&mut st);
            }
        }
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// A snapshot arrives when this replica is behind the leader's purged log: it restarts its
    /// log empty at the snapshot's offset (what lies below is in the bucket, or gone with
    /// retention).
    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let snap: SnapshotData = decode_snapshot(&data).map_err(st_err)?;
        let mut st = self.st.lock().await;
        {
            let mut inner = self.p.lock();
            let have = match (meta.last_log_id, inner.raft.as_ref()) {
                (Some(l), Some(r)) => r.index.get(l.index).ok().flatten().is_some_and(|rec| rec.term == l.leader_id.term),
                _ => false,
            };
            if !have && inner.log.log_end_offset() != snap.next_offset {
                let start = snap.next_offset.max(0);
                inner.log.truncate_fully_and_start_at(start).map_err(st_err)?;
                if let Some(r) = inner.raft.as_mut() {
                    r.index.truncate(0).map_err(st_err)?;
                    r.epochs.clear();
                }
                self.p.reload_producers(&mut inner);
                // the log below the snapshot is not here: its producers come with the snapshot
                if let Some(bytes) = &snap.producers {
                    match crate::producer_state::ProducerStateTable::decode(bytes) {
                        Ok(table) => inner.producers = table,
                        Err(e) => tracing::warn!(topic = %self.p.topic, partition = self.p.index, error = %e, "snapshot carries unreadable producer state"),
                    }
                }
            }
        }
        if let (Some(m), Some(remote)) = (snap.manifest, self.p.remote()) {
            remote.install_replicated(m).await.map_err(st_err)?;
        }
        self.p.raise_hw(Some(snap.next_offset));
        self.p.clamp_hw();
        st.applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.snapshot = Some((meta.clone(), data));
        self.checkpoint(&mut st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<DataTc>>, StorageError<u64>> {
        let st = self.st.lock().await;
        Ok(st.snapshot.as_ref().map(|(m, d)| Snapshot { meta: m.clone(), snapshot: Box::new(Cursor::new(d.clone())) }))
    }
}

/// Timers of partition groups (see `sediment_raft::controller::raft_config` for why not
/// openraft's defaults). Snapshots are not taken on a schedule: the data is the log.
pub fn raft_config() -> Arc<Config> {
    let c = Config {
        cluster_name: "sediment-partition".into(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    };
    Arc::new(c.validate().expect("partition raft config is valid"))
}

/// The group id of a partition on the peer transport (never 0, the metadata group, nor
/// `u64::MAX`, the liveness beats).
pub fn group_id(topic_id: &uuid::Uuid, partition: i32) -> GroupId {
    let (hi, lo) = topic_id.as_u64_pair();
    let mut h = hi ^ lo.rotate_left(17) ^ (partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h.clamp(1, sediment_raft::quiesce::BEAT_GROUP - 1)
}

/// How long replicas of a new partition wait for its preferred replica to form the group.
const PREFERRED_HEAD_START: Duration = Duration::from_millis(1000);

async fn initialize(raft: &DataRaft, members: BTreeMap<u64, BasicNode>) -> anyhow::Result<()> {
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Why a proposal was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader of this partition (leader: {0:?})")]
    NotLeader(Option<u64>),
    #[error("the partition's Raft group stopped: {0}")]
    Stopped(String),
}

/// A running partition group on this broker.
pub struct Replica {
    pub raft: DataRaft,
    pub group: GroupId,
    node_id: u64,
    proposals: Arc<Proposals>,
    /// Set when the group is under quiescence (cluster mode): a write wakes it first.
    quiet: std::sync::OnceLock<QuietHandle<DataTc>>,
    /// The peer transport (cluster mode), for leadership transfers.
    peers: std::sync::OnceLock<Arc<Peers>>,
    /// A leadership transfer is under way: new proposals are refused meanwhile.
    transferring: std::sync::atomic::AtomicBool,
    /// Since when this broker leads the group (None when it does not).
    leading_since: Mutex<Option<Instant>>,
    /// Where this leader's log ended over the last lag bound (for its ISR).
    progress: crate::isr::Progress,
    /// Proposals waiting for the entry in flight to reach the disk (group commit).
    queue: Mutex<ProposalQueue>,
    /// The partition whose log this group is (it holds the replica, so not owned).
    partition: std::sync::Weak<Partition>,
}

#[derive(Default)]
struct ProposalQueue {
    items: Vec<(Bytes, u64)>,
    bytes: usize,
    /// When the last entry was handed to openraft, until a flush pass completes.
    in_flight_since: Option<Instant>,
}

/// Largest entry proposals are coalesced into.
const MAX_COALESCED_BYTES: usize = 4 << 20;
/// An entry in flight this long without a flush pass (a stopped group) no longer holds back the
/// queue.
const IN_FLIGHT_STALE: Duration = Duration::from_millis(100);

/// Added to a new leader's vote lease before it campaigns for another voter: its vote was
/// cast a moment before it learnt that it leads.
const LEASE_MARGIN: Duration = Duration::from_millis(100);

/// Why a leadership transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("broker {0} is not a voter of the partition")]
    NotAVoter(u64),
    #[error("broker {0} did not catch up in time")]
    Lagging(u64),
    #[error("broker {0} did not campaign: {1}")]
    Refused(u64, String),
    #[error("broker {0} cannot be reached: {1}")]
    Unreachable(u64, String),
    #[error("the election did not complete in time")]
    Timeout,
}

/// A proposal in flight: first its append outcome (acks=1), then its commit (acks=all).
pub struct Proposed {
    token: u64,
    proposals: Arc<Proposals>,
    appended: oneshot::Receiver<Outcome>,
    committed: Option<oneshot::Receiver<Result<(), ProposeError>>>,
}

impl Drop for Proposed {
    fn drop(&mut self) {
        self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
        self.proposals.committing.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
    }
}

/// Longest a committed entry of a group of one waits for its fsync before its proposers hear
/// of a failure (the produce request's own timeout is usually shorter).
const DURABLE_WAIT: Duration = Duration::from_secs(120);

/// Waits until the high watermark passes entry `index` (see [`Partition::acks_before_fsync`]).
async fn wait_durable(p: &Partition, index: u64) -> Result<(), ProposeError> {
    let end = p.lock().raft.as_mut().and_then(|r| r.index.get(index).ok().flatten()).map(|rec| rec.next_offset());
    let Some(end) = end else { return Ok(()) };
    match p.wait_for_hw(end, Instant::now() + DURABLE_WAIT).await {
        Ok(()) => Ok(()),
        Err(crate::partition::WaitError::StorageFailed) => Err(ProposeError::Stopped("the partition's fsync failed".into())),
        Err(crate::partition::WaitError::TimedOut) => Err(ProposeError::Stopped("the entry was not fsynced in time".into())),
    }
}

/// A commit waiter whose sender went: leadership moved before the entry committed.
fn commit_outcome(r: Result<Result<(), ProposeError>, oneshot::error::RecvError>) -> Result<(), ProposeError> {
    r.unwrap_or(Err(ProposeError::NotLeader(None)))
}

fn committed_err(r: Result<openraft::raft::ClientWriteResult<DataTc>, oneshot::error::RecvError>) -> Result<(), ProposeError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader(f.leader_id)),
        Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        // leadership moved before the entry committed: it may be truncated
        Err(_) => Err(ProposeError::NotLeader(None)),
    }
}

impl Proposed {
    /// The leader appended the proposal locally (or refused it).
    pub async fn appended(&mut self) -> Result<Outcome, ProposeError> {
        let Some(committed) = self.committed.as_mut() else {
            return (&mut self.appended).await.map_err(|_| ProposeError::NotLeader(None));
        };
        tokio::select! {
            biased;
            o = &mut self.appended => o.map_err(|_| ProposeError::NotLeader(None)),
            c = committed => {
                self.committed = None;
                commit_outcome(c)?;
                // committed implies appended: the outcome is already there
                (&mut self.appended).await.map_err(|_| ProposeError::NotLeader(None))
            }
        }
    }

    /// The proposal's entry committed (a majority has it on disk). For a refused or duplicate
    /// batch this is the commit of its no-op entry, which follows the original batch.
    pub async fn committed(mut self) -> Result<(), ProposeError> {
        match self.committed.take() {
            Some(c) => commit_outcome(c.await),
            None => Ok(()),
        }
    }
}

impl Replica {
    /// Starts `p`'s Raft group on this broker (`p` opened with
    /// [`Partition::open_replicated`]); on a first start every replica seeds the same
    /// membership (`voters`: broker id → raft address).
    /// With `quiescer`, the group stops its timers while idle (see
    /// [`sediment_raft::quiesce`]). A new group's first leader is `preferred` when it is up:
    /// the other replicas give it a head start, as Kafka's controller makes the first replica
    /// the leader.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        p: Arc<Partition>,
        node_id: u64,
        group: GroupId,
        voters: &BTreeMap<u64, String>,
        preferred: Option<u64>,
        peers: Arc<Peers>,
        registry: &Registry,
        quiescer: Option<&Quiescer<DataTc>>,
        recovery: Option<Arc<sediment_raft::network::Recovery>>,
    ) -> anyhow::Result<Arc<Replica>> {
        let init_delay = preferred.filter(|p| *p != node_id).map(|_| PREFERRED_HEAD_START);
        let network = NetworkFactory::<DataTc>::new(peers.clone(), group);
        let replica = Self::start_on(p, node_id, group, voters, network, raft_config(), init_delay, recovery.clone()).await?;
        let _ = replica.peers.set(peers.clone());
        let on_append = quiescer.map(|q| {
            let h = q.add(group, replica.raft.clone());
            let _ = replica.quiet.set(h.clone());
            Arc::new(move || h.appended()) as Arc<dyn Fn() + Send + Sync>
        });
        registry.register(group, Arc::new(RaftHandler { raft: replica.raft.clone(), client: None, on_append, recovery }));
        Ok(replica)
    }

    /// Whether the group is quiesced on this broker.
    pub fn is_quiet(&self) -> bool {
        self.quiet.get().is_some_and(|q| q.is_quiet())
    }

    /// [`start`](Self::start) over any network (the deterministic simulation test passes an
    /// in-process one) and with the given timers. A new group is initialized at once, or after
    /// `init_delay` (replicas other than the preferred leader). `recovery`: this replica's disk
    /// was lost ([`sediment_raft::network::Recovery`]); it campaigns only when that allows.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_on<N: openraft::RaftNetworkFactory<DataTc>>(
        p: Arc<Partition>,
        node_id: u64,
        group: GroupId,
        voters: &BTreeMap<u64, String>,
        network: N,
        config: Arc<Config>,
        init_delay: Option<Duration>,
        recovery: Option<Arc<sediment_raft::network::Recovery>>,
    ) -> anyhow::Result<Arc<Replica>> {
        // A group of one whose log is gone but whose vote survived (fsync = never, then a power
        // cut): openraft would take it for initialized and wait forever for a membership nobody
        // can send. Nobody else votes in a group of one: its vote goes and the group starts again.
        if voters.len() == 1 && voters.contains_key(&node_id) {
            let lost = {
                let inner = p.lock();
                inner.raft.as_ref().filter(|r| r.last_log_id().is_none()).map(|_| inner.log.dir().to_path_buf())
            };
            if let Some(dir) = lost.filter(|d| d.join(VOTE_FILE).exists()) {
                tracing::warn!(topic = %p.topic, partition = p.index, "the Raft log of this group of one is gone but its vote is not; starting the group again");
                for f in [VOTE_FILE, COMMITTED_FILE, APPLIED_FILE] {
                    match std::fs::remove_file(dir.join(f)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
            }
        }
        let proposals = Arc::new(Proposals::default());
        let log = ReplicaLog::new(p.clone(), proposals.clone());
        let sm = ReplicaSm::open(p.clone());
        let raft = DataRaft::new(node_id, config, network, log, sm).await?;
        if let Some(r) = &recovery {
            r.watch(&raft);
        }
        sediment_raft::network::spawn_election_watchdog(raft.clone(), recovery);
        let resumed = raft.is_initialized().await?;
        if resumed {
            // openraft resumes a lone voter's leadership in its old term without committing
            // anything, and the committed index it saved is only a hint that may lag the log,
            // so the high watermark would stay below records acknowledged before the restart.
            // One no-op entry, committed, commits the whole log before the partition serves.
            let m = raft.metrics().borrow().clone();
            if m.membership_config.membership().voter_ids().eq([node_id]) && m.current_leader == Some(node_id) {
                raft.client_write(Proposal::default()).await?;
            }
        }
        // no voters: a replica added to a running group (reassignment) waits for its leader
        if !voters.is_empty() && !resumed {
            let members: BTreeMap<u64, BasicNode> = voters.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
            match init_delay {
                None => initialize(&raft, members).await?,
                Some(d) => {
                    // the preferred replica initializes (and so campaigns) first; the others
                    // join its group from its first append, or start one without it if it is
                    // not there
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        if matches!(raft.is_initialized().await, Ok(false))
                            && let Err(e) = initialize(&raft, members).await
                        {
                            tracing::warn!(error = %e, "cannot initialize the partition's Raft group");
                        }
                    });
                }
            }
        }
        let replica = Arc::new(Replica {
            raft: raft.clone(),
            group,
            node_id,
            proposals,
            quiet: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            transferring: std::sync::atomic::AtomicBool::new(false),
            leading_since: Mutex::new(None),
            progress: crate::isr::Progress::default(),
            queue: Mutex::new(ProposalQueue::default()),
            partition: Arc::downgrade(&p),
        });
        let _ = p.replica.set(replica.clone());
        // the Kafka leader epoch follows the Raft term
        let mut metrics = raft.metrics();
        let weak = Arc::downgrade(&p);
        let weak_replica = Arc::downgrade(&replica);
        tokio::spawn(async move {
            let mut was_leader = false;
            loop {
                let (term, leading) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.state == ServerState::Leader)
                };
                let became_leader = leading && !was_leader;
                if leading != was_leader {
                    sediment_telemetry::metrics().replication.leader_changed();
                    was_leader = leading;
                    if let Some(r) = weak_replica.upgrade() {
                        *r.leading_since.lock().unwrap_or_else(|e| e.into_inner()) = leading.then(Instant::now);
                        r.progress.reset();
                    }
                }
                let Some(p) = weak.upgrade() else { return };
                p.set_leader_epoch(term.min(i32::MAX as u64) as i32);
                if became_leader {
                    tracing::info!(topic = %p.topic, partition = p.index, epoch = term, "leading the partition");
                }
                drop(p);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(replica)
    }

    /// The current leader's broker id, if known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// This broker's leader epoch if it leads the partition and has applied an entry of its
    /// own term, so every remote segment change an earlier leader committed is applied here
    /// (tiering uploads only then, and resumes from the uploaded end those changes left).
    pub fn leader_epoch(&self) -> Option<i32> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let applied_own_term = m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term);
        (m.state == ServerState::Leader && applied_own_term).then(|| m.current_term.min(i32::MAX as u64) as i32)
    }

    /// Tiered storage: commits a change to the remote segment list through the partition's
    /// Raft log; resolves once it is committed and applied here. Fails when this broker does
    /// not lead the partition (the upload it records is then not committed: the epoch fence).
    pub async fn commit_remote(&self, op: sediment_tier::ManifestOp) -> Result<(), ProposeError> {
        self.write_control(Proposal { remote: Some(op), ..Proposal::default() }).await
    }

    /// Proposes an entry that holds no records and waits until it is applied here.
    async fn write_control(&self, prop: Proposal) -> Result<(), ProposeError> {
        if !self.is_leader() || self.transferring.load(Ordering::Acquire) {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if let Some(q) = self.quiet.get() {
            q.wake();
        }
        match self.raft.client_write(prop).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader(f.leader_id)),
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Proposes one validated record batch. Fails fast when this broker is not the leader.
    pub async fn propose(&self, batch: Bytes) -> Result<Proposed, ProposeError> {
        if !self.is_leader() || self.transferring.load(Ordering::Acquire) {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if let Some(q) = self.quiet.get() {
            q.wake();
        }
        let token = self.proposals.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let (ctx, crx) = oneshot::channel();
        self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(token, tx);
        self.proposals.committing.lock().unwrap_or_else(|e| e.into_inner()).insert(token, ctx);
        let proposed = Proposed { token, proposals: self.proposals.clone(), appended: rx, committed: Some(crx) };
        // Group commit: openraft appends and fsyncs one entry at a time, so what arrives while
        // an entry of ours is on its way to disk goes into the next one, together.
        // taken and handed over under the queue's lock: entries keep the proposals' order
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.bytes += batch.len();
        q.items.push((batch, token));
        let stale = q.in_flight_since.is_some_and(|t| t.elapsed() > IN_FLIGHT_STALE);
        // Only a group of one coalesces: a follower of an earlier release reads one batch per
        // entry, so in a cluster that waits for a version every broker agrees on.
        if q.in_flight_since.is_none() || stale || q.bytes >= MAX_COALESCED_BYTES || !self.alone() {
            self.submit(&mut q)?;
        }
        drop(q);
        Ok(proposed)
    }

    /// Whether this replica is its group's only member (no voter or learner to replicate to).
    pub(crate) fn alone(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).eq([self.node_id])
    }

    /// Hands the queued proposals to openraft as one entry (under the queue's lock: handing
    /// over is an unbounded channel send); their proposers hear of its commit.
    fn submit(&self, q: &mut ProposalQueue) -> Result<(), ProposeError> {
        use futures::FutureExt;
        q.in_flight_since = Some(Instant::now());
        q.bytes = 0;
        let mut items = std::mem::take(&mut q.items);
        let tokens: Vec<u64> = items.iter().map(|(_, t)| *t).collect();
        let batch = if items.len() == 1 {
            items.pop().map(|(b, _)| b).unwrap_or_default()
        } else {
            let mut all = bytes::BytesMut::with_capacity(items.iter().map(|(b, _)| b.len()).sum());
            items.iter().for_each(|(b, _)| all.extend_from_slice(b));
            all.freeze()
        };
        let handed = self.raft.client_write_ff(Proposal { batch, tokens: tokens.clone(), log_start: None, remote: None }).now_or_never();
        // committed before it is fsynced (a group of one): its proposers hear of it once the
        // high watermark, which waits for the fsync, passes it
        let durable_after = self.partition.upgrade().filter(|p| p.acks_before_fsync()).map(|p| Arc::downgrade(&p));
        match handed.unwrap_or_else(|| Err(openraft::error::Fatal::Stopped)) {
            Ok(rx) => {
                let proposals = self.proposals.clone();
                tokio::spawn(async move {
                    let res = rx.await;
                    let index = res.as_ref().ok().and_then(|r| r.as_ref().ok()).map(|w| w.log_id.index);
                    let mut r = committed_err(res);
                    if let (Ok(()), Some(index), Some(p)) = (&r, index, durable_after.and_then(|w| w.upgrade())) {
                        r = wait_durable(&p, index).await;
                    }
                    proposals.committed(&tokens, r);
                });
                Ok(())
            }
            Err(e) => {
                q.in_flight_since = None;
                self.proposals.fail(&tokens);
                Err(ProposeError::Stopped(e.to_string()))
            }
        }
    }

    /// The partition's flusher finished a pass: openraft takes its next entry now, so what
    /// queued meanwhile goes as one.
    pub(crate) fn flushed(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.items.is_empty() {
            q.in_flight_since = None;
        } else {
            let _ = self.submit(&mut q);
        }
    }

    /// DeleteRecords: raises the partition's log start offset to `offset` on every replica,
    /// through a Raft entry. Returns once the entry is committed and applied here. Fails fast
    /// when this broker is not the leader.
    pub async fn raise_log_start(&self, offset: i64) -> Result<(), ProposeError> {
        self.write_control(Proposal { log_start: Some(offset), ..Proposal::default() }).await
    }

    /// [`propose`](Self::propose) without awaiting: handing the entry to the Raft core is an
    /// unbounded channel send, so proposals from one connection keep their request order even
    /// though their answers come later.
    pub fn propose_now(&self, batch: Bytes) -> Result<Proposed, ProposeError> {
        use futures::FutureExt;
        match self.propose(batch).now_or_never() {
            Some(r) => r,
            None => Err(ProposeError::Stopped("the Raft core did not take the proposal".into())),
        }
    }

    /// Voters of the group (the partition's replicas).
    pub fn voter_count(&self) -> usize {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().count()
    }

    /// Replicas (this leader included) whose log has everything committed so far: Kafka's
    /// in-sync replicas, for `min.insync.replicas`. Only meaningful on the leader.
    pub fn in_sync_replicas(&self) -> usize {
        let m = self.raft.metrics();
        let m = m.borrow();
        let Some(applied) = m.last_applied.map(|l| l.index) else { return 1 };
        match &m.replication {
            Some(r) => r.values().filter(|matched| matched.is_some_and(|l| l.index >= applied)).count().max(1),
            None => 1,
        }
    }

    /// The voters in sync with this leader (Kafka's ISR, see [`crate::isr`]) given the ISR as
    /// last committed (`current`), this leader first; empty when it does not lead. Records the
    /// log's progress as it goes, so it is meant to be called periodically.
    pub fn isr(&self, lag: Duration, current: &[u64], alive: impl Fn(u64) -> bool) -> Vec<u64> {
        let now = Instant::now();
        let (me, committed, matched) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                return Vec::new();
            }
            let last = m.last_log_index.unwrap_or(0);
            self.progress.record(now, last, lag);
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            let index_of = |id: u64| match &m.replication {
                _ if id == m.id => last,
                Some(r) => r.get(&id).copied().flatten().map_or(0, |l| l.index),
                None => 0,
            };
            let committed = m.last_applied.map_or(0, |l| l.index);
            (m.id, committed, voters.into_iter().map(|id| (id, index_of(id))).collect::<Vec<_>>())
        };
        let bound = now.checked_sub(lag).map_or(0, |t| self.progress.index_at(t));
        let view = crate::isr::View { leader: me, current, bound, committed };
        let mut isr = crate::isr::in_sync(&view, matched, alive);
        isr.sort_by_key(|id| *id != me);
        isr
    }

    /// Raft entries of this leader's log each follower (voter or learner) does not have yet;
    /// empty when this broker does not lead the group.
    pub fn follower_lag(&self) -> Vec<(u64, u64)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let (true, Some(r)) = (m.state == ServerState::Leader, &m.replication) else { return Vec::new() };
        let last = m.last_log_index.unwrap_or(0);
        r.iter().filter(|(id, _)| **id != m.id).map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index)))).collect()
    }

    /// How long this broker has led the group (None when it does not).
    pub fn led_for(&self) -> Option<Duration> {
        self.leading_since.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed())
    }

    /// Whether voter `id` has everything committed so far (leader only): Kafka's in-sync.
    pub fn in_sync(&self, id: u64) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let Some(applied) = m.last_applied.map(|l| l.index) else { return false };
        m.replication.as_ref().and_then(|r| r.get(&id)).is_some_and(|x| x.is_some_and(|l| l.index >= applied))
    }

    /// Whether voter `id` has every entry of the leader's log (leader only).
    pub fn caught_up(&self, id: u64) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let last = m.last_log_index;
        m.replication.as_ref().and_then(|r| r.get(&id)).is_some_and(|x| x.map(|l| l.index) == last)
    }

    /// Hands this broker's leadership to voter `to` (Kafka's preferred leader election).
    ///
    /// openraft 0.9 has no leadership transfer, so: stop taking proposals (producers get
    /// NOT_LEADER_OR_FOLLOWER and retry), wait until `to` has the whole log, and ask it to
    /// campaign. openraft renews a follower's lease on its vote on contact, but a leader's only
    /// when its vote changes, so once this broker has led for longer than the lease (the
    /// election timeout maximum) it grants the vote and steps down; with `to` voting for itself
    /// that is a majority of three. A younger leader first waits its lease out, taking
    /// proposals meanwhile: otherwise a broker stopping right after the previous one handed it
    /// partitions sees every campaign refused, and the target, back to follower on the next
    /// heartbeat, is refused again on each retry.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), TransferError> {
        if !self.is_leader() {
            return Err(TransferError::NotLeader);
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max) + LEASE_MARGIN;
        if let Some(age) = self.led_for()
            && age < lease
        {
            tokio::time::sleep(lease - age).await;
            if !self.is_leader() {
                return Err(TransferError::NotLeader);
            }
        }
        let (term, addr) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let node = m.membership_config.membership().get_node(&to).cloned();
            (m.current_term, node.map(|n| n.addr))
        };
        let (Some(addr), Some(peers)) = (addr, self.peers.get()) else {
            return Err(TransferError::NotAVoter(to));
        };
        self.transferring.store(true, Ordering::Release);
        let r = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            // proposals taken just before the pause may still be on their way into the log:
            // the target must have those too, or this leader refuses it its vote
            let submitted = || !self.proposals.waiting.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            while submitted() || !self.caught_up(to) {
                if tokio::time::Instant::now() > deadline {
                    return Err(TransferError::Lagging(to));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let followed = sediment_raft::network::ask_to_campaign(peers, self.group, to, &addr, self.node_id, term).await.map_err(|e| match e {
                sediment_raft::transport::CallError::Unreachable { .. } => TransferError::Unreachable(to, e.to_string()),
                e => TransferError::Refused(to, e.to_string()),
            })?;
            if !followed {
                return Err(TransferError::Refused(to, "it does not follow this leader at this term".into()));
            }
            // done once the target leads, not when this broker steps down
            if sediment_raft::network::led_by(&self.raft, to, term, Duration::from_secs(3)).await { Ok(()) } else { Err(TransferError::Timeout) }
        }
        .await;
        self.transferring.store(false, Ordering::Release);
        r
    }

    /// Retention on a replicated partition: retention wants the log to start at `target`, but
    /// openraft may still need the entries below it (to replicate them to a lagging follower).
    /// So the Raft log's start moves first: a snapshot at the last entry below `target`, then a
    /// purge up to it, which openraft carries out once no replication in flight reads those
    /// entries; the purge then deletes the segments ([`ReplicaLog`]'s `purge`). A follower that
    /// still needs them gets the snapshot instead and restarts its log at `target`.
    pub async fn after_retention(&self, p: &Partition, target: i64) {
        let applied = self.raft.metrics().borrow().last_applied;
        let Some((point, _)) = retention_point(p, applied, Some(target)) else { return };
        {
            let mut inner = p.lock();
            let Some(r) = inner.raft.as_mut() else { return };
            if r.purged.is_some_and(|p| p.index >= point.index) {
                return;
            }
            r.snapshot_at = Some(target);
        }
        if self.raft.trigger().snapshot().await.is_err() {
            return;
        }
        let mut m = self.raft.metrics();
        let built =
            matches!(tokio::time::timeout(Duration::from_secs(30), m.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= point.index))).await, Ok(Ok(_)));
        if !built {
            tracing::warn!(topic = %p.topic, partition = p.index, index = point.index, "no snapshot at the retention point; the log keeps its start");
            return;
        }
        let _ = self.raft.trigger().purge_log(point.index).await;
        tracing::debug!(topic = %p.topic, partition = p.index, index = point.index, target, "raft log start moving to the retention point");
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::end_offset_for;

    #[test]
    fn epoch_end_offsets_follow_kafka() {
        let epochs = [(1, 0), (3, 60), (4, 90)];
        assert_eq!(end_offset_for(&epochs, 4, 120), (4, 120), "latest epoch ends at the log end");
        assert_eq!(end_offset_for(&epochs, 3, 120), (3, 90));
        assert_eq!(end_offset_for(&epochs, 2, 120), (1, 60), "an epoch with no records answers the one below");
        assert_eq!(end_offset_for(&epochs, 1, 120), (1, 60));
        assert_eq!(end_offset_for(&epochs, 0, 120), (0, 0), "older than all known: the first start");
        assert_eq!(end_offset_for(&epochs, 5, 120), (-1, -1), "newer than all known");
        assert_eq!(end_offset_for(&epochs, -1, 120), (-1, -1));
        assert_eq!(end_offset_for(&[], 0, 0), (-1, -1));
    }
}
