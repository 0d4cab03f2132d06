//! OffsetFetch: committed offsets of one group (v1–v7) or many (v8+), the requested partitions
//! or all of them (null topics). Only durable commits are visible; with `require_stable` (v7+)
//! the response waits for the group's commits still being written.

use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName};

use super::{Reply, sb};
use crate::broker::Broker;
use crate::group::Shard;
use crate::group::coordinator::FetchedOffset;
use sediment_protocol::ErrorCode;

/// One group of the request: id and requested (topic, partitions), None = all.
type GroupSpec = (String, Option<Vec<(String, Vec<i32>)>>);

fn specs(req: &OffsetFetchRequest, version: i16) -> Vec<GroupSpec> {
    if version >= 8 {
        req.groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
                (g.group_id.0.to_string(), topics)
            })
            .collect()
    } else {
        let topics = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
        vec![(req.group_id.0.to_string(), topics)]
    }
}

/// Writes of a shard not yet durable: the shard and the log offset to wait for.
type Pending = Vec<(Arc<Shard>, i64)>;

/// Offsets per group (or the group's error: NOT_COORDINATOR on a broker that does not
/// coordinate it), plus the durability waits `require_stable` needs.
fn lookup(broker: &Broker, specs: &[GroupSpec]) -> (Vec<Result<Vec<FetchedOffset>, ErrorCode>>, Pending) {
    let mut out = Vec::with_capacity(specs.len());
    let mut waits = Vec::new();
    for (group, topics) in specs {
        match broker.groups.shard_for(broker, group, false) {
            Err(code) => out.push(Err(code)),
            Ok(Some(s)) => {
                let (offsets, pending) = s.fetch_offsets(group, topics.as_deref());
                if let Some(end) = pending {
                    waits.push((s.clone(), end));
                }
                out.push(Ok(offsets));
            }
            Ok(None) => {
                let missing = topics
                    .iter()
                    .flatten()
                    .flat_map(|(t, ps)| {
                        ps.iter().map(move |&p| FetchedOffset { topic: t.clone(), partition: p, offset: -1, leader_epoch: -1, metadata: String::new() })
                    })
                    .collect();
                out.push(Ok(missing));
            }
        }
    }
    (out, waits)
}

/// Groups consecutive offsets of the same topic (request order is kept).
fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for o in offsets {
        match out.iter_mut().find(|(t, _)| *t == o.topic) {
            Some((_, v)) => v.push(o),
            None => out.push((o.topic.clone(), vec![o])),
        }
    }
    out
}

fn response(specs: &[GroupSpec], found: Vec<Result<Vec<FetchedOffset>, ErrorCode>>, version: i16) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        for ((group, _), offsets) in specs.iter().zip(found) {
            let mut g = OffsetFetchResponseGroup::default();
            g.group_id = GroupId(sb(group.clone()));
            let offsets = match offsets {
                Ok(o) => o,
                Err(code) => {
                    g.error_code = code.code();
                    r.groups.push(g);
                    continue;
                }
            };
            g.topics = by_topic(offsets)
                .into_iter()
                .map(|(t, ps)| {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = TopicName(sb(t));
                    rt.partitions = ps
                        .into_iter()
                        .map(|o| {
                            let mut p = OffsetFetchResponsePartitions::default();
                            p.partition_index = o.partition;
                            p.committed_offset = o.offset;
                            p.committed_leader_epoch = o.leader_epoch;
                            p.metadata = Some(sb(o.metadata));
                            p
                        })
                        .collect();
                    rt
                })
                .collect();
            r.groups.push(g);
        }
    } else if let Some(offsets) = found.into_iter().next() {
        let offsets = match offsets {
            Ok(o) => o,
            Err(code) if version >= 2 => {
                r.error_code = code.code();
                return r;
            }
            // v0-v1 have no top-level error: every requested partition carries it
            Err(code) => {
                r.topics = specs[0]
                    .1
                    .iter()
                    .flatten()
                    .map(|(t, ps)| {
                        let mut rt = OffsetFetchResponseTopic::default();
                        rt.name = TopicName(sb(t.clone()));
                        rt.partitions = ps
                            .iter()
                            .map(|&i| {
                                let mut p = OffsetFetchResponsePartition::default();
                                p.partition_index = i;
                                p.committed_offset = -1;
                                p.error_code = code.code();
                                p
                            })
                            .collect();
                        rt
                    })
                    .collect();
                return r;
            }
        };
        r.topics = by_topic(offsets)
            .into_iter()
            .map(|(t, ps)| {
                let mut rt = OffsetFetchResponseTopic::default();
                rt.name = TopicName(sb(t));
                rt.partitions = ps
                    .into_iter()
                    .map(|o| {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = o.partition;
                        p.committed_offset = o.offset;
                        if version >= 5 {
                            p.committed_leader_epoch = o.leader_epoch;
                        }
                        p.metadata = Some(sb(o.metadata));
                        p
                    })
                    .collect();
                rt
            })
            .collect();
    }
    r
}

pub fn handle(broker: &Arc<Broker>, req: OffsetFetchRequest, version: i16) -> Reply {
    let specs = specs(&req, version);
    let (found, waits) = lookup(broker, &specs);
    let require_stable = version >= 7 && req.require_stable;
    if !require_stable || waits.is_empty() {
        return Reply::Ready(ResponseKind::OffsetFetch(response(&specs, found, version)));
    }
    let broker = broker.clone();
    Reply::Later(
        async move {
            for (shard, end) in waits {
                let _ = shard.wait_durable(end).await;
            }
            let (found, _) = lookup(&broker, &specs);
            ResponseKind::OffsetFetch(response(&specs, found, version))
        }
        .boxed(),
    )
}
