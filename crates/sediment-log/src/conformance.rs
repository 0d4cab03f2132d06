//! Behaviour every user of the partition log relies on, as a list of checks that run against a
//! fresh directory and panic on failure. The log's own tests run all of them; a storage adapter
//! built on the log (the partition's Raft log store) can run them again through its own opening
//! path, next to openraft's suite. Enable with the `conformance` feature.
//!
//! ```ignore
//! for (name, check) in sediment_log::conformance::CHECKS {
//!     let dir = tempfile::tempdir().unwrap();
//!     println!("{name}");
//!     check(dir.path());
//! }
//! ```

use std::path::Path;

use sediment_protocol::batch::{BatchHeader, BatchIter, set_base_offset, set_partition_leader_epoch, testing};

use crate::{LogConfig, LogError, PartitionLog};

/// One check: gets an empty directory, panics on failure.
pub type Check = fn(&Path);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("offsets_are_contiguous_from_zero", offsets_are_contiguous_from_zero),
    ("epochs_are_kept_per_batch_across_reopen", epochs_are_kept_per_batch_across_reopen),
    ("truncate_then_append_with_a_new_epoch", truncate_then_append_with_a_new_epoch),
    ("truncate_rejects_non_boundaries_and_out_of_range", truncate_rejects_non_boundaries_and_out_of_range),
    ("append_assigned_continues_the_log_or_writes_nothing", append_assigned_continues_the_log_or_writes_nothing),
    ("flushed_offset_follows_group_commit", flushed_offset_follows_group_commit),
    ("reopen_keeps_offsets_across_many_segments", reopen_keeps_offsets_across_many_segments),
    ("torn_tail_keeps_the_whole_prefix", torn_tail_keeps_the_whole_prefix),
    ("truncate_fully_restarts_at_an_offset", truncate_fully_restarts_at_an_offset),
    ("log_start_offset_survives_reopen", log_start_offset_survives_reopen),
    ("every_offset_reads_its_batch", every_offset_reads_its_batch),
];

/// Small segments and a dense index, so every check crosses segment boundaries.
pub fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 200, ..LogConfig::default() }
}

/// A valid batch of `records` records whose values are `value_len` bytes each.
pub fn batch(records: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| vec![b'a' + (i % 26) as u8; value_len]).collect();
    testing::batch_from_values(&values, ts)
}

/// Every batch from the log start offset to the log end offset, across segments, byte for byte.
pub fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX, true).and_then(|p| p.execute()).expect("read");
        let last = BatchIter::new(&bytes).last().map(|(h, _)| h.next_offset()).expect("a read returns a batch");
        assert!(last > offset, "read at {offset} made no progress");
        out.extend_from_slice(&bytes);
        offset = last;
    }
    out
}

/// (base offset, last offset, leader epoch) of every batch in the log.
pub fn batch_ids(log: &PartitionLog) -> Vec<(i64, i64, i32)> {
    let all = read_all(log);
    BatchIter::new(&all).map(|(h, _)| (h.base_offset, h.last_offset(), h.partition_leader_epoch)).collect()
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, small_config()).expect("open log")
}

fn append_n(log: &mut PartitionLog, n: usize, epoch: i32) {
    for i in 0..n {
        let mut b = batch(1 + i % 4, 40 + (i * 37) % 300, 1_000 + i as i64);
        log.append(&mut b, epoch, 0).expect("append");
    }
}

pub fn offsets_are_contiguous_from_zero(dir: &Path) {
    let mut log = open(dir);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut next = 0;
    for i in 0..40 {
        let mut b = batch(1 + i % 5, 100, 0);
        let info = log.append(&mut b, 0, 0).expect("append");
        assert_eq!(info.base_offset, next);
        assert_eq!(info.last_offset, next + (i % 5) as i64);
        next = info.last_offset + 1;
        assert_eq!(log.log_end_offset(), next);
    }
    assert!(log.segments().len() > 1, "small segments roll");
    let ids = batch_ids(&log);
    assert_eq!(ids.len(), 40);
    assert!(ids.windows(2).all(|w| w[1].0 == w[0].1 + 1));
}

pub fn epochs_are_kept_per_batch_across_reopen(dir: &Path) {
    let mut log = open(dir);
    for epoch in [1, 1, 2, 3, 3, 3, 5] {
        append_n(&mut log, 3, epoch);
    }
    let before = batch_ids(&log);
    drop(log); // unclean
    let log = open(dir);
    assert_eq!(batch_ids(&log), before);
    log.close().expect("close");
    let log = open(dir);
    assert_eq!(batch_ids(&log), before);
    let epochs: Vec<i32> = before.iter().map(|b| b.2).collect();
    assert_eq!(epochs.first(), Some(&1));
    assert_eq!(epochs.last(), Some(&5));
}

pub fn truncate_then_append_with_a_new_epoch(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 30, 1);
    let ids = batch_ids(&log);
    let cut = ids[8].0; // a batch boundary in an early segment
    assert!(log.segments().iter().filter(|s| s.base_offset > cut).count() >= 1);
    log.truncate_to(cut).expect("truncate");
    assert_eq!(log.log_end_offset(), cut);
    assert_eq!(log.flushed_offset(), cut);
    assert!(log.segments().iter().all(|s| s.base_offset <= cut));
    append_n(&mut log, 5, 2);
    let after = batch_ids(&log);
    assert_eq!(&after[..8], &ids[..8]);
    assert_eq!(after[8].0, cut);
    assert!(after[8..].iter().all(|b| b.2 == 2));
    drop(log);
    let log = open(dir);
    assert_eq!(batch_ids(&log), after);
}

pub fn truncate_rejects_non_boundaries_and_out_of_range(dir: &Path) {
    let mut log = open(dir);
    let mut b = batch(5, 10, 0);
    log.append(&mut b, 0, 0).expect("append");
    assert!(matches!(log.truncate_to(2), Err(LogError::NotBatchBoundary(2))));
    assert!(matches!(log.truncate_to(6), Err(LogError::OffsetOutOfRange { .. })));
    log.truncate_to(5).expect("truncate at the log end is a no-op");
    assert_eq!(log.log_end_offset(), 5);
    log.truncate_to(0).expect("truncate everything");
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

pub fn append_assigned_continues_the_log_or_writes_nothing(dir: &Path) {
    let mut log = open(dir);
    let mut leader = Vec::new();
    let mut next = 0i64;
    for i in 0..25 {
        let mut b = batch(1 + i % 3, 150, 10 + i as i64);
        set_base_offset(&mut b, next);
        set_partition_leader_epoch(&mut b, 4);
        next += 1 + (i % 3) as i64;
        leader.extend_from_slice(&b);
    }
    let info = log.append_assigned(&leader, 0).expect("append assigned");
    assert_eq!((info.base_offset, info.last_offset), (0, next - 1));
    assert_eq!(read_all(&log), leader);
    // a gap
    let mut gap = batch(1, 10, 0);
    set_base_offset(&mut gap, next + 1);
    assert!(matches!(log.append_assigned(&gap, 0), Err(LogError::UnexpectedOffset { .. })));
    // a good batch followed by a corrupt one: nothing is written
    let mut good = batch(1, 10, 0);
    set_base_offset(&mut good, next);
    let mut bad = batch(1, 10, 0);
    set_base_offset(&mut bad, next + 1);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut both = good.clone();
    both.extend_from_slice(&bad);
    assert!(matches!(log.append_assigned(&both, 0), Err(LogError::InvalidBatch(_))));
    // a partial batch at the end
    let mut partial = good.clone();
    partial.extend_from_slice(&good[..30]);
    assert!(matches!(log.append_assigned(&partial, 0), Err(LogError::InvalidBatch(_))));
    assert_eq!(log.log_end_offset(), next);
    assert_eq!(read_all(&log), leader);
}

pub fn flushed_offset_follows_group_commit(dir: &Path) {
    let mut log = open(dir);
    assert!(log.begin_flush().is_none());
    let mut b = batch(3, 10, 0);
    log.append(&mut b, 0, 0).expect("append");
    assert_eq!(log.flushed_offset(), 0);
    let job = log.begin_flush().expect("dirty");
    assert_eq!(job.target_offset(), 3);
    let mut b = batch(2, 10, 0);
    log.append(&mut b, 0, 0).expect("append");
    let done = job.run().expect("fsync");
    log.complete_flush(done);
    assert_eq!(log.flushed_offset(), 3, "only what was appended before the job began");
    log.flush().expect("flush");
    assert_eq!(log.flushed_offset(), 5);
    assert!(log.begin_flush().is_none());
    // a flush begun before a truncation publishes nothing after it
    let mut b = batch(2, 10, 0);
    log.append(&mut b, 0, 0).expect("append");
    let job = log.begin_flush().expect("dirty");
    log.truncate_to(5).expect("truncate");
    let mut b = batch(4, 10, 0);
    log.append(&mut b, 0, 0).expect("append");
    log.complete_flush(job.run().expect("fsync"));
    assert_eq!(log.flushed_offset(), 5);
}

pub fn reopen_keeps_offsets_across_many_segments(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 200, 0);
    let (end, segments, all) = (log.log_end_offset(), log.segments(), read_all(&log));
    assert!(segments.len() > 10);
    drop(log);
    let mut log = open(dir);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        log.segments().iter().map(|s| (s.base_offset, s.next_offset, s.size_bytes)).collect::<Vec<_>>(),
        segments.iter().map(|s| (s.base_offset, s.next_offset, s.size_bytes)).collect::<Vec<_>>()
    );
    assert_eq!(read_all(&log), all);
    let mut b = batch(1, 10, 0);
    assert_eq!(log.append(&mut b, 0, 0).expect("append").base_offset, end);
}

pub fn torn_tail_keeps_the_whole_prefix(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 12, 0);
    let mut b = batch(3, 200, 0);
    let last = log.append(&mut b, 0, 0).expect("append");
    let active = log.segments().last().map(|s| (s.log_path.clone(), s.size_bytes)).expect("a segment");
    drop(log);
    let f = std::fs::OpenOptions::new().write(true).open(&active.0).expect("open segment");
    f.set_len(active.1 - 50).expect("tear");
    drop(f);
    let mut log = open(dir);
    assert_eq!(log.log_end_offset(), last.base_offset);
    let mut b = batch(1, 10, 0);
    assert_eq!(log.append(&mut b, 0, 0).expect("append").base_offset, last.base_offset);
}

pub fn truncate_fully_restarts_at_an_offset(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 20, 0);
    log.truncate_fully_and_start_at(1_000).expect("reset");
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (1_000, 1_000, 0));
    assert_eq!(log.segments().len(), 1);
    let mut b = batch(2, 10, 0);
    assert_eq!(log.append(&mut b, 3, 0).expect("append").base_offset, 1_000);
    drop(log);
    let log = open(dir);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1_000, 1_002));
    assert_eq!(batch_ids(&log), vec![(1_000, 1_001, 3)]);
}

pub fn log_start_offset_survives_reopen(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 60, 0);
    let ids = batch_ids(&log);
    let target = ids[30].0 + 1; // inside a batch: allowed, like Kafka
    assert_eq!(log.delete_records_before(target).expect("delete records"), target);
    assert!(log.segments()[0].base_offset <= target);
    assert!(log.segments().len() > 1);
    assert!(matches!(log.read(target - 1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let log = open(dir);
    assert_eq!(log.log_start_offset(), target);
    let first: Vec<BatchHeader> = {
        let b = log.read(target, 1, i64::MAX, true).and_then(|p| p.execute()).expect("read");
        BatchIter::new(&b).map(|(h, _)| h).collect()
    };
    assert_eq!(first[0].base_offset, ids[30].0);
}

pub fn every_offset_reads_its_batch(dir: &Path) {
    let mut log = open(dir);
    append_n(&mut log, 80, 0);
    for offset in 0..log.log_end_offset() {
        let b = log.read(offset, 1, i64::MAX, true).and_then(|p| p.execute()).expect("read");
        let (h, whole) = BatchIter::new(&b).next().expect("one batch");
        assert!(h.base_offset <= offset && offset <= h.last_offset(), "offset {offset} in {h:?}");
        assert_eq!(whole.len(), b.len());
    }
}
