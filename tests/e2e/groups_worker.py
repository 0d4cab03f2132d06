"""One consumer group member in its own process, for test_groups_consume.py (a member must be
a process so the test can SIGKILL it).

    python groups_worker.py --client confluent|kafka-python|aiokafka --bootstrap HOST:PORT \
        --group G --topic T --log FILE [--instance ID] [--session-ms 6000]

The member consumes, "processes" each record by logging it, then commits the next offset of
every partition it processed, synchronously, and logs the outcome. Log lines (line-buffered,
so a SIGKILL loses at most the line being written):

    <unix time> S <client>          started
    <unix time> A p,p,...           partitions assigned (the whole new assignment)
    <unix time> V p,p,...           partitions revoked
    <unix time> P <p> <offset>      record processed
    <unix time> I <p> <offset>      about to commit <offset> (the next offset) of partition p
    <unix time> C <p> <offset>      that commit succeeded
    <unix time> F <p> <offset> <e>  that commit failed (the records stay uncommitted)
    <unix time> E                   closed cleanly (SIGTERM)

A record counts as committed by this member when a C line of its partition at a higher offset
follows its P line with no V/F of the partition, and no new assignment (A), in between;
check_logs() in groups_common.py does the bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

STOP = False


def _stop(*_):
    global STOP
    STOP = True


class Log:
    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)

    def __call__(self, *parts) -> None:
        self.f.write(" ".join([f"{time.time():.6f}", *map(str, parts)]) + "\n")


def parts_str(ps) -> str:
    return ",".join(str(p) for p in sorted(ps)) or "-"


def run_confluent(a, log: Log) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "client.id": f"confluent-{a.name}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": a.session_ms,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "roundrobin",
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if a.instance:
        conf["group.instance.id"] = a.instance
    c = Consumer(conf)

    def on_assign(_c, ps):
        log("A", parts_str(p.partition for p in ps))

    def on_revoke(_c, ps):
        log("V", parts_str(p.partition for p in ps))

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    while not STOP:
        msgs = c.consume(num_messages=50, timeout=0.5)
        nxt = {}
        for m in msgs:
            if m.error():
                continue
            log("P", m.partition(), m.offset())
            nxt[m.partition()] = m.offset() + 1
        if not nxt:
            continue
        for p, o in nxt.items():
            log("I", p, o)
        try:
            res = c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in nxt.items()], asynchronous=False)
            for tp in res:
                if tp.error:
                    log("F", tp.partition, tp.offset, tp.error.code())
                else:
                    log("C", tp.partition, tp.offset)
        except KafkaException as e:
            for p, o in nxt.items():
                log("F", p, o, e.args[0].code())
    c.close()


def run_kafka_python(a, log: Log) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            log("V", parts_str(p.partition for p in revoked))

        def on_partitions_assigned(self, assigned):
            log("A", parts_str(p.partition for p in assigned))

    kwargs = dict(
        bootstrap_servers=a.bootstrap,
        group_id=a.group,
        client_id=f"kafka-python-{a.name}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=a.session_ms,
        heartbeat_interval_ms=1000,
        partition_assignment_strategy=[RoundRobinPartitionAssignor],
        metadata_max_age_ms=2000,
    )
    if a.instance:
        kwargs["group_instance_id"] = a.instance
    c = KafkaConsumer(**kwargs)
    c.subscribe([a.topic], listener=Listener())
    while not STOP:
        batch = c.poll(timeout_ms=500, max_records=50)
        nxt = {}
        for tp, msgs in batch.items():
            for m in msgs:
                log("P", m.partition, m.offset)
                nxt[m.partition] = m.offset + 1
        if not nxt:
            continue
        for p, o in nxt.items():
            log("I", p, o)
        try:
            c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "", -1) for p, o in nxt.items()})
            for p, o in nxt.items():
                log("C", p, o)
        except KafkaError as e:
            for p, o in nxt.items():
                log("F", p, o, type(e).__name__)
    c.close()


def run_aiokafka(a, log: Log) -> None:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import KafkaError

    async def main():
        # Processing and committing hold this lock; revocation waits for it, so a rebalance can
        # never complete between processing a batch and committing it.
        lock = asyncio.Lock()

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                async with lock:
                    log("V", parts_str(p.partition for p in revoked))

            async def on_partitions_assigned(self, assigned):
                log("A", parts_str(p.partition for p in assigned))

        kwargs = dict(
            bootstrap_servers=a.bootstrap,
            group_id=a.group,
            client_id=f"aiokafka-{a.name}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=a.session_ms,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=2000,
        )
        if a.instance:
            kwargs["group_instance_id"] = a.instance
        c = AIOKafkaConsumer(**kwargs)
        await c.start()
        c.subscribe([a.topic], listener=Listener())
        try:
            while not STOP:
                batch = await c.getmany(timeout_ms=500, max_records=50)
                if not batch:
                    continue
                async with lock:
                    assigned = {tp.partition for tp in c.assignment()}
                    nxt = {}
                    for tp, msgs in batch.items():
                        if tp.partition not in assigned:
                            continue  # revoked while fetched: not processed
                        for m in msgs:
                            log("P", m.partition, m.offset)
                            nxt[m.partition] = m.offset + 1
                    if not nxt:
                        continue
                    for p, o in nxt.items():
                        log("I", p, o)
                    try:
                        await c.commit({TopicPartition(a.topic, p): o for p, o in nxt.items()})
                        for p, o in nxt.items():
                            log("C", p, o)
                    except KafkaError as e:
                        for p, o in nxt.items():
                            log("F", p, o, type(e).__name__)
        finally:
            await c.stop()

    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=["confluent", "kafka-python", "aiokafka"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--name", default="w")
    ap.add_argument("--instance", default=None)
    ap.add_argument("--session-ms", type=int, default=6000)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log = Log(a.log)
    log("S", a.client)
    {"confluent": run_confluent, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}[a.client](a, log)
    log("E")
    return 0


if __name__ == "__main__":
    sys.exit(main())
