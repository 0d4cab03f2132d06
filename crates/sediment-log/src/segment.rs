//! One segment: a `.log` file of batches plus its sparse indexes, either active (indexes in
//! memory, growing) or sealed (immutable, fsynced, indexes loaded from disk on first use).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sediment_protocol::batch::BatchHeader;

use crate::error::{LogError, io};
use crate::files::{INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, open_rw, remove_if_exists, segment_path};
use crate::index::{OffsetEntry, TimeEntry, decode_offset_index, decode_time_index, encode_offset_index, encode_time_index, lookup_offset, relative};
use crate::scan::{last_offset, next_offset};

/// How many of the newest batches of the active segment are remembered exactly (last offset and
/// position), so that reads near the tail and high-watermark cuts need no file I/O to plan.
pub(crate) const RECENT_BATCHES: usize = 1024;

/// Ring of the newest batches of the active segment.
#[derive(Debug, Default)]
pub(crate) struct RecentBatches {
    /// Base offset of the batch at the front of `entries`.
    front_base: i64,
    /// (last offset, position) per batch, oldest first.
    entries: VecDeque<(i64, u32)>,
}

impl RecentBatches {
    pub(crate) fn push(&mut self, base: i64, last: i64, pos: u32) {
        if self.entries.is_empty() {
            self.front_base = base;
        }
        if self.entries.len() == RECENT_BATCHES
            && let Some((dropped_last, _)) = self.entries.pop_front()
        {
            self.front_base = dropped_last + 1;
        }
        self.entries.push_back((last, pos));
    }

    /// (base offset, position) of the remembered batch holding `offset`.
    pub(crate) fn find(&self, offset: i64) -> Option<(i64, u32)> {
        if self.entries.is_empty() || offset < self.front_base {
            return None;
        }
        let i = self.entries.partition_point(|e| e.0 < offset);
        let (_, pos) = *self.entries.get(i)?;
        let base = if i == 0 { self.front_base } else { self.entries[i - 1].0 + 1 };
        Some((base, pos))
    }
}

/// In-memory state of the active segment.
#[derive(Debug, Default)]
pub(crate) struct ActiveIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
    pub(crate) bytes_since_entry: u64,
    pub(crate) recent: RecentBatches,
    /// Wall time of the first append to this segment since it was created or the log opened.
    pub(crate) first_append_ms: Option<i64>,
}

/// Indexes of a sealed segment, read from disk the first time they are needed (possibly by a
/// read plan outside the partition lock).
#[derive(Debug)]
pub(crate) struct SealedIndex {
    index_path: PathBuf,
    time_path: PathBuf,
    loaded: OnceLock<LoadedIndex>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct LoadedIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl SealedIndex {
    pub(crate) fn lazy(index_path: PathBuf, time_path: PathBuf) -> SealedIndex {
        SealedIndex { index_path, time_path, loaded: OnceLock::new() }
    }

    pub(crate) fn loaded(index_path: PathBuf, time_path: PathBuf, index: LoadedIndex) -> SealedIndex {
        SealedIndex { index_path, time_path, loaded: OnceLock::from(index) }
    }

    /// The indexes, loading them on first use. A file that cannot be read or decoded (checked at
    /// open, so only possible if it changed since) degrades to an empty index: lookups then scan
    /// from the start of the segment, which is slower but still correct.
    pub(crate) fn get(&self) -> &LoadedIndex {
        self.loaded.get_or_init(|| match load_index_files(&self.index_path, &self.time_path) {
            Ok(l) => l,
            Err(reason) => {
                tracing::warn!(index = %self.index_path.display(), %reason, "unusable segment index; scanning the segment instead");
                LoadedIndex::default()
            }
        })
    }

    pub(crate) fn try_get(&self) -> Option<&LoadedIndex> {
        self.loaded.get()
    }
}

/// Reads and decodes both index files of a segment.
pub(crate) fn load_index_files(index_path: &Path, time_path: &Path) -> Result<LoadedIndex, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    let offsets = decode_offset_index(&read(index_path)?)?;
    let times = decode_time_index(&read(time_path)?)?;
    Ok(LoadedIndex { offsets, times })
}

pub(crate) enum SegmentState {
    Active(ActiveIndex),
    Sealed(Arc<SealedIndex>),
}

/// Where a read of a segment starts.
pub(crate) enum Start {
    /// The first byte of the batch holding the offset.
    Exact(u64),
    /// At or before that batch: scan headers forward from here.
    Floor(u64),
    /// The sealed segment's index is not loaded yet: load it (outside the lock), then scan.
    Lazy(Arc<SealedIndex>),
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    /// One past the last offset in the segment (the base offset when empty).
    pub(crate) next_offset: i64,
    /// Bytes of whole batches in the `.log` file.
    pub(crate) size: u64,
    pub(crate) log: Arc<File>,
    pub(crate) log_path: Arc<Path>,
    pub(crate) index_path: PathBuf,
    pub(crate) time_path: PathBuf,
    /// Largest batch max timestamp seen, -1 when none (Kafka's NO_TIMESTAMP).
    pub(crate) max_timestamp: i64,
    /// Last offset of the first batch that reached `max_timestamp` (the first batch when no batch
    /// carries a timestamp); `None` when empty.
    pub(crate) offset_of_max_timestamp: Option<i64>,
    pub(crate) state: SegmentState,
}

impl Segment {
    /// Creates the three files of a new, empty active segment (the caller fsyncs the directory).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let log_path = segment_path(dir, base_offset, LOG_EXT);
        let log = OpenOptions::new().read(true).write(true).create_new(true).open(&log_path).map_err(io("create segment", &log_path))?;
        let index_path = segment_path(dir, base_offset, INDEX_EXT);
        let time_path = segment_path(dir, base_offset, TIME_INDEX_EXT);
        for p in [&index_path, &time_path] {
            let f = open_rw(p, true)?;
            f.set_len(0).map_err(io("truncate index", p))?;
        }
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            log: Arc::new(log),
            log_path: log_path.into(),
            index_path,
            time_path,
            max_timestamp: -1,
            offset_of_max_timestamp: None,
            state: SegmentState::Active(ActiveIndex::default()),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self.state, SegmentState::Sealed(_))
    }

    pub(crate) fn active(&self) -> Option<&ActiveIndex> {
        match &self.state {
            SegmentState::Active(a) => Some(a),
            SegmentState::Sealed(_) => None,
        }
    }

    pub(crate) fn active_mut(&mut self) -> Option<&mut ActiveIndex> {
        match &mut self.state {
            SegmentState::Active(a) => Some(a),
            SegmentState::Sealed(_) => None,
        }
    }

    /// Accounts for one batch written at `pos` of this (active) segment, exactly as Kafka does:
    /// track the largest timestamp, and when more than `interval` bytes were appended since the
    /// last index entry, index this batch and the largest timestamp so far.
    pub(crate) fn note_batch(&mut self, h: &BatchHeader, pos: u32, interval: u32) {
        let last = last_offset(h);
        if self.offset_of_max_timestamp.is_none() || h.max_timestamp > self.max_timestamp {
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            self.offset_of_max_timestamp = Some(last);
        }
        let base = self.base_offset;
        let (max_ts, max_ts_offset) = (self.max_timestamp, self.offset_of_max_timestamp.unwrap_or(last));
        let SegmentState::Active(a) = &mut self.state else {
            debug_assert!(false, "note_batch on a sealed segment");
            return;
        };
        if a.bytes_since_entry > interval as u64 {
            a.offsets.push(OffsetEntry { relative_offset: relative(last, base), position: pos });
            maybe_append_time(&mut a.times, max_ts, relative(max_ts_offset, base));
            a.bytes_since_entry = 0;
        }
        a.bytes_since_entry += h.total_len() as u64;
        a.recent.push(h.base_offset, last, pos);
        self.size = pos as u64 + h.total_len() as u64;
        self.next_offset = next_offset(h);
    }

    /// Where a read of `offset` (inside this segment) starts, without touching the disk.
    pub(crate) fn start_for(&self, offset: i64) -> Start {
        let rel = relative(offset, self.base_offset);
        match &self.state {
            SegmentState::Active(a) => match a.recent.find(offset) {
                Some((_, pos)) => Start::Exact(pos as u64),
                None => Start::Floor(lookup_offset(&a.offsets, rel).map_or(0, |e| e.position as u64)),
            },
            SegmentState::Sealed(s) => match s.try_get() {
                Some(l) => Start::Floor(lookup_offset(&l.offsets, rel).map_or(0, |e| e.position as u64)),
                None => Start::Lazy(s.clone()),
            },
        }
    }

    /// Position at or before the batch holding `offset`, loading a sealed index if needed.
    pub(crate) fn floor_position(&self, offset: i64) -> u64 {
        let rel = relative(offset, self.base_offset);
        let offsets = match &self.state {
            SegmentState::Active(a) => {
                if let Some((_, pos)) = a.recent.find(offset) {
                    return pos as u64;
                }
                &a.offsets
            }
            SegmentState::Sealed(s) => &s.get().offsets,
        };
        lookup_offset(offsets, rel).map_or(0, |e| e.position as u64)
    }

    /// The time index, loading a sealed one if needed.
    pub(crate) fn time_entries(&self) -> &[TimeEntry] {
        match &self.state {
            SegmentState::Active(a) => &a.times,
            SegmentState::Sealed(s) => &s.get().times,
        }
    }

    /// Adds the final time-index entry (the segment's largest timestamp) if it is not there yet.
    fn add_final_time_entry(&mut self) {
        let base = self.base_offset;
        let (max_ts, off) = (self.max_timestamp, self.offset_of_max_timestamp);
        if let (SegmentState::Active(a), Some(off)) = (&mut self.state, off) {
            maybe_append_time(&mut a.times, max_ts, relative(off, base));
        }
    }

    /// Writes the in-memory indexes of the active segment to its index files and fsyncs all three
    /// files (close and seal).
    pub(crate) fn persist(&mut self) -> Result<(), LogError> {
        self.add_final_time_entry();
        if let SegmentState::Active(a) = &self.state {
            write_index_file(&self.index_path, &encode_offset_index(&a.offsets))?;
            write_index_file(&self.time_path, &encode_time_index(&a.times))?;
        }
        self.log.sync_data().map_err(io("fsync segment", &self.log_path))
    }

    /// Seals the active segment: indexes written, all three files fsynced, indexes kept in memory.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        self.persist()?;
        if let SegmentState::Active(a) = &mut self.state {
            let loaded = LoadedIndex { offsets: std::mem::take(&mut a.offsets), times: std::mem::take(&mut a.times) };
            self.state = SegmentState::Sealed(Arc::new(SealedIndex::loaded(self.index_path.clone(), self.time_path.clone(), loaded)));
        }
        Ok(())
    }

    /// Deletes the segment's files (open handles, e.g. of in-flight reads, stay readable).
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        remove_if_exists(&self.log_path)?;
        remove_if_exists(&self.index_path)?;
        remove_if_exists(&self.time_path)
    }

    /// The newest record time for retention: the largest timestamp, or the file's modification
    /// time when no record carries one (as Kafka does).
    pub(crate) fn retention_timestamp(&self) -> Result<i64, LogError> {
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        let modified = self.log.metadata().and_then(|m| m.modified()).map_err(io("stat segment", &self.log_path))?;
        Ok(modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
    }
}

/// Kafka's `TimeIndex.maybeAppend`: only a strictly larger timestamp than the last entry (or
/// than -1 when empty) is indexed.
fn maybe_append_time(times: &mut Vec<TimeEntry>, ts: i64, rel: u32) {
    if ts > times.last().map_or(-1, |e| e.timestamp) {
        times.push(TimeEntry { timestamp: ts, relative_offset: rel });
    }
}

/// Replaces an index file's contents and fsyncs it.
pub(crate) fn write_index_file(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let f = open_rw(path, true)?;
    f.write_all_at(bytes, 0).map_err(io("write index", path))?;
    f.set_len(bytes.len() as u64).map_err(io("truncate index", path))?;
    f.sync_data().map_err(io("fsync index", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_batches_find_and_wrap() {
        let mut r = RecentBatches::default();
        assert_eq!(r.find(0), None);
        // batches of 2 records at offsets 10.., 100 bytes each
        for i in 0..(RECENT_BATCHES as i64 + 10) {
            r.push(10 + 2 * i, 11 + 2 * i, (100 * i) as u32);
        }
        // the first 10 batches fell off the ring
        assert_eq!(r.find(10), None);
        assert_eq!(r.find(29), None);
        assert_eq!(r.find(30), Some((30, 1000)));
        assert_eq!(r.find(31), Some((30, 1000)));
        assert_eq!(r.find(32), Some((32, 1100)));
        let last = 10 + 2 * (RECENT_BATCHES as i64 + 9);
        assert_eq!(r.find(last + 1), Some((last, 100 * (RECENT_BATCHES as u32 + 9))));
        assert_eq!(r.find(last + 2), None);
    }
}
