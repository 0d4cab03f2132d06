//! The partition log: the single source of truth for one partition's records, on local disk, in
//! Kafka's segment layout. Later it is also the partition's Raft log: every batch carries its
//! leader epoch (the Raft term) in the header's `partition_leader_epoch`, and the log can be
//! truncated back to any batch boundary.
//!
//! # On disk
//!
//! ```text
//! <partition dir>/
//! ├── 00000000000000000000.log        sealed: fsynced when it was rolled, never written again
//! ├── 00000000000000000000.index
//! ├── 00000000000000000000.timeindex
//! ├── 00000000000000052317.log        active: the only segment appended to, the only one a crash can tear
//! ├── 00000000000000052317.index      (written when sealed or at a clean close; rebuilt by recovery)
//! ├── 00000000000000052317.timeindex
//! ├── log-start-offset                "0\n<offset>\n" once DeleteRecords raised it (tmp + rename)
//! └── .clean-shutdown                 exists only from close() to the next open()
//!
//! segment name = base offset (first offset in the segment), 20 digits, zero-padded
//!
//! .log        | batch | batch | batch | ...             record batches v2, byte for byte as produced,
//!               │                                       base_offset and partition_leader_epoch patched
//!               └─ 61-byte header: base_offset i64, batch_length i32, partition_leader_epoch i32,
//!                  magic i8 = 2, crc u32 (CRC-32C of the bytes after it), attributes, last_offset_delta,
//!                  base/max timestamps, producer id/epoch, base sequence, record count; then records
//!
//! .index      | rel offset u32 | position u32 | ...     big-endian; one entry each time more than
//!                                                       index_interval_bytes were appended since the
//!                                                       last one: (batch last offset - base, batch start)
//! .timeindex  | timestamp i64 | rel offset u32 | ...    appended with offset entries when the segment's
//!                                                       largest timestamp grew; last entry of a sealed
//!                                                       segment = its largest timestamp
//! ```
//!
//! # Durability
//!
//! Appends are one `pwrite` into the page cache. Group commit ([`PartitionLog::begin_flush`],
//! [`FlushJob::run`], [`PartitionLog::complete_flush`]) fsyncs without the partition lock and
//! advances [`PartitionLog::flushed_offset`]. Rolling a segment fsyncs its three files before the
//! next segment is created, and the directory is fsynced after files are created or deleted, so
//! only the active segment can be torn. [`PartitionLog::open`] scans it, checking each batch's
//! header, offsets and CRC-32C, and cuts the file at the first bad batch.
//!
//! # Concurrency
//!
//! [`PartitionLog`] is `Send` and meant to sit in a mutex. Every method does only in-memory work
//! and short system calls, except rolling (fsync), recovery, truncation and the timestamp
//! searches. Reads are planned under the lock without I/O ([`PartitionLog::read`]) and run
//! outside it ([`ReadPlan::execute`]) through shared file handles, which keep a segment readable
//! even after retention deleted it.
//!
//! ```
//! use sediment_log::{LogConfig, PartitionLog};
//! use sediment_protocol::batch::testing::batch_with_records;
//! # let tmp = std::env::temp_dir().join(format!("sediment-log-doc-{}", std::process::id()));
//! let mut log = PartitionLog::open(&tmp, LogConfig::default())?;
//! let mut batch = batch_with_records(3, 1_700_000_000_000);
//! let info = log.append(&mut batch, 7, 1_700_000_000_000)?;
//! assert_eq!((info.base_offset, info.last_offset), (0, 2));
//! log.flush()?;
//! let bytes = log.read(1, 1 << 20, log.flushed_offset(), true)?.execute()?;
//! assert_eq!(&bytes[..], &batch[..]);
//! log.close()?;
//! # std::fs::remove_dir_all(&tmp).ok();
//! # Ok::<(), sediment_log::LogError>(())
//! ```

pub mod clock;
mod config;
mod error;
mod files;
mod flush;
pub mod index;
mod log;
pub mod random;
mod read;
mod scan;
mod segment;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(test)]
mod tests;

pub use config::LogConfig;
pub use error::LogError;
pub use flush::{FlushDone, FlushJob};
pub use log::{AppendInfo, PartitionLog, RetentionOutcome, SegmentInfo};
pub use read::ReadPlan;
