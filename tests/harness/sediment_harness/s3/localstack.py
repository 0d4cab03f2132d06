"""LocalStack's S3 without Docker: `localstack-core` run in host mode from its own Python 3.13
venv, built on first use and cached (`$SEDIMENT_LOCALSTACK_VENV`, default
`$HOME/.cache/sediment-localstack-venv`; rebuilt when the pins or the Python change). About 10
to 15 s to start, so suites share one per test session (per xdist worker)."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..ports import free_port
from .base import S3Server, S3ServerError

# localstack-core 2026.3.0 needs these pins in a Python 3.13 venv (see BRIEF.md)
PINS = [
    "localstack-core[runtime]==2026.3.0",
    "cbor2<5.7",
    "pyopenssl<25",
    "cryptography<45",
    "service_identity",
]


def find_python313() -> Path:
    """SEDIMENT_PYTHON313, else pyenv's 3.13, else python3.13 on PATH."""
    env = os.environ.get("SEDIMENT_PYTHON313")
    if env:
        return Path(env)
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    for cand in sorted(glob.glob(f"{root}/versions/3.13*/bin/python3.13"), reverse=True):
        return Path(cand)
    which = shutil.which("python3.13")
    if which:
        return Path(which)
    raise S3ServerError("LocalStack needs Python 3.13 (pyenv install 3.13, or set SEDIMENT_PYTHON313)")


def ensure_venv(log: Optional[Path] = None) -> Path:
    """The cached LocalStack venv, built if missing or stale (slow: minutes). Concurrent callers
    (xdist workers) build it once."""
    venv = Path(os.environ.get("SEDIMENT_LOCALSTACK_VENV", Path.home() / ".cache" / "sediment-localstack-venv"))
    py = find_python313()
    want = hashlib.sha256(("\n".join(PINS) + "\n" + str(py.resolve())).encode()).hexdigest()[:16]
    stamp = venv / ".pins-hash"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == want and (venv / "bin" / "python").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            subprocess.run([str(py), "-m", "venv", str(venv)], check=True, stdout=out, stderr=subprocess.STDOUT)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *PINS],
                           check=True, stdout=out, stderr=subprocess.STDOUT, timeout=1200)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise S3ServerError(f"cannot build the LocalStack venv at {venv}: {e} (log: {log})") from e
        finally:
            if log:
                out.close()
        stamp.write_text(want)
    return venv


class LocalStackServer(S3Server):
    name = "localstack"
    start_timeout = 120.0
    outage_mode = "freeze"

    def allocate_ports(self) -> None:
        self.port = free_port()

    def command(self):
        venv = ensure_venv(self.workdir / "venv-build.log")
        return [venv / "bin" / "python", "-m", "localstack.runtime.main"]

    def process_env(self):
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        return {
            "SERVICES": "s3",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "GATEWAY_SERVER": "hypercorn",
            "DNS_ADDRESS": "0",
            "EAGER_SERVICE_LOADING": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            # its temporary files per instance (parallel workers)
            "TMPDIR": str(tmp),
            "FILESYSTEM_ROOT": str(self.workdir / "fs"),
        }
