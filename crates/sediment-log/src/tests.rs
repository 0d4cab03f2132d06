//! Unit tests of the partition log's API, recovery and the conformance list.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use sediment_protocol::batch::{BatchHeader, BatchIter, set_base_offset, testing, verify_crc};

use crate::conformance::{self, batch, batch_ids, read_all};
use crate::{LogConfig, LogError, PartitionLog, ReadPlan};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn small() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, ..LogConfig::default() }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open")
}

fn append(log: &mut PartitionLog, records: usize, value_len: usize, ts: i64) -> crate::AppendInfo {
    let mut b = batch(records, value_len, ts);
    log.append(&mut b, 0, 0).expect("append")
}

fn read(log: &PartitionLog, offset: i64, max: usize, upper: i64, min_one: bool) -> Bytes {
    log.read(offset, max, upper, min_one).expect("plan").execute().expect("execute")
}

fn headers(b: &[u8]) -> Vec<BatchHeader> {
    let it = BatchIter::new(b);
    let hs: Vec<BatchHeader> = it.map(|(h, _)| h).collect();
    assert_eq!(hs.iter().map(|h| h.total_len()).sum::<usize>(), b.len(), "whole batches only");
    hs
}

fn active_path(log: &PartitionLog) -> std::path::PathBuf {
    log.segments().last().expect("segment").log_path.clone()
}

#[test]
fn conformance_checks_pass() {
    for (name, check) in conformance::CHECKS {
        let dir = tmp();
        eprintln!("conformance: {name}");
        check(dir.path());
    }
}

#[test]
fn partition_log_and_plans_are_send() {
    fn send<T: Send>() {}
    send::<PartitionLog>();
    send::<ReadPlan>();
    send::<crate::FlushJob>();
}

#[test]
fn open_creates_directory_and_first_segment() {
    let dir = tmp();
    let path = dir.path().join("a/b/topic-0");
    let log = open(&path, LogConfig::default());
    assert_eq!(log.dir(), path);
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.flushed_offset(), log.size_bytes()), (0, 0, 0, 0));
    let segs = log.segments();
    assert_eq!(segs.len(), 1);
    assert!(!segs[0].sealed);
    assert_eq!(segs[0].log_path, path.join("00000000000000000000.log"));
    assert!(path.join("00000000000000000000.index").exists());
    assert!(path.join("00000000000000000000.timeindex").exists());
}

#[test]
fn append_patches_offset_and_epoch_in_place() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    append(&mut log, 4, 10, 100);
    let mut b = batch(3, 10, 200);
    let info = log.append(&mut b, 9, 0).expect("append");
    assert_eq!(info, crate::AppendInfo { base_offset: 4, last_offset: 6, max_timestamp: 202 });
    let h = BatchHeader::parse(&b).expect("header");
    assert_eq!((h.base_offset, h.partition_leader_epoch), (4, 9));
    verify_crc(&b).expect("crc still valid");
    let stored = read(&log, 4, 1 << 20, i64::MAX, false);
    assert_eq!(&stored[..], &b[..]);
    assert_eq!(log.size_bytes(), fs::metadata(active_path(&log)).expect("stat").len());
}

#[test]
fn append_rejects_anything_but_one_whole_batch() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    let mut two = batch(1, 10, 0);
    two.extend_from_slice(&batch(1, 10, 0));
    assert!(matches!(log.append(&mut two, 0, 0), Err(LogError::InvalidBatch(_))));
    let mut short = batch(1, 10, 0);
    short.pop();
    assert!(matches!(log.append(&mut short, 0, 0), Err(LogError::InvalidBatch(_))));
    let mut garbage = vec![7u8; 100];
    assert!(matches!(log.append(&mut garbage, 0, 0), Err(LogError::InvalidBatch(_))));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn read_bounds_and_empty_plans() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    assert!(log.read(0, 100, i64::MAX, true).expect("plan").is_empty());
    assert!(matches!(log.read(1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { offset: 1, start: 0, end: 0 })));
    append(&mut log, 5, 10, 0);
    assert!(log.read(5, 100, i64::MAX, true).expect("plan").is_empty());
    assert!(log.read(3, 100, 3, true).expect("plan").is_empty(), "offset == upper bound");
    assert!(log.read(4, 100, 3, true).expect("plan").is_empty(), "offset above upper bound");
    assert!(matches!(log.read(-1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    assert!(matches!(log.read(6, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(read(&log, 3, 1 << 20, i64::MAX, true).len(), log.size_bytes() as usize);
}

#[test]
fn read_starts_with_the_batch_holding_the_offset() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { index_interval_bytes: 100, ..LogConfig::default() });
    for _ in 0..50 {
        append(&mut log, 4, 30, 0);
    }
    for offset in [0, 1, 3, 4, 77, 199] {
        let hs = headers(&read(&log, offset, 1 << 20, i64::MAX, true));
        assert_eq!(hs[0].base_offset, offset / 4 * 4);
        assert_eq!(hs.last().map(|h| h.last_offset()), Some(199));
    }
}

#[test]
fn read_returns_whole_batches_within_max_bytes() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    let one = batch(2, 50, 0).len();
    for _ in 0..10 {
        append(&mut log, 2, 50, 0);
    }
    for max in [one, one + 1, 2 * one - 1, 3 * one + 7] {
        let b = read(&log, 0, max, i64::MAX, false);
        assert_eq!(b.len(), max / one * one, "max_bytes {max}");
        assert_eq!(headers(&b).len(), max / one);
    }
}

#[test]
fn min_one_returns_a_first_batch_larger_than_max_bytes() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    append(&mut log, 1, 5000, 0);
    append(&mut log, 1, 10, 0);
    assert!(read(&log, 0, 100, i64::MAX, false).is_empty());
    assert!(read(&log, 0, 10, i64::MAX, false).is_empty(), "window smaller than a header");
    for max in [0, 10, 100, 4000] {
        let b = read(&log, 0, max, i64::MAX, true);
        let hs = headers(&b);
        assert_eq!(hs.len(), 1, "max_bytes {max}");
        assert_eq!(hs[0].base_offset, 0);
        assert!(b.len() > 5000);
    }
}

#[test]
fn upper_bound_cuts_reads_in_active_and_sealed_segments() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    let mut bases = Vec::new();
    for _ in 0..80 {
        bases.push(append(&mut log, 3, 60, 0).base_offset);
    }
    let leo = log.log_end_offset();
    assert!(log.segments().len() > 3);
    // every upper bound at every batch boundary, reading from offset 0 and from the middle
    for &hw in &bases[1..] {
        for from in [0, hw / 2] {
            if from >= hw {
                continue;
            }
            let b = read(&log, from, 1 << 20, hw, true);
            assert!(headers(&b).iter().all(|h| h.last_offset() < hw), "hw {hw} from {from}");
            assert!(!b.is_empty());
        }
    }
    // after a reopen the sealed segments' indexes are lazy and the ring holds only the tail
    drop(log);
    let log = open(dir.path(), small());
    let b = read(&log, 0, 1 << 20, bases[2], true);
    assert_eq!(headers(&b).len(), 2);
    let b = read(&log, bases[78], 1 << 20, leo, true);
    assert_eq!(headers(&b).len(), 2);
    // an upper bound inside the first batch gives nothing, even with min_one
    assert!(read(&log, 0, 1 << 20, 2, true).is_empty());
}

#[test]
fn reads_stay_in_one_segment_and_cross_boundaries_by_offset() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    for i in 0..60 {
        append(&mut log, 2, 100, i);
    }
    let segs = log.segments();
    assert!(segs.len() >= 4);
    assert!(segs[..segs.len() - 1].iter().all(|s| s.sealed));
    for s in &segs {
        let b = read(&log, s.base_offset, 1 << 20, i64::MAX, true);
        let hs = headers(&b);
        assert_eq!(hs[0].base_offset, s.base_offset);
        assert_eq!(hs.last().map(|h| h.next_offset()), Some(s.next_offset), "the whole segment, nothing more");
        assert_eq!(b.len() as u64, s.size_bytes);
    }
    // an offset in an older segment, from the middle of it
    let mid = segs[1].base_offset + 3;
    let hs = headers(&read(&log, mid, 1 << 20, i64::MAX, true));
    assert!(hs[0].base_offset <= mid && mid <= hs[0].last_offset());
    assert_eq!(hs.last().map(|h| h.next_offset()), Some(segs[1].next_offset));
}

#[test]
fn read_plans_do_not_see_later_appends_and_survive_deletion() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { retention_bytes: 0, ..small() });
    append(&mut log, 1, 10, 0);
    let plan = log.read(0, 1 << 20, i64::MAX, true).expect("plan");
    append(&mut log, 1, 10, 0);
    assert_eq!(headers(&plan.execute().expect("execute")).len(), 1);
    // a plan on a sealed segment stays readable after retention deleted it
    for _ in 0..40 {
        append(&mut log, 1, 200, 0);
    }
    let first = log.segments()[0].clone();
    let plan = log.read(0, 1 << 20, i64::MAX, true).expect("plan");
    let out = log.apply_retention(0).expect("retention");
    assert!(out.segments_deleted > 0);
    assert!(!first.log_path.exists());
    assert_eq!(plan.execute().expect("execute").len() as u64, first.size_bytes);
}

#[test]
fn rolls_by_size() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { segment_bytes: 1000, ..LogConfig::default() });
    let len = batch(1, 200, 0).len() as u64;
    for _ in 0..10 {
        append(&mut log, 1, 200, 0);
    }
    let segs = log.segments();
    let per = 1000 / len;
    assert_eq!(segs.len() as u64, 10_u64.div_ceil(per));
    for s in &segs {
        assert!(s.size_bytes <= 1000);
        assert_eq!(s.log_path.file_name().and_then(|n| n.to_str()), Some(format!("{:020}.log", s.base_offset).as_str()));
    }
    for w in segs.windows(2) {
        assert_eq!(w[0].next_offset, w[1].base_offset);
    }
    assert_eq!(log.flushed_offset(), segs.last().map_or(0, |s| s.base_offset), "rolling fsyncs the sealed segment");
    // a batch bigger than segment_bytes still goes into an empty segment
    append(&mut log, 1, 3000, 0);
    let last = log.segments().last().cloned().expect("segment");
    assert!(last.size_bytes > 1000);
    assert_eq!(log.log_end_offset(), last.next_offset);
}

#[test]
fn rolls_by_time_of_first_append() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { segment_ms: 1000, ..LogConfig::default() });
    let mut b = batch(1, 10, 0);
    log.append(&mut b, 0, 10_000).expect("append");
    let mut b = batch(1, 10, 0);
    log.append(&mut b, 0, 10_900).expect("append");
    let mut b = batch(1, 10, 0);
    log.append(&mut b, 0, 11_000).expect("append");
    assert_eq!(log.segments().len(), 1, "not older than segment_ms yet");
    let mut b = batch(1, 10, 0);
    log.append(&mut b, 0, 11_001).expect("append");
    let segs = log.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].base_offset, 3);
    // the new segment's clock starts at its own first append
    let mut b = batch(1, 10, 0);
    log.append(&mut b, 0, 11_900).expect("append");
    assert_eq!(log.segments().len(), 2);
}

#[test]
fn rolls_when_the_index_is_full() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { index_interval_bytes: 1, segment_index_bytes: 24, ..LogConfig::default() });
    for _ in 0..20 {
        append(&mut log, 1, 10, 0);
    }
    let segs = log.segments();
    assert!(segs.len() >= 4, "{segs:?}");
    for s in &segs[..segs.len() - 1] {
        let idx = s.log_path.with_extension("index");
        assert!(fs::metadata(&idx).expect("index").len() <= 24);
    }
}

#[test]
fn manual_roll_seals_and_syncs_only_a_non_empty_segment() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    log.roll().expect("roll");
    assert_eq!(log.segments().len(), 1);
    append(&mut log, 3, 10, 0);
    assert_eq!(log.flushed_offset(), 0);
    log.roll().expect("roll");
    let segs = log.segments();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].sealed && !segs[1].sealed);
    assert_eq!(segs[1].base_offset, 3);
    assert_eq!(log.flushed_offset(), 3);
    log.roll().expect("roll");
    assert_eq!(log.segments().len(), 2);
}

#[test]
fn retention_by_time_keeps_the_active_segment() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { retention_ms: 1000, ..small() });
    // timestamps grow by 100 ms per batch
    for i in 0..40 {
        append(&mut log, 1, 200, i * 100);
    }
    let segs = log.segments();
    assert!(segs.len() >= 3);
    // nothing is old enough yet
    let now = segs[0].max_timestamp + 1000;
    assert_eq!(log.apply_retention(now).expect("retention").segments_deleted, 0);
    // the first segment's newest record is now just over retention_ms old
    let out = log.apply_retention(now + 1).expect("retention");
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(out.bytes_deleted, segs[0].size_bytes);
    assert_eq!(log.log_start_offset(), segs[1].base_offset);
    assert!(!segs[0].log_path.exists());
    assert!(!segs[0].log_path.with_extension("index").exists());
    // far in the future: every sealed segment goes, the active one stays
    let out = log.apply_retention(i64::MAX / 2).expect("retention");
    assert_eq!(out.segments_deleted, segs.len() - 2);
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.log_start_offset(), segs.last().map_or(0, |s| s.base_offset));
    assert_eq!(log.size_bytes(), segs.last().map_or(0, |s| s.size_bytes));
    // forever
    log.set_config(LogConfig { retention_ms: -1, ..small() });
    assert_eq!(log.apply_retention(i64::MAX / 2).expect("retention").segments_deleted, 0);
}

#[test]
fn retention_by_bytes_deletes_oldest_while_still_over() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { retention_ms: -1, ..small() });
    for _ in 0..50 {
        append(&mut log, 1, 200, 0);
    }
    let segs = log.segments();
    let total = log.size_bytes();
    let limit = total - segs[0].size_bytes - segs[1].size_bytes / 2;
    log.set_config(LogConfig { retention_ms: -1, retention_bytes: limit as i64, ..small() });
    // the plan names where the log will start, and deletes nothing
    let second_base = segs[1].base_offset;
    assert_eq!(log.retention_plan(0, i64::MAX).expect("plan"), Some(second_base));
    assert_eq!(log.retention_plan(0, segs[0].base_offset).expect("plan"), None, "fenced below the first segment's end");
    assert_eq!(log.segments().len(), segs.len());
    let out = log.apply_retention(0).expect("retention");
    // deleting the first brings it to total - s0 >= limit; deleting the second would go below
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), second_base);
    assert_eq!(log.retention_plan(0, i64::MAX).expect("plan"), None, "nothing more to delete");
    assert!(log.size_bytes() >= limit);
    log.set_config(LogConfig { retention_ms: -1, retention_bytes: 0, ..small() });
    log.apply_retention(0).expect("retention");
    assert_eq!(log.segments().len(), 1, "only the active segment is left");
    let reopened = {
        drop(log);
        open(dir.path(), small())
    };
    assert_eq!(reopened.log_start_offset(), segs.last().map_or(0, |s| s.base_offset));
}

#[test]
fn delete_records_before_raises_and_persists_the_start() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    for _ in 0..40 {
        append(&mut log, 2, 150, 0);
    }
    let segs = log.segments();
    let end = log.log_end_offset();
    assert!(matches!(log.delete_records_before(end + 1), Err(LogError::OffsetOutOfRange { .. })));
    let target = segs[2].base_offset + 1;
    assert_eq!(log.delete_records_before(target).expect("delete"), target);
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(log.segments()[0].base_offset, segs[2].base_offset);
    assert!(!segs[0].log_path.exists() && !segs[1].log_path.exists());
    assert_eq!(log.delete_records_before(3).expect("lower is a no-op"), target);
    assert!(matches!(log.read(target - 1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    // reads at the new start return the batch holding it
    assert_eq!(headers(&read(&log, target, 1, i64::MAX, true))[0].base_offset, target - 1);
    // up to the log end: every sealed segment goes, the (non-empty) active one stays
    assert_eq!(log.delete_records_before(end).expect("delete"), end);
    assert_eq!(log.segments().len(), 1);
    assert!(log.read(end, 100, i64::MAX, true).expect("plan").is_empty());
    drop(log);
    let mut log = open(dir.path(), small());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    assert_eq!(append(&mut log, 1, 10, 0).base_offset, end);
}

#[test]
fn truncate_inside_the_active_segment_then_append() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { index_interval_bytes: 50, ..LogConfig::default() });
    let infos: Vec<_> = (0..20).map(|i| append(&mut log, 2, 30, 1000 + i)).collect();
    log.truncate_to(infos[12].base_offset).expect("truncate");
    assert_eq!(log.log_end_offset(), 24);
    assert_eq!(log.size_bytes(), fs::metadata(active_path(&log)).expect("stat").len());
    // the time index forgot the cut batches
    let max = log.find_batch_with_max_timestamp().expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&max).expect("header").base_offset, infos[11].base_offset);
    assert!(log.find_batch_by_timestamp(1000 + 14).expect("search").is_none());
    let info = append(&mut log, 3, 30, 5000);
    assert_eq!(info.base_offset, 24);
    let hs = headers(&read(&log, 0, 1 << 20, i64::MAX, true));
    assert_eq!(hs.len(), 13);
    assert_eq!(hs[12].base_offset, 24);
}

#[test]
fn truncate_into_a_sealed_segment_makes_it_active() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    let infos: Vec<_> = (0..60).map(|i| append(&mut log, 1, 150, i)).collect();
    drop(log);
    let mut log = open(dir.path(), small()); // sealed indexes now lazy
    let segs = log.segments();
    let target_seg = &segs[1];
    let cut = target_seg.base_offset + 2;
    log.truncate_to(cut).expect("truncate");
    let after = log.segments();
    assert_eq!(after.len(), 2);
    assert!(after[0].sealed && !after[1].sealed);
    assert_eq!(log.log_end_offset(), cut);
    assert!(segs[2..].iter().all(|s| !s.log_path.exists()));
    // appends continue in the truncated segment
    let info = append(&mut log, 1, 150, 99);
    assert_eq!(info.base_offset, cut);
    assert_eq!(log.segments().len(), 2);
    let found = log.find_batch_by_timestamp(99).expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&found).expect("header").base_offset, cut);
    assert_eq!(batch_ids(&log).len() as i64, cut + 1);
    // and at a segment's base offset
    log.truncate_to(after[1].base_offset).expect("truncate");
    assert_eq!(log.segments().last().map(|s| s.size_bytes), Some(0));
    assert_eq!(append(&mut log, 1, 10, 0).base_offset, after[1].base_offset);
    drop(log);
    let log = open(dir.path(), small());
    assert_eq!(log.log_end_offset(), after[1].base_offset + 1);
    assert_eq!(infos[0].base_offset, 0);
}

#[test]
fn find_batch_by_timestamp_uses_the_time_index() {
    let dir = tmp();
    let cfg = LogConfig { index_interval_bytes: 100, ..small() };
    let mut log = open(dir.path(), cfg);
    // batch i holds 3 records at 10*i .. 10*i+2, except that batch 30 jumps back in time
    for i in 0..80i64 {
        let ts = if i == 30 { 5 } else { 10 * i };
        append(&mut log, 3, 40, ts);
    }
    assert!(log.segments().len() > 2);
    let check = |log: &PartitionLog| {
        for target in [0, 1, 2, 3, 10, 11, 12, 13, 295, 302, 303, 555, 792] {
            let found = log.find_batch_by_timestamp(target).expect("search").expect("a batch");
            let h = BatchHeader::parse(&found).expect("header");
            let expect = (0..80i64).find(|&i| i != 30 && 10 * i + 2 >= target).map(|i| i * 3);
            assert_eq!(Some(h.base_offset), expect, "ts {target}");
            assert_eq!(found.len(), h.total_len());
        }
        assert!(log.find_batch_by_timestamp(793).expect("search").is_none());
    };
    check(&log);
    drop(log);
    check(&open(dir.path(), cfg));
    // batches below the log start offset are skipped
    let mut log = open(dir.path(), cfg);
    log.delete_records_before(150).expect("delete");
    let found = log.find_batch_by_timestamp(0).expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&found).expect("header").base_offset, 150);
}

#[test]
fn find_batch_with_max_timestamp() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    assert!(log.find_batch_with_max_timestamp().expect("search").is_none());
    let mut peak = 0;
    for i in 0..50i64 {
        let ts = if i == 17 { 1_000_000 } else { i * 10 };
        let info = append(&mut log, 2, 100, ts);
        if i == 17 {
            peak = info.base_offset;
        }
    }
    let b = log.find_batch_with_max_timestamp().expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&b).expect("header").base_offset, peak);
    drop(log);
    let mut log = open(dir.path(), small());
    let b = log.find_batch_with_max_timestamp().expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&b).expect("header").base_offset, peak);
    // once the peak is below the log start, the next largest wins
    log.delete_records_before(peak + 2).expect("delete");
    let b = log.find_batch_with_max_timestamp().expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&b).expect("header").max_timestamp, 491);
}

fn write_and_drop(dir: &Path, cfg: LogConfig, n: usize) -> (Vec<crate::AppendInfo>, Vec<u8>) {
    let mut log = open(dir, cfg);
    let infos: Vec<_> = (0..n).map(|i| append(&mut log, 1 + i % 3, 100, i as i64)).collect();
    let all = read_all(&log);
    drop(log);
    (infos, all)
}

fn reopen_expect(dir: &Path, cfg: LogConfig, infos: &[crate::AppendInfo], all: &[u8], whole: usize) {
    let mut log = open(dir, cfg);
    let expect_end = infos.get(whole).map_or_else(|| infos[infos.len() - 1].last_offset + 1, |i| i.base_offset);
    assert_eq!(log.log_end_offset(), expect_end);
    assert_eq!(log.flushed_offset(), expect_end);
    let got = read_all(&log);
    assert_eq!(&got[..], &all[..got.len()]);
    assert_eq!(headers(&got).len(), whole);
    assert_eq!(log.size_bytes(), log.segments().iter().map(|s| s.size_bytes).sum::<u64>());
    assert_eq!(fs::metadata(active_path(&log)).expect("stat").len(), log.segments().last().map_or(0, |s| s.size_bytes));
    let info = append(&mut log, 2, 10, 0);
    assert_eq!(info.base_offset, expect_end);
    assert_eq!(read(&log, expect_end, 1 << 20, i64::MAX, true).len(), batch(2, 10, 0).len());
}

#[test]
fn recovery_cuts_a_batch_torn_in_the_middle() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let len = fs::metadata(&path).expect("stat").len();
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len - 40).expect("tear");
    reopen_expect(dir.path(), small(), &infos, &all, 29);
}

#[test]
fn recovery_cuts_a_torn_header() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let last_len = batch(1 + 29 % 3, 100, 0).len() as u64;
    let len = fs::metadata(&path).expect("stat").len();
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len - last_len + 20).expect("tear");
    reopen_expect(dir.path(), small(), &infos, &all, 29);
}

#[test]
fn recovery_cuts_a_batch_with_a_flipped_byte() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let len = fs::metadata(&path).expect("stat").len();
    let f = OpenOptions::new().read(true).write(true).open(&path).expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - 10).expect("read");
    b[0] ^= 0x5a;
    f.write_all_at(&b, len - 10).expect("write");
    reopen_expect(dir.path(), small(), &infos, &all, 29);
}

#[test]
fn recovery_cuts_appended_garbage() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let len = fs::metadata(&path).expect("stat").len();
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(&[0xab; 333], len).expect("garbage");
    reopen_expect(dir.path(), small(), &infos, &all, 30);
    // zeros (a preallocated or half-written tail) too
    let len = fs::metadata(&path).expect("stat").len();
    f.write_all_at(&[0; 4096], len).expect("zeros");
    let log = open(dir.path(), small());
    assert_eq!(log.log_end_offset(), infos[29].last_offset + 1 + 2);
}

#[test]
fn recovery_survives_a_header_claiming_gigabytes() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let len = fs::metadata(&path).expect("stat").len();
    // a plausible header whose length says 2 GiB, then a little data
    let mut fake = batch(1, 10, 0);
    set_base_offset(&mut fake, infos[29].last_offset + 1);
    fake[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(&fake, len).expect("write");
    reopen_expect(dir.path(), small(), &infos, &all, 30);
}

#[test]
fn recovery_cuts_a_batch_that_does_not_continue_the_offsets() {
    let dir = tmp();
    let (infos, all) = write_and_drop(dir.path(), small(), 30);
    let path = active_path(&open(dir.path(), small()));
    let len = fs::metadata(&path).expect("stat").len();
    let mut stray = batch(1, 10, 0);
    set_base_offset(&mut stray, 5); // valid CRC, wrong offset
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(&stray, len).expect("write");
    reopen_expect(dir.path(), small(), &infos, &all, 30);
}

#[test]
fn clean_close_reopens_identically_and_is_consumed() {
    let dir = tmp();
    let cfg = LogConfig { index_interval_bytes: 100, ..small() };
    let mut log = open(dir.path(), cfg);
    for i in 0..45 {
        append(&mut log, 2, 70, 1000 - i);
    }
    let (segs, all, end) = (log.segments(), read_all(&log), log.log_end_offset());
    let max = log.find_batch_with_max_timestamp().expect("search");
    log.close().expect("close");
    assert!(dir.path().join(".clean-shutdown").exists());
    let mut log = open(dir.path(), cfg);
    assert!(!dir.path().join(".clean-shutdown").exists(), "the marker is consumed by open");
    assert_eq!(log.segments(), segs);
    assert_eq!(read_all(&log), all);
    assert_eq!(log.find_batch_with_max_timestamp().expect("search"), max);
    assert_eq!(append(&mut log, 1, 10, 0).base_offset, end);
    drop(log);
    // the next (unclean) open scans again and finds the same
    let log = open(dir.path(), cfg);
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn clean_close_with_broken_indexes_falls_back_to_a_scan() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { index_interval_bytes: 50, ..LogConfig::default() });
    for _ in 0..30 {
        append(&mut log, 1, 40, 0);
    }
    let path = active_path(&log);
    let end = log.log_end_offset();
    log.close().expect("close");
    // an index entry pointing into the middle of a batch
    let idx = path.with_extension("index");
    let mut bytes = fs::read(&idx).expect("index");
    assert!(bytes.len() >= 16);
    let n = bytes.len();
    bytes[n - 1] = bytes[n - 1].wrapping_add(3);
    fs::write(&idx, &bytes).expect("write");
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(headers(&read_all(&log)).len(), 30);
}

#[test]
fn damaged_sealed_indexes_are_rebuilt() {
    let dir = tmp();
    let cfg = LogConfig { index_interval_bytes: 100, ..small() };
    let mut log = open(dir.path(), cfg);
    for i in 0..60 {
        append(&mut log, 1, 150, i * 10);
    }
    let segs = log.segments();
    let all = read_all(&log);
    drop(log);
    let idx = segs[0].log_path.with_extension("index");
    let good = fs::read(&idx).expect("index");
    fs::write(&idx, &good[..good.len() - 3]).expect("damage");
    fs::remove_file(segs[1].log_path.with_extension("timeindex")).expect("remove");
    let bad_entry = crate::index::OffsetEntry { relative_offset: 1, position: u32::MAX }.encode();
    fs::write(segs[2].log_path.with_extension("index"), bad_entry).expect("damage");
    let log = open(dir.path(), cfg);
    assert_eq!(fs::read(&idx).expect("index"), good, "rebuilt identically");
    assert!(segs[1].log_path.with_extension("timeindex").exists());
    assert_eq!(read_all(&log), all);
    let found = log.find_batch_by_timestamp(segs[1].max_timestamp).expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&found).expect("header").max_timestamp, segs[1].max_timestamp);
}

#[test]
fn a_corrupt_sealed_segment_is_reported_not_truncated() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    for _ in 0..40 {
        append(&mut log, 1, 150, 0);
    }
    let segs = log.segments();
    drop(log);
    // damage a header in the middle of the first segment and force an index rebuild
    let f = OpenOptions::new().write(true).open(&segs[0].log_path).expect("open");
    let one = batch(1, 150, 0).len() as u64;
    f.write_all_at(&[0xff; 20], one).expect("damage");
    fs::remove_file(segs[0].log_path.with_extension("index")).expect("remove");
    let err = PartitionLog::open(dir.path(), small()).expect_err("corrupt");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert!(err.to_string().starts_with("corrupt log file"));
}

#[test]
fn leftovers_are_cleaned_on_open() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    for _ in 0..40 {
        append(&mut log, 1, 150, 0);
    }
    let segs = log.segments();
    drop(log);
    let d = dir.path();
    fs::write(d.join("00000000000000999999.index"), [0u8; 8]).expect("orphan");
    fs::write(d.join("00000000000000999999.timeindex"), [0u8; 12]).expect("orphan");
    fs::write(d.join("log-start-offset.tmp"), b"junk").expect("tmp");
    fs::write(d.join("unrelated.txt"), b"keep").expect("other");
    // a crash after persisting the start offset but before deleting the first two segments
    fs::write(d.join("log-start-offset"), format!("0\n{}\n", segs[2].base_offset)).expect("checkpoint");
    let log = open(d, small());
    assert!(!d.join("00000000000000999999.index").exists());
    assert!(!d.join("00000000000000999999.timeindex").exists());
    assert!(!d.join("log-start-offset.tmp").exists());
    assert!(d.join("unrelated.txt").exists());
    assert!(!segs[0].log_path.exists() && !segs[1].log_path.exists());
    assert_eq!(log.log_start_offset(), segs[2].base_offset);
    assert_eq!(log.segments()[0].base_offset, segs[2].base_offset);
}

#[test]
fn a_start_offset_above_the_recovered_end_empties_the_log() {
    let dir = tmp();
    let (infos, _) = write_and_drop(dir.path(), LogConfig::default(), 10);
    let end = infos[9].last_offset + 1;
    fs::write(dir.path().join("log-start-offset"), format!("0\n{}\n", end + 50)).expect("checkpoint");
    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end + 50, end + 50));
    assert_eq!(append(&mut log, 1, 10, 0).base_offset, end + 50);
}

#[test]
fn append_assigned_splits_runs_across_segments() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { segment_bytes: 1500, index_interval_bytes: 64, ..LogConfig::default() });
    let mut leader = Vec::new();
    let mut next = 0;
    for i in 0..40 {
        let mut b = batch(1 + i % 2, 90, i as i64);
        set_base_offset(&mut b, next);
        next += 1 + (i % 2) as i64;
        leader.extend_from_slice(&b);
    }
    let info = log.append_assigned(&leader, 0).expect("append");
    assert_eq!(info.last_offset, next - 1);
    assert_eq!(info.max_timestamp, 39 + (39 % 2));
    let segs = log.segments();
    assert!(segs.len() > 3);
    assert!(segs.iter().all(|s| s.size_bytes <= 1500));
    assert_eq!(read_all(&log), leader);
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log), leader);
}

#[test]
fn offline_errors_and_error_messages_are_lowercase() {
    let e = LogError::OffsetOutOfRange { offset: 9, start: 0, end: 3 };
    assert_eq!(e.to_string(), "offset 9 is out of range: the log holds [0, 3)");
    let e = LogError::NotBatchBoundary(4);
    assert_eq!(e.to_string(), "offset 4 is not a batch boundary");
    let e = LogError::Io { op: "write segment", path: "/x/0.log".into(), source: std::io::Error::other("disk full") };
    assert_eq!(e.to_string(), "write segment /x/0.log: disk full");
}

#[test]
fn segment_info_reports_timestamps_and_sizes() {
    let dir = tmp();
    let mut log = open(dir.path(), small());
    for i in 0..30 {
        append(&mut log, 1, 150, 100 + i);
    }
    let segs = log.segments();
    for s in &segs {
        assert_eq!(fs::metadata(&s.log_path).expect("stat").len(), s.size_bytes);
        let hs = headers(&read(&log, s.base_offset, 1 << 20, i64::MAX, true));
        assert_eq!(s.max_timestamp, hs.iter().map(|h| h.max_timestamp).max().unwrap_or(-1));
    }
    drop(log);
    assert_eq!(open(dir.path(), small()).segments(), segs);
}

#[test]
fn batches_without_timestamps_are_found_by_max_timestamp() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig::default());
    for _ in 0..3 {
        append(&mut log, 1, 10, -1);
    }
    assert!(log.find_batch_by_timestamp(0).expect("search").is_none());
    let b = log.find_batch_with_max_timestamp().expect("search").expect("a batch");
    assert_eq!(BatchHeader::parse(&b).expect("header").base_offset, 0);
    log.roll().expect("roll");
    append(&mut log, 1, 10, -1);
    // the sealed segment has no timestamps: retention falls back to the file time
    log.set_config(LogConfig { retention_ms: 3_600_000, ..LogConfig::default() });
    let now = crate::clock::now_ms();
    assert_eq!(log.apply_retention(now).expect("retention").segments_deleted, 0);
    assert_eq!(log.apply_retention(now + 7_200_000).expect("retention").segments_deleted, 1);
}

#[derive(Debug, Clone)]
struct Spec {
    records: usize,
    value_len: usize,
    ts: i64,
    epoch: i32,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..6, 0usize..700, 0i64..10_000, 0i32..4).prop_map(|(records, value_len, ts, epoch)| Spec { records, value_len, ts, epoch })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Append random batches with random small segment and index settings, reopen (cleanly or
    /// not), and read everything back byte for byte; timestamp searches agree with a naive scan.
    #[test]
    fn append_reopen_read_back_identical(
        specs in proptest::collection::vec(spec(), 1..80),
        segment_bytes in 1500u64..30_000,
        interval in 0u32..1500,
        clean in any::<bool>(),
        probe_ts in 0i64..10_500,
    ) {
        let dir = tmp();
        let cfg = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = open(dir.path(), cfg);
        let mut expected = Vec::new();
        let mut next = 0;
        for s in &specs {
            let mut b = batch(s.records, s.value_len, s.ts);
            let info = log.append(&mut b, s.epoch, 0).expect("append");
            prop_assert_eq!(info.base_offset, next);
            next = info.last_offset + 1;
            expected.extend_from_slice(&b);
        }
        if clean { log.close().expect("close") } else { drop(log) }
        let log = open(dir.path(), cfg);
        prop_assert_eq!(log.log_end_offset(), next);
        let all = read_all(&log);
        prop_assert!(all == expected, "read back differs");
        let naive = BatchIter::new(&expected).find(|(h, _)| h.max_timestamp >= probe_ts).map(|(_, b)| b.to_vec());
        prop_assert_eq!(log.find_batch_by_timestamp(probe_ts).expect("search"), naive);
        let max = BatchIter::new(&expected).map(|(h, _)| h.max_timestamp).max();
        let found = log.find_batch_with_max_timestamp().expect("search").map(|b| BatchHeader::parse(&b).map(|h| h.max_timestamp).ok());
        prop_assert_eq!(found.flatten(), max);
        for (h, b) in BatchIter::new(&expected) {
            prop_assert!(verify_crc(b).is_ok());
            let got = read(&log, h.last_offset(), 1, i64::MAX, true);
            prop_assert_eq!(&got[..], b);
        }
    }
}

#[test]
fn testing_helper_batches_are_valid() {
    let b = testing::batch_with_records(3, 0);
    verify_crc(&b).expect("crc");
}

#[test]
fn concurrent_reads_see_only_whole_valid_batches() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tmp();
    let log = Arc::new(Mutex::new(open(dir.path(), LogConfig { retention_bytes: 20_000, ..small() })));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut seed = 7u64;
            while !done.load(Ordering::Relaxed) || reads < 100 {
                let plan = {
                    let log = log.lock().expect("lock");
                    let (start, end) = (log.log_start_offset(), log.log_end_offset());
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let offset = start + (seed >> 33) as i64 % (end - start + 1);
                    log.read(offset, 3000, end, true).expect("plan")
                };
                let bytes = plan.execute().expect("execute"); // outside the lock
                let mut next = None;
                for (h, b) in BatchIter::new(&bytes) {
                    verify_crc(b).expect("whole valid batch");
                    assert!(next.is_none_or(|n| n == h.base_offset), "contiguous");
                    next = Some(h.next_offset());
                }
                assert_eq!(headers(&bytes).len(), BatchIter::new(&bytes).count());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..1500 {
        let mut b = batch(1 + i % 4, 50 + i % 200, i as i64);
        let mut log = log.lock().expect("lock");
        log.append(&mut b, 0, 0).expect("append");
        if i % 100 == 0 {
            log.apply_retention(0).expect("retention");
        }
        if i % 50 == 0 {
            log.flush().expect("flush");
        }
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("reader") >= 100);
}

#[test]
fn retention_below_a_fence_keeps_segments_past_it() {
    let dir = tmp();
    let mut log = open(dir.path(), LogConfig { retention_ms: -1, ..small() });
    for _ in 0..50 {
        append(&mut log, 1, 200, 0);
    }
    let segs = log.segments();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    log.set_config(LogConfig { retention_ms: -1, retention_bytes: 0, ..small() });
    // only the first two segments are below the fence (e.g. uploaded to the object store)
    let fence = segs[1].next_offset;
    let out = log.apply_retention_below(0, fence).expect("retention");
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), fence);
    // a fence inside a segment does not release it
    let out = log.apply_retention_below(0, segs[2].next_offset - 1).expect("retention");
    assert_eq!(out.segments_deleted, 0);
    assert_eq!(log.segments()[0].base_offset, segs[2].base_offset);
}
