//! Sediment's own Kafka client, built on the `kafka-protocol` crate.
//!
//! It is small on purpose: enough to administer topics, produce and consume
//! records and drive the load generator, and nothing a general-purpose client
//! (consumer groups, transactions, idempotence) would add.
//!
//! ```text
//!   cli ──► admin ─────────┐
//!    │                     │
//!    ├──► producer ──┐     ├──► conn::Client ──► conn::Connection (one per broker,
//!    ├──► consumer ──┼─────┘        │              pipelined, ApiVersions-negotiated)
//!    └──► bench ─────┘         metadata cache
//! ```
//!
//! - [`conn`]: pipelined connections and the [`Client`] that finds partition leaders.
//! - [`admin`]: topic create/delete/list/describe and topic configs.
//! - [`producer`]: batching producer with per-batch delivery reports.
//! - [`consumer`]: fetch loop over one or all partitions of a topic.
//! - [`group`]: consumer group listing and description (members, assignments, lag).
//! - [`partitioner`]: Java-compatible murmur2 key partitioning.
//! - [`bench`]: the load generator behind `sediment bench`.
//! - [`cli`]: the `topic`, `produce`, `consume`, `bench` and `group` subcommands.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
mod idempotence;
pub mod partitioner;
pub mod producer;

pub use conn::{Client, ConnConfig, Connection, PartitionInfo, TopicInfo};
pub use error::{Error, Result};
