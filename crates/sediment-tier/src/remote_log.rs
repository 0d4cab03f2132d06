//! [`RemoteLog`]: one partition's remote side — its manifest, its uploader task, its reads
//! and its retention.
//!
//! ```text
//!  PartitionLog (broker)            RemoteLog                              bucket
//!  sealed segments ≤ HW ──▶ uploader: upload_segment (deterministic key) ──▶ segments/…seg
//!                                   commit Add ─▶ remote-manifest.json (fsync)
//!                                   mirror ─────────────────────────────▶ manifest/roots, chunks
//!  local retention ◀── uploaded_end (fence: only uploaded segments are deleted locally)
//!  Fetch < local start ──▶ read ──▶ ChunkCache (foyer) ◀──── ranged GET ── segments/…seg
//!                          retention: RaiseLogStart ─▶ manifest ─▶ delete objects
//! ```
//!
//! Only the leader uploads: the uploader asks the [`LocalLog`] for its leader epoch before each
//! upload and commit, and stops while it has none. The manifest is changed only by
//! [`ManifestOp`]s committed in order under one lock, so replication can later commit the same
//! ops through Raft and hand the uploader to a new leader.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use sediment_log::SegmentInfo;
use tokio::sync::Notify;

use crate::Tier;
use crate::error::{ErrorKind, Result, TierError};
use crate::manifest::{self, Applied, Manifest, ManifestFile, ManifestOp};
use crate::paths::PartitionRef;
use crate::retention::{RetentionPolicy, remote_log_start_after_retention};
use crate::segment_object::upload_segment;

/// What the tier needs from the local partition log (implemented by the broker's partition).
pub trait LocalLog: Send + Sync + 'static {
    /// Every segment, oldest first (the last is the active one), and the high watermark.
    fn segments(&self) -> (Vec<SegmentInfo>, i64);
    /// `Some(epoch)` while this node leads the partition; uploads stop while it is `None`.
    fn leader_epoch(&self) -> Option<i32>;
    /// Called (on a blocking thread) after an upload was committed: everything below
    /// `uploaded_end` is in the bucket, so local retention may delete it.
    fn uploaded(&self, _uploaded_end: i64) {}
    /// A replicated partition commits manifest ops through its Raft log: this proposes `op`
    /// and resolves once it is committed and applied here (every replica applies it with
    /// [`RemoteLog::apply_replicated`]); an error means it was not committed (this broker no
    /// longer leads). `None`: a single node commits the op to its local manifest file itself.
    fn replicate(&self, _op: ManifestOp) -> Option<BoxFuture<'static, std::result::Result<(), String>>> {
        None
    }
}

/// Per-topic settings of a partition's remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePolicy {
    /// `remote.storage.enable`: upload sealed segments.
    pub upload: bool,
    /// `retention.ms` / `retention.bytes` of the whole log.
    pub retention: RetentionPolicy,
}

impl Default for RemotePolicy {
    fn default() -> Self {
        RemotePolicy { upload: true, retention: RetentionPolicy { retention_ms: -1, retention_bytes: -1 } }
    }
}

pub struct RemoteLog {
    tier: Arc<Tier>,
    pref: PartitionRef,
    dir: PathBuf,
    /// The committed state (what readers and local retention see).
    state: Mutex<ManifestFile>,
    /// Serializes commits and bucket syncs.
    commit: tokio::sync::Mutex<()>,
    policy: Mutex<RemotePolicy>,
    wake: Notify,
    closed: AtomicBool,
    /// No local manifest was found: rebuild it from the bucket before uploading.
    needs_recovery: AtomicBool,
    lag_bytes: AtomicU64,
    lag_segments: AtomicU64,
    failures: AtomicU64,
    started: AtomicBool,
}

impl std::fmt::Debug for RemoteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLog").field("partition", &self.pref).finish()
    }
}

/// Snapshot of a partition's remote state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    pub log_start_offset: Option<i64>,
    pub end_offset: Option<i64>,
    pub uploaded_end: i64,
    pub segments: usize,
    pub remote_bytes: u64,
    pub lag_bytes: u64,
    pub lag_segments: u64,
    pub manifest_version: u64,
    pub mirrored_version: u64,
}

impl RemoteLog {
    /// Opens the partition's remote side from its local manifest (`dir` is the partition
    /// directory). Without one, the uploader first rebuilds the manifest from the bucket, unless
    /// the partition is `fresh` (just created: the bucket cannot hold anything of it).
    pub(crate) fn open(tier: Arc<Tier>, pref: PartitionRef, dir: PathBuf, fresh: bool) -> Result<Arc<RemoteLog>> {
        let (file, recover) = match ManifestFile::load(&dir)? {
            Some(f) => (f, false),
            None if fresh => {
                let f = ManifestFile::default();
                f.store(&dir)?;
                (f, false)
            }
            None => (ManifestFile::default(), true),
        };
        Ok(Arc::new(RemoteLog {
            tier,
            pref,
            dir,
            state: Mutex::new(file),
            commit: tokio::sync::Mutex::new(()),
            policy: Mutex::new(RemotePolicy::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            needs_recovery: AtomicBool::new(recover),
            lag_bytes: AtomicU64::new(0),
            lag_segments: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }))
    }

    pub fn partition(&self) -> &PartitionRef {
        &self.pref
    }

    fn manifest(&self) -> std::sync::MutexGuard<'_, ManifestFile> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the uploader (once). It holds only weak references: it ends when the partition or
    /// this remote log is dropped, or at [`close`](Self::close).
    pub fn start(self: &Arc<Self>, local: Weak<dyn LocalLog>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(uploader(Arc::downgrade(self), local));
    }

    /// Stops the uploader (topic deleted, shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Tells the uploader a segment may have been sealed.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    pub fn set_policy(&self, p: RemotePolicy) {
        let changed = {
            let mut cur = self.policy.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *cur != p;
            *cur = p;
            changed
        };
        if changed {
            self.wake.notify_one();
        }
    }

    pub fn policy(&self) -> RemotePolicy {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First offset readable from the bucket (`None` when it holds nothing).
    pub fn log_start_offset(&self) -> Option<i64> {
        self.manifest().manifest.log_start_offset()
    }

    /// One past the last uploaded offset: local segments ending at or below it may be deleted.
    pub fn uploaded_end(&self) -> i64 {
        if self.needs_recovery.load(Ordering::Acquire) {
            return 0;
        }
        self.manifest().manifest.uploaded_end
    }

    /// ListOffsets LATEST_TIERED: the last offset in the bucket, -1 if none.
    pub fn latest_tiered_offset(&self) -> i64 {
        self.manifest().manifest.end_offset().map_or(-1, |e| e - 1)
    }

    /// `true` if `offset` lies in a remote segment.
    pub fn covers(&self, offset: i64) -> bool {
        self.manifest().manifest.find(offset).is_some()
    }

    pub fn status(&self) -> RemoteStatus {
        let f = self.manifest();
        let m = &f.manifest;
        RemoteStatus {
            log_start_offset: m.log_start_offset(),
            end_offset: m.end_offset(),
            uploaded_end: m.uploaded_end,
            segments: m.segments.len(),
            remote_bytes: m.total_bytes(),
            lag_bytes: self.lag_bytes.load(Ordering::Relaxed),
            lag_segments: self.lag_segments.load(Ordering::Relaxed),
            manifest_version: m.version,
            mirrored_version: f.mirror.root_version,
        }
    }

    /// A copy of the committed manifest.
    pub fn manifest_snapshot(&self) -> Manifest {
        self.manifest().manifest.clone()
    }

    fn out_of_range(&self, offset: i64) -> TierError {
        let f = self.manifest();
        TierError::OutOfRange { offset, start: f.manifest.log_start_offset().unwrap_or(-1), end: f.manifest.end_offset().unwrap_or(-1) }
    }

    /// Whole batches from the remote segment holding `offset` (see [`crate::reader`]).
    pub async fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes> {
        let (seg, next) = {
            let f = self.manifest();
            let m = &f.manifest;
            match m.find(offset) {
                Some(i) => (m.segments[i].clone(), m.segments.get(i + 1).cloned()),
                None => {
                    drop(f);
                    return Err(self.out_of_range(offset));
                }
            }
        };
        let r = self.tier.cache.read(&seg, next.as_ref(), offset, max_bytes, min_one).await;
        if let Err(e) = &r {
            log_read_error(&self.pref, offset, e);
        }
        r
    }

    /// ListOffsets by timestamp over the remote segments: the first batch at or above the remote
    /// log start whose max timestamp is `>= ts`.
    pub async fn find_batch_by_timestamp(&self, ts: i64) -> Result<Option<Bytes>> {
        let (segs, start) = {
            let f = self.manifest();
            (f.manifest.segments.clone(), f.manifest.log_start_offset().unwrap_or(0))
        };
        for s in segs.iter().filter(|s| s.max_timestamp >= ts && s.last_offset >= start) {
            if let Some(b) = self.tier.cache.find_by_timestamp(s, ts, start).await? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// DeleteRecords below the local log: raises the remote log start offset; whole segments
    /// below it are deleted from the bucket in the background.
    pub async fn raise_log_start(&self, offset: i64) -> Result<()> {
        self.commit_op(ManifestOp::RaiseLogStart(offset)).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// A replicated partition's manifest op, committed by its Raft log: every replica applies
    /// it, in log order, to its own manifest file. Applying the same op again (a restart
    /// replays what the applied checkpoint missed) changes nothing.
    pub async fn apply_replicated(&self, op: ManifestOp) -> Result<Applied> {
        let applied = self.commit_op(op).await?;
        self.wake.notify_one();
        Ok(applied)
    }

    /// A replica that installs its partition's snapshot takes the manifest the leader had
    /// (the ops before the snapshot are no longer in the log).
    pub async fn install_replicated(&self, manifest: Manifest) -> Result<()> {
        let _g = self.commit.lock().await;
        let mut next = self.manifest().clone();
        if next.manifest == manifest {
            return Ok(());
        }
        next.manifest = manifest;
        self.persist(next).await?;
        self.needs_recovery.store(false, Ordering::Release);
        Ok(())
    }

    /// Deletes this partition's segment objects that no manifest entry names: uploads whose
    /// commit failed (a deposed leader's, whose new leader uploaded the same offsets with other
    /// boundaries) and segments replaced by a new leader's. Only objects wholly below the
    /// uploaded end and older than `grace` go: anything above may be an upload in flight, and a
    /// key the manifest names (or will delete) is never touched. The leader runs it every
    /// `orphan_sweep_interval`; returns how many objects it deleted.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<usize> {
        use futures::TryStreamExt;
        let (named, uploaded_end) = {
            let f = self.manifest();
            let named: std::collections::HashSet<String> = f.manifest.segments.iter().map(|s| s.key.clone()).chain(f.pending_deletes.iter().cloned()).collect();
            (named, f.manifest.uploaded_end)
        };
        let dir = crate::paths::segments_dir(&self.pref);
        let cutoff_ms = now_ms() - grace.as_millis() as i64;
        let listed: Vec<object_store::ObjectMeta> = self.tier.store.list(Some(&dir)).try_collect().await.map_err(|e| TierError::store(dir.as_ref(), e))?;
        let orphans: Vec<object_store::path::Path> = listed
            .into_iter()
            .filter(|o| !named.contains(o.location.as_ref()))
            .filter(|o| o.location.filename().and_then(crate::paths::parse_segment_name).is_some_and(|(_, last, _)| last < uploaded_end))
            .filter(|o| o.last_modified.timestamp_millis() <= cutoff_ms)
            .map(|o| o.location)
            .collect();
        let n = orphans.len();
        if n > 0 {
            let keys: Vec<String> = orphans.iter().map(|k| k.to_string()).collect();
            manifest::delete_all(&self.tier.store, orphans).await?;
            tracing::info!(partition = %self.pref, objects = n, first = %keys[0], "deleted orphaned segment objects (uploaded, never committed or replaced)");
        }
        Ok(n)
    }

    /// Commits `op` the partition's way: through its Raft log when it is replicated (see
    /// [`LocalLog::replicate`]), else to the local manifest file. `Ok(true)`: it changed the
    /// manifest.
    async fn commit(&self, op: ManifestOp, local: &Weak<dyn LocalLog>) -> Result<bool> {
        let replicated = local.upgrade().and_then(|l| l.replicate(op.clone()));
        match replicated {
            None => Ok(!matches!(self.commit_op(op).await?, Applied::AlreadyPresent)),
            Some(fut) => {
                let before = self.manifest().manifest.version;
                fut.await.map_err(|reason| TierError::Fenced { partition: self.pref.to_string(), reason })?;
                Ok(self.manifest().manifest.version != before)
            }
        }
    }

    /// Commits one op: applied to a copy, persisted (fsync), then published, so nobody ever
    /// sees (or deletes local data because of) a state that a crash could take back.
    async fn commit_op(&self, op: ManifestOp) -> Result<Applied> {
        let _g = self.commit.lock().await;
        let mut next = self.manifest().clone();
        let applied = next.manifest.apply(op).map_err(|r| TierError::corrupt(format!("manifest of {}", self.pref), r))?;
        match &applied {
            Applied::AlreadyPresent => return Ok(applied),
            Applied::Dropped(d) if d.is_empty() && next.manifest == self.manifest().manifest => {
                return Ok(applied);
            }
            Applied::Dropped(d) | Applied::Replaced(d) => next.pending_deletes.extend(d.iter().map(|s| s.key.clone())),
            Applied::Added => {}
        }
        self.persist(next).await?;
        Ok(applied)
    }

    async fn persist(&self, next: ManifestFile) -> Result<()> {
        let dir = self.dir.clone();
        let file = next.clone();
        tokio::task::spawn_blocking(move || file.store(&dir)).await.map_err(|e| TierError::LocalIo {
            op: "write manifest",
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })??;
        *self.manifest() = next;
        Ok(())
    }

    /// Brings the bucket up to date: mirror the manifest (chunks, root), then delete the objects
    /// that left it.
    async fn sync_bucket(&self) -> Result<()> {
        let _g = self.commit.lock().await;
        let snap = self.manifest().clone();
        let mut next = snap.clone();
        if snap.manifest.version != snap.mirror.root_version && snap.manifest.version > 0 {
            next.mirror = manifest::mirror(&self.tier.store, &self.pref, &snap).await?;
        }
        if !snap.pending_deletes.is_empty() {
            let keys = snap.pending_deletes.iter().map(|k| object_store::path::Path::from(k.as_str())).collect();
            manifest::delete_all(&self.tier.store, keys).await?;
            next.pending_deletes.clear();
            tracing::info!(partition = %self.pref, objects = snap.pending_deletes.len(), "deleted remote segments past retention");
        }
        if next != snap {
            self.persist(next).await?;
        }
        Ok(())
    }

    fn bucket_dirty(&self) -> bool {
        let f = self.manifest();
        (f.manifest.version != f.mirror.root_version && f.manifest.version > 0) || !f.pending_deletes.is_empty()
    }

    /// No local manifest: take the bucket's (a replaced broker or disk), or start empty.
    async fn recover(&self) -> Result<()> {
        let _g = self.commit.lock().await;
        match manifest::load_from_bucket(&self.tier.store, &self.pref).await? {
            Some(m) => {
                tracing::info!(partition = %self.pref, segments = m.segments.len(), log_start_offset = ?m.log_start_offset(), uploaded_end = m.uploaded_end, "rebuilt the remote manifest from the bucket");
                // the mirror state starts empty: the next sync rewrites the same chunks and a new root
                let file = ManifestFile { manifest: m, ..ManifestFile::default() };
                self.persist(file).await?;
            }
            None => self.persist(ManifestFile::default()).await?,
        }
        self.needs_recovery.store(false, Ordering::Release);
        Ok(())
    }

    /// Uploads and commits one sealed segment.
    async fn upload_and_commit(&self, seg: &SegmentInfo, local: &Weak<dyn LocalLog>) -> Result<u64> {
        let _permit = self.tier.upload_permits.clone().acquire_owned().await;
        let started = Instant::now();
        let entry = upload_segment(&self.tier.store, &self.pref, seg, &self.tier.config.upload).await?;
        // fenced: only the leader commits what it uploaded
        if local.upgrade().and_then(|l| l.leader_epoch()).is_none() {
            return Err(TierError::Fenced { partition: self.pref.to_string(), reason: "no longer the leader".into() });
        }
        let bytes = entry.size_bytes;
        let key = entry.key.clone();
        if self.commit(ManifestOp::Add(entry), local).await? {
            self.tier.stats.uploaded(bytes);
            tracing::debug!(partition = %self.pref, key = %key, bytes, ms = started.elapsed().as_millis() as u64, "segment uploaded");
        } else {
            tracing::debug!(partition = %self.pref, key = %key, "segment already in the manifest")
        }
        Ok(bytes)
    }

    fn apply_remote_retention_op(&self, now_ms: i64, local_only_bytes: u64) -> Option<i64> {
        let p = self.policy();
        remote_log_start_after_retention(&self.manifest().manifest, now_ms, p.retention, local_only_bytes)
    }
}

fn log_read_error(p: &PartitionRef, offset: i64, e: &TierError) {
    match e.kind() {
        ErrorKind::OutOfRange => {}
        ErrorKind::Corrupt | ErrorKind::Missing => {
            tracing::error!(partition = %p, offset, error = %e, "remote segment unreadable; fetch answered with an error")
        }
        _ => tracing::warn!(partition = %p, offset, error = %e, "remote read failed"),
    }
}

use sediment_log::clock::now_ms;

/// The uploader of one partition: uploads sealed segments in order, backs off while the bucket
/// fails, mirrors the manifest, applies remote retention, deletes what left the manifest.
async fn uploader(this: Weak<RemoteLog>, local: Weak<dyn LocalLog>) {
    let mut backoff = Duration::ZERO;
    let mut sleep_for: Option<Duration> = None;
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    // the first sweep waits a whole interval: a restart never sweeps while uploads settle
    let mut last_sweep = Instant::now();
    let mut commits_since_sync = 0u32;
    let mut last_sync = Instant::now();
    loop {
        let Some(rl) = this.upgrade() else { return };
        if rl.closed.load(Ordering::SeqCst) {
            return;
        }
        let cfg = rl.tier.config.clone();
        if let Some(wait) = sleep_for.take() {
            // a backoff; close() and notify() cut it short only for close
            let rl2 = rl.clone();
            drop(rl);
            let deadline = tokio::time::Instant::now() + wait;
            while tokio::time::Instant::now() < deadline {
                if rl2.closed.load(Ordering::SeqCst) {
                    return;
                }
                let _ = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + Duration::from_millis(250)), rl2.wake.notified()).await;
            }
            continue;
        }
        let Some(log) = local.upgrade() else { return };
        let (segments, hw) = log.segments();
        let leader = log.leader_epoch();
        drop(log);
        let policy = rl.policy();
        let uploaded_end = rl.manifest().manifest.uploaded_end;
        let pending: Vec<&SegmentInfo> = segments.iter().filter(|s| s.sealed && s.next_offset <= hw && s.base_offset >= uploaded_end).collect();
        let lag_bytes: u64 = pending.iter().map(|s| s.size_bytes).sum();
        // the lag is the leader's: followers upload nothing
        let uploading = policy.upload && leader.is_some();
        rl.lag_bytes.store(if uploading { lag_bytes } else { 0 }, Ordering::Relaxed);
        rl.lag_segments.store(if uploading { pending.len() as u64 } else { 0 }, Ordering::Relaxed);
        if rl.needs_recovery.load(Ordering::Acquire) {
            if let Err(e) = rl.recover().await {
                let n = rl.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(10) {
                    tracing::warn!(partition = %rl.pref, failures = n, error = %e, "cannot read the remote manifest from the bucket; retrying");
                }
                backoff = next_backoff(backoff, cfg.upload_backoff_max);
                sleep_for = Some(backoff);
            }
            continue;
        }

        if policy.upload
            && leader.is_some()
            && let Some(seg) = pending.first()
        {
            if seg.base_offset > uploaded_end && uploaded_end > 0 {
                tracing::warn!(partition = %rl.pref, from = uploaded_end, to = seg.base_offset, "gap in the uploaded log (segments deleted before upload)");
            }
            let seg = (*seg).clone();
            match rl.upload_and_commit(&seg, &local).await {
                Ok(_) => {
                    if let Some(l) = local.upgrade() {
                        let end = rl.uploaded_end();
                        let _ = tokio::task::spawn_blocking(move || l.uploaded(end)).await;
                    }
                    let failures = rl.failures.swap(0, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(partition = %rl.pref, failures, "uploads resumed");
                    }
                    backoff = Duration::ZERO;
                    commits_since_sync += 1;
                    // mirror every few commits or seconds (the local manifest is the truth; segments
                    // uploaded after the newest root are found by listing, see manifest.rs)
                    if commits_since_sync >= cfg.mirror_every || last_sync.elapsed() >= cfg.mirror_interval {
                        match rl.sync_bucket().await {
                            Ok(()) => {
                                commits_since_sync = 0;
                                last_sync = Instant::now();
                            }
                            Err(e) => {
                                tracing::warn!(partition = %rl.pref, error = %e, "cannot mirror the manifest to the bucket; will retry")
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::LocalIo && !std::path::Path::new(&seg.log_path).exists() => {
                    tracing::debug!(partition = %rl.pref, base_offset = seg.base_offset, "segment deleted before upload");
                }
                Err(e) if e.kind() == ErrorKind::Fenced => {
                    tracing::info!(partition = %rl.pref, error = %e, "upload not committed");
                }
                Err(e) => {
                    let n = rl.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    backoff = next_backoff(backoff, cfg.upload_backoff_max);
                    sleep_for = Some(backoff);
                    if n == 1 || n.is_multiple_of(10) {
                        tracing::warn!(partition = %rl.pref, base_offset = seg.base_offset, failures = n, retry_in_ms = backoff.as_millis() as u64, lag_bytes, error = %e, "segment upload failed; produce continues on local disk");
                    } else {
                        tracing::debug!(partition = %rl.pref, failures = n, error = %e, "segment upload failed");
                    }
                }
            }
            continue;
        }

        // idle: mirror, retention, deletes (the leader's work; a follower only applies ops)
        if leader.is_none() {
            let rl2 = rl.clone();
            drop(rl);
            let _ = tokio::time::timeout(cfg.upload_poll_interval, rl2.wake.notified()).await;
            continue;
        }
        if rl.bucket_dirty() && (last_sync.elapsed() >= cfg.mirror_interval || !rl.manifest().pending_deletes.is_empty()) {
            if let Err(e) = rl.sync_bucket().await {
                tracing::warn!(partition = %rl.pref, error = %e, "cannot sync the manifest with the bucket; will retry");
                backoff = next_backoff(backoff, cfg.upload_backoff_max);
                sleep_for = Some(backoff);
                continue;
            }
            commits_since_sync = 0;
            last_sync = Instant::now();
            backoff = Duration::ZERO;
        }
        if last_retention.elapsed() >= cfg.retention_check_interval {
            last_retention = Instant::now();
            let local_only: u64 = segments.iter().filter(|s| s.base_offset >= uploaded_end).map(|s| s.size_bytes).sum();
            if let Some(start) = rl.apply_remote_retention_op(now_ms(), local_only) {
                let before = rl.manifest().manifest.segments.len();
                match rl.commit(ManifestOp::RaiseLogStart(start), &local).await {
                    Ok(true) => {
                        let dropped = before.saturating_sub(rl.manifest().manifest.segments.len());
                        tracing::info!(partition = %rl.pref, segments = dropped, log_start_offset = start, "remote retention");
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(partition = %rl.pref, error = %e, "remote retention failed")
                    }
                }
            }
        }
        if last_sweep.elapsed() >= cfg.orphan_sweep_interval {
            last_sweep = Instant::now();
            if let Err(e) = rl.sweep_orphans(cfg.orphan_grace).await {
                tracing::warn!(partition = %rl.pref, error = %e, "orphaned object sweep failed; will retry");
            }
        }
        let wait = cfg.upload_poll_interval;
        let rl2 = rl.clone();
        drop(rl);
        let _ = tokio::time::timeout(wait, rl2.wake.notified()).await;
    }
}

fn next_backoff(cur: Duration, max: Duration) -> Duration {
    if cur.is_zero() { Duration::from_millis(200) } else { (cur * 2).min(max) }
}
