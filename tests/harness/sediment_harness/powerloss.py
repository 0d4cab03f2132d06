"""Disks that can lose power: `sediment-lazyfs` mounts over a backing directory.

    disk = LazyDisk(tmp_path / "disk1")   # mounted at disk.path
    b = Broker(..., data_dir=disk.path / "data")
    ...
    power_cut([b], [disk])                # SIGKILL, then every unsynced write is taken back
    b.restart()

What the file system keeps across a cut: every byte that was fsynced (or fdatasynced) before
it, and every name (create, rename, unlink), as a journaling file system does; see
tests/lazyfs/src/lib.rs. A process kill alone keeps the page cache, so it cannot tell whether
a program fsyncs; a cut can.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from .broker import Broker, BrokerError, default_binary


def lazyfs_binary() -> Path:
    """SEDIMENT_LAZYFS_BIN, else `sediment-lazyfs` next to the sediment binary under test."""
    env = os.environ.get("SEDIMENT_LAZYFS_BIN")
    if env:
        return Path(env)
    return default_binary().parent / "sediment-lazyfs"


class LazyDisk:
    def __init__(self, workdir: Path | str, bin: Optional[Path | str] = None) -> None:
        self.workdir = Path(workdir)
        self.backing = self.workdir / "backing"
        self.path = self.workdir / "mnt"
        self.bin = Path(bin) if bin else lazyfs_binary()
        self.log_path = self.workdir / "lazyfs.log"
        self.proc: Optional[subprocess.Popen] = None
        self.reports: list[dict] = []
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.mount()

    def mounted(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def mount(self, timeout: float = 20.0) -> None:
        if self.mounted():
            return
        if not self.bin.exists():
            raise BrokerError(f"sediment-lazyfs not found at {self.bin} (cargo build -p sediment-lazyfs)")
        if not Path("/dev/fuse").exists():
            raise BrokerError("/dev/fuse is missing: the power-loss harness needs FUSE")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(self.bin), str(self.backing), str(self.path)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        line = self._read_line(timeout)
        if line != "ready":
            raise BrokerError(f"sediment-lazyfs did not mount at {self.path}: {line!r}\n{self._log()}")

    def cut(self, timeout: float = 60.0) -> dict:
        """The power goes out: unsynced writes are taken back and the disk unmounts. Kill the
        processes using it first. Returns what was lost ({files, bytes_dropped, bytes_restored})
        and mounts the disk again, as the machine's next boot would."""
        report = self._command("cut", timeout)
        self.reports.append(report)
        self.mount()
        return report

    def stall(self, under: str, timeout: float = 10.0) -> None:
        """A disk too slow for one path: writes and fsyncs of files under `under` (relative to
        the mount) wait until resume(); reads and every other path go on."""
        self._ask(f"stall {under}", "stalled", timeout)

    def resume(self, timeout: float = 10.0) -> None:
        self._ask("resume", "resumed", timeout)

    def _ask(self, cmd: str, answer: str, timeout: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{cmd}\n".encode())
        self.proc.stdin.flush()
        line = self._read_line(timeout)
        if line != answer:
            raise BrokerError(f"sediment-lazyfs answered {line!r} to {cmd!r}\n{self._log()}")

    def unmount(self, timeout: float = 30.0) -> None:
        """A clean stop: everything written stays."""
        if self.mounted():
            self._command("unmount", timeout)

    def _command(self, cmd: str, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{cmd}\n".encode())
        self.proc.stdin.flush()
        report = {}
        if cmd == "cut":
            line = self._read_line(timeout)
            try:
                report = json.loads(line)
            except ValueError:
                raise BrokerError(f"sediment-lazyfs answered {line!r} to a cut\n{self._log()}") from None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            raise BrokerError(f"sediment-lazyfs did not exit after {cmd!r}\n{self._log()}") from None
        if code != 0:
            raise BrokerError(f"sediment-lazyfs exited with {code} after {cmd!r}\n{self._log()}")
        return report

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return buf.decode(errors="replace") or "(no answer)"
            chunk = os.read(fd, 1)
            if not chunk:
                return buf.decode(errors="replace") or f"(exited with {self.proc.poll()})"
            buf += chunk
        return buf.decode().strip()

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<LazyDisk {self.path} mounted={self.mounted()}>"


def power_cut(brokers: Sequence[Broker], disks: Sequence[LazyDisk]) -> list[dict]:
    """Every broker and then every disk loses power at once: SIGKILL each process (so nothing
    more reaches its disk), then take back every write not fsynced. The disks come back
    mounted; the brokers stay down until restarted."""
    for b in brokers:
        b.kill()
    return [d.cut() for d in disks]
