//! Kafka framing: a 4-byte big-endian size, then the request header and body.
//!
//! Parsing is two-phase, as in mini-redis: [`check_frame`] looks at the buffered bytes and says
//! whether a whole frame is there (or that its announced size is unacceptable) without allocating;
//! only then does the connection split the frame off and call [`parse_request_header`].

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Result of looking at the start of a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// More bytes are needed; `needed` is the total buffered length that would complete the frame
    /// (or 4 if the size prefix itself is incomplete).
    Incomplete { needed: usize },
    /// A whole frame of `len` bytes (size prefix excluded) is buffered.
    Complete { len: usize },
}

/// Why a frame cannot be accepted. The connection is closed on either, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} exceeds the limit of {max} bytes")]
    TooLarge { size: i64, max: usize },
    #[error("invalid frame size {0}")]
    Invalid(i32),
}

/// Checks whether `buf` starts with a complete frame no larger than `max`.
pub fn check_frame(buf: &[u8], max: usize) -> Result<FrameStatus, FrameError> {
    if buf.len() < 4 {
        return Ok(FrameStatus::Incomplete { needed: 4 });
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // The smallest request header is api key (2) + version (2) + correlation id (4) + client id (2).
    if size < 8 {
        return Err(FrameError::Invalid(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size: size as i64, max });
    }
    if buf.len() < 4 + size {
        return Ok(FrameStatus::Incomplete { needed: 4 + size });
    }
    Ok(FrameStatus::Complete { len: size })
}

/// API key of Produce: the one request that carries bulk data.
const PRODUCE_KEY: i16 = 0;

/// [`check_frame`] with a second, lower limit for every API but Produce: only Produce carries
/// bulk data, and other requests decode into structures many times their wire size (a 100 MiB
/// Metadata request of empty names decodes into gigabytes). The limit applies as soon as the
/// API key has arrived, before the buffer grows for the body.
pub fn check_frame_limits(buf: &[u8], max: usize, max_non_produce: usize) -> Result<FrameStatus, FrameError> {
    let status = check_frame(buf, max)?;
    if buf.len() >= 6 {
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let key = i16::from_be_bytes([buf[4], buf[5]]);
        if key != PRODUCE_KEY && size > max_non_produce {
            return Err(FrameError::TooLarge { size: size as i64, max: max_non_produce });
        }
    }
    Ok(status)
}

/// The fixed prefix of every request header: enough to answer or reject a request even when the
/// rest cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Why a request header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("request too short for a header ({0} bytes)")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header for api key {api_key} version {api_version}: {reason}")]
    Malformed { api_key: i16, api_version: i16, reason: String },
}

/// Reads api key, version and correlation id from the start of a frame body.
pub fn peek_prefix(body: &[u8]) -> Result<HeaderPrefix, HeaderError> {
    if body.len() < 8 {
        return Err(HeaderError::TooShort(body.len()));
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([body[0], body[1]]),
        api_version: i16::from_be_bytes([body[2], body[3]]),
        correlation_id: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    })
}

/// Decodes the request header at the start of `body`, advancing it to the request body.
pub fn parse_request_header(body: &mut Bytes) -> Result<(ApiKey, RequestHeader), HeaderError> {
    let prefix = peek_prefix(body)?;
    let key = ApiKey::try_from(prefix.api_key).map_err(|_| HeaderError::UnknownApiKey(prefix.api_key))?;
    let header_version = key.request_header_version(prefix.api_version);
    let header = RequestHeader::decode(body, header_version).map_err(|e| HeaderError::Malformed {
        api_key: prefix.api_key,
        api_version: prefix.api_version,
        reason: e.to_string(),
    })?;
    Ok((key, header))
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_produce_requests_have_their_own_limit() {
        let frame = |key: i16, size: i32| {
            let mut b = size.to_be_bytes().to_vec();
            b.extend_from_slice(&key.to_be_bytes());
            b
        };
        // Metadata (3) over the lower limit: refused before its body arrives
        assert!(matches!(check_frame_limits(&frame(3, 2 << 20), 100 << 20, 1 << 20), Err(FrameError::TooLarge { .. })));
        // Produce (0) only by the frame limit
        assert!(matches!(check_frame_limits(&frame(0, 2 << 20), 100 << 20, 1 << 20), Ok(FrameStatus::Incomplete { .. })));
        assert!(matches!(check_frame_limits(&frame(0, 200 << 20), 100 << 20, 1 << 20), Err(FrameError::TooLarge { .. })));
        // before the key arrives there is nothing to tell
        assert!(matches!(check_frame_limits(&(2i32 << 20).to_be_bytes(), 100 << 20, 1 << 20), Ok(FrameStatus::Incomplete { .. })));
    }

    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{StrBytes, encode_request_header_into_buffer};
    use proptest::prelude::*;

    #[test]
    fn incomplete_then_complete() {
        assert_eq!(check_frame(&[0, 0], 100), Ok(FrameStatus::Incomplete { needed: 4 }));
        let mut f = vec![0, 0, 0, 10];
        f.extend_from_slice(&[0; 5]);
        assert_eq!(check_frame(&f, 100), Ok(FrameStatus::Incomplete { needed: 14 }));
        f.extend_from_slice(&[0; 5]);
        assert_eq!(check_frame(&f, 100), Ok(FrameStatus::Complete { len: 10 }));
    }

    #[test]
    fn two_gib_frame_is_refused_before_allocation() {
        let f = [0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(check_frame(&f, DEFAULT_MAX_REQUEST_BYTES), Err(FrameError::TooLarge { .. })));
        let neg = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(check_frame(&neg, DEFAULT_MAX_REQUEST_BYTES), Err(FrameError::Invalid(-1)));
    }

    #[test]
    fn header_round_trip_and_unknown_key() {
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::Metadata as i16;
        h.request_api_version = 12;
        h.correlation_id = 77;
        h.client_id = Some(StrBytes::from_static_str("c"));
        let mut buf = BytesMut::new();
        encode_request_header_into_buffer(&mut buf, &h).unwrap();
        let mut b = buf.freeze();
        let (key, parsed) = parse_request_header(&mut b).unwrap();
        assert_eq!(key, ApiKey::Metadata);
        assert_eq!(parsed.correlation_id, 77);
        assert!(b.is_empty());

        let mut unknown = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 5, 0xff, 0xff]);
        assert_eq!(parse_request_header(&mut unknown), Err(HeaderError::UnknownApiKey(0x7f00)));
    }

    /// A forged array length must be a decode error, not a 150 GB reservation that aborts the
    /// process (fixed by the vendored kafka-protocol patch, vendor/kafka-protocol/PATCHED.md).
    #[test]
    fn forged_array_length_is_an_error() {
        // Metadata v8 body: topics array of 0x7fffffff entries, then nothing.
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(kafka_protocol::messages::RequestKind::decode(ApiKey::Metadata, &mut body, 8).is_err());
        // Produce v9 (flexible): transactional id null, acks, timeout, compact array of ~2^32 topics.
        let mut body = Bytes::from_static(&[0x00, 0xff, 0xff, 0x00, 0x00, 0x27, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(kafka_protocol::messages::RequestKind::decode(ApiKey::Produce, &mut body, 9).is_err());
    }

    proptest! {
        /// Random and truncated frames never panic the decoder; they give an error or a header.
        #[test]
        fn random_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_frame(&data, 1 << 20);
            let mut b = Bytes::from(data.clone());
            if let Ok((key, header)) = parse_request_header(&mut b) {
                let _ = kafka_protocol::messages::RequestKind::decode(key, &mut b, header.request_api_version);
            }
        }

        #[test]
        fn truncated_valid_header_is_an_error_not_a_panic(cut in 0usize..20) {
            let mut h = RequestHeader::default();
            h.request_api_key = ApiKey::Produce as i16;
            h.request_api_version = 9;
            h.client_id = Some(StrBytes::from_static_str("client-x"));
            let mut buf = BytesMut::new();
            encode_request_header_into_buffer(&mut buf, &h).unwrap();
            let cut = cut.min(buf.len());
            let mut b = buf.freeze().slice(..cut);
            let _ = parse_request_header(&mut b);
        }
    }
}
