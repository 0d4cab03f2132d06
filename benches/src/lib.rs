//! Criterion micro-benchmarks of Sediment's hot paths live in `benches/benches/`:
//!
//! * `batch_validation`: `validate_produce_records` on 1 KiB .. 1 MiB batches: header + CRC-32C
//!   alone, and with every record walked (compressed batches streamed through their codec).
//! * `index_lookup`: sparse offset/time index searches, and planning + executing reads and
//!   timestamp searches in a large sealed segment.
//! * `segment_append`: `PartitionLog::append` of 1 KiB and 64 KiB batches into the page cache,
//!   and with a group-commit flush every N appends.
//!
//! Run `cargo bench -p sediment-benches` (or add `-- --quick`). Helpers shared by the benches
//! are below.

use std::time::Duration;

/// Short, repeatable settings shared by the benches (command-line flags still override them).
/// Plots are off: rendering them takes far longer than the measurements on a small machine.
pub fn quick_settings() -> (usize, Duration, Duration) {
    (10, Duration::from_millis(300), Duration::from_secs(1))
}

/// A valid uncompressed batch of about `size` bytes made of 1 KiB records (one record when smaller).
pub fn batch_of_size(size: usize) -> Vec<u8> {
    let record = 1024.min(size.saturating_sub(80)).max(1);
    let count = (size / (record + 16)).max(1);
    let values: Vec<Vec<u8>> = (0..count).map(|i| vec![b'a' + (i % 26) as u8; record]).collect();
    sediment_protocol::batch::testing::batch_from_values(&values, 1_700_000_000_000)
}

/// A batch of about `size` uncompressed bytes of JSON-like 512-byte records, compressed with
/// `codec` the way the Java client frames it.
pub fn compressed_batch(codec: kafka_protocol::records::Compression, size: usize) -> Vec<u8> {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};
    let mut rng = Lcg(7);
    let count = (size / 540).max(1);
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut v = String::with_capacity(512);
            while v.len() < 500 {
                v.push_str(&format!("{{\"user\":{},\"event\":\"click\",\"ms\":{}}}", rng.next_below(100_000), rng.next_below(1 << 40)));
            }
            v.truncate(512);
            sediment_protocol::batch::testing::encoder_record(i, 1_700_000_000_000, bytes::Bytes::from(format!("key-{i}")), bytes::Bytes::from(v))
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression: codec }).expect("encodes");
    out.to_vec()
}

/// Deterministic pseudo-random numbers (no RNG dependency, same sequence every run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_are_valid_and_near_the_size() {
        for size in [1 << 10, 64 << 10, 1 << 20] {
            let b = super::batch_of_size(size);
            sediment_protocol::batch::validate_produce_records(&b, usize::MAX, Default::default()).expect("valid");
            assert!(b.len() as f64 > size as f64 * 0.8 && b.len() as f64 <= size as f64 * 1.1, "{size}: {}", b.len());
        }
    }

    #[test]
    fn compressed_batches_are_one_valid_batch() {
        use kafka_protocol::records::Compression;
        for codec in [Compression::Lz4, Compression::Zstd, Compression::Snappy, Compression::Gzip] {
            let b = super::compressed_batch(codec, 64 << 10);
            let v = sediment_protocol::batch::validate_produce_records(&b, usize::MAX, Default::default()).expect("valid");
            assert_eq!(v.records.expect("walked").records, v.header.records_count);
            assert!(b.len() < 64 << 10, "{codec:?} compresses");
        }
    }
}
