//! The partition log's recovery: the input becomes the active segment of a fresh partition
//! directory, `PartitionLog::open` recovers it, and everything it kept is read back, searched by
//! timestamp and appended to; after a crash recovery the log is also closed and reopened (the
//! clean-shutdown path, over indexes the log wrote itself) and must read back the same. Also the
//! `.index` / `.timeindex` decoders.
//!
//! Input: `flags | rest`.
//! * `flags` bit 0 clear (a crash): `rest` is `00000000000000000000.log`. Recovery checks every
//!   batch (header, offsets, CRC-32C) and cuts the file at the first bad one, so every read of
//!   what it kept must succeed and give back exactly the file's surviving prefix.
//! * bit 0 set (a clean shutdown): `rest` is `index_len u16 | time_len u16 | .index | .timeindex
//!   | .log` and the `.clean-shutdown` marker exists, so recovery trusts the indexes and walks
//!   only the batches after the last index entry. Lying indexes may make reads fail, never panic.
//! * bit 1 set: a small index interval, so even short segments get several index entries.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use sediment_log::index::{decode_offset_index, decode_time_index, encode_offset_index, encode_time_index};
use sediment_log::{LogConfig, PartitionLog};
use sediment_protocol::batch::{BatchIter, testing::batch_with_records, verify_crc};

const SEGMENT: &str = "00000000000000000000";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    check_indexes(rest);
    let clean = flags & 1 != 0;
    let (index, time_index, log) = if clean {
        let Some((lens, rest)) = rest.split_at_checked(4) else { return };
        let index_len = usize::from(u16::from_be_bytes([lens[0], lens[1]])).min(rest.len());
        let (index, rest) = rest.split_at(index_len);
        let time_len = usize::from(u16::from_be_bytes([lens[2], lens[3]])).min(rest.len());
        let (time_index, log) = rest.split_at(time_len);
        check_indexes(index);
        check_indexes(time_index);
        (Some(index), Some(time_index), log)
    } else {
        (None, None, rest)
    };
    let config = LogConfig { index_interval_bytes: if flags & 2 != 0 { 100 } else { 4096 }, ..LogConfig::default() };

    let dir = scratch_dir();
    let write = |name: String, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).expect("write scratch file");
    write(format!("{SEGMENT}.log"), log);
    if let (Some(index), Some(time_index)) = (index, time_index) {
        write(format!("{SEGMENT}.index"), index);
        write(format!("{SEGMENT}.timeindex"), time_index);
        write(".clean-shutdown".into(), b"");
    }
    let Ok(mut plog) = PartitionLog::open(dir.path(), config) else { return };
    let start = plog.log_start_offset();
    let end = plog.log_end_offset();
    assert!(start <= end, "log start {start} above log end {end}");

    let read = read_all(&plog, !clean);
    if !clean {
        let kept = read.expect("a crash recovery keeps only batches it checked, so they read back");
        assert_eq!(kept.len() as u64, plog.size_bytes());
        assert_eq!(&kept[..], &log[..kept.len()], "recovery keeps a prefix of the segment");
        let on_disk = std::fs::metadata(dir.path().join(format!("{SEGMENT}.log"))).expect("segment").len();
        assert_eq!(on_disk, plog.size_bytes(), "recovery cut the file after the last good batch");
    }
    // ListOffsets by timestamp and MAX_TIMESTAMP: errors allowed, panics not
    for ts in [i64::MIN, 0, 1_700_000_000_000, i64::MAX] {
        let _ = plog.find_batch_by_timestamp(ts);
    }
    let _ = plog.find_batch_with_max_timestamp();

    // the recovered log takes appends at its end, and gives them back
    let mut batch = batch_with_records(2, 1_700_000_000_000);
    match plog.append(&mut batch, 0, 1_700_000_000_000) {
        Ok(info) => {
            assert_eq!(info.base_offset, end);
            let got = plog.read(end, 1 << 20, i64::MAX, true).and_then(|p| p.execute()).expect("read the appended batch");
            assert_eq!(&got[..], &batch[..]);
        }
        Err(e) => assert!(clean, "a crash-recovered log refused an append: {e}"),
    }
    let Ok(before) = read_all(&plog, !clean) else { return };
    if plog.close().is_err() || clean {
        return;
    }
    // A clean shutdown of what a crash recovery kept: the next open trusts the indexes the log
    // wrote itself, and must find exactly the same batches.
    let reopened = PartitionLog::open(dir.path(), config).expect("reopen after a clean shutdown");
    assert_eq!(reopened.log_end_offset(), end + 2);
    let after = read_all(&reopened, true).expect("read back after a clean shutdown");
    assert_eq!(after, before, "a clean shutdown and reopen changed the log");
    let _ = reopened.close();
});

/// A temporary directory under `$SEDIMENT_FUZZ_SCRATCH` (`run.sh` sets it, and removes it
/// afterwards: a crashing input never gets to remove its own), else on tmpfs when there is one:
/// recovery fsyncs, and an fsync per input on a real disk would cost more than the rest of the
/// run.
fn scratch_dir() -> tempfile::TempDir {
    let builder = tempfile::Builder::new().prefix("sediment-fuzz-").to_owned();
    let parent = std::env::var_os("SEDIMENT_FUZZ_SCRATCH").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"));
    if parent.is_dir()
        && let Ok(d) = builder.tempdir_in(&parent)
    {
        return d;
    }
    builder.tempdir().expect("create a temporary directory")
}

/// Reads every batch from the log start to the log end. With `strict` (after a crash
/// recovery, which checked every batch it kept) each read must make progress and return whole,
/// CRC-correct batches with consecutive offsets; otherwise the loop only stops where a read
/// fails or stalls.
fn read_all(log: &PartitionLog, strict: bool) -> Result<Vec<u8>, sediment_log::LogError> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX, true)?.execute()?;
        let mut next = offset;
        let mut iter = BatchIter::new(&bytes);
        for (h, b) in iter.by_ref() {
            if strict {
                verify_crc(b).expect("recovery checked this batch's crc");
                assert!(h.base_offset == next || (next == offset && h.base_offset <= offset), "offsets do not continue at {next}");
            }
            next = h.next_offset();
        }
        if strict {
            assert_eq!(iter.remaining(), 0, "a read returns whole batches only");
            assert!(next > offset, "read at {offset} made no progress");
        } else if next <= offset {
            break;
        }
        out.extend_from_slice(&bytes);
        offset = next;
    }
    Ok(out)
}

/// Both index decoders on the same bytes: a decoded index is strictly ordered and encodes back
/// to the bytes it came from.
fn check_indexes(bytes: &[u8]) {
    if let Ok(entries) = decode_offset_index(bytes) {
        assert!(entries.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position <= w[1].position));
        assert_eq!(encode_offset_index(&entries), bytes);
    }
    if let Ok(entries) = decode_time_index(bytes) {
        assert!(entries.windows(2).all(|w| w[0].timestamp < w[1].timestamp && w[0].relative_offset <= w[1].relative_offset));
        assert_eq!(encode_time_index(&entries), bytes);
    }
}
