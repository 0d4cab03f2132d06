"""pytest fixtures for suites that need an S3 server. Import them into a test module:

    from sediment_harness.s3.fixtures import s3_server, s3_factory, localstack_session  # noqa: F401

    @pytest.mark.parametrize("s3_server", ["moto", "seaweedfs", "localstack"], indirect=True)
    def test_x(s3_server): ...

moto and SeaweedFS start per test (about 2 s); LocalStack once per session (per xdist worker).
Each test gets a fresh bucket name from `s3_server.bucket(...)`. Servers are stopped at
teardown; their log tails are printed then, so pytest shows them with a failed test.
"""

from __future__ import annotations

import pytest

from . import SERVERS
from .base import S3Server


@pytest.fixture(scope="session")
def localstack_session(tmp_path_factory):
    s = SERVERS["localstack"](tmp_path_factory.mktemp("localstack"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def s3_factory(tmp_path):
    made: list[S3Server] = []

    def make(kind: str, start: bool = True) -> S3Server:
        s = SERVERS[kind](tmp_path / f"{kind}{len(made) + 1}")
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in made:
        print(f"----- {s.name} log tail ({s.log_path}) -----\n{s.log_tail(40)}")
        s.stop()


@pytest.fixture
def s3_server(request, s3_factory):
    kind = getattr(request, "param", "moto")
    if kind == "localstack":
        s = request.getfixturevalue("localstack_session")
        yield s
        print(f"----- localstack log tail ({s.log_path}) -----\n{s.log_tail(40)}")
        return
    yield s3_factory(kind)
