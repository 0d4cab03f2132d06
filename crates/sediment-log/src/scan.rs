//! Sequential reading of batch headers (and optionally CRCs) from a segment file through one
//! reusable buffer. Used by recovery, index rebuilds, read plans that start from a sparse index
//! entry, and timestamp searches. Never allocates more than its chunk size plus one header, so a
//! corrupt length field cannot make it allocate gigabytes.

use std::fs::File;
use std::path::Path;

use sediment_protocol::batch::{BatchError, BatchHeader, HEADER_LEN};

use crate::error::{LogError, io};
use crate::files::read_at_most;

/// Last offset of a batch; saturating, because headers read from disk may hold any base offset.
pub(crate) fn last_offset(h: &BatchHeader) -> i64 {
    h.base_offset.saturating_add(h.last_offset_delta as i64)
}

/// Offset following a batch (saturating, see [`last_offset`]).
pub(crate) fn next_offset(h: &BatchHeader) -> i64 {
    last_offset(h).saturating_add(1)
}

/// Bytes from the start of a batch to the start of its CRC-covered region.
const CRC_START: u64 = 21;

/// Chunk size for recovery scans (sequential, whole segment).
pub(crate) const RECOVERY_CHUNK: usize = 1 << 20;
/// Chunk size for short scans from an index entry.
pub(crate) const LOOKUP_CHUNK: usize = 16 << 10;

/// What sits at a position of the file.
pub(crate) enum HeaderAt {
    /// The position is the end of the scanned range.
    End,
    /// Fewer bytes than a header remain.
    Incomplete,
    /// The bytes there are not a v2 batch header.
    Invalid(BatchError),
    Batch(BatchHeader),
}

pub(crate) struct Scanner<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    chunk: usize,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
}

impl<'a> Scanner<'a> {
    /// Scans `file` up to (not including) position `end`.
    pub(crate) fn new(file: &'a File, path: &'a Path, end: u64, chunk: usize) -> Scanner<'a> {
        Scanner { file, path, end, chunk: chunk.max(HEADER_LEN), buf: Vec::new(), buf_start: 0 }
    }

    fn buffered(&self, pos: u64) -> usize {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos >= self.buf_start && pos < buf_end { (buf_end - pos) as usize } else { 0 }
    }

    /// Makes `[pos, pos + len)` available in the buffer; `false` if the file (or range) ends first.
    fn fill(&mut self, pos: u64, len: usize) -> Result<bool, LogError> {
        if self.buffered(pos) >= len {
            return Ok(true);
        }
        let want = (self.chunk.max(len) as u64).min(self.end.saturating_sub(pos)) as usize;
        if want < len {
            return Ok(false);
        }
        self.buf.resize(want, 0);
        let n = read_at_most(self.file, &mut self.buf[..want], pos).map_err(io("read segment", self.path))?;
        self.buf.truncate(n);
        self.buf_start = pos;
        Ok(n >= len)
    }

    fn slice(&self, pos: u64, len: usize) -> &[u8] {
        let start = (pos - self.buf_start) as usize;
        &self.buf[start..start + len]
    }

    /// Parses the batch header at `pos`.
    pub(crate) fn header_at(&mut self, pos: u64) -> Result<HeaderAt, LogError> {
        if pos >= self.end {
            return Ok(HeaderAt::End);
        }
        let avail = (self.end - pos).min(HEADER_LEN as u64) as usize;
        if !self.fill(pos, avail)? {
            return Ok(HeaderAt::Incomplete);
        }
        Ok(match BatchHeader::parse(self.slice(pos, avail)) {
            Ok(h) => HeaderAt::Batch(h),
            Err(BatchError::Truncated { .. }) => HeaderAt::Incomplete,
            Err(e) => HeaderAt::Invalid(e),
        })
    }

    /// CRC-32C of the covered region of the batch `[pos, pos + total_len)`; `None` if the file ends
    /// inside it.
    pub(crate) fn crc(&mut self, pos: u64, total_len: u64) -> Result<Option<u32>, LogError> {
        let stop = pos + total_len;
        let mut p = pos + CRC_START;
        let mut crc = 0u32;
        while p < stop {
            let mut n = self.buffered(p).min((stop - p) as usize);
            if n == 0 {
                n = self.chunk.min((stop - p) as usize);
                if !self.fill(p, n)? {
                    return Ok(None);
                }
            }
            crc = crc32c::crc32c_append(crc, self.slice(p, n));
            p += n as u64;
        }
        Ok(Some(crc))
    }

    /// Reads `[pos, pos + len)` into a new buffer. `len` comes from a batch header, so a range
    /// past the scanned end is refused before anything is allocated for it: a corrupt length
    /// would otherwise ask for up to 2 GiB.
    pub(crate) fn read_exact(&self, pos: u64, len: usize) -> Result<Vec<u8>, LogError> {
        if pos.saturating_add(len as u64) > self.end {
            return Err(LogError::Corrupt {
                path: self.path.to_path_buf(),
                reason: format!("batch at position {pos} of {len} bytes extends past the segment end {}", self.end),
            });
        }
        let mut out = vec![0u8; len];
        let n = read_at_most(self.file, &mut out, pos).map_err(io("read segment", self.path))?;
        if n < len {
            return Err(LogError::Corrupt {
                path: self.path.to_path_buf(),
                reason: format!("file ends at {} inside a batch at position {pos}", pos + n as u64),
            });
        }
        Ok(out)
    }
}

/// How a scan ended.
pub(crate) enum ScanEnd {
    /// Every byte up to the end was whole batches.
    Clean,
    /// The scan stopped at `pos` (the end of the valid prefix) for `reason`.
    Stopped { pos: u64, reason: String },
}

/// Walks the batches of `[from, end)` in order, calling `on_batch(header, position)` for each
/// whole batch (with a correct CRC when `verify_crc`). `on_batch` may stop the scan by returning a
/// reason. Returns how the scan ended.
pub(crate) fn scan_batches(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    verify_crc: bool,
    chunk: usize,
    mut on_batch: impl FnMut(&BatchHeader, u64) -> Result<(), String>,
) -> Result<ScanEnd, LogError> {
    let mut sc = Scanner::new(file, path, end, chunk);
    let mut pos = from;
    let stop = |pos: u64, reason: String| Ok(ScanEnd::Stopped { pos, reason });
    loop {
        let h = match sc.header_at(pos)? {
            HeaderAt::End => return Ok(ScanEnd::Clean),
            HeaderAt::Incomplete => return stop(pos, "incomplete batch header".into()),
            HeaderAt::Invalid(e) => return stop(pos, format!("invalid batch header: {e}")),
            HeaderAt::Batch(h) => h,
        };
        let total = h.total_len() as u64;
        if pos + total > end {
            return stop(pos, format!("batch of {total} bytes extends past the end at {end}"));
        }
        if h.last_offset_delta < 0 {
            return stop(pos, format!("negative last offset delta {}", h.last_offset_delta));
        }
        if verify_crc {
            match sc.crc(pos, total)? {
                None => return stop(pos, "file ends inside a batch".into()),
                Some(actual) if actual != h.crc => {
                    return stop(pos, format!("crc mismatch: header says {:#010x}, computed {actual:#010x}", h.crc));
                }
                Some(_) => {}
            }
        }
        if let Err(reason) = on_batch(&h, pos) {
            return stop(pos, reason);
        }
        pos += total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the log_recovery fuzz target: a batch length from a corrupt header made the
    /// timestamp lookups allocate up to 2 GiB before the read came up short.
    #[test]
    fn a_read_past_the_scanned_end_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        std::fs::write(&path, [7u8; 100]).unwrap();
        let file = File::open(&path).unwrap();
        let s = Scanner::new(&file, &path, 100, 4096);
        assert_eq!(s.read_exact(10, 50).unwrap(), vec![7u8; 50]);
        assert!(matches!(s.read_exact(90, i32::MAX as usize), Err(LogError::Corrupt { .. })));
        assert!(matches!(s.read_exact(u64::MAX - 1, 10), Err(LogError::Corrupt { .. })));
    }
}
