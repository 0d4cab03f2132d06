//! Record-level reading of one v2 batch: validation of what a producer sent (Kafka's log
//! validator iterates every record too) and the search for a timestamp inside a batch.
//!
//! Everything here reads untrusted bytes, so everything is bounded:
//! * nothing is allocated from a count or length read off the wire: records, keys, values and
//!   headers are walked and skipped, never collected;
//! * compressed batches are decompressed as a stream through a small buffer, and a batch that
//!   inflates past [`WalkLimits::max_decompressed_bytes`] is an error, never an abort;
//! * the walk checks what Kafka's `DefaultRecord` reader checks: each record's length against
//!   the fields it holds, varints of at most 5 (10) bytes, key/value/header lengths, the number
//!   of records against `records_count`, offset deltas 0, 1, 2, … and nothing after the last
//!   record.
//!
//! Both snappy framings are accepted (raw, as librdkafka writes it, and xerial-framed, as the
//! Java client writes it).
//!
//! ```
//! use std::ops::ControlFlow;
//! use sediment_protocol::batch::testing::batch_with_records;
//! use sediment_protocol::records::{walk, WalkLimits};
//!
//! let batch = batch_with_records(3, 1_000);
//! let mut deltas = Vec::new();
//! let summary = walk(&batch, WalkLimits::default(), |r| {
//!     deltas.push(r.offset_delta);
//!     ControlFlow::Continue(())
//! })
//! .unwrap();
//! assert_eq!(deltas, [0, 1, 2]);
//! assert_eq!((summary.records, summary.max_timestamp), (3, 1_002));
//!
//! // a forged count is refused, however large
//! let mut forged = batch.clone();
//! forged[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
//! assert!(walk(&forged, WalkLimits::default(), |_| ControlFlow::Continue(())).is_err());
//! ```

use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;

use crate::batch::{BatchError, BatchHeader, Compression, HEADER_LEN};

/// What a single walk may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Bytes a compressed batch may inflate to. Kafka has no such cap; a valid producer's batch
    /// of `max.message.bytes` (1 MiB by default) reaches it only at a ratio above 256:1.
    pub max_decompressed_bytes: u64,
}

/// The default decompressed-size cap: 256 MiB.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 256 << 20;

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits { max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES }
    }
}

/// One record's fields, as the walk sees them (keys and values are skipped, not copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Position of the record in the batch (Kafka's `batch_index` in produce record errors).
    pub index: i32,
    pub offset_delta: i32,
    /// Absolute timestamp: the batch's base timestamp plus the record's delta.
    pub timestamp: i64,
    /// -1 for a null key.
    pub key_len: i32,
    /// -1 for a null value (a tombstone).
    pub value_len: i32,
    pub headers: i32,
}

/// What a complete walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: i32,
    /// Smallest and largest record timestamp (`i64::MAX`/`i64::MIN` for a batch of no records).
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Bytes of record data walked (after decompression).
    pub uncompressed_bytes: u64,
}

/// Why a record could not be read. Kafka answers these with INVALID_RECORD.
fn bad(index: i32, reason: impl Into<String>) -> BatchError {
    BatchError::BadRecord { index, reason: reason.into() }
}

/// Walks every record of one whole v2 batch (`batch` holds exactly the batch; its CRC is not
/// checked here), calling `f` for each. `f` returning `Break` ends the walk early with `Ok`
/// and a summary of the records seen so far (the count and trailing-data checks are skipped).
pub fn walk(batch: &[u8], limits: WalkLimits, mut f: impl FnMut(&RecordInfo) -> ControlFlow<()>) -> Result<Summary, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let len = header.total_len();
    if batch.len() < len {
        return Err(BatchError::Truncated { needed: len, available: batch.len() });
    }
    let body = &batch[HEADER_LEN..len];
    match header.compression()? {
        Compression::None => walk_source(&mut SliceSource { buf: body, pos: 0 }, &header, &mut f),
        codec => {
            let reader = decompressor(codec, body, limits)?;
            let mut src = ReadSource { reader: BufReader::with_capacity(32 << 10, reader), read: 0, limit: limits.max_decompressed_bytes, io_error: None };
            let r = walk_source(&mut src, &header, &mut f);
            match src.io_error.take() {
                // the decoder's own failure explains the walk's "truncated" better
                Some(e) if r.is_err() => Err(e),
                _ => r,
            }
        }
    }
}

/// Offset and timestamp of the first record in `batch` (one whole v2 batch) whose timestamp is
/// at or after `target_ms`, or `Ok(None)` if no record is. Bounded as [`walk`] is.
pub fn first_offset_at_or_after(batch: &[u8], target_ms: i64) -> Result<Option<(i64, i64)>, BatchError> {
    let base = BatchHeader::parse(batch)?.base_offset;
    let mut found = None;
    walk(batch, WalkLimits::default(), |r| {
        if r.timestamp >= target_ms {
            found = Some((base + r.offset_delta as i64, r.timestamp));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// A byte source for the record walk: a slice (uncompressed batches, no copy) or a streaming
/// decompressor.
trait Source {
    /// The next byte, or `None` at the end of the data.
    fn byte(&mut self) -> Result<Option<u8>, BatchError>;
    /// Skips exactly `n` bytes; `Ok(false)` if the data ended first.
    fn skip(&mut self, n: u64) -> Result<bool, BatchError>;
    /// Bytes consumed so far.
    fn consumed(&self) -> u64;
}

struct SliceSource<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Source for SliceSource<'_> {
    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, BatchError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += b.is_some() as usize;
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: u64) -> Result<bool, BatchError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            self.pos = self.buf.len();
            return Ok(false);
        }
        self.pos += n as usize;
        Ok(true)
    }
    fn consumed(&self) -> u64 {
        self.pos as u64
    }
}

struct ReadSource<R: BufRead> {
    reader: R,
    read: u64,
    limit: u64,
    /// The decompressor's own error, kept to report instead of a plain "truncated".
    io_error: Option<BatchError>,
}

impl<R: BufRead> ReadSource<R> {
    fn fill(&mut self) -> Result<&[u8], BatchError> {
        match self.reader.fill_buf() {
            Ok(b) => Ok(b),
            Err(e) => {
                let err = BatchError::Decompression(e.to_string());
                self.io_error = Some(err.clone());
                Err(err)
            }
        }
    }
    fn take(&mut self, n: usize) -> Result<(), BatchError> {
        self.reader.consume(n);
        self.read += n as u64;
        if self.read > self.limit {
            return Err(BatchError::DecompressedTooLarge { limit: self.limit });
        }
        Ok(())
    }
}

impl<R: BufRead> Source for ReadSource<R> {
    fn byte(&mut self) -> Result<Option<u8>, BatchError> {
        let Some(&b) = self.fill()?.first() else { return Ok(None) };
        self.take(1)?;
        Ok(Some(b))
    }
    fn skip(&mut self, mut n: u64) -> Result<bool, BatchError> {
        while n > 0 {
            let avail = self.fill()?.len() as u64;
            if avail == 0 {
                return Ok(false);
            }
            let k = avail.min(n);
            self.take(k as usize)?;
            n -= k;
        }
        Ok(true)
    }
    fn consumed(&self) -> u64 {
        self.read
    }
}

/// A zigzag varint of at most `max_bytes` bytes (5 for an int, 10 for a long), as Kafka's
/// `ByteUtils.readVarint`/`readVarlong` read them.
fn varint<S: Source>(src: &mut S, max_bytes: u32, index: i32, what: &str) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some(b) = src.byte()? else {
            return Err(bad(index, format!("record data ends inside its {what}")));
        };
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(bad(index, format!("{what} varint is longer than {max_bytes} bytes")))
}

fn varint32<S: Source>(src: &mut S, index: i32, what: &str) -> Result<i32, BatchError> {
    let v = varint(src, 5, index, what)?;
    i32::try_from(v).map_err(|_| bad(index, format!("{what} {v} is out of range")))
}

fn walk_source<S: Source>(src: &mut S, header: &BatchHeader, f: &mut impl FnMut(&RecordInfo) -> ControlFlow<()>) -> Result<Summary, BatchError> {
    let declared = header.records_count;
    if declared < 0 {
        return Err(BatchError::BadRecordCount { count: declared, last_offset_delta: header.last_offset_delta });
    }
    let mut summary = Summary { records: 0, min_timestamp: i64::MAX, max_timestamp: i64::MIN, uncompressed_bytes: 0 };
    for index in 0..declared {
        let start = src.consumed();
        let Some(first) = src.byte()? else {
            return Err(bad(index, format!("the batch declares {declared} records but holds {index}")));
        };
        let len = {
            // the first byte is already read: finish the length varint by hand
            let mut raw = (first & 0x7f) as u64;
            let mut more = first & 0x80 != 0;
            let mut i = 1;
            while more {
                if i == 5 {
                    return Err(bad(index, "record length varint is longer than 5 bytes"));
                }
                let Some(b) = src.byte()? else { return Err(bad(index, "record data ends inside its length")) };
                raw |= ((b & 0x7f) as u64) << (7 * i);
                more = b & 0x80 != 0;
                i += 1;
            }
            ((raw >> 1) as i64) ^ -((raw & 1) as i64)
        };
        if len < 6 {
            return Err(bad(index, format!("invalid record length {len}")));
        }
        let body_start = src.consumed();
        let end = body_start + len as u64;
        let left = |src: &S| end.saturating_sub(src.consumed());
        src.byte()?.ok_or_else(|| bad(index, "record data ends inside its attributes"))?;
        let ts_delta = varint(src, 10, index, "timestamp delta")?;
        let offset_delta = varint32(src, index, "offset delta")?;
        if offset_delta != index {
            return Err(bad(index, format!("record {index} has offset delta {offset_delta}; deltas must be 0, 1, 2, ...")));
        }
        let skip_bytes = |src: &mut S, n: i32, what: &str, nullable: bool| -> Result<(), BatchError> {
            if n < 0 {
                if nullable && n == -1 {
                    return Ok(());
                }
                return Err(bad(index, format!("invalid {what} length {n}")));
            }
            if n as u64 > left(src) {
                return Err(bad(index, format!("{what} of {n} bytes overruns the record's length {len}")));
            }
            if !src.skip(n as u64)? {
                return Err(bad(index, format!("record data ends inside its {what}")));
            }
            Ok(())
        };
        let key_len = varint32(src, index, "key length")?;
        skip_bytes(src, key_len, "key", true)?;
        let value_len = varint32(src, index, "value length")?;
        skip_bytes(src, value_len, "value", true)?;
        let headers = varint32(src, index, "header count")?;
        if headers < 0 {
            return Err(bad(index, format!("invalid header count {headers}")));
        }
        for _ in 0..headers {
            // each header takes at least two bytes: a forged count ends at the record's length
            if left(src) < 2 {
                return Err(bad(index, format!("header count {headers} overruns the record's length {len}")));
            }
            let k = varint32(src, index, "header key length")?;
            skip_bytes(src, k, "header key", false)?;
            let v = varint32(src, index, "header value length")?;
            skip_bytes(src, v, "header value", true)?;
        }
        if src.consumed() != end {
            return Err(bad(index, format!("record length {len} does not match its fields ({} bytes)", src.consumed() - body_start)));
        }
        let timestamp = header.base_timestamp.saturating_add(ts_delta);
        summary.records += 1;
        summary.min_timestamp = summary.min_timestamp.min(timestamp);
        summary.max_timestamp = summary.max_timestamp.max(timestamp);
        summary.uncompressed_bytes += src.consumed() - start;
        let info = RecordInfo { index, offset_delta, timestamp, key_len, value_len, headers };
        if f(&info).is_break() {
            return Ok(summary);
        }
    }
    if src.byte()?.is_some() {
        return Err(BatchError::BadRecord { index: declared, reason: format!("the batch declares {declared} records but holds more data after them") });
    }
    Ok(summary)
}

/// A streaming decompressor over the record section of a compressed batch.
fn decompressor<'a>(codec: Compression, body: &'a [u8], limits: WalkLimits) -> Result<Box<dyn Read + 'a>, BatchError> {
    let dec = |e: io::Error| BatchError::Decompression(e.to_string());
    Ok(match codec {
        Compression::None => Box::new(body),
        // Kafka's Java client and librdkafka both write one gzip member; accept several as Java's
        // GZIPInputStream does
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(body)),
        Compression::Snappy => Box::new(SnappyReader::new(body, limits.max_decompressed_bytes)),
        Compression::Lz4 => Box::new(lz4::Decoder::new(body).map_err(dec)?),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(dec)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(dec)?;
            Box::new(d)
        }
    })
}

/// Largest zstd window a batch may ask the decoder to allocate: 2^27 = 128 MiB, the limit
/// Kafka's own broker applies (zstd's default, through zstd-jni), so a batch Kafka accepts is
/// accepted here, level 22 from the Java client included. Decoding runs on the runtime's
/// workers, one batch per worker at a time, so windows cost at most workers x 128 MiB; a frame
/// that declares more is refused before anything is allocated. Set explicitly so that a change
/// of the library's default cannot raise it.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The xerial framing the Java client writes: an 8-byte magic, two 4-byte version fields, then
/// blocks of (4-byte big-endian length, raw snappy block).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Largest ratio of decompressed to compressed bytes a snappy block can have (21.3: a 3-byte
/// copy element of 64 bytes), rounded up.
const SNAPPY_MAX_EXPANSION: usize = 22;

/// Snappy in either framing, decompressed one block at a time (raw snappy is one block). A
/// block's claimed size is checked against the limit, and against what its compressed size can
/// expand to, before its buffer is allocated.
struct SnappyReader<'a> {
    rest: &'a [u8],
    xerial: bool,
    out: Vec<u8>,
    pos: usize,
    produced: u64,
    limit: u64,
}

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8], limit: u64) -> Self {
        let xerial = body.len() >= XERIAL_HEADER_LEN && body.starts_with(XERIAL_MAGIC);
        let rest = if xerial { &body[XERIAL_HEADER_LEN..] } else { body };
        SnappyReader { rest, xerial, out: Vec::new(), pos: 0, produced: 0, limit }
    }

    /// Decompresses the next block into `out`; `false` at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if self.rest.is_empty() {
            return Ok(false);
        }
        let block = if self.xerial {
            if self.rest.len() < 4 {
                return Err(invalid("snappy block length truncated".into()));
            }
            let n = u32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]) as usize;
            if n > self.rest.len() - 4 {
                return Err(invalid(format!("snappy block of {n} bytes overruns the batch")));
            }
            let b = &self.rest[4..4 + n];
            self.rest = &self.rest[4 + n..];
            b
        } else {
            std::mem::take(&mut self.rest)
        };
        let size = snap::raw::decompress_len(block).map_err(|e| invalid(e.to_string()))?;
        // The length is the block's own claim, and its buffer is zeroed before decompression can
        // prove it false: unchecked, a 5-byte block claiming the whole limit gets 256 MiB. No
        // snappy element expands more than 64 bytes out of 3, so a larger claim is refused here.
        if size > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
            return Err(invalid(format!("snappy block of {} bytes claims {size} bytes", block.len())));
        }
        if self.produced + size as u64 > self.limit {
            return Err(invalid(format!("snappy data inflates past {} bytes", self.limit)));
        }
        self.out.clear();
        self.out.resize(size, 0);
        let n = snap::raw::Decoder::new().decompress(block, &mut self.out).map_err(|e| invalid(e.to_string()))?;
        self.out.truncate(n);
        self.produced += n as u64;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{CRC_OFFSET, compute_crc, set_base_offset, testing::*};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions};
    use proptest::prelude::*;

    fn all(batch: &[u8]) -> Result<Summary, BatchError> {
        walk(batch, WalkLimits::default(), |_| ControlFlow::Continue(()))
    }

    fn refresh_crc(b: &mut [u8]) {
        let crc = compute_crc(b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// A batch encoded by kafka-protocol's own encoder with `codec` (the Java client's framings).
    fn encoded(codec: KCompression, n: usize, value: &[u8]) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = encoder_record(i, 1_000, Bytes::from(format!("k{i}")), Bytes::copy_from_slice(value));
                r.headers = [(kafka_protocol::protocol::StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")))].into_iter().collect();
                r
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression: codec }).unwrap();
        out.to_vec()
    }

    #[test]
    fn walks_every_codec() {
        for codec in [KCompression::None, KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd] {
            let b = encoded(codec, 50, &[7u8; 300]);
            let s = all(&b).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(s.records, 50, "{codec:?}");
            assert_eq!((s.min_timestamp, s.max_timestamp), (1_000, 1_049), "{codec:?}");
        }
    }

    #[test]
    fn a_snappy_block_claiming_more_than_it_can_hold_is_refused_before_allocating() {
        // found by the record_batch fuzz target: 5 bytes claiming ~189 MiB made the walk
        // allocate and zero that much before decompression failed
        let mut b = batch_with_records(1, 0);
        b.truncate(HEADER_LEN);
        b.extend_from_slice(&[0xde, 0xde, 0xde, 0xde, 0x00]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&2i16.to_be_bytes());
        b[23..27].copy_from_slice(&6i32.to_be_bytes());
        b[57..61].copy_from_slice(&7i32.to_be_bytes());
        refresh_crc(&mut b);
        let e = all(&b).unwrap_err();
        assert!(matches!(&e, BatchError::Decompression(m) if m.contains("claims")), "{e}");
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it() {
        let plain = batch_with_records(20, 5);
        let raw = snap::raw::Encoder::new().compress_vec(&plain[HEADER_LEN..]).unwrap();
        let mut b = plain[..HEADER_LEN].to_vec();
        b.extend_from_slice(&raw);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&2i16.to_be_bytes());
        refresh_crc(&mut b);
        assert_eq!(all(&b).unwrap().records, 20);
    }

    #[test]
    fn finds_exact_record() {
        let mut b = batch_with_records(10, 1000);
        set_base_offset(&mut b, 500);
        assert_eq!(first_offset_at_or_after(&b, 1003).unwrap(), Some((503, 1003)));
        assert_eq!(first_offset_at_or_after(&b, 0).unwrap(), Some((500, 1000)));
        assert_eq!(first_offset_at_or_after(&b, 5000).unwrap(), None);
    }

    #[test]
    fn forged_counts_are_refused() {
        let b = batch_with_records(1, 0);
        for forged in [2, 1000, i32::MAX] {
            let mut f = b.clone();
            f[57..61].copy_from_slice(&forged.to_be_bytes());
            f[23..27].copy_from_slice(&(forged - 1).to_be_bytes());
            let e = all(&f).unwrap_err();
            assert!(matches!(e, BatchError::BadRecord { index: 1, .. }), "{forged}: {e}");
            assert!(first_offset_at_or_after(&f, i64::MAX).is_err());
        }
        // fewer declared than held: trailing data
        let mut f = batch_with_records(3, 0);
        f[57..61].copy_from_slice(&2i32.to_be_bytes());
        assert!(matches!(all(&f).unwrap_err(), BatchError::BadRecord { index: 2, .. }));
    }

    #[test]
    fn random_record_bodies_are_refused() {
        let mut b = batch_with_records(1, 0);
        b.truncate(HEADER_LEN);
        b.extend_from_slice(&[0x9c, 0x11, 0x42, 0xff, 0x00, 0x13, 0x37, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(all(&b).unwrap_err(), BatchError::BadRecord { index: 0, .. }));
    }

    #[test]
    fn non_consecutive_offset_deltas_are_refused() {
        // record 1 of this batch is rewritten to claim delta 5 (same varint width)
        let mut b = batch_with_records(3, 0);
        let body = HEADER_LEN;
        let first_len = b[body] as usize / 2; // zigzag, one byte
        let second = body + 1 + first_len;
        // length(1) attributes(1) ts_delta(1) offset_delta(1)
        assert_eq!(b[second + 3], 2, "zigzag(1)");
        b[second + 3] = 10;
        assert!(matches!(all(&b).unwrap_err(), BatchError::BadRecord { index: 1, .. }));
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        // 64 MiB of zeros in one zstd-compressed record: a few KiB on the wire
        let value = vec![0u8; 64 << 20];
        let b = encoded(KCompression::Zstd, 1, &value);
        assert!(b.len() < 64 << 10, "{}", b.len());
        let small = WalkLimits { max_decompressed_bytes: 1 << 20 };
        let e = walk(&b, small, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, BatchError::DecompressedTooLarge { .. }), "{e}");
        assert_eq!(walk(&b, WalkLimits::default(), |_| ControlFlow::Continue(())).unwrap().records, 1);
        for codec in [KCompression::Gzip, KCompression::Snappy, KCompression::Lz4] {
            let b = encoded(codec, 1, &value[..8 << 20]);
            let e = walk(&b, small, |_| ControlFlow::Continue(())).unwrap_err();
            assert!(matches!(e, BatchError::DecompressedTooLarge { .. } | BatchError::Decompression(_)), "{codec:?}: {e}");
        }
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_past_128_mib_is_refused() {
        let plain = encoded(KCompression::None, 3, b"hello");
        use std::io::Write;
        let zstd_batch = |window_log: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log)).unwrap();
            enc.write_all(&plain[HEADER_LEN..]).unwrap();
            let body = enc.finish().unwrap();
            let mut b = plain[..HEADER_LEN].to_vec();
            b.extend_from_slice(&body);
            b[22] = (b[22] & !0x07) | 4; // attributes: zstd
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let crc = compute_crc(&b);
            b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            b
        };
        assert_eq!(all(&zstd_batch(ZSTD_WINDOW_LOG_MAX)).unwrap().records, 3);
        let e = all(&zstd_batch(ZSTD_WINDOW_LOG_MAX + 1)).unwrap_err();
        assert!(matches!(e, BatchError::Decompression(_)), "{e}");
    }

    #[test]
    fn corrupt_compressed_data_is_an_error() {
        for codec in [KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd] {
            let mut b = encoded(codec, 10, b"hello");
            let mid = HEADER_LEN + (b.len() - HEADER_LEN) / 2;
            for x in &mut b[mid..] {
                *x ^= 0x5a;
            }
            assert!(all(&b).is_err(), "{codec:?}");
        }
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), codec in 0i16..5, count in any::<i32>()) {
            let mut b = batch_with_records(1, 0);
            b.truncate(HEADER_LEN);
            b.extend_from_slice(&body);
            let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            let _ = all(&b);
            let _ = first_offset_at_or_after(&b, 0);
        }

        #[test]
        fn valid_batches_walk_whole(n in 1i32..60, ts in 0i64..1 << 40) {
            let b = batch_with_records(n, ts);
            let s = all(&b).unwrap();
            prop_assert_eq!(s.records, n);
            prop_assert_eq!(s.min_timestamp, ts);
            prop_assert_eq!(s.max_timestamp, ts + n as i64 - 1);
        }
    }
}
