//! Record batch v2 (magic 2) header parsing, validation and in-place patching.
//!
//! Layout of the 61-byte header (big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            patched by the broker on append
//!      8     4  batch_length           bytes after this field
//!     12     4  partition_leader_epoch patched by the broker on append (not covered by the CRC)
//!     16     1  magic (= 2)
//!     17     4  crc (CRC-32C of bytes 21..)
//!     21     2  attributes
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  records_count
//! ```
//!
//! The broker checks the header and the CRC of every produced batch, then rewrites only
//! `base_offset` and `partition_leader_epoch`, which the CRC does not cover: the records stay
//! byte-for-byte as the producer compressed them.

use crate::ErrorCode;

/// Size of the v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length` is complete: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The only record batch format Sediment accepts.
pub const MAGIC_V2: i8 = 2;
/// Offset of the CRC-covered region.
const CRC_START: usize = 21;
const MAGIC_OFFSET: usize = 16;
const EPOCH_OFFSET: usize = 12;
pub(crate) const CRC_OFFSET: usize = 17;

/// Compression codec named by the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A parsed v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

/// Why a batch was refused. [`BatchError::code`] maps each kind to the Kafka error code a broker
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("invalid batch length {0}")]
    BadLength(i32),
    #[error("crc mismatch: header says {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("invalid record count {count} for last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("produce request carries {0} record batches for one partition; exactly one is allowed")]
    NotExactlyOneBatch(usize),
    #[error("compression codec {0} is not valid")]
    BadCompression(i16),
    #[error("produce request must have at least one record batch per partition")]
    Empty,
    #[error("record {index}: {reason}")]
    BadRecord { index: i32, reason: String },
    #[error("compressed records could not be decompressed: {0}")]
    Decompression(String),
    #[error("compressed records inflate past {limit} bytes")]
    DecompressedTooLarge { limit: u64 },
    #[error("clients are not allowed to write control records")]
    ControlBatch,
    #[error("transactional batch from a producer that is not in a transaction")]
    NotInTransaction,
}

impl BatchError {
    /// The Kafka error code for this failure (the same ones Apache Kafka's log validator uses).
    pub fn code(&self) -> ErrorCode {
        match self {
            BatchError::Truncated { .. } | BatchError::BadLength(_) | BatchError::CrcMismatch { .. } => ErrorCode::CorruptMessage,
            BatchError::BadMagic(_)
            | BatchError::BadRecordCount { .. }
            | BatchError::NotExactlyOneBatch(_)
            | BatchError::BadCompression(_)
            | BatchError::Empty
            | BatchError::BadRecord { .. }
            | BatchError::DecompressedTooLarge { .. }
            | BatchError::ControlBatch => ErrorCode::InvalidRecord,
            BatchError::Decompression(_) => ErrorCode::CorruptMessage,
            BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            BatchError::NotInTransaction => ErrorCode::InvalidTxnState,
        }
    }

    /// The failing record's position in its batch, for the produce response's `record_errors`.
    pub fn record_index(&self) -> Option<i32> {
        match self {
            BatchError::BadRecord { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// How much of a compressed batch the broker reads before accepting it. Uncompressed batches
/// are always walked record by record (it costs no decompression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValidationMode {
    /// Decompress every compressed batch as a stream and walk its records, as Kafka's log
    /// validator does: a forged count or garbage inside the compression is refused.
    #[default]
    Strict,
    /// Header-level checks only for compressed batches (CRC, count against last offset delta,
    /// codec): cheaper, but what is inside the compression is taken on trust.
    Relaxed,
}

impl std::str::FromStr for ValidationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(ValidationMode::Strict),
            "relaxed" => Ok(ValidationMode::Relaxed),
            other => Err(format!("batch validation mode must be strict or relaxed, not {other:?}")),
        }
    }
}

/// A produce batch that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    pub header: BatchHeader,
    /// What walking the records found; `None` for a compressed batch in relaxed mode.
    pub records: Option<crate::records::Summary>,
}

#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold more than one batch). Checks the
    /// magic and that `batch_length` is plausible; does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < MAGIC_OFFSET + 1 {
            return Err(BatchError::Truncated { needed: HEADER_LEN, available: buf.len() });
        }
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated { needed: HEADER_LEN, available: buf.len() });
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, EPOCH_OFFSET),
            magic,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Whole size of the batch including the 12-byte log overhead.
    #[inline]
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    #[inline]
    pub fn last_offset(&self) -> i64 {
        // saturating: a header read from disk or the bucket may carry any base offset
        self.base_offset.saturating_add(self.last_offset_delta as i64)
    }

    /// Offset following this batch.
    #[inline]
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(match self.attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::BadCompression(other)),
        })
    }

    /// `true` when the batch timestamps are broker append time (attribute bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// `true` when the batch carries an idempotent producer id.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Appends `v` as a zigzag varint (the record format's signed varints).
pub fn put_varint(out: &mut impl bytes::BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z & 0x7f) as u8 | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Computes CRC-32C of the region the v2 header's CRC covers.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks the stored CRC of one whole batch (`batch` must be exactly the batch).
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() < header.total_len() {
        return Err(BatchError::Truncated { needed: header.total_len(), available: batch.len() });
    }
    let actual = compute_crc(&batch[..header.total_len()]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    Ok(())
}

/// Validates the records of one partition in a Produce request (v3+) from a client: exactly
/// one v2 batch, complete, within `max_message_bytes`, CRC correct, record count consistent, no
/// control or transactional batch, and every record readable (compressed ones too in
/// [`ValidationMode::Strict`]).
pub fn validate_produce_records(records: &[u8], max_message_bytes: usize, mode: ValidationMode) -> Result<Validated, BatchError> {
    let header = validate_batch_header(records, max_message_bytes)?;
    if header.is_control() {
        return Err(BatchError::ControlBatch);
    }
    if header.is_transactional() {
        return Err(BatchError::NotInTransaction);
    }
    let compressed = header.compression()? != Compression::None;
    let summary = if compressed && mode == ValidationMode::Relaxed {
        None
    } else {
        Some(crate::records::walk(records, crate::records::WalkLimits::default(), |_| std::ops::ControlFlow::Continue(()))?)
    };
    Ok(Validated { header, records: summary })
}

/// The header-level checks of [`validate_produce_records`]: one whole batch, size, codec, count
/// against last offset delta, CRC.
pub fn validate_batch_header(records: &[u8], max_message_bytes: usize) -> Result<BatchHeader, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let header = BatchHeader::parse(records)?;
    let len = header.total_len();
    if records.len() < len {
        return Err(BatchError::Truncated { needed: len, available: records.len() });
    }
    if records.len() > len {
        let count = BatchIter::new(records).count();
        return Err(BatchError::NotExactlyOneBatch(count.max(2)));
    }
    if len > max_message_bytes {
        return Err(BatchError::TooLarge { size: len, max: max_message_bytes });
    }
    header.compression()?;
    if header.records_count < 1 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::BadRecordCount { count: header.records_count, last_offset_delta: header.last_offset_delta });
    }
    let actual = compute_crc(records);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    Ok(header)
}

/// Rewrites the base offset in place (not covered by the CRC).
#[inline]
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (not covered by the CRC).
#[inline]
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[EPOCH_OFFSET..EPOCH_OFFSET + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the max timestamp and the log-append-time attribute, then recomputes the CRC.
/// Used only for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attrs = be_i16(batch, 21) | 0x08;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    set_max_timestamp(batch, timestamp_ms);
}

/// Sets the max timestamp and recomputes the CRC. Kafka's validator does the same when a
/// producer's header disagrees with its records, so the time index is built from the truth.
pub fn set_max_timestamp(batch: &mut [u8], timestamp_ms: i64) {
    batch[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates the complete batches at the start of a buffer, by header only (no CRC check). Stops at
/// the first incomplete or unparsable batch; [`BatchIter::remaining`] tells how many bytes were left.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf, pos: 0 }
    }

    /// Bytes not yet returned (an incomplete or invalid tail once iteration ended).
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// (header, the whole batch bytes)
    type Item = (BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest).ok()?;
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        self.pos += len;
        Some((header, &rest[..len]))
    }
}

/// Builders of valid batches for tests and benchmarks (uncompressed records, no I/O).
pub mod testing {
    use super::*;

    /// One record of batch position `i` for kafka-protocol's `RecordBatchEncoder` (the encoder
    /// the Java-client framings come from): no producer, offset `i`, timestamp `base_ts + i`.
    /// Records built with consecutive `i` encode as one batch (offset - sequence is constant).
    pub fn encoder_record(i: usize, base_ts: i64, key: bytes::Bytes, value: bytes::Bytes) -> kafka_protocol::records::Record {
        kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: base_ts + i as i64,
            key: Some(key),
            value: Some(value),
            headers: Default::default(),
        }
    }

    /// One uncompressed record body (without its length prefix).
    fn record(delta: i64, ts_delta: i64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
        let mut r = Vec::with_capacity(value.len() + 16);
        r.push(0); // attributes
        put_varint(&mut r, ts_delta);
        put_varint(&mut r, delta);
        match key {
            Some(k) => {
                put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, value.len() as i64);
        r.extend_from_slice(value);
        put_varint(&mut r, 0); // headers
        r
    }

    /// A valid uncompressed batch of `records` records with base offset 0, timestamps
    /// `base_ts, base_ts+1, ...`, keys `k{i}` and values `v{i}`.
    pub fn batch_with_records(records: i32, base_ts: i64) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..records).map(|i| format!("v{i}").into_bytes()).collect();
        batch_from_values(&values, base_ts)
    }

    /// A valid uncompressed batch holding the given values (keys `k{i}`), timestamps
    /// increasing by 1 ms from `base_ts`.
    pub fn batch_from_values(values: &[Vec<u8>], base_ts: i64) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            let rec = record(i as i64, i as i64, Some(key.as_bytes()), v);
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let n = values.len() as i32;
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&(base_ts + (n as i64 - 1).max(0)).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_batch_passes_and_patching_keeps_crc() {
        let mut b = batch_with_records(5, 1000);
        let h = validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap().header;
        assert_eq!(h.records_count, 5);
        assert_eq!(h.max_timestamp, 1004);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        let h2 = validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap().header;
        assert_eq!(h2.base_offset, 42);
        assert_eq!(h2.last_offset(), 46);
        assert_eq!(h2.partition_leader_epoch, 7);
    }

    #[test]
    fn corrupted_payload_is_crc_mismatch() {
        let mut b = batch_with_records(3, 0);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let err = validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }));
        assert_eq!(err.code(), ErrorCode::CorruptMessage);
    }

    #[test]
    fn oversized_is_message_too_large() {
        let b = batch_with_records(100, 0);
        let err = validate_produce_records(&b, 100, ValidationMode::Strict).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn two_batches_rejected_and_iterated() {
        let mut b = batch_with_records(2, 0);
        b.extend_from_slice(&batch_with_records(3, 0));
        assert_eq!(validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap_err().code(), ErrorCode::InvalidRecord);
        let v: Vec<_> = BatchIter::new(&b).map(|(h, _)| h.records_count).collect();
        assert_eq!(v, vec![2, 3]);
    }

    #[test]
    fn empty_records_are_invalid_record() {
        assert_eq!(validate_produce_records(&[], 1 << 20, ValidationMode::Strict).unwrap_err().code(), ErrorCode::InvalidRecord);
    }

    #[test]
    fn old_magic_is_invalid_record() {
        let mut b = batch_with_records(1, 0);
        b[16] = 1;
        assert_eq!(validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap_err(), BatchError::BadMagic(1));
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut b = batch_with_records(2, 5);
        set_log_append_time(&mut b, 99);
        let h = validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap().header;
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn control_and_transactional_batches_from_clients_are_refused() {
        for (bit, code) in [(0x20i16, ErrorCode::InvalidRecord), (0x10, ErrorCode::InvalidTxnState)] {
            let mut b = batch_with_records(2, 0);
            b[21..23].copy_from_slice(&bit.to_be_bytes());
            let crc = compute_crc(&b);
            b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap_err().code(), code);
        }
    }

    #[test]
    fn a_forged_count_with_a_consistent_delta_is_refused() {
        let mut b = batch_with_records(1, 0);
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        validate_batch_header(&b, 1 << 20).unwrap();
        let e = validate_produce_records(&b, 1 << 20, ValidationMode::Strict).unwrap_err();
        assert_eq!((e.code(), e.record_index()), (ErrorCode::InvalidRecord, Some(1)));
    }

    #[test]
    fn validation_reports_the_records_timestamps() {
        let b = batch_with_records(4, 100);
        let v = validate_produce_records(&b, 1 << 20, ValidationMode::Relaxed).unwrap();
        let s = v.records.expect("uncompressed batches are always walked");
        assert_eq!((s.records, s.min_timestamp, s.max_timestamp), (4, 100, 103));
    }

    proptest! {
        #[test]
        fn header_round_trips(n in 1i32..50, ts in 0i64..i64::MAX / 2, off in 0i64..i64::MAX / 4, epoch in 0i32..i32::MAX) {
            let mut b = batch_with_records(n, ts);
            set_base_offset(&mut b, off);
            set_partition_leader_epoch(&mut b, epoch);
            let h = BatchHeader::parse(&b).unwrap();
            prop_assert_eq!(h.base_offset, off);
            prop_assert_eq!(h.partition_leader_epoch, epoch);
            prop_assert_eq!(h.records_count, n);
            prop_assert_eq!(h.total_len(), b.len());
            prop_assert_eq!(h.base_timestamp, ts);
            prop_assert!(verify_crc(&b).is_ok());
        }

        #[test]
        fn any_single_byte_flip_in_crc_region_is_detected(n in 1i32..20, pos in 0usize..10_000, bit in 0u8..8) {
            let mut b = batch_with_records(n, 0);
            let pos = CRC_START + pos % (b.len() - CRC_START);
            b[pos] ^= 1 << bit;
            prop_assert!(validate_produce_records(&b, 1 << 20, ValidationMode::Strict).is_err());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_produce_records(&data, 1 << 20, ValidationMode::Strict);
            let _ = BatchIter::new(&data).count();
        }
    }
}
