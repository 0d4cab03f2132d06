//! The `__consumer_offsets` records (`sediment_protocol::group_records`): what the group
//! coordinator decodes when it loads a shard from its log at start-up or after a leader change,
//! and what the archive tools decode from the bucket. The log is written by the broker, but a
//! replica takes it from its leader and a restored cluster from the bucket, so every byte is
//! untrusted.
//!
//! Input: `flags | key length (u16 BE) | key | value`. Flag bit 0: the value is null (a
//! tombstone). The same input is also decoded whole as a read of the log (`decode_batches`).
//! Whatever decodes must encode back to itself, alone and inside a batch the broker builds.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sediment_protocol::group_records::{Decoded, OffsetsRecord, build_batch, decode_batches};

fuzz_target!(|data: &[u8]| {
    if let Some((&flags, rest)) = data.split_first()
        && rest.len() >= 2
    {
        let key_len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (key, value) = rest[2..].split_at(key_len);
        let value = (flags & 1 == 0).then_some(value);
        if let Ok(Some(rec)) = OffsetsRecord::decode(key, value) {
            round_trip(&rec);
        }
    }

    let Decoded { records, next, .. } = decode_batches(&Bytes::copy_from_slice(data));
    assert!(records.is_empty() || next.is_some(), "records come from whole batches");
    for (_, rec) in &records {
        round_trip(rec);
    }
    if !records.is_empty() {
        let recs: Vec<OffsetsRecord> = records.into_iter().map(|(_, r)| r).collect();
        let again = decode_batches(&build_batch(&recs, 0).freeze());
        assert_eq!(again.bad, 0, "a batch the broker builds decodes whole");
        assert_eq!(again.records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), recs);
    }
});

fn round_trip(rec: &OffsetsRecord) {
    let (key, value) = rec.encode();
    let again = OffsetsRecord::decode(&key, value.as_deref()).expect("a record the broker encodes decodes");
    assert_eq!(again.as_ref(), Some(rec), "a decoded record encodes back to itself");
}
