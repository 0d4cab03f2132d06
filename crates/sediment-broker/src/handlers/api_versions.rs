//! ApiVersions: answered from `sediment_protocol::versions::SUPPORTED` only.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};
use sediment_protocol::{ErrorCode, versions};

fn api_keys() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|s| {
            let mut a = ApiVersion::default();
            a.api_key = s.key as i16;
            a.min_version = s.advertised_min;
            a.max_version = s.max;
            a
        })
        .collect()
}

/// The response. Default-valued tagged fields (features) are left out, as Apache Kafka does:
/// librdkafka 2.0 (Debian's kcat) cannot parse them.
pub fn handle(_req: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = 0;
    r.api_keys = api_keys();
    r.finalized_features_epoch = -1;
    r
}

/// The v0-encoded answer to an ApiVersions request of a version we do not serve (KIP-511).
pub fn unsupported() -> ResponseKind {
    let mut r = ApiVersionsResponse::default();
    r.error_code = ErrorCode::UnsupportedVersion.code();
    r.api_keys = api_keys();
    r.finalized_features_epoch = -1;
    ResponseKind::ApiVersions(r)
}
