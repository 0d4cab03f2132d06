//! Read plans: decided under the partition lock from memory only, executed with `pread` outside it.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sediment_protocol::batch::{BatchError, BatchHeader, BatchIter, HEADER_LEN};

use crate::error::{LogError, io};
use crate::files::read_at_most;
use crate::index::{lookup_offset, relative};
use crate::scan::{HeaderAt, LOOKUP_CHUNK, Scanner, last_offset};
use crate::segment::Start;

/// A planned read of whole batches from one segment. Holds the segment's file open, so it stays
/// valid if the segment is deleted (by retention) before it runs.
#[must_use = "a read plan does nothing until executed"]
pub struct ReadPlan {
    pub(crate) inner: Option<PlanInner>,
}

pub(crate) struct PlanInner {
    pub(crate) file: Arc<File>,
    pub(crate) path: Arc<Path>,
    pub(crate) segment_base: i64,
    pub(crate) start: Start,
    /// Bytes of the segment that existed when the plan was made: never read past.
    pub(crate) end: u64,
    pub(crate) offset: i64,
    pub(crate) upper_bound: i64,
    pub(crate) max_bytes: usize,
    pub(crate) min_one: bool,
}

impl std::fmt::Debug for ReadPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("ReadPlan(empty)"),
            Some(p) => f
                .debug_struct("ReadPlan")
                .field("segment", &p.path)
                .field("offset", &p.offset)
                .field("upper_bound", &p.upper_bound)
                .field("max_bytes", &p.max_bytes)
                .field("min_one", &p.min_one)
                .finish(),
        }
    }
}

impl ReadPlan {
    pub(crate) fn empty() -> ReadPlan {
        ReadPlan { inner: None }
    }

    /// `true` when there is nothing to read (offset at the upper bound or the log end).
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Base offset of the segment the plan reads from (`None` for an empty plan).
    pub fn segment_base_offset(&self) -> Option<i64> {
        self.inner.as_ref().map(|p| p.segment_base)
    }

    /// Reads the planned batches (blocking `pread`s; call it without holding the partition lock).
    /// The result is whole batches only, starting with the one holding the planned offset: at
    /// most `max_bytes` unless `min_one` and the first batch alone is bigger, none whose last
    /// offset reaches the upper bound. Empty if nothing fits.
    pub fn execute(self) -> Result<Bytes, LogError> {
        let Some(p) = self.inner else {
            return Ok(Bytes::new());
        };
        let mut sc = Scanner::new(&p.file, &p.path, p.end, LOOKUP_CHUNK);
        let pos = match p.start {
            Start::Exact(pos) => pos,
            Start::Floor(pos) => seek_batch(&mut sc, &p.path, pos, p.offset)?,
            Start::Lazy(ref index) => {
                let entries = &index.get().offsets;
                let from = lookup_offset(entries, relative(p.offset, p.segment_base)).map_or(0, |e| e.position as u64);
                seek_batch(&mut sc, &p.path, from, p.offset)?
            }
        };
        if pos >= p.end {
            return Ok(Bytes::new());
        }
        let avail = p.end - pos;
        let window = (p.max_bytes as u64).min(avail) as usize;
        let mut buf = vec![0u8; window];
        let n = read_at_most(&p.file, &mut buf, pos).map_err(io("read segment", &p.path))?;
        buf.truncate(n);
        let mut cut = 0;
        for (h, b) in BatchIter::new(&buf) {
            if last_offset(&h) >= p.upper_bound {
                break;
            }
            cut += b.len();
        }
        if cut > 0 {
            buf.truncate(cut);
            return Ok(Bytes::from(buf));
        }
        // Nothing whole fits in the window: either the first batch is bigger than max_bytes, or
        // it reaches the upper bound, or the bytes are not a batch at all. Read at least a header.
        let header_len = (HEADER_LEN as u64).min(avail) as usize;
        if buf.len() < header_len {
            extend_from(&p, &mut buf, pos, header_len)?;
        }
        let h = match BatchHeader::parse(&buf) {
            Ok(h) => h,
            Err(BatchError::Truncated { .. }) => return Ok(Bytes::new()), // cut short concurrently
            Err(e) => {
                return Err(LogError::Corrupt { path: p.path.to_path_buf(), reason: format!("invalid batch at position {pos}: {e}") });
            }
        };
        if !p.min_one || last_offset(&h) >= p.upper_bound {
            return Ok(Bytes::new());
        }
        let total = h.total_len();
        if total as u64 > avail {
            return Err(LogError::Corrupt {
                path: p.path.to_path_buf(),
                reason: format!("batch at position {pos} of {total} bytes extends past the segment end {}", p.end),
            });
        }
        // min_one: read the rest of the first batch.
        extend_from(&p, &mut buf, pos, total)?;
        if buf.len() < total {
            return Ok(Bytes::new()); // cut short concurrently
        }
        buf.truncate(total);
        Ok(Bytes::from(buf))
    }
}

/// Grows `buf` (the bytes at `pos`) to `len` bytes by reading what follows; shorter if the file
/// ends first.
fn extend_from(p: &PlanInner, buf: &mut Vec<u8>, pos: u64, len: usize) -> Result<(), LogError> {
    let have = buf.len();
    if have >= len {
        return Ok(());
    }
    buf.resize(len, 0);
    let n = read_at_most(&p.file, &mut buf[have..], pos + have as u64).map_err(io("read segment", &p.path))?;
    buf.truncate(have + n);
    Ok(())
}

/// From `from` (at or before the batch holding `offset`), finds the position of that batch by
/// walking headers. Returns the scan end if the segment holds no such batch.
pub(crate) fn seek_batch(sc: &mut Scanner<'_>, path: &Path, from: u64, offset: i64) -> Result<u64, LogError> {
    let mut pos = from;
    loop {
        match sc.header_at(pos)? {
            HeaderAt::End => return Ok(pos),
            HeaderAt::Batch(h) if last_offset(&h) >= offset => return Ok(pos),
            HeaderAt::Batch(h) => pos += h.total_len() as u64,
            HeaderAt::Incomplete => {
                return Err(LogError::Corrupt { path: path.to_path_buf(), reason: format!("incomplete batch header at position {pos}") });
            }
            HeaderAt::Invalid(e) => {
                return Err(LogError::Corrupt { path: path.to_path_buf(), reason: format!("invalid batch at position {pos}: {e}") });
            }
        }
    }
}
