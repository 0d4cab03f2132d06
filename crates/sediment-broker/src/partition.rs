//! A partition on this broker: its log, its high watermark and its group-commit flusher.
//!
//! Appends go to the page cache under a short lock. A flusher task per partition fsyncs whatever
//! was appended since its last pass (group commit: every producer whose batch landed before the
//! fsync started shares it), then advances the high watermark to the fsynced offset. Consumers
//! read only below the high watermark, so a crash never takes back a record anyone has seen, and
//! `acks=all` producers are answered once the high watermark passes their batch.
//!
//! **A slow disk stalls its partitions, not the broker.** Appends and reads run through
//! [`off_worker`], and so does a wait for a partition's lock that lasts
//! over [`LOCK_WAIT_ON_WORKER`] (its holder may be in one of them): the runtime hands this
//! worker's other tasks to a fresh thread first. Inline, one write that a stalled disk never
//! finishes is enough to stop the whole runtime, idle workers included: the worker that drives
//! the runtime's I/O and timers may be the blocked one, and the others sleep without taking
//! over (seen with a stalled path on a `sediment-lazyfs` disk). The hand-over costs about 10%
//! of produce throughput with 1 KiB batches at full rate, nothing measurable with 64 KiB
//! batches or on the consume side (`sediment bench`, old and new builds alternating).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sediment_log::{AppendInfo, LogConfig, LogError, PartitionLog, ReadPlan};
use sediment_protocol::batch::{BatchHeader, BatchIter};
use sediment_telemetry::{STORAGE_TARGET, TopicMetrics, TraceParent};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::producer_state::{BatchMeta, ProducerStateTable, Verdict};

/// An fsync slower than this is reported: the partition's disk is slow.
pub const SLOW_DISK: Duration = Duration::from_millis(500);

/// Runs `f`, which may block on the disk, without holding up the other tasks of this runtime
/// worker: on the multi-threaded runtime the worker's queue moves to another thread first
/// (`block_in_place`, about 1.5 µs); elsewhere (current-thread runtimes in tests, plain threads)
/// `f` just runs.
pub(crate) fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How long a wait for a partition's lock may hold a runtime worker before it moves off it.
const LOCK_WAIT_ON_WORKER: Duration = Duration::from_millis(2);

/// Where a read of a partition is served from.
pub enum ReadSource {
    /// The local log (already read).
    Local(Result<Bytes, LogError>),
    /// Tiered storage: the offset lies below the local log start, in a remote segment.
    Remote(futures::future::BoxFuture<'static, Result<Bytes, sediment_tier::TierError>>),
}

/// Appended bytes after which a producer-state snapshot is written even without a roll, so
/// that replay at start-up stays bounded.
const SNAPSHOT_EVERY_BYTES: u64 = 64 << 20;
const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// The log and the state derived from it, under one lock so that checking a producer's
/// sequence, appending and recording the batch are one atomic step.
pub struct Inner {
    pub log: PartitionLog,
    pub producers: ProducerStateTable,
    bytes_since_snapshot: u64,
    /// Active segment when the last snapshot was written: a roll triggers the next one.
    active_base_at_snapshot: i64,
    /// Replicated partitions: the Raft entry index over this log (`crate::replica`).
    pub(crate) raft: Option<crate::replica::RaftIndex>,
}

impl std::ops::Deref for Inner {
    type Target = PartitionLog;
    fn deref(&self) -> &PartitionLog {
        &self.log
    }
}

impl std::ops::DerefMut for Inner {
    fn deref_mut(&mut self) -> &mut PartitionLog {
        &mut self.log
    }
}

/// Result of an append that may have been a retried idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New(AppendInfo),
    /// Already in the log: the original batch's offsets.
    Duplicate(BatchMeta),
}

impl Appended {
    pub fn base_offset(&self) -> i64 {
        match self {
            Appended::New(i) => i.base_offset,
            Appended::Duplicate(m) => m.base_offset,
        }
    }
    pub fn last_offset(&self) -> i64 {
        match self {
            Appended::New(i) => i.last_offset,
            Appended::Duplicate(m) => m.last_offset,
        }
    }
}

/// Why an append was refused.
#[derive(Debug)]
pub enum AppendError {
    Log(LogError),
    Producer(sediment_protocol::ErrorCode, String),
}

/// Durability policy for the partition logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync with group commit; the high watermark is the fsynced offset (default).
    Always,
    /// Never fsync explicitly (like Kafka's default); the high watermark is the log end offset.
    /// For benchmarks and disposable environments: a machine crash can lose acknowledged data.
    Never,
}

/// Visible state published to waiters (acks=all producers, long-poll fetches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub high_watermark: i64,
    /// Set when an fsync failed: the partition refuses writes (KAFKA_STORAGE_ERROR).
    pub failed: bool,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: parking_lot::Mutex<Inner>,
    pub(crate) wm_tx: watch::Sender<Watermark>,
    flush_wanted: Arc<Notify>,
    /// An fsync took longer than [`SLOW_DISK`] and no quick one followed yet (for the log).
    slow_disk: AtomicBool,
    pub(crate) policy: FsyncPolicy,
    /// Kafka leader epoch: 0 on a single node; the Raft term of the current leader when
    /// replicated.
    leader_epoch: std::sync::atomic::AtomicI32,
    /// Set for a replicated partition once its Raft group runs (`crate::replica`).
    pub(crate) replica: OnceLock<Arc<crate::replica::Replica>>,
    /// Byte and record counters of the topic (bound handles shared by its partitions).
    pub metrics: TopicMetrics,
    /// Trace context of the first append since the last fsync started (only with tracing on):
    /// the fsync span joins that request's trace.
    flush_parent: Mutex<TraceParent>,
    /// The partition's remote side (tiered storage), set once when the broker has a bucket.
    remote: OnceLock<Arc<sediment_tier::RemoteLog>>,
    /// `remote.storage.enable` is on: local retention deletes only uploaded segments.
    tiered: AtomicBool,
    /// A replicated partition: the end offset of the entries applied (committed) here.
    committed_end: std::sync::atomic::AtomicI64,
}

/// Why a wait for the high watermark ended without reaching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    TimedOut,
    StorageFailed,
}

impl Partition {
    /// Opens (recovering) the partition log in `dir` and starts its flusher.
    pub fn open(topic: &str, index: i32, dir: std::path::PathBuf, config: LogConfig, policy: FsyncPolicy) -> Result<Arc<Partition>, LogError> {
        let log = PartitionLog::open(dir, config)?;
        let hw = match policy {
            FsyncPolicy::Always => log.flushed_offset(),
            FsyncPolicy::Never => log.log_end_offset(),
        };
        let p = Self::assemble(topic, index, log, None, policy, hw);
        if policy == FsyncPolicy::Always {
            tokio::spawn(flusher(Arc::downgrade(&p), p.flush_wanted.clone()));
        }
        Ok(p)
    }

    /// Opens a replicated partition: the log and its Raft entry index, made to agree after a
    /// crash. No flusher runs (Raft appends fsync themselves) and the high watermark starts
    /// at the log start: the Raft group raises it to the commit point once it applies.
    pub fn open_replicated(
        topic: &str,
        index: i32,
        dir: std::path::PathBuf,
        config: LogConfig,
        policy: FsyncPolicy,
    ) -> Result<Arc<Partition>, crate::replica::ReplicaOpenError> {
        let mut log = PartitionLog::open(&dir, config)?;
        let raft = crate::replica::RaftIndex::open(&dir, &mut log)?;
        let hw = log.log_start_offset();
        Ok(Self::assemble(topic, index, log, Some(raft), policy, hw))
    }

    fn assemble(topic: &str, index: i32, log: PartitionLog, raft: Option<crate::replica::RaftIndex>, policy: FsyncPolicy, hw: i64) -> Arc<Partition> {
        let producers = load_producer_state(&log, topic, index);
        let active_base_at_snapshot = log.active_base_offset();
        let log = Inner { log, producers, bytes_since_snapshot: 0, active_base_at_snapshot, raft };
        let (wm_tx, _) = watch::channel(Watermark { high_watermark: hw, failed: false });
        Arc::new(Partition {
            topic: topic.to_string(),
            index,
            log: parking_lot::Mutex::new(log),
            wm_tx,
            flush_wanted: Arc::new(Notify::new()),
            slow_disk: AtomicBool::new(false),
            policy,
            leader_epoch: std::sync::atomic::AtomicI32::new(0),
            replica: OnceLock::new(),
            metrics: sediment_telemetry::metrics().topic(topic),
            flush_parent: Mutex::new(TraceParent::default()),
            remote: OnceLock::new(),
            tiered: AtomicBool::new(false),
            committed_end: std::sync::atomic::AtomicI64::new(hw),
        })
    }

    /// Whether this replicated partition's group acknowledges appends to Raft before they are
    /// fsynced: a group of one with `fsync = always` (docs/design/0001). Its high watermark and
    /// acks=all answers then wait for the fsync instead of the Raft commit.
    pub(crate) fn acks_before_fsync(&self) -> bool {
        self.policy == FsyncPolicy::Always && self.replica().is_some_and(|r| r.alone())
    }

    /// Raises a replicated partition's high watermark: to the end of the entries applied
    /// (`committed`, when given, raises that first), held back to what is fsynced while the group
    /// acknowledges appends before their fsync.
    pub(crate) fn raise_hw(&self, committed: Option<i64>) {
        if let Some(c) = committed {
            self.committed_end.fetch_max(c, Ordering::AcqRel);
        }
        let mut hw = self.committed_end.load(Ordering::Acquire);
        if self.acks_before_fsync() {
            hw = hw.min(self.lock().log.flushed_offset());
        }
        self.wm_tx.send_if_modified(|w| {
            let raised = hw > w.high_watermark;
            if raised {
                w.high_watermark = hw;
            }
            raised
        });
    }

    pub(crate) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) for `requested`, as Kafka answers it. A
    /// single-node partition has one epoch, 0, spanning the whole log.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let inner = self.lock();
        let leo = inner.log.log_end_offset();
        match &inner.raft {
            Some(r) => crate::replica::end_offset_for(&r.epochs, requested, leo),
            None => crate::replica::end_offset_for(&[(0, inner.log.log_start_offset())], requested, leo),
        }
    }

    /// The partition's Raft group, when replicated.
    pub fn replica(&self) -> Option<&Arc<crate::replica::Replica>> {
        self.replica.get()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        // Critical sections are short: a parked wait of a few milliseconds takes the lock in
        // the common case. Longer, the holder may be in a write a stalled disk keeps waiting:
        // the wait goes on off the worker. (parking_lot has no poisoning: a panic while holding
        // the lock leaves the log as its last completed call left it, and every log method
        // keeps its own invariants per call.)
        match self.log.try_lock_for(LOCK_WAIT_ON_WORKER) {
            Some(guard) => guard,
            None => off_worker(|| self.log.lock()),
        }
    }

    /// Awaits an fsync running on the blocking pool, and says so in the log when the disk turns
    /// slow (an fsync over [`SLOW_DISK`]) and when it recovers.
    pub(crate) async fn timed_fsync<T>(&self, mut fsync: tokio::task::JoinHandle<T>) -> Result<T, tokio::task::JoinError> {
        let started = Instant::now();
        let res = match tokio::time::timeout(SLOW_DISK, &mut fsync).await {
            Ok(res) => res,
            Err(_) => {
                if !self.slow_disk.swap(true, Ordering::Relaxed) {
                    tracing::warn!(topic = %self.topic, partition = self.index, "fsync has taken over {} ms: the partition's disk is slow", SLOW_DISK.as_millis());
                }
                fsync.await
            }
        };
        if started.elapsed() < SLOW_DISK && self.slow_disk.swap(false, Ordering::Relaxed) {
            tracing::info!(topic = %self.topic, partition = self.index, "fsync is quick again: the partition's disk recovered");
        }
        res
    }

    pub fn watermark(&self) -> Watermark {
        *self.wm_tx.borrow()
    }

    pub fn high_watermark(&self) -> i64 {
        self.watermark().high_watermark
    }

    pub fn subscribe(&self) -> watch::Receiver<Watermark> {
        self.wm_tx.subscribe()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset()
    }

    /// (log start, high watermark, log end) read consistently.
    pub fn offsets(&self) -> (i64, i64, i64) {
        let log = self.lock();
        (log.log_start_offset(), self.high_watermark(), log.log_end_offset())
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.lock().set_config(config);
    }

    /// Appends one validated batch (header already parsed), applying the idempotent producer
    /// rules; the flusher is told there is work. A retried batch is answered with its original
    /// offsets and not appended again.
    pub fn append(&self, header: &BatchHeader, batch: &mut [u8], now_ms: i64) -> Result<Appended, AppendError> {
        let appended = off_worker(|| {
            let mut inner = self.lock();
            match inner.producers.check(header) {
                Verdict::Append => {}
                Verdict::Duplicate(meta) => return Ok(Appended::Duplicate(meta)),
                Verdict::Reject(code, msg) => return Err(AppendError::Producer(code, msg)),
            }
            let info = inner.log.append(batch, self.leader_epoch(), now_ms).map_err(AppendError::Log)?;
            if header.has_producer_id() {
                let mut assigned = *header;
                assigned.base_offset = info.base_offset;
                inner.producers.record(&assigned, now_ms);
            }
            self.after_append(&mut inner, batch.len());
            if self.policy == FsyncPolicy::Never {
                let leo = inner.log.log_end_offset();
                self.wm_tx.send_modify(|w| w.high_watermark = leo);
            }
            Ok(Appended::New(info))
        })?;
        if matches!(appended, Appended::New(_)) && self.policy == FsyncPolicy::Always {
            self.trace_next_fsync();
            self.flush_wanted.notify_one();
        }
        Ok(appended)
    }

    /// Makes the next fsync of this partition a span in the current request's trace (when
    /// traces are exported): the first sampled request since the last fsync adopts it.
    pub(crate) fn trace_next_fsync(&self) {
        if sediment_telemetry::traces_enabled() {
            let mut parent = self.flush_parent.lock().unwrap_or_else(|e| e.into_inner());
            if parent.is_empty() {
                *parent = TraceParent::current();
            }
        }
    }

    /// The span of one group-commit fsync up to `offset`: with traces exported, a child of the
    /// request that asked for it first ([`trace_next_fsync`](Self::trace_next_fsync)), or none.
    pub(crate) fn fsync_span(&self, offset: i64) -> tracing::Span {
        let span = || tracing::info_span!(target: STORAGE_TARGET, "log.fsync", topic = %self.topic, partition = self.index, offset);
        if !sediment_telemetry::traces_enabled() {
            return span();
        }
        let parent = std::mem::take(&mut *self.flush_parent.lock().unwrap_or_else(|e| e.into_inner()));
        if parent.is_empty() {
            return tracing::Span::none();
        }
        let s = span();
        parent.adopt(&s);
        s
    }

    /// Bookkeeping after a batch of `len` bytes was appended: producer-state snapshots (on a
    /// roll or every [`SNAPSHOT_EVERY_BYTES`]) and waking the uploader when a segment sealed.
    pub(crate) fn after_append(&self, inner: &mut Inner, len: usize) {
        inner.bytes_since_snapshot += len as u64;
        // Compared by active segment, not by segment count: retention also changes the count,
        // and building the segment list here would allocate on every append.
        let active_base = inner.log.active_base_offset();
        let rolled = active_base != inner.active_base_at_snapshot;
        if rolled || inner.bytes_since_snapshot >= SNAPSHOT_EVERY_BYTES {
            if rolled && let Some(r) = self.remote.get() {
                r.notify(); // a segment was sealed: the uploader has work
            }
            inner.active_base_at_snapshot = active_base;
            inner.bytes_since_snapshot = 0;
            write_producer_snapshot(inner, &self.topic, self.index);
        }
    }

    /// Rebuilds the producer state from the log (after a Raft truncation took batches back).
    pub(crate) fn reload_producers(&self, inner: &mut Inner) {
        inner.producers = load_producer_state(&inner.log, &self.topic, self.index);
    }

    /// Forgets producers idle longer than `max_age_ms`.
    pub fn expire_producers(&self, now_ms: i64, max_age_ms: i64) -> usize {
        self.lock().producers.expire(now_ms, max_age_ms)
    }

    /// Number of producers with state on this partition.
    pub fn producer_count(&self) -> usize {
        self.lock().producers.len()
    }

    /// Waits until the high watermark reaches `offset` (exclusive end) or the deadline passes.
    pub async fn wait_for_hw(&self, offset: i64, deadline: Instant) -> Result<(), WaitError> {
        let mut rx = self.subscribe();
        loop {
            let wm = *rx.borrow_and_update();
            if wm.failed {
                return Err(WaitError::StorageFailed);
            }
            if wm.high_watermark >= offset {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(WaitError::StorageFailed),
                Err(_) => return Err(WaitError::TimedOut),
            }
        }
    }

    /// Plans and executes a read of whole batches below the high watermark. An offset between
    /// the high watermark and the log end gives empty records, as in Kafka.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes, LogError> {
        let plan: ReadPlan = {
            let log = self.lock();
            let hw = self.high_watermark();
            if offset >= hw && offset <= log.log_end_offset() && offset >= log.log_start_offset() {
                return Ok(Bytes::new());
            }
            log.read(offset, max_bytes, hw, min_one)?
        };
        if plan.is_empty() {
            return Ok(Bytes::new());
        }
        off_worker(|| plan.execute())
    }

    // ----- tiered storage -----

    /// Attaches the partition's remote side and starts its uploader (once).
    pub fn attach_remote(self: &Arc<Self>, remote: Arc<sediment_tier::RemoteLog>) {
        if self.remote.set(remote.clone()).is_ok() {
            let me: Arc<dyn sediment_tier::LocalLog> = self.clone();
            remote.start(Arc::downgrade(&me));
        }
    }

    pub fn remote(&self) -> Option<&Arc<sediment_tier::RemoteLog>> {
        self.remote.get()
    }

    /// Turns upload-fenced local retention on or off (`remote.storage.enable`).
    pub fn set_tiered(&self, on: bool) {
        self.tiered.store(on, Ordering::Release);
    }

    /// Segments are uploaded and local retention waits for them.
    pub fn is_tiered(&self) -> bool {
        self.tiered.load(Ordering::Acquire) && self.remote.get().is_some()
    }

    /// First offset of the whole log, remote segments included (ListOffsets EARLIEST, the log
    /// start offset in Fetch responses). [`log_start_offset`](Self::log_start_offset) is the
    /// local one (EARLIEST_LOCAL).
    pub fn log_start_offset_all(&self) -> i64 {
        let local = self.log_start_offset();
        match self.remote.get().and_then(|r| r.log_start_offset()) {
            Some(remote) => remote.min(local),
            None => local,
        }
    }

    /// (log start including remote segments, high watermark, log end).
    pub fn offsets_all(&self) -> (i64, i64, i64) {
        let (local, hw, leo) = self.offsets();
        match self.remote.get().and_then(|r| r.log_start_offset()) {
            Some(remote) => (remote.min(local), hw, leo),
            None => (local, hw, leo),
        }
    }

    /// Reads whole batches from the local log, or, below the local log start, from the remote
    /// segment holding `offset` (a future: the caller awaits it outside any lock).
    pub fn read_tiered(&self, offset: i64, max_bytes: usize, min_one: bool) -> ReadSource {
        let Some(remote) = self.remote.get() else {
            return ReadSource::Local(self.read(offset, max_bytes, min_one));
        };
        if offset >= self.log_start_offset() {
            match self.read(offset, max_bytes, min_one) {
                // local retention moved the start past `offset` meanwhile: the bucket has it
                Err(LogError::OffsetOutOfRange { .. }) if offset < self.log_start_offset() && remote.covers(offset) => {}
                other => return ReadSource::Local(other),
            }
        }
        if remote.covers(offset) {
            let r = remote.clone();
            return ReadSource::Remote(Box::pin(async move { r.read(offset, max_bytes, min_one).await }));
        }
        ReadSource::Local(self.read(offset, max_bytes, min_one))
    }

    /// `true` when a read at `offset` goes to the bucket.
    pub fn reads_remote(&self, offset: i64) -> bool {
        self.remote.get().is_some_and(|r| offset < self.log_start_offset() && r.covers(offset))
    }

    /// Local retention: the log's own retention settings (the local ones when tiered), fenced at
    /// the uploaded end while tiered so that a segment not in the bucket is never deleted.
    pub fn apply_local_retention(&self, now_ms: i64) -> Result<sediment_log::RetentionOutcome, LogError> {
        let fence = self.retention_fence();
        let out = {
            let mut inner = self.lock();
            // replicated: only what the Raft log released (see `Replica::after_retention`)
            let fence = match inner.raft.as_ref() {
                Some(r) => fence.min(r.released_offset(inner.log.log_end_offset())),
                None => fence,
            };
            inner.log.apply_retention_below(now_ms, fence)?
        };
        if out.segments_deleted > 0 {
            self.clamp_hw();
        }
        Ok(out)
    }

    /// Tiered partitions keep what is not in the bucket yet.
    fn retention_fence(&self) -> i64 {
        match self.remote.get() {
            Some(r) if self.is_tiered() => r.uploaded_end(),
            _ => i64::MAX,
        }
    }

    /// A replicated partition: where retention wants its log to start beyond what the Raft log
    /// released, if anywhere (see `Replica::after_retention`).
    pub fn retention_wanted(&self, now_ms: i64) -> Option<i64> {
        let fence = self.retention_fence();
        let inner = self.lock();
        let released = inner.raft.as_ref()?.released_offset(inner.log.log_end_offset());
        let target = inner.log.retention_plan(now_ms, fence).ok().flatten()?;
        (target > released).then_some(target)
    }

    /// Runs `f` with the log locked (admin paths: timestamp search, retention, delete records).
    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        f(&mut self.lock())
    }

    /// Flushes everything now (shutdown) and publishes the high watermark.
    pub fn flush_now(&self) -> Result<(), LogError> {
        let mut log = self.lock();
        log.flush()?;
        write_producer_snapshot(&log, &self.topic, self.index);
        let hw = match self.policy {
            FsyncPolicy::Always => log.flushed_offset(),
            FsyncPolicy::Never => log.log_end_offset(),
        };
        self.wm_tx.send_modify(|w| w.high_watermark = hw);
        Ok(())
    }

    /// Final flush at shutdown: producer snapshot, indexes and the clean-shutdown marker, so
    /// the next start skips the CRC scan. The log refuses writes afterwards.
    pub fn shut_down(&self) -> Result<(), LogError> {
        self.flush_now()?;
        self.lock().log.shut_down()
    }

    /// Raises the high watermark consistently after truncation or retention (it never exceeds the log end).
    pub fn clamp_hw(&self) {
        let log = self.lock();
        let leo = log.log_end_offset();
        let start = log.log_start_offset();
        self.wm_tx.send_modify(|w| w.high_watermark = w.high_watermark.min(leo).max(start));
    }

    /// Wakes the flusher so it notices the partition was dropped.
    pub fn shutdown(&self) {
        self.flush_wanted.notify_one();
    }
}

/// Group commit loop. Holds only a weak reference so a deleted partition's flusher ends.
async fn flusher(weak: std::sync::Weak<Partition>, wanted: Arc<Notify>) {
    loop {
        // notify_one stores a permit when nobody waits, so no wake-up is lost between passes.
        wanted.notified().await;
        loop {
            let Some(p) = weak.upgrade() else { return };
            let job = p.lock().begin_flush();
            let Some(job) = job else { break };
            let span = p.fsync_span(job.target_offset());
            let started = Instant::now();
            let res = p.timed_fsync(tokio::task::spawn_blocking(move || job.run())).instrument(span).await;
            match res {
                Ok(Ok(done)) => {
                    sediment_telemetry::metrics().fsync(started.elapsed());
                    let hw = {
                        let mut log = p.lock();
                        log.complete_flush(done);
                        log.flushed_offset()
                    };
                    p.wm_tx.send_modify(|w| w.high_watermark = w.high_watermark.max(hw));
                    tracing::trace!(topic = %p.topic, partition = p.index, hw, fsync_us = started.elapsed().as_micros() as u64, "flushed");
                }
                Ok(Err(e)) => {
                    sediment_telemetry::metrics().fsync_failed();
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed; partition refuses writes until restart");
                    p.wm_tx.send_modify(|w| w.failed = true);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "flush task panicked");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn snapshot_path(dir: &std::path::Path, offset: i64) -> std::path::PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// Snapshot files in the partition dir, by offset, ascending.
fn list_snapshots(dir: &std::path::Path) -> Vec<(i64, std::path::PathBuf)> {
    let mut v: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let off = name.strip_suffix(SNAPSHOT_SUFFIX)?.parse::<i64>().ok()?;
            Some((off, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Writes the producer state as of the log end offset (temp file + rename) and keeps the two
/// newest snapshots. Failure is logged, not fatal: state can always be rebuilt from the log.
fn write_producer_snapshot(inner: &Inner, topic: &str, partition: i32) {
    let dir = inner.log.dir().to_path_buf();
    let offset = inner.log.log_end_offset();
    let path = snapshot_path(&dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    let res = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&inner.producers.encode())?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::warn!(topic, partition, error = %e, "cannot write producer state snapshot");
        return;
    }
    let snaps = list_snapshots(&dir);
    if snaps.len() > 2 {
        for (_, p) in &snaps[..snaps.len() - 2] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Producer state at open: the newest snapshot not beyond the recovered log end (a snapshot
/// past it describes batches a crash took back), then the batch headers after it.
fn load_producer_state(log: &PartitionLog, topic: &str, partition: i32) -> ProducerStateTable {
    let leo = log.log_end_offset();
    let mut table = ProducerStateTable::default();
    let mut from = log.log_start_offset();
    for (off, path) in list_snapshots(log.dir()).into_iter().rev() {
        if off > leo {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| ProducerStateTable::decode(&b)) {
            Ok(t) => {
                table = t;
                from = off.max(log.log_start_offset());
                break;
            }
            Err(e) => tracing::warn!(topic, partition, snapshot = %path.display(), error = %e, "ignoring unreadable producer state snapshot"),
        }
    }
    let mut offset = from;
    let mut replayed = 0u64;
    while offset < leo {
        let bytes = match log.read_retained(offset, 16 << 20, leo, true).and_then(|p| p.execute()) {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(topic, partition, offset, error = %e, "producer state replay stopped early");
                break;
            }
        };
        let mut next = offset;
        for (h, _) in BatchIter::new(&bytes) {
            if h.next_offset() <= offset {
                continue;
            }
            table.record(&h, h.max_timestamp.max(0));
            next = h.next_offset();
            replayed += 1;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    if replayed > 0 || !table.is_empty() {
        tracing::info!(topic, partition, producers = table.len(), replayed_batches = replayed, from, "producer state loaded");
    }
    table
}

/// How long the leader waits for its partition group to commit a remote segment change.
const REMOTE_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl sediment_tier::LocalLog for Partition {
    fn segments(&self) -> (Vec<sediment_log::SegmentInfo>, i64) {
        let log = self.lock();
        (log.segments(), self.high_watermark())
    }

    fn leader_epoch(&self) -> Option<i32> {
        match self.replica.get() {
            // replicated: only the current leader uploads, fenced by its epoch
            Some(r) => r.leader_epoch(),
            // single node: this broker leads every partition it hosts
            None => Some(self.leader_epoch()),
        }
    }

    fn replicate(&self, op: sediment_tier::ManifestOp) -> Option<futures::future::BoxFuture<'static, Result<(), String>>> {
        let replica = self.replica.get()?.clone();
        Some(Box::pin(async move {
            // a group that lost its quorum must not hold the uploader forever
            match tokio::time::timeout(REMOTE_COMMIT_TIMEOUT, replica.commit_remote(op)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("not committed within {}s", REMOTE_COMMIT_TIMEOUT.as_secs())),
            }
        }))
    }

    fn uploaded(&self, _uploaded_end: i64) {
        if !self.is_tiered() {
            return;
        }
        // local.retention.* may now let the uploaded segments go
        let now = sediment_log::clock::now_ms();
        match self.apply_local_retention(now) {
            Ok(out) if out.segments_deleted > 0 => {
                tracing::debug!(topic = %self.topic, partition = self.index, segments = out.segments_deleted, bytes = out.bytes_deleted, "local retention after upload");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "local retention after upload failed"),
        }
        // replicated: the Raft log lets go of those entries first, then they are deleted (not
        // only at the next retention pass, minutes away)
        if let (Some(r), Some(target)) = (self.replica.get().cloned(), self.retention_wanted(now)) {
            tokio::spawn(async move { r.release_for_retention(target).await });
        }
    }
}
