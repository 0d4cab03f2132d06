"""moto's S3 (pip moto[server]): in memory, any credentials, ready in about 1.5 s."""

from __future__ import annotations

import urllib.request

from ..ports import free_port
from .base import S3Server, venv_bin


class MotoServer(S3Server):
    name = "moto"
    # moto keeps its objects in memory: an outage freezes the process instead of stopping it
    outage_mode = "freeze"

    def allocate_ports(self) -> None:
        self.port = free_port()

    def command(self):
        return [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
