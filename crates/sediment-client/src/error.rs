//! The client's error type.
//!
//! One enum for every failure the client reports. It is `Clone` so a single
//! failed produce request can be reported to every record of every batch it
//! carried. Messages are lowercase, one line, and name what failed; broker
//! error codes are shown by their Kafka name (`UNKNOWN_TOPIC_OR_PARTITION`).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be established.
    #[error("cannot connect to broker at {addr}: {}", io_message(.cause))]
    Connect {
        /// Address dialled.
        addr: String,
        /// Underlying socket error (part of the message, not a separate source).
        cause: Arc<std::io::Error>,
    },
    /// Reading or writing an established connection failed.
    #[error("connection to {addr} failed: {}", io_message(.cause))]
    Io {
        /// Broker address.
        addr: String,
        /// Underlying socket error (part of the message, not a separate source).
        cause: Arc<std::io::Error>,
    },
    /// The connection was closed (by the broker, or after an earlier error).
    #[error("connection to {addr} closed")]
    Closed {
        /// Broker address.
        addr: String,
    },
    /// No response arrived within the request timeout.
    #[error("{api:?} request to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        /// Broker address.
        addr: String,
        /// API of the request.
        api: ApiKey,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The broker sent something the client cannot decode.
    #[error("bad response from {addr}: {detail}")]
    Protocol {
        /// Broker address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The broker and this client share no version of an API.
    #[error("broker at {addr} does not support any version of {api:?} this client speaks")]
    Unsupported {
        /// Broker address.
        addr: String,
        /// The API.
        api: ApiKey,
    },
    /// The broker answered with an error code.
    #[error("{what}: {}", describe_code(*.code, .message.as_deref()))]
    Broker {
        /// What the client was doing, e.g. `cannot create topic "x"`.
        what: String,
        /// The broker's error code.
        code: ResponseError,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// The topic does not exist.
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    /// The partition does not exist.
    #[error("partition {partition} of topic \"{topic}\" does not exist")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition index asked for.
        partition: i32,
    },
    /// A request or argument the client refuses before sending anything.
    #[error("{0}")]
    Invalid(String),
    /// The producer shut down before the record was delivered.
    #[error("producer closed before the record was delivered")]
    ProducerClosed,
}

impl Error {
    /// Builds [`Error::Broker`] from a non-zero error code.
    pub fn broker(what: impl Into<String>, code: i16, message: Option<&str>) -> Self {
        Error::Broker {
            what: what.into(),
            code: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }
    }

    /// Whether retrying the same request later may succeed: connection
    /// failures, timeouts and the error codes Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io { .. } | Error::Closed { .. } | Error::Timeout { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether the error means the client's view of partition leadership is
    /// stale, so metadata should be refreshed before retrying.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io { .. } | Error::Closed { .. } => true,
            Error::Broker { code, .. } => is_leadership_error(*code),
            _ => false,
        }
    }

    /// The broker error code, if this is a broker error.
    pub fn code(&self) -> Option<ResponseError> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Error codes meaning "ask someone else" or "ask again after a metadata refresh".
pub(crate) fn is_leadership_error(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::NotController
            | ResponseError::ReplicaNotAvailable
            | ResponseError::BrokerNotAvailable
    )
}

/// Kafka's canonical name of an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(code: ResponseError) -> String {
    if let ResponseError::Unknown(c) = code {
        return format!("UNKNOWN_ERROR_CODE_{c}");
    }
    // `ResponseError`'s Display is the CamelCase variant name; Kafka's names
    // are the same words in SCREAMING_SNAKE_CASE.
    let camel = code.to_string();
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// An I/O error as a lowercase phrase: "Connection refused (os error 111)"
/// becomes "connection refused".
pub(crate) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()).to_lowercase(),
    }
}

fn describe_code(code: ResponseError, message: Option<&str>) -> String {
    match message {
        Some(m) => format!("{} (error code {}): {m}", error_name(code), code.code()),
        None => format!("{} (error code {})", error_name(code), code.code()),
    }
}

impl Error {
    pub(crate) fn io(addr: &str, source: std::io::Error) -> Self {
        Error::Io { addr: addr.to_owned(), cause: Arc::new(source) }
    }

    pub(crate) fn protocol(addr: &str, detail: impl Into<String>) -> Self {
        Error::Protocol { addr: addr.to_owned(), detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_one_lowercase_line() {
        let e = Error::Connect { addr: "127.0.0.1:1".into(), cause: Arc::new(std::io::Error::from_raw_os_error(111)) };
        assert_eq!(e.to_string(), "cannot connect to broker at 127.0.0.1:1: connection refused");
        assert!(std::error::Error::source(&e).is_none(), "no duplicate cause in anyhow chains");
    }

    #[test]
    fn error_names_match_kafka() {
        assert_eq!(error_name(ResponseError::UnknownTopicOrPartition), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(ResponseError::NotLeaderOrFollower), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(ResponseError::TopicAlreadyExists), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(ResponseError::Unknown(999)), "UNKNOWN_ERROR_CODE_999");
    }

    #[test]
    fn broker_error_message_is_one_lowercase_line() {
        let e = Error::broker("cannot create topic \"x\"", 37, Some("number of partitions must be positive"));
        assert_eq!(e.to_string(), "cannot create topic \"x\": INVALID_PARTITIONS (error code 37): number of partitions must be positive");
        let e = Error::broker("cannot delete topic \"y\"", 3, Some(""));
        assert_eq!(e.to_string(), "cannot delete topic \"y\": UNKNOWN_TOPIC_OR_PARTITION (error code 3)");
        assert!(e.is_retriable());
        assert!(e.needs_metadata_refresh());
    }
}
