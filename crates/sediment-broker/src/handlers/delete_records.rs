//! DeleteRecords: raises a partition's log start offset (offset -1 means the high watermark) and
//! deletes whole segments below it. Offsets above the high watermark are OFFSET_OUT_OF_RANGE.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use sediment_protocol::ErrorCode;

use super::Reply;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest, _version: i16) -> Reply {
    let mut r = DeleteRecordsResponse::default();
    for t in req.topics {
        let topic = broker.topic(t.name.0.as_str());
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for q in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = q.partition_index;
            pr.low_watermark = -1;
            match topic.as_ref().and_then(|t| t.partition(q.partition_index)) {
                None => pr.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(p) => {
                    let hw = p.high_watermark();
                    let target = if q.offset == -1 { hw } else { q.offset };
                    if target < 0 || target > hw {
                        pr.error_code = ErrorCode::OffsetOutOfRange.code();
                    } else {
                        match p.with_log(|l| l.delete_records_before(target)) {
                            Ok(start) => pr.low_watermark = start,
                            Err(e) => {
                                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "delete records failed");
                                pr.error_code = crate::error::ApiError::from(&e).code.code();
                            }
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    Reply::Ready(ResponseKind::DeleteRecords(r))
}
