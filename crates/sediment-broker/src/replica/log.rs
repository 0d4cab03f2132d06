//! The partition log as openraft's log storage ([`ReplicaLog`]), and the flusher that fsyncs
//! it (group commit).

#![allow(clippy::result_large_err)]

use super::*;

/// An append's flush callback for the flusher to complete after the fsync, or `None`: the
/// append completed its callback itself and asks only for an fsync pass.
type FlushReq = Option<LogFlushed<DataTc>>;

/// The partition log as openraft's log storage. `light` readers return batch entries without
/// their bytes: openraft's core reads committed entries back only to apply them, and applying
/// needs the entries' positions, not their records (replication uses full readers).
pub struct ReplicaLog {
    p: Arc<Partition>,
    proposals: Arc<Proposals>,
    flush_tx: mpsc::UnboundedSender<FlushReq>,
    light: bool,
    /// When the committed-index hint was last written (at most once a second: openraft
    /// saves it before every apply, and a stale hint is safe).
    committed_saved: Option<Instant>,
}

impl ReplicaLog {
    /// The log storage of `p` (opened with [`Partition::open_replicated`]); starts its flusher.
    pub fn new(p: Arc<Partition>, proposals: Arc<Proposals>) -> ReplicaLog {
        let (flush_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(p.clone(), rx));
        ReplicaLog { p, proposals, flush_tx, light: true, committed_saved: None }
    }

    fn append_one(&self, inner: &mut Inner, e: Entry<DataTc>, now_ms: i64) -> Result<(), StorageError<u64>> {
        let idx = e.log_id.index;
        let term = e.log_id.leader_id.term;
        let leo = inner.log.log_end_offset();
        let meta_rec = |kind| EntryRecord { base_offset: leo, term, last_offset_delta: 0, kind };
        match e.payload {
            EntryPayload::Blank => raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Blank), None).map_err(st_err),
            EntryPayload::Membership(m) => {
                let payload = encode(&m).map_err(st_err)?;
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Membership), Some(payload)).map_err(st_err)
            }
            EntryPayload::Normal(Proposal { log_start: Some(offset), .. }) => {
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::LogStart), Some(offset.to_be_bytes().to_vec())).map_err(st_err)
            }
            EntryPayload::Normal(Proposal { remote: Some(op), .. }) => {
                let payload = encode(&op).map_err(st_err)?;
                raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Remote), Some(payload)).map_err(st_err)
            }
            EntryPayload::Normal(prop) if prop.batch.is_empty() => raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Noop), None).map_err(st_err),
            EntryPayload::Normal(prop) => {
                // one or more batches: the leader's coalesced proposals (each with its token), or
                // a replicated entry, whose batches land where the leader put them (checked)
                let leader = !prop.tokens.is_empty();
                // the proposal's buffer is unique here (the produce path's copy, or the decoded
                // RPC), so this takes it over without copying
                let mut buf = prop.batch.try_into_mut().unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
                let (mut first, mut end, mut i) = (None::<i64>, leo, 0usize);
                while !buf.is_empty() {
                    let header = BatchHeader::parse(&buf).map_err(st_err)?;
                    let mut one = buf.split_to(header.total_len().min(buf.len()));
                    let token = prop.tokens.get(i).copied().unwrap_or(0);
                    i += 1;
                    if leader {
                        // the idempotence rules decide here, where proposals are ordered
                        match inner.producers.check(&header) {
                            Verdict::Append => {}
                            Verdict::Duplicate(meta) => {
                                self.proposals.notify(token, Outcome::Duplicate(meta));
                                continue;
                            }
                            Verdict::Reject(code, msg) => {
                                self.proposals.notify(token, Outcome::Refused(code, msg));
                                continue;
                            }
                        }
                    } else if header.base_offset != inner.log.log_end_offset() {
                        return Err(st_err(format!(
                            "replicated batch for offset {} arrived at log end {}: logs diverged",
                            header.base_offset,
                            inner.log.log_end_offset()
                        )));
                    }
                    let info = inner.log.append(&mut one, term as i32, now_ms).map_err(st_err)?;
                    if header.has_producer_id() {
                        let mut assigned = header;
                        assigned.base_offset = info.base_offset;
                        inner.producers.record(&assigned, now_ms);
                    }
                    first.get_or_insert(info.base_offset);
                    end = info.last_offset + 1;
                    self.p.after_append(inner, one.len());
                    self.proposals.notify(token, Outcome::Appended(info));
                }
                let Some(base) = first else {
                    // every batch refused: the entry keeps its index and holds no records
                    return raft_of(inner)?.index.append(idx, meta_rec(EntryKind::Noop), None).map_err(st_err);
                };
                let rec = EntryRecord { base_offset: base, term, last_offset_delta: (end - base - 1).min(i32::MAX as i64) as i32, kind: EntryKind::Batch };
                let r = raft_of(inner)?;
                r.index.append(idx, rec, None).map_err(st_err)?;
                r.note_epoch(term, base);
                Ok(())
            }
        }
    }

    /// Entries `[start, end)` (at most `max_bytes` of batches, at least one entry).
    fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        let recs = {
            let mut inner = self.p.lock();
            raft_of(&mut inner)?.index.range(start, end).map_err(read_err)?
        };
        let membership = |inner: &mut Inner, i: u64| -> Result<Membership<u64, BasicNode>, StorageError<u64>> {
            let bytes = raft_of(inner)?.index.membership(i).ok_or_else(|| read_err(format!("membership entry {i} has no payload")))?.to_vec();
            decode(&bytes).map_err(read_err)
        };
        let mut out = Vec::with_capacity(recs.len());
        let mut pending: Vec<Bytes> = Vec::new(); // batches read ahead, in offset order
        let mut next_read: Option<i64> = None;
        let mut bytes = 0usize;
        for (i, r) in recs {
            let id = log_id(r.term, i);
            let payload = match r.kind {
                EntryKind::Blank => EntryPayload::Blank,
                EntryKind::Noop => EntryPayload::Normal(Proposal::default()),
                EntryKind::Hole => continue,
                EntryKind::Membership => EntryPayload::Membership(membership(&mut self.p.lock(), i)?),
                EntryKind::LogStart => {
                    let offset = {
                        let mut inner = self.p.lock();
                        raft_of(&mut inner)?.index.payload(i).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)
                    };
                    let offset = offset.ok_or_else(|| read_err(format!("log start entry {i} has no offset")))?;
                    EntryPayload::Normal(Proposal { log_start: Some(offset), ..Proposal::default() })
                }
                EntryKind::Remote => {
                    let bytes = {
                        let mut inner = self.p.lock();
                        raft_of(&mut inner)?.index.payload(i).map(|b| b.to_vec())
                    };
                    let bytes = bytes.ok_or_else(|| read_err(format!("remote entry {i} has no payload")))?;
                    let op = decode(&bytes).map_err(read_err)?;
                    EntryPayload::Normal(Proposal { remote: Some(op), ..Proposal::default() })
                }
                EntryKind::Batch if self.light => EntryPayload::Normal(Proposal::default()),
                EntryKind::Batch => {
                    if bytes >= max_bytes && !out.is_empty() {
                        break;
                    }
                    // every batch of the entry (a leader may coalesce several into one)
                    let end = r.next_offset();
                    let mut parts: Vec<Bytes> = Vec::new();
                    let mut reached = r.base_offset;
                    while reached < end {
                        if pending.is_empty() {
                            let from = next_read.unwrap_or(reached).max(reached);
                            let plan = {
                                let inner = self.p.lock();
                                inner.log.read_retained(from, (max_bytes - bytes.min(max_bytes)).max(1), i64::MAX, true).map_err(read_err)?
                            };
                            let data = plan.execute().map_err(read_err)?;
                            let mut pos = 0;
                            for (h, b) in BatchIter::new(&data) {
                                pending.push(data.slice(pos..pos + b.len()));
                                pos += b.len();
                                next_read = Some(h.next_offset());
                            }
                            pending.reverse();
                        }
                        let Some(batch) = pending.pop() else { break };
                        let h = BatchHeader::parse(&batch).map_err(read_err)?;
                        if h.base_offset != reached {
                            return Err(read_err(format!("entry {i} needs offset {reached} but the log has {}", h.base_offset)));
                        }
                        reached = h.next_offset();
                        parts.push(batch);
                    }
                    if reached < end {
                        // truncated under us: return what we have (the caller retries)
                        break;
                    }
                    let batch = if parts.len() == 1 {
                        parts.pop().unwrap_or_default()
                    } else {
                        let mut all = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                        parts.iter().for_each(|p| all.extend_from_slice(p));
                        all.freeze()
                    };
                    bytes += batch.len();
                    EntryPayload::Normal(Proposal { batch, tokens: Vec::new(), log_start: None, remote: None })
                }
            };
            out.push(Entry { log_id: id, payload });
        }
        Ok(out)
    }
}

/// Group commit for a replicated partition: fsync segment + entry index once for every append
/// queued meanwhile, then acknowledge them in order (a `None` asks for a pass only) and raise
/// the high watermark where it waits for the fsync.
async fn flusher(p: Arc<Partition>, mut rx: mpsc::UnboundedReceiver<FlushReq>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.extend(first);
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        if p.policy == FsyncPolicy::Never {
            let any = !batch.is_empty();
            for cb in batch.drain(..) {
                cb.log_io_completed(Ok(()));
            }
            if let Some(r) = p.replica().filter(|_| any) {
                r.flushed();
            }
            continue;
        }
        let prepared = {
            let mut inner = p.lock();
            let job = inner.log.begin_flush();
            let files = inner.raft.as_mut().map(|r| r.index.sync_handles()).transpose();
            let offset = job.as_ref().map_or_else(|| inner.log.log_end_offset(), |j| j.target_offset());
            files.map(|f| (job, f.unwrap_or_default(), offset))
        };
        let started = Instant::now();
        let res = match prepared {
            Ok((job, files, offset)) => p
                .timed_fsync(tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                    let done = job.map(|j| j.run()).transpose().map_err(std::io::Error::other)?;
                    for f in files {
                        f.sync_data()?;
                    }
                    Ok(done)
                }))
                .instrument(p.fsync_span(offset))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        match res {
            Ok(done) => {
                sediment_telemetry::metrics().fsync(started.elapsed());
                if let Some(d) = done {
                    p.lock().log.complete_flush(d);
                }
                let any = !batch.is_empty();
                for cb in batch.drain(..) {
                    cb.log_io_completed(Ok(()));
                }
                if let Some(r) = p.replica().filter(|_| any) {
                    r.flushed();
                }
                p.raise_hw(None);
            }
            Err(e) => {
                sediment_telemetry::metrics().fsync_failed();
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed; the partition's Raft group stops");
                p.wm_tx.send_modify(|w| w.failed = true);
                for cb in batch.drain(..) {
                    cb.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<DataTc> for ReplicaLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        let (start, end) = range_bounds(&range);
        self.read_entries(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry<DataTc>>, StorageError<u64>> {
        self.read_entries(start, end, MAX_RPC_BYTES)
    }
}

impl RaftLogStorage<DataTc> for ReplicaLog {
    type LogReader = ReplicaLog;

    async fn get_log_state(&mut self) -> Result<LogState<DataTc>, StorageError<u64>> {
        let mut inner = self.p.lock();
        let r = raft_of(&mut inner)?;
        Ok(LogState { last_purged_log_id: r.purged, last_log_id: r.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> ReplicaLog {
        ReplicaLog { p: self.p.clone(), proposals: self.proposals.clone(), flush_tx: self.flush_tx.clone(), light: false, committed_saved: None }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let dir = self.p.lock().log.dir().to_path_buf();
        off_worker(|| save_small(&dir, VOTE_FILE, vote, true)).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let dir = self.p.lock().log.dir().to_path_buf();
        let vote: Option<Vote<u64>> = load_small(&dir.join(VOTE_FILE)).map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))?;
        // A restarted replica never resumes leadership in the term it led before: openraft
        // would take a committed vote of its own as leadership at once, and a power cut may
        // have taken entries of that term that another replica (a follower, a learner catching
        // up) already holds; new entries under the same index and term would then sit beside
        // them unnoticed. Read back as a vote cast but not won, the replica starts as a
        // follower and leads again only in a new term (a group of one campaigns at once).
        Ok(vote.map(|v| Vote { committed: false, ..v }))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        if self.committed_saved.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        self.committed_saved = Some(Instant::now());
        let dir = self.p.lock().log.dir().to_path_buf();
        // a hint (see sediment_raft::log_store): not fsynced
        off_worker(|| save_small(&dir, COMMITTED_FILE, &committed, false)).map_err(st_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let (dir, last) = {
            let inner = self.p.lock();
            (inner.log.dir().to_path_buf(), inner.raft.as_ref().and_then(|r| r.last_log_id()))
        };
        let saved = load_small::<Option<LogId<u64>>>(&dir.join(COMMITTED_FILE)).ok().flatten().flatten();
        // a hint, and never past the log: a group of one acknowledges appends before their
        // fsync, so after a power cut the hint can name an entry the disk did not keep
        Ok(match (saved, last) {
            (Some(c), Some(l)) if c.index > l.index => Some(l),
            (Some(_), None) => None,
            (c, _) => c,
        })
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<DataTc>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<DataTc>> + Send,
        I::IntoIter: Send,
    {
        let now = sediment_log::clock::now_ms();
        // off the runtime's workers (a stalled disk must not stop the runtime)
        let records_only = off_worker(|| {
            let mut inner = self.p.lock();
            entries.into_iter().try_fold(true, |only, e| {
                let records = matches!(&e.payload, EntryPayload::Normal(Proposal { log_start: None, remote: None, .. }));
                self.append_one(&mut inner, e, now).map(|()| only && records)
            })
        })?;
        // openraft's core awaits this callback before it appends again: a group that takes
        // records before their fsync (see `Partition::acks_before_fsync`) completes it now, so
        // an acks=1 batch does not wait for the fsync of the entry ahead of it. Entries that
        // change more than records (membership, log start, remote segments, a leader's blank)
        // commit only once they and everything before them are on disk.
        if records_only && self.p.acks_before_fsync() {
            callback.log_io_completed(Ok(()));
            if let Some(r) = self.p.replica() {
                r.flushed();
            }
            return self.flush_tx.send(None).map_err(|_| st_err("partition flusher stopped"));
        }
        self.flush_tx.send(Some(callback)).map_err(|_| st_err("partition flusher stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        off_worker(|| self.truncate_now(log_id))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        off_worker(|| self.purge_now(log_id))
    }
}

impl ReplicaLog {
    fn truncate_now(&self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.p.lock();
        let Some(rec) = raft_of(&mut inner)?.index.get(log_id.index).map_err(st_err)? else {
            return Ok(()); // past the end
        };
        let r = raft_of(&mut inner)?;
        r.index.truncate(log_id.index).map_err(st_err)?;
        r.cut_epochs(rec.base_offset);
        if rec.base_offset < inner.log.log_end_offset() {
            inner.log.truncate_to(rec.base_offset).map_err(st_err)?;
            self.p.reload_producers(&mut inner);
        }
        tracing::info!(topic = %self.p.topic, partition = self.p.index, index = log_id.index, offset = rec.base_offset, "truncated an uncommitted suffix");
        let (start, leo) = (inner.log.log_start_offset(), inner.log.log_end_offset());
        self.p.wm_tx.send_modify(|w| w.high_watermark = w.high_watermark.min(leo).max(start));
        Ok(())
    }

    fn purge_now(&self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.p.lock();
        let r = raft_of(&mut inner)?;
        if r.purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        save_small(&r.dir, PURGED_FILE, &Some(log_id), true).map_err(st_err)?;
        r.purged = Some(log_id);
        r.index.purge(log_id.index).map_err(st_err)?;
        drop(inner);
        // the entries are gone from Raft's view: retention may now delete their segments
        match self.p.apply_local_retention(sediment_log::clock::now_ms()) {
            Ok(out) if out.segments_deleted > 0 => {
                tracing::info!(topic = %self.p.topic, partition = self.p.index, segments = out.segments_deleted, bytes = out.bytes_deleted, "retention deleted segments");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(topic = %self.p.topic, partition = self.p.index, error = %e, "retention after a raft purge failed"),
        }
        Ok(())
    }
}
