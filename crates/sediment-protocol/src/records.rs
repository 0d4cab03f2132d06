//! Record-level work that needs decoding (and so decompression). Kept off the produce and fetch
//! hot paths: only ListOffsets-by-timestamp and tools use it.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

/// Offset of the first record in `batch` (one whole v2 batch) whose timestamp is at or after
/// `target_ms`, or `None` if no record is. Both snappy framings (raw and xerial) are accepted.
pub fn first_offset_at_or_after(batch: &[u8], target_ms: i64) -> Option<(i64, i64)> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= target_ms)
        .map(|r| (r.offset, r.timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{set_base_offset, testing::batch_with_records};

    #[test]
    fn finds_exact_record() {
        let mut b = batch_with_records(10, 1000);
        set_base_offset(&mut b, 500);
        assert_eq!(first_offset_at_or_after(&b, 1003), Some((503, 1003)));
        assert_eq!(first_offset_at_or_after(&b, 0), Some((500, 1000)));
        assert_eq!(first_offset_at_or_after(&b, 5000), None);
    }
}
