//! [`PartitionLog`]: the segments of one partition, their recovery, appends, reads, flushes,
//! truncation and retention.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sediment_protocol::batch::{BatchError, BatchHeader, BatchIter, set_base_offset, set_partition_leader_epoch, verify_crc};

use crate::config::LogConfig;
use crate::error::{LogError, io};
use crate::files::{
    CLEAN_SHUTDOWN_FILE, INDEX_EXT, LOG_EXT, SegmentFile, TIME_INDEX_EXT, is_tmp_file, open_rw, parse_segment_file_name, read_log_start_offset,
    remove_if_exists, segment_path, sync_dir, write_log_start_offset,
};
use crate::flush::{FlushDone, FlushJob};
use crate::index::{OFFSET_ENTRY_LEN, OffsetEntry, TIME_ENTRY_LEN, TimeEntry, lookup_time};
use crate::read::{PlanInner, ReadPlan, seek_batch};
use crate::scan::{HeaderAt, LOOKUP_CHUNK, RECOVERY_CHUNK, ScanEnd, Scanner, last_offset, next_offset, scan_batches};
use crate::segment::{ActiveIndex, SealedIndex, Segment, SegmentState, load_index_files};

/// Where an appended batch (or run of batches) landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest batch max timestamp among the appended batches.
    pub max_timestamp: i64,
}

/// A segment as reported by [`PartitionLog::segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    /// One past the segment's last offset (the base offset when empty).
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Largest record timestamp in the segment, -1 if none.
    pub max_timestamp: i64,
    /// Sealed segments are immutable and fsynced; only the last segment is active.
    pub sealed: bool,
    pub log_path: PathBuf,
}

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// The log of one partition. Not internally synchronized: the caller wraps it in a mutex, keeps
/// every call short, and runs [`ReadPlan::execute`] and [`FlushJob::run`] without the lock.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset, contiguous, never empty; the last one is active, all others sealed.
    segments: Vec<Segment>,
    log_start_offset: i64,
    flushed_offset: i64,
    size_bytes: u64,
    /// Bumped by truncations so that a flush begun before one cannot publish offsets after it.
    generation: u64,
    /// Set when a write failed and could not be undone.
    offline: Option<String>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset())
            .field("flushed_offset", &self.flushed_offset)
            .field("segments", &self.segments.len())
            .finish()
    }
}

/// Headroom check for the active segment while planning appends.
#[derive(Debug, Clone, Copy)]
struct Probe {
    size: u64,
    offset_entries: usize,
    time_entries: usize,
    bytes_since_entry: u64,
}

impl PartitionLog {
    // ----- opening and recovery -----

    /// Opens the log in `dir` (created if missing) and recovers it: sealed segments' indexes are
    /// sanity-checked (rebuilt if damaged), the active segment is scanned batch by batch (header,
    /// offsets, CRC-32C) and truncated at the first torn or corrupt batch, leftovers of an
    /// interrupted deletion are removed. After a clean [`close`](Self::close) the CRC scan is
    /// skipped.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<PartitionLog, LogError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let mut dir_changed = false;
        if clean {
            remove_if_exists(&marker)?;
            dir_changed = true;
        }

        let mut bases = BTreeSet::new();
        let mut index_files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("list directory", &dir))? {
            let entry = entry.map_err(io("list directory", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match parse_segment_file_name(name) {
                Some((base, SegmentFile::Log)) => {
                    bases.insert(base);
                }
                Some((base, _)) => index_files.push((base, entry.path())),
                None if is_tmp_file(name) => {
                    remove_if_exists(&entry.path())?;
                    dir_changed = true;
                }
                None => {}
            }
        }
        for (base, path) in index_files {
            if !bases.contains(&base) {
                tracing::info!(path = %path.display(), "deleting index file without a segment");
                remove_if_exists(&path)?;
                dir_changed = true;
            }
        }

        let checkpoint = match read_log_start_offset(&dir) {
            Ok(c) => c,
            Err(LogError::Corrupt { path, reason }) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring unreadable log start offset");
                None
            }
            Err(e) => return Err(e),
        };
        let mut bases: Vec<i64> = bases.into_iter().collect();
        // Segments wholly below the log start offset are leftovers of an interrupted deletion.
        if let Some(start) = checkpoint {
            while bases.len() > 1 && bases[1] <= start {
                for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                    remove_if_exists(&segment_path(&dir, bases[0], ext))?;
                }
                tracing::info!(dir = %dir.display(), base_offset = bases[0], log_start_offset = start, "deleted leftover segment below the log start offset");
                bases.remove(0);
                dir_changed = true;
            }
        }

        let mut segments = Vec::with_capacity(bases.len().max(1));
        if bases.is_empty() {
            segments.push(Segment::create(&dir, checkpoint.unwrap_or(0))?);
            dir_changed = true;
        }
        for (i, &base) in bases.iter().enumerate() {
            match bases.get(i + 1) {
                Some(&next) => segments.push(open_sealed(&dir, base, next, &config)?),
                None => segments.push(recover_active(&dir, base, clean, &config)?),
            }
        }
        let size_bytes = segments.iter().map(|s| s.size).sum();
        let mut log = PartitionLog { dir, config, segments, log_start_offset: 0, flushed_offset: 0, size_bytes, generation: 0, offline: None };
        let end = log.log_end_offset();
        match checkpoint {
            Some(start) if start > end => {
                tracing::warn!(dir = %log.dir.display(), log_start_offset = start, log_end_offset = end, "log ends below its start offset after recovery; starting empty at the start offset");
                log.truncate_fully_and_start_at(start)?;
            }
            _ => {
                log.log_start_offset = checkpoint.unwrap_or(0).max(log.segments[0].base_offset);
                log.flushed_offset = end;
            }
        }
        if dir_changed {
            sync_dir(&log.dir)?;
        }
        tracing::info!(
            dir = %log.dir.display(),
            segments = log.segments.len(),
            log_start_offset = log.log_start_offset,
            log_end_offset = log.log_end_offset(),
            clean_shutdown = clean,
            "opened partition log"
        );
        Ok(log)
    }

    // ----- accessors -----

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First offset that may be read.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Every offset below this is on disk (fsynced).
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of segments, without building [`SegmentInfo`]s (hot paths and metrics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offset of the active segment: it changes exactly when the log rolls (or truncates
    /// into an older segment).
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size,
                max_timestamp: s.max_timestamp,
                sealed: s.is_sealed(),
                log_path: s.log_path.to_path_buf(),
            })
            .collect()
    }

    /// `true` after a write failed in a way that could not be undone; reads still work.
    pub fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty (open creates one; nothing removes the last).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1; // never empty, see `active`
        &mut self.segments[last]
    }

    fn check_online(&self) -> Result<(), LogError> {
        match &self.offline {
            Some(reason) => Err(LogError::Offline { path: self.dir.clone(), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn go_offline(&mut self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "partition log is offline");
        self.offline = Some(reason);
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange { offset, start: self.log_start_offset, end: self.log_end_offset() }
    }

    /// Index of the segment whose range holds `offset` (the first one for smaller offsets).
    fn segment_index(&self, offset: i64) -> usize {
        self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1)
    }

    // ----- appends -----

    /// Appends one batch (already validated by the caller: header, CRC, size). Assigns offsets from
    /// the log end offset by patching the base offset and the partition leader epoch in place (the
    /// CRC does not cover them), rolls first if needed, and writes the batch with one `pwrite`
    /// into the page cache (no fsync).
    pub fn append(&mut self, batch: &mut [u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, LogError> {
        self.check_online()?;
        let h = BatchHeader::parse(batch)?;
        if batch.len() != h.total_len() {
            return Err(if batch.len() < h.total_len() {
                BatchError::Truncated { needed: h.total_len(), available: batch.len() }.into()
            } else {
                BatchError::NotExactlyOneBatch(BatchIter::new(batch).count().max(2)).into()
            });
        }
        check_offset_delta(&h)?;
        let base = self.log_end_offset();
        let last = base + h.last_offset_delta as i64;
        if !self.fits(&self.probe(), batch.len() as u64, last, now_ms) {
            self.roll_now()?;
        }
        set_base_offset(batch, base);
        set_partition_leader_epoch(batch, leader_epoch);
        let h = BatchHeader { base_offset: base, partition_leader_epoch: leader_epoch, ..h };
        self.write_run(batch, std::slice::from_ref(&h), now_ms)?;
        Ok(AppendInfo { base_offset: base, last_offset: last, max_timestamp: h.max_timestamp })
    }

    /// Appends batches whose offsets were assigned elsewhere (the replica path): whole v2 batches,
    /// CRCs checked here, the first starting at the log end offset and each following the one
    /// before. Nothing is written unless all of them are valid.
    pub fn append_assigned(&mut self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.check_online()?;
        let mut expected = self.log_end_offset();
        let mut headers = Vec::new();
        let mut iter = BatchIter::new(batches);
        for (h, b) in iter.by_ref() {
            if h.base_offset != expected {
                return Err(LogError::UnexpectedOffset { expected, actual: h.base_offset });
            }
            check_offset_delta(&h)?;
            verify_crc(b)?;
            expected = next_offset(&h);
            headers.push(h);
        }
        if iter.remaining() > 0 || headers.is_empty() {
            let tail = &batches[iter.position()..];
            return Err(match BatchHeader::parse(tail) {
                Err(e) => e.into(),
                Ok(h) => BatchError::Truncated { needed: h.total_len(), available: tail.len() }.into(),
            });
        }
        let info = AppendInfo {
            base_offset: headers[0].base_offset,
            last_offset: expected - 1,
            max_timestamp: headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1),
        };
        // Write runs of batches that fit the active segment, rolling between runs.
        let (mut i, mut byte) = (0, 0);
        while i < headers.len() {
            if !self.fits(&self.probe(), headers[i].total_len() as u64, last_offset(&headers[i]), now_ms) {
                self.roll_now()?;
            }
            let mut probe = self.probe();
            let mut j = i;
            let mut run_bytes = 0;
            while j < headers.len() {
                let len = headers[j].total_len() as u64;
                if j > i && !self.fits(&probe, len, last_offset(&headers[j]), now_ms) {
                    break;
                }
                advance(&mut probe, len, self.config.index_interval_bytes);
                run_bytes += len as usize;
                j += 1;
            }
            self.write_run(&batches[byte..byte + run_bytes], &headers[i..j], now_ms)?;
            byte += run_bytes;
            i = j;
        }
        Ok(info)
    }

    fn probe(&self) -> Probe {
        let seg = self.active();
        let (offset_entries, time_entries, bytes_since_entry) = seg.active().map_or((0, 0, 0), |a| (a.offsets.len(), a.times.len(), a.bytes_since_entry));
        Probe { size: seg.size, offset_entries, time_entries, bytes_since_entry }
    }

    /// Kafka's `shouldRoll`, negated: may a batch of `len` bytes ending at `last_offset` go into
    /// the active segment in state `p`? An empty segment takes any batch.
    fn fits(&self, p: &Probe, len: u64, last_offset: i64, now_ms: i64) -> bool {
        if p.size == 0 {
            return true;
        }
        let cfg = &self.config;
        let seg = self.active();
        let too_old = seg.active().and_then(|a| a.first_append_ms).is_some_and(|first| now_ms.saturating_sub(first) > cfg.segment_ms);
        !(p.size + len > cfg.effective_segment_bytes()
            || p.offset_entries >= cfg.max_offset_entries()
            || p.time_entries >= cfg.max_time_entries()
            || last_offset - seg.base_offset > i32::MAX as i64
            || too_old)
    }

    /// Writes `bytes` (the whole batches `headers`) at the end of the active segment with one
    /// positional write, then indexes them. A failed write is cut off again; if even that fails
    /// the log goes offline.
    fn write_run(&mut self, bytes: &[u8], headers: &[BatchHeader], now_ms: i64) -> Result<(), LogError> {
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let start = seg.size;
        if let Err(e) = seg.log.write_all_at(bytes, start) {
            let path = seg.log_path.to_path_buf();
            if let Err(e2) = seg.log.set_len(start) {
                let reason = format!("write to {} failed ({e}) and cutting it back failed ({e2})", path.display());
                self.go_offline(reason);
            }
            return Err(LogError::Io { op: "write segment", path, source: e });
        }
        let mut pos = start;
        for h in headers {
            // Fits in u32: `fits` keeps every batch start below segment_bytes <= i32::MAX.
            seg.note_batch(h, pos as u32, interval);
            pos += h.total_len() as u64;
        }
        if let Some(a) = seg.active_mut() {
            a.first_append_ms.get_or_insert(now_ms);
        }
        self.size_bytes += bytes.len() as u64;
        Ok(())
    }

    // ----- rolling and flushing -----

    /// Seals the active segment if it holds any batch and starts a new one at the log end offset.
    pub fn roll(&mut self) -> Result<(), LogError> {
        self.check_online()?;
        if self.active().is_empty() {
            return Ok(());
        }
        self.roll_now()
    }

    /// Seal (write indexes, fsync all three files), then create the next segment and fsync the
    /// directory. Everything below the log end offset is durable afterwards.
    fn roll_now(&mut self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        self.active_mut().seal()?;
        match Segment::create(&self.dir, end) {
            Ok(seg) => self.segments.push(seg),
            Err(e) => {
                self.go_offline(format!("sealed a segment but could not create the next one: {e}"));
                return Err(e);
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            self.go_offline(format!("created segment {end} but could not fsync the directory: {e}"));
            return Err(e);
        }
        self.flushed_offset = self.flushed_offset.max(end);
        tracing::debug!(dir = %self.dir.display(), base_offset = end, "rolled to a new segment");
        Ok(())
    }

    /// Group commit, step 1 (under the lock): `None` if everything is flushed, else a job holding
    /// the dirty files and the target offset (the log end offset now).
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        let target = self.log_end_offset();
        if self.flushed_offset >= target {
            return None;
        }
        let files = self.segments.iter().rev().take_while(|s| s.next_offset > self.flushed_offset).map(|s| (s.log.clone(), s.log_path.clone())).collect();
        Some(FlushJob { files, target, generation: self.generation })
    }

    /// Group commit, step 3 (under the lock): advance the flushed offset to the job's target. A
    /// job begun before a truncation is ignored.
    pub fn complete_flush(&mut self, done: FlushDone) {
        if done.generation == self.generation {
            self.flushed_offset = self.flushed_offset.max(done.target.min(self.log_end_offset()));
        }
    }

    /// Flushes everything now (begin, run and complete at once).
    pub fn flush(&mut self) -> Result<(), LogError> {
        if let Some(job) = self.begin_flush() {
            let done = job.run()?;
            self.complete_flush(done);
        }
        Ok(())
    }

    /// Flushes, writes the active segment's indexes and marks a clean shutdown, so the next open
    /// skips the CRC scan.
    pub fn close(mut self) -> Result<(), LogError> {
        self.shut_down()
    }

    /// [`close`](Self::close) for a log that lives behind a shared lock: flushes, writes the
    /// indexes and the clean-shutdown marker, then refuses further writes (reads keep working,
    /// so requests still in flight can finish).
    pub fn shut_down(&mut self) -> Result<(), LogError> {
        self.check_online()?;
        self.active_mut().persist()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        let f = open_rw(&marker, true)?;
        f.sync_all().map_err(io("fsync", &marker))?;
        sync_dir(&self.dir)?;
        self.offline = Some("closed for shutdown".to_string());
        Ok(())
    }

    // ----- reads -----

    /// Plans a read of whole batches from one segment, starting with the batch holding `offset`
    /// (which may begin before it), at most `max_bytes`, never a batch whose last offset is
    /// `>= upper_bound`; with `min_one` the first batch comes even when bigger than `max_bytes`.
    /// Empty at the upper bound or the log end; `OffsetOutOfRange` below the log start or above
    /// the log end. Does no I/O: run [`ReadPlan::execute`] outside the lock.
    pub fn read(&self, offset: i64, max_bytes: usize, upper_bound: i64, min_one: bool) -> Result<ReadPlan, LogError> {
        self.read_above(self.log_start_offset, offset, max_bytes, upper_bound, min_one)
    }

    /// [`read`](Self::read) that also reaches records below the log start offset while their
    /// segment is still on disk: a replicated partition's Raft log still names them (to
    /// replicate them to a lagging follower) until retention's snapshot lets Raft purge them.
    pub fn read_retained(&self, offset: i64, max_bytes: usize, upper_bound: i64, min_one: bool) -> Result<ReadPlan, LogError> {
        let floor = self.segments.first().map_or(self.log_start_offset, |s| s.base_offset);
        self.read_above(floor.min(self.log_start_offset), offset, max_bytes, upper_bound, min_one)
    }

    fn read_above(&self, floor: i64, offset: i64, max_bytes: usize, upper_bound: i64, min_one: bool) -> Result<ReadPlan, LogError> {
        let end = self.log_end_offset();
        if offset < floor || offset > end {
            return Err(self.out_of_range(offset));
        }
        let upper = upper_bound.min(end);
        if offset >= upper {
            return Ok(ReadPlan::empty());
        }
        let mut i = self.segment_index(offset);
        while self.segments[i].next_offset <= offset && i + 1 < self.segments.len() {
            i += 1;
        }
        let seg = &self.segments[i];
        if seg.next_offset <= offset {
            return Ok(ReadPlan::empty());
        }
        let mut end_pos = seg.size;
        if upper < seg.next_offset
            && let Some((_, pos)) = seg.active().and_then(|a| a.recent.find(upper))
        {
            end_pos = pos as u64;
        }
        Ok(ReadPlan {
            inner: Some(PlanInner {
                file: seg.log.clone(),
                path: seg.log_path.clone(),
                segment_base: seg.base_offset,
                start: seg.start_for(offset),
                end: end_pos,
                offset,
                upper_bound: upper,
                max_bytes,
                min_one,
            }),
        })
    }

    /// The whole batch holding `offset` in segment `i` (I/O under the caller's lock: admin paths).
    fn batch_at(&self, i: usize, offset: i64) -> Result<Option<Vec<u8>>, LogError> {
        let seg = &self.segments[i];
        let mut sc = Scanner::new(&seg.log, &seg.log_path, seg.size, LOOKUP_CHUNK);
        let pos = seek_batch(&mut sc, &seg.log_path, seg.floor_position(offset), offset)?;
        match sc.header_at(pos)? {
            HeaderAt::Batch(h) => Ok(Some(sc.read_exact(pos, h.total_len())?)),
            _ => Ok(None),
        }
    }

    /// ListOffsets by timestamp: the first batch (at or above the log start offset) whose max
    /// timestamp is `>= ts`, found through the time index, returned whole so the caller can pick
    /// the exact record (and check it against the high watermark). `None` if there is none.
    pub fn find_batch_by_timestamp(&self, ts: i64) -> Result<Option<Vec<u8>>, LogError> {
        let start = self.log_start_offset;
        for seg in &self.segments {
            if seg.is_empty() || seg.next_offset <= start || seg.max_timestamp < ts {
                continue;
            }
            let from_offset = lookup_time(seg.time_entries(), ts).map_or(seg.base_offset, |e| seg.base_offset + e.relative_offset as i64).max(start);
            let mut sc = Scanner::new(&seg.log, &seg.log_path, seg.size, LOOKUP_CHUNK);
            let mut pos = seg.floor_position(from_offset);
            loop {
                match sc.header_at(pos)? {
                    HeaderAt::End => break,
                    HeaderAt::Batch(h) if h.max_timestamp >= ts && last_offset(&h) >= start => {
                        return Ok(Some(sc.read_exact(pos, h.total_len())?));
                    }
                    HeaderAt::Batch(h) => pos += h.total_len() as u64,
                    HeaderAt::Incomplete | HeaderAt::Invalid(_) => {
                        return Err(LogError::Corrupt { path: seg.log_path.to_path_buf(), reason: format!("invalid batch header at position {pos}") });
                    }
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the first batch holding the largest timestamp of the log (at or
    /// above the log start offset), or `None` if the log holds no batch.
    pub fn find_batch_with_max_timestamp(&self) -> Result<Option<Vec<u8>>, LogError> {
        let start = self.log_start_offset;
        // (timestamp, segment, where the batch is)
        let mut best: Option<(i64, usize, MaxAt)> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.is_empty() || seg.next_offset <= start {
                continue;
            }
            let offset = seg.offset_of_max_timestamp.unwrap_or(seg.base_offset);
            let candidate = if offset >= start {
                (seg.max_timestamp, i, MaxAt::Offset(offset))
            } else {
                // Only the segment holding the log start offset can get here: its largest
                // timestamp lies below the start, so scan what remains of it.
                match self.scan_max_timestamp(seg, start)? {
                    Some((ts, pos, len)) => (ts, i, MaxAt::Position(pos, len)),
                    None => continue,
                }
            };
            if best.as_ref().is_none_or(|b| candidate.0 > b.0) {
                best = Some(candidate);
            }
        }
        match best {
            None => Ok(None),
            Some((_, i, MaxAt::Offset(offset))) => self.batch_at(i, offset),
            Some((_, i, MaxAt::Position(pos, len))) => {
                let seg = &self.segments[i];
                Scanner::new(&seg.log, &seg.log_path, seg.size, LOOKUP_CHUNK).read_exact(pos, len).map(Some)
            }
        }
    }

    /// (largest max timestamp, position, length) of the first batch reaching it among the batches
    /// of `seg` at or above `from` (header scan).
    fn scan_max_timestamp(&self, seg: &Segment, from: i64) -> Result<Option<(i64, u64, usize)>, LogError> {
        let mut sc = Scanner::new(&seg.log, &seg.log_path, seg.size, LOOKUP_CHUNK);
        let mut pos = seek_batch(&mut sc, &seg.log_path, seg.floor_position(from), from)?;
        let mut found: Option<(i64, u64, usize)> = None;
        while let HeaderAt::Batch(h) = sc.header_at(pos)? {
            if found.is_none_or(|(ts, _, _)| h.max_timestamp > ts) {
                found = Some((h.max_timestamp, pos, h.total_len()));
            }
            pos += h.total_len() as u64;
        }
        Ok(found)
    }

    // ----- truncation and deletion -----

    /// Removes every offset `>= offset` (a batch boundary, or the log end offset for a no-op):
    /// later segments are deleted, the segment holding `offset` is cut and becomes the active one.
    /// Durable when it returns.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_online()?;
        let end = self.log_end_offset();
        if offset == end {
            return Ok(());
        }
        if offset < self.log_start_offset || offset > end {
            return Err(self.out_of_range(offset));
        }
        let i = self.segment_index(offset);
        let seg = &self.segments[i];
        let cut = if offset == seg.base_offset {
            0
        } else {
            let mut sc = Scanner::new(&seg.log, &seg.log_path, seg.size, LOOKUP_CHUNK);
            let pos = seek_batch(&mut sc, &seg.log_path, seg.floor_position(offset), offset)?;
            match sc.header_at(pos)? {
                HeaderAt::Batch(h) if h.base_offset == offset => pos,
                _ => return Err(LogError::NotBatchBoundary(offset)),
            }
        };
        // Newest first, so that a crash leaves a prefix of the log.
        let deleting = self.segments.len() > i + 1;
        while self.segments.len() > i + 1 {
            let size = {
                let last = self.active();
                last.delete_files()?;
                last.size
            };
            self.size_bytes -= size;
            self.segments.pop();
        }
        if deleting {
            sync_dir(&self.dir)?;
        }
        self.cut_segment(i, cut, offset)?;
        self.flushed_offset = offset;
        self.generation += 1;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset_before = end, "truncated log");
        Ok(())
    }

    /// Cuts segment `i` (now the last) at byte `cut` / offset `offset`, fsyncs it, and rebuilds its
    /// active state from the kept index entries plus a replay of the batches after the last one.
    fn cut_segment(&mut self, i: usize, cut: u64, offset: i64) -> Result<(), LogError> {
        let interval = self.config.index_interval_bytes;
        let seg = &mut self.segments[i];
        let old_size = seg.size;
        let (mut offsets, mut times) = match &mut seg.state {
            SegmentState::Active(a) => (std::mem::take(&mut a.offsets), std::mem::take(&mut a.times)),
            SegmentState::Sealed(s) => {
                let l = s.get();
                (l.offsets.clone(), l.times.clone())
            }
        };
        let base = seg.base_offset;
        offsets.retain(|e| (e.position as u64) < cut);
        times.retain(|e| base + (e.relative_offset as i64) < offset);
        seg.log.set_len(cut).map_err(io("truncate segment", &seg.log_path))?;
        seg.log.sync_data().map_err(io("fsync segment", &seg.log_path))?;
        let from = offsets.last().map_or(0, |e| e.position as u64);
        seg.max_timestamp = times.last().map_or(-1, |t| t.timestamp);
        seg.offset_of_max_timestamp = match times.last() {
            Some(t) => Some(base + t.relative_offset as i64),
            None if from > 0 => Some(base),
            None => None,
        };
        seg.size = from;
        seg.next_offset = base;
        seg.state = SegmentState::Active(ActiveIndex { offsets, times, ..ActiveIndex::default() });
        let (file, path) = (seg.log.clone(), seg.log_path.clone());
        let ended = scan_batches(&file, &path, from, cut, false, LOOKUP_CHUNK, |h, pos| {
            seg.note_batch(h, pos as u32, interval); // pos < cut <= old size < 2^32
            Ok(())
        })?;
        if let ScanEnd::Stopped { pos, reason } = ended {
            return Err(LogError::Corrupt { path: path.to_path_buf(), reason: format!("at position {pos}: {reason}") });
        }
        self.size_bytes = self.size_bytes - old_size + cut;
        Ok(())
    }

    /// Deletes every segment and starts an empty log at `offset` (which becomes the log start
    /// offset): for a replica that must restart from a snapshot or from a leader's log start.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_online()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        for seg in self.segments.iter().rev() {
            if let Err(e) = seg.delete_files() {
                self.go_offline(format!("could not delete every segment: {e}"));
                return Err(e);
            }
        }
        let fresh = sync_dir(&self.dir).and_then(|()| Segment::create(&self.dir, offset));
        let fresh = match fresh.and_then(|s| sync_dir(&self.dir).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                self.go_offline(format!("deleted the segments but could not start a new one: {e}"));
                return Err(e);
            }
        };
        self.segments = vec![fresh];
        write_log_start_offset(&self.dir, offset)?;
        self.log_start_offset = offset;
        self.flushed_offset = offset;
        self.size_bytes = 0;
        self.generation += 1;
        tracing::info!(dir = %self.dir.display(), offset, "log emptied and restarted");
        Ok(())
    }

    /// DeleteRecords: raises the log start offset to `offset` (the caller checked it against the
    /// high watermark), persists it, and deletes the sealed segments now wholly below it. Returns
    /// the log start offset (unchanged if `offset` was not above it).
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        self.check_online()?;
        if offset < 0 || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        write_log_start_offset(&self.dir, offset)?;
        self.log_start_offset = offset;
        let n = self.leading_segments_below_start(0);
        self.remove_front(n)?;
        Ok(self.log_start_offset)
    }

    /// Raises the log start offset to `offset` (durably: the checkpoint is written first)
    /// without deleting anything: a replicated partition deletes the segments wholly below it
    /// later, through [`retention_plan`](Self::retention_plan), once Raft no longer needs
    /// them. Returns the log start offset.
    pub fn raise_log_start(&mut self, offset: i64) -> Result<i64, LogError> {
        self.check_online()?;
        if offset < 0 || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        if offset > self.log_start_offset {
            write_log_start_offset(&self.dir, offset)?;
            self.log_start_offset = offset;
        }
        Ok(self.log_start_offset)
    }

    /// Retention: deletes the oldest sealed segments whose newest record is older than
    /// `retention_ms` (or whose file is, when no record has a timestamp), then while the log
    /// would still be at least `retention_bytes` without them, then those wholly below the log
    /// start offset. Never the active segment (it rolls on `segment_ms` at the next append, or
    /// when the caller calls [`roll`](Self::roll)). Raises the log start offset to the new first
    /// segment.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        self.apply_retention_below(now_ms, i64::MAX)
    }

    /// [`apply_retention`](Self::apply_retention) fenced at `limit`: only sealed segments whose
    /// next offset is `<= limit` are candidates (tiered storage passes the end of what has been
    /// uploaded, so a segment that is not in the object store yet is never deleted). Segments
    /// wholly below the log start offset go regardless, as in `apply_retention`.
    pub fn apply_retention_below(&mut self, now_ms: i64, limit: i64) -> Result<RetentionOutcome, LogError> {
        let n = self.retention_count(now_ms, limit)?;
        self.remove_front(n)
    }

    /// Where [`apply_retention_below`](Self::apply_retention_below) with the same arguments would
    /// start the log, if it would delete anything (nothing is deleted). A replicated partition
    /// asks first, moves its Raft log's start there, and deletes once Raft let go of the entries.
    pub fn retention_plan(&self, now_ms: i64, limit: i64) -> Result<Option<i64>, LogError> {
        let n = self.retention_count(now_ms, limit)?.min(self.segments.len() - 1);
        Ok((n > 0).then(|| self.segments[n].base_offset))
    }

    /// How many leading segments retention deletes (see `apply_retention_below`).
    fn retention_count(&self, now_ms: i64, limit: i64) -> Result<usize, LogError> {
        let sealed = self.segments[..self.segments.len() - 1] // never empty, see `active`
            .partition_point(|s| s.next_offset <= limit);
        let mut n = 0;
        if self.config.retention_ms >= 0 {
            while n < sealed && now_ms.saturating_sub(self.segments[n].retention_timestamp()?) > self.config.retention_ms {
                n += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let kept: u64 = self.segments[n..].iter().map(|s| s.size).sum();
            let mut excess = kept as i64 - self.config.retention_bytes;
            while n < sealed && excess - self.segments[n].size as i64 >= 0 {
                excess -= self.segments[n].size as i64;
                n += 1;
            }
        }
        Ok(self.leading_segments_below_start(n))
    }

    /// Extends `n` over the following sealed segments that lie wholly below the log start offset.
    fn leading_segments_below_start(&self, mut n: usize) -> usize {
        while n + 1 < self.segments.len() && self.segments[n].next_offset <= self.log_start_offset {
            n += 1;
        }
        n
    }

    /// Deletes the first `n` segments (never the active one), oldest first.
    fn remove_front(&mut self, n: usize) -> Result<RetentionOutcome, LogError> {
        let n = n.min(self.segments.len() - 1);
        if n == 0 {
            return Ok(RetentionOutcome::default());
        }
        let mut out = RetentionOutcome::default();
        let mut failed = None;
        for seg in &self.segments[..n] {
            if let Err(e) = seg.delete_files() {
                failed = Some(e);
                break;
            }
            out.segments_deleted += 1;
            out.bytes_deleted += seg.size;
        }
        self.segments.drain(..out.segments_deleted);
        self.size_bytes -= out.bytes_deleted;
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        if out.segments_deleted > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                segments = out.segments_deleted,
                bytes = out.bytes_deleted,
                log_start_offset = self.log_start_offset,
                "deleted old segments"
            );
        }
        if let Some(e) = failed {
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(out)
    }
}

/// Where [`PartitionLog::find_batch_with_max_timestamp`] found its batch.
enum MaxAt {
    Offset(i64),
    Position(u64, usize),
}

fn check_offset_delta(h: &BatchHeader) -> Result<(), LogError> {
    if h.last_offset_delta < 0 {
        return Err(BatchError::BadRecordCount { count: h.records_count, last_offset_delta: h.last_offset_delta }.into());
    }
    Ok(())
}

/// Mirrors [`Segment::note_batch`]'s index growth on a probe (conservatively: every offset entry
/// is assumed to come with a time entry).
fn advance(p: &mut Probe, len: u64, interval: u32) {
    if p.bytes_since_entry > interval as u64 {
        p.offset_entries += 1;
        p.time_entries += 1;
        p.bytes_since_entry = 0;
    }
    p.bytes_since_entry += len;
    p.size += len;
}

// ----- recovery helpers -----

/// A segment struct over an existing `.log` file, active and empty until scanned.
fn segment_over(dir: &Path, base: i64) -> Result<(Segment, u64), LogError> {
    let log_path = segment_path(dir, base, LOG_EXT);
    let file = open_rw(&log_path, false)?;
    let len = file.metadata().map_err(io("stat segment", &log_path))?.len();
    let seg = Segment {
        base_offset: base,
        next_offset: base,
        size: 0,
        log: Arc::new(file),
        log_path: log_path.into(),
        index_path: segment_path(dir, base, INDEX_EXT),
        time_path: segment_path(dir, base, TIME_INDEX_EXT),
        max_timestamp: -1,
        offset_of_max_timestamp: None,
        state: SegmentState::Active(ActiveIndex::default()),
    };
    Ok((seg, len))
}

/// Scans `[from, end)` of `seg` into its active state, checking that offsets continue from
/// `seg.next_offset` (or, when `first_last_offset` is given, that the first batch ends there).
fn scan_into(seg: &mut Segment, from: u64, end: u64, verify_crc: bool, first_last_offset: Option<i64>, interval: u32) -> Result<ScanEnd, LogError> {
    let (file, path) = (seg.log.clone(), seg.log_path.clone());
    let mut first = true;
    scan_batches(&file, &path, from, end, verify_crc, RECOVERY_CHUNK, |h, pos| {
        let ok = match (first, first_last_offset) {
            (true, Some(last)) => last_offset(h) == last,
            _ => h.base_offset == seg.next_offset,
        };
        if !ok {
            return Err(format!("batch at offset {} does not continue the segment at {}", h.base_offset, seg.next_offset));
        }
        let pos = u32::try_from(pos).map_err(|_| "segment larger than 4 GiB".to_string())?;
        first = false;
        seg.note_batch(h, pos, interval);
        Ok(())
    })
}

/// Opens a sealed segment (every segment but the last), sanity-checking its indexes and
/// rebuilding them from the log if they are missing or damaged.
fn open_sealed(dir: &Path, base: i64, next_base: i64, config: &LogConfig) -> Result<Segment, LogError> {
    let (mut seg, len) = segment_over(dir, base)?;
    if len == 0 || len > u32::MAX as u64 {
        return Err(LogError::Corrupt { path: seg.log_path.to_path_buf(), reason: format!("sealed segment of {len} bytes followed by segment {next_base}") });
    }
    match check_sealed_indexes(&seg, next_base - base, len) {
        Ok(last_time) => {
            seg.size = len;
            seg.next_offset = next_base;
            (seg.max_timestamp, seg.offset_of_max_timestamp) = match last_time {
                Some(t) => (t.timestamp, Some(base + t.relative_offset as i64)),
                None => (-1, Some(base)),
            };
            seg.state = SegmentState::Sealed(Arc::new(SealedIndex::lazy(seg.index_path.clone(), seg.time_path.clone())));
            Ok(seg)
        }
        Err(reason) => {
            tracing::warn!(segment = %seg.log_path.display(), %reason, "rebuilding indexes of sealed segment");
            let ended = scan_into(&mut seg, 0, len, false, None, config.index_interval_bytes)?;
            let problem = match ended {
                ScanEnd::Stopped { pos, reason } => Some(format!("at position {pos}: {reason}")),
                ScanEnd::Clean if seg.next_offset != next_base => {
                    Some(format!("ends at offset {} but the next segment starts at {next_base}", seg.next_offset))
                }
                ScanEnd::Clean => None,
            };
            if let Some(reason) = problem {
                return Err(LogError::Corrupt { path: seg.log_path.to_path_buf(), reason });
            }
            seg.seal()?;
            Ok(seg)
        }
    }
}

/// Cheap checks of a sealed segment's index files: sizes are whole entries and the last entries
/// point inside the segment. Returns the last time-index entry (the segment's largest timestamp).
fn check_sealed_indexes(seg: &Segment, span: i64, log_len: u64) -> Result<Option<TimeEntry>, String> {
    let last_entry = |path: &Path, entry_len: usize| -> Result<Option<Vec<u8>>, String> {
        let f = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let len = f.metadata().map_err(|e| format!("stat {}: {e}", path.display()))?.len();
        if !len.is_multiple_of(entry_len as u64) {
            return Err(format!("{} has size {len}, not a multiple of {entry_len}", path.display()));
        }
        if len == 0 {
            return Ok(None);
        }
        let mut b = vec![0u8; entry_len];
        f.read_exact_at(&mut b, len - entry_len as u64).map_err(|e| format!("read {}: {e}", path.display()))?;
        Ok(Some(b))
    };
    if let Some(b) = last_entry(&seg.index_path, OFFSET_ENTRY_LEN)? {
        let mut a = [0u8; OFFSET_ENTRY_LEN];
        a.copy_from_slice(&b);
        let e = OffsetEntry::decode(a);
        if e.relative_offset as i64 >= span || e.position as u64 >= log_len {
            return Err(format!("last offset index entry {e:?} lies outside the segment"));
        }
    }
    match last_entry(&seg.time_path, TIME_ENTRY_LEN)? {
        Some(b) => {
            let mut a = [0u8; TIME_ENTRY_LEN];
            a.copy_from_slice(&b);
            let e = TimeEntry::decode(a);
            if e.relative_offset as i64 >= span {
                return Err(format!("last time index entry {e:?} lies outside the segment"));
            }
            Ok(Some(e))
        }
        None => Ok(None),
    }
}

/// Recovers the last segment. After a clean shutdown its indexes are trusted and only the batches
/// after the last index entry are walked (headers only); otherwise, or if that walk finds anything
/// odd, every batch is checked (header, offsets, CRC-32C) and the file is cut at the first bad one.
fn recover_active(dir: &Path, base: i64, clean: bool, config: &LogConfig) -> Result<Segment, LogError> {
    let interval = config.index_interval_bytes;
    if clean {
        let (mut seg, len) = segment_over(dir, base)?;
        match recover_from_indexes(&mut seg, len, interval) {
            Ok(()) => {
                tracing::debug!(segment = %seg.log_path.display(), next_offset = seg.next_offset, "recovered active segment from its indexes");
                return Ok(seg);
            }
            Err(reason) => {
                tracing::warn!(segment = %seg.log_path.display(), %reason, "indexes of cleanly closed segment unusable; scanning it");
            }
        }
    }
    let (mut seg, len) = segment_over(dir, base)?;
    let ended = scan_into(&mut seg, 0, len, true, None, interval)?;
    if let ScanEnd::Stopped { pos, reason } = ended {
        tracing::warn!(
            segment = %seg.log_path.display(),
            valid_bytes = pos,
            truncated_bytes = len - pos,
            next_offset = seg.next_offset,
            %reason,
            "truncating torn tail of active segment"
        );
        seg.log.set_len(pos).map_err(io("truncate segment", &seg.log_path))?;
    }
    seg.log.sync_data().map_err(io("fsync segment", &seg.log_path))?;
    Ok(seg)
}

/// Clean-shutdown fast path: load the indexes written at close and walk the batches after the
/// last offset-index entry. Any inconsistency is an error (the caller falls back to a full scan).
fn recover_from_indexes(seg: &mut Segment, len: u64, interval: u32) -> Result<(), String> {
    let loaded = load_index_files(&seg.index_path, &seg.time_path)?;
    let base = seg.base_offset;
    let (from, first_last) = match loaded.offsets.last() {
        Some(e) if (e.position as u64) < len => (e.position as u64, Some(base + e.relative_offset as i64)),
        Some(e) => {
            return Err(format!("offset index entry {e:?} lies beyond the segment end {len}"));
        }
        None => (0, None),
    };
    (seg.max_timestamp, seg.offset_of_max_timestamp) = match loaded.times.last() {
        Some(t) => (t.timestamp, Some(base + t.relative_offset as i64)),
        None if len > 0 && from > 0 => (-1, Some(base)),
        None => (-1, None),
    };
    seg.size = from;
    seg.state = SegmentState::Active(ActiveIndex { offsets: loaded.offsets, times: loaded.times, ..ActiveIndex::default() });
    let ended = scan_into(seg, from, len, false, first_last, interval).map_err(|e| e.to_string())?;
    let span = seg.next_offset - base;
    if let SegmentState::Active(a) = &seg.state
        && a.times.last().is_some_and(|t| t.relative_offset as i64 >= span)
    {
        return Err("time index points past the last batch".into());
    }
    match ended {
        ScanEnd::Clean if seg.size == len => Ok(()),
        ScanEnd::Clean => Err(format!("batches end at {} but the file has {len} bytes", seg.size)),
        ScanEnd::Stopped { pos, reason } => Err(format!("at position {pos}: {reason}")),
    }
}
