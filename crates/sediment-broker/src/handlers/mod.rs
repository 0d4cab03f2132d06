//! One file per Kafka API, dispatched from [`dispatch`]. Each handler decodes nothing itself (the
//! connection already did) and returns a [`Reply`]: ready now, a future for the parts that wait
//! (fsync, long poll), or nothing (acks=0).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::broker::Broker;

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

/// Who asked, and with which API version.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub peer: SocketAddr,
}

/// A handler's answer.
pub enum Reply {
    /// No response is sent (Produce with acks=0).
    None,
    Ready(ResponseKind),
    /// The response is ready when the future completes; responses still go out in request order.
    Later(BoxFuture<'static, ResponseKind>),
}

/// Routes a decoded request to its handler. Only APIs in `sediment_protocol::versions::SUPPORTED`
/// reach this point; anything else was refused by the connection.
pub async fn dispatch(broker: &Arc<Broker>, ctx: &RequestContext, request: RequestKind) -> Reply {
    let v = ctx.api_version;
    match request {
        RequestKind::ApiVersions(r) => Reply::Ready(ResponseKind::ApiVersions(api_versions::handle(r, v))),
        RequestKind::Metadata(r) => Reply::Ready(ResponseKind::Metadata(metadata::handle(broker, r, v))),
        RequestKind::Produce(r) => produce::handle(broker, r, v),
        RequestKind::Fetch(r) => fetch::handle(broker, r, v),
        RequestKind::ListOffsets(r) => Reply::Ready(ResponseKind::ListOffsets(list_offsets::handle(broker, r, v))),
        RequestKind::CreateTopics(r) => Reply::Ready(ResponseKind::CreateTopics(create_topics::handle(broker, r, v))),
        RequestKind::DeleteTopics(r) => Reply::Ready(ResponseKind::DeleteTopics(delete_topics::handle(broker, r, v))),
        RequestKind::CreatePartitions(r) => {
            Reply::Ready(ResponseKind::CreatePartitions(create_partitions::handle(broker, r, v)))
        }
        RequestKind::DescribeConfigs(r) => Reply::Ready(ResponseKind::DescribeConfigs(configs::describe(broker, r, v))),
        RequestKind::AlterConfigs(r) => Reply::Ready(ResponseKind::AlterConfigs(configs::alter(broker, r, v))),
        RequestKind::IncrementalAlterConfigs(r) => {
            Reply::Ready(ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, r, v)))
        }
        RequestKind::DescribeCluster(r) => {
            Reply::Ready(ResponseKind::DescribeCluster(describe_cluster::handle(broker, r, v)))
        }
        RequestKind::DeleteRecords(r) => delete_records::handle(broker, r, v),
        RequestKind::InitProducerId(r) => {
            Reply::Ready(ResponseKind::InitProducerId(init_producer_id::handle(broker, r, v)))
        }
        other => {
            // Unreachable while the version table and this match agree; a unit test checks they do.
            tracing::error!(request = ?std::mem::discriminant(&other), "request reached dispatch without a handler");
            Reply::Ready(api_versions::unsupported())
        }
    }
}

/// `StrBytes` from a `String` without a copy of the bytes beyond the one made here.
pub(crate) fn sb(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use sediment_protocol::versions::SUPPORTED;

    /// Every advertised API reaches a real handler, and every handler's answer to a default
    /// request encodes at every served version (kafka-protocol refuses fields a version lacks).
    #[tokio::test]
    async fn every_api_answers_and_encodes_at_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let broker = Broker::open(crate::BrokerConfig::for_tests(dir.path()), rx).unwrap();
        broker.create_topic("t", 2, 1, Default::default(), false).unwrap();
        for s in SUPPORTED {
            for v in s.min..=s.max {
                let req = request_for(s.key, v, &broker);
                let mut buf = BytesMut::new();
                req.encode(&mut buf, v).unwrap_or_else(|e| panic!("{:?} v{v} request encode: {e}", s.key));
                let mut b = buf.freeze();
                let decoded = RequestKind::decode(s.key, &mut b, v).unwrap();
                let ctx = RequestContext {
                    api_key: s.key,
                    api_version: v,
                    correlation_id: 1,
                    client_id: None,
                    peer: "127.0.0.1:1".parse().unwrap(),
                };
                let resp = match dispatch(&broker, &ctx, decoded).await {
                    Reply::Ready(r) => r,
                    Reply::Later(f) => f.await,
                    Reply::None => continue,
                };
                assert_eq!(std::mem::discriminant(&resp), std::mem::discriminant(&expected_kind(s.key)), "{:?} answered with another api", s.key);
                crate::server::encode_response(1, s.key, v, &resp).unwrap_or_else(|e| panic!("{:?} v{v} response encode: {e}", s.key));
            }
        }
    }

    /// A request naming the existing topic "t" (partition 0) wherever the API takes topics.
    fn request_for(key: ApiKey, v: i16, broker: &Broker) -> RequestKind {
        use kafka_protocol::messages::*;
        let t = broker.topic("t").unwrap();
        match key {
            ApiKey::Produce => {
                let mut r = ProduceRequest::default();
                r.acks = 1;
                let mut td = produce_request::TopicProduceData::default();
                if v >= 13 {
                    td.topic_id = t.id;
                } else {
                    td.name = TopicName(sb("t"));
                }
                let mut pd = produce_request::PartitionProduceData::default();
                pd.records = Some(bytes::Bytes::from(sediment_protocol::batch::testing::batch_with_records(2, crate::broker::now_ms())));
                td.partition_data.push(pd);
                r.topic_data.push(td);
                RequestKind::Produce(r)
            }
            ApiKey::InitProducerId => {
                let mut r = InitProducerIdRequest::default();
                r.transaction_timeout_ms = 60_000;
                RequestKind::InitProducerId(r)
            }
            ApiKey::Fetch => {
                let mut r = FetchRequest::default();
                r.max_wait_ms = 0;
                r.max_bytes = 1 << 20;
                let mut ft = fetch_request::FetchTopic::default();
                if v >= 13 {
                    ft.topic_id = t.id;
                } else {
                    ft.topic = TopicName(sb("t"));
                }
                let mut fp = fetch_request::FetchPartition::default();
                fp.partition_max_bytes = 1 << 20;
                ft.partitions.push(fp);
                r.topics.push(ft);
                RequestKind::Fetch(r)
            }
            ApiKey::ListOffsets => {
                let mut r = ListOffsetsRequest::default();
                let mut lt = list_offsets_request::ListOffsetsTopic::default();
                lt.name = TopicName(sb("t"));
                for ts in [-1, -2, 0] {
                    let mut lp = list_offsets_request::ListOffsetsPartition::default();
                    lp.timestamp = ts;
                    lt.partitions.push(lp);
                }
                r.topics.push(lt);
                RequestKind::ListOffsets(r)
            }
            ApiKey::Metadata => {
                let mut r = MetadataRequest::default();
                let mut mt = metadata_request::MetadataRequestTopic::default();
                mt.name = Some(TopicName(sb("t")));
                r.topics = Some(vec![mt]);
                RequestKind::Metadata(r)
            }
            ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
            ApiKey::DescribeConfigs => {
                let mut r = DescribeConfigsRequest::default();
                let mut res = describe_configs_request::DescribeConfigsResource::default();
                res.resource_type = 2;
                res.resource_name = sb("t");
                r.resources.push(res);
                let mut res = describe_configs_request::DescribeConfigsResource::default();
                res.resource_type = 4;
                res.resource_name = sb("1");
                r.resources.push(res);
                RequestKind::DescribeConfigs(r)
            }
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
            ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default()),
            ApiKey::DescribeCluster => {
                let mut r = DescribeClusterRequest::default();
                r.endpoint_type = 1;
                RequestKind::DescribeCluster(r)
            }
            other => panic!("no default request for {other:?}: add it here when advertising it"),
        }
    }

    fn expected_kind(key: ApiKey) -> ResponseKind {
        use kafka_protocol::messages::*;
        match key {
            ApiKey::Produce => ResponseKind::Produce(Default::default()),
            ApiKey::InitProducerId => ResponseKind::InitProducerId(Default::default()),
            ApiKey::Fetch => ResponseKind::Fetch(Default::default()),
            ApiKey::ListOffsets => ResponseKind::ListOffsets(Default::default()),
            ApiKey::Metadata => ResponseKind::Metadata(Default::default()),
            ApiKey::ApiVersions => ResponseKind::ApiVersions(Default::default()),
            ApiKey::CreateTopics => ResponseKind::CreateTopics(Default::default()),
            ApiKey::DeleteTopics => ResponseKind::DeleteTopics(Default::default()),
            ApiKey::DeleteRecords => ResponseKind::DeleteRecords(Default::default()),
            ApiKey::DescribeConfigs => ResponseKind::DescribeConfigs(Default::default()),
            ApiKey::AlterConfigs => ResponseKind::AlterConfigs(Default::default()),
            ApiKey::CreatePartitions => ResponseKind::CreatePartitions(Default::default()),
            ApiKey::IncrementalAlterConfigs => ResponseKind::IncrementalAlterConfigs(Default::default()),
            ApiKey::DescribeCluster => ResponseKind::DescribeCluster(Default::default()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
