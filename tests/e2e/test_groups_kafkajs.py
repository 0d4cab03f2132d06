"""Consumer groups, second run: kafkajs 2.2.4 members (Node.js processes) in one group on a
6-partition topic, one SIGKILLed and another joining mid-stream; the same exactly-once check
as the Python clients (groups_common.py). kafkajs names its assignor "RoundRobinAssigner", so
its members cannot share a group with the other clients.

The npm packages (tests/node/package-lock.json) are installed here with `npm ci` the first time
this suite runs on a machine."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

import groups_common as gc
from sediment_harness.clients import create_topic

PARTS = 6


@pytest.fixture(scope="session")
def kafkajs():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the kafkajs suite")
    marker = gc.NODE_DIR / "node_modules" / "kafkajs" / "package.json"
    if not marker.exists():
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=gc.NODE_DIR,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    return gc.NODE_DIR


@pytest.mark.timeout(300)
def test_kafkajs_group_one_killed_one_joins(kafkajs, broker, topic_name, tmp_path):
    create_topic(broker.bootstrap, topic_name, PARTS)
    group = f"{topic_name}-g"
    members = [gc.node_member(tmp_path, f"kafkajs-{i}", broker.bootstrap, group, topic_name) for i in (1, 2, 3)]
    late = gc.node_member(tmp_path, "kafkajs-4", broker.bootstrap, group, topic_name)
    prod = gc.BackgroundProducer(broker.bootstrap, topic_name, PARTS, total=2400, rate=150).start()
    try:
        for m in members:
            m.start()
        deadline = time.monotonic() + 60
        while not all(m.assigned() for m in members):
            assert time.monotonic() < deadline, [m.assigned() for m in members]
            for m in members:
                assert m.running(), f"{m.name} exited\n{m.tail()}"
            time.sleep(0.2)
        time.sleep(2)
        members[1].kill()
        time.sleep(3)
        late.start()
        ends = prod.join()
        gc.wait_all_committed(broker.bootstrap, group, topic_name, ends, [members[0], members[2], late])
    finally:
        for m in members + [late]:
            m.stop()
    verdict = gc.check_logs(members + [late], ends)
    late_committed = sum(1 for v in verdict.committed_by.values() if v == [late.name])
    print(f"kafkajs: {sum(len(v) for v in verdict.committed_by.values())} committed, "
          f"{late_committed} by the late member, {verdict.reprocessed} processed twice")
    assert late.events("A"), "the late member joined the group"
    assert not any(m.events("X") for m in members + [late]), "a kafkajs consumer crashed"
