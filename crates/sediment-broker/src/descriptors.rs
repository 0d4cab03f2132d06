//! File descriptors as a resource new partitions are checked against. Each partition replica
//! keeps its active segment and its Raft entry index open; a topic whose partitions would take
//! the process to its descriptor limit is refused before anything is created, instead of
//! failing part-way (and taking down whatever else needed a descriptor at that moment: a
//! connection, the metadata log's next write).

use sediment_protocol::ErrorCode;

use crate::error::ApiError;

/// Descriptors a new partition replica opens (its active segment and its Raft entry index).
pub const PER_PARTITION: u64 = 2;

/// Descriptors kept free whatever the partitions take: connections, the metadata log, snapshot
/// and index files opened for a moment, the bucket's HTTP connections.
fn reserve(limit: u64) -> u64 {
    (limit / 8).max(64)
}

/// Refuses placing `partitions` new replicas on this broker when their descriptors would not
/// fit under the soft limit (`ulimit -n`) with the reserve left over. Where `/proc` cannot
/// tell, nothing is refused.
pub fn check_room(partitions: u64) -> Result<(), ApiError> {
    let (Some(limit), Some(open)) = (soft_limit(), open_now()) else { return Ok(()) };
    let need = partitions.saturating_mul(PER_PARTITION);
    let keep = reserve(limit);
    if open.saturating_add(need).saturating_add(keep) <= limit {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::KafkaStorageError,
        format!(
            "{partitions} new partitions here need about {need} file descriptors, but {open} of the limit of {limit} are open and {keep} are kept free; raise the limit (ulimit -n, LimitNOFILE)"
        ),
    ))
}

/// The process's soft limit on open files, from `/proc/self/limits`.
fn soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Descriptors open now.
fn open_now() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_a_huge_request_is_refused() {
        assert!(soft_limit().is_some_and(|l| l > 0));
        assert!(open_now().is_some_and(|n| n > 0));
        check_room(1).expect("one partition fits");
        let e = check_room(u64::MAX / 4).unwrap_err();
        assert_eq!(e.code, ErrorCode::KafkaStorageError);
        assert!(e.message.contains("raise the limit"), "{}", e.message);
    }
}
