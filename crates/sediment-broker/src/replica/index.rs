//! The Raft side of a replicated partition's log: the entry index under the partition lock,
//! the leader-epoch cache built from it, and adopting a log written before its partition had a
//! Raft group.

#![allow(clippy::result_large_err)]

use super::*;

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
    pub(crate) purged: Option<LogId<u64>>,
    pub(crate) dir: PathBuf,
    /// Kafka's leader-epoch cache: (epoch, first offset written in it), ascending; built from
    /// the entry index at open, extended on append, cut on truncation.
    pub(crate) epochs: Vec<(i32, i64)>,
    /// The offset retention wants the log to start at: the next snapshot is taken at the last
    /// entry below it (see [`Replica::after_retention`]).
    pub(crate) snapshot_at: Option<i64>,
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
    pub(crate) fn note_epoch(&mut self, term: u64, offset: i64) {
        let epoch = term.min(i32::MAX as u64) as i32;
        if self.epochs.last().is_none_or(|&(e, _)| e < epoch) {
            self.epochs.push((epoch, offset));
        }
    }

    /// Forgets epochs that start at or after `offset` (truncated away).
    pub(crate) fn cut_epochs(&mut self, offset: i64) {
        self.epochs.retain(|&(_, start)| start < offset);
    }

    pub(crate) fn last_log_id(&self) -> Option<LogId<u64>> {
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
