//! The Kafka-facing broker: listener, connections, one handler per API, topic metadata and the
//! partitions this node hosts.
//!
//! * [`server`] accepts connections and runs the per-connection request loop.
//! * [`handlers`] holds one module per Kafka API, dispatched from one `match`.
//! * [`broker`] is the shared state: config, durable metadata ([`metadata`]), topics.
//! * [`partition`] wraps a `sediment_log::PartitionLog` with its high watermark and group commit.
//! * [`group`] is the group coordinator: consumer groups and durable committed offsets.
//! * [`topic_config`] is the table of Kafka topic configs Sediment implements.
//! * [`tiering`] wires `sediment-tier` in: which partitions are tiered, their remote side,
//!   topic metadata objects, the metrics bridge.
//! * [`observe`] feeds `sediment-telemetry`: per-API metric handles, request span fields, the
//!   per-partition numbers a `/metrics` scrape reads.

pub mod broker;
pub mod cluster;
pub mod descriptors;
pub mod error;
pub mod group;
pub mod handlers;
pub mod isr;
pub mod metadata;
pub mod migrate;
pub mod observe;
pub mod partition;
pub mod producer_state;
pub mod replica;
pub mod server;
pub mod tiering;
pub mod topic_config;
pub mod topic_rules;

pub use broker::{Broker, BrokerConfig, StartError};
pub use partition::FsyncPolicy;
