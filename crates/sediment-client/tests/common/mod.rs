//! A minimal in-memory Kafka broker for the client's tests: enough of
//! ApiVersions, Metadata, Produce, Fetch, ListOffsets, CreateTopics,
//! DeleteTopics, DescribeConfigs and IncrementalAlterConfigs to exercise the
//! client without the real broker. Record batches are stored as received
//! (base offset patched), like Sediment does.

// The mock broker's topic and member ids need no reproducibility, and the client's tests do not
// depend on the broker's crates (sediment_log::random).
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, decode_request_header_from_buffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

#[derive(Default)]
pub struct Partition {
    pub batches: Vec<(i64, Bytes)>,
    pub next_offset: i64,
}

pub struct Topic {
    pub id: Uuid,
    pub partitions: Vec<Partition>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct State {
    pub topics: BTreeMap<String, Topic>,
    /// Produce requests seen, with their version.
    pub produce_versions: Vec<i16>,
    pub fetch_versions: Vec<i16>,
}

pub struct MockBroker {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

/// Max versions the mock advertises (the client must pick these).
#[derive(Clone, Copy)]
pub struct Caps {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { produce: 13, fetch: 17, metadata: 12 }
    }
}

const DEFAULT_CONFIGS: [(&str, &str); 3] = [("cleanup.policy", "delete"), ("retention.ms", "604800000"), ("segment.bytes", "1073741824")];

impl MockBroker {
    pub async fn start(caps: Caps) -> MockBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let a = addr.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let st = st.clone();
                let a = a.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(sock, st, a, caps).await;
                });
            }
        });
        MockBroker { addr, state }
    }

    pub fn create(&self, name: &str, partitions: usize) {
        let mut st = self.state.lock().unwrap();
        st.topics.insert(
            name.to_owned(),
            Topic { id: Uuid::new_v4(), partitions: (0..partitions).map(|_| Partition::default()).collect(), configs: BTreeMap::new() },
        );
    }
}

async fn serve_conn(mut sock: TcpStream, state: Arc<Mutex<State>>, addr: String, caps: Caps) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    loop {
        while buf.len() < 4 {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        while buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.advance(4);
        let mut frame = buf.split_to(size).freeze();
        let header = decode_request_header_from_buffer(&mut frame).unwrap();
        let api = ApiKey::try_from(header.request_api_key).unwrap();
        let v = header.request_api_version;
        let mut body = BytesMut::new();
        let respond = handle(api, v, &mut frame, &state, &addr, caps, &mut body);
        if !respond {
            continue;
        }
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default().with_correlation_id(header.correlation_id).encode(&mut out, api.response_header_version(v)).unwrap();
        out.extend_from_slice(&body);
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        sock.write_all(&out).await?;
    }
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

/// Handles one request; returns false when no response is due (acks=0).
#[allow(clippy::map_entry)]
fn handle(api: ApiKey, v: i16, frame: &mut Bytes, state: &Mutex<State>, addr: &str, caps: Caps, out: &mut BytesMut) -> bool {
    let mut st = state.lock().unwrap();
    match api {
        ApiKey::ApiVersions => {
            let keys = [
                (ApiKey::Produce, 0, caps.produce),
                (ApiKey::Fetch, 4, caps.fetch),
                (ApiKey::ListOffsets, 1, 10),
                (ApiKey::Metadata, 0, caps.metadata),
                (ApiKey::ApiVersions, 0, 4),
                (ApiKey::CreateTopics, 2, 7),
                (ApiKey::DeleteTopics, 1, 6),
                (ApiKey::DescribeConfigs, 1, 4),
                (ApiKey::IncrementalAlterConfigs, 0, 1),
            ];
            let resp = ApiVersionsResponse::default().with_api_keys(
                keys.iter().map(|(k, min, max)| ApiVersion::default().with_api_key(*k as i16).with_min_version(*min).with_max_version(*max)).collect(),
            );
            resp.encode(out, v).unwrap();
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(frame, v).unwrap();
            let (host, port) = addr.rsplit_once(':').unwrap();
            let names: Vec<String> = match &req.topics {
                None => st.topics.keys().cloned().collect(),
                Some(ts) => ts.iter().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect(),
            };
            let topics = names
                .iter()
                .map(|n| match st.topics.get(n) {
                    None => MetadataResponseTopic::default().with_name(Some(TopicName(s(n)))).with_error_code(3),
                    Some(t) => MetadataResponseTopic::default().with_name(Some(TopicName(s(n)))).with_topic_id(t.id).with_partitions(
                        (0..t.partitions.len())
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p as i32)
                                    .with_leader_id(BrokerId(1))
                                    .with_replica_nodes(vec![BrokerId(1)])
                                    .with_isr_nodes(vec![BrokerId(1)])
                            })
                            .collect(),
                    ),
                })
                .collect();
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default().with_node_id(BrokerId(1)).with_host(s(host)).with_port(port.parse().unwrap())])
                .with_controller_id(BrokerId(1))
                .with_topics(topics)
                .encode(out, v)
                .unwrap();
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(frame, v).unwrap();
            st.produce_versions.push(v);
            let mut responses = Vec::new();
            for td in req.topic_data {
                let name =
                    if v >= 13 { st.topics.iter().find(|(_, t)| t.id == td.topic_id).map(|(n, _)| n.clone()).unwrap_or_default() } else { td.name.to_string() };
                let mut parts = Vec::new();
                for pd in td.partition_data {
                    let mut r = PartitionProduceResponse::default().with_index(pd.index);
                    match st.topics.get_mut(&name).and_then(|t| t.partitions.get_mut(pd.index as usize)) {
                        None => r = r.with_error_code(3),
                        Some(part) => {
                            let records = pd.records.unwrap();
                            // Exactly one v2 batch per partition (Produce v3+ rule).
                            let len = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize;
                            assert_eq!(records.len(), 12 + len, "one batch per partition");
                            let last_delta = i32::from_be_bytes(records[23..27].try_into().unwrap()) as i64;
                            let mut b = BytesMut::from(&records[..]);
                            b[..8].copy_from_slice(&part.next_offset.to_be_bytes());
                            r = r.with_base_offset(part.next_offset);
                            part.batches.push((part.next_offset, b.freeze()));
                            part.next_offset += last_delta + 1;
                        }
                    }
                    parts.push(r);
                }
                responses.push(TopicProduceResponse::default().with_name(td.name).with_topic_id(td.topic_id).with_partition_responses(parts));
            }
            if req.acks == 0 {
                return false;
            }
            ProduceResponse::default().with_responses(responses).encode(out, v).unwrap();
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(frame, v).unwrap();
            st.fetch_versions.push(v);
            let mut responses = Vec::new();
            for ft in req.topics {
                let name = if v >= 13 {
                    st.topics.iter().find(|(_, t)| t.id == ft.topic_id).map(|(n, _)| n.clone()).unwrap_or_default()
                } else {
                    ft.topic.to_string()
                };
                let mut parts = Vec::new();
                for fp in ft.partitions {
                    let mut pd = PartitionData::default().with_partition_index(fp.partition);
                    match st.topics.get(&name).and_then(|t| t.partitions.get(fp.partition as usize)) {
                        None => pd = pd.with_error_code(3),
                        Some(part) if fp.fetch_offset > part.next_offset => pd = pd.with_error_code(1),
                        Some(part) => {
                            let mut data = BytesMut::new();
                            for (base, b) in &part.batches {
                                let last = base + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
                                if last < fp.fetch_offset {
                                    continue;
                                }
                                if !data.is_empty() && data.len() + b.len() > fp.partition_max_bytes as usize {
                                    break;
                                }
                                data.extend_from_slice(b);
                            }
                            pd = pd
                                .with_high_watermark(part.next_offset)
                                .with_last_stable_offset(part.next_offset)
                                .with_log_start_offset(0)
                                .with_records(Some(data.freeze()));
                        }
                    }
                    parts.push(pd);
                }
                responses.push(FetchableTopicResponse::default().with_topic(ft.topic).with_topic_id(ft.topic_id).with_partitions(parts));
            }
            FetchResponse::default().with_responses(responses).encode(out, v).unwrap();
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(frame, v).unwrap();
            assert_eq!(req.replica_id.0, -1, "consumers list offsets as replica -1");
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let topic = st.topics.get(t.name.as_str());
                    ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                                match topic.and_then(|t| t.partitions.get(p.partition_index as usize)) {
                                    None => r.with_error_code(3),
                                    Some(part) => r.with_offset(if p.timestamp == -2 { 0 } else { part.next_offset }),
                                }
                            })
                            .collect(),
                    )
                })
                .collect();
            ListOffsetsResponse::default().with_topics(topics).encode(out, v).unwrap();
        }
        ApiKey::CreateTopics => {
            let req = CreateTopicsRequest::decode(frame, v).unwrap();
            let mut results = Vec::new();
            for t in req.topics {
                let name = t.name.to_string();
                let mut r = CreatableTopicResult::default().with_name(t.name.clone());
                if st.topics.contains_key(&name) {
                    r = r.with_error_code(36).with_error_message(Some(s("topic exists")));
                } else if t.num_partitions == 0 || t.num_partitions < -1 {
                    r = r.with_error_code(37).with_error_message(Some(s("number of partitions must be positive")));
                } else {
                    let n = if t.num_partitions == -1 { 1 } else { t.num_partitions };
                    let id = Uuid::new_v4();
                    r = r.with_topic_id(id).with_num_partitions(n).with_replication_factor(1);
                    if !req.validate_only {
                        st.topics.insert(
                            name,
                            Topic {
                                id,
                                partitions: (0..n).map(|_| Partition::default()).collect(),
                                configs: t.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default())).collect(),
                            },
                        );
                    }
                }
                results.push(r);
            }
            CreateTopicsResponse::default().with_topics(results).encode(out, v).unwrap();
        }
        ApiKey::DeleteTopics => {
            let req = DeleteTopicsRequest::decode(frame, v).unwrap();
            let names: Vec<String> = if v >= 6 {
                req.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect()
            } else {
                req.topic_names.iter().map(|n| n.to_string()).collect()
            };
            let responses = names
                .iter()
                .map(|n| {
                    let code = if st.topics.remove(n).is_some() { 0 } else { 3 };
                    DeletableTopicResult::default().with_name(Some(TopicName(s(n)))).with_error_code(code)
                })
                .collect();
            DeleteTopicsResponse::default().with_responses(responses).encode(out, v).unwrap();
        }
        ApiKey::DescribeConfigs => {
            let req = DescribeConfigsRequest::decode(frame, v).unwrap();
            let results = req
                .resources
                .iter()
                .map(|r| {
                    let name = r.resource_name.to_string();
                    let res = DescribeConfigsResult::default().with_resource_type(2).with_resource_name(r.resource_name.clone());
                    match st.topics.get(&name) {
                        None => res.with_error_code(3),
                        Some(t) => res.with_configs(
                            DEFAULT_CONFIGS
                                .iter()
                                .map(|(k, d)| {
                                    let set = t.configs.get(*k);
                                    DescribeConfigsResourceResult::default()
                                        .with_name(s(k))
                                        .with_value(Some(s(set.map(String::as_str).unwrap_or(d))))
                                        .with_config_source(if set.is_some() { 1 } else { 5 })
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            DescribeConfigsResponse::default().with_results(results).encode(out, v).unwrap();
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = IncrementalAlterConfigsRequest::decode(frame, v).unwrap();
            let mut responses = Vec::new();
            for r in req.resources {
                let name = r.resource_name.to_string();
                let mut resp = AlterConfigsResourceResponse::default().with_resource_type(2).with_resource_name(r.resource_name.clone());
                match st.topics.get_mut(&name) {
                    None => resp = resp.with_error_code(3),
                    Some(t) => {
                        for c in r.configs {
                            match c.config_operation {
                                0 => {
                                    t.configs.insert(c.name.to_string(), c.value.map(|v| v.to_string()).unwrap_or_default());
                                }
                                1 => {
                                    t.configs.remove(c.name.as_str());
                                }
                                _ => resp = resp.with_error_code(42),
                            }
                        }
                    }
                }
                responses.push(resp);
            }
            IncrementalAlterConfigsResponse::default().with_responses(responses).encode(out, v).unwrap();
        }
        other => panic!("mock broker does not handle {other:?}"),
    }
    true
}
