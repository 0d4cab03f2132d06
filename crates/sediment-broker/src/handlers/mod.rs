//! One file per Kafka API, dispatched from [`dispatch`]. Each handler decodes nothing itself (the
//! connection already did) and returns a [`Reply`]: ready now, a future for the parts that wait
//! (fsync, long poll), or nothing (acks=0).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::broker::Broker;

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod raft_voters;
pub mod reassignments;
pub mod sync_group;

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
// Ready holds the response by value: it is moved once per request into the writer's queue, and
// boxing it would add an allocation to every request for no gain.
#[allow(clippy::large_enum_variant)]
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
        RequestKind::ListOffsets(r) => list_offsets::handle(broker, r, v),
        // admin changes may go through the controller (cluster mode): answered when applied
        RequestKind::CreateTopics(r) => Reply::Later(create_topics::handle(broker.clone(), r, v).map(ResponseKind::CreateTopics).boxed()),
        RequestKind::DeleteTopics(r) => Reply::Later(delete_topics::handle(broker.clone(), r, v).map(ResponseKind::DeleteTopics).boxed()),
        RequestKind::CreatePartitions(r) => Reply::Later(create_partitions::handle(broker.clone(), r, v).map(ResponseKind::CreatePartitions).boxed()),
        RequestKind::DescribeConfigs(r) => Reply::Ready(ResponseKind::DescribeConfigs(configs::describe(broker, r, v))),
        RequestKind::AlterConfigs(r) => Reply::Later(configs::alter(broker.clone(), r, v).map(ResponseKind::AlterConfigs).boxed()),
        RequestKind::IncrementalAlterConfigs(r) => {
            Reply::Later(configs::incremental_alter(broker.clone(), r, v).map(ResponseKind::IncrementalAlterConfigs).boxed())
        }
        RequestKind::DescribeCluster(r) => Reply::Ready(ResponseKind::DescribeCluster(describe_cluster::handle(broker, r, v))),
        RequestKind::DeleteRecords(r) => delete_records::handle(broker, r, v),
        RequestKind::OffsetForLeaderEpoch(r) => Reply::Ready(ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, r, v))),
        // consumer groups (crate::group)
        RequestKind::FindCoordinator(r) => {
            if (v < 1 || r.key_type <= 1)
                && let Some(group) = if v < 4 { Some(r.key.as_str()) } else { r.coordinator_keys.first().map(|k| k.as_str()) }
            {
                broker.groups.await_offsets_topic(broker, group).await;
            }
            Reply::Ready(ResponseKind::FindCoordinator(find_coordinator::handle(broker, r, v)))
        }
        RequestKind::JoinGroup(r) => {
            broker.groups.await_offsets_topic(broker, r.group_id.as_str()).await;
            join_group::handle(broker, ctx, r, v)
        }
        RequestKind::SyncGroup(r) => sync_group::handle(broker, r, v),
        RequestKind::Heartbeat(r) => Reply::Ready(ResponseKind::Heartbeat(heartbeat::handle(broker, r, v))),
        RequestKind::LeaveGroup(r) => Reply::Ready(ResponseKind::LeaveGroup(leave_group::handle(broker, r, v))),
        RequestKind::OffsetCommit(r) => {
            if !r.topics.is_empty() {
                broker.groups.await_offsets_topic(broker, r.group_id.as_str()).await;
            }
            offset_commit::handle(broker, r, v)
        }
        RequestKind::OffsetFetch(r) => offset_fetch::handle(broker, r, v),
        RequestKind::ListGroups(r) => Reply::Ready(ResponseKind::ListGroups(list_groups::handle(broker, r, v))),
        RequestKind::DescribeGroups(r) => Reply::Ready(ResponseKind::DescribeGroups(describe_groups::handle(broker, r, v))),
        RequestKind::DeleteGroups(r) => delete_groups::handle(broker, r, v),
        RequestKind::OffsetDelete(r) => offset_delete::handle(broker, r, v),
        RequestKind::InitProducerId(r) => Reply::Later(init_producer_id::handle(broker.clone(), r, v).map(ResponseKind::InitProducerId).boxed()),
        // cluster membership (sediment cluster add-broker|remove-broker)
        RequestKind::AddRaftVoter(r) => Reply::Later(raft_voters::add(broker.clone(), r, v).map(ResponseKind::AddRaftVoter).boxed()),
        RequestKind::RemoveRaftVoter(r) => Reply::Later(raft_voters::remove(broker.clone(), r, v).map(ResponseKind::RemoveRaftVoter).boxed()),
        RequestKind::AlterPartitionReassignments(r) => {
            Reply::Later(reassignments::alter(broker.clone(), r, v).map(ResponseKind::AlterPartitionReassignments).boxed())
        }
        RequestKind::ListPartitionReassignments(r) => Reply::Ready(ResponseKind::ListPartitionReassignments(reassignments::list(broker, r, v))),
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
                let ctx = RequestContext { api_key: s.key, api_version: v, correlation_id: 1, client_id: None, peer: "127.0.0.1:1".parse().unwrap() };
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
                pd.records = Some(bytes::Bytes::from(sediment_protocol::batch::testing::batch_with_records(2, sediment_log::clock::now_ms())));
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
            // a single node: both answer INVALID_REQUEST
            ApiKey::AddRaftVoter => RequestKind::AddRaftVoter(AddRaftVoterRequest::default()),
            ApiKey::RemoveRaftVoter => RequestKind::RemoveRaftVoter(RemoveRaftVoterRequest::default()),
            ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(AlterPartitionReassignmentsRequest::default()),
            ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default()),
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
            ApiKey::OffsetForLeaderEpoch => {
                let mut r = OffsetForLeaderEpochRequest::default();
                r.replica_id = BrokerId(-1);
                let mut ot = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                ot.topic = TopicName(sb("t"));
                for epoch in [0, 1, -1] {
                    let mut op = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                    op.current_leader_epoch = -1;
                    op.leader_epoch = epoch;
                    ot.partitions.push(op);
                }
                r.topics.push(ot);
                RequestKind::OffsetForLeaderEpoch(r)
            }
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
            ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default()),
            ApiKey::DescribeCluster => {
                let mut r = DescribeClusterRequest::default();
                r.endpoint_type = 1;
                RequestKind::DescribeCluster(r)
            }
            // consumer groups: a join per version (v0-3 and static v5+ complete at once, v4
            // gets MEMBER_ID_REQUIRED), an admin commit to "c" that waits for its fsync, reads
            // of "c", and deletions
            ApiKey::FindCoordinator => {
                let mut r = FindCoordinatorRequest::default();
                if v >= 4 {
                    r.coordinator_keys = vec![sb("c"), sb("d")];
                } else {
                    r.key = sb("c");
                }
                RequestKind::FindCoordinator(r)
            }
            ApiKey::JoinGroup => {
                let mut r = JoinGroupRequest::default();
                r.group_id = GroupId(sb(format!("g{v}")));
                r.session_timeout_ms = 10_000;
                r.rebalance_timeout_ms = 10_000;
                r.protocol_type = sb("consumer");
                if v >= 5 {
                    r.group_instance_id = Some(sb("instance"));
                }
                let mut p = join_group_request::JoinGroupRequestProtocol::default();
                p.name = sb("range");
                p.metadata = bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
                r.protocols.push(p);
                RequestKind::JoinGroup(r)
            }
            ApiKey::SyncGroup => {
                let mut r = SyncGroupRequest::default();
                r.group_id = GroupId(sb("c"));
                RequestKind::SyncGroup(r)
            }
            ApiKey::Heartbeat => {
                let mut r = HeartbeatRequest::default();
                r.group_id = GroupId(sb("c"));
                RequestKind::Heartbeat(r)
            }
            ApiKey::LeaveGroup => {
                let mut r = LeaveGroupRequest::default();
                r.group_id = GroupId(sb("c"));
                if v >= 3 {
                    let mut m = leave_group_request::MemberIdentity::default();
                    m.member_id = sb("nobody");
                    r.members.push(m);
                }
                RequestKind::LeaveGroup(r)
            }
            ApiKey::OffsetCommit => {
                let mut r = OffsetCommitRequest::default();
                r.group_id = GroupId(sb("c"));
                r.generation_id_or_member_epoch = -1;
                let mut ot = offset_commit_request::OffsetCommitRequestTopic::default();
                ot.name = TopicName(sb("t"));
                for p in [0, 1, 7] {
                    let mut op = offset_commit_request::OffsetCommitRequestPartition::default();
                    op.partition_index = p;
                    op.committed_offset = 5;
                    op.committed_metadata = Some(sb("m"));
                    ot.partitions.push(op);
                }
                r.topics.push(ot);
                RequestKind::OffsetCommit(r)
            }
            ApiKey::OffsetFetch => {
                let mut r = OffsetFetchRequest::default();
                r.require_stable = v >= 7;
                if v >= 8 {
                    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(sb("c"));
                    g.topics = None;
                    r.groups.push(g);
                    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(sb("missing"));
                    let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                    t.name = TopicName(sb("t"));
                    t.partition_indexes = vec![0];
                    g.topics = Some(vec![t]);
                    r.groups.push(g);
                } else {
                    r.group_id = GroupId(sb("c"));
                    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                    t.name = TopicName(sb("t"));
                    t.partition_indexes = vec![0, 1];
                    r.topics = Some(vec![t]);
                }
                RequestKind::OffsetFetch(r)
            }
            ApiKey::ListGroups => {
                let mut r = ListGroupsRequest::default();
                if v >= 4 {
                    r.states_filter = vec![sb("empty"), sb("Stable"), sb("CompletingRebalance")];
                }
                RequestKind::ListGroups(r)
            }
            ApiKey::DescribeGroups => {
                let mut r = DescribeGroupsRequest::default();
                r.groups = vec![GroupId(sb("c")), GroupId(sb("g3")), GroupId(sb("g9")), GroupId(sb("missing"))];
                r.include_authorized_operations = v >= 3;
                RequestKind::DescribeGroups(r)
            }
            ApiKey::DeleteGroups => {
                let mut r = DeleteGroupsRequest::default();
                r.groups_names = vec![GroupId(sb("missing")), GroupId(sb("g9"))];
                RequestKind::DeleteGroups(r)
            }
            ApiKey::OffsetDelete => {
                let mut r = OffsetDeleteRequest::default();
                r.group_id = GroupId(sb("c"));
                let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
                t.name = TopicName(sb("t"));
                let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
                p.partition_index = 1;
                t.partitions.push(p);
                r.topics.push(t);
                RequestKind::OffsetDelete(r)
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
            ApiKey::AddRaftVoter => ResponseKind::AddRaftVoter(Default::default()),
            ApiKey::RemoveRaftVoter => ResponseKind::RemoveRaftVoter(Default::default()),
            ApiKey::AlterPartitionReassignments => ResponseKind::AlterPartitionReassignments(Default::default()),
            ApiKey::ListPartitionReassignments => ResponseKind::ListPartitionReassignments(Default::default()),
            ApiKey::DescribeConfigs => ResponseKind::DescribeConfigs(Default::default()),
            ApiKey::AlterConfigs => ResponseKind::AlterConfigs(Default::default()),
            ApiKey::CreatePartitions => ResponseKind::CreatePartitions(Default::default()),
            ApiKey::IncrementalAlterConfigs => ResponseKind::IncrementalAlterConfigs(Default::default()),
            ApiKey::DescribeCluster => ResponseKind::DescribeCluster(Default::default()),
            ApiKey::OffsetForLeaderEpoch => ResponseKind::OffsetForLeaderEpoch(Default::default()),
            ApiKey::FindCoordinator => ResponseKind::FindCoordinator(Default::default()),
            ApiKey::JoinGroup => ResponseKind::JoinGroup(Default::default()),
            ApiKey::SyncGroup => ResponseKind::SyncGroup(Default::default()),
            ApiKey::Heartbeat => ResponseKind::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => ResponseKind::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => ResponseKind::OffsetCommit(Default::default()),
            ApiKey::OffsetFetch => ResponseKind::OffsetFetch(Default::default()),
            ApiKey::ListGroups => ResponseKind::ListGroups(Default::default()),
            ApiKey::DescribeGroups => ResponseKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => ResponseKind::DeleteGroups(Default::default()),
            ApiKey::OffsetDelete => ResponseKind::OffsetDelete(Default::default()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
