//! Counters of the tier, kept as plain atomics (cheap, readable by tests and benchmarks) and
//! forwarded to an optional [`MetricsSink`] that the binary points at its telemetry exporter.
//! The tier itself never depends on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Kinds of object store requests, as the metrics decorator counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Get,
    GetRange,
    Put,
    PutPart,
    Delete,
    List,
    Head,
    Copy,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [OpKind::Get, OpKind::GetRange, OpKind::Put, OpKind::PutPart, OpKind::Delete, OpKind::List, OpKind::Head, OpKind::Copy];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::GetRange => "get_range",
            OpKind::Put => "put",
            OpKind::PutPart => "put_part",
            OpKind::Delete => "delete",
            OpKind::List => "list",
            OpKind::Head => "head",
            OpKind::Copy => "copy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the tier reports what it does. Every method has an empty default, so a sink implements
/// only what its exporter has instruments for.
pub trait MetricsSink: Send + Sync + 'static {
    /// One object store request finished (`ok` false when it failed, before any retry).
    fn request(&self, _op: OpKind, _bytes: u64, _elapsed: Duration, _ok: bool) {}
    /// A cold read found its chunk in the cache (memory or disk).
    fn cache_hit(&self) {}
    /// A cold read fetched its chunk from the bucket.
    fn cache_miss(&self) {}
    /// A cold read waited this long for the under-load budget.
    fn cold_read_throttled(&self, _waited: Duration) {}
    /// A segment object of `bytes` bytes was uploaded and committed.
    fn uploaded(&self, _bytes: u64) {}
    /// Total upload lag across the partitions this node leads.
    fn upload_lag(&self, _bytes: u64, _segments: u64) {}
    /// Total bytes of remote segments across the partitions this node leads.
    fn remote_bytes(&self, _bytes: u64) {}
}

/// A sink that drops everything.
pub struct NoopSink;
impl MetricsSink for NoopSink {}

/// The tier's own counters. One per [`crate::Tier`]; decorators and the reader share it.
#[derive(Default)]
pub struct TierStats {
    requests: [AtomicU64; 8],
    request_errors: [AtomicU64; 8],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    request_micros: [AtomicU64; 8],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    uploaded_segments: AtomicU64,
    uploaded_bytes: AtomicU64,
    retries: AtomicU64,
    throttled_micros: AtomicU64,
    sink: Option<std::sync::Arc<dyn MetricsSink>>,
}

impl std::fmt::Debug for TierStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierStats").field("snapshot", &self.snapshot()).finish()
    }
}

/// A point-in-time copy of [`TierStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Requests by kind (`OpKind::as_str`), failed attempts included.
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    pub request_errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub uploaded_segments: u64,
    pub uploaded_bytes: u64,
    pub retries: u64,
    /// Time cold reads waited for the under-load budget, in microseconds.
    pub throttled_micros: u64,
}

impl StatsSnapshot {
    pub fn requests_of(&self, op: OpKind) -> u64 {
        self.requests.get(op.as_str()).copied().unwrap_or(0)
    }

    /// PUT-class requests (single PUTs and multipart parts).
    pub fn puts(&self) -> u64 {
        self.requests_of(OpKind::Put) + self.requests_of(OpKind::PutPart)
    }

    /// GET-class requests (whole and ranged).
    pub fn gets(&self) -> u64 {
        self.requests_of(OpKind::Get) + self.requests_of(OpKind::GetRange)
    }
}

impl TierStats {
    pub fn with_sink(sink: std::sync::Arc<dyn MetricsSink>) -> TierStats {
        TierStats { sink: Some(sink), ..TierStats::default() }
    }

    pub(crate) fn request(&self, op: OpKind, read: u64, written: u64, elapsed: Duration, ok: bool) {
        let i = op.index();
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        self.request_micros[i].fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.request_errors[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        if let Some(s) = &self.sink {
            s.request(op, read + written, elapsed, ok);
        }
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &self.sink {
            s.cache_hit();
        }
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &self.sink {
            s.cache_miss();
        }
    }

    pub(crate) fn throttled(&self, waited: Duration) {
        self.throttled_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        if let Some(s) = &self.sink {
            s.cold_read_throttled(waited);
        }
    }

    pub(crate) fn uploaded(&self, bytes: u64) {
        self.uploaded_segments.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(s) = &self.sink {
            s.uploaded(bytes);
        }
    }

    pub(crate) fn sink(&self) -> Option<&std::sync::Arc<dyn MetricsSink>> {
        self.sink.as_ref()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: OpKind::ALL.iter().map(|op| (op.as_str(), load(&self.requests[op.index()]))).collect(),
            request_errors: self.request_errors.iter().map(load).sum(),
            bytes_read: load(&self.bytes_read),
            bytes_written: load(&self.bytes_written),
            cache_hits: load(&self.cache_hits),
            cache_misses: load(&self.cache_misses),
            uploaded_segments: load(&self.uploaded_segments),
            uploaded_bytes: load(&self.uploaded_bytes),
            retries: load(&self.retries),
            throttled_micros: load(&self.throttled_micros),
        }
    }

    /// Mean latency of successful and failed requests of one kind, if any ran.
    pub fn mean_latency(&self, op: OpKind) -> Option<Duration> {
        let n = self.requests[op.index()].load(Ordering::Relaxed);
        (n > 0).then(|| Duration::from_micros(self.request_micros[op.index()].load(Ordering::Relaxed) / n))
    }
}
