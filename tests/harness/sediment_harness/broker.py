"""A real `sediment serve` process for end-to-end tests.

    b = Broker(workdir, bin=path_to_sediment)
    b.start()            # picks free ports, waits until ApiVersions answers
    b.bootstrap          # "127.0.0.1:PORT", for any Kafka client
    b.kill(); b.restart()  # SIGKILL, then start again on the same dir and ports
    b.stop()             # SIGTERM, waits, asserts exit code 0

Every broker owns a directory (data dir, object store under data/objects,
log file `broker.log`, appended across restarts with a marker line per start).

Clusters (a later issue) build several Brokers with `node_id` and
`peers`/`extra_args`; the ports of every node are known before any starts
(`Broker.allocate_ports()`), so `--peers` can name them all.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Optional, Sequence

from . import kafka_wire
from .ports import free_port

DEFAULT_START_TIMEOUT = 60.0
# a broker may take 20 s handing over leaderships and 30 s finishing in-flight requests; the
# chart gives it 60 s (terminationGracePeriodSeconds)
DEFAULT_STOP_TIMEOUT = 60.0


def default_binary() -> Path:
    """SEDIMENT_BIN, else $CARGO_TARGET_DIR/debug/sediment, else the project's
    shared target dir ($HOME/.cache/sediment-target), else ./target."""
    env = os.environ.get("SEDIMENT_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "debug" / "sediment"
    shared = Path.home() / ".cache" / "sediment-target" / "debug" / "sediment"
    if shared.exists():
        return shared
    return Path(__file__).resolve().parents[3] / "target" / "debug" / "sediment"


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the broker if the test process dies (a pytest-timeout
    or xdist worker crash must not leave brokers behind)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class BrokerError(AssertionError):
    pass


class Broker:
    def __init__(
        self,
        workdir: Path | str,
        *,
        bin: Optional[Path | str] = None,
        node_id: int = 1,
        host: str = "127.0.0.1",
        ports: Optional[Mapping[str, int]] = None,
        extra_args: Sequence[str] = (),
        env: Optional[Mapping[str, Optional[str]]] = None,
        object_store: Optional[str] = None,
        name: Optional[str] = None,
        data_dir: Optional[Path | str] = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin = Path(bin) if bin else default_binary()
        self.node_id = node_id
        self.host = host
        self.name = name or f"broker-{node_id}"
        # elsewhere for a disk of its own (a powerloss.LazyDisk)
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.log_path = self.workdir / "broker.log"
        self.object_store = object_store or f"file://{self.data_dir / 'objects'}"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self._fixed_ports = ports is not None
        self.ports: dict[str, int] = dict(ports) if ports else self.allocate_ports()
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.exit_codes: list[int] = []

    # ---- addresses -------------------------------------------------------

    @staticmethod
    def allocate_ports() -> dict[str, int]:
        return {"kafka": free_port(), "admin": free_port(), "raft": free_port()}

    @property
    def port(self) -> int:
        return self.ports["kafka"]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.ports['kafka']}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.ports['admin']}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def args(self) -> list[str]:
        return [
            str(self.bin),
            "serve",
            "--node-id", str(self.node_id),
            "--listen", f"{self.host}:{self.ports['kafka']}",
            "--admin-listen", f"{self.host}:{self.ports['admin']}",
            "--raft-listen", f"{self.host}:{self.ports['raft']}",
            "--data-dir", str(self.data_dir),
            "--object-store", self.object_store,
            *self.extra_args,
        ]

    # ---- lifecycle -------------------------------------------------------

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> "Broker":
        """Start and wait until the Kafka port answers ApiVersions.

        On the very first start a bind race (someone took a port between
        picking and binding) is retried with fresh ports, unless ports were
        given explicitly."""
        if self.running():
            raise BrokerError(f"{self.name} already running")
        if not self.bin.exists():
            raise BrokerError(f"sediment binary not found at {self.bin} (set SEDIMENT_BIN or build it)")
        attempts = 3 if (self.starts == 0 and not self._fixed_ports) else 1
        for attempt in range(attempts):
            try:
                self._spawn()
                self._wait_ready(timeout)
                return self
            except BrokerError:
                exited = self.proc is not None and self.proc.poll() is not None
                if exited and attempt + 1 < attempts and self._looks_like_bind_error():
                    self.ports = self.allocate_ports()
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        for k in [k for k, v in env.items() if v is None]:  # None takes a variable away
            del env[k]
        with open(self.log_path, "ab") as log:
            self._log_mark = log.tell()
            log.write(
                f"\n===== harness: start #{self.starts} of {self.name}: {' '.join(self.args())}\n".encode()
            )
            log.flush()
            self._log_mark = log.tell()
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.exit_codes.append(code)
                raise BrokerError(
                    f"{self.name} exited with {code} during start-up\n{self.log_tail(40)}"
                )
            if kafka_wire.probe(self.host, self.ports["kafka"], timeout=1.0):
                return
            time.sleep(0.05)
        self.kill()
        raise BrokerError(
            f"{self.name} did not answer ApiVersions on {self.bootstrap} within {timeout}s\n{self.log_tail(40)}"
        )

    def ready(self) -> tuple[int, str]:
        """GET /ready: (HTTP status, body), or (0, the error) when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def wait_ready(self, timeout: float = 120.0) -> tuple[float, list[str]]:
        """Waits until /ready answers 200; returns the seconds it took and the distinct
        reasons /ready gave meanwhile."""
        t0 = time.monotonic()
        reasons: list[str] = []
        while True:
            status, text = self.ready()
            if status == 200:
                return time.monotonic() - t0, reasons
            text = text.strip()
            if text and text not in reasons:
                reasons.append(text)
            if time.monotonic() - t0 > timeout:
                raise BrokerError(f"{self.name} not ready after {timeout}s: {reasons[-3:]}")
            time.sleep(0.1)

    def local_partitions(self, topic: str) -> dict[int, dict]:
        """This broker's own view of a topic's partitions (admin GET /v1/topics/TOPIC):
        {partition: {log_end_offset, high_watermark, ...}} from its local log, whether or not
        the partition has a leader."""
        with urllib.request.urlopen(f"{self.admin_url}/v1/topics/{topic}", timeout=5) as r:
            t = json.load(r)
        return {p["partition"]: p for p in t["partitions"]}

    def _looks_like_bind_error(self) -> bool:
        tail = self.log_tail(40, since_last_start=True).lower()
        return "address already in use" in tail or "addrinuse" in tail

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT, expect_code: Optional[int] = 0) -> int:
        """SIGTERM and wait. Asserts the exit code (0 by default: a graceful
        shutdown must succeed). Returns the exit code."""
        if self.proc is None:
            raise BrokerError(f"{self.name} was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.exit_codes.append(self.proc.returncode)
                raise BrokerError(
                    f"{self.name} did not exit within {timeout}s of SIGTERM (killed)\n{self.log_tail(40)}"
                )
            code = self.proc.returncode
            self.exit_codes.append(code)
        else:
            code = self.proc.returncode
            raise BrokerError(
                f"{self.name} had already exited with {code} before stop()\n{self.log_tail(40)}"
            )
        if expect_code is not None and code != expect_code:
            raise BrokerError(
                f"{self.name} exited with {code} after SIGTERM, expected {expect_code}\n{self.log_tail(40)}"
            )
        return code

    def kill(self) -> None:
        """SIGKILL (a crash: no flush, no shutdown hooks) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.exit_codes.append(self.proc.returncode)

    def run_to_exit(self, timeout: float = DEFAULT_START_TIMEOUT) -> tuple[int, str]:
        """Starts the broker expecting it to exit by itself (a refused config, a failpoint)
        and waits: (exit code, the log of this start). Kills it if it is still running at
        `timeout` and fails."""
        if self.running():
            raise BrokerError(f"{self.name} already running")
        self._spawn()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerError(f"{self.name} still running after {timeout}s\n{self.log_tail(40)}")
        self.exit_codes.append(code)
        return code, self.log_tail(200, since_last_start=True)

    def log_count(self, needle: str) -> int:
        """Lines of the whole log (every start) that contain `needle`."""
        return sum(1 for line in self.log_text().splitlines() if needle in line)

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> "Broker":
        """Start again with the same data dir and ports (stop() or kill() first;
        a still-running broker is stopped gracefully)."""
        if self.running():
            self.stop()
        return self.start(timeout)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def rss_bytes(self) -> int:
        """Resident set size of the running broker, from /proc."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise BrokerError("VmRSS not found")

    # ---- logs ------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 100, since_last_start: bool = False) -> str:
        text = self.log_text()
        if since_last_start:
            marker = text.rfind("===== harness: start #")
            if marker >= 0:
                text = text[marker:]
        return "\n".join(text.splitlines()[-lines:])

    NOTABLE = ("panicked at", "memory allocation of", "fatal runtime error", " ERROR ", " WARN ",
               "harness: start #")

    def notable_lines(self, limit: int = 40) -> list[str]:
        """Log lines worth seeing first when a test fails: starts, panics,
        aborts, errors and warnings (the tail may be all backtrace)."""
        lines = [l for l in self.log_text().splitlines() if any(n in l for n in self.NOTABLE)]
        return lines[-limit:]

    def panics(self) -> list[str]:
        """Lines of the log that report a Rust panic."""
        return [l for l in self.log_text().splitlines()
                if "panicked at" in l or "memory allocation of" in l or "fatal runtime error" in l]

    # ---- context manager ---------------------------------------------------

    def __enter__(self) -> "Broker":
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.running():
            self.stop()

    def __repr__(self) -> str:
        return f"<Broker {self.name} {self.bootstrap} pid={self.pid}>"
