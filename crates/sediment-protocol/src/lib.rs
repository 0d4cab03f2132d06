//! Sediment's wire layer, free of I/O.
//!
//! * [`batch`]: the 61-byte record batch v2 header, CRC-32C checks and the in-place patches the
//!   broker applies on append (base offset, partition leader epoch). Records are never re-encoded.
//! * [`frame`]: Kafka's 4-byte size-prefixed framing and request header parsing, in two phases
//!   (is a whole frame buffered? then parse) so nothing is allocated for a partial frame.
//! * [`versions`]: the table of APIs and versions Sediment implements; `ApiVersions` answers from it.
//! * [`group_records`]: the `__consumer_offsets` records in Kafka's own key/value schemas.
//! * [`records`]: record-level helpers that need decoding (timestamp search within a batch).
//! * [`names`]: Kafka's topic name rules.
//! * [`ErrorCode`]: Kafka error codes, re-exported from `kafka-protocol`.
//!
//! ```
//! use sediment_protocol::batch::{BatchHeader, HEADER_LEN};
//! # let batch = sediment_protocol::batch::testing::batch_with_records(3, 1_700_000_000_000);
//! let header = BatchHeader::parse(&batch).unwrap();
//! assert_eq!(header.records_count, 3);
//! assert_eq!(header.total_len(), batch.len());
//! assert!(batch.len() > HEADER_LEN);
//! sediment_protocol::batch::verify_crc(&batch).unwrap();
//! ```

pub mod batch;
pub mod frame;
pub mod group_records;
pub mod names;
pub mod out_frame;
pub mod records;
pub mod versions;

pub use kafka_protocol;
/// Kafka error codes (`kafka_protocol::ResponseError`); `code()` gives the wire value.
pub use kafka_protocol::ResponseError as ErrorCode;
