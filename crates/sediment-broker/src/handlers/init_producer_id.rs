//! InitProducerId for idempotent producers: a fresh producer id with epoch 0 every time, as
//! Kafka does when `transactional_id` is null. Transactions are not implemented yet: a request
//! with a transactional id gets its timeout validated (INVALID_TRANSACTION_TIMEOUT) and is then
//! refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a non-retriable error, rather than a
//! producer id the broker could not honour.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sediment_protocol::ErrorCode;

use crate::broker::Broker;

/// Kafka's `transaction.max.timeout.ms` default.
pub const TRANSACTION_MAX_TIMEOUT_MS: i32 = 900_000;

pub async fn handle(broker: Arc<Broker>, req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if let Some(txn) = &req.transactional_id {
        r.error_code = if txn.0.is_empty() {
            ErrorCode::InvalidRequest.code()
        } else if req.transaction_timeout_ms <= 0 || req.transaction_timeout_ms > TRANSACTION_MAX_TIMEOUT_MS {
            ErrorCode::InvalidTransactionTimeout.code()
        } else {
            tracing::info!(transactional_id = %txn.0.as_str(), "refusing transactional producer: transactions are not supported yet");
            ErrorCode::TransactionalIdAuthorizationFailed.code()
        };
        return r;
    }
    match broker.next_producer_id_any().await {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            r.error_code = e.code.code();
        }
    }
    r
}
