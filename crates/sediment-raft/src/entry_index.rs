//! The Raft index of a partition: which Kafka offsets each Raft log entry holds.
//!
//! A partition's Raft log *is* its segment log: a replicated record batch is written once, to
//! the segment, with its offsets patched in and the Raft term as its partition leader epoch.
//! Raft needs two more things the segment log does not have: dense entry indexes (openraft
//! numbers entries 0, 1, 2, … while a batch spans many offsets) and entries that are not record
//! batches (a new leader's blank entry, membership changes, and a refused idempotent batch kept
//! as a no-op). This index supplies both without putting anything but records in the segments,
//! so consumers see exactly the offsets producers got, with no gaps.
//!
//! One fixed-size record per entry, in chunk files `{first index:020}.ridx` of up to
//! [`CHUNK_ENTRIES`] records each, in the partition directory:
//!
//! ```text
//! base_offset i64 | term u64 | last_offset_delta i32 | kind u8 | 3 bytes zero     (24 bytes)
//! ```
//!
//! `base_offset` of a non-batch entry is the log end offset when it was appended (it holds no
//! offsets). Records are written with the batches and fsynced with them; recovery cuts a torn
//! record and [`EntryIndex::reconcile`] makes the index and the segment log agree after a
//! crash (neither may hold an entry the other lost). Membership entries' payloads, rare and
//! small, live in `raft.membership` (rewritten atomically on change).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::log_store::write_atomic;

/// Records per chunk file (6 MiB): purging deletes whole chunks.
pub const CHUNK_ENTRIES: u64 = 1 << 18;
pub const RECORD_LEN: u64 = 24;
const EXT: &str = "ridx";
const MEMBERSHIP_FILE: &str = "raft.membership";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    /// A record batch in the segment log.
    Batch = 1,
    /// A leader's first entry of its term.
    Blank = 2,
    /// A membership change (payload in `raft.membership`).
    Membership = 3,
    /// A proposal the leader refused at append (a duplicate or out-of-order idempotent batch):
    /// it keeps its Raft index but holds no records.
    Noop = 4,
    /// No entry: filler for an index openraft skipped. openraft itself always appends
    /// contiguously; its storage conformance suite appends with gaps (as a keyed store would
    /// take them), and reads treat a hole as an absent entry.
    Hole = 5,
    /// DeleteRecords on a replicated partition: the log start offset rises to the offset in the
    /// entry's payload (8 bytes, big-endian) when the entry is applied. Holds no records.
    LogStart = 6,
    /// Tiered storage on a replicated partition: a change to the list of the partition's
    /// remote segments (an upload committed, remote retention), applied by every replica.
    /// Payload: the encoded change. Holds no records.
    Remote = 7,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<EntryKind> {
        Some(match v {
            1 => EntryKind::Batch,
            2 => EntryKind::Blank,
            3 => EntryKind::Membership,
            4 => EntryKind::Noop,
            5 => EntryKind::Hole,
            6 => EntryKind::LogStart,
            7 => EntryKind::Remote,
            _ => return None,
        })
    }
}

/// One entry's place in the segment log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRecord {
    pub base_offset: i64,
    pub term: u64,
    /// The batch's last offset delta; unused (0) for entries that are not batches.
    pub last_offset_delta: i32,
    pub kind: EntryKind,
}

impl EntryRecord {
    /// One past the entry's last offset: where the next entry starts.
    pub fn next_offset(&self) -> i64 {
        match self.kind {
            EntryKind::Batch => self.base_offset + self.last_offset_delta as i64 + 1,
            _ => self.base_offset,
        }
    }

    fn encode(&self) -> [u8; RECORD_LEN as usize] {
        let mut b = [0u8; RECORD_LEN as usize];
        b[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        b[8..16].copy_from_slice(&self.term.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[20] = self.kind as u8;
        b
    }

    fn decode(b: &[u8]) -> Option<EntryRecord> {
        Some(EntryRecord {
            base_offset: i64::from_be_bytes(b[0..8].try_into().ok()?),
            term: u64::from_be_bytes(b[8..16].try_into().ok()?),
            last_offset_delta: i32::from_be_bytes(b[16..20].try_into().ok()?),
            kind: EntryKind::from_u8(b[20])?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("raft index i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("raft index {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("raft index: entry {index} appended after entry {last:?} (entries must follow the last one)")]
    NotContiguous { index: u64, last: Option<u64> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.to_path_buf(), source }
}

struct Chunk {
    first: u64,
    /// Records in the file.
    len: u64,
    file: File,
    path: PathBuf,
    /// Written since the last sync.
    dirty: bool,
}

/// The entry index of one partition (see the module docs).
pub struct EntryIndex {
    dir: PathBuf,
    /// Ordered by first index, contiguous; may be empty.
    chunks: Vec<Chunk>,
    last: Option<(u64, EntryRecord)>,
    /// Payloads of membership entries still in the log, by index.
    memberships: BTreeMap<u64, Vec<u8>>,
    /// Entries up to here are purged: never returned, even while their chunk file remains.
    floor: Option<u64>,
}

fn chunk_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{EXT}"))
}

impl EntryIndex {
    /// Opens the index in `dir`, cutting a torn last record.
    pub fn open(dir: &Path) -> Result<EntryIndex, IndexError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first) = name.strip_suffix(&format!(".{EXT}")).and_then(|s| s.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort();
        let mut chunks: Vec<Chunk> = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            let path = chunk_path(dir, first);
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
            let size = file.metadata().map_err(io(&path))?.len();
            let mut len = size / RECORD_LEN;
            if let Some(prev) = chunks.last()
                && prev.first + prev.len != first
            {
                return Err(IndexError::Corrupt { path, reason: format!("chunk starts at {first}, previous ends at {}", prev.first + prev.len) });
            }
            let is_last = i + 1 == firsts.len();
            if size % RECORD_LEN != 0 {
                if !is_last {
                    return Err(IndexError::Corrupt { path, reason: format!("{size} bytes is not a whole number of records") });
                }
                tracing::warn!(path = %path.display(), "raft index: cutting a torn record");
                file.set_len(len * RECORD_LEN).map_err(io(&path))?;
            }
            if len > CHUNK_ENTRIES {
                len = CHUNK_ENTRIES.min(len);
            }
            chunks.push(Chunk { first, len, file, path, dirty: false });
        }
        // drop empty trailing chunks (created just before a crash)
        while chunks.len() > 1 && chunks.last().is_some_and(|c| c.len == 0) {
            let c = chunks.pop().expect("checked non-empty");
            std::fs::remove_file(&c.path).map_err(io(&c.path))?;
        }
        let memberships = match std::fs::read(dir.join(MEMBERSHIP_FILE)) {
            Ok(b) => crate::network::decode(&b).map_err(|reason| IndexError::Corrupt { path: dir.join(MEMBERSHIP_FILE), reason })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&dir.join(MEMBERSHIP_FILE))(e)),
        };
        let mut idx = EntryIndex { dir: dir.to_path_buf(), chunks, last: None, memberships, floor: None };
        idx.last = match idx.last_index() {
            Some(i) => Some(idx.raw(i)?.ok_or_else(|| IndexError::Corrupt { path: dir.to_path_buf(), reason: format!("entry {i} unreadable") })?),
            None => None,
        };
        // payloads of entries whose records a crash took (written first, see `append`)
        let last = idx.last_index();
        let before = idx.memberships.len();
        idx.memberships.retain(|&i, _| last.is_some_and(|l| i <= l));
        if idx.memberships.len() != before {
            tracing::warn!(dir = %dir.display(), dropped = before - idx.memberships.len(), "raft index: dropping payloads of entries a crash did not keep");
            idx.write_memberships()?;
        }
        Ok(idx)
    }

    /// First index still present.
    pub fn first_index(&self) -> Option<u64> {
        let first = self.chunks.iter().find(|c| c.len > 0).map(|c| c.first)?;
        let first = match self.floor {
            Some(f) => first.max(f + 1),
            None => first,
        };
        (Some(first) <= self.last_index()).then_some(first)
    }

    /// Hides entries `..=index` (the purge point recorded elsewhere, restored at open).
    pub fn set_floor(&mut self, index: u64) {
        self.floor = Some(self.floor.map_or(index, |f| f.max(index)));
    }

    pub fn last_index(&self) -> Option<u64> {
        self.chunks.iter().rev().find(|c| c.len > 0).map(|c| c.first + c.len - 1)
    }

    pub fn last(&self) -> Option<(u64, EntryRecord)> {
        self.last
    }

    fn chunk_of(&self, index: u64) -> Option<&Chunk> {
        let i = self.chunks.partition_point(|c| c.first <= index).checked_sub(1)?;
        let c = &self.chunks[i];
        (index < c.first + c.len).then_some(c)
    }

    /// The record of entry `index`, if present.
    pub fn get(&self, index: u64) -> Result<Option<EntryRecord>, IndexError> {
        Ok(self.range(index, index + 1)?.into_iter().next().map(|(_, r)| r))
    }

    /// Records of the present entries in `[start, end)`, in order.
    pub fn range(&self, start: u64, end: u64) -> Result<Vec<(u64, EntryRecord)>, IndexError> {
        self.records(start, end, false)
    }

    /// The record at `index`, holes included (for the last-entry bookkeeping).
    fn raw(&self, index: u64) -> Result<Option<(u64, EntryRecord)>, IndexError> {
        Ok(self.records(index, index + 1, true)?.into_iter().next())
    }

    fn records(&self, start: u64, end: u64, holes: bool) -> Result<Vec<(u64, EntryRecord)>, IndexError> {
        let mut out = Vec::new();
        let mut i = match self.floor {
            Some(f) if !holes => start.max(f + 1),
            _ => start,
        };
        while i < end {
            let Some(c) = self.chunk_of(i) else {
                // before the first chunk: skip ahead to it; after the last: done
                match self.chunks.iter().find(|c| c.first > i && c.len > 0) {
                    Some(c) => {
                        i = c.first;
                        continue;
                    }
                    None => break,
                }
            };
            let upto = end.min(c.first + c.len);
            let n = (upto - i) as usize;
            let mut buf = vec![0u8; n * RECORD_LEN as usize];
            c.file.read_exact_at(&mut buf, (i - c.first) * RECORD_LEN).map_err(io(&c.path))?;
            for (k, rec) in buf.chunks_exact(RECORD_LEN as usize).enumerate() {
                let r = EntryRecord::decode(rec)
                    .ok_or_else(|| IndexError::Corrupt { path: c.path.clone(), reason: format!("bad record for entry {}", i + k as u64) })?;
                if holes || r.kind != EntryKind::Hole {
                    out.push((i + k as u64, r));
                }
            }
            i = upto;
        }
        Ok(out)
    }

    /// Appends the record of entry `index` (must follow the last one, or start an empty index
    /// anywhere) and, for a membership entry, its payload.
    pub fn append(&mut self, index: u64, rec: EntryRecord, membership: Option<Vec<u8>>) -> Result<(), IndexError> {
        let last = self.last_index();
        if let Some(l) = last
            && index > l + 1
            && index - l <= 1 << 16
        {
            let filler = EntryRecord { base_offset: self.last.map_or(0, |(_, r)| r.next_offset()), term: 0, last_offset_delta: 0, kind: EntryKind::Hole };
            for i in l + 1..index {
                self.append(i, filler, None)?;
            }
            return self.append(index, rec, membership);
        }
        match last {
            Some(l) if index != l + 1 => return Err(IndexError::NotContiguous { index, last }),
            None if !self.chunks.is_empty() && self.chunks.last().is_some_and(|c| c.first + c.len != index) => {
                // empty but a chunk was kept to remember where the log starts: start afresh
                for c in self.chunks.drain(..) {
                    std::fs::remove_file(&c.path).map_err(io(&c.path))?;
                }
            }
            _ => {}
        }
        let need_new = match self.chunks.last() {
            None => true,
            Some(c) => c.len >= CHUNK_ENTRIES,
        };
        if need_new {
            let path = chunk_path(&self.dir, index);
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io(&path))?;
            crate::log_store::sync_dir(&self.dir).map_err(io(&self.dir))?;
            self.chunks.push(Chunk { first: index, len: 0, file, path, dirty: false });
        }
        // the payload goes to disk before the record that needs it: a crash in between leaves a
        // payload no record names (dropped at open), never a record without its payload
        if let Some(m) = membership {
            self.memberships.insert(index, m);
            if let Err(e) = self.write_memberships() {
                self.memberships.remove(&index);
                return Err(e);
            }
        }
        let c = self.chunks.last_mut().expect("a chunk exists");
        c.file.write_all_at(&rec.encode(), c.len * RECORD_LEN).map_err(io(&c.path))?;
        c.len += 1;
        c.dirty = true;
        self.last = Some((index, rec));
        Ok(())
    }

    /// The last entry (at or above the floor) that ends at or below `offset`: everything up to
    /// it lies wholly below that offset. Binary search (entries' next offsets never decrease).
    pub fn last_ending_at_or_below(&self, offset: i64) -> Result<Option<(u64, EntryRecord)>, IndexError> {
        let (Some(mut lo), Some(hi)) = (self.first_index(), self.last_index()) else { return Ok(None) };
        let at = |i: u64| -> Result<EntryRecord, IndexError> { self.get(i)?.ok_or(IndexError::NotContiguous { index: i, last: Some(hi) }) };
        if at(lo)?.next_offset() > offset {
            return Ok(None);
        }
        // invariant: entry lo ends at or below offset; find the last such
        let mut hi = hi;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if at(mid)?.next_offset() <= offset {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some((lo, at(lo)?)))
    }

    /// The payload of membership entry `index`.
    pub fn membership(&self, index: u64) -> Option<&[u8]> {
        self.memberships.get(&index).map(|v| v.as_slice())
    }

    /// The payload of a non-batch entry that has one (membership, log start): kept in the same
    /// side file, by index.
    pub fn payload(&self, index: u64) -> Option<&[u8]> {
        self.membership(index)
    }

    /// Files to fsync to make every appended record durable (run without the caller's lock).
    pub fn sync_handles(&mut self) -> Result<Vec<File>, IndexError> {
        let mut out = Vec::new();
        for c in self.chunks.iter_mut().filter(|c| c.dirty) {
            out.push(c.file.try_clone().map_err(io(&c.path))?);
            c.dirty = false;
        }
        Ok(out)
    }

    /// Deletes entries `index..` (Raft truncation of a conflicting suffix).
    pub fn truncate(&mut self, index: u64) -> Result<(), IndexError> {
        if self.floor.is_some_and(|f| f >= index) {
            self.floor = index.checked_sub(1);
        }
        loop {
            let n = self.chunks.len();
            let Some(c) = self.chunks.last_mut() else { break };
            if c.first >= index && n > 1 {
                let c = self.chunks.pop().expect("non-empty");
                std::fs::remove_file(&c.path).map_err(io(&c.path))?;
                continue;
            }
            if index < c.first + c.len {
                let keep = index.saturating_sub(c.first);
                c.file.set_len(keep * RECORD_LEN).map_err(io(&c.path))?;
                c.file.sync_all().map_err(io(&c.path))?;
                c.len = keep;
            }
            break;
        }
        let before = self.memberships.len();
        self.memberships.retain(|&i, _| i < index);
        if self.memberships.len() != before {
            self.write_memberships()?;
        }
        self.last = match self.last_index() {
            Some(i) => self.raw(i)?,
            None => None,
        };
        Ok(())
    }

    /// Forgets entries `..=index` (after Raft purged them): whole chunks below go, and the
    /// membership payloads before the last one at or below `index`.
    pub fn purge(&mut self, index: u64) -> Result<(), IndexError> {
        self.set_floor(index);
        while self.chunks.len() > 1 && self.chunks[1].first <= index + 1 {
            let c = self.chunks.remove(0);
            std::fs::remove_file(&c.path).map_err(io(&c.path))?;
        }
        if self.last_index().is_some_and(|l| l <= index) {
            // everything is purged: drop the records, keep nothing to read
            for c in self.chunks.drain(..) {
                std::fs::remove_file(&c.path).map_err(io(&c.path))?;
            }
            self.last = None;
        }
        Ok(())
    }

    fn write_memberships(&self) -> Result<(), IndexError> {
        let data = crate::network::encode(&self.memberships).map_err(|reason| IndexError::Corrupt { path: self.dir.join(MEMBERSHIP_FILE), reason })?;
        write_atomic(&self.dir, MEMBERSHIP_FILE, &data).map_err(io(&self.dir.join(MEMBERSHIP_FILE)))
    }

    /// After a crash, make the index agree with a segment log that ends at `log_end_offset`:
    /// returns the offset the segment log must be truncated to (when it holds batches no entry
    /// names: written but never acknowledged), after cutting entries whose records the log
    /// lost.
    pub fn reconcile(&mut self, log_end_offset: i64) -> Result<Option<i64>, IndexError> {
        // entries whose data is not (wholly) in the log
        while let Some((i, r)) = self.last {
            if r.next_offset() > log_end_offset || (r.kind != EntryKind::Batch && r.base_offset > log_end_offset) {
                tracing::warn!(dir = %self.dir.display(), index = i, offset = r.base_offset, log_end_offset, "raft index: dropping an entry the segment log lost");
                self.truncate(i)?;
            } else {
                break;
            }
        }
        let end = self.last.map(|(_, r)| r.next_offset());
        Ok(match end {
            Some(e) if e < log_end_offset => Some(e),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, n: i32, term: u64) -> EntryRecord {
        EntryRecord { base_offset: base, term, last_offset_delta: n - 1, kind: EntryKind::Batch }
    }

    #[test]
    fn append_read_truncate_purge_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut x = EntryIndex::open(d.path()).unwrap();
        assert_eq!(x.last(), None);
        x.append(0, EntryRecord { base_offset: 0, term: 0, last_offset_delta: 0, kind: EntryKind::Membership }, Some(b"m0".to_vec())).unwrap();
        x.append(1, EntryRecord { base_offset: 0, term: 1, last_offset_delta: 0, kind: EntryKind::Blank }, None).unwrap();
        let mut off = 0;
        for i in 2..100 {
            x.append(i, batch(off, 10, 1), None).unwrap();
            off += 10;
        }
        assert!(matches!(x.append(5, batch(0, 1, 1), None), Err(IndexError::NotContiguous { .. })));
        assert_eq!(x.get(2).unwrap(), Some(batch(0, 10, 1)));
        assert_eq!(x.get(99).unwrap().unwrap().next_offset(), 980);
        assert_eq!(x.range(98, 200).unwrap().len(), 2);
        assert_eq!(x.membership(0), Some(&b"m0"[..]));
        x.truncate(50).unwrap();
        assert_eq!(x.last_index(), Some(49));
        drop(x);
        let mut x = EntryIndex::open(d.path()).unwrap();
        assert_eq!(x.last().unwrap(), (49, batch(470, 10, 1)));
        assert_eq!(x.membership(0), Some(&b"m0"[..]));
        // reconcile: the log lost its tail past 455 → entries 47 (450..460) and later go, and
        // the log must be cut back to where the last kept entry ends
        assert_eq!(x.reconcile(455).unwrap(), Some(450));
        assert_eq!(x.last_index(), Some(46));
        // the log has more than the index names → the log is cut back
        assert_eq!(x.reconcile(1000).unwrap(), Some(450));
        assert_eq!(x.reconcile(450).unwrap(), None);
        x.purge(10).unwrap();
        assert_eq!(x.get(47).unwrap(), None);
        assert_eq!(x.get(46).unwrap(), Some(batch(440, 10, 1)));
    }

    #[test]
    fn a_crash_between_payload_and_record_leaves_no_record_without_its_payload() {
        let d = tempfile::tempdir().unwrap();
        let mut x = EntryIndex::open(d.path()).unwrap();
        x.append(0, EntryRecord { base_offset: 0, term: 1, last_offset_delta: 0, kind: EntryKind::Membership }, Some(b"m0".to_vec())).unwrap();
        x.append(1, batch(0, 10, 1), None).unwrap();
        let remote = EntryRecord { base_offset: 10, term: 1, last_offset_delta: 0, kind: EntryKind::Remote };
        x.append(2, remote, Some(b"upload".to_vec())).unwrap();
        assert_eq!(x.payload(2), Some(&b"upload"[..]));
        drop(x);
        // the process died after the payload reached disk and before its record did
        std::fs::OpenOptions::new().write(true).open(chunk_path(d.path(), 0)).unwrap().set_len(2 * RECORD_LEN).unwrap();
        let mut x = EntryIndex::open(d.path()).unwrap();
        assert_eq!(x.last_index(), Some(1));
        assert_eq!(x.payload(2), None, "a payload no record names is dropped");
        assert_eq!(x.membership(0), Some(&b"m0"[..]));
        x.append(2, batch(10, 5, 2), None).unwrap();
        drop(x);
        let x = EntryIndex::open(d.path()).unwrap();
        assert_eq!(x.get(2).unwrap(), Some(batch(10, 5, 2)));
        assert_eq!(x.payload(2), None);
    }

    #[test]
    fn chunks_roll_and_purge_whole_files_and_torn_records_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let mut x = EntryIndex::open(d.path()).unwrap();
        let n = CHUNK_ENTRIES * 2 + 10;
        for i in 0..n {
            x.append(i, batch(i as i64, 1, 3), None).unwrap();
        }
        let files = || std::fs::read_dir(d.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == EXT)).count();
        assert_eq!(files(), 3);
        x.purge(CHUNK_ENTRIES + 5).unwrap();
        assert_eq!(files(), 2, "only the wholly purged chunk goes");
        assert_eq!(x.first_index(), Some(CHUNK_ENTRIES + 6), "purged entries are hidden even while their chunk stays");
        assert_eq!(x.get(n - 1).unwrap(), Some(batch(n as i64 - 1, 1, 3)));
        x.truncate(CHUNK_ENTRIES * 2 - 1).unwrap();
        assert_eq!(files(), 1);
        assert_eq!(x.last_index(), Some(CHUNK_ENTRIES * 2 - 2));
        // a torn record at the end is cut at open
        let last = chunk_path(d.path(), CHUNK_ENTRIES);
        let f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all_at(&[1, 2, 3], f.metadata().unwrap().len()).unwrap();
        drop(f);
        drop(x);
        let x = EntryIndex::open(d.path()).unwrap();
        assert_eq!(x.last_index(), Some(CHUNK_ENTRIES * 2 - 2));
        // purge past the end leaves an empty index
        let mut x = x;
        x.purge(n + 5).unwrap();
        assert_eq!(x.last(), None);
        x.append(n + 6, batch(7, 1, 4), None).unwrap();
        assert_eq!(x.first_index(), Some(n + 6));
    }
}
