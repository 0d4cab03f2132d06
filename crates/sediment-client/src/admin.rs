//! Topic administration: create, delete, list, describe (partitions with
//! leaders and offsets), describe configs and alter configs.
//!
//! CreateTopics and DeleteTopics go to the controller Metadata names (the
//! bootstrap broker if none), retried once after NOT_CONTROLLER; config
//! requests go to the bootstrap broker. Alter uses IncrementalAlterConfigs,
//! so configs not named are left alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_raft_voter_request::Listener;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AddRaftVoterRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    RemoveRaftVoterRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::conn::{Client, Connection};
use crate::consumer::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, list_offsets};
use crate::error::{Error, Result};

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1 = broker default).
    pub partitions: i32,
    /// Replication factor (-1 = broker default).
    pub replication_factor: i16,
    /// Topic configs, e.g. `retention.ms`.
    pub configs: Vec<(String, String)>,
}

/// What the broker created (or would create, with validate-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Name.
    pub name: String,
    /// Topic id (nil if the broker did not report one).
    pub id: Uuid,
    /// Partitions (-1 if the broker did not say).
    pub partitions: i32,
    /// Replication factor (-1 if the broker did not say).
    pub replication_factor: i16,
}

/// A topic in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: usize,
    /// Whether the topic is internal.
    pub internal: bool,
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition index.
    pub partition: i32,
    /// Leader node id (-1 if none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replicas.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Log start offset, if the leader answered.
    pub log_start_offset: Option<i64>,
    /// High watermark, if the leader answered.
    pub high_watermark: Option<i64>,
}

/// A described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Whether the topic is internal.
    pub internal: bool,
    /// Partitions in index order.
    pub partitions: Vec<PartitionDescription>,
}

/// Where a config value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    DynamicTopic,
    /// Dynamic per-broker config.
    DynamicBroker,
    /// Dynamic cluster-wide default.
    DynamicDefaultBroker,
    /// The broker's static configuration.
    StaticBroker,
    /// Built-in default.
    Default,
    /// Dynamic broker logger config.
    DynamicBrokerLogger,
    /// Client metrics config.
    ClientMetrics,
    /// Group config.
    Group,
    /// Unknown (0 or a value this client does not know).
    Unknown(i8),
}

impl ConfigSource {
    /// From the wire value.
    pub fn from_wire(v: i8) -> Self {
        match v {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            7 => ConfigSource::ClientMetrics,
            8 => ConfigSource::Group,
            other => ConfigSource::Unknown(other),
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The names Kafka's admin client uses.
        f.write_str(match self {
            ConfigSource::DynamicTopic => "DYNAMIC_TOPIC_CONFIG",
            ConfigSource::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
            ConfigSource::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            ConfigSource::StaticBroker => "STATIC_BROKER_CONFIG",
            ConfigSource::Default => "DEFAULT_CONFIG",
            ConfigSource::DynamicBrokerLogger => "DYNAMIC_BROKER_LOGGER_CONFIG",
            ConfigSource::ClientMetrics => "DYNAMIC_CLIENT_METRICS_CONFIG",
            ConfigSource::Group => "DYNAMIC_GROUP_CONFIG",
            ConfigSource::Unknown(_) => "UNKNOWN",
        })
    }
}

/// One config of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Name, e.g. `retention.ms`.
    pub name: String,
    /// Value (`None` if null or sensitive).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether the value is the default.
    pub is_default: bool,
    /// Whether it can be altered.
    pub read_only: bool,
    /// Whether the value is hidden.
    pub sensitive: bool,
}

/// A change to a topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// Set `name` to `value`.
    Set(String, String),
    /// Remove the topic-level value of `name` (back to the default).
    Delete(String),
}

/// Topic administration over a [`Client`].
#[derive(Debug, Clone)]
pub struct Admin {
    client: Arc<Client>,
}

fn name_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl Admin {
    /// Administration through `client`.
    pub fn new(client: Arc<Client>) -> Self {
        Admin { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Runs `f` against the controller, once more after NOT_CONTROLLER or a
    /// connection failure (with fresh metadata).
    async fn with_controller<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let conn = self.client.controller_connection().await?;
        match f(conn).await {
            Err(e) if e.needs_metadata_refresh() && !matches!(e, Error::UnknownTopic(_)) => {
                tracing::debug!(error = %e, "retrying admin request after metadata refresh");
                self.client.metadata(Some(&[])).await?;
                f(self.client.controller_connection().await?).await
            }
            other => other,
        }
    }

    /// Adds broker `id` to the cluster (`sediment cluster add-broker`). The broker must be
    /// running, started with `--peers` naming the cluster's brokers; `raft_host:raft_port` is
    /// its `--raft-listen` address as the other brokers reach it. Returns once it caught up
    /// with the metadata and votes.
    pub async fn add_broker(&self, id: i32, raft_host: &str, raft_port: u16, timeout: Duration) -> Result<()> {
        let req = AddRaftVoterRequest::default()
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_voter_id(id)
            .with_listeners(vec![Listener::default().with_name(name_bytes("RAFT")).with_host(name_bytes(raft_host)).with_port(raft_port)]);
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send_at(&req, 0, timeout + Duration::from_secs(10)).await?;
        if resp.error_code != 0 {
            return Err(Error::broker(format!("cannot add broker {id}"), resp.error_code, resp.error_message.as_deref()));
        }
        Ok(())
    }

    /// Removes broker `id` from the cluster (`sediment cluster remove-broker`): refused while
    /// a partition has a replica on it.
    pub async fn remove_broker(&self, id: i32) -> Result<()> {
        let req = RemoveRaftVoterRequest::default().with_voter_id(id);
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send_at(&req, 0, Duration::from_secs(70)).await?;
        if resp.error_code != 0 {
            return Err(Error::broker(format!("cannot remove broker {id}"), resp.error_code, resp.error_message.as_deref()));
        }
        Ok(())
    }

    /// Moves partitions of `topic` to the given replicas (AlterPartitionReassignments); returns
    /// once the controller recorded the moves (they run in the background: see
    /// [`Admin::reassignments_in_progress`]).
    pub async fn reassign(&self, topic: &str, targets: &[(i32, Vec<i32>)]) -> Result<()> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
        use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
        let req = AlterPartitionReassignmentsRequest::default().with_timeout_ms(60_000).with_topics(vec![
            ReassignableTopic::default().with_name(TopicName(name_bytes(topic))).with_partitions(
                targets
                    .iter()
                    .map(|(p, r)| ReassignablePartition::default().with_partition_index(*p).with_replicas(Some(r.iter().map(|b| BrokerId(*b)).collect())))
                    .collect(),
            ),
        ]);
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send_at(&req, 0, Duration::from_secs(70)).await?;
        if resp.error_code != 0 {
            return Err(Error::broker(format!("cannot reassign partitions of \"{topic}\""), resp.error_code, resp.error_message.as_deref()));
        }
        for p in resp.responses.iter().flat_map(|t| &t.partitions) {
            if p.error_code != 0 {
                return Err(Error::broker(format!("cannot reassign {topic}-{}", p.partition_index), p.error_code, p.error_message.as_deref()));
            }
        }
        Ok(())
    }

    /// Partitions being moved: `(topic, partition, adding, removing)` (ListPartitionReassignments).
    pub async fn reassignments_in_progress(&self) -> Result<Vec<(String, i32, Vec<i32>, Vec<i32>)>> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send_at(&ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000), 0, Duration::from_secs(30)).await?;
        if resp.error_code != 0 {
            return Err(Error::broker("cannot list reassignments", resp.error_code, resp.error_message.as_deref()));
        }
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let ids = |v: &Vec<kafka_protocol::messages::BrokerId>| v.iter().map(|b| b.0).collect::<Vec<i32>>();
                    (t.name.to_string(), p.partition_index, ids(&p.adding_replicas), ids(&p.removing_replicas))
                })
            })
            .collect())
    }

    /// Every partition's replicas, `(topic, partition, replicas)`, and the brokers' ids.
    pub async fn replica_placement(&self) -> Result<(Vec<(String, i32, Vec<i32>)>, Vec<i32>)> {
        let resp = self.client.metadata(None).await?;
        let mut out = Vec::new();
        for t in resp.topics.iter().filter(|t| t.error_code == 0) {
            let Some(name) = t.name.as_ref() else { continue };
            for p in &t.partitions {
                out.push((name.to_string(), p.partition_index, p.replica_nodes.iter().map(|b| b.0).collect()));
            }
        }
        let brokers = resp.brokers.iter().map(|b| b.node_id.0).collect();
        Ok((out, brokers))
    }

    /// The cluster's id, controller and brokers `(id, host:port)` (DescribeCluster).
    pub async fn describe_cluster(&self) -> Result<(String, i32, Vec<(i32, String)>)> {
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send(&DescribeClusterRequest::default().with_endpoint_type(1)).await?;
        if resp.error_code != 0 {
            return Err(Error::broker("cannot describe the cluster", resp.error_code, resp.error_message.as_deref()));
        }
        let brokers = resp.brokers.iter().map(|b| (b.broker_id.0, format!("{}:{}", b.host, b.port))).collect();
        Ok((resp.cluster_id.to_string(), resp.controller_id.0, brokers))
    }

    /// Creates a topic (or only validates the request).
    pub async fn create_topic(&self, topic: &NewTopic, validate_only: bool) -> Result<CreatedTopic> {
        if topic.name.is_empty() {
            return Err(Error::Invalid("topic name must not be empty".into()));
        }
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(name_bytes(&topic.name)))
                    .with_num_partitions(topic.partitions)
                    .with_replication_factor(topic.replication_factor)
                    .with_configs(
                        topic.configs.iter().map(|(k, v)| CreatableTopicConfig::default().with_name(name_bytes(k)).with_value(Some(name_bytes(v)))).collect(),
                    ),
            ])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only);
        let name = topic.name.as_str();
        let result = self
            .with_controller(|conn| {
                let req = &req;
                async move {
                    let resp = conn.send(req).await?;
                    let r = resp
                        .topics
                        .into_iter()
                        .find(|t| &**t.name == name)
                        .ok_or_else(|| Error::protocol(conn.addr(), format!("CreateTopics response lacks topic \"{name}\"")))?;
                    if r.error_code == ResponseError::TopicAlreadyExists.code() {
                        return Err(Error::Invalid(format!("topic \"{name}\" already exists")));
                    }
                    if r.error_code != 0 {
                        return Err(Error::broker(format!("cannot create topic \"{name}\""), r.error_code, r.error_message.as_deref()));
                    }
                    Ok(CreatedTopic { name: name.to_owned(), id: r.topic_id, partitions: r.num_partitions, replication_factor: r.replication_factor })
                }
            })
            .await?;
        Ok(result)
    }

    /// Waits until Metadata shows `topic` with a leader for every partition.
    pub async fn wait_for_leaders(&self, topic: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.client.refresh_topic(topic).await {
                Ok(info) if !info.partitions.is_empty() && info.partitions.iter().all(|p| p.leader >= 0) => {
                    return Ok(());
                }
                Ok(_) => Error::broker(format!("topic \"{topic}\" has partitions without a leader"), ResponseError::LeaderNotAvailable.code(), None),
                Err(e) if matches!(e, Error::UnknownTopic(_)) || e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = DeleteTopicsRequest::default()
            .with_topics(vec![DeleteTopicState::default().with_name(Some(TopicName(name_bytes(name))))])
            .with_topic_names(vec![TopicName(name_bytes(name))])
            .with_timeout_ms(30_000);
        self.with_controller(|conn| {
            let req = &req;
            async move {
                let resp = conn.send(req).await?;
                let r = resp
                    .responses
                    .into_iter()
                    .find(|t| t.name.as_deref().map(|n| &**n) == Some(name))
                    .ok_or_else(|| Error::protocol(conn.addr(), format!("DeleteTopics response lacks topic \"{name}\"")))?;
                if r.error_code == ResponseError::UnknownTopicOrPartition.code() {
                    return Err(Error::UnknownTopic(name.to_owned()));
                }
                if r.error_code != 0 {
                    return Err(Error::broker(format!("cannot delete topic \"{name}\""), r.error_code, r.error_message.as_deref()));
                }
                Ok(())
            }
        })
        .await
    }

    /// All topics, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>> {
        let resp = self.client.metadata(None).await?;
        let mut out: Vec<TopicListing> = resp
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some(TopicListing { name: t.name.as_ref()?.to_string(), id: t.topic_id, partitions: t.partitions.len(), internal: t.is_internal }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Partitions of a topic with leaders, replicas and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let info = self.client.refresh_topic(name).await?;
        let parts: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
        // Offsets are best effort: a leaderless partition still gets described.
        let start = list_offsets(&self.client, name, &parts, EARLIEST_TIMESTAMP).await.unwrap_or_default();
        let end = list_offsets(&self.client, name, &parts, LATEST_TIMESTAMP).await.unwrap_or_default();
        Ok(TopicDescription {
            name: info.name.clone(),
            id: info.id,
            internal: info.internal,
            partitions: info
                .partitions
                .iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    log_start_offset: start.get(&p.partition).copied(),
                    high_watermark: end.get(&p.partition).copied(),
                })
                .collect(),
        })
    }

    /// Every config of a topic with its value, source and default flag.
    pub async fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        let req = DescribeConfigsRequest::default()
            .with_resources(vec![
                DescribeConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(name_bytes(name)).with_configuration_keys(None),
            ])
            .with_include_synonyms(false)
            .with_include_documentation(false);
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send(&req).await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| &*r.resource_name == name)
            .ok_or_else(|| Error::protocol(conn.addr(), format!("DescribeConfigs response lacks topic \"{name}\"")))?;
        if r.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        if r.error_code != 0 {
            return Err(Error::broker(format!("cannot describe configs of topic \"{name}\""), r.error_code, r.error_message.as_deref()));
        }
        let mut out: Vec<ConfigEntry> = r
            .configs
            .into_iter()
            .map(|c| {
                let source = ConfigSource::from_wire(c.config_source);
                ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source,
                    is_default: source == ConfigSource::Default,
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets and deletes topic configs (IncrementalAlterConfigs).
    pub async fn alter_configs(&self, name: &str, ops: &[AlterOp], validate_only: bool) -> Result<()> {
        if ops.is_empty() {
            return Err(Error::Invalid("nothing to alter: give --set or --delete".into()));
        }
        let configs = ops
            .iter()
            .map(|op| match op {
                AlterOp::Set(k, v) => AlterableConfig::default().with_name(name_bytes(k)).with_config_operation(OP_SET).with_value(Some(name_bytes(v))),
                AlterOp::Delete(k) => AlterableConfig::default().with_name(name_bytes(k)).with_config_operation(OP_DELETE).with_value(None),
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(name_bytes(name)).with_configs(configs)])
            .with_validate_only(validate_only);
        let conn = self.client.bootstrap_connection().await?;
        let resp = conn.send(&req).await?;
        let r = resp
            .responses
            .into_iter()
            .find(|r| &*r.resource_name == name)
            .ok_or_else(|| Error::protocol(conn.addr(), format!("IncrementalAlterConfigs response lacks topic \"{name}\"")))?;
        if r.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        if r.error_code != 0 {
            return Err(Error::broker(format!("cannot alter configs of topic \"{name}\""), r.error_code, r.error_message.as_deref()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sources_use_kafka_names() {
        assert_eq!(ConfigSource::from_wire(1).to_string(), "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(ConfigSource::from_wire(5), ConfigSource::Default);
        assert_eq!(ConfigSource::from_wire(5).to_string(), "DEFAULT_CONFIG");
        assert_eq!(ConfigSource::from_wire(4).to_string(), "STATIC_BROKER_CONFIG");
        assert_eq!(ConfigSource::from_wire(42), ConfigSource::Unknown(42));
    }
}
