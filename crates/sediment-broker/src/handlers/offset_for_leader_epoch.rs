//! OffsetForLeaderEpoch (KIP-101/KIP-320): for each partition and leader epoch, the largest
//! epoch at or below it and where it ends, so that a client that read up to some offset in an
//! old epoch can tell whether a leader change took records back (it never does for committed
//! records, which are all a consumer sees; the answer lets clients verify that). Served by the
//! partition's leader only; `current_leader_epoch` is checked as in Fetch.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use sediment_protocol::ErrorCode;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: OffsetForLeaderEpochRequest, _version: i16) -> OffsetForLeaderEpochResponse {
    let mut r = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let topic = broker.topic(t.topic.0.as_str());
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for q in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = q.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            let part = match &topic {
                Some(t) => t.leader_partition(q.partition),
                None => Err(ErrorCode::UnknownTopicOrPartition),
            };
            match part {
                Err(code) => e.error_code = code.code(),
                Ok(p) => {
                    let current = p.leader_epoch();
                    if q.current_leader_epoch >= 0 && q.current_leader_epoch != current {
                        e.error_code =
                            if q.current_leader_epoch > current { ErrorCode::UnknownLeaderEpoch.code() } else { ErrorCode::FencedLeaderEpoch.code() };
                    } else {
                        let (epoch, end) = p.end_offset_for_epoch(q.leader_epoch);
                        e.leader_epoch = epoch;
                        e.end_offset = end;
                    }
                }
            }
            tr.partitions.push(e);
        }
        r.topics.push(tr);
    }
    r
}
