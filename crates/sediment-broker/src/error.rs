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

impl From<&sediment_log::LogError> for ApiError {
    /// Maps log failures to the code a Kafka broker answers for the same condition.
    fn from(e: &sediment_log::LogError) -> ApiError {
        use sediment_log::LogError as L;
        let code = match e {
            L::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            L::InvalidBatch(b) => b.code(),
            L::NotBatchBoundary(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::KafkaStorageError,
        };
        ApiError::new(code, e.to_string())
    }
}

/// The Kafka error code for a tiered-storage failure. One exhaustive table: an offset the bucket
/// does not hold is OFFSET_OUT_OF_RANGE (the consumer resets); everything else — a missing or
/// damaged object, an unreachable bucket — is KAFKA_STORAGE_ERROR, which clients retry and
/// never mistake for data.
pub fn tier_error_code(kind: sediment_tier::ErrorKind) -> ErrorCode {
    use sediment_tier::ErrorKind as K;
    match kind {
        K::OutOfRange => ErrorCode::OffsetOutOfRange,
        K::Missing | K::Corrupt | K::Unavailable | K::LocalIo | K::Fenced | K::Config => ErrorCode::KafkaStorageError,
    }
}

impl From<&sediment_tier::TierError> for ApiError {
    fn from(e: &sediment_tier::TierError) -> ApiError {
        ApiError::new(tier_error_code(e.kind()), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sediment_tier::ErrorKind as K;

    #[test]
    fn tier_errors_map_to_kafka_codes() {
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
        let e = sediment_tier::TierError::Missing { key: "topics/t/1/0/segments/x.seg".into() };
        let api = ApiError::from(&e);
        assert_eq!(api.code, ErrorCode::KafkaStorageError);
        assert!(api.message.contains("x.seg"), "{}", api.message);
    }
}
