//! Group commit: take the handles to fsync under the lock, fsync without it, publish under it.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::error::{LogError, io};

/// fsyncs to run outside the partition lock; see [`crate::PartitionLog::begin_flush`].
#[must_use = "a flush job does nothing until run"]
pub struct FlushJob {
    pub(crate) files: Vec<(Arc<File>, Arc<Path>)>,
    pub(crate) target: i64,
    pub(crate) generation: u64,
}

/// Proof that a [`FlushJob`] ran; hand it to [`crate::PartitionLog::complete_flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushDone {
    pub(crate) target: i64,
    pub(crate) generation: u64,
}

impl std::fmt::Debug for FlushJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushJob").field("target", &self.target).field("files", &self.files.len()).finish()
    }
}

impl FlushJob {
    /// Every offset below this is durable once the job ran.
    pub fn target_offset(&self) -> i64 {
        self.target
    }

    /// fsyncs the dirty segment files (blocking; call it without the partition lock).
    pub fn run(self) -> Result<FlushDone, LogError> {
        for (file, path) in &self.files {
            file.sync_data().map_err(io("fsync segment", path))?;
        }
        Ok(FlushDone { target: self.target, generation: self.generation })
    }
}

impl FlushDone {
    pub fn target_offset(&self) -> i64 {
        self.target
    }
}
