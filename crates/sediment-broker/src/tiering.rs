//! Tiered storage, wired into the broker.
//!
//! The broker owns one optional [`sediment_tier::Tier`] (the bucket, the read-through cache). A
//! partition is *tiered* when the broker has a tier, its topic has `remote.storage.enable=true`
//! and the topic is not internal (`__consumer_offsets` compacts itself by snapshots and is read
//! back at start-up from local disk). A tiered partition gets a [`RemoteLog`] (uploader, remote
//! reads, remote retention); its local log keeps `local.retention.*` and deletes only segments
//! already committed to the bucket. Topic metadata objects (name, id, partitions, configs) are
//! written next to the segments whenever they change, so the bucket alone describes the topic.

use std::sync::Arc;
use std::time::Duration;

use sediment_tier::{MetricsSink, OpKind, RemoteLog, RemotePolicy, RetentionPolicy, Tier, TopicMeta};
use uuid::Uuid;

use crate::partition::Partition;
use crate::topic_config::{BrokerDefaults, TopicConfig};
use sediment_log::clock::now_ms;

/// Internal topics are never tiered.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

/// Does this topic upload its segments?
pub fn is_tiered(tier: Option<&Arc<Tier>>, topic: &str, config: &TopicConfig, d: &BrokerDefaults) -> bool {
    tier.is_some() && !is_internal(topic) && config.remote_storage_enable(d)
}

/// The remote side's settings for a topic.
pub fn policy(topic: &str, config: &TopicConfig, d: &BrokerDefaults) -> RemotePolicy {
    let lc = config.log_config(d);
    RemotePolicy {
        upload: !is_internal(topic) && config.remote_storage_enable(d),
        retention: RetentionPolicy { retention_ms: lc.retention_ms, retention_bytes: lc.retention_bytes },
    }
}

/// Gives a partition of a tiered-capable topic its remote side. `fresh`: the partition was just
/// created, so there is nothing of it in the bucket to recover.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    tier: &Arc<Tier>,
    topic: &str,
    id: &Uuid,
    p: &Arc<Partition>,
    dir: std::path::PathBuf,
    fresh: bool,
    config: &TopicConfig,
    d: &BrokerDefaults,
) -> Result<(), sediment_tier::TierError> {
    if is_internal(topic) {
        return Ok(());
    }
    let pref = sediment_tier::PartitionRef { topic: topic.to_string(), topic_id: id.to_string(), partition: p.index };
    let remote: Arc<RemoteLog> = tier.open_partition(pref, dir, fresh)?;
    remote.set_policy(policy(topic, config, d));
    p.set_tiered(config.remote_storage_enable(d));
    p.attach_remote(remote);
    Ok(())
}

/// Applies a topic's changed configs to the partitions this broker hosts: local log settings,
/// whether they tier, and their remote side's policy.
pub fn reconfigure<'a>(
    tier: Option<&Arc<Tier>>,
    name: &str,
    config: &TopicConfig,
    d: &BrokerDefaults,
    partitions: impl IntoIterator<Item = &'a Arc<Partition>>,
) {
    let tiered = is_tiered(tier, name, config, d);
    let log_config = config.log_config_for(d, tiered);
    let policy = policy(name, config, d);
    for p in partitions {
        p.set_config(log_config);
        p.set_tiered(tiered);
        if let Some(r) = p.remote() {
            r.set_policy(policy);
        }
    }
}

/// Writes the topic's metadata object in the background (best effort, logged).
pub fn publish_topic(tier: Option<&Arc<Tier>>, name: &str, id: &Uuid, partitions: i32, config: &TopicConfig, created_ms: i64) {
    let Some(tier) = tier else { return };
    if is_internal(name) {
        return;
    }
    let tier = tier.clone();
    let meta = TopicMeta { name: name.to_string(), id: id.to_string(), partitions, configs: config.overrides.clone(), created_ms, written_ms: now_ms() };
    tokio::spawn(async move {
        // a brief outage should not lose the metadata: retry a few times
        for attempt in 0..5u32 {
            match tier.put_topic_meta(&meta).await {
                Ok(()) => return,
                Err(e) if attempt == 4 => tracing::warn!(topic = %meta.name, error = %e, "cannot write topic metadata to the bucket"),
                Err(_) => tokio::time::sleep(Duration::from_secs(1 << attempt)).await,
            }
        }
    });
}

/// Deletes a deleted topic's objects in the background.
pub fn forget_topic(tier: Option<&Arc<Tier>>, name: &str, id: &Uuid) {
    let Some(tier) = tier else { return };
    if is_internal(name) {
        return;
    }
    let (tier, name, id) = (tier.clone(), name.to_string(), id.to_string());
    tokio::spawn(async move {
        match tier.delete_topic(&name, &id).await {
            Ok(n) => tracing::info!(topic = %name, objects = n, "deleted the topic's objects from the bucket"),
            Err(e) => tracing::warn!(topic = %name, error = %e, "cannot delete the topic's objects from the bucket"),
        }
    });
}

/// Forwards the tier's counters to the process's telemetry instruments.
pub struct TelemetrySink;

impl MetricsSink for TelemetrySink {
    fn request(&self, op: OpKind, _bytes: u64, _elapsed: Duration, ok: bool) {
        use sediment_telemetry::ObjectStoreOp as O;
        let op = match op {
            OpKind::Get => O::Get,
            OpKind::GetRange => O::GetRange,
            OpKind::Put | OpKind::Copy => O::Put,
            OpKind::PutPart => O::PutPart,
            OpKind::Delete => O::Delete,
            OpKind::List => O::List,
            OpKind::Head => O::Head,
        };
        let tier = &sediment_telemetry::metrics().tier;
        tier.object_store_request(op);
        if !ok {
            tier.object_store_error(op);
        }
    }

    fn cache_hit(&self) {
        sediment_telemetry::metrics().tier.cache_hit();
    }

    fn cold_read_throttled(&self, waited: Duration) {
        sediment_telemetry::metrics().tier.cold_read_throttled(waited.as_secs_f64());
    }

    fn cache_miss(&self) {
        sediment_telemetry::metrics().tier.cache_miss();
    }

    fn uploaded(&self, bytes: u64) {
        sediment_telemetry::metrics().tier.uploaded(bytes);
    }

    fn upload_lag(&self, bytes: u64, _segments: u64) {
        sediment_telemetry::metrics().tier.set_upload_lag_bytes(bytes);
    }

    fn remote_bytes(&self, bytes: u64) {
        sediment_telemetry::metrics().tier.set_remote_bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use kafka_protocol::messages::*;
    use sediment_protocol::batch::testing::batch_from_values;

    use super::*;
    use crate::broker::{Broker, BrokerConfig};
    use crate::handlers::{Reply, RequestContext, dispatch, sb};

    async fn call(broker: &Arc<Broker>, key: ApiKey, v: i16, req: RequestKind) -> ResponseKind {
        let ctx = RequestContext { api_key: key, api_version: v, correlation_id: 1, client_id: None, peer: "127.0.0.1:1".parse().unwrap() };
        match dispatch(broker, &ctx, req).await {
            Reply::Ready(r) => r,
            Reply::Later(f) => f.await,
            Reply::None => panic!("no reply"),
        }
    }

    async fn fetch(broker: &Arc<Broker>, offset: i64) -> (i16, i64, bytes::Bytes) {
        let mut r = FetchRequest::default();
        r.max_bytes = 1 << 20;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(sb("t"));
        let mut fp = fetch_request::FetchPartition::default();
        fp.fetch_offset = offset;
        fp.partition_max_bytes = 64 << 10;
        ft.partitions.push(fp);
        r.topics.push(ft);
        let ResponseKind::Fetch(resp) = call(broker, ApiKey::Fetch, 12, RequestKind::Fetch(r)).await else { panic!("not a fetch") };
        let p = &resp.responses[0].partitions[0];
        (p.error_code, p.log_start_offset, p.records.clone().unwrap_or_default())
    }

    async fn list_offset(broker: &Arc<Broker>, ts: i64) -> i64 {
        let mut r = ListOffsetsRequest::default();
        let mut lt = list_offsets_request::ListOffsetsTopic::default();
        lt.name = TopicName(sb("t"));
        let mut lp = list_offsets_request::ListOffsetsPartition::default();
        lp.timestamp = ts;
        lt.partitions.push(lp);
        r.topics.push(lt);
        let ResponseKind::ListOffsets(resp) = call(broker, ApiKey::ListOffsets, 9, RequestKind::ListOffsets(r)).await else { panic!() };
        resp.topics[0].partitions[0].offset
    }

    /// Produce into a tiered topic, let the uploader and local retention work, then Fetch and
    /// ListOffsets answer from the bucket below the local log start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetch_and_list_offsets_read_through_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let tier_cfg =
            sediment_tier::TierConfig { upload_poll_interval: Duration::from_millis(20), mirror_interval: Duration::from_millis(50), ..Default::default() };
        let tier = Tier::from_url(&sediment_tier::StoreUrl::Memory, tier_cfg, None).await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let broker = Broker::open_with_tier(BrokerConfig::for_tests(dir.path()), rx, Some(tier.clone())).unwrap();
        let mut cfg = BTreeMap::new();
        cfg.insert("segment.bytes".to_string(), "16384".to_string());
        cfg.insert("local.retention.bytes".to_string(), "32768".to_string());
        cfg.insert("retention.ms".to_string(), "-1".to_string());
        broker.create_topic("t", 1, 1, cfg, false).unwrap();
        let p = broker.topic("t").unwrap().partition(0).unwrap().clone();
        assert!(p.is_tiered());
        let mut batches = Vec::new();
        for i in 0..100i64 {
            let values: Vec<Vec<u8>> = (0..4).map(|r| format!("{i}-{r}-{}", "v".repeat(300)).into_bytes()).collect();
            let mut b = batch_from_values(&values, 1_700_000_000_000 + i * 10);
            let h = sediment_protocol::batch::BatchHeader::parse(&b).unwrap();
            p.append(&h, &mut b, sediment_log::clock::now_ms()).unwrap();
            batches.push(b);
        }
        p.flush_now().unwrap();
        let remote = p.remote().unwrap().clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while p.log_start_offset() == 0 || remote.status().lag_segments > 0 {
            assert!(std::time::Instant::now() < deadline, "no upload or local retention: {:?}", remote.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let local_start = p.log_start_offset();
        assert!(local_start > 0 && remote.uploaded_end() >= local_start);

        // Fetch from 0: served from the bucket, byte for byte, with the overall log start
        let (err, log_start, records) = fetch(&broker, 0).await;
        assert_eq!((err, log_start), (0, 0));
        assert!(!records.is_empty());
        let mut expect = Vec::new();
        for b in &batches {
            expect.extend_from_slice(b);
        }
        assert_eq!(&records[..], &expect[..records.len()]);
        // walk everything through Fetch
        let mut offset = 0;
        let mut all = Vec::new();
        while offset < 400 {
            let (err, _, rec) = fetch(&broker, offset).await;
            assert_eq!(err, 0, "fetch at {offset}");
            let last = sediment_protocol::batch::BatchIter::new(&rec).last().map(|(h, _)| h.next_offset()).unwrap();
            all.extend_from_slice(&rec);
            offset = last;
        }
        assert_eq!(all, expect);

        assert_eq!(list_offset(&broker, -2).await, 0, "EARLIEST is the remote log start");
        assert_eq!(list_offset(&broker, -4).await, local_start, "EARLIEST_LOCAL");
        assert_eq!(list_offset(&broker, -5).await, remote.latest_tiered_offset());
        assert!(remote.latest_tiered_offset() >= local_start - 1);
        // by timestamp: batch 3 (offsets 12..=15) has timestamps from ..030
        assert_eq!(list_offset(&broker, 1_700_000_000_031).await, 13);

        // DeleteRecords below the local log start raises the remote start
        let mut dr = DeleteRecordsRequest::default();
        let mut t = delete_records_request::DeleteRecordsTopic::default();
        t.name = TopicName(sb("t"));
        let mut dp = delete_records_request::DeleteRecordsPartition::default();
        dp.offset = 42;
        t.partitions.push(dp);
        dr.topics.push(t);
        let ResponseKind::DeleteRecords(resp) = call(&broker, ApiKey::DeleteRecords, 2, RequestKind::DeleteRecords(dr)).await else { panic!() };
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
        assert_eq!(resp.topics[0].partitions[0].low_watermark, 42);
        assert_eq!(list_offset(&broker, -2).await, 42);
        let (err, _, _) = fetch(&broker, 10).await;
        assert_eq!(err, sediment_protocol::ErrorCode::OffsetOutOfRange.code());
    }

    #[test]
    fn internal_topics_are_never_tiered() {
        assert!(is_internal("__consumer_offsets"));
        assert!(!is_internal("orders"));
        let d = BrokerDefaults::new(&BTreeMap::new()).unwrap();
        assert!(!policy("__consumer_offsets", &TopicConfig::default(), &d).upload);
        assert!(policy("orders", &TopicConfig::default(), &d).upload);
    }
}
