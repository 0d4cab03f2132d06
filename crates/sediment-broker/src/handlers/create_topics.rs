//! CreateTopics: name, partition count, replication factor and configs are validated before
//! anything is created; `validate_only` stops there.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::topic_config::TopicConfig;

pub async fn handle(broker: Arc<Broker>, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        res.num_partitions = -1;
        res.replication_factor = -1;
        let mut configs = BTreeMap::new();
        let mut bad: Option<ApiError> = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => bad = Some(ApiError::new(ErrorCode::InvalidConfig, format!("config {} has a null value", c.name.as_str()))),
            }
        }
        if !t.assignments.is_empty() {
            // Manual assignment: every replica list must be exactly this broker.
            let ok = t.assignments.iter().all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == broker.node_id());
            if !ok {
                bad = Some(ApiError::new(ErrorCode::InvalidReplicaAssignment, "replica assignment names brokers that do not exist"));
            } else if t.num_partitions != -1 || t.replication_factor != -1 {
                bad = Some(ApiError::new(ErrorCode::InvalidRequest, "both replica assignment and partition count/replication factor were given"));
            }
        }
        let partitions = if t.assignments.is_empty() { t.num_partitions } else { t.assignments.len() as i32 };
        if let Err(e) = crate::topic_rules::client_may(&name, crate::topic_rules::ClientChange::Create) {
            bad = Some(e);
        }
        let result = match bad {
            Some(e) => Err(e),
            None => broker.create_topic_any(&name, partitions, t.replication_factor, configs, req.validate_only).await,
        };
        match result {
            Ok(topic) => {
                if version >= 7 {
                    res.topic_id = topic.id;
                }
                if version >= 5 {
                    res.num_partitions = if req.validate_only {
                        if partitions == -1 { broker.config.num_partitions } else { partitions }
                    } else {
                        topic.partitions.len() as i32
                    };
                    res.replication_factor =
                        if req.validate_only { broker.default_replication_factor(t.replication_factor) } else { broker.replication_factor_of(&topic.name) };
                    res.configs = Some(describe(&broker, &topic.config));
                }
            }
            Err(e) => {
                res.error_code = e.code.code();
                if version >= 1 {
                    res.error_message = Some(sb(e.message));
                }
            }
        }
        r.topics.push(res);
    }
    r
}

fn describe(broker: &Broker, config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    config
        .resolve_all(&broker.defaults)
        .into_iter()
        .map(|c| {
            let mut e = CreatableTopicConfigs::default();
            e.name = sb(c.def.name);
            e.value = Some(sb(c.value));
            e.read_only = false;
            e.config_source = c.source as i8;
            e.is_sensitive = false;
            e
        })
        .collect()
}
