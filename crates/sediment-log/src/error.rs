//! The log's error type. Messages are lowercase and name the file involved, so a broker can log
//! them as they are and map each kind to a Kafka error code in one place.

use std::path::PathBuf;

use sediment_protocol::batch::BatchError;

/// Why a log operation failed.
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    /// A system call on a log file failed (`op` says which, e.g. "write segment").
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file holds bytes that cannot be a valid log (a sealed segment, or data found while reading).
    #[error("corrupt log file {}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The offset is below the log start offset or above the log end offset.
    #[error("offset {offset} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// `truncate_to` was asked to cut inside a batch.
    #[error("offset {0} is not a batch boundary")]
    NotBatchBoundary(i64),
    /// The bytes handed to `append`/`append_assigned` are not whole valid v2 batches.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// `append_assigned` got a batch whose base offset does not continue the log.
    #[error("batch base offset {actual} does not continue the log at offset {expected}")]
    UnexpectedOffset { expected: i64, actual: i64 },
    /// A write failed and could not be undone: the log refuses writes until it is reopened.
    #[error("log {} is offline after an unrecoverable i/o error: {reason}", .path.display())]
    Offline { path: PathBuf, reason: String },
}

/// `map_err` helper: `file.sync_data().map_err(io("fsync segment", &path))`.
pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io { op, path: path.to_path_buf(), source }
}
