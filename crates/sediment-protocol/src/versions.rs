//! The APIs and versions Sediment implements. `ApiVersions` is answered from this table and
//! nothing else: an API that is not here is not advertised, and a request for it closes the
//! connection, as Apache Kafka does for an unknown key.

use kafka_protocol::messages::ApiKey;

/// One implemented API and the version range Sediment accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    pub key: ApiKey,
    /// Lowest version advertised in ApiVersions.
    pub advertised_min: i16,
    /// Lowest version actually served (differs from `advertised_min` only for Produce).
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiSupport {
    ApiSupport { key, advertised_min: min, min, max }
}

/// Implemented APIs. Minimums follow the Kafka 4.0 baseline (KIP-896).
pub const SUPPORTED: &[ApiSupport] = &[
    // KAFKA-18659: librdkafka refuses to send compressed batches unless Produce v0 is advertised,
    // so Kafka 4.0 advertises 0 while serving only v3+. Sediment does the same.
    ApiSupport { key: ApiKey::Produce, advertised_min: 0, min: 3, max: 13 },
    api(ApiKey::Fetch, 4, 18),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    // v6 adds two-phase-commit transactions (KIP-939), which need transactions first.
    api(ApiKey::InitProducerId, 0, 5),
    // Consumer groups, classic protocol (the broker's group coordinator). Ranges are
    // kafka-protocol's (Kafka 4.1 schemas, which already drop what KIP-896 removed: OffsetCommit
    // v0-1, OffsetFetch v0). FindCoordinator v6 may name share groups (key type 2), answered
    // INVALID_REQUEST as by a Kafka broker without share groups; DescribeGroups v6 answers
    // GROUP_ID_NOT_FOUND for unknown groups (KIP-1043).
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    // Cluster membership (KIP-853; every broker is a metadata voter): `sediment cluster
    // add-broker|remove-broker`.
    api(ApiKey::AddRaftVoter, 0, 0),
    api(ApiKey::RemoveRaftVoter, 0, 0),
    // Moving replicas between brokers (kafka-reassign-partitions, remove-broker's drain).
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
];

/// The support entry for `key`, if Sediment implements it.
pub fn support(key: ApiKey) -> Option<&'static ApiSupport> {
    SUPPORTED.iter().find(|s| s.key == key)
}

/// Whether a request of this key and version is served.
pub fn is_served(key: ApiKey, version: i16) -> bool {
    support(key).is_some_and(|s| version >= s.min && version <= s.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every served range must be decodable by the protocol crate.
    #[test]
    fn table_within_protocol_crate_ranges() {
        for s in SUPPORTED {
            let valid = s.key.valid_versions();
            assert!(s.min >= valid.min && s.max <= valid.max, "{:?} {}..{} outside {}", s.key, s.min, s.max, valid);
            assert!(s.advertised_min <= s.min);
        }
    }

    #[test]
    fn produce_quirk() {
        let p = support(ApiKey::Produce).unwrap();
        assert_eq!(p.advertised_min, 0);
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert!(!is_served(ApiKey::ConsumerGroupHeartbeat, 0));
    }
}
