"""A broker on Kubernetes on AWS reaches its bucket with the credentials the pod is handed, and
no access keys in its environment: EKS Pod Identity (a bearer token in a file, exchanged at the
Pod Identity agent's endpoint) and IRSA (a service-account token in a file, exchanged at STS by
AssumeRoleWithWebIdentity). The chart's README and values promise both.

moto plays S3 and STS with its authentication on, so every S3 request must be signed with
temporary credentials moto's STS minted for the brokers' role (its session token included).
A local endpoint plays the Pod Identity agent and STS's web identity exchange: it checks the
token the broker read from its file (and the role ARN), then mints the credentials at moto.
The negative control is a broker whose token is wrong: it uploads nothing, stays up, and its
upload lag shows it."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config

from sediment_harness.clients import consume_range, create_topic, producer
from sediment_harness.ports import free_port
from sediment_harness.s3.fixtures import s3_factory  # noqa: F401

MiB = 1024 * 1024
ROLE = "sediment-broker"
PREFIX = "sediment"
POD_TOKEN = "pod-identity-token-" + uuid.uuid4().hex
IRSA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.irsa-" + uuid.uuid4().hex

pytestmark = pytest.mark.timeout(300)


class CredentialEndpoints:
    """The Pod Identity agent (GET /v1/credentials) and STS's AssumeRoleWithWebIdentity (POST
    /sts), both minting credentials for ROLE at moto's STS once the caller's token checks out."""

    def __init__(self, moto_url: str, role_arn: str, agent_keys: tuple[str, str], cert_file, key_file) -> None:
        self.role_arn = role_arn
        self.sts = boto3.client("sts", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=agent_keys[0],
                                aws_secret_access_key=agent_keys[1])
        self.calls: list[tuple[str, bool]] = []  # (kind, accepted)
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                ok = self.path == "/v1/credentials" and self.headers.get("Authorization") == POD_TOKEN
                outer.calls.append(("pod-identity", ok))
                if not ok:
                    return self._send(403, b'{"Message":"invalid token"}', "application/json")
                c = outer.mint("eks-pod-identity")
                body = {"AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"],
                        "Expiration": c["Expiration"].astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
                self._send(200, json.dumps(body).encode(), "application/json")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                q.update(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                ok = (q.get("Action") == "AssumeRoleWithWebIdentity" and q.get("WebIdentityToken") == IRSA_TOKEN
                      and q.get("RoleArn") == outer.role_arn)
                outer.calls.append(("web-identity", ok))
                if not ok:
                    err = b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code></Error></ErrorResponse>"
                    return self._send(400, err, "text/xml")
                c = outer.mint(q.get("RoleSessionName") or "irsa")
                exp = c["Expiration"].astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                xml = ("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                       "<AssumeRoleWithWebIdentityResult><Credentials>"
                       f"<AccessKeyId>{c['AccessKeyId']}</AccessKeyId><SecretAccessKey>{c['SecretAccessKey']}</SecretAccessKey>"
                       f"<SessionToken>{c['SessionToken']}</SessionToken><Expiration>{exp}</Expiration>"
                       "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
                self._send(200, xml.encode(), "text/xml")

        # the Pod Identity agent answers plain HTTP on a link-local address; STS only over HTTPS
        # (object_store refuses anything else there), with a CA the broker is told to trust
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.tls_port = free_port()
        self.tls_server = ThreadingHTTPServer(("127.0.0.1", self.tls_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        self.tls_server.socket = ctx.wrap_socket(self.tls_server.socket, server_side=True)
        for srv in (self.server, self.tls_server):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def mint(self, session: str) -> dict:
        return self.sts.assume_role(RoleArn=self.role_arn, RoleSessionName=session, DurationSeconds=3600)["Credentials"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sts_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.tls_server.shutdown()


def self_signed(dir):
    """A CA (written alone to ca.pem, the bundle the broker trusts) and a certificate for
    127.0.0.1 it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sediment test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (dir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (dir / "sts.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (dir / "sts.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return dir / "ca.pem", dir / "sts.pem", dir / "sts.key"


@pytest.fixture
def aws(s3_factory, tmp_path):
    """moto with the brokers' role (S3 on one bucket), an 'agent' user allowed only to assume
    it, and authentication switched on after that setup."""
    moto = s3_factory("moto")
    admin = dict(endpoint_url=moto.endpoint_url, region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7SETUP",
                 aws_secret_access_key="setup")
    iam = boto3.client("iam", **admin)
    bucket = f"cred-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", **admin).create_bucket(Bucket=bucket)
    # the agent user plays the EKS auth service (pods.eks.amazonaws.com in a real trust policy)
    agent_arn = iam.create_user(UserName="agent")["User"]["Arn"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": agent_arn},
                                                     "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
    role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=ROLE, PolicyName="objects", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    iam.put_user_policy(UserName="agent", PolicyName="assume", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}]}))
    key = iam.create_access_key(UserName="agent")["AccessKey"]
    req = urllib.request.Request(f"{moto.endpoint_url}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=10).read()
    ca, cert, cert_key = self_signed(tmp_path)
    ep = CredentialEndpoints(moto.endpoint_url, role_arn, (key["AccessKeyId"], key["SecretAccessKey"]), cert, cert_key)
    yield {"moto": moto, "bucket": bucket, "role_arn": role_arn, "endpoints": ep, "dir": tmp_path, "ca": ca}
    ep.close()


def role_s3(aws):
    """An S3 client with credentials minted for the brokers' role (authentication is on)."""
    c = aws["endpoints"].mint("test-reader")
    return boto3.client("s3", endpoint_url=aws["moto"].endpoint_url, region_name="us-east-1", aws_access_key_id=c["AccessKeyId"],
                        aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"],
                        config=Config(s3={"addressing_style": "path"}))


def base_env(aws) -> dict:
    # no access keys at all: the broker must get them from the exchange
    return {"AWS_ENDPOINT_URL": aws["moto"].endpoint_url, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None, "AWS_ROLE_ARN": None,
            "AWS_EC2_METADATA_DISABLED": "true"}


def credential_env(aws, kind: str, token: str) -> dict:
    f = aws["dir"] / f"{kind}-{uuid.uuid4().hex[:6]}.token"
    f.write_text(token)
    env = base_env(aws)
    if kind == "pod-identity":
        env.update({"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{aws['endpoints'].url}/v1/credentials",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(f)})
    else:
        env.update({"AWS_WEB_IDENTITY_TOKEN_FILE": str(f), "AWS_ROLE_ARN": aws["role_arn"],
                    "AWS_ROLE_SESSION_NAME": "sediment-broker", "AWS_ENDPOINT_URL_STS": aws["endpoints"].sts_url,
                    "SSL_CERT_FILE": str(aws["ca"])})
    return env


def produce_segments(bootstrap, topic, n=600, size=8 * 1024):
    create_topic(bootstrap, topic, 1, config={"segment.bytes": str(MiB), "local.retention.bytes": str(MiB), "retention.ms": "-1"})
    p = producer(bootstrap, **{"linger.ms": 5})
    errs = []
    for i in range(n):
        p.produce(topic, value=bytes([i % 251]) * size, partition=0, on_delivery=lambda e, m: e and errs.append(e))
        p.poll(0)
    assert p.flush(60) == 0 and not errs, errs[:3]
    return n


def segment_keys(s3, bucket, topic):
    out = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/topics/{topic}/")
    return [o["Key"] for o in out.get("Contents", []) if o["Key"].endswith(".seg")]


def upload_lag(broker) -> float:
    text = urllib.request.urlopen(f"{broker.admin_url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("sediment_tier_upload_lag_bytes"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("kind", ["pod-identity", "web-identity"])
def test_the_broker_uploads_with_the_credentials_its_pod_is_handed(aws, broker_factory, topic_name, kind):
    token = POD_TOKEN if kind == "pod-identity" else IRSA_TOKEN
    b = broker_factory(env=credential_env(aws, kind, token), object_store=f"s3://{aws['bucket']}/{PREFIX}")
    n = produce_segments(b.bootstrap, topic_name)
    s3 = role_s3(aws)
    deadline = time.monotonic() + 90
    while len(segment_keys(s3, aws["bucket"], topic_name)) < 3:
        assert time.monotonic() < deadline, f"no uploads; broker log:\n{b.log_tail(30)}"
        time.sleep(0.5)
    calls = aws["endpoints"].calls
    assert (kind, True) in calls and all(ok for _, ok in calls), calls

    # once local retention has dropped the oldest segments, offset 0 is read from the bucket
    # with the same credentials
    deadline = time.monotonic() + 60
    while not any(int(p.stem) > 0 for p in (b.data_dir / "logs" / f"{topic_name}-0").glob("0*.log")) \
            or (b.data_dir / "logs" / f"{topic_name}-0" / f"{0:020d}.log").exists():
        assert time.monotonic() < deadline, "local retention kept the first segment"
        time.sleep(0.5)
    got = consume_range(b.bootstrap, topic_name, {0: (0, n)})[0]
    assert [m.offset() for m in got] == list(range(n)) and got[0].value() == bytes([0]) * 8192

    # `sediment bucket check` (aws-sdk-s3, its own credential chain) finds the same credentials
    env = {k: v for k, v in os.environ.items()}
    env.update(credential_env(aws, kind, token))
    env = {k: v for k, v in env.items() if v is not None}
    r = subprocess.run([str(b.bin), "bucket", "check", "--object-store", f"s3://{aws['bucket']}/{PREFIX}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert "ok" in r.stdout and "create-only PUT" in r.stdout, (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("kind", ["pod-identity", "web-identity"])
def test_a_wrong_token_uploads_nothing_and_the_broker_stays_up(aws, broker_factory, topic_name, kind):
    b = broker_factory(env=credential_env(aws, kind, "not-the-token"), object_store=f"s3://{aws['bucket']}/{PREFIX}")
    produce_segments(b.bootstrap, topic_name)
    deadline = time.monotonic() + 30
    while upload_lag(b) == 0:
        assert time.monotonic() < deadline, "no upload lag with credentials refused"
        time.sleep(0.5)
    time.sleep(3)
    assert (kind, False) in aws["endpoints"].calls and (kind, True) not in aws["endpoints"].calls
    assert not segment_keys(role_s3(aws), aws["bucket"], topic_name)
    assert b.running() and upload_lag(b) > 0
