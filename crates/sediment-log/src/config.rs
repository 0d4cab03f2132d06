//! Per-partition log settings (Kafka's topic configs of the same meaning).

/// Settings of one partition log. Kafka names: `segment.bytes`, `segment.ms`, `retention.ms`,
/// `retention.bytes`, `index.interval.bytes`, `segment.index.bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when the active segment would grow beyond this many bytes (capped at 2 GiB - 1, as
    /// Kafka caps it, because index entries hold 32-bit file positions).
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch was appended (wall time) more than this long ago.
    /// After a restart the clock of a non-empty active segment starts at its next append.
    pub segment_ms: i64,
    /// Delete sealed segments whose newest record is older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is bigger than this; -1 is unlimited.
    pub retention_bytes: i64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Roll when the offset index or time index would outgrow this many bytes.
    pub segment_index_bytes: u32,
}

/// Largest segment size honoured: positions in the offset index are 32-bit, Kafka uses `i32::MAX`.
pub(crate) const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
        }
    }
}

impl LogConfig {
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, MAX_SEGMENT_BYTES)
    }

    pub(crate) fn max_offset_entries(&self) -> usize {
        (self.segment_index_bytes as usize / crate::index::OFFSET_ENTRY_LEN).max(1)
    }

    pub(crate) fn max_time_entries(&self) -> usize {
        (self.segment_index_bytes as usize / crate::index::TIME_ENTRY_LEN).max(1)
    }
}
