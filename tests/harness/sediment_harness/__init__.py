"""Test harness shared by every Sediment test suite.

Modules:
    broker         Broker: one `sediment serve` process (ports, data dir, log,
                   start/stop/kill/restart, readiness by ApiVersions)
    kafka_wire     raw Kafka frames for bad-input and wire-level assertions
    clients        confluent-kafka helpers (admin, producer, consumer, Witness)
    ports          free 127.0.0.1 ports
    powerloss      LazyDisk (a FUSE mount that forgets unsynced writes on a power cut) and
                   power_cut(brokers, disks)
    proxy          Kafka-aware TCP proxy for fault injection (dropped responses, delay)
    pytest_plugin  fixtures (sediment_bin, broker_factory, broker) and log tails
                   on failure
    s3             S3-compatible servers on loopback (moto, SeaweedFS, LocalStack) and
                   their pytest fixtures, for the tiering suites

Clusters (the Raft issue) are several Brokers sharing a --peers list built
from Broker.allocate_ports() of each node.
"""

from .broker import Broker, BrokerError, default_binary
from .ports import free_port, free_ports

__all__ = ["Broker", "BrokerError", "default_binary", "free_port", "free_ports"]
