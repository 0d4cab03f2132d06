"""S3Server: the common shape of the S3-compatible servers the tiering suites run against.

    s = MotoServer(workdir).start()      # free 127.0.0.1 ports, waits for an authenticated ListBuckets
    s.bucket("b1")                       # creates it (idempotent), returns the name
    Broker(..., env=s.env(), object_store=f"s3://b1/prefix")
    s.client()                           # a boto3 S3 client for assertions
    s.stop()                             # SIGTERM, waits, checks the exit
    with s.outage(): ...                 # the server is unreachable inside the block

Every server binds 127.0.0.1 only, logs to `<workdir>/<name>.log` (appended across
restarts), and dies with the test process (PR_SET_PDEATHSIG). Readiness is an authenticated
ListBuckets, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from ..broker import _die_with_parent


class S3ServerError(AssertionError):
    pass


def venv_bin(name: str) -> Path:
    """An executable next to the running Python (the test venv's bin directory)."""
    p = Path(sys.executable).parent / name
    if not p.exists():
        raise S3ServerError(f"{name} not found next to {sys.executable}: install tests/requirements.txt")
    return p


class S3Server:
    name = "s3"
    region = "us-east-1"
    access_key = "sedimenttest"
    secret_key = "sedimenttestsecret"
    start_timeout = 60.0
    # how outage() makes the server unreachable: "stop" (process gone, connection refused,
    # state kept on disk) or "freeze" (SIGSTOP: connections hang, state kept in memory)
    outage_mode = "freeze"

    def __init__(self, workdir: Path | str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.port: int = 0
        self.exit_codes: list[int] = []

    # ---- to implement ----------------------------------------------------

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def process_env(self) -> Mapping[str, str]:
        return {}

    def allocate_ports(self) -> None:
        raise NotImplementedError

    # ---- addresses ---------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS_* variables a broker needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          connect_timeout=3, read_timeout=30),
        )

    def bucket(self, name: str) -> str:
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        except c.exceptions.BucketAlreadyExists:
            pass
        return name

    # ---- lifecycle -----------------------------------------------------------

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, timeout: Optional[float] = None) -> "S3Server":
        if self.running():
            raise S3ServerError(f"{self.name} already running")
        if not self.port:
            self.allocate_ports()
        env = dict(os.environ)
        env.update(self.process_env())
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== harness: start {self.name}: {' '.join(map(str, self.command()))}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(c) for c in self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready(timeout or self.start_timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.exit_codes.append(self.proc.returncode)
                raise S3ServerError(f"{self.name} exited with {self.proc.returncode} during start-up\n{self.log_tail(40)}")
            try:
                self.client().list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
                last = e
            time.sleep(0.2)
        self.kill()
        raise S3ServerError(f"{self.name} did not answer ListBuckets within {timeout}s ({last})\n{self.log_tail(40)}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (SIGCONT first if frozen) and wait; killed if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.exit_codes.append(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.exit_codes.append(self.proc.returncode)

    def freeze(self) -> None:
        """SIGSTOP the server (and its children): requests hang until thaw()."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The server is unreachable inside the block (stopped or frozen, by `outage_mode`),
        and back with its data afterwards."""
        if self.outage_mode == "stop":
            self.stop()
            try:
                yield
            finally:
                self.start()
        else:
            self.freeze()
            try:
                yield
            finally:
                self.thaw()

    def reset(self) -> None:
        """Deletes every bucket and object (between tests sharing a server)."""
        c = self.client()
        for b in c.list_buckets().get("Buckets", []):
            for page in c.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    c.delete_objects(Bucket=b["Name"], Delete={"Objects": keys})
            c.delete_bucket(Bucket=b["Name"])

    # ---- logs ------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> "S3Server":
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint_url} pid={self.pid}>"
