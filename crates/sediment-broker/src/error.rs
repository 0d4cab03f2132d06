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
