//! The partition's state machine ([`ReplicaSm`]): applying committed entries raises the high
//! watermark; snapshots are positions (the retention point), not data.

#![allow(clippy::result_large_err)]

use super::*;

#[derive(Serialize, Deserialize, Default)]
struct AppliedCheckpoint {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    /// The log end offset at the snapshot's last entry.
    next_offset: i64,
    /// Tiered storage: the remote segment list as applied when the snapshot was built (at or
    /// after its last entry; the ops after that entry apply to it again as no-ops).
    manifest: Option<sediment_tier::Manifest>,
    /// Idempotent producers' state as of `next_offset` (`ProducerStateTable::encode`): a
    /// replica that restarts its log from the snapshot would otherwise forget every producer
    /// and, once it leads, refuse their next batch as out of order.
    producers: Option<Vec<u8>>,
}

/// A snapshot written by a broker that did not send producer state yet.
#[derive(Deserialize)]
struct SnapshotDataV1 {
    next_offset: i64,
    manifest: Option<sediment_tier::Manifest>,
}

fn decode_snapshot(data: &[u8]) -> Result<SnapshotData, String> {
    decode::<SnapshotData>(data)
        .or_else(|_| decode::<SnapshotDataV1>(data).map(|v| SnapshotData { next_offset: v.next_offset, manifest: v.manifest, producers: None }))
}

struct SmState {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    checkpointed: Instant,
    seq: u64,
}

/// The partition's state machine: the high watermark. Clones share it.
#[derive(Clone)]
pub struct ReplicaSm {
    p: Arc<Partition>,
    st: Arc<tokio::sync::Mutex<SmState>>,
}

impl ReplicaSm {
    pub fn open(p: Arc<Partition>) -> ReplicaSm {
        let (dir, purged, last) = {
            let inner = p.lock();
            (inner.log.dir().to_path_buf(), inner.raft.as_ref().and_then(|r| r.purged), inner.raft.as_ref().and_then(|r| r.last_log_id()))
        };
        let mut cp: AppliedCheckpoint = load_small(&dir.join(APPLIED_FILE)).ok().flatten().unwrap_or_default();
        // A group of one applies entries before they are fsynced (docs/design/0001): after a
        // power cut the checkpoint can name an entry the log lost. What the log kept was applied.
        if let (Some(a), Some(l)) = (cp.applied, last)
            && a.index > l.index
        {
            tracing::warn!(topic = %p.topic, partition = p.index, checkpoint = a.index, log_end = l.index, "applied checkpoint past the log (a power cut took back unsynced entries); starting from the log's end");
            cp.applied = Some(l);
        }
        // The checkpoint is written at most once a second, so it can lag a purge that followed
        // a snapshot; but purged entries were applied (a snapshot never passes the applied
        // entry). Starting below the purge point would build a snapshot openraft refuses.
        let applied = match (cp.applied, purged) {
            (Some(a), Some(p)) if p.index > a.index => Some(p),
            (None, Some(p)) => Some(p),
            (a, _) => a,
        };
        ReplicaSm {
            p,
            st: Arc::new(tokio::sync::Mutex::new(SmState { applied, membership: cp.membership, snapshot: None, checkpointed: Instant::now(), seq: 0 })),
        }
    }

    /// Applies a committed manifest op to this replica's remote side. Only a local I/O failure
    /// (the manifest file) stops the state machine; an op the manifest refuses is logged.
    async fn apply_remote(&self, remote: &Arc<sediment_tier::RemoteLog>, op: sediment_tier::ManifestOp) -> Result<(), StorageError<u64>> {
        match remote.apply_replicated(op).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == sediment_tier::ErrorKind::LocalIo => {
                tracing::error!(topic = %self.p.topic, partition = self.p.index, error = %e, "cannot apply a remote segment change");
                Err(st_err(e))
            }
            Err(e) => {
                tracing::error!(topic = %self.p.topic, partition = self.p.index, error = %e, "remote segment change refused by the manifest; ignored");
                Ok(())
            }
        }
    }

    /// A handle that checkpoints this state machine later without keeping its partition alive
    /// (the partition holds the replica that keeps the handle).
    pub(super) fn checkpointer(&self) -> SmCheckpointer {
        SmCheckpointer { st: self.st.clone() }
    }

    fn checkpoint(&self, st: &mut SmState) {
        checkpoint_to(&self.p, st);
    }
}

fn checkpoint_to(p: &Partition, st: &mut SmState) {
    let dir = p.lock().log.dir().to_path_buf();
    let cp = AppliedCheckpoint { applied: st.applied, membership: st.membership.clone() };
    if let Err(e) = save_small(&dir, APPLIED_FILE, &cp, false) {
        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "cannot checkpoint the applied index");
    }
    st.checkpointed = Instant::now();
}

/// See [`ReplicaSm::checkpointer`].
pub(super) struct SmCheckpointer {
    st: Arc<tokio::sync::Mutex<SmState>>,
}

impl SmCheckpointer {
    /// Records the applied entry now (the Raft group stopped): the next start re-applies
    /// nothing, where openraft would otherwise read the batches of up to a second of entries
    /// back from the segments (hundreds of MB after a busy run). Skipped when the state machine
    /// stays busy (an apply that outlived the group's stop).
    pub(super) async fn save(&self, p: &Partition) {
        if let Ok(mut st) = tokio::time::timeout(Duration::from_secs(1), self.st.lock()).await {
            checkpoint_to(p, &mut st);
        }
    }
}

/// The retention point of a replicated partition: the last Raft entry lying wholly below
/// `target` (default: where retention asked the log to start, else the log start offset), never
/// past `applied`.
pub(super) fn retention_point(p: &Partition, applied: Option<LogId<u64>>, target: Option<i64>) -> Option<(LogId<u64>, i64)> {
    let applied = applied?;
    let mut inner = p.lock();
    let start = inner.log.log_start_offset();
    let r = inner.raft.as_mut()?;
    let target = target.or(r.snapshot_at).unwrap_or(start);
    let (i, rec) = r.index.last_ending_at_or_below(target).ok().flatten()?;
    if i > applied.index {
        return None;
    }
    Some((log_id(rec.term, i), rec.next_offset()))
}

impl RaftSnapshotBuilder<DataTc> for ReplicaSm {
    /// A partition's snapshot is a position, not data: the state at the retention point (the
    /// last entry retention deleted) is "the log starts at this offset". A follower behind the
    /// leader's retention installs it by starting its log empty there, as a Kafka follower
    /// truncates to the leader's log start offset, and the leader replicates everything after
    /// it. Without a retention point (nothing deleted) the snapshot is at the applied entry.
    async fn build_snapshot(&mut self) -> Result<Snapshot<DataTc>, StorageError<u64>> {
        let mut st = self.st.lock().await;
        let (last_log_id, next_offset) = match retention_point(&self.p, st.applied, None) {
            Some((id, next)) => (Some(id), next),
            None => (st.applied, self.p.high_watermark()),
        };
        let manifest = self.p.remote().map(|r| r.manifest_snapshot());
        let producers = {
            let mut table = self.p.lock().producers.clone();
            table.truncate_from(next_offset);
            Some(table.encode())
        };
        let data = encode(&SnapshotData { next_offset, manifest, producers }).map_err(st_err)?;
        st.seq += 1;
        let snapshot_id = format!("{}-{}", last_log_id.map_or(0, |l| l.index), st.seq);
        let meta = SnapshotMeta { last_log_id, last_membership: st.membership.clone(), snapshot_id };
        st.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<DataTc> for ReplicaSm {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let st = self.st.lock().await;
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<DataTc>> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.st.lock().await;
        let mut n = 0;
        let mut membership_changed = false;
        let mut last = None;
        for e in entries {
            n += 1;
            match &e.payload {
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    membership_changed = true;
                }
                // DeleteRecords, committed: every replica raises its log start (durably) when it
                // applies it; the segments below go later with the retention snapshot and purge.
                EntryPayload::Normal(Proposal { log_start: Some(offset), .. }) => {
                    let raised = self.p.with_log(|l| l.raise_log_start(*offset));
                    if let Err(e) = raised {
                        tracing::error!(topic = %self.p.topic, partition = self.p.index, offset, error = %e, "cannot raise the log start offset");
                        return Err(st_err(e));
                    }
                    // below the local log: the bucket's start rises too
                    if let Some(remote) = self.p.remote() {
                        self.apply_remote(remote, sediment_tier::ManifestOp::RaiseLogStart(*offset)).await?;
                    }
                }
                // tiered storage: an upload or remote retention, committed by the leader
                EntryPayload::Normal(Proposal { remote: Some(op), .. }) => match self.p.remote() {
                    Some(remote) => self.apply_remote(remote, op.clone()).await?,
                    None => {
                        tracing::warn!(topic = %self.p.topic, partition = self.p.index, "remote segment entry on a partition without tiered storage; ignored")
                    }
                },
                _ => {}
            }
            last = Some(e.log_id);
        }
        if let Some(last) = last {
            st.applied = Some(last);
            let rec = {
                let mut inner = self.p.lock();
                inner.raft.as_mut().and_then(|r| r.index.get(last.index).ok().flatten())
            };
            if let Some(rec) = rec {
                self.p.raise_hw(Some(rec.next_offset()));
            }
            if membership_changed || st.checkpointed.elapsed() > Duration::from_secs(1) {
                self.checkpoint(&mut st);
            }
        }
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// A snapshot arrives when this replica is behind the leader's purged log: it restarts its
    /// log empty at the snapshot's offset (what lies below is in the bucket, or gone with
    /// retention).
    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let snap: SnapshotData = decode_snapshot(&data).map_err(st_err)?;
        let mut st = self.st.lock().await;
        {
            let mut inner = self.p.lock();
            let have = match (meta.last_log_id, inner.raft.as_ref()) {
                (Some(l), Some(r)) => r.index.get(l.index).ok().flatten().is_some_and(|rec| rec.term == l.leader_id.term),
                _ => false,
            };
            if !have && inner.log.log_end_offset() != snap.next_offset {
                let start = snap.next_offset.max(0);
                inner.log.truncate_fully_and_start_at(start).map_err(st_err)?;
                if let Some(r) = inner.raft.as_mut() {
                    r.index.truncate(0).map_err(st_err)?;
                    r.epochs.clear();
                }
                self.p.reload_producers(&mut inner);
                // the log below the snapshot is not here: its producers come with the snapshot
                if let Some(bytes) = &snap.producers {
                    match crate::producer_state::ProducerStateTable::decode(bytes) {
                        Ok(table) => inner.producers = table,
                        Err(e) => tracing::warn!(topic = %self.p.topic, partition = self.p.index, error = %e, "snapshot carries unreadable producer state"),
                    }
                }
            }
        }
        if let (Some(m), Some(remote)) = (snap.manifest, self.p.remote()) {
            remote.install_replicated(m).await.map_err(st_err)?;
        }
        self.p.raise_hw(Some(snap.next_offset));
        self.p.clamp_hw();
        st.applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.snapshot = Some((meta.clone(), data));
        self.checkpoint(&mut st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<DataTc>>, StorageError<u64>> {
        let st = self.st.lock().await;
        Ok(st.snapshot.as_ref().map(|(m, d)| Snapshot { meta: m.clone(), snapshot: Box::new(Cursor::new(d.clone())) }))
    }
}
