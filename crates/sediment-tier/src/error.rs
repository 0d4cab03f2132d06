//! The tier's error: a detailed private shape behind a small public [`ErrorKind`], the one thing
//! callers branch on (the broker maps kinds to Kafka error codes in one exhaustive function).
//!
//! Every variant holds owned strings, so an error can be cloned out of a single-flight cache
//! fetch and handed to each waiter.

/// What went wrong, coarsely: enough for a caller to pick an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The offset is outside what the remote log holds.
    OutOfRange,
    /// An object the manifest names is not in the bucket.
    Missing,
    /// An object (or a local segment about to be uploaded) does not hold what its format promises.
    Corrupt,
    /// The object store did not answer in time, refused, or failed (5xx, network, throttling).
    Unavailable,
    /// A local file could not be read or written.
    LocalIo,
    /// This node is no longer the partition's leader (its uploads are fenced).
    Fenced,
    /// The object store URL or settings are unusable.
    Config,
}

/// A tiered-storage failure. Messages are lowercase and name the object or file involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TierError {
    #[error("offset {offset} is not in the remote log [{start}, {end})")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error("object {key} is missing from the object store")]
    Missing { key: String },
    #[error("object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("object store request failed: {0}")]
    Unavailable(String),
    #[error("{op} {path}: {reason}")]
    LocalIo { op: &'static str, path: String, reason: String },
    #[error("local segment {path} cannot be uploaded: {reason}")]
    BadLocalSegment { path: String, reason: String },
    #[error("uploads of {partition} are fenced: {reason}")]
    Fenced { partition: String, reason: String },
    #[error("invalid object store config: {0}")]
    Config(String),
}

impl TierError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TierError::OutOfRange { .. } => ErrorKind::OutOfRange,
            TierError::Missing { .. } => ErrorKind::Missing,
            TierError::Corrupt { .. } | TierError::BadLocalSegment { .. } => ErrorKind::Corrupt,
            TierError::Unavailable(_) => ErrorKind::Unavailable,
            TierError::LocalIo { .. } => ErrorKind::LocalIo,
            TierError::Fenced { .. } => ErrorKind::Fenced,
            TierError::Config(_) => ErrorKind::Config,
        }
    }

    pub(crate) fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> TierError {
        TierError::Corrupt { key: key.into(), reason: reason.into() }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, e: std::io::Error) -> TierError {
        TierError::LocalIo { op, path: path.display().to_string(), reason: e.to_string() }
    }

    /// Maps an `object_store` failure on `key`: a missing object is [`ErrorKind::Missing`],
    /// everything else (timeouts, 5xx, refused connections, bad credentials) is
    /// [`ErrorKind::Unavailable`].
    pub(crate) fn store(key: &str, e: object_store::Error) -> TierError {
        match e {
            object_store::Error::NotFound { .. } => TierError::Missing { key: key.to_string() },
            other => TierError::Unavailable(format!("{key}: {}", flatten(&other))),
        }
    }

    /// Recovers a `TierError` from a failed `foyer` fetch (which wraps it in `anyhow`).
    pub(crate) fn from_cache(e: &foyer::Error) -> TierError {
        match e.downcast_ref::<TierError>() {
            Some(t) => t.clone(),
            None => TierError::Unavailable(format!("read-through cache: {e}")),
        }
    }
}

/// `error: cause: cause` on one line (object_store nests its HTTP errors several levels deep).
pub(crate) fn flatten(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

pub type Result<T, E = TierError> = std::result::Result<T, E>;
