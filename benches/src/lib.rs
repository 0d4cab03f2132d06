//! Criterion micro-benchmarks of Sediment's hot paths live in `benches/benches/`:
//!
//! * `batch_validation`: `validate_produce_records` (header + CRC-32C) on 1 KiB .. 1 MiB batches.
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
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| vec![b'a' + (i % 26) as u8; record])
        .collect();
    sediment_protocol::batch::testing::batch_from_values(&values, 1_700_000_000_000)
}

/// Deterministic pseudo-random numbers (no RNG dependency, same sequence every run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_are_valid_and_near_the_size() {
        for size in [1 << 10, 64 << 10, 1 << 20] {
            let b = super::batch_of_size(size);
            sediment_protocol::batch::validate_produce_records(&b, usize::MAX).expect("valid");
            assert!(
                b.len() as f64 > size as f64 * 0.8 && b.len() as f64 <= size as f64 * 1.1,
                "{size}: {}",
                b.len()
            );
        }
    }
}
