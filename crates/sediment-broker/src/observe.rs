//! What the broker tells `sediment-telemetry`: per-API metric handles, the request span's fields
//! and the error codes in a response, and the per-partition numbers a scrape reads.
//!
//! Costs on the request path: one table lookup for the API's bound handles, one walk over the
//! response's partitions for error codes (no allocation unless an error is found), and the
//! span fields below only when the span is enabled (tracing on).

use std::sync::{Arc, LazyLock, Weak};

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use sediment_protocol::versions;
use sediment_telemetry::{ApiMetrics, PartitionStats, StorageSource};

use crate::broker::Broker;

/// Bound metrics per API key, for every API in the version table.
static API_METRICS: LazyLock<Vec<Option<ApiMetrics>>> = LazyLock::new(|| {
    let mut table: Vec<Option<ApiMetrics>> = Vec::new();
    for s in versions::SUPPORTED {
        let idx = s.key as i16 as usize;
        if table.len() <= idx {
            table.resize_with(idx + 1, || None);
        }
        table[idx] = Some(sediment_telemetry::metrics().api(api_name(s.key)));
    }
    table
});

/// Kafka's request name for an API key (`Produce`, `Fetch`, `ApiVersions`, ...), as in Kafka's
/// `RequestMetrics` and `kafka.network` MBeans.
#[inline]
pub fn api_name(key: ApiKey) -> &'static str {
    // Indexed by key: one lookup per request, no search.
    static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut names = Vec::new();
        for k in ApiKey::iter() {
            let idx = k as i16 as usize;
            if names.len() <= idx {
                names.resize(idx + 1, "Unknown");
            }
            names[idx] = &*Box::leak(format!("{k:?}").into_boxed_str());
        }
        names
    });
    NAMES.get(key as i16 as usize).copied().unwrap_or("Unknown")
}

/// The bound request counter and latency histogram of a served API.
#[inline]
pub fn api_metrics(key: ApiKey) -> Option<&'static ApiMetrics> {
    API_METRICS.get(key as i16 as usize).and_then(Option::as_ref)
}

/// Binds the handles of every served API now, so `/metrics` lists them (at zero) from the start.
pub fn init() {
    LazyLock::force(&API_METRICS);
}

/// Registers the broker as the source of the per-partition gauges.
pub fn register(broker: &Arc<Broker>) {
    let weak: Weak<Broker> = Arc::downgrade(broker);
    sediment_telemetry::metrics().set_storage_source(weak);
}

/// Counts a request refused before it reached a handler (the connection is closed).
pub fn refused(api: Option<ApiKey>, error: &'static str) {
    sediment_telemetry::metrics().request_error(api.map(api_name).unwrap_or("Unknown"), error);
}

/// Topics, partitions and record bytes named by a request, for the request span.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestSummary {
    /// Comma-separated topic names (the first [`MAX_TOPICS`], then `…`).
    pub topics: String,
    pub partitions: usize,
    /// Record bytes carried by the request (Produce).
    pub bytes: usize,
}

/// Topics listed in a span before it is cut short.
pub const MAX_TOPICS: usize = 8;

fn push_topic(s: &mut RequestSummary, count: &mut usize, name: &str) {
    *count += 1;
    if *count > MAX_TOPICS {
        if *count == MAX_TOPICS + 1 {
            s.topics.push_str(",…");
        }
        return;
    }
    if !s.topics.is_empty() {
        s.topics.push(',');
    }
    s.topics.push_str(name);
}

/// The span fields of a request. Only called when the request span is enabled.
pub fn summarize(req: &RequestKind) -> RequestSummary {
    let mut s = RequestSummary::default();
    let mut n = 0;
    match req {
        RequestKind::Produce(r) => {
            for t in &r.topic_data {
                if t.name.0.is_empty() {
                    push_topic(&mut s, &mut n, &t.topic_id.to_string());
                } else {
                    push_topic(&mut s, &mut n, t.name.0.as_str());
                }
                s.partitions += t.partition_data.len();
                s.bytes += t.partition_data.iter().map(|p| p.records.as_ref().map_or(0, |b| b.len())).sum::<usize>();
            }
        }
        RequestKind::Fetch(r) => {
            for t in &r.topics {
                if t.topic.0.is_empty() {
                    push_topic(&mut s, &mut n, &t.topic_id.to_string());
                } else {
                    push_topic(&mut s, &mut n, t.topic.0.as_str());
                }
                s.partitions += t.partitions.len();
            }
        }
        RequestKind::ListOffsets(r) => {
            for t in &r.topics {
                push_topic(&mut s, &mut n, t.name.0.as_str());
                s.partitions += t.partitions.len();
            }
        }
        RequestKind::Metadata(r) => {
            for t in r.topics.iter().flatten() {
                if let Some(name) = &t.name {
                    push_topic(&mut s, &mut n, name.0.as_str());
                }
            }
        }
        RequestKind::OffsetCommit(r) => {
            for t in &r.topics {
                push_topic(&mut s, &mut n, t.name.0.as_str());
                s.partitions += t.partitions.len();
            }
        }
        RequestKind::DeleteRecords(r) => {
            for t in &r.topics {
                push_topic(&mut s, &mut n, t.name.0.as_str());
                s.partitions += t.partitions.len();
            }
        }
        RequestKind::CreateTopics(r) => {
            for t in &r.topics {
                push_topic(&mut s, &mut n, t.name.0.as_str());
            }
        }
        RequestKind::DeleteTopics(r) => {
            for t in &r.topics {
                if let Some(name) = &t.name {
                    push_topic(&mut s, &mut n, name.0.as_str());
                }
            }
        }
        RequestKind::CreatePartitions(r) => {
            for t in &r.topics {
                push_topic(&mut s, &mut n, t.name.0.as_str());
            }
        }
        _ => {}
    }
    s
}

/// Calls `f` with every error code in a response (0 included). Covers every API Sediment serves
/// or is about to; other responses report nothing.
pub fn for_each_error_code(resp: &ResponseKind, mut f: impl FnMut(i16)) {
    match resp {
        ResponseKind::Produce(r) => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::Metadata(r) => {
            f(r.error_code);
            for t in &r.topics {
                f(t.error_code);
                t.partitions.iter().for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|x| f(x.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|x| f(x.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|x| f(x.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|x| f(x.error_code)),
        ResponseKind::DescribeCluster(r) => f(r.error_code),
        ResponseKind::AddRaftVoter(r) => f(r.error_code),
        ResponseKind::RemoveRaftVoter(r) => f(r.error_code),
        ResponseKind::AlterPartitionReassignments(r) => {
            f(r.error_code);
            r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::ListPartitionReassignments(r) => f(r.error_code),
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            f(r.error_code);
            r.members.iter().for_each(|m| f(m.error_code));
        }
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
            for g in &r.groups {
                f(g.error_code);
                g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::ListGroups(r) => f(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| f(g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| f(g.error_code)),
        ResponseKind::OffsetDelete(r) => {
            f(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::InitProducerId(r) => f(r.error_code),
        _ => {}
    }
}

/// Record bytes in a Fetch response (for the request span).
pub fn response_record_bytes(resp: &ResponseKind) -> usize {
    match resp {
        ResponseKind::Fetch(r) => r.responses.iter().flat_map(|t| &t.partitions).map(|p| p.records.as_ref().map_or(0, |b| b.len())).sum(),
        _ => 0,
    }
}

/// Counts the distinct error codes of a response (once per response and code) and returns the
/// first non-zero code (0 if none), for the span.
pub fn record_errors(api: &'static str, resp: &ResponseKind) -> i16 {
    let mut codes: Vec<i16> = Vec::new();
    for_each_error_code(resp, |c| {
        if c != 0 && !codes.contains(&c) {
            codes.push(c);
        }
    });
    for &c in &codes {
        sediment_telemetry::metrics().request_error(api, &error_name(c));
    }
    codes.first().copied().unwrap_or(0)
}

/// `UNKNOWN_TOPIC_OR_PARTITION` for 3, as Kafka names its error codes.
pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        Some(kafka_protocol::ResponseError::Unknown(c)) => format!("UNKNOWN_{c}"),
        Some(e) => sediment_telemetry::kafka_error_name(&format!("{e:?}")),
        None => "NONE".into(),
    }
}

impl StorageSource for Broker {
    fn partition_stats(&self) -> Vec<PartitionStats> {
        let mut out = Vec::new();
        let mut under_replicated = 0u64;
        let mut follower_lag = std::collections::BTreeMap::<u64, u64>::new();
        for t in self.topics() {
            for p in t.hosted() {
                let leader = match p.replica() {
                    Some(r) => {
                        let leads = r.is_leader();
                        for (follower, lag) in r.follower_lag() {
                            let max = follower_lag.entry(follower).or_default();
                            *max = (*max).max(lag);
                        }
                        if leads && self.isr_of(&t.name, p.index).is_some_and(|isr| isr.len() < r.voter_count()) {
                            under_replicated += 1;
                        }
                        leads
                    }
                    None => true,
                };
                let (start, leo, size, segments) = p.with_log(|l| (l.log_start_offset(), l.log_end_offset(), l.size_bytes(), l.segment_count() as u64));
                out.push(PartitionStats {
                    topic: t.name.clone(),
                    partition: p.index,
                    log_start_offset: start,
                    high_watermark: p.high_watermark(),
                    log_end_offset: leo,
                    segments,
                    size_bytes: size,
                    leader,
                });
            }
        }
        let m = &sediment_telemetry::metrics().replication;
        m.set_under_replicated_partitions(under_replicated);
        m.set_follower_lag(&follower_lag);
        if let Some(c) = &self.cluster {
            let q = c.quiescer.stats();
            m.set_quiesced_partitions(q.leading_quiet as u64, q.following_quiet as u64);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;

    #[test]
    fn error_names() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(api_name(ApiKey::ApiVersions), "ApiVersions");
    }

    #[test]
    fn every_served_api_has_bound_metrics() {
        for s in versions::SUPPORTED {
            assert!(api_metrics(s.key).is_some(), "{:?}", s.key);
        }
    }

    #[test]
    fn produce_summary_and_errors() {
        let mut r = ProduceRequest::default();
        for (name, parts) in [("a", 2), ("b", 1)] {
            let mut t = produce_request::TopicProduceData::default();
            t.name = TopicName(crate::handlers::sb(name));
            for i in 0..parts {
                let mut p = produce_request::PartitionProduceData::default();
                p.index = i;
                p.records = Some(bytes::Bytes::from(vec![0u8; 100]));
                t.partition_data.push(p);
            }
            r.topic_data.push(t);
        }
        let s = summarize(&RequestKind::Produce(r));
        assert_eq!(s, RequestSummary { topics: "a,b".into(), partitions: 3, bytes: 300 });

        let mut resp = ProduceResponse::default();
        let mut t = produce_response::TopicProduceResponse::default();
        for code in [0, 3, 3, 10] {
            let mut p = produce_response::PartitionProduceResponse::default();
            p.error_code = code;
            t.partition_responses.push(p);
        }
        resp.responses.push(t);
        let mut seen = Vec::new();
        for_each_error_code(&ResponseKind::Produce(resp.clone()), |c| seen.push(c));
        assert_eq!(seen, vec![0, 3, 3, 10]);
        assert_eq!(record_errors("Produce", &ResponseKind::Produce(resp)), 3);
    }

    #[test]
    fn summary_cuts_long_topic_lists() {
        let mut r = MetadataRequest::default();
        r.topics = Some(
            (0..20)
                .map(|i| {
                    let mut t = metadata_request::MetadataRequestTopic::default();
                    t.name = Some(TopicName(crate::handlers::sb(format!("t{i}"))));
                    t
                })
                .collect(),
        );
        let s = summarize(&RequestKind::Metadata(r));
        assert_eq!(s.topics, "t0,t1,t2,t3,t4,t5,t6,t7,…");
    }
}
