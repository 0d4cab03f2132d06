//! DeleteTopics: by name (all versions) or by topic id (v6+).

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use sediment_protocol::ErrorCode;

use super::sb;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut r = DeleteTopicsResponse::default();
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = Vec::new();
    if version >= 6 {
        for t in req.topics {
            targets.push((t.name.map(|n| n.0.to_string()), t.topic_id));
        }
    } else {
        for n in req.topic_names {
            targets.push((Some(n.0.to_string()), uuid::Uuid::nil()));
        }
    }
    for (name, id) in targets {
        let mut res = DeletableTopicResult::default();
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => broker.topic_by_id(&id).map(|t| t.name.clone()),
        };
        match resolved {
            None => {
                res.topic_id = id;
                res.error_code = ErrorCode::UnknownTopicId.code();
            }
            Some(n) => {
                res.name = Some(TopicName(sb(n.clone())));
                let deleted = match crate::topic_rules::client_may(&n, crate::topic_rules::ClientChange::Delete) {
                    Ok(()) => broker.delete_topic_any(&n).await,
                    Err(e) => Err(e),
                };
                match deleted {
                    Ok(tid) => {
                        if version >= 6 {
                            res.topic_id = tid;
                        }
                    }
                    Err(e) => {
                        res.error_code = e.code.code();
                        if version >= 5 {
                            res.error_message = Some(sb(e.message));
                        }
                    }
                }
            }
        }
        r.responses.push(res);
    }
    r
}
