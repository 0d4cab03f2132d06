//! `PartitionLog::append` of 1 KiB and 64 KiB batches: into the page cache only, and with a
//! group-commit flush (fsync) every N appends. Each sample writes into a fresh directory that is
//! deleted afterwards, so disk use stays bounded.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sediment_benches::{batch_of_size, quick_settings};
use sediment_log::{LogConfig, PartitionLog};

fn run(iters: u64, batch: &[u8], flush_every: Option<u64>) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let mut buf = batch.to_vec();
    let start = Instant::now();
    for i in 1..=iters {
        log.append(&mut buf, 0, 0).expect("append");
        if flush_every.is_some_and(|n| i % n == 0) {
            log.flush().expect("flush");
        }
    }
    if flush_every.is_some() {
        log.flush().expect("flush");
    }
    let elapsed = start.elapsed();
    drop(log);
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment_append");
    for size in [1 << 10, 64 << 10] {
        let batch = batch_of_size(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        let name = format!("{}KiB", size >> 10);
        g.bench_with_input(BenchmarkId::new("no_fsync", &name), &batch, |b, batch| b.iter_custom(|iters| run(iters, batch, None)));
        for every in [16u64, 256] {
            g.bench_with_input(BenchmarkId::new(format!("flush_every_{every}"), &name), &batch, |b, batch| {
                b.iter_custom(|iters| run(iters, batch, Some(every)))
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    let (samples, warm_up, measure) = quick_settings();
    Criterion::default().sample_size(samples).warm_up_time(warm_up).measurement_time(measure).without_plots()
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
