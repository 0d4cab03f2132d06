//! Index lookups: raw binary searches over a full-size segment's sparse indexes, and the log-level
//! paths that use them (read of one batch at a random offset of a big sealed segment, timestamp
//! search).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sediment_benches::{Lcg, quick_settings};
use sediment_log::index::{OffsetEntry, TimeEntry, lookup_offset, lookup_time};
use sediment_log::{LogConfig, PartitionLog};

/// Entries of a 1 GiB segment of 1 KiB batches with the default 4 KiB index interval.
const ENTRIES: u32 = 1 << 18;
/// Size of the on-disk segment for the log-level lookups.
const SEGMENT_BYTES: usize = 128 << 20;

fn raw(c: &mut Criterion) {
    let offsets: Vec<OffsetEntry> = (0..ENTRIES).map(|i| OffsetEntry { relative_offset: i * 4 + 3, position: i * 4096 }).collect();
    let times: Vec<TimeEntry> = (0..ENTRIES).map(|i| TimeEntry { timestamp: 1_700_000_000_000 + i as i64 * 10, relative_offset: i * 4 + 3 }).collect();
    let mut g = c.benchmark_group("index_lookup");
    let mut rng = Lcg(1);
    g.bench_function("offset_index_256k_entries", |b| b.iter(|| lookup_offset(black_box(&offsets), rng.next_below(ENTRIES as u64 * 4) as u32)));
    let mut rng = Lcg(2);
    g.bench_function("time_index_256k_entries", |b| b.iter(|| lookup_time(black_box(&times), 1_700_000_000_000 + rng.next_below(ENTRIES as u64 * 10) as i64)));
    g.finish();
}

/// A log whose first segment is `SEGMENT_BYTES` of ~1 KiB batches with timestamps growing by
/// 10 ms per batch, sealed, reopened so its indexes load lazily on first use.
fn big_sealed_segment() -> (tempfile::TempDir, PartitionLog, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let values = vec![vec![b'x'; 1000]];
    let mut i = 0i64;
    while log.size_bytes() < SEGMENT_BYTES as u64 {
        let mut b = sediment_protocol::batch::testing::batch_from_values(&values, 1_000_000 + i * 10);
        log.append(&mut b, 0, 0).expect("append");
        i += 1;
    }
    log.roll().expect("roll");
    drop(log);
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("reopen");
    (dir, log, i)
}

fn log_level(c: &mut Criterion) {
    let (_dir, log, batches) = big_sealed_segment();
    let end = log.log_end_offset();
    let mut g = c.benchmark_group("index_lookup");
    let mut rng = Lcg(3);
    g.bench_function("plan_read_random_offset_128MiB_segment", |b| {
        b.iter(|| log.read(rng.next_below(end as u64) as i64, 1 << 20, end, true).expect("plan").is_empty())
    });
    let mut rng = Lcg(4);
    g.bench_function("read_one_batch_random_offset_128MiB_segment", |b| {
        b.iter(|| {
            let plan = log.read(rng.next_below(end as u64) as i64, 1, end, true).expect("plan");
            plan.execute().expect("read").len()
        })
    });
    let mut rng = Lcg(5);
    let span = batches as u64 * 10;
    g.bench_function("find_batch_by_timestamp_128MiB_segment", |b| {
        b.iter(|| {
            let ts = 1_000_000 + rng.next_below(span) as i64;
            log.find_batch_by_timestamp(black_box(ts)).expect("search").map(|b| b.len())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    let (samples, warm_up, measure) = quick_settings();
    Criterion::default().sample_size(samples).warm_up_time(warm_up).measurement_time(measure).without_plots()
}

criterion_group! { name = benches; config = config(); targets = raw, log_level }
criterion_main!(benches);
