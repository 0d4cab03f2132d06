"""ApiVersions, Metadata and DescribeCluster as seen on the wire and by clients."""

from confluent_kafka.admin import AdminClient

from sediment_harness import kafka_wire as kw
from sediment_harness.clients import BASE_CONF

# The APIs issue 2 implements, with the lowest version Kafka 4.0 still accepts
# (KIP-896); the broker may support lower ones but must reach at least these
# minima and advertise a sane range.
REQUIRED_APIS = {
    kw.PRODUCE: 3,
    kw.FETCH: 4,
    kw.LIST_OFFSETS: 1,
    kw.METADATA: 0,
    kw.API_VERSIONS: 0,
    kw.CREATE_TOPICS: 2,
    kw.DELETE_TOPICS: 1,
    kw.DELETE_RECORDS: 0,
    kw.DESCRIBE_CONFIGS: 1,
    kw.ALTER_CONFIGS: 0,
    kw.CREATE_PARTITIONS: 0,
    kw.INCREMENTAL_ALTER_CONFIGS: 0,
    kw.DESCRIBE_CLUSTER: 0,
}

# Controller / inter-broker APIs a Kafka broker never advertises to clients.
INTERNAL_APIS = {
    4: "LeaderAndIsr", 5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown",
    52: "Vote", 53: "BeginQuorumEpoch", 54: "EndQuorumEpoch", 56: "AlterPartition",
    58: "Envelope", 59: "FetchSnapshot", 62: "BrokerRegistration", 63: "BrokerHeartbeat",
    67: "AllocateProducerIds", 70: "ControllerRegistration", 73: "AssignReplicasToDirs",
    82: "UpdateRaftVoter",
}


def test_api_versions_v0_lists_the_implemented_apis(broker):
    with kw.Connection.to(broker.bootstrap) as c:
        r = c.request(kw.API_VERSIONS, 0, b"")
        resp = kw.parse_api_versions_v0(r)
    assert resp.error_code == 0
    assert resp.trailing_bytes == 0
    for key, min_needed in REQUIRED_APIS.items():
        assert key in resp.api_keys, f"api key {key} not advertised"
        lo, hi = resp.api_keys[key]
        assert 0 <= lo <= hi, f"api {key}: bad range {lo}..{hi}"
        assert hi >= min_needed, f"api {key}: max v{hi} below the Kafka 4.0 baseline v{min_needed}"
    # KAFKA-18659: librdkafka only compresses when Produce advertises v0+
    assert resp.api_keys[kw.PRODUCE][0] == 0, "Produce must advertise min version 0 (KAFKA-18659)"
    # the versions the raw-wire tests of this suite use are inside the ranges
    for key, v in [(kw.PRODUCE, 9), (kw.FETCH, 12), (kw.METADATA, 8), (kw.API_VERSIONS, 3)]:
        lo, hi = resp.api_keys[key]
        assert lo <= v <= hi, f"api {key} v{v} outside advertised {lo}..{hi}"
    leaked = {INTERNAL_APIS[k] for k in resp.api_keys if k in INTERNAL_APIS}
    assert not leaked, f"controller-internal APIs advertised: {sorted(leaked)}"


def test_api_versions_v3_matches_v0_and_has_no_default_tagged_fields(broker):
    """kcat (librdkafka 2.0.2) cannot parse a v3 response carrying
    default-valued tagged fields; Kafka leaves them out."""
    with kw.Connection.to(broker.bootstrap) as c:
        v0 = kw.parse_api_versions_v0(c.request(kw.API_VERSIONS, 0, b""))
        # request header v2 (flexible), response header v0 (ApiVersions special case)
        r = c.request(kw.API_VERSIONS, 3, kw.api_versions_request_v3(),
                      flexible_request=True, flexible_response=False)
        v3 = kw.parse_api_versions_v3(r)
    assert v3.error_code == 0
    assert v3.trailing_bytes == 0
    assert v3.api_keys == v0.api_keys
    tags = v3.tagged_fields
    # tag 0 SupportedFeatures, 1 FinalizedFeaturesEpoch, 2 FinalizedFeatures, 3 ZkMigrationReady
    if 0 in tags:
        assert tags[0] != b"\x01", "empty SupportedFeatures written as a tagged field"
    if 1 in tags:
        assert tags[1] != b"\xff\xff\xff\xff\xff\xff\xff\xff", "default FinalizedFeaturesEpoch (-1) written"
    if 2 in tags:
        assert tags[2] != b"\x01", "empty FinalizedFeatures written as a tagged field"
    if 3 in tags:
        assert tags[3] != b"\x00", "default ZkMigrationReady (false) written"


def test_unsupported_api_versions_version_gets_v0_error_with_ranges(broker):
    """KIP-511: an ApiVersions request newer than the broker knows is answered
    with UNSUPPORTED_VERSION in the v0 format, carrying the supported ranges so
    the client can retry with a version it shares."""
    with kw.Connection.to(broker.bootstrap) as c:
        r = c.request(kw.API_VERSIONS, 127, b"\x00garbage-the-broker-must-not-parse")
        resp = kw.parse_api_versions_v0(r)
        assert resp.error_code == kw.UNSUPPORTED_VERSION
        assert kw.API_VERSIONS in resp.api_keys
        lo, hi = resp.api_keys[kw.API_VERSIONS]
        assert lo == 0 and hi >= 3
        # the connection stays usable
        assert kw.API_VERSIONS in kw.api_versions(c)


def test_metadata_names_node_1_on_the_listener(broker):
    with kw.Connection.to(broker.bootstrap) as c:
        md = kw.metadata(c, None)
    assert [(b[0], b[1], b[2]) for b in md.brokers] == [(1, "127.0.0.1", broker.port)]
    assert md.controller_id == 1
    assert md.cluster_id, "cluster id should be set"


def test_describe_cluster(broker):
    a = AdminClient({"bootstrap.servers": broker.bootstrap, **BASE_CONF})
    desc = a.describe_cluster(request_timeout=15).result(30)
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, "127.0.0.1", broker.port)]
    assert desc.controller is not None and desc.controller.id == 1
    assert desc.cluster_id
    # the same cluster id in Metadata and DescribeCluster
    with kw.Connection.to(broker.bootstrap) as c:
        assert kw.metadata(c, None).cluster_id == desc.cluster_id


def test_the_readme_api_table_is_the_api_versions_answer(broker):
    """README.md's "APIs and versions" table lists exactly the APIs ApiVersions advertises,
    each with the advertised range (the "advertised" note where it differs from what is
    served)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### APIs and versions", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for line in section.splitlines():
        m = re.match(r"\| (\w+) \| (\d+) \| (\d+)–(\d+)(?: \(advertised (\d+)–(\d+)\))? \|", line) or \
            re.match(r"\| (\w+) \| (\d+) \| (\d+)()(?: \(advertised (\d+)–(\d+)\))? \|", line)
        if not m:
            continue
        name, key, lo, hi, alo, ahi = m.groups()
        hi = hi or lo
        listed[int(key)] = (name, (int(alo), int(ahi)) if alo else (int(lo), int(hi)))
    assert len(listed) > 20, "the README's API table was not found"
    with kw.Connection.to(broker.bootstrap) as c:
        advertised = kw.api_versions(c)
    assert set(listed) == set(advertised), (
        f"in the README only: {sorted(set(listed) - set(advertised))}, "
        f"advertised only: {sorted(set(advertised) - set(listed))}")
    wrong = {name: (rng, advertised[key]) for key, (name, rng) in listed.items() if rng != tuple(advertised[key])}
    assert not wrong, f"README range vs advertised: {wrong}"
