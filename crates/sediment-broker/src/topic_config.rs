//! Topic configuration: Kafka's names, types, defaults and validation.
//!
//! A topic stores only its overrides; every other key resolves to the broker default. The
//! table below is the single list of topic configs Sediment knows: DescribeConfigs returns all of
//! them, CreateTopics/AlterConfigs validate against it, and [`TopicConfig::log_config`] turns the
//! effective values into the partition log's settings. A key that is not here is refused with
//! INVALID_CONFIG rather than silently stored.

use std::collections::BTreeMap;

use sediment_log::LogConfig;

/// Kafka's config types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// Where a config value came from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// One known topic config.
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    /// Broker-level config that sets the default for all topics, if any.
    pub broker_synonym: Option<&'static str>,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

fn long_min(v: &str, min: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("value {n} must be at least {min}")),
        Err(_) => Err(format!("value \"{v}\" is not a valid long")),
    }
}

fn int_min(v: &str, min: i64) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if n as i64 >= min => Ok(()),
        Ok(n) => Err(format!("value {n} must be at least {min}")),
        Err(_) => Err(format!("value \"{v}\" is not a valid int")),
    }
}

fn boolean(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err(format!("value \"{v}\" is not a boolean")),
    }
}

/// Every topic config Sediment implements.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        ty: ConfigType::List,
        default: "delete",
        broker_synonym: Some("log.cleanup.policy"),
        doc: "Retention policy for old segments. Only \"delete\" is supported; log compaction is not implemented yet.",
        validate: |v| match v.trim() {
            "delete" => Ok(()),
            other if other.split(',').any(|p| p.trim() == "compact") => Err("cleanup.policy=compact is not supported by this broker yet".into()),
            other => Err(format!("invalid cleanup.policy \"{other}\"")),
        },
    },
    ConfigDef {
        name: "compression.type",
        ty: ConfigType::String,
        default: "producer",
        broker_synonym: Some("compression.type"),
        doc: "Batches are stored as the producer compressed them. Only \"producer\" is supported: the broker never recompresses.",
        validate: |v| match v.trim() {
            "producer" => Ok(()),
            other => Err(format!("compression.type={other} is not supported; only \"producer\" (store as produced)")),
        },
    },
    ConfigDef {
        name: "max.message.bytes",
        ty: ConfigType::Int,
        default: "1048588",
        broker_synonym: Some("message.max.bytes"),
        doc: "Largest record batch (after compression) the topic accepts; larger batches get MESSAGE_TOO_LARGE.",
        validate: |v| int_min(v, 0),
    },
    ConfigDef {
        name: "message.timestamp.type",
        ty: ConfigType::String,
        default: "CreateTime",
        broker_synonym: Some("log.message.timestamp.type"),
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock on append.",
        validate: |v| match v.trim() {
            "CreateTime" | "LogAppendTime" => Ok(()),
            other => Err(format!("invalid message.timestamp.type \"{other}\"")),
        },
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        broker_synonym: Some("log.message.timestamp.before.max.ms"),
        doc: "A CreateTime batch whose timestamp is further than this in the past is rejected with INVALID_TIMESTAMP.",
        validate: |v| long_min(v, 0),
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        ty: ConfigType::Long,
        default: "3600000",
        broker_synonym: Some("log.message.timestamp.after.max.ms"),
        doc: "A CreateTime batch whose timestamp is further than this in the future is rejected with INVALID_TIMESTAMP.",
        validate: |v| long_min(v, 0),
    },
    ConfigDef {
        name: "min.insync.replicas",
        ty: ConfigType::Int,
        default: "1",
        broker_synonym: Some("min.insync.replicas"),
        doc: "acks=all produce fails with NOT_ENOUGH_REPLICAS when fewer replicas than this are in sync.",
        validate: |v| int_min(v, 1),
    },
    ConfigDef {
        name: "local.retention.bytes",
        ty: ConfigType::Long,
        default: "-2",
        broker_synonym: Some("log.local.retention.bytes"),
        doc: "With remote storage, the largest size of a partition's local segments before the oldest uploaded ones are deleted from disk; -2 uses retention.bytes, -1 for no limit.",
        validate: |v| long_min(v, -2),
    },
    ConfigDef {
        name: "local.retention.ms",
        ty: ConfigType::Long,
        default: "-2",
        broker_synonym: Some("log.local.retention.ms"),
        doc: "With remote storage, the age after which uploaded segments are deleted from local disk; -2 uses retention.ms, -1 keeps them.",
        validate: |v| long_min(v, -2),
    },
    ConfigDef {
        name: "retention.bytes",
        ty: ConfigType::Long,
        default: "-1",
        broker_synonym: Some("log.retention.bytes"),
        doc: "Largest size of a partition before its oldest segments are deleted; -1 for no limit.",
        validate: |v| long_min(v, -1),
    },
    ConfigDef {
        name: "retention.ms",
        ty: ConfigType::Long,
        default: "604800000",
        broker_synonym: Some("log.retention.ms"),
        doc: "Age after which a segment (by its newest record timestamp) is deleted; -1 keeps data forever.",
        validate: |v| long_min(v, -1),
    },
    ConfigDef {
        name: "remote.storage.enable",
        ty: ConfigType::Boolean,
        default: "true",
        broker_synonym: Some("remote.log.storage.system.enable"),
        doc: "Upload sealed segments to the object store, keep only local.retention.* on disk and read older data back from the bucket. Internal topics are never tiered.",
        validate: boolean,
    },
    ConfigDef {
        name: "segment.bytes",
        ty: ConfigType::Int,
        default: "1073741824",
        broker_synonym: Some("log.segment.bytes"),
        doc: "Size at which the active segment is sealed and a new one started.",
        validate: |v| int_min(v, 14),
    },
    ConfigDef {
        name: "segment.index.bytes",
        ty: ConfigType::Int,
        default: "10485760",
        broker_synonym: Some("log.index.size.max.bytes"),
        doc: "Largest offset index of a segment; a full index rolls the segment.",
        validate: |v| int_min(v, 8),
    },
    ConfigDef {
        name: "index.interval.bytes",
        ty: ConfigType::Int,
        default: "4096",
        broker_synonym: Some("log.index.interval.bytes"),
        doc: "Bytes of log between two entries of the sparse offset index.",
        validate: |v| int_min(v, 0),
    },
    ConfigDef {
        name: "segment.ms",
        ty: ConfigType::Long,
        default: "604800000",
        broker_synonym: Some("log.roll.ms"),
        doc: "Age after which the active segment is sealed even if not full.",
        validate: |v| long_min(v, 1),
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        ty: ConfigType::Boolean,
        default: "false",
        broker_synonym: Some("unclean.leader.election.enable"),
        doc: "Always false: a replica that may have lost acked data never becomes leader.",
        validate: |v| match v.trim() {
            "false" => Ok(()),
            "true" => Err("unclean.leader.election.enable=true is not supported: it can lose acked data".into()),
            _ => boolean(v),
        },
    },
];

/// Looks up a topic config definition.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validates one key/value; the error is the message sent back with INVALID_CONFIG.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    match def(name) {
        Some(d) => (d.validate)(value).map_err(|e| format!("invalid value for {name}: {e}")),
        None => Err(format!("unknown topic config {name}")),
    }
}

/// A topic's overrides on top of the broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

/// Broker-wide defaults (the `log.*` configs), resolved once at start.
#[derive(Debug, Clone, Default)]
pub struct BrokerDefaults {
    pub values: BTreeMap<&'static str, String>,
}

impl BrokerDefaults {
    /// Defaults with optional broker-level overrides keyed by topic config name.
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<BrokerDefaults, String> {
        let mut values = BTreeMap::new();
        for d in TOPIC_CONFIGS {
            let v = match overrides.get(d.name) {
                Some(v) => {
                    validate(d.name, v)?;
                    v.clone()
                }
                None => d.default.to_string(),
            };
            values.insert(d.name, v);
        }
        for k in overrides.keys() {
            if def(k).is_none() {
                return Err(format!("unknown topic config {k} in broker defaults"));
            }
        }
        Ok(BrokerDefaults { values })
    }

    fn is_overridden(&self, name: &str) -> bool {
        def(name).is_some_and(|d| self.values.get(name).is_some_and(|v| v != d.default))
    }
}

/// A `local.retention.*` value resolved against its `retention.*` counterpart: -2 takes the
/// total, -1 (unlimited) yields to a finite total, and local never exceeds total.
fn effective_local(local: i64, total: i64) -> i64 {
    match (local, total) {
        (-2, t) => t,
        (l, -1) => l,
        (-1, t) => t,
        (l, t) => l.min(t),
    }
}

/// One resolved config entry as DescribeConfigs reports it.
pub struct Resolved {
    pub def: &'static ConfigDef,
    pub value: String,
    pub source: ConfigSource,
}

impl TopicConfig {
    /// Effective value of `name` (override, else broker default, else built-in default).
    pub fn get(&self, name: &str, defaults: &BrokerDefaults) -> String {
        if let Some(v) = self.overrides.get(name) {
            return v.clone();
        }
        defaults.values.get(name).cloned().or_else(|| def(name).map(|d| d.default.to_string())).unwrap_or_default()
    }

    fn get_i64(&self, name: &str, defaults: &BrokerDefaults) -> i64 {
        // Values were validated on the way in; fall back to the built-in default otherwise.
        self.get(name, defaults).trim().parse().ok().or_else(|| def(name).and_then(|d| d.default.parse().ok())).unwrap_or(0)
    }

    pub fn max_message_bytes(&self, d: &BrokerDefaults) -> usize {
        self.get_i64("max.message.bytes", d).max(0) as usize
    }

    pub fn min_insync_replicas(&self, d: &BrokerDefaults) -> i64 {
        self.get_i64("min.insync.replicas", d)
    }

    pub fn log_append_time(&self, d: &BrokerDefaults) -> bool {
        self.get("message.timestamp.type", d) == "LogAppendTime"
    }

    pub fn timestamp_before_max_ms(&self, d: &BrokerDefaults) -> i64 {
        self.get_i64("message.timestamp.before.max.ms", d)
    }

    pub fn timestamp_after_max_ms(&self, d: &BrokerDefaults) -> i64 {
        self.get_i64("message.timestamp.after.max.ms", d)
    }

    /// `remote.storage.enable`.
    pub fn remote_storage_enable(&self, d: &BrokerDefaults) -> bool {
        self.get("remote.storage.enable", d).trim() == "true"
    }

    /// What stays on local disk when the topic is tiered: `local.retention.*` (-2 means the
    /// `retention.*` value), never more than the total retention (Kafka's rule).
    pub fn local_retention(&self, d: &BrokerDefaults) -> (i64, i64) {
        let ms = effective_local(self.get_i64("local.retention.ms", d), self.get_i64("retention.ms", d));
        let bytes = effective_local(self.get_i64("local.retention.bytes", d), self.get_i64("retention.bytes", d));
        (ms, bytes)
    }

    /// The partition log settings for a partition whose segments are (`tiered`) or are not
    /// uploaded: a tiered log's own retention is the local retention.
    pub fn log_config_for(&self, d: &BrokerDefaults, tiered: bool) -> LogConfig {
        let mut c = self.log_config(d);
        if tiered {
            (c.retention_ms, c.retention_bytes) = self.local_retention(d);
        }
        c
    }

    /// The partition log settings these configs imply.
    pub fn log_config(&self, d: &BrokerDefaults) -> LogConfig {
        LogConfig {
            segment_bytes: self.get_i64("segment.bytes", d).max(14) as u64,
            segment_ms: self.get_i64("segment.ms", d),
            retention_ms: self.get_i64("retention.ms", d),
            retention_bytes: self.get_i64("retention.bytes", d),
            index_interval_bytes: self.get_i64("index.interval.bytes", d).max(0) as u32,
            segment_index_bytes: self.get_i64("segment.index.bytes", d).max(8) as u32,
        }
    }

    /// Every known config, resolved, in table order.
    pub fn resolve_all(&self, defaults: &BrokerDefaults) -> Vec<Resolved> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| {
                let (value, source) = match self.overrides.get(d.name) {
                    Some(v) => (v.clone(), ConfigSource::DynamicTopic),
                    None if defaults.is_overridden(d.name) => (self.get(d.name, defaults), ConfigSource::StaticBroker),
                    None => (d.default.to_string(), ConfigSource::Default),
                };
                Resolved { def: d, value, source }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").unwrap_err().contains("retention.ms"));
        assert!(validate("segment.bytes", "abc").is_err());
        assert!(validate("no.such.config", "1").unwrap_err().contains("unknown"));
        assert!(validate("cleanup.policy", "compact").unwrap_err().contains("not supported"));
    }

    #[test]
    fn resolution_and_sources() {
        let mut broker = BTreeMap::new();
        broker.insert("retention.ms".to_string(), "1000".to_string());
        let d = BrokerDefaults::new(&broker).unwrap();
        let mut t = TopicConfig::default();
        t.overrides.insert("segment.bytes".into(), "2048".into());
        let all = t.resolve_all(&d);
        assert_eq!(all.len(), TOPIC_CONFIGS.len());
        let seg = all.iter().find(|r| r.def.name == "segment.bytes").unwrap();
        assert_eq!((seg.value.as_str(), seg.source), ("2048", ConfigSource::DynamicTopic));
        let ret = all.iter().find(|r| r.def.name == "retention.ms").unwrap();
        assert_eq!((ret.value.as_str(), ret.source), ("1000", ConfigSource::StaticBroker));
        let mmb = all.iter().find(|r| r.def.name == "max.message.bytes").unwrap();
        assert_eq!(mmb.source, ConfigSource::Default);
        let lc = t.log_config(&d);
        assert_eq!(lc.segment_bytes, 2048);
        assert_eq!(lc.retention_ms, 1000);
    }

    #[test]
    fn local_retention_resolves_against_total() {
        let d = BrokerDefaults::new(&BTreeMap::new()).unwrap();
        let mut t = TopicConfig::default();
        assert!(t.remote_storage_enable(&d));
        assert_eq!(t.local_retention(&d), (604_800_000, -1), "-2 takes retention.*");
        t.overrides.insert("local.retention.bytes".into(), "2097152".into());
        t.overrides.insert("retention.ms".into(), "-1".into());
        t.overrides.insert("local.retention.ms".into(), "3600000".into());
        assert_eq!(t.local_retention(&d), (3_600_000, 2_097_152));
        let lc = t.log_config_for(&d, true);
        assert_eq!((lc.retention_ms, lc.retention_bytes), (3_600_000, 2_097_152));
        let lc = t.log_config_for(&d, false);
        assert_eq!((lc.retention_ms, lc.retention_bytes), (-1, -1));
        t.overrides.insert("retention.bytes".into(), "1000".into());
        assert_eq!(t.local_retention(&d).1, 1000, "local never exceeds total");
        assert!(validate("local.retention.ms", "-3").is_err());
        assert!(validate("remote.storage.enable", "yes").is_err());
        t.overrides.insert("remote.storage.enable".into(), "false".into());
        assert!(!t.remote_storage_enable(&d));
    }

    #[test]
    fn every_default_is_valid() {
        for d in TOPIC_CONFIGS {
            assert!(validate(d.name, d.default).is_ok(), "{}", d.name);
        }
    }
}
