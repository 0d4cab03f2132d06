"""Topic and broker configs through DescribeConfigs, IncrementalAlterConfigs
and AlterConfigs: every config carries a value, a default flag and a source."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
)

from sediment_harness.clients import admin, create_topic

TOPIC_CONFIGS = [
    "cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
    "max.message.bytes", "min.insync.replicas",
]
INTEGER_CONFIGS = [c for c in TOPIC_CONFIGS if c != "cleanup.policy"]


def _describe(a, rtype, name):
    res = ConfigResource(rtype, name)
    return a.describe_configs([res], request_timeout=15)[res].result(30)


def _topic(a, name):
    return _describe(a, ConfigResource.Type.TOPIC, name)


def _incremental(a, topic, *entries, validate_only=False):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=list(entries))
    return a.incremental_alter_configs([res], validate_only=validate_only, request_timeout=15)[res].result(30)


def _set(name, value):
    return ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)


def _delete(name):
    return ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)


def _src(e):
    """ConfigEntry.source as an int (the C layer may hand out ints or enums)."""
    return e.source.value if isinstance(e.source, ConfigSource) else int(e.source)


DEFAULT = ConfigSource.DEFAULT_CONFIG.value
DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def _check_entries(cfg):
    assert cfg, "DescribeConfigs returned no configs"
    for name, e in cfg.items():
        assert e.name == name
        assert _src(e) != ConfigSource.UNKNOWN_CONFIG.value, f"{name}: source UNKNOWN"
        assert e.is_default == (_src(e) == DEFAULT), (
            f"{name}: is_default={e.is_default} but source={_src(e)}"
        )
        if not e.is_sensitive:
            assert e.value is not None, f"{name}: no value"


def test_describe_topic_defaults(kafka, topic_name):
    a = admin(kafka.bootstrap)
    create_topic(kafka.bootstrap, topic_name, 1, client=a)
    cfg = _topic(a, topic_name)
    _check_entries(cfg)
    for name in TOPIC_CONFIGS:
        assert name in cfg, f"{name} missing from DescribeConfigs"
        assert cfg[name].is_default, f"{name} should be a default on a fresh topic"
        assert _src(cfg[name]) == DEFAULT
    for name in INTEGER_CONFIGS:
        int(cfg[name].value)
    assert cfg["cleanup.policy"].value == "delete", "Kafka's default cleanup.policy"


def test_create_with_config_then_incremental_alter(kafka, topic_name):
    a = admin(kafka.bootstrap)
    create_topic(kafka.bootstrap, topic_name, 1, config={"retention.ms": "3600000"}, client=a)
    defaults = _topic(a, f"{topic_name}")
    assert defaults["retention.ms"].value == "3600000"
    assert _src(defaults["retention.ms"]) == DYNAMIC_TOPIC
    assert not defaults["retention.ms"].is_default

    other = f"{topic_name}-plain"
    create_topic(kafka.bootstrap, other, 1, client=a)
    default_retention = _topic(a, other)["retention.ms"].value
    default_segment_ms = _topic(a, other)["segment.ms"].value

    _incremental(a, topic_name, _set("segment.ms", "7200000"), _set("max.message.bytes", "2000000"),
                 _delete("retention.ms"))
    cfg = _topic(a, topic_name)
    _check_entries(cfg)
    assert (cfg["segment.ms"].value, _src(cfg["segment.ms"])) == ("7200000", DYNAMIC_TOPIC)
    assert cfg["max.message.bytes"].value == "2000000"
    assert (cfg["retention.ms"].value, _src(cfg["retention.ms"])) == (default_retention, DEFAULT)
    assert cfg["retention.ms"].is_default

    # validate_only checks but changes nothing
    _incremental(a, topic_name, _set("segment.ms", "1"), validate_only=True)
    assert _topic(a, topic_name)["segment.ms"].value == "7200000"
    # the other topic is untouched
    assert _topic(a, other)["segment.ms"].value == default_segment_ms


def test_alter_configs_replaces_the_whole_set(kafka, topic_name):
    """Legacy AlterConfigs sets exactly the given configs; the rest revert to defaults."""
    a = admin(kafka.bootstrap)
    create_topic(kafka.bootstrap, topic_name, 1, config={"retention.ms": "3600000", "segment.ms": "7200000"},
                 client=a)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, set_config={"retention.bytes": "123456789"})
    a.alter_configs([res], request_timeout=15)[res].result(30)
    cfg = _topic(a, topic_name)
    _check_entries(cfg)
    assert (cfg["retention.bytes"].value, _src(cfg["retention.bytes"])) == ("123456789", DYNAMIC_TOPIC)
    assert cfg["retention.ms"].is_default and cfg["segment.ms"].is_default


@pytest.mark.parametrize("entry,expected", [
    (("no.such.config", "1"), KafkaError.INVALID_CONFIG),
    (("retention.ms", "soon"), KafkaError.INVALID_CONFIG),
    (("segment.bytes", "-5"), KafkaError.INVALID_CONFIG),
    (("segment.bytes", "1048575"), KafkaError.INVALID_CONFIG),
    (("cleanup.policy", "shred"), KafkaError.INVALID_CONFIG),
], ids=["unknown-key", "not-a-number", "negative-segment", "segment-below-1MiB", "bad-policy"])
def test_invalid_alter_is_rejected_and_changes_nothing(kafka, topic_name, entry, expected):
    a = admin(kafka.bootstrap)
    create_topic(kafka.bootstrap, topic_name, 1, client=a)
    before = {k: v.value for k, v in _topic(a, topic_name).items()}
    with pytest.raises(KafkaException) as ei:
        # one bad entry next to a good one: the whole request fails
        _incremental(a, topic_name, _set(*entry), _set("max.message.bytes", "999999"))
    assert ei.value.args[0].code() == expected
    after = {k: v.value for k, v in _topic(a, topic_name).items()}
    assert after == before, "a rejected alter must not apply any part of it"


def test_alter_unknown_topic(kafka, topic_name):
    a = admin(kafka.bootstrap)
    with pytest.raises(KafkaException) as ei:
        _incremental(a, f"{topic_name}-missing", _set("retention.ms", "1000"))
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    res = ConfigResource(ConfigResource.Type.TOPIC, f"{topic_name}-missing")
    with pytest.raises(KafkaException) as ei:
        a.describe_configs([res], request_timeout=15)[res].result(30)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(kafka):
    a = admin(kafka.bootstrap)
    cfg = _describe(a, ConfigResource.Type.BROKER, "1")
    _check_entries(cfg)
    assert cfg["num.partitions"].value == "1"
    assert cfg["auto.create.topics.enable"].value == "true"
