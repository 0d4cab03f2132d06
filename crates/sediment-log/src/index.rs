//! Sparse offset and time indexes: fixed-width big-endian entries, Kafka's layout.
//!
//! ```text
//! .index      | relative offset u32 | position u32 |          8 bytes per entry
//! .timeindex  | timestamp i64       | relative offset u32 |   12 bytes per entry
//! ```
//!
//! A relative offset is `offset - segment base offset`. An offset entry names a batch by its
//! *last* offset and points at the batch's first byte in the `.log` file; one is added each time
//! more than `index_interval_bytes` were appended since the previous one. A time entry is added
//! at the same moments when the segment's largest timestamp grew, and names the (last offset of
//! the) first batch that reached that timestamp; sealing a segment adds a final entry, so the last
//! time entry of a sealed segment is its largest timestamp. Both indexes are strictly increasing
//! in their key, so lookups are binary searches.
//!
//! ```
//! use sediment_log::index::{OffsetEntry, TimeEntry, lookup_offset, lookup_time};
//! let offsets = [OffsetEntry { relative_offset: 9, position: 4100 }, OffsetEntry { relative_offset: 20, position: 8300 }];
//! // the batch holding relative offset 15 starts at or after position 4100
//! assert_eq!(lookup_offset(&offsets, 15), Some(offsets[0]));
//! assert_eq!(lookup_offset(&offsets, 3), None); // before the first entry: scan from position 0
//! let times = [TimeEntry { timestamp: 1_000, relative_offset: 9 }];
//! assert_eq!(lookup_time(&times, 1_500), Some(times[0]));
//! assert_eq!(OffsetEntry::decode(offsets[1].encode()), offsets[1]);
//! ```

/// Size of one `.index` entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one `.timeindex` entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// One `.index` entry: the batch whose last offset is `base + relative_offset` starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry: the segment's largest timestamp reached `timestamp` in the batch whose
/// last offset is `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl OffsetEntry {
    pub fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut b = [0u8; OFFSET_ENTRY_LEN];
        b[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        b[4..].copy_from_slice(&self.position.to_be_bytes());
        b
    }

    pub fn decode(b: [u8; OFFSET_ENTRY_LEN]) -> OffsetEntry {
        OffsetEntry { relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]), position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]) }
    }
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut b = [0u8; TIME_ENTRY_LEN];
        b[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..].copy_from_slice(&self.relative_offset.to_be_bytes());
        b
    }

    pub fn decode(b: [u8; TIME_ENTRY_LEN]) -> TimeEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry { timestamp: i64::from_be_bytes(ts), relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]) }
    }
}

/// Encodes a whole `.index` file.
pub fn encode_offset_index(entries: &[OffsetEntry]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.encode()).collect()
}

/// Encodes a whole `.timeindex` file.
pub fn encode_time_index(entries: &[TimeEntry]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.encode()).collect()
}

/// Decodes a whole `.index` file, checking its size and that offsets strictly increase and
/// positions do not decrease. The error is a reason for a log message.
pub fn decode_offset_index(bytes: &[u8]) -> Result<Vec<OffsetEntry>, String> {
    if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return Err(format!("size {} is not a multiple of {OFFSET_ENTRY_LEN}", bytes.len()));
    }
    let mut out: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
        let mut a = [0u8; OFFSET_ENTRY_LEN];
        a.copy_from_slice(chunk);
        let e = OffsetEntry::decode(a);
        if let Some(prev) = out.last()
            && (e.relative_offset <= prev.relative_offset || e.position < prev.position)
        {
            return Err(format!("entry {} goes backwards ({prev:?} then {e:?})", out.len()));
        }
        out.push(e);
    }
    Ok(out)
}

/// Decodes a whole `.timeindex` file, checking its size and that timestamps strictly increase and
/// offsets do not decrease.
pub fn decode_time_index(bytes: &[u8]) -> Result<Vec<TimeEntry>, String> {
    if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
        return Err(format!("size {} is not a multiple of {TIME_ENTRY_LEN}", bytes.len()));
    }
    let mut out: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
    for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
        let mut a = [0u8; TIME_ENTRY_LEN];
        a.copy_from_slice(chunk);
        let e = TimeEntry::decode(a);
        if let Some(prev) = out.last()
            && (e.timestamp <= prev.timestamp || e.relative_offset < prev.relative_offset)
        {
            return Err(format!("entry {} goes backwards ({prev:?} then {e:?})", out.len()));
        }
        out.push(e);
    }
    Ok(out)
}

/// The last entry whose relative offset is `<= target`: the batch holding `target` starts at or
/// after its position. `None` means "scan from the start of the segment".
pub fn lookup_offset(entries: &[OffsetEntry], target: u32) -> Option<OffsetEntry> {
    let i = entries.partition_point(|e| e.relative_offset <= target);
    i.checked_sub(1).map(|i| entries[i])
}

/// The last entry whose timestamp is `<= target`: no batch before the one it names reaches
/// `target`. `None` means "scan from the start of the segment".
pub fn lookup_time(entries: &[TimeEntry], target: i64) -> Option<TimeEntry> {
    let i = entries.partition_point(|e| e.timestamp <= target);
    i.checked_sub(1).map(|i| entries[i])
}

/// `offset - base` as an index key, clamped into `u32` (offsets below the base map to 0).
pub(crate) fn relative(offset: i64, base: i64) -> u32 {
    offset.saturating_sub(base).clamp(0, u32::MAX as i64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lookups_pick_the_floor_entry() {
        let e: Vec<OffsetEntry> = (1..=4).map(|i| OffsetEntry { relative_offset: i * 10, position: i * 1000 }).collect();
        assert_eq!(lookup_offset(&e, 0), None);
        assert_eq!(lookup_offset(&e, 9), None);
        assert_eq!(lookup_offset(&e, 10).map(|e| e.position), Some(1000));
        assert_eq!(lookup_offset(&e, 39).map(|e| e.position), Some(3000));
        assert_eq!(lookup_offset(&e, u32::MAX).map(|e| e.position), Some(4000));
        let t: Vec<TimeEntry> = (1..=3).map(|i| TimeEntry { timestamp: i * 100, relative_offset: i as u32 }).collect();
        assert_eq!(lookup_time(&t, 99), None);
        assert_eq!(lookup_time(&t, 100).map(|e| e.relative_offset), Some(1));
        assert_eq!(lookup_time(&t, 250).map(|e| e.relative_offset), Some(2));
    }

    #[test]
    fn decode_rejects_bad_files() {
        assert!(decode_offset_index(&[0u8; 7]).is_err());
        assert!(decode_time_index(&[0u8; 13]).is_err());
        let back = encode_offset_index(&[OffsetEntry { relative_offset: 5, position: 10 }, OffsetEntry { relative_offset: 5, position: 20 }]);
        assert!(decode_offset_index(&back).is_err());
        let back = encode_time_index(&[TimeEntry { timestamp: 5, relative_offset: 1 }, TimeEntry { timestamp: 4, relative_offset: 2 }]);
        assert!(decode_time_index(&back).is_err());
    }

    #[test]
    fn relative_clamps() {
        assert_eq!(relative(5, 10), 0);
        assert_eq!(relative(15, 10), 5);
        assert_eq!(relative(i64::MAX, 0), u32::MAX);
    }

    proptest! {
        #[test]
        fn offset_entry_round_trips(rel in any::<u32>(), pos in any::<u32>()) {
            let e = OffsetEntry { relative_offset: rel, position: pos };
            let b = e.encode();
            prop_assert_eq!(&b[..4], &rel.to_be_bytes()[..]);
            prop_assert_eq!(OffsetEntry::decode(b), e);
        }

        #[test]
        fn time_entry_round_trips(ts in any::<i64>(), rel in any::<u32>()) {
            let e = TimeEntry { timestamp: ts, relative_offset: rel };
            let b = e.encode();
            prop_assert_eq!(&b[..8], &ts.to_be_bytes()[..]);
            prop_assert_eq!(TimeEntry::decode(b), e);
        }

        #[test]
        fn index_files_round_trip(steps in proptest::collection::vec((1u32..1000, 0u32..100_000, 1i64..1_000_000), 0..200)) {
            let (mut rel, mut pos, mut ts) = (0u32, 0u32, 0i64);
            let mut offsets = Vec::new();
            let mut times = Vec::new();
            for (dr, dp, dt) in steps {
                rel += dr; pos += dp; ts += dt;
                offsets.push(OffsetEntry { relative_offset: rel, position: pos });
                times.push(TimeEntry { timestamp: ts, relative_offset: rel });
            }
            prop_assert_eq!(decode_offset_index(&encode_offset_index(&offsets)).unwrap(), offsets.clone());
            prop_assert_eq!(decode_time_index(&encode_time_index(&times)).unwrap(), times.clone());
            // every lookup lands on the floor entry
            for e in &offsets {
                prop_assert_eq!(lookup_offset(&offsets, e.relative_offset), Some(*e));
            }
        }

        #[test]
        fn random_index_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_offset_index(&data);
            let _ = decode_time_index(&data);
        }
    }
}
