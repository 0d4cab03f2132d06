//! The list of a partition's remote segments.
//!
//! [`Manifest`] is a small state machine changed only through [`ManifestOp`]s, so the same
//! operations are committed through a replicated partition's Raft log or, on a single node,
//! applied to the local file: [`ManifestFile`] persists it in the partition directory
//! (`remote-manifest.json`, temp file + fsync + rename).
//! It is mirrored into the bucket as immutable objects so the bucket alone finds every archived
//! record:
//!
//! ```text
//! manifest/chunks/<k>.json   the entries whose sequence number is in [k*1000, (k+1)*1000):
//!                            written once, when the 1000th entry of the chunk is committed
//! manifest/roots/<v>.json    version v: log start offset, uploaded end, the chunk list and the
//!                            entries of the unsealed tail (< 1000); older roots are deleted
//!                            after a new one is written
//! ```
//!
//! A reader lists `roots/` (one or two objects), takes the highest version that parses, and
//! reads the chunks it names: years of segments never need a listing of `segments/` or one
//! huge object. Segments uploaded after the newest root (a crash between the upload and the
//! mirror) are found with one `list_with_offset` after the root's last key: their keys and
//! footers describe them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TierError};
use crate::paths::{self, PartitionRef};
use crate::segment_object::{FOOTER_LEN, Footer};

/// Entries per sealed chunk object.
pub const CHUNK_ENTRIES: u64 = 1000;
/// The local file holding the manifest, in the partition directory.
pub const MANIFEST_FILE: &str = "remote-manifest.json";
const FORMAT: u32 = 1;

/// One remote segment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Base timestamp of the first batch.
    pub first_timestamp: i64,
    /// Largest batch max timestamp.
    pub max_timestamp: i64,
    /// Bytes of the whole object.
    pub size_bytes: u64,
    /// Bytes of the `.log` part at the start of the object.
    pub log_bytes: u64,
    /// Object key, relative to the store root.
    pub key: String,
    pub leader_epoch: i32,
    /// Position in the partition's upload history (chunk = seq / 1000); assigned on commit.
    #[serde(default)]
    pub seq: u64,
}

impl RemoteSegment {
    /// Offset following the segment. Saturates: a manifest read from the bucket may carry any
    /// value, and an overflow must not abort a reader (it is then refused as a gap or overlap).
    pub fn next_offset(&self) -> i64 {
        self.last_offset.saturating_add(1)
    }
}

/// The replicated state: what a Raft commit would carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped by every change.
    pub version: u64,
    /// The remote log start offset as set by retention or DeleteRecords (the effective start
    /// is also never below the first segment: see [`Manifest::log_start_offset`]).
    pub log_start_offset: i64,
    /// One past the last offset ever uploaded; never goes down (local retention's fence).
    pub uploaded_end: i64,
    /// Sequence number the next added segment gets.
    pub next_seq: u64,
    /// Ordered by offset, non-overlapping.
    pub segments: Vec<RemoteSegment>,
}

/// A change to a [`Manifest`]. On a replicated partition ops are Raft entries, applied by
/// every replica in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestOp {
    /// A segment was uploaded (idempotent: the same segment again is a no-op).
    Add(RemoteSegment),
    /// Retention or DeleteRecords: the remote log starts at `offset`; segments wholly below it
    /// leave the manifest.
    RaiseLogStart(i64),
}

/// What applying an op did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Added,
    /// Added, replacing the tail segments it covers wholly (their objects can be deleted): a
    /// new leader's segment boundaries need not match the old leader's, so its first upload
    /// may start below the uploaded end.
    Replaced(Vec<RemoteSegment>),
    AlreadyPresent,
    /// Segments that left the manifest (their objects can now be deleted).
    Dropped(Vec<RemoteSegment>),
}

impl Manifest {
    /// Applies `op`. An `Add` of the same segment again, or of one adding nothing past the
    /// uploaded end (an old retry finishing late, an op replayed after a snapshot), is a no-op.
    /// An `Add` that starts below the uploaded end and reaches past it (a new leader whose
    /// segments roll at other offsets) replaces the tail segments it covers wholly; a segment
    /// it covers only in part stays, so segments may overlap, but both base and last offsets
    /// keep ascending and every offset is in the segment [`find`](Self::find) names.
    pub fn apply(&mut self, op: ManifestOp) -> std::result::Result<Applied, String> {
        match op {
            ManifestOp::Add(mut seg) => {
                if seg.last_offset < seg.base_offset {
                    return Err(format!("segment {} ends before it starts", seg.key));
                }
                if self.segments.iter().any(|s| s.key == seg.key) || seg.next_offset() <= self.uploaded_end || seg.last_offset < self.log_start_offset {
                    return Ok(Applied::AlreadyPresent);
                }
                seg.seq = self.next_seq;
                self.next_seq += 1;
                self.uploaded_end = seg.next_offset();
                let replaced = push_replacing(&mut self.segments, seg);
                if self.segments.len() == 1 {
                    self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
                }
                self.version += 1;
                Ok(if replaced.is_empty() { Applied::Added } else { Applied::Replaced(replaced) })
            }
            ManifestOp::RaiseLogStart(offset) => {
                if offset <= self.log_start_offset {
                    return Ok(Applied::Dropped(Vec::new()));
                }
                self.log_start_offset = offset;
                let n = self.segments.partition_point(|s| s.last_offset < offset);
                let dropped: Vec<RemoteSegment> = self.segments.drain(..n).collect();
                self.version += 1;
                Ok(Applied::Dropped(dropped))
            }
        }
    }

    /// First offset readable from the bucket, `None` when no segment is there.
    pub fn log_start_offset(&self) -> Option<i64> {
        self.segments.first().map(|s| s.base_offset.max(self.log_start_offset))
    }

    /// One past the last remote offset, `None` when no segment is there.
    pub fn end_offset(&self) -> Option<i64> {
        self.segments.last().map(RemoteSegment::next_offset)
    }

    /// Index of the segment holding `offset` (at or above the log start), if any.
    pub fn find(&self, offset: i64) -> Option<usize> {
        if self.log_start_offset().is_none_or(|s| offset < s) {
            return None;
        }
        let i = self.segments.partition_point(|s| s.base_offset <= offset).checked_sub(1)?;
        (offset <= self.segments[i].last_offset).then_some(i)
    }

    /// Index of the first segment whose offsets are all `>= offset`... or that holds it: the
    /// segment a reader at `offset` should use, skipping a gap if there is one.
    pub fn find_at_or_after(&self, offset: i64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.last_offset < offset);
        (i < self.segments.len()).then_some(i)
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().fold(0u64, |sum, s| sum.saturating_add(s.size_bytes))
    }
}

/// Appends `seg` (which ends past every segment in `segments`), removing and returning the
/// segments it covers wholly.
fn push_replacing(segments: &mut Vec<RemoteSegment>, seg: RemoteSegment) -> Vec<RemoteSegment> {
    let keep = segments.partition_point(|s| s.base_offset < seg.base_offset);
    let replaced = segments.split_off(keep);
    segments.push(seg);
    replaced
}

/// Puts segments gathered from the bucket (chunks, root tail) in manifest order: by upload
/// sequence, each replacing what it covers wholly, as [`Manifest::apply`] did.
fn normalize(mut gathered: Vec<RemoteSegment>) -> Vec<RemoteSegment> {
    gathered.sort_by_key(|s| s.seq);
    let mut out: Vec<RemoteSegment> = Vec::with_capacity(gathered.len());
    for seg in gathered {
        if out.last().is_some_and(|l| seg.next_offset() <= l.next_offset()) {
            continue;
        }
        push_replacing(&mut out, seg);
    }
    out
}

/// A chunk object written to the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub index: u64,
    pub key: String,
    pub first_offset: i64,
    pub last_offset: i64,
    pub entries: u32,
}

/// What the bucket holds of the manifest (leader-local bookkeeping, not replicated state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorState {
    /// Version of the newest root written (0: none yet).
    pub root_version: u64,
    /// Sealed chunks written, ascending.
    pub chunks: Vec<ChunkRef>,
}

/// The local file: the manifest, objects waiting to be deleted, and the mirror's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub format: u32,
    pub manifest: Manifest,
    /// Keys of objects that left the manifest and are not deleted yet (retried after a crash).
    #[serde(default)]
    pub pending_deletes: Vec<String>,
    #[serde(default)]
    pub mirror: MirrorState,
}

impl ManifestFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Loads the file; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<ManifestFile>> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TierError::io("read", &path, e)),
        };
        let f: ManifestFile =
            serde_json::from_slice(&bytes).map_err(|e| TierError::LocalIo { op: "parse", path: path.display().to_string(), reason: e.to_string() })?;
        if f.format != FORMAT {
            return Err(TierError::LocalIo { op: "parse", path: path.display().to_string(), reason: format!("unknown manifest format {}", f.format) });
        }
        Ok(Some(f))
    }

    /// Writes the file durably: temporary file, fsync, rename, fsync of the directory. Blocking.
    pub fn store(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        let path = Self::path(dir);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut f = ManifestFile { format: FORMAT, ..self.clone() };
        f.pending_deletes.dedup();
        let bytes = serde_json::to_vec(&f).map_err(|e| TierError::LocalIo { op: "encode", path: path.display().to_string(), reason: e.to_string() })?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| TierError::io("create", &tmp, e))?;
        file.write_all(&bytes).map_err(|e| TierError::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| TierError::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TierError::io("rename", &tmp, e))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| TierError::io("fsync directory", dir, e))
    }
}

/// A root object as it sits in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootObject {
    pub format: u32,
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
    pub version: u64,
    pub log_start_offset: i64,
    pub uploaded_end: i64,
    pub next_seq: u64,
    pub chunks: Vec<ChunkRef>,
    /// Entries not in any chunk yet.
    pub tail: Vec<RemoteSegment>,
}

/// A chunk object as it sits in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkObject {
    pub format: u32,
    pub index: u64,
    pub entries: Vec<RemoteSegment>,
}

fn json<T: Serialize>(v: &T) -> Result<PutPayload> {
    serde_json::to_vec(v).map(PutPayload::from).map_err(|e| TierError::Config(format!("cannot encode manifest object: {e}")))
}

/// Writes what the bucket lacks of `file`'s manifest: new sealed chunks, then a root of the
/// current version, then deletes older roots and chunks nobody references. Returns the new
/// mirror state (the caller persists it). Safe to repeat after any failure.
pub async fn mirror(store: &Arc<dyn ObjectStore>, p: &PartitionRef, file: &ManifestFile) -> Result<MirrorState> {
    let m = &file.manifest;
    let sealed_chunks = m.next_seq / CHUNK_ENTRIES;
    let first_live_seq = m.segments.first().map_or(m.next_seq, |s| s.seq);
    let mut chunks: Vec<ChunkRef> = file.mirror.chunks.clone();
    // chunks whose entries all left the manifest
    let (dead, live): (Vec<ChunkRef>, Vec<ChunkRef>) = chunks.drain(..).partition(|c| (c.index + 1) * CHUNK_ENTRIES <= first_live_seq);
    chunks = live;
    let have: std::collections::BTreeSet<u64> = chunks.iter().map(|c| c.index).collect();
    for k in (first_live_seq / CHUNK_ENTRIES)..sealed_chunks {
        if have.contains(&k) {
            continue;
        }
        let entries: Vec<RemoteSegment> = m.segments.iter().filter(|s| s.seq / CHUNK_ENTRIES == k).cloned().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            continue;
        };
        let key = paths::manifest_chunk(p, k);
        let r = ChunkRef { index: k, key: key.to_string(), first_offset: first.base_offset, last_offset: last.last_offset, entries: entries.len() as u32 };
        store.put(&key, json(&ChunkObject { format: FORMAT, index: k, entries })?).await.map_err(|e| TierError::store(key.as_ref(), e))?;
        chunks.push(r);
    }
    chunks.sort_by_key(|c| c.index);
    let root = RootObject {
        format: FORMAT,
        topic: p.topic.clone(),
        topic_id: p.topic_id.clone(),
        partition: p.partition,
        version: m.version,
        log_start_offset: m.log_start_offset,
        uploaded_end: m.uploaded_end,
        next_seq: m.next_seq,
        chunks: chunks.clone(),
        tail: m.segments.iter().filter(|s| s.seq >= sealed_chunks * CHUNK_ENTRIES).cloned().collect(),
    };
    let root_key = paths::manifest_root(p, m.version);
    store.put(&root_key, json(&root)?).await.map_err(|e| TierError::store(root_key.as_ref(), e))?;
    // older roots: the previous one is known; after a restart (or a recovery) one listing of a
    // directory that holds one or two objects finds any leftovers
    let old: Vec<object_store::path::Path> = if file.mirror.root_version > 0 {
        vec![paths::manifest_root(p, file.mirror.root_version)].into_iter().filter(|_| file.mirror.root_version < m.version).collect()
    } else {
        store
            .list(Some(&paths::manifest_roots_dir(p)))
            .try_filter_map(|o| async move {
                let v = o.location.filename().and_then(paths::parse_version_name);
                Ok(v.filter(|v| *v < m.version).map(|_| o.location))
            })
            .try_collect()
            .await
            .map_err(|e| TierError::store(paths::manifest_roots_dir(p).as_ref(), e))?
    };
    let doomed: Vec<object_store::path::Path> = old.into_iter().chain(dead.iter().map(|c| object_store::path::Path::from(c.key.as_str()))).collect();
    delete_all(store, doomed).await?;
    Ok(MirrorState { root_version: m.version, chunks })
}

/// Deletes objects, ignoring those already gone.
pub async fn delete_all(store: &Arc<dyn ObjectStore>, keys: Vec<object_store::path::Path>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
    let mut results = store.delete_stream(stream);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(TierError::store("delete", e)),
        }
    }
    Ok(())
}

async fn get_json<T: for<'de> Deserialize<'de>>(store: &Arc<dyn ObjectStore>, key: &object_store::path::Path) -> Result<T> {
    let bytes = store.get(key).await.map_err(|e| TierError::store(key.as_ref(), e))?.bytes().await.map_err(|e| TierError::store(key.as_ref(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| TierError::corrupt(key.as_ref(), e.to_string()))
}

/// Reads a segment object's footer (one ranged GET of its last bytes).
pub async fn read_footer(store: &Arc<dyn ObjectStore>, key: &object_store::path::Path, size: u64) -> Result<Footer> {
    if size < FOOTER_LEN as u64 {
        return Err(TierError::corrupt(key.as_ref(), format!("object of {size} bytes has no footer")));
    }
    let b = store.get_range(key, size - FOOTER_LEN as u64..size).await.map_err(|e| TierError::store(key.as_ref(), e))?;
    let f = Footer::decode(&b).map_err(|r| TierError::corrupt(key.as_ref(), r))?;
    if f.object_len() != size {
        return Err(TierError::corrupt(key.as_ref(), format!("object has {size} bytes, its footer describes {}", f.object_len())));
    }
    Ok(f)
}

/// Rebuilds a partition's manifest from the bucket alone: the newest root, its chunks, and
/// any segment objects uploaded after that root was written. `None` if the bucket has nothing
/// for the partition.
pub async fn load_from_bucket(store: &Arc<dyn ObjectStore>, p: &PartitionRef) -> Result<Option<Manifest>> {
    let roots: Vec<(u64, object_store::path::Path)> = store
        .list(Some(&paths::manifest_roots_dir(p)))
        .try_filter_map(|o| async move { Ok(o.location.filename().and_then(paths::parse_version_name).map(|v| (v, o.location))) })
        .try_collect()
        .await
        .map_err(|e| TierError::store(paths::manifest_roots_dir(p).as_ref(), e))?;
    let mut roots = roots;
    roots.sort();
    let mut m = Manifest::default();
    let mut found = false;
    for (v, key) in roots.iter().rev() {
        match get_json::<RootObject>(store, key).await {
            Ok(root) => {
                let mut segments = Vec::new();
                for c in &root.chunks {
                    let chunk: ChunkObject = get_json(store, &object_store::path::Path::from(c.key.as_str())).await?;
                    segments.extend(chunk.entries);
                }
                segments.extend(root.tail);
                segments.retain(|s| s.last_offset >= root.log_start_offset);
                let segments = normalize(segments);
                m = Manifest {
                    version: root.version,
                    log_start_offset: root.log_start_offset,
                    uploaded_end: root.uploaded_end,
                    next_seq: root.next_seq,
                    segments,
                };
                found = true;
                break;
            }
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                tracing::warn!(partition = %p, version = v, error = %e, "skipping unreadable manifest root");
            }
            Err(e) => return Err(e),
        }
    }
    // segments uploaded after the newest root (or with no root at all)
    let dir = paths::segments_dir(p);
    let listing = match m.segments.last() {
        Some(s) => store.list_with_offset(Some(&dir), &object_store::path::Path::from(s.key.as_str())),
        None => store.list(Some(&dir)),
    };
    let mut listed: Vec<(i64, i64, i32, object_store::path::Path, u64)> = listing
        .try_filter_map(|o| async move { Ok(o.location.filename().and_then(paths::parse_segment_name).map(|(b, l, e)| (b, l, e, o.location.clone(), o.size))) })
        .try_collect()
        .await
        .map_err(|e| TierError::store(dir.as_ref(), e))?;
    listed.sort_by_key(|x| (x.0, std::cmp::Reverse(x.2)));
    for (base, last, epoch, key, size) in listed {
        if last < m.uploaded_end {
            continue;
        }
        // a new leader's first segment may start below the end (see `Manifest::apply`)
        if m.end_offset().is_some_and(|end| base > end) {
            break;
        }
        let f = read_footer(store, &key, size).await?;
        if f.base_offset != base || f.last_offset != last {
            return Err(TierError::corrupt(key.as_ref(), "footer does not match the object key"));
        }
        let seg = RemoteSegment {
            base_offset: base,
            last_offset: last,
            first_timestamp: f.first_timestamp,
            max_timestamp: f.max_timestamp,
            size_bytes: size,
            log_bytes: f.log_len,
            key: key.to_string(),
            leader_epoch: epoch,
            seq: 0,
        };
        m.apply(ManifestOp::Add(seg)).map_err(|r| TierError::corrupt(key.as_ref(), r))?;
        found = true;
    }
    Ok(found.then_some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn seg(base: i64, last: i64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            last_offset: last,
            first_timestamp: base,
            max_timestamp: last,
            size_bytes: 100,
            log_bytes: 80,
            key: format!("k{base}-{last}"),
            leader_epoch: 0,
            seq: 0,
        }
    }

    #[test]
    fn add_is_idempotent_and_ordered() {
        let mut m = Manifest::default();
        assert_eq!(m.apply(ManifestOp::Add(seg(0, 9))), Ok(Applied::Added));
        assert_eq!(m.apply(ManifestOp::Add(seg(0, 9))), Ok(Applied::AlreadyPresent));
        assert_eq!(m.apply(ManifestOp::Add(seg(10, 19))), Ok(Applied::Added));
        assert_eq!(m.apply(ManifestOp::Add(seg(5, 12))), Ok(Applied::AlreadyPresent), "nothing past the uploaded end: a late retry");
        assert_eq!((m.log_start_offset(), m.end_offset(), m.uploaded_end, m.version), (Some(0), Some(20), 20, 2));
        assert_eq!(m.find(0), Some(0));
        assert_eq!(m.find(15), Some(1));
        assert_eq!(m.find(20), None);
        assert_eq!(m.segments[1].seq, 1);
    }

    #[test]
    fn a_new_leaders_segments_may_start_below_the_uploaded_end() {
        let mut m = Manifest::default();
        for i in 0..4 {
            m.apply(ManifestOp::Add(seg(i * 10, i * 10 + 9))).expect("add");
        }
        // rolled at 25: overlaps [20, 29] in part, covers [30, 39] wholly
        let Ok(Applied::Replaced(r)) = m.apply(ManifestOp::Add(seg(25, 49))) else { panic!("not replacing") };
        assert_eq!(r.iter().map(|s| s.base_offset).collect::<Vec<_>>(), vec![30]);
        assert_eq!(m.segments.iter().map(|s| (s.base_offset, s.last_offset)).collect::<Vec<_>>(), vec![(0, 9), (10, 19), (20, 29), (25, 49)]);
        assert_eq!(m.uploaded_end, 50);
        // every offset is in the segment `find` names
        for o in 0..50 {
            let i = m.find(o).expect("found");
            assert!(m.segments[i].base_offset <= o && o <= m.segments[i].last_offset, "{o}");
        }
        // retention drops by last offset, which still ascends
        let Ok(Applied::Dropped(d)) = m.apply(ManifestOp::RaiseLogStart(30)) else { panic!("not dropped") };
        assert_eq!(d.len(), 3);
        assert_eq!(m.log_start_offset(), Some(30));
        // a segment covering everything left replaces it; the log start stays
        let Ok(Applied::Replaced(r)) = m.apply(ManifestOp::Add(seg(20, 59))) else { panic!("not replacing") };
        assert_eq!(r.len(), 1);
        assert_eq!(m.segments.len(), 1);
        assert_eq!((m.log_start_offset(), m.end_offset()), (Some(30), Some(60)));
    }

    #[test]
    fn segments_gathered_from_the_bucket_follow_upload_order() {
        let mut gathered = vec![seg(0, 9), seg(10, 19), seg(20, 29), seg(15, 39)];
        for (i, s) in gathered.iter_mut().enumerate() {
            s.seq = i as u64;
        }
        gathered.reverse();
        let n = normalize(gathered);
        assert_eq!(n.iter().map(|s| (s.base_offset, s.last_offset)).collect::<Vec<_>>(), vec![(0, 9), (10, 19), (15, 39)]);
    }

    #[test]
    fn raising_the_start_drops_whole_segments_only() {
        let mut m = Manifest::default();
        for i in 0..5 {
            m.apply(ManifestOp::Add(seg(i * 10, i * 10 + 9))).expect("add");
        }
        let Ok(Applied::Dropped(d)) = m.apply(ManifestOp::RaiseLogStart(25)) else { panic!("not dropped") };
        assert_eq!(d.len(), 2);
        assert_eq!(m.log_start_offset(), Some(25));
        assert_eq!(m.find(24), None);
        assert_eq!(m.find(25), Some(0));
        // everything gone: the uploaded end stays, so nothing is uploaded twice
        m.apply(ManifestOp::RaiseLogStart(50)).expect("raise");
        assert_eq!((m.log_start_offset(), m.uploaded_end), (None, 50));
        assert_eq!(m.apply(ManifestOp::Add(seg(40, 49))), Ok(Applied::AlreadyPresent), "late retry of a dropped segment");
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(ManifestFile::load(dir.path()).ok(), Some(None));
        let mut f = ManifestFile::default();
        f.manifest.apply(ManifestOp::Add(seg(0, 9))).expect("add");
        f.pending_deletes.push("x".into());
        f.store(dir.path()).expect("store");
        let back = ManifestFile::load(dir.path()).expect("load").expect("present");
        assert_eq!(back.manifest, f.manifest);
        assert_eq!(back.pending_deletes, vec!["x".to_string()]);
    }
}
