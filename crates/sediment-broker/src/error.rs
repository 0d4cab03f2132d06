//! The one error type handlers return: a Kafka error code plus a message for the client.

use sediment_protocol::ErrorCode;

/// An error answered to a client as an error code (and, where the API has one, a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiError {
    /// UNKNOWN_TOPIC_OR_PARTITION for a topic this broker does not know.
    pub fn unknown_topic(name: &str) -> ApiError {
        ApiError::new(ErrorCode::UnknownTopicOrPartition, format!("topic \"{name}\" does not exist"))
    }

    /// UNKNOWN_TOPIC_OR_PARTITION for a partition index the topic does not have.
    pub fn unknown_partition(topic: &str, index: i32) -> ApiError {
        ApiError::new(ErrorCode::UnknownTopicOrPartition, format!("partition {index} of \"{topic}\" does not exist"))
    }
}

/// The Kafka error code a broker answers for an internal error: one table per error type, all
/// in this file, each checked by the table test below.
pub trait KafkaCode {
    fn kafka_code(&self) -> ErrorCode;
}

impl<E: KafkaCode + std::fmt::Display> From<&E> for ApiError {
    fn from(e: &E) -> ApiError {
        ApiError::new(e.kafka_code(), e.to_string())
    }
}

impl KafkaCode for sediment_log::LogError {
    /// The code a Kafka broker answers for the same log condition.
    fn kafka_code(&self) -> ErrorCode {
        use sediment_log::LogError as L;
        match self {
            L::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            L::InvalidBatch(b) => b.code(),
            L::NotBatchBoundary(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::KafkaStorageError,
        }
    }
}

/// The Kafka error code for a tiered-storage failure. An offset the bucket does not hold is
/// OFFSET_OUT_OF_RANGE (the consumer resets); everything else (a missing or damaged object, an
/// unreachable bucket) is KAFKA_STORAGE_ERROR, which clients retry and never mistake for data.
pub fn tier_error_code(kind: sediment_tier::ErrorKind) -> ErrorCode {
    use sediment_tier::ErrorKind as K;
    match kind {
        K::OutOfRange => ErrorCode::OffsetOutOfRange,
        K::Missing | K::Corrupt | K::Unavailable | K::LocalIo | K::Fenced | K::Config => ErrorCode::KafkaStorageError,
    }
}

impl KafkaCode for sediment_tier::TierError {
    fn kafka_code(&self) -> ErrorCode {
        tier_error_code(self.kind())
    }
}

impl KafkaCode for sediment_raft::cluster::MetaError {
    /// What Kafka's controller answers for the same refusal.
    fn kafka_code(&self) -> ErrorCode {
        use sediment_raft::cluster::MetaError as M;
        match self {
            M::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            M::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            M::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            M::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            M::BrokerHostsReplicas { .. } => ErrorCode::InvalidRequest,
            M::InvalidReassignment(_) => ErrorCode::InvalidReplicaAssignment,
            M::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            M::ProducerIdsExhausted => ErrorCode::UnknownServerError,
        }
    }
}

impl KafkaCode for sediment_raft::controller::WriteError {
    /// A metadata write with no quorum times out (clients retry); a stopped group is fatal.
    fn kafka_code(&self) -> ErrorCode {
        use sediment_raft::controller::WriteError as W;
        match self {
            W::NoLeader(_) => ErrorCode::RequestTimedOut,
            W::Fatal(_) => ErrorCode::UnknownServerError,
        }
    }
}

impl KafkaCode for sediment_raft::controller::MembershipError {
    fn kafka_code(&self) -> ErrorCode {
        use sediment_raft::controller::MembershipError as M;
        match self {
            M::Timeout(_) => ErrorCode::RequestTimedOut,
            M::AlreadyMember(_) => ErrorCode::DuplicateVoter,
            M::Refused(_) => ErrorCode::InvalidRequest,
        }
    }
}

impl KafkaCode for crate::replica::ProposeError {
    /// Either way the client should refresh its metadata and find the partition's leader.
    fn kafka_code(&self) -> ErrorCode {
        ErrorCode::NotLeaderOrFollower
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sediment_tier::ErrorKind as K;

    #[test]
    fn every_error_maps_to_kafkas_code() {
        let table = [
            (K::OutOfRange, ErrorCode::OffsetOutOfRange),
            (K::Missing, ErrorCode::KafkaStorageError),
            (K::Corrupt, ErrorCode::KafkaStorageError),
            (K::Unavailable, ErrorCode::KafkaStorageError),
            (K::LocalIo, ErrorCode::KafkaStorageError),
            (K::Fenced, ErrorCode::KafkaStorageError),
            (K::Config, ErrorCode::KafkaStorageError),
        ];
        for (kind, code) in table {
            assert_eq!(tier_error_code(kind), code, "{kind:?}");
        }
        use sediment_raft::cluster::MetaError as M;
        use sediment_raft::controller::{MembershipError, WriteError};
        let d = std::time::Duration::from_secs(1);
        let table: Vec<(ErrorCode, ErrorCode)> = vec![
            (M::TopicExists("t".into()).kafka_code(), ErrorCode::TopicAlreadyExists),
            (M::UnknownTopic("t".into()).kafka_code(), ErrorCode::UnknownTopicOrPartition),
            (M::InvalidReplicationFactor { requested: 4, available: 3 }.kafka_code(), ErrorCode::InvalidReplicationFactor),
            (M::InvalidPartitions("0".into()).kafka_code(), ErrorCode::InvalidPartitions),
            (M::BrokerHostsReplicas { id: 1, partitions: 1, example: "t-0".into() }.kafka_code(), ErrorCode::InvalidRequest),
            (M::InvalidReassignment("x".into()).kafka_code(), ErrorCode::InvalidReplicaAssignment),
            (M::InvalidTopic("..".into()).kafka_code(), ErrorCode::InvalidTopicException),
            (M::ProducerIdsExhausted.kafka_code(), ErrorCode::UnknownServerError),
            (WriteError::NoLeader(d).kafka_code(), ErrorCode::RequestTimedOut),
            (WriteError::Fatal("x".into()).kafka_code(), ErrorCode::UnknownServerError),
            (MembershipError::Timeout(d).kafka_code(), ErrorCode::RequestTimedOut),
            (MembershipError::AlreadyMember("x".into()).kafka_code(), ErrorCode::DuplicateVoter),
            (MembershipError::Refused("x".into()).kafka_code(), ErrorCode::InvalidRequest),
            (crate::replica::ProposeError::NotLeader(Some(2)).kafka_code(), ErrorCode::NotLeaderOrFollower),
            (crate::replica::ProposeError::Stopped("x".into()).kafka_code(), ErrorCode::NotLeaderOrFollower),
            (sediment_log::LogError::OffsetOutOfRange { offset: 9, start: 0, end: 5 }.kafka_code(), ErrorCode::OffsetOutOfRange),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
        assert_eq!(ApiError::unknown_topic("t").code, ErrorCode::UnknownTopicOrPartition);
        assert_eq!(ApiError::unknown_partition("t", 7).message, "partition 7 of \"t\" does not exist");
        let e = sediment_tier::TierError::Missing { key: "topics/t/1/0/segments/x.seg".into() };
        let api = ApiError::from(&e);
        assert_eq!(api.code, ErrorCode::KafkaStorageError);
        assert!(api.message.contains("x.seg"), "{}", api.message);
    }
}
