//! Replication for Sediment, on openraft.
//!
//! * [`transport`]: one multiplexed TCP connection per peer, shared by every Raft group.
//! * [`auth`]: the handshake by which peers prove they hold the cluster secret.
//! * [`network`]: openraft's network traits over that transport, and the registry routing an
//!   incoming request to its group.
//! * [`log_store`]: a file-backed Raft log for small groups (the metadata group).
//! * [`cluster`]: the replicated cluster metadata (brokers, topics, assignments, configs) and
//!   its commands.
//! * [`controller`]: the metadata Raft group every broker runs.
//! * [`quiesce`]: broker liveness beats, and idle partition groups that stop their timers.
//!
//! See ARCHITECTURE.md ("Replication") for the design: one log per partition, Raft terms as
//! Kafka leader epochs, the high watermark as the commit index.

// openraft's StorageError is what its storage traits return; boxing it at our helpers would
// only move the allocation.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod cluster;
pub mod controller;
pub mod entry_index;
pub mod log_store;
pub mod network;
pub mod quiesce;
pub mod transport;

pub use cluster::{BrokerRecord, ClusterState, IsrRecord, MetaCommand, MetaError, MetaResponse, TopicRecord};
pub use controller::{Controller, METADATA_GROUP, MembershipChange, MembershipError, MetaTc, WriteError};
pub use quiesce::{QuiesceConfig, Quiescer, QuietHandle, QuietStats};
pub use transport::{ClusterKey, GroupId, Peers};
