//! What a client may do to a topic, decided in one place for every path (single node and
//! cluster alike): the internal `__consumer_offsets` topic is the broker's own, topic names
//! that differ only in `.` versus `_` collide (Kafka's metric names cannot tell them apart),
//! and a topic has between 1 and [`MAX_PARTITIONS_PER_TOPIC`] partitions and only grows.
//!
//! The broker itself creates and compacts its internal topic through its own methods; these
//! rules guard the client-facing handlers.

use sediment_protocol::ErrorCode;

use crate::error::ApiError;
use crate::group::OFFSETS_TOPIC;

/// The most partitions a topic may have (the controller's state machine refuses more too).
pub use sediment_raft::cluster::MAX_PARTITIONS_PER_TOPIC;

/// A new topic's partition count (after the broker's default replaced -1).
pub fn check_partition_count(partitions: i32) -> Result<(), ApiError> {
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!("number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}"),
        ));
    }
    Ok(())
}

/// CreatePartitions may only grow a topic, up to [`MAX_PARTITIONS_PER_TOPIC`].
pub fn check_partition_growth(current: i32, count: i32) -> Result<(), ApiError> {
    if count <= current {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!("topic currently has {current} partitions, which is higher than or equal to the requested {count}"),
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ApiError::new(ErrorCode::InvalidPartitions, format!("{count} partitions is more than a topic may have ({MAX_PARTITIONS_PER_TOPIC})")));
    }
    Ok(())
}

/// Whether `name` is one of the broker's internal topics.
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// A change a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientChange {
    Create,
    Delete,
    AddPartitions,
    DeleteRecords,
    Produce,
}

/// Refuses a client's change to an internal topic with the code Apache Kafka answers.
pub fn client_may(name: &str, change: ClientChange) -> Result<(), ApiError> {
    if !is_internal(name) {
        return Ok(());
    }
    let (code, why) = match change {
        // Kafka's controller: "Creation of internal topic ... is prohibited"
        ClientChange::Create => (ErrorCode::InvalidRequest, "is created by the broker; clients cannot create it"),
        ClientChange::Delete => (ErrorCode::InvalidTopicException, "cannot be deleted"),
        // groups are placed by a hash of their id over the partition count: it must not change
        ClientChange::AddPartitions => (ErrorCode::InvalidTopicException, "has a fixed partition count"),
        // Kafka's ReplicaManager: "Cannot delete records of internal topic"
        ClientChange::DeleteRecords => (ErrorCode::InvalidTopicException, "cannot have its records deleted (committed offsets would be lost)"),
        ClientChange::Produce => (ErrorCode::InvalidTopicException, "cannot be appended to by clients"),
    };
    Err(ApiError::new(code, format!("internal topic {name} {why}")))
}

/// Topic configs of an internal topic a client may not change: those that decide whether its
/// records are kept.
const GUARDED_INTERNAL_CONFIGS: &[&str] =
    &["cleanup.policy", "retention.ms", "retention.bytes", "local.retention.ms", "local.retention.bytes", "remote.storage.enable"];

/// Refuses a config change that would let an internal topic lose its records.
pub fn client_may_set_configs<'a>(name: &str, changed: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    if !is_internal(name) {
        return Ok(());
    }
    match changed.into_iter().find(|k| GUARDED_INTERNAL_CONFIGS.contains(k)) {
        Some(k) => Err(ApiError::new(ErrorCode::InvalidConfig, format!("{k} of internal topic {name} is managed by the broker"))),
        None => Ok(()),
    }
}

/// The existing topic a new one's name collides with: equal once `.` and `_` are treated alike
/// (Kafka: "Topic 'a_b' collides with existing topic: a.b"). An identical name is not a
/// collision (that is TOPIC_ALREADY_EXISTS).
pub fn collision<'a>(name: &str, existing: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.replace('.', "_");
    let n = norm(name);
    existing.into_iter().find(|e| *e != name && norm(e) == n)
}

/// [`collision`] as the error CreateTopics answers.
pub fn check_collision<'a>(name: &str, existing: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    match collision(name, existing) {
        Some(other) => Err(ApiError::new(ErrorCode::InvalidTopicException, format!("topic '{name}' collides with existing topic '{other}'"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_counts_and_growth() {
        for ok in [1, 3, MAX_PARTITIONS_PER_TOPIC] {
            assert!(check_partition_count(ok).is_ok(), "{ok}");
        }
        for bad in [0, -1, -7, MAX_PARTITIONS_PER_TOPIC + 1, i32::MAX] {
            assert_eq!(check_partition_count(bad).unwrap_err().code, ErrorCode::InvalidPartitions, "{bad}");
        }
        assert!(check_partition_growth(3, 4).is_ok());
        assert!(check_partition_growth(3, MAX_PARTITIONS_PER_TOPIC).is_ok());
        for (current, count) in [(3, 3), (3, 2), (3, -1), (3, MAX_PARTITIONS_PER_TOPIC + 1)] {
            assert_eq!(check_partition_growth(current, count).unwrap_err().code, ErrorCode::InvalidPartitions, "{current} -> {count}");
        }
    }

    #[test]
    fn every_client_change_to_the_offsets_topic_is_refused_with_kafkas_code() {
        for (change, code) in [
            (ClientChange::Create, ErrorCode::InvalidRequest),
            (ClientChange::Delete, ErrorCode::InvalidTopicException),
            (ClientChange::AddPartitions, ErrorCode::InvalidTopicException),
            (ClientChange::DeleteRecords, ErrorCode::InvalidTopicException),
            (ClientChange::Produce, ErrorCode::InvalidTopicException),
        ] {
            assert_eq!(client_may(OFFSETS_TOPIC, change).unwrap_err().code, code, "{change:?}");
            assert!(client_may("orders", change).is_ok());
        }
    }

    #[test]
    fn internal_configs_that_decide_retention_are_guarded() {
        assert!(client_may_set_configs(OFFSETS_TOPIC, ["segment.bytes"]).is_ok());
        assert_eq!(client_may_set_configs(OFFSETS_TOPIC, ["segment.ms", "retention.ms"]).unwrap_err().code, ErrorCode::InvalidConfig);
        assert_eq!(client_may_set_configs(OFFSETS_TOPIC, ["cleanup.policy"]).unwrap_err().code, ErrorCode::InvalidConfig);
        assert!(client_may_set_configs("orders", ["retention.ms"]).is_ok());
    }

    #[test]
    fn dot_and_underscore_collide() {
        assert_eq!(collision("a_b", ["x", "a.b"]), Some("a.b"));
        assert_eq!(collision("a.b", ["a_b"]), Some("a_b"));
        assert_eq!(collision("a.b", ["a.b"]), None, "same name: already exists, not a collision");
        assert_eq!(collision("ab", ["a.b", "a_b"]), None);
        assert_eq!(check_collision("x.y_z", ["x_y.z"]).unwrap_err().code, ErrorCode::InvalidTopicException);
    }
}
