"""End-to-end suites, run against the built binary over TCP with real clients.
The harness (Broker, kafka_wire, clients, fixtures) lives in tests/harness."""

import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))

from sediment_harness.pytest_plugin import *  # noqa: E402,F401,F403


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name derived from the test name."""
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:6]}"
