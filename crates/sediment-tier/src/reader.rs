//! Cold reads: Fetch below the local log start, served from segment objects through a `foyer`
//! hybrid (memory + disk) cache.
//!
//! * The cache key is (object key, chunk index): objects are immutable, so a key always names
//!   the same bytes and entries never need invalidation.
//! * A chunk is `chunk_bytes` (a few MiB) of the segment's `.log` part, fetched by one ranged
//!   GET. `get_or_fetch` is single flight: concurrent readers of a missing chunk share one GET.
//! * A segment's footer and indexes are read once (one ranged GET of the object's tail) and
//!   kept in a memory cache.
//! * After a read, the next `read_ahead_chunks` chunks are fetched in the background (crossing
//!   into the next segment), so a sequential replay rarely waits on the bucket.
//! * Bucket GETs (foreground and read-ahead) take a permit from the cold-read budget, separate
//!   from uploads, so a backfill cannot take every connection the broker has.
//! * Optional budgets: bytes per second fetched from the bucket (KIP-956's remote fetch quota),
//!   and bytes per second served while the broker takes produce traffic
//!   ([`ChunkCache::note_produce`]), so a replay yields to producers.
//! * Results are whole batches, like a local `ReadPlan`, ending at the end of the chunk the
//!   first batch ends in (a hit is then a slice of one chunk: no copy), and every batch's
//!   CRC-32C and offsets are checked before it is served: a damaged object is an error, never
//!   garbage.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, PsyncIoEngineConfig};
use object_store::{ObjectStore, ObjectStoreExt};
use sediment_log::index::{lookup_offset, lookup_time};
use sediment_protocol::batch::{BatchHeader, BatchIter, HEADER_LEN, verify_crc};
use tokio::sync::Semaphore;

use crate::error::{Result, TierError};
use crate::manifest::RemoteSegment;
use crate::segment_object::SegmentMeta;
use crate::stats::TierStats;

/// Settings of the read path.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Disk cache directory; `None` keeps the cache in memory only.
    pub dir: Option<PathBuf>,
    /// Disk cache capacity.
    pub disk_bytes: u64,
    /// Memory cache capacity (chunks).
    pub memory_bytes: usize,
    /// Memory for segment footers and indexes.
    pub meta_bytes: usize,
    /// Bytes per chunk (and per ranged GET).
    pub chunk_bytes: u64,
    /// Chunks fetched ahead of a reader.
    pub read_ahead_chunks: usize,
    /// Bucket GETs of cold reads in flight at once.
    pub cold_read_concurrency: usize,
    /// Optional cap on the bytes per second cold reads fetch from the bucket (Kafka's
    /// `remote.log.manager.fetch.max.bytes.per.second`).
    pub cold_read_bytes_per_sec: Option<u64>,
    /// Optional cap on the bytes per second cold reads serve (cache hits included) while the
    /// broker is taking produce traffic (see [`ChunkCache::note_produce`]): a replay then yields
    /// the CPU to producers, and runs unthrottled once they stop.
    pub cold_read_bytes_per_sec_under_load: Option<u64>,
    /// Threads of the cold-read runtime (bucket GETs and disk-cache I/O run there, at a lower
    /// CPU priority than produce and local fetch); 0 runs them on the caller's runtime.
    pub cold_read_threads: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            disk_bytes: 1 << 30,
            memory_bytes: 128 << 20,
            meta_bytes: 32 << 20,
            chunk_bytes: 4 << 20,
            read_ahead_chunks: 4,
            cold_read_concurrency: 8,
            cold_read_bytes_per_sec: None,
            cold_read_bytes_per_sec_under_load: None,
            cold_read_threads: 1,
        }
    }
}

/// The disk cache's block size: a chunk must fit in one block.
const DISK_BLOCK: usize = 16 << 20;

/// Disk-cache writes that may wait to be flushed before foyer drops new ones.
const SUBMIT_QUEUE_BYTES: usize = 256 << 20;
/// foyer's disk-cache write buffers (two of half this size).
const WRITE_BUFFER_BYTES: usize = 4 * DISK_BLOCK;

/// (object key, chunk index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    pub object: String,
    pub chunk: u32,
}

/// Longest object key a cache entry may name: S3's limit. A key read back from the disk cache
/// (after a crash, a torn block) that claims more is an error, not a 4 GiB allocation.
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;

impl ChunkKey {
    /// Encodes the key as the disk cache stores it (read back by [`ChunkKey::read_from`]).
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let b = self.object.as_bytes();
        w.write_all(&(b.len() as u32).to_be_bytes())?;
        w.write_all(b)?;
        w.write_all(&self.chunk.to_be_bytes())
    }

    /// Decodes a key as the disk cache stored it (`foyer::Code::encode`): u32 length, UTF-8
    /// object key, u32 chunk index.
    pub fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Self> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_OBJECT_KEY_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cache key claims a {len}-byte object key (at most {MAX_OBJECT_KEY_BYTES})"),
            ));
        }
        let mut b = vec![0u8; len];
        r.read_exact(&mut b)?;
        let mut c = [0u8; 4];
        r.read_exact(&mut c)?;
        let object = String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(ChunkKey { object, chunk: u32::from_be_bytes(c) })
    }
}

impl foyer::Code for ChunkKey {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        self.write_to(w).map_err(foyer::Error::io_error)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        ChunkKey::read_from(r).map_err(foyer::Error::io_error)
    }

    fn estimated_size(&self) -> usize {
        8 + self.object.len()
    }
}

pub struct ChunkCache {
    /// Keeps the cold-read runtime alive (shut down in the background when dropped).
    _runtime: Option<ColdRuntime>,
    rate: Option<Arc<tokio::sync::Mutex<ByteBucket>>>,
    /// The under-load budget, and when produce traffic was last seen.
    under_load: Option<tokio::sync::Mutex<ByteBucket>>,
    produce_seen: Clock,
    store: Arc<dyn ObjectStore>,
    chunks: HybridCache<ChunkKey, Bytes>,
    metas: foyer::Cache<String, Arc<SegmentMeta>>,
    permits: Arc<Semaphore>,
    stats: Arc<TierStats>,
    chunk_bytes: u64,
    read_ahead: usize,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache").field("chunk_bytes", &self.chunk_bytes).field("read_ahead", &self.read_ahead).finish()
    }
}

fn corrupt(seg: &RemoteSegment, reason: impl Into<String>) -> TierError {
    TierError::corrupt(seg.key.clone(), reason)
}

/// A runtime for cold reads whose threads run at nice +10: a replay from the bucket gets the
/// CPU that produce and tail reads leave over.
struct ColdRuntime(Option<tokio::runtime::Runtime>);

impl ColdRuntime {
    fn new(threads: usize) -> Result<ColdRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("sediment-cold-read")
            .enable_all()
            .on_thread_start(|| {
                // SAFETY: setpriority on the calling thread's id; no memory is touched.
                #[cfg(target_os = "linux")]
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
                }
            })
            .build()
            .map_err(|e| TierError::Config(format!("cannot start the cold-read runtime: {e}")))?;
        Ok(ColdRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for ColdRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background(); // may be dropped from async code
        }
    }
}

/// Milliseconds since a fixed start, stored atomically: when something last happened.
struct Clock {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock { start: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn mark(&self) {
        let now = self.now_ms();
        // one store per millisecond at most: produce calls this on every request
        if self.last_ms.load(Ordering::Relaxed) != now {
            self.last_ms.store(now, Ordering::Relaxed);
        }
    }

    fn within(&self, window_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last > 0 && self.now_ms().saturating_sub(last) <= window_ms
    }
}

/// Produce seen this recently counts as load.
const UNDER_LOAD_WINDOW_MS: u64 = 1000;

/// Token bucket of bytes per second (a burst of one second).
struct ByteBucket {
    per_sec: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl ByteBucket {
    fn new(per_sec: u64) -> ByteBucket {
        ByteBucket { per_sec: per_sec as f64, tokens: per_sec as f64, at: std::time::Instant::now() }
    }

    async fn take(bucket: &tokio::sync::Mutex<ByteBucket>, n: u64) {
        let mut b = bucket.lock().await;
        loop {
            let now = std::time::Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.per_sec).min(b.per_sec.max(n as f64));
            b.at = now;
            if b.tokens >= n as f64 {
                b.tokens -= n as f64;
                return;
            }
            let wait = (n as f64 - b.tokens) / b.per_sec;
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
    }
}

impl ChunkCache {
    pub async fn open(store: Arc<dyn ObjectStore>, stats: Arc<TierStats>, cfg: &CacheConfig) -> Result<ChunkCache> {
        let chunk_bytes = cfg.chunk_bytes.clamp(64 << 10, (DISK_BLOCK as u64) / 2);
        let runtime = (cfg.cold_read_threads > 0).then(|| ColdRuntime::new(cfg.cold_read_threads)).transpose()?;
        let mut builder = HybridCacheBuilder::new()
            .with_name("sediment-chunks")
            .memory(cfg.memory_bytes.max(chunk_bytes as usize * 2))
            .with_weighter(|k: &ChunkKey, v: &Bytes| k.object.len() + v.len() + 64)
            .storage();
        if let Some(h) = runtime.as_ref().and_then(ColdRuntime::handle) {
            // chunk fetches (bucket GETs) and disk-cache I/O run on the cold-read runtime
            builder = builder.with_spawner(foyer::Spawner::from(h));
        }
        let chunks = match &cfg.dir {
            Some(dir) if cfg.disk_bytes > 0 => {
                std::fs::create_dir_all(dir).map_err(|e| TierError::io("create cache directory", dir, e))?;
                let capacity = (cfg.disk_bytes as usize).max(4 * DISK_BLOCK);
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(capacity)
                    .build()
                    .map_err(|e| TierError::Config(format!("cache directory {}: {e}", dir.display())))?;
                builder
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(
                        BlockEngineConfig::new(device)
                            .with_block_size(DISK_BLOCK)
                            // foyer drops a disk-cache write when more than this waits to be
                            // flushed (default 16 MiB: four chunks); a replay evicts chunks
                            // from memory as fast as it reads them, so allow a burst
                            .with_submit_queue_size_threshold(SUBMIT_QUEUE_BYTES)
                            // and when its write buffer is full while a block write is out
                            .with_buffer_pool_size(WRITE_BUFFER_BYTES),
                    )
                    .build()
                    .await
            }
            _ => builder.build().await,
        }
        .map_err(|e| TierError::Config(format!("cannot open the read-through cache: {e}")))?;
        let metas = foyer::CacheBuilder::new(cfg.meta_bytes.max(1 << 20)).with_weighter(|k: &String, v: &Arc<SegmentMeta>| k.len() + v.weight()).build();
        Ok(ChunkCache {
            _runtime: runtime,
            rate: cfg.cold_read_bytes_per_sec.filter(|r| *r > 0).map(|r| Arc::new(tokio::sync::Mutex::new(ByteBucket::new(r)))),
            under_load: cfg.cold_read_bytes_per_sec_under_load.filter(|r| *r > 0).map(|r| tokio::sync::Mutex::new(ByteBucket::new(r))),
            produce_seen: Clock::new(),
            store,
            chunks,
            metas,
            permits: Arc::new(Semaphore::new(cfg.cold_read_concurrency.max(1))),
            stats,
            chunk_bytes,
            read_ahead: cfg.read_ahead_chunks,
        })
    }

    /// The broker took produce traffic: for the next second, cold reads keep to the
    /// under-load budget (when one is configured).
    pub fn note_produce(&self) {
        if self.under_load.is_some() {
            self.produce_seen.mark();
        }
    }

    /// Holds a cold read of `n` bytes to the under-load budget while produce traffic is seen.
    async fn yield_to_produce(&self, n: u64) {
        let Some(bucket) = &self.under_load else { return };
        if !self.produce_seen.within(UNDER_LOAD_WINDOW_MS) {
            return;
        }
        let started = std::time::Instant::now();
        ByteBucket::take(bucket, n).await;
        let waited = started.elapsed();
        if waited >= std::time::Duration::from_millis(1) {
            self.stats.throttled(waited);
        }
    }

    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// Flushes the disk cache (shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.chunks.close().await {
            tracing::warn!(error = %e, "cannot close the read-through cache cleanly");
        }
    }

    /// Footer and indexes of a segment (cached; one ranged GET on a miss).
    pub async fn meta(&self, seg: &RemoteSegment) -> Result<Arc<SegmentMeta>> {
        let store = self.store.clone();
        let s = seg.clone();
        let permits = self.permits.clone();
        let entry = self
            .metas
            .get_or_fetch(&seg.key, move || async move {
                let _permit = permits.acquire_owned().await;
                if s.size_bytes <= s.log_bytes {
                    return Err(corrupt(&s, "manifest entry has no room for indexes and footer"));
                }
                let key = object_store::path::Path::from(s.key.as_str());
                let tail = store.get_range(&key, s.log_bytes..s.size_bytes).await.map_err(|e| TierError::store(&s.key, e))?;
                let meta = SegmentMeta::decode_tail(&s.key, &tail)?;
                let f = &meta.footer;
                if f.base_offset != s.base_offset || f.last_offset != s.last_offset || f.log_len != s.log_bytes {
                    return Err(corrupt(
                        &s,
                        format!(
                            "footer describes offsets [{}, {}] in {} bytes, the manifest [{}, {}] in {}",
                            f.base_offset, f.last_offset, f.log_len, s.base_offset, s.last_offset, s.log_bytes
                        ),
                    ));
                }
                Ok::<_, TierError>(Arc::new(meta))
            })
            .await
            .map_err(|e| TierError::from_cache(&e))?;
        Ok(entry.value().clone())
    }

    fn chunk_count(&self, seg: &RemoteSegment) -> u32 {
        seg.log_bytes.div_ceil(self.chunk_bytes) as u32
    }

    fn chunk_key(seg: &RemoteSegment, idx: u32) -> ChunkKey {
        ChunkKey { object: seg.key.clone(), chunk: idx }
    }

    /// Chunk `idx` of the segment's `.log` bytes.
    async fn chunk(&self, seg: &RemoteSegment, idx: u32) -> Result<Bytes> {
        let start = idx as u64 * self.chunk_bytes;
        let end = (start + self.chunk_bytes).min(seg.log_bytes);
        if start >= end {
            return Err(corrupt(seg, format!("chunk {idx} lies outside the {} log bytes", seg.log_bytes)));
        }
        let store = self.store.clone();
        let key = seg.key.clone();
        let permits = self.permits.clone();
        let stats = self.stats.clone();
        let rate = self.rate.clone();
        let missed = Arc::new(AtomicBool::new(false));
        let missed2 = missed.clone();
        let entry = self
            .chunks
            .get_or_fetch(&Self::chunk_key(seg, idx), move || async move {
                missed2.store(true, Ordering::Relaxed);
                stats.cache_miss();
                let _permit = permits.acquire_owned().await;
                if let Some(rate) = &rate {
                    ByteBucket::take(rate, end - start).await;
                }
                let path = object_store::path::Path::from(key.as_str());
                let b = store.get_range(&path, start..end).await.map_err(|e| TierError::store(&key, e))?;
                if b.len() as u64 != end - start {
                    return Err(TierError::corrupt(key, format!("ranged get of {}..{end} returned {} bytes", start, b.len())));
                }
                Ok::<_, TierError>(b)
            })
            .await
            .map_err(|e| TierError::from_cache(&e))?;
        if !missed.load(Ordering::Relaxed) {
            self.stats.cache_hit();
        }
        Ok(entry.value().clone())
    }

    /// Bytes `[start, end)` of the segment's `.log` part, from as many chunks as it spans (no
    /// copy when one chunk holds them).
    async fn read_range(&self, seg: &RemoteSegment, start: u64, end: u64) -> Result<Bytes> {
        if end > seg.log_bytes || start >= end {
            return Err(corrupt(seg, format!("read of {start}..{end} outside the {} log bytes", seg.log_bytes)));
        }
        let first = (start / self.chunk_bytes) as u32;
        let last = ((end - 1) / self.chunk_bytes) as u32;
        if first == last {
            let c = self.chunk(seg, first).await?;
            let base = first as u64 * self.chunk_bytes;
            return Ok(c.slice((start - base) as usize..(end - base) as usize));
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        for idx in first..=last {
            let c = self.chunk(seg, idx).await?;
            let base = idx as u64 * self.chunk_bytes;
            let from = start.saturating_sub(base) as usize;
            let to = ((end - base) as usize).min(c.len());
            out.extend_from_slice(&c[from..to]);
        }
        Ok(out.freeze())
    }

    /// Starts background fetches of the chunks after byte `end` of `seg` (and into `next`).
    fn read_ahead(self: &Arc<Self>, seg: &RemoteSegment, next: Option<&RemoteSegment>, end: u64) {
        if self.read_ahead == 0 {
            return;
        }
        let mut wanted: Vec<(RemoteSegment, u32)> = Vec::new();
        let from = end.div_ceil(self.chunk_bytes) as u32;
        let count = self.chunk_count(seg);
        for idx in from..count.min(from + self.read_ahead as u32) {
            wanted.push((seg.clone(), idx));
        }
        let left = self.read_ahead.saturating_sub(wanted.len());
        if left > 0
            && let Some(n) = next
        {
            for idx in 0..self.chunk_count(n).min(left as u32) {
                wanted.push((n.clone(), idx));
            }
            if !self.metas.contains(&n.key) {
                let this = self.clone();
                let n = n.clone();
                tokio::spawn(async move {
                    let _ = this.meta(&n).await;
                });
            }
        }
        for (s, idx) in wanted {
            if self.chunks.memory().contains(&Self::chunk_key(&s, idx)) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.chunk(&s, idx).await {
                    tracing::debug!(key = %s.key, chunk = idx, error = %e, "read-ahead failed");
                }
            });
        }
    }

    /// Whole batches of `seg` starting with the one holding `offset`: at most `max_bytes`,
    /// or the first batch alone when `min_one` and it is bigger. Empty if `offset` is past the
    /// segment. `next` is the following segment (for read-ahead).
    pub async fn read(self: &Arc<Self>, seg: &RemoteSegment, next: Option<&RemoteSegment>, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes> {
        let meta = self.meta(seg).await?;
        let f = meta.footer;
        if offset > f.last_offset {
            return Ok(Bytes::new());
        }
        let rel = offset.saturating_sub(f.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut pos = lookup_offset(&meta.offsets, rel).map_or(0, |e| e.position as u64);
        let first = loop {
            if pos + HEADER_LEN as u64 > f.log_len {
                return Err(corrupt(seg, format!("no batch holds offset {offset} (walked to position {pos})")));
            }
            let hb = self.read_range(seg, pos, pos + HEADER_LEN as u64).await?;
            let h = BatchHeader::parse(&hb).map_err(|e| corrupt(seg, format!("invalid batch at position {pos}: {e}")))?;
            if pos + h.total_len() as u64 > f.log_len || h.base_offset < f.base_offset || h.last_offset() > f.last_offset {
                return Err(corrupt(seg, format!("batch at position {pos} (offsets {}..={}) does not fit the segment", h.base_offset, h.last_offset())));
            }
            if h.last_offset() >= offset {
                break h;
            }
            pos += h.total_len() as u64;
        };
        let avail = f.log_len - pos;
        let mut want = (max_bytes as u64).min(avail);
        if want < first.total_len() as u64 {
            if !min_one {
                return Ok(Bytes::new());
            }
            want = first.total_len() as u64;
        }
        // Stop at the end of the chunk the first batch ends in: when that batch starts in the
        // same chunk, the answer is a slice of one cached chunk, sent without a copy; when it
        // straddles two, only those two are copied together. The consumer's next fetch starts
        // where this one stopped.
        let first_end = pos + first.total_len() as u64;
        let chunk_end = (first_end - 1) / self.chunk_bytes * self.chunk_bytes + self.chunk_bytes;
        if pos + want > chunk_end {
            want = chunk_end - pos;
        }
        let bytes = self.read_range(seg, pos, pos + want).await?;
        let mut cut = 0usize;
        let mut expected = first.base_offset;
        for (h, b) in BatchIter::new(&bytes) {
            if h.base_offset != expected {
                return Err(corrupt(seg, format!("batch at position {} has base offset {}, expected {expected}", pos + cut as u64, h.base_offset)));
            }
            verify_crc(b).map_err(|e| corrupt(seg, format!("batch at offset {}: {e}", h.base_offset)))?;
            expected = h.next_offset();
            cut += b.len();
        }
        if cut == 0 {
            return Err(corrupt(seg, format!("no whole batch at position {pos}")));
        }
        self.yield_to_produce(cut as u64).await;
        self.read_ahead(seg, next, pos + cut as u64);
        Ok(bytes.slice(..cut))
    }

    /// The first batch of `seg` at or above `min_offset` whose max timestamp is `>= ts`, found
    /// through the time index (ListOffsets by timestamp).
    pub async fn find_by_timestamp(&self, seg: &RemoteSegment, ts: i64, min_offset: i64) -> Result<Option<Bytes>> {
        let meta = self.meta(seg).await?;
        let f = meta.footer;
        if f.max_timestamp < ts || f.last_offset < min_offset {
            return Ok(None);
        }
        let from = lookup_time(&meta.times, ts).map_or(f.base_offset, |e| f.base_offset + e.relative_offset as i64).max(min_offset);
        let rel = (from - f.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut pos = lookup_offset(&meta.offsets, rel).map_or(0, |e| e.position as u64);
        while pos + HEADER_LEN as u64 <= f.log_len {
            let hb = self.read_range(seg, pos, pos + HEADER_LEN as u64).await?;
            let h = BatchHeader::parse(&hb).map_err(|e| corrupt(seg, format!("invalid batch at position {pos}: {e}")))?;
            let len = h.total_len() as u64;
            if pos + len > f.log_len {
                return Err(corrupt(seg, format!("batch at position {pos} extends past the log bytes")));
            }
            if h.max_timestamp >= ts && h.last_offset() >= min_offset {
                let b = self.read_range(seg, pos, pos + len).await?;
                verify_crc(&b).map_err(|e| corrupt(seg, format!("batch at offset {}: {e}", h.base_offset)))?;
                return Ok(Some(b));
            }
            pos += len;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod chunk_key_tests {
    use super::*;
    use foyer::Code;

    #[test]
    fn a_cache_key_round_trips_and_a_forged_length_is_an_error() {
        let k = ChunkKey { object: "topics/t/id/0/segments/00000000000000000000-1.seg".into(), chunk: 7 };
        let mut b = Vec::new();
        k.encode(&mut b).unwrap();
        assert_eq!(ChunkKey::read_from(&mut &b[..]).unwrap(), k);
        // a torn block claiming a 4 GiB key: refused before anything is allocated
        let mut forged = u32::MAX.to_be_bytes().to_vec();
        forged.extend_from_slice(&b[4..]);
        let e = ChunkKey::read_from(&mut &forged[..]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        // truncated, and not UTF-8
        assert!(ChunkKey::read_from(&mut &b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[4] = 0xff;
        assert!(ChunkKey::read_from(&mut &bad[..]).is_err());
    }
}
