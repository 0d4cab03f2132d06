//! Idempotent producer state of one partition: for every producer id, its epoch and the last
//! five batches it appended (sequence range and offsets), as Apache Kafka keeps them.
//!
//! The rules (Kafka's `ProducerAppendInfo`):
//! * a batch whose (epoch, first sequence, last sequence) equals one of the producer's last five
//!   batches is a duplicate: it is not appended again, and the original offsets are answered;
//! * an epoch lower than the producer's current one is INVALID_PRODUCER_EPOCH;
//! * a higher epoch must start at sequence 0 (OUT_OF_ORDER_SEQUENCE_NUMBER otherwise), unless the
//!   producer has no known epoch;
//! * within an epoch the first sequence must follow the last one (wrapping at `i32::MAX`),
//!   OUT_OF_ORDER_SEQUENCE_NUMBER otherwise; a producer with no state (new, expired or removed by
//!   retention) may start at any sequence.
//!
//! The table is derived from the log: it is rebuilt by replaying batch headers after the newest
//! snapshot (see [`ProducerStateTable::encode`]), so it needs no log of its own and a replica
//! applying the same log reaches the same state.

use std::collections::{HashMap, VecDeque};

use sediment_protocol::ErrorCode;
use sediment_protocol::batch::BatchHeader;

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`, and the client limit of
/// five in-flight requests for idempotence).
pub const BATCHES_TO_RETAIN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Wall-clock time of the last append, for `producer.id.expiration.ms`.
    pub last_update_ms: i64,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Append,
    Duplicate(BatchMeta),
    Reject(ErrorCode, String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq_of(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn in_sequence(last: i32, next_first: i32) -> bool {
    next_first == 0 && last == i32::MAX || next_first as i64 == last as i64 + 1
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides whether a batch (parsed header; offsets not yet assigned) may be appended.
    pub fn check(&self, h: &BatchHeader) -> Verdict {
        if !h.has_producer_id() {
            return Verdict::Append;
        }
        let first = h.base_sequence;
        let last = last_seq_of(h);
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Verdict::Append;
        };
        if h.producer_epoch == entry.epoch
            && let Some(b) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Verdict::Duplicate(*b);
        }
        if h.producer_epoch < entry.epoch {
            return Verdict::Reject(
                ErrorCode::InvalidProducerEpoch,
                format!("producer {} epoch {} is older than the current epoch {}", h.producer_id, h.producer_epoch, entry.epoch),
            );
        }
        if h.producer_epoch > entry.epoch {
            if first != 0 {
                return Verdict::Reject(
                    ErrorCode::OutOfOrderSequenceNumber,
                    format!("invalid sequence {first} for new epoch {} of producer {}: expected 0", h.producer_epoch, h.producer_id),
                );
            }
            return Verdict::Append;
        }
        match entry.batches.back() {
            None => Verdict::Append,
            Some(prev) if in_sequence(prev.last_seq, first) => Verdict::Append,
            Some(prev) => Verdict::Reject(
                ErrorCode::OutOfOrderSequenceNumber,
                format!("out of order sequence for producer {}: got {first}, expected {}", h.producer_id, prev.last_seq.wrapping_add(1).max(0)),
            ),
        }
    }

    /// Records an appended batch (offsets assigned). Also used when replaying the log.
    pub fn record(&mut self, h: &BatchHeader, now_ms: i64) {
        if !h.has_producer_id() {
            return;
        }
        let meta = BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq_of(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        };
        let entry =
            self.producers.entry(h.producer_id).or_insert_with(|| ProducerEntry { epoch: h.producer_epoch, batches: VecDeque::new(), last_update_ms: now_ms });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.last_update_ms = entry.last_update_ms.max(now_ms);
    }

    /// Drops producers idle for longer than `max_age_ms` (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_update_ms) <= max_age_ms);
        before - self.producers.len()
    }

    /// Forgets batches at or after `offset` (log truncation); producers left without batches are
    /// dropped, as Kafka rebuilds state after truncation.
    pub fn truncate_from(&mut self, offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    /// Binary snapshot: magic, version, count, then per producer: id, epoch, last update,
    /// batch count, batches. A CRC-32C over everything after the magic guards it.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.producers.len() * 64);
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_update_ms.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"SPST");
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<ProducerStateTable, String> {
        if buf.len() < 14 || &buf[..4] != b"SPST" {
            return Err("not a producer state snapshot".into());
        }
        let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let body = &buf[8..];
        if crc32c::crc32c(body) != crc {
            return Err("producer state snapshot crc mismatch".into());
        }
        let mut r = Reader { b: body, pos: 0 };
        let version = r.u16()?;
        if version != 1 {
            return Err(format!("unknown producer state snapshot version {version}"));
        }
        let n = r.u32()?;
        let mut producers = HashMap::with_capacity(n as usize);
        for _ in 0..n {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_update_ms = r.i64()?;
            let nb = r.u8()?;
            let mut batches = VecDeque::with_capacity(nb as usize);
            for _ in 0..nb {
                batches.push_back(BatchMeta { first_seq: r.i32()?, last_seq: r.i32()?, base_offset: r.i64()?, last_offset: r.i64()?, max_timestamp: r.i64()? });
            }
            producers.insert(id, ProducerEntry { epoch, batches, last_update_ms });
        }
        Ok(ProducerStateTable { producers })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.b.get(self.pos..self.pos + N).ok_or("truncated producer state snapshot")?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut t = ProducerStateTable::default();
        let b0 = header(7, 0, 0, 3, 0);
        assert_eq!(t.check(&b0), Verdict::Append);
        t.record(&b0, 1);
        // retry of the same batch: duplicate with the original offsets
        assert!(matches!(t.check(&header(7, 0, 0, 3, 99)), Verdict::Duplicate(m) if m.base_offset == 0 && m.last_offset == 2));
        // next in sequence
        assert_eq!(t.check(&header(7, 0, 3, 2, 3)), Verdict::Append);
        // gap
        assert!(matches!(t.check(&header(7, 0, 5, 1, 3)), Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber, _)));
        // stale epoch
        t.record(&header(7, 1, 0, 1, 3), 2);
        assert!(matches!(t.check(&header(7, 0, 3, 1, 4)), Verdict::Reject(ErrorCode::InvalidProducerEpoch, _)));
        // new epoch must start at 0
        assert!(matches!(t.check(&header(7, 2, 4, 1, 4)), Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber, _)));
        assert_eq!(t.check(&header(7, 2, 0, 1, 4)), Verdict::Append);
        // unknown producer may start anywhere (state expired or removed)
        assert_eq!(t.check(&header(8, 0, 42, 1, 4)), Verdict::Append);
        // non-idempotent batches are always appended
        assert_eq!(t.check(&header(-1, -1, -1, 1, 4)), Verdict::Append);
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(&header(1, 0, i, 1, i as i64), 0);
        }
        assert_eq!(t.get(1).unwrap().batches.len(), BATCHES_TO_RETAIN);
        assert!(matches!(t.check(&header(1, 0, 6, 1, 0)), Verdict::Duplicate(_)));
        // an old batch beyond the window is out of order, not a duplicate
        assert!(matches!(t.check(&header(1, 0, 0, 1, 0)), Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber, _)));
    }

    #[test]
    fn sequence_wraps() {
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, i32::MAX - 1, 3, 0), 0);
        assert_eq!(t.get(1).unwrap().batches[0].last_seq, 0);
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, i32::MAX, 1, 0), 0);
        assert_eq!(t.check(&header(1, 0, 0, 1, 1)), Verdict::Append);
    }

    #[test]
    fn expiry_and_truncation() {
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, 0, 1, 0), 1_000);
        t.record(&header(2, 0, 0, 1, 1), 5_000);
        assert_eq!(t.expire(6_000, 2_000), 1);
        assert!(t.get(1).is_none());
        t.truncate_from(1);
        assert!(t.is_empty());
    }

    proptest! {
        #[test]
        fn snapshot_round_trips(entries in proptest::collection::vec((0i64..1000, 0i16..5, 0i32..1000, 1i32..10), 0..40)) {
            let mut t = ProducerStateTable::default();
            let mut off = 0;
            for (pid, epoch, seq, n) in entries {
                t.record(&header(pid, epoch, seq, n, off), off);
                off += n as i64;
            }
            let back = ProducerStateTable::decode(&t.encode()).unwrap();
            prop_assert_eq!(back, t);
        }

        #[test]
        fn corrupt_snapshot_is_an_error(flip in 8usize..200) {
            let mut t = ProducerStateTable::default();
            t.record(&header(3, 0, 0, 4, 0), 0);
            let mut b = t.encode();
            let i = flip % b.len();
            if i >= 8 { b[i] ^= 0x5a; prop_assert!(ProducerStateTable::decode(&b).is_err()); }
        }
    }
}
