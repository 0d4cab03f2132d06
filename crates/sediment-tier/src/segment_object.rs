//! One object per sealed segment, self-describing:
//!
//! ```text
//! | .log bytes (verbatim) | .index | .timeindex | footer (96 bytes) |
//!
//! footer, big-endian:
//!   0  magic "SDMTSEG1"         8 bytes (format version in the last byte)
//!   8  log_len            u64   bytes of .log at the start of the object
//!  16  index_len          u32   bytes of .index after it
//!  20  time_index_len     u32   bytes of .timeindex after that
//!  24  base_offset        i64   first offset of the segment
//!  32  last_offset        i64   last offset of the segment
//!  40  first_timestamp    i64   base timestamp of the first batch
//!  48  max_timestamp      i64   largest batch max timestamp
//!  56  leader_epoch       i32   partition leader epoch of the last batch
//!  60  batch_count        u32
//!  64  log_crc            u32   CRC-32C of the .log bytes
//!  68  index_crc          u32   CRC-32C of .index followed by .timeindex
//!  72  reserved           20 bytes of zero
//!  92  footer_crc         u32   CRC-32C of footer bytes 0..92
//! ```
//!
//! A reader needs nothing but the object: the last 96 bytes say where everything is, the
//! indexes are Kafka's sparse offset and time indexes of the segment, and every batch still
//! carries its own CRC-32C (checked on every cold read, so a flipped bit is reported, never
//! served). Small segments are one PUT; above `multipart_threshold` the object is streamed from
//! the file in parts (the footer, computed on the way, goes last), and a failed upload is
//! aborted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sediment_log::SegmentInfo;
use sediment_log::index::{OffsetEntry, TimeEntry, decode_offset_index, decode_time_index};
use sediment_protocol::batch::{BatchHeader, HEADER_LEN};

use crate::error::{Result, TierError};
use crate::manifest::RemoteSegment;
use crate::paths::{self, PartitionRef};

pub const FOOTER_LEN: usize = 96;
const MAGIC: &[u8; 8] = b"SDMTSEG1";

/// The fixed footer at the end of every segment object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub log_len: u64,
    pub index_len: u32,
    pub time_index_len: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
    pub batch_count: u32,
    pub log_crc: u32,
    pub index_crc: u32,
}

impl Footer {
    pub fn object_len(&self) -> u64 {
        // saturating: a footer read from the bucket may claim any `log_len`, and a sum that
        // wrapped around could match the object's real size
        self.log_len.saturating_add(self.index_len as u64 + self.time_index_len as u64 + FOOTER_LEN as u64)
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.log_len.to_be_bytes());
        b[16..20].copy_from_slice(&self.index_len.to_be_bytes());
        b[20..24].copy_from_slice(&self.time_index_len.to_be_bytes());
        b[24..32].copy_from_slice(&self.base_offset.to_be_bytes());
        b[32..40].copy_from_slice(&self.last_offset.to_be_bytes());
        b[40..48].copy_from_slice(&self.first_timestamp.to_be_bytes());
        b[48..56].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[56..60].copy_from_slice(&self.leader_epoch.to_be_bytes());
        b[60..64].copy_from_slice(&self.batch_count.to_be_bytes());
        b[64..68].copy_from_slice(&self.log_crc.to_be_bytes());
        b[68..72].copy_from_slice(&self.index_crc.to_be_bytes());
        let crc = crc32c::crc32c(&b[..92]);
        b[92..96].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes and checks magic and CRC. The error is a reason for a log line.
    pub fn decode(b: &[u8]) -> std::result::Result<Footer, String> {
        if b.len() != FOOTER_LEN {
            return Err(format!("footer is {} bytes, expected {FOOTER_LEN}", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("bad footer magic (not a sediment segment object)".into());
        }
        let want = u32::from_be_bytes([b[92], b[93], b[94], b[95]]);
        let got = crc32c::crc32c(&b[..92]);
        if want != got {
            return Err(format!("footer crc mismatch: stored {want:#010x}, computed {got:#010x}"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let i64_at = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let f = Footer {
            log_len: u64_at(8),
            index_len: u32_at(16),
            time_index_len: u32_at(20),
            base_offset: i64_at(24),
            last_offset: i64_at(32),
            first_timestamp: i64_at(40),
            max_timestamp: i64_at(48),
            leader_epoch: u32_at(56) as i32,
            batch_count: u32_at(60),
            log_crc: u32_at(64),
            index_crc: u32_at(68),
        };
        if f.last_offset < f.base_offset || f.log_len == 0 {
            return Err(format!("footer describes an impossible segment {f:?}"));
        }
        Ok(f)
    }
}

/// The footer and decoded indexes of a segment object (what a reader caches per segment).
#[derive(Debug, Clone)]
pub struct SegmentMeta {
    pub footer: Footer,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentMeta {
    /// Decodes the object's tail: the bytes from `log_len` to the end (indexes and footer).
    pub fn decode_tail(key: &str, tail: &[u8]) -> Result<SegmentMeta> {
        if tail.len() < FOOTER_LEN {
            return Err(TierError::corrupt(key, format!("object tail of {} bytes has no footer", tail.len())));
        }
        let footer = Footer::decode(&tail[tail.len() - FOOTER_LEN..]).map_err(|r| TierError::corrupt(key, r))?;
        let idx_len = footer.index_len as usize + footer.time_index_len as usize;
        if tail.len() != idx_len + FOOTER_LEN {
            return Err(TierError::corrupt(key, format!("indexes take {} bytes but the footer says {idx_len}", tail.len() - FOOTER_LEN)));
        }
        let indexes = &tail[..idx_len];
        let crc = crc32c::crc32c(indexes);
        if crc != footer.index_crc {
            return Err(TierError::corrupt(key, format!("index crc mismatch: stored {:#010x}, computed {crc:#010x}", footer.index_crc)));
        }
        let (oi, ti) = indexes.split_at(footer.index_len as usize);
        let offsets = decode_offset_index(oi).map_err(|r| TierError::corrupt(key, format!("offset index: {r}")))?;
        let times = decode_time_index(ti).map_err(|r| TierError::corrupt(key, format!("time index: {r}")))?;
        Ok(SegmentMeta { footer, offsets, times })
    }

    /// Approximate memory held (cache weight).
    pub fn weight(&self) -> usize {
        64 + self.offsets.len() * 8 + self.times.len() * 16
    }
}

/// Walks batch headers through a segment streamed in blocks, checking that offsets continue and
/// collecting what the footer records.
#[derive(Debug)]
struct HeaderTracker {
    next_pos: u64,
    partial: Vec<u8>,
    expected: i64,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    last_epoch: i32,
    batches: u32,
}

impl HeaderTracker {
    fn new(base_offset: i64) -> HeaderTracker {
        HeaderTracker { next_pos: 0, partial: Vec::new(), expected: base_offset, first_timestamp: None, max_timestamp: -1, last_epoch: -1, batches: 0 }
    }

    fn note(&mut self, h: &BatchHeader) -> std::result::Result<(), String> {
        if h.base_offset != self.expected {
            return Err(format!("batch at position {} has base offset {}, expected {}", self.next_pos, h.base_offset, self.expected));
        }
        if h.last_offset_delta < 0 {
            return Err(format!("batch at position {} has a negative last offset delta", self.next_pos));
        }
        self.first_timestamp.get_or_insert(h.base_timestamp);
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.last_epoch = h.partition_leader_epoch;
        self.batches += 1;
        self.expected = h.next_offset();
        self.next_pos += h.total_len() as u64;
        Ok(())
    }

    /// Feeds the bytes at file position `start` (blocks arrive in order, without gaps).
    fn feed(&mut self, start: u64, buf: &[u8]) -> std::result::Result<(), String> {
        let end = start + buf.len() as u64;
        let mut consumed = 0usize; // bytes of `buf` used to complete a straddling header
        loop {
            if !self.partial.is_empty() {
                let need = HEADER_LEN - self.partial.len();
                let take = need.min(buf.len() - consumed);
                self.partial.extend_from_slice(&buf[consumed..consumed + take]);
                consumed += take;
                if self.partial.len() < HEADER_LEN {
                    return Ok(());
                }
                let h = BatchHeader::parse(&self.partial).map_err(|e| format!("invalid batch at position {}: {e}", self.next_pos))?;
                self.partial.clear();
                self.note(&h)?;
                continue;
            }
            if self.next_pos >= end {
                return Ok(());
            }
            let rel = (self.next_pos - start) as usize;
            if rel + HEADER_LEN <= buf.len() {
                let h = BatchHeader::parse(&buf[rel..]).map_err(|e| format!("invalid batch at position {}: {e}", self.next_pos))?;
                self.note(&h)?;
            } else {
                self.partial.extend_from_slice(&buf[rel..]);
                return Ok(());
            }
        }
    }

    fn finish(&self, log_len: u64, next_offset: i64) -> std::result::Result<(), String> {
        if !self.partial.is_empty() || self.next_pos != log_len {
            return Err(format!("batches end at position {} but the segment has {log_len} bytes", self.next_pos));
        }
        if self.expected != next_offset {
            return Err(format!("batches end at offset {} but the segment should end at {next_offset}", self.expected));
        }
        if self.batches == 0 {
            return Err("segment holds no batch".into());
        }
        Ok(())
    }
}

/// How segments are written.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Objects up to this size are one PUT; larger ones are multipart uploads.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (S3 wants at least 5 MiB for all parts but the last).
    pub part_bytes: usize,
    /// Parts in flight per upload.
    pub part_concurrency: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions { multipart_threshold: 64 << 20, part_bytes: 16 << 20, part_concurrency: 2 }
    }
}

fn sibling(log_path: &Path, ext: &str) -> PathBuf {
    log_path.with_extension(ext)
}

fn read_whole(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TierError::io("read", path, e))
}

fn read_exact_at(f: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<()> {
    f.read_exact_at(buf, pos).map_err(|e| TierError::io("read segment", path, e))
}

/// The header of the last batch, found from the last offset index entry.
fn last_header(f: &File, path: &Path, log_len: u64, offsets: &[OffsetEntry]) -> Result<BatchHeader> {
    let mut pos = offsets.last().map_or(0, |e| e.position as u64);
    let mut last = None;
    let mut buf = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= log_len {
        read_exact_at(f, path, &mut buf, pos)?;
        let h = BatchHeader::parse(&buf)
            .map_err(|e| TierError::BadLocalSegment { path: path.display().to_string(), reason: format!("invalid batch at position {pos}: {e}") })?;
        pos += h.total_len() as u64;
        last = Some(h);
    }
    last.ok_or_else(|| TierError::BadLocalSegment { path: path.display().to_string(), reason: "no batch found".into() })
}

/// Local files of one sealed segment, opened and checked, ready to be streamed.
struct Opened {
    file: Arc<File>,
    path: PathBuf,
    log_len: u64,
    index: Vec<u8>,
    time_index: Vec<u8>,
    epoch: i32,
    last_offset: i64,
}

fn open_sealed(seg: &SegmentInfo) -> Result<Opened> {
    let path = seg.log_path.clone();
    let file = File::open(&path).map_err(|e| TierError::io("open segment", &path, e))?;
    let log_len = file.metadata().map_err(|e| TierError::io("stat segment", &path, e))?.len();
    let bad = |reason: String| TierError::BadLocalSegment { path: path.display().to_string(), reason };
    if log_len != seg.size_bytes {
        return Err(bad(format!("file has {log_len} bytes, the log says {}", seg.size_bytes)));
    }
    let index = read_whole(&sibling(&path, "index"))?;
    let time_index = read_whole(&sibling(&path, "timeindex"))?;
    let offsets = decode_offset_index(&index).map_err(|r| bad(format!("offset index: {r}")))?;
    decode_time_index(&time_index).map_err(|r| bad(format!("time index: {r}")))?;
    if index.len() > u32::MAX as usize || time_index.len() > u32::MAX as usize {
        return Err(bad("index larger than 4 GiB".into()));
    }
    let last = last_header(&file, &path, log_len, &offsets)?;
    if last.last_offset() != seg.next_offset - 1 {
        return Err(bad(format!("last batch ends at offset {} but the segment ends at {}", last.last_offset(), seg.next_offset - 1)));
    }
    Ok(Opened { file: Arc::new(file), path, log_len, index, time_index, epoch: last.partition_leader_epoch, last_offset: last.last_offset() })
}

/// The object key a sealed local segment is uploaded to (deterministic).
pub fn object_key(p: &PartitionRef, base_offset: i64, last_offset: i64, epoch: i32) -> object_store::path::Path {
    paths::segment(p, base_offset, last_offset, epoch)
}

fn footer_from(t: &HeaderTracker, o: &Opened, base_offset: i64, log_crc: u32) -> Footer {
    let mut icrc = crc32c::crc32c(&o.index);
    icrc = crc32c::crc32c_append(icrc, &o.time_index);
    Footer {
        log_len: o.log_len,
        index_len: o.index.len() as u32,
        time_index_len: o.time_index.len() as u32,
        base_offset,
        last_offset: o.last_offset,
        first_timestamp: t.first_timestamp.unwrap_or(-1),
        max_timestamp: t.max_timestamp,
        leader_epoch: t.last_epoch,
        batch_count: t.batches,
        log_crc,
        index_crc: icrc,
    }
}

/// Builds a whole segment object in memory from its three files' bytes (small segments; tests).
pub fn encode_object(log: &[u8], index: &[u8], time_index: &[u8], base_offset: i64) -> std::result::Result<(Bytes, Footer), String> {
    let mut t = HeaderTracker::new(base_offset);
    t.feed(0, log)?;
    if !t.partial.is_empty() || t.next_pos != log.len() as u64 || t.batches == 0 {
        return Err("log bytes do not end on a batch boundary".into());
    }
    let mut icrc = crc32c::crc32c(index);
    icrc = crc32c::crc32c_append(icrc, time_index);
    let footer = Footer {
        log_len: log.len() as u64,
        index_len: index.len() as u32,
        time_index_len: time_index.len() as u32,
        base_offset,
        last_offset: t.expected - 1,
        first_timestamp: t.first_timestamp.unwrap_or(-1),
        max_timestamp: t.max_timestamp,
        leader_epoch: t.last_epoch,
        batch_count: t.batches,
        log_crc: crc32c::crc32c(log),
        index_crc: icrc,
    };
    let mut b = BytesMut::with_capacity(footer.object_len() as usize);
    b.extend_from_slice(log);
    b.extend_from_slice(index);
    b.extend_from_slice(time_index);
    b.extend_from_slice(&footer.encode());
    Ok((b.freeze(), footer))
}

/// Uploads one sealed local segment to its deterministic key and returns its manifest entry.
/// Idempotent: the same segment always produces the same bytes at the same key.
pub async fn upload_segment(store: &Arc<dyn ObjectStore>, p: &PartitionRef, seg: &SegmentInfo, opts: &UploadOptions) -> Result<RemoteSegment> {
    let seg2 = seg.clone();
    let opened = tokio::task::spawn_blocking(move || open_sealed(&seg2)).await.map_err(|e| TierError::LocalIo {
        op: "open segment",
        path: seg.log_path.display().to_string(),
        reason: e.to_string(),
    })??;
    let key = object_key(p, seg.base_offset, opened.last_offset, opened.epoch);
    let key_str = key.to_string();
    let total = opened.log_len + opened.index.len() as u64 + opened.time_index.len() as u64 + FOOTER_LEN as u64;
    let footer = if total <= opts.multipart_threshold {
        let o = opened;
        let (o, log) = tokio::task::spawn_blocking(move || {
            let mut log = vec![0u8; o.log_len as usize];
            let r = read_exact_at(&o.file, &o.path, &mut log, 0);
            r.map(|()| (o, log))
        })
        .await
        .map_err(|e| TierError::LocalIo { op: "read segment", path: seg.log_path.display().to_string(), reason: e.to_string() })??;
        let mut t = HeaderTracker::new(seg.base_offset);
        t.feed(0, &log)
            .and_then(|()| t.finish(o.log_len, seg.next_offset))
            .map_err(|reason| TierError::BadLocalSegment { path: o.path.display().to_string(), reason })?;
        let footer = footer_from(&t, &o, seg.base_offset, crc32c::crc32c(&log));
        let payload = PutPayload::from_iter([Bytes::from(log), Bytes::from(o.index), Bytes::from(o.time_index), Bytes::copy_from_slice(&footer.encode())]);
        store.put(&key, payload).await.map_err(|e| TierError::store(&key_str, e))?;
        footer
    } else {
        upload_multipart(store, &key, opened, seg, opts).await?
    };
    Ok(RemoteSegment {
        base_offset: seg.base_offset,
        last_offset: footer.last_offset,
        first_timestamp: footer.first_timestamp,
        max_timestamp: footer.max_timestamp,
        size_bytes: footer.object_len(),
        log_bytes: footer.log_len,
        key: key_str,
        leader_epoch: footer.leader_epoch,
        seq: 0,
    })
}

async fn upload_multipart(store: &Arc<dyn ObjectStore>, key: &object_store::path::Path, o: Opened, seg: &SegmentInfo, opts: &UploadOptions) -> Result<Footer> {
    let key_str = key.to_string();
    let upload = store.put_multipart(key).await.map_err(|e| TierError::store(&key_str, e))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, opts.part_bytes.max(5 << 20));
    let o = Arc::new(o);
    let result: Result<Footer> = async {
        let mut t = HeaderTracker::new(seg.base_offset);
        let mut crc = 0u32;
        let mut pos = 0u64;
        while pos < o.log_len {
            let len = (opts.part_bytes as u64).min(o.log_len - pos) as usize;
            let o2 = o.clone();
            let buf = tokio::task::spawn_blocking(move || {
                let mut b = vec![0u8; len];
                read_exact_at(&o2.file, &o2.path, &mut b, pos).map(|()| b)
            })
            .await
            .map_err(|e| TierError::LocalIo { op: "read segment", path: o.path.display().to_string(), reason: e.to_string() })??;
            t.feed(pos, &buf).map_err(|reason| TierError::BadLocalSegment { path: o.path.display().to_string(), reason })?;
            crc = crc32c::crc32c_append(crc, &buf);
            w.wait_for_capacity(opts.part_concurrency.max(1)).await.map_err(|e| TierError::store(&key_str, e))?;
            w.put(Bytes::from(buf));
            pos += len as u64;
        }
        t.finish(o.log_len, seg.next_offset).map_err(|reason| TierError::BadLocalSegment { path: o.path.display().to_string(), reason })?;
        let footer = footer_from(&t, &o, seg.base_offset, crc);
        w.write(&o.index);
        w.write(&o.time_index);
        w.write(&footer.encode());
        Ok(footer)
    }
    .await;
    match result {
        Ok(footer) => {
            w.finish().await.map_err(|e| TierError::store(&key_str, e))?;
            Ok(footer)
        }
        Err(e) => {
            if let Err(abort) = w.abort().await {
                tracing::warn!(key = %key_str, error = %crate::error::flatten(&abort), "cannot abort multipart upload (a bucket lifecycle rule cleans it up)");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_footer_claiming_an_impossible_length_does_not_wrap() {
        // found by the segment_object fuzz target: the sum overflowed (a panic with overflow
        // checks, a wrapped size that could match the object's real one without them)
        let f = Footer {
            log_len: u64::MAX - 10,
            index_len: 12,
            time_index_len: 24,
            base_offset: 0,
            last_offset: 9,
            first_timestamp: 0,
            max_timestamp: 9,
            leader_epoch: 1,
            batch_count: 1,
            log_crc: 0,
            index_crc: 0,
        };
        assert_eq!(f.object_len(), u64::MAX);
    }

    use super::*;
    use sediment_protocol::batch::testing::batch_with_records;
    use sediment_protocol::batch::{set_base_offset, set_partition_leader_epoch};

    /// `n` batches of 3 records starting at `base`, as a log would hold them.
    pub(crate) fn log_bytes(base: i64, n: usize, epoch: i32) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let mut b = batch_with_records(3, 1_700_000_000_000 + i as i64);
            set_base_offset(&mut b, base + 3 * i as i64);
            set_partition_leader_epoch(&mut b, epoch);
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn footer_round_trips_and_detects_damage() {
        let (obj, f) = encode_object(&log_bytes(100, 5, 4), &[], &[], 100).expect("encode");
        assert_eq!((f.base_offset, f.last_offset, f.leader_epoch, f.batch_count), (100, 114, 4, 5));
        assert_eq!(obj.len() as u64, f.object_len());
        let tail = &obj[f.log_len as usize..];
        let meta = SegmentMeta::decode_tail("k", tail).expect("decode");
        assert_eq!(meta.footer, f);
        let mut bad = tail.to_vec();
        bad[30] ^= 1;
        assert!(SegmentMeta::decode_tail("k", &bad).is_err());
        assert!(SegmentMeta::decode_tail("k", &tail[1..]).is_err());
    }

    #[test]
    fn tracker_handles_headers_split_across_blocks() {
        let log = log_bytes(0, 40, 1);
        for block in [1usize, 7, 60, 61, 62, 100, 4096] {
            let mut t = HeaderTracker::new(0);
            let mut pos = 0;
            for chunk in log.chunks(block) {
                t.feed(pos as u64, chunk).expect("feed");
                pos += chunk.len();
            }
            t.finish(log.len() as u64, 120).expect("finish");
            assert_eq!(t.batches, 40, "block {block}");
        }
        let mut t = HeaderTracker::new(5);
        assert!(t.feed(0, &log).is_err(), "wrong base offset detected");
    }
}
