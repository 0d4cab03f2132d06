//! A Kafka request frame body (the bytes after the 4-byte size prefix) through the broker's
//! request path, in the order `sediment-broker/src/server.rs` `process()` runs it: peek the
//! fixed prefix, look the api key up, check the version against the served table, parse the
//! request header, decode the body. A Produce request's records then go through the
//! validation the produce handler runs on each partition's batch.
//!
//! Input: the frame body, as a client sends it. A random prefix rarely names a served api and
//! version, so an input whose prefix does not is run a second time with its first four bytes
//! steered onto a served (api key, version) pair: every input reaches a body decoder, and a
//! real frame of a served version is decoded exactly as sent.

#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;
use sediment_protocol::batch::{self, ValidationMode};
use sediment_protocol::{frame, versions};

/// Kafka's `max.message.bytes` default, the produce handler's limit for one batch.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if process(Bytes::copy_from_slice(data)) || data.len() < 8 {
        return;
    }
    let served = &versions::SUPPORTED[usize::from(u16::from_be_bytes([data[0], data[1]])) % versions::SUPPORTED.len()];
    let span = (served.max - served.min + 1) as u16;
    let version = served.min + (u16::from_be_bytes([data[2], data[3]]) % span) as i16;
    let mut steered = data.to_vec();
    steered[0..2].copy_from_slice(&(served.key as i16).to_be_bytes());
    steered[2..4].copy_from_slice(&version.to_be_bytes());
    assert!(process(Bytes::from(steered)), "{:?} v{version} is in the served table", served.key);
});

/// The broker's decoding of one request. Returns whether the prefix named a served api and
/// version, i.e. whether the header and body decoders ran.
fn process(mut body: Bytes) -> bool {
    let Ok(prefix) = frame::peek_prefix(&body) else { return false };
    let Ok(key) = ApiKey::try_from(prefix.api_key) else { return false };
    if !versions::is_served(key, prefix.api_version) {
        // closed, or for ApiVersions answered from the prefix alone (KIP-511)
        return false;
    }
    let Ok((parsed_key, header)) = frame::parse_request_header(&mut body) else { return true };
    // the header decoder reads the same fixed prefix the broker routed on
    assert_eq!(parsed_key, key);
    assert_eq!(
        (header.request_api_key, header.request_api_version, header.correlation_id),
        (prefix.api_key, prefix.api_version, prefix.correlation_id)
    );
    let version = header.request_api_version;
    let Ok(request) = RequestKind::decode(key, &mut body, version) else { return true };
    if let RequestKind::Produce(produce) = &request {
        for topic in &produce.topic_data {
            for partition in &topic.partition_data {
                if let Some(records) = &partition.records {
                    let _ = batch::validate_produce_records(records, MAX_MESSAGE_BYTES, ValidationMode::Strict);
                }
            }
        }
    }
    true
}
