//! Record batch v2 decoding: the produce handler's validation (strict and relaxed), the
//! bounded record walk, the timestamp search ListOffsets runs on a batch, and kafka-protocol's
//! own record decoder, which the broker only runs on batches the walk accepted.
//!
//! Every input is checked twice:
//! * as sent: the input is one whole batch (header, CRC, records);
//! * framed: the first [`CTRL_LEN`] bytes pick the header fields (attributes, so the codec;
//!   records count; whether last offset delta agrees; base timestamp) and the rest is the
//!   record section, wrapped in a header whose length and CRC-32C are correct. A fuzzer cannot
//!   forge a CRC, so only this way do its mutations reach the records and the decompressors.

#![no_main]

use std::ops::ControlFlow;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;
use sediment_protocol::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2, ValidationMode};
use sediment_protocol::records::{self, RecordInfo, WalkLimits};

/// The produce handler's limit for one batch (Kafka's `max.message.bytes` default).
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// A small decompression cap: enough for any batch in the corpus, and it keeps a
/// decompression bomb from spending the run's time.
const LIMITS: WalkLimits = WalkLimits { max_decompressed_bytes: 1 << 20 };
/// Control bytes at the start of a framed input.
const CTRL_LEN: usize = 8;
/// Where the CRC sits in the header.
const CRC_OFFSET: usize = 17;

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(b) = framed(data) {
        check(&b);
    }
});

/// A batch around `data[CTRL_LEN..]` with the header the control bytes describe:
/// `ctrl[0]` attributes (codec in the low three bits, then timestamp type, transactional,
/// control), `ctrl[1..3]` records count (i16), `ctrl[3]` bit 0 set: last offset delta does not
/// agree with the count, `ctrl[4..8]` base timestamp (seconds after 2023-11-14, i32).
fn framed(data: &[u8]) -> Option<Vec<u8>> {
    let (ctrl, body) = data.split_at_checked(CTRL_LEN)?;
    let attributes = i16::from(ctrl[0]);
    let count = i32::from(i16::from_be_bytes([ctrl[1], ctrl[2]]));
    let last_offset_delta = if ctrl[3] & 1 == 0 { count - 1 } else { count };
    let base_ts = 1_700_000_000_000 + i64::from(i32::from_be_bytes([ctrl[4], ctrl[5], ctrl[6], ctrl[7]])) * 1000;
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    debug_assert_eq!(b.len(), HEADER_LEN);
    b.extend_from_slice(body);
    let crc = batch::compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Some(b)
}

fn check(batch: &[u8]) {
    let strict = batch::validate_produce_records(batch, MAX_MESSAGE_BYTES, ValidationMode::Strict);
    let relaxed = batch::validate_produce_records(batch, MAX_MESSAGE_BYTES, ValidationMode::Relaxed);
    match (&strict, &relaxed) {
        (Ok(s), Ok(r)) => {
            assert_eq!(s.header, r.header);
            assert_eq!(s.header.total_len(), batch.len(), "validation accepts exactly one whole batch");
            let summary = s.records.expect("strict validation walks every batch");
            assert_eq!(summary.records, s.header.records_count);
            if let Some(walked) = r.records {
                assert_eq!(walked, summary);
            }
        }
        (Ok(_), Err(e)) => panic!("strict validation accepted a batch relaxed validation refuses: {e}"),
        (Err(e), Ok(r)) => assert!(r.records.is_none(), "relaxed validation walked the records strict validation refuses: {e}"),
        (Err(_), Err(_)) => {}
    }

    let mut seen: Vec<RecordInfo> = Vec::new();
    let walked = records::walk(batch, LIMITS, |r| {
        seen.push(*r);
        ControlFlow::Continue(())
    });
    let Ok(summary) = walked else {
        let _ = records::first_offset_at_or_after(batch, 0);
        return;
    };
    let header = BatchHeader::parse(batch).expect("a walked batch has a header");
    assert_eq!(summary.records, header.records_count, "a whole walk reads exactly the declared records");
    assert_eq!(seen.len(), header.records_count as usize);
    for (i, r) in seen.iter().enumerate() {
        assert_eq!((r.index, r.offset_delta), (i as i32, i as i32));
    }
    if let (Some(min), Some(max)) = (seen.iter().map(|r| r.timestamp).min(), seen.iter().map(|r| r.timestamp).max()) {
        assert_eq!((summary.min_timestamp, summary.max_timestamp), (min, max));
    }

    // the search stops at the first record at or after the target: pick one in the batch
    let target = seen.get(seen.len() / 2).map_or(0, |r| r.timestamp);
    let expected = seen
        .iter()
        .find(|r| r.timestamp >= target)
        .map(|r| (header.base_offset.wrapping_add(i64::from(r.offset_delta)), r.timestamp));
    let found = records::first_offset_at_or_after(batch, target).expect("the walk read this batch whole");
    assert_eq!(found, expected);

    // The walk bounded counts, lengths and the decompressed size: kafka-protocol's decoder,
    // which trusts them, must not abort on this batch (it may still refuse it).
    let mut buf = Bytes::copy_from_slice(&batch[..header.total_len()]);
    if let Ok(set) = RecordBatchDecoder::decode(&mut buf) {
        assert_eq!(set.records.len(), seen.len());
    }
}
