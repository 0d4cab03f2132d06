//! Choosing a partition for a record.
//!
//! Keyed records go where the Java client (and librdkafka's
//! `murmur2_random`) would put them: `toPositive(murmur2(key)) % partitions`,
//! so a topic written by Sediment's tools and by Kafka clients keeps each key
//! in one partition. Records without a key are spread round-robin, either one
//! record at a time or one batch at a time ("sticky", which makes fuller
//! batches and is the default, like Kafka's uniform sticky partitioner).

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java uses int arithmetic on the length; keys beyond 2 GiB are not a concern.
    let len = data.len() as u32;
    let mut h: u32 = SEED ^ len;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
/// `num_partitions` must be positive; 0 is returned otherwise.
pub fn key_partition(key: &[u8], num_partitions: i32) -> i32 {
    if num_partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % num_partitions
}

/// How records without a key and without an explicit partition are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keyless {
    /// Next partition for every record.
    RoundRobin,
    /// Stay on one partition until its batch is sent, then move to the next.
    #[default]
    Sticky,
}

/// Per-topic partition chooser.
#[derive(Debug, Clone)]
pub struct Partitioner {
    strategy: Keyless,
    next: u32,
}

impl Partitioner {
    /// A partitioner whose round-robin starts at `start` (pass something
    /// random so several producers do not move in lockstep).
    pub fn new(strategy: Keyless, start: u32) -> Self {
        Partitioner { strategy, next: start }
    }

    /// The partition for a record with optional explicit `partition` and
    /// `key`, among `num_partitions` (> 0). An explicit partition is returned
    /// unchecked; the caller validates it.
    pub fn partition(&mut self, partition: Option<i32>, key: Option<&[u8]>, num_partitions: i32) -> i32 {
        if let Some(p) = partition {
            return p;
        }
        if let Some(k) = key {
            return key_partition(k, num_partitions);
        }
        let n = u32::try_from(num_partitions.max(1)).unwrap_or(1);
        let p = self.next % n;
        if self.strategy == Keyless::RoundRobin {
            self.next = self.next.wrapping_add(1);
        }
        // `p < n <= i32::MAX`, so the conversion cannot fail.
        i32::try_from(p).unwrap_or(0)
    }

    /// Tells a sticky partitioner that the current keyless batch was sealed,
    /// so keyless records move on to the next partition.
    pub fn batch_sealed(&mut self, partition: i32, num_partitions: i32) {
        if self.strategy != Keyless::Sticky {
            return;
        }
        let n = u32::try_from(num_partitions.max(1)).unwrap_or(1);
        if u32::try_from(partition).ok() == Some(self.next % n) {
            self.next = self.next.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_java_client() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "murmur2({:?})", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn murmur2_handles_every_tail_length() {
        // Tails of 0..=3 bytes take different branches; all must be stable and distinct.
        let hashes: Vec<i32> = (0..8).map(|n| murmur2(&b"abcdefgh"[..n])).collect();
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                assert_ne!(hashes[i], hashes[j]);
            }
        }
    }

    #[test]
    fn key_partition_is_to_positive_modulo() {
        // toPositive(-973932308) = 1173551340; % 3 = 0, % 7 = 1173551340 % 7.
        assert_eq!(key_partition(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(key_partition(b"21", 7), 1_173_551_340 % 7);
        // 479470107 is already positive.
        assert_eq!(key_partition(b"abc", 10), 7);
        assert_eq!(key_partition(b"abc", 0), 0);
        for n in 1..50 {
            let p = key_partition(b"foobar", n);
            assert!((0..n).contains(&p));
        }
    }

    #[test]
    fn explicit_partition_wins_then_key_then_keyless() {
        let mut p = Partitioner::new(Keyless::RoundRobin, 0);
        assert_eq!(p.partition(Some(5), Some(b"abc"), 10), 5);
        assert_eq!(p.partition(None, Some(b"abc"), 10), 7);
        assert_eq!(p.partition(None, Some(b"abc"), 10), 7);
        let keyless: Vec<i32> = (0..7).map(|_| p.partition(None, None, 3)).collect();
        assert_eq!(keyless, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn sticky_moves_only_when_its_batch_is_sealed() {
        let mut p = Partitioner::new(Keyless::Sticky, 1);
        assert_eq!(p.partition(None, None, 3), 1);
        assert_eq!(p.partition(None, None, 3), 1);
        // Sealing another partition's batch does not move the sticky one.
        p.batch_sealed(0, 3);
        assert_eq!(p.partition(None, None, 3), 1);
        p.batch_sealed(1, 3);
        assert_eq!(p.partition(None, None, 3), 2);
        p.batch_sealed(2, 3);
        assert_eq!(p.partition(None, None, 3), 0);
    }
}
