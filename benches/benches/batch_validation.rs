//! Produce-path validation of one batch: header parse, size checks and CRC-32C only
//! (`header_only`), and the whole validation a client's batch gets (`strict`: every record walked,
//! compressed batches decompressed as a stream), for uncompressed and compressed 1 KiB .. 1 MiB
//! batches. `relaxed` is the header-only path compressed batches take in relaxed mode.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::records::Compression;
use sediment_benches::{batch_of_size, compressed_batch, quick_settings};
use sediment_protocol::batch::{ValidationMode, validate_batch_header, validate_produce_records};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validation");
    for size in [1 << 10, 16 << 10, 256 << 10, 1 << 20] {
        let batch = batch_of_size(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        let name = format!("none/{}KiB", size >> 10);
        g.bench_with_input(BenchmarkId::new("header_only", &name), &batch, |b, batch| {
            b.iter(|| validate_batch_header(black_box(batch), usize::MAX).map(|h| h.records_count))
        });
        g.bench_with_input(BenchmarkId::new("strict", &name), &batch, |b, batch| {
            b.iter(|| validate_produce_records(black_box(batch), usize::MAX, ValidationMode::Strict).map(|v| v.header.records_count))
        });
    }
    // throughput counts the uncompressed bytes: what a producer hands the client
    for codec in [Compression::Lz4, Compression::Zstd, Compression::Snappy, Compression::Gzip] {
        let size = 256 << 10;
        let batch = compressed_batch(codec, size);
        g.throughput(Throughput::Bytes(size as u64));
        let name = format!("{codec:?}/{}KiB", size >> 10).to_lowercase();
        for mode in [ValidationMode::Relaxed, ValidationMode::Strict] {
            let id = if mode == ValidationMode::Strict { "strict" } else { "relaxed" };
            g.bench_with_input(BenchmarkId::new(id, &name), &batch, |b, batch| {
                b.iter(|| validate_produce_records(black_box(batch), usize::MAX, mode).map(|v| v.header.records_count))
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
