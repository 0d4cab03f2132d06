//! The Kafka-facing broker: listener, connections, one handler per API, topic metadata and the
//! partitions this node hosts.
//!
//! * [`server`] accepts connections and runs the per-connection request loop.
//! * [`handlers`] holds one module per Kafka API, dispatched from one `match`.
//! * [`broker`] is the shared state: config, durable metadata ([`metadata`]), topics.
//! * [`partition`] wraps a `sediment_log::PartitionLog` with its high watermark and group commit.
//! * [`topic_config`] is the table of Kafka topic configs Sediment implements.

pub mod broker;
pub mod error;
pub mod handlers;
pub mod metadata;
pub mod partition;
pub mod producer_state;
pub mod server;
pub mod topic_config;

pub use broker::{Broker, BrokerConfig, StartError};
pub use partition::FsyncPolicy;
