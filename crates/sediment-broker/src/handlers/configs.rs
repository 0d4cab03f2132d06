//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, and DescribeConfigs for
//! the broker. Every config is returned with its value, source, type, synonyms and (on request)
//! documentation. Dynamic broker configs are not supported: altering a BROKER resource answers
//! INVALID_REQUEST with a message saying so.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::topic_config::{self, ConfigSource, ConfigType};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

struct Entry {
    name: String,
    value: String,
    source: ConfigSource,
    ty: ConfigType,
    read_only: bool,
    doc: &'static str,
    synonyms: Vec<(String, String, ConfigSource)>,
}

fn topic_entries(broker: &Broker, name: &str) -> Result<Vec<Entry>, ApiError> {
    let topic = broker.topic(name).ok_or_else(|| ApiError::unknown_topic(name))?;
    Ok(topic
        .config
        .resolve_all(&broker.defaults)
        .into_iter()
        .map(|r| {
            let mut synonyms = Vec::new();
            if let Some(v) = topic.config.overrides.get(r.def.name) {
                synonyms.push((r.def.name.to_string(), v.clone(), ConfigSource::DynamicTopic));
            }
            if let Some(bs) = r.def.broker_synonym {
                let bv = broker.defaults.values.get(r.def.name).cloned().unwrap_or_else(|| r.def.default.to_string());
                let src = if bv != r.def.default { ConfigSource::StaticBroker } else { ConfigSource::Default };
                synonyms.push((bs.to_string(), bv, src));
            }
            Entry { name: r.def.name.into(), value: r.value, source: r.source, ty: r.def.ty, read_only: false, doc: r.def.doc, synonyms }
        })
        .collect())
}

fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let c = &broker.config;
    let fixed = |name: &str, value: String, ty: ConfigType, doc: &'static str| Entry {
        name: name.into(),
        value,
        source: ConfigSource::StaticBroker,
        ty,
        read_only: true,
        doc,
        synonyms: Vec::new(),
    };
    let mut v = vec![
        fixed("node.id", c.node_id.to_string(), ConfigType::Int, "This broker's node id."),
        fixed("broker.id", c.node_id.to_string(), ConfigType::Int, "Same as node.id."),
        fixed("listeners", format!("PLAINTEXT://{}", c.listen), ConfigType::List, "The Kafka listener."),
        fixed(
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port),
            ConfigType::List,
            "The address clients are told to use.",
        ),
        fixed("log.dirs", c.data_dir.join("logs").display().to_string(), ConfigType::String, "Where partition logs live."),
        fixed("num.partitions", c.num_partitions.to_string(), ConfigType::Int, "Partitions of auto-created topics."),
        fixed("auto.create.topics.enable", c.auto_create_topics.to_string(), ConfigType::Boolean, "Create unknown topics on Metadata requests."),
        fixed("default.replication.factor", "1".into(), ConfigType::Int, "Replication factor of auto-created topics."),
        fixed("socket.request.max.bytes", c.max_request_bytes.to_string(), ConfigType::Int, "Largest request frame accepted."),
        fixed("max.connections", c.max_connections.to_string(), ConfigType::Int, "Most client connections at once."),
        fixed(
            "log.flush.policy",
            match c.fsync {
                crate::partition::FsyncPolicy::Always => "always".into(),
                crate::partition::FsyncPolicy::Never => "never".into(),
            },
            ConfigType::String,
            "always: fsync with group commit before data is visible and acks=all is answered; never: rely on the page cache.",
        ),
    ];
    for d in topic_config::TOPIC_CONFIGS {
        let Some(bs) = d.broker_synonym else { continue };
        if v.iter().any(|e| e.name == bs) {
            continue;
        }
        let val = broker.defaults.values.get(d.name).cloned().unwrap_or_else(|| d.default.to_string());
        let source = if val != d.default { ConfigSource::StaticBroker } else { ConfigSource::Default };
        v.push(Entry { name: bs.into(), value: val, source, ty: d.ty, read_only: true, doc: d.doc, synonyms: Vec::new() });
    }
    v
}

pub fn describe(broker: &Arc<Broker>, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let entries = match res.resource_type {
            RESOURCE_TOPIC => topic_entries(broker, name),
            RESOURCE_BROKER if name.is_empty() || name == broker.node_id().to_string() => Ok(broker_entries(broker)),
            RESOURCE_BROKER => Err(ApiError::new(ErrorCode::InvalidRequest, format!("broker {name} is not this broker ({})", broker.node_id()))),
            other => Err(ApiError::new(ErrorCode::InvalidRequest, format!("resource type {other} is not supported"))),
        };
        match entries {
            Err(e) => {
                out.error_code = e.code.code();
                out.error_message = Some(sb(e.message));
            }
            Ok(entries) => {
                let keys: Option<Vec<String>> = res.configuration_keys.map(|k| k.iter().map(|s| s.to_string()).collect());
                for e in entries {
                    if keys.as_ref().is_some_and(|k| !k.contains(&e.name)) {
                        continue;
                    }
                    let mut c = DescribeConfigsResourceResult::default();
                    c.name = sb(e.name);
                    c.value = Some(sb(e.value));
                    c.read_only = e.read_only;
                    c.config_source = e.source as i8;
                    c.is_sensitive = false;
                    if req.include_synonyms {
                        c.synonyms = e
                            .synonyms
                            .into_iter()
                            .map(|(n, v, s)| {
                                let mut syn = DescribeConfigsSynonym::default();
                                syn.name = sb(n);
                                syn.value = Some(sb(v));
                                syn.source = s as i8;
                                syn
                            })
                            .collect();
                    }
                    if version >= 3 {
                        c.config_type = e.ty as i8;
                        if req.include_documentation {
                            c.documentation = Some(sb(e.doc));
                        }
                    }
                    out.configs.push(c);
                }
            }
        }
        r.results.push(out);
    }
    r
}

fn check_topic_resource(broker: &Broker, resource_type: i8, name: &str) -> Result<(), ApiError> {
    match resource_type {
        RESOURCE_TOPIC => {
            if broker.topic(name).is_none() {
                return Err(ApiError::unknown_topic(name));
            }
            Ok(())
        }
        RESOURCE_BROKER => Err(ApiError::new(ErrorCode::InvalidRequest, "dynamic broker configs are not supported; set them in the broker's config file")),
        other => Err(ApiError::new(ErrorCode::InvalidRequest, format!("resource type {other} is not supported"))),
    }
}

/// Config keys whose override differs between `a` and `b` (set, changed or removed).
fn changed_keys<'a>(a: &'a BTreeMap<String, String>, b: &'a BTreeMap<String, String>) -> Vec<&'a str> {
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).map(String::as_str).collect();
    keys.dedup();
    keys
}

pub async fn alter(broker: Arc<Broker>, req: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let mut r = AlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let result = match check_topic_resource(&broker, res.resource_type, &name) {
            Ok(()) => {
                // AlterConfigs replaces the whole set of overrides.
                let mut overrides = BTreeMap::new();
                for c in &res.configs {
                    if let Some(v) = &c.value {
                        overrides.insert(c.name.to_string(), v.to_string());
                    }
                }
                let current = broker.topic(&name).map(|t| t.config.overrides.clone()).unwrap_or_default();
                match crate::topic_rules::client_may_set_configs(&name, changed_keys(&current, &overrides)) {
                    Ok(()) => broker.set_topic_config_any(&name, overrides, req.validate_only).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        if let Err(e) = result {
            out.error_code = e.code.code();
            out.error_message = Some(sb(e.message));
        }
        r.responses.push(out);
    }
    r
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Applies incremental operations to a topic's overrides (pure; validated by the caller).
pub fn apply_ops(
    current: &BTreeMap<String, String>,
    effective: impl Fn(&str) -> String,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut next = current.clone();
    let mut seen = std::collections::HashSet::new();
    for (name, op, value) in ops {
        if !seen.insert(name.clone()) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("config {name} appears more than once")));
        }
        let def = topic_config::def(name).ok_or_else(|| ApiError::new(ErrorCode::InvalidConfig, format!("unknown topic config {name}")))?;
        match *op {
            OP_SET => {
                let v = value.clone().ok_or_else(|| ApiError::new(ErrorCode::InvalidConfig, format!("config {name} set to null")))?;
                next.insert(name.clone(), v);
            }
            OP_DELETE => {
                next.remove(name);
            }
            OP_APPEND | OP_SUBTRACT => {
                if def.ty != ConfigType::List {
                    return Err(ApiError::new(ErrorCode::InvalidConfig, format!("config {name} is not a list; APPEND/SUBTRACT need a list")));
                }
                let base = next.get(name).cloned().unwrap_or_else(|| effective(name));
                let mut items: Vec<String> = base.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                let given: Vec<String> = value.as_deref().unwrap_or("").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if *op == OP_APPEND {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                next.insert(name.clone(), items.join(","));
            }
            other => return Err(ApiError::new(ErrorCode::InvalidRequest, format!("unknown config operation {other}"))),
        }
    }
    Ok(next)
}

pub async fn incremental_alter(broker: Arc<Broker>, req: IncrementalAlterConfigsRequest, _version: i16) -> IncrementalAlterConfigsResponse {
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let planned = check_topic_resource(&broker, res.resource_type, &name).and_then(|()| {
            let topic = broker.topic(&name).ok_or_else(|| ApiError::unknown_topic(&name))?;
            let ops: Vec<(String, i8, Option<String>)> =
                res.configs.iter().map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string()))).collect();
            let next = apply_ops(&topic.config.overrides, |k| topic.config.get(k, &broker.defaults), &ops)?;
            crate::topic_rules::client_may_set_configs(&name, changed_keys(&topic.config.overrides, &next))?;
            Ok(next)
        });
        let result = match planned {
            Ok(next) => broker.set_topic_config_any(&name, next, req.validate_only).await,
            Err(e) => Err(e),
        };
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        if let Err(e) = result {
            out.error_code = e.code.code();
            out.error_message = Some(sb(e.message));
        }
        r.responses.push(out);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_ops() {
        let cur: BTreeMap<String, String> = [("retention.ms".to_string(), "5".to_string())].into();
        let eff = |_: &str| "delete".to_string();
        let next = apply_ops(&cur, eff, &[("retention.ms".into(), OP_DELETE, None), ("segment.bytes".into(), OP_SET, Some("1024".into()))]).unwrap();
        assert_eq!(next.get("segment.bytes").map(String::as_str), Some("1024"));
        assert!(!next.contains_key("retention.ms"));
        let e = apply_ops(&cur, eff, &[("retention.ms".into(), OP_APPEND, Some("1".into()))]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let e = apply_ops(&cur, eff, &[("a.b".into(), OP_SET, Some("1".into()))]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let e = apply_ops(&cur, eff, &[("retention.ms".into(), OP_SET, Some("1".into())), ("retention.ms".into(), OP_SET, Some("2".into()))]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
}
