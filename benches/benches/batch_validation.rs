//! Produce-path validation: header parse, size checks and CRC-32C over the whole batch.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sediment_benches::{batch_of_size, quick_settings};
use sediment_protocol::batch::validate_produce_records;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validation");
    for size in [1 << 10, 16 << 10, 256 << 10, 1 << 20] {
        let batch = batch_of_size(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KiB", size >> 10)),
            &batch,
            |b, batch| {
                b.iter(|| {
                    validate_produce_records(black_box(batch), usize::MAX).map(|h| h.records_count)
                })
            },
        );
    }
    g.finish();
}

fn config() -> Criterion {
    let (samples, warm_up, measure) = quick_settings();
    Criterion::default()
        .sample_size(samples)
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .without_plots()
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
