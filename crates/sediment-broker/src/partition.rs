//! A partition on this broker: its log, its high watermark and its group-commit flusher.
//!
//! Appends go to the page cache under a short lock. A flusher task per partition fsyncs whatever
//! was appended since its last pass (group commit: every producer whose batch landed before the
//! fsync started shares it), then advances the high watermark to the fsynced offset. Consumers
//! read only below the high watermark, so a crash never takes back a record anyone has seen, and
//! `acks=all` producers are answered once the high watermark passes their batch.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sediment_log::{AppendInfo, LogConfig, LogError, PartitionLog, ReadPlan};
use tokio::sync::{Notify, watch};

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
    log: Mutex<PartitionLog>,
    wm_tx: watch::Sender<Watermark>,
    flush_wanted: Arc<Notify>,
    policy: FsyncPolicy,
    leader_epoch: i32,
}

/// Why a wait for the high watermark ended without reaching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    TimedOut,
    StorageFailed,
}

impl Partition {
    /// Opens (recovering) the partition log in `dir` and starts its flusher.
    pub fn open(
        topic: &str,
        index: i32,
        dir: std::path::PathBuf,
        config: LogConfig,
        policy: FsyncPolicy,
    ) -> Result<Arc<Partition>, LogError> {
        let log = PartitionLog::open(dir, config)?;
        let hw = match policy {
            FsyncPolicy::Always => log.flushed_offset(),
            FsyncPolicy::Never => log.log_end_offset(),
        };
        let (wm_tx, _) = watch::channel(Watermark { high_watermark: hw, failed: false });
        let p = Arc::new(Partition {
            topic: topic.to_string(),
            index,
            log: Mutex::new(log),
            wm_tx,
            flush_wanted: Arc::new(Notify::new()),
            policy,
            leader_epoch: 0,
        });
        if policy == FsyncPolicy::Always {
            tokio::spawn(flusher(Arc::downgrade(&p), p.flush_wanted.clone()));
        }
        Ok(p)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        // A panic while holding the lock would leave the log in an unknown state; recover the
        // guard anyway because every log method keeps its own invariants per call.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Appends one validated batch; the flusher is told there is work.
    pub fn append(&self, batch: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let info = {
            let mut log = self.lock();
            let info = log.append(batch, self.leader_epoch, now_ms)?;
            if self.policy == FsyncPolicy::Never {
                let leo = log.log_end_offset();
                self.wm_tx.send_modify(|w| w.high_watermark = leo);
            }
            info
        };
        if self.policy == FsyncPolicy::Always {
            self.flush_wanted.notify_one();
        }
        Ok(info)
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
        plan.execute()
    }

    /// Runs `f` with the log locked (admin paths: timestamp search, retention, delete records).
    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        f(&mut self.lock())
    }

    /// Flushes everything now (shutdown) and publishes the high watermark.
    pub fn flush_now(&self) -> Result<(), LogError> {
        let mut log = self.lock();
        log.flush()?;
        let hw = match self.policy {
            FsyncPolicy::Always => log.flushed_offset(),
            FsyncPolicy::Never => log.log_end_offset(),
        };
        self.wm_tx.send_modify(|w| w.high_watermark = hw);
        Ok(())
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
            let started = Instant::now();
            let res = tokio::task::spawn_blocking(move || job.run()).await;
            match res {
                Ok(Ok(done)) => {
                    let hw = {
                        let mut log = p.lock();
                        log.complete_flush(done);
                        log.flushed_offset()
                    };
                    p.wm_tx.send_modify(|w| w.high_watermark = w.high_watermark.max(hw));
                    tracing::trace!(topic = %p.topic, partition = p.index, hw, fsync_us = started.elapsed().as_micros() as u64, "flushed");
                }
                Ok(Err(e)) => {
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
