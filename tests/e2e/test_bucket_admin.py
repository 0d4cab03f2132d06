"""`sediment bucket init|check` (aws-sdk-s3, bucket administration only) against real
S3-compatible servers: init creates the bucket and sets default encryption, the public access
block and a lifecycle rule aborting incomplete multipart uploads under the prefix, keeping the
bucket's other lifecycle rules; check verifies all of it plus create-only PUTs and exits 1
naming what is missing."""

import os
import subprocess
import uuid

import pytest

from sediment_harness.s3.fixtures import localstack_session, s3_factory, s3_server  # noqa: F401


def _run(sediment_bin, s3, *args):
    env = {**os.environ, **s3.env()}
    return subprocess.run([str(sediment_bin), "bucket", *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("s3_server", ["moto", "localstack"], indirect=True)
def test_bucket_init_then_check(sediment_bin, s3_server):
    s3 = s3_server.client()
    name = f"admin-{uuid.uuid4().hex[:12]}"
    target = f"s3://{name}/archive"

    r = _run(sediment_bin, s3_server, "check", "--object-store", target)
    assert r.returncode == 1 and name in r.stderr and "not reachable" in r.stderr, (r.returncode, r.stdout, r.stderr)

    # A bucket that already exists with a lifecycle rule of its own: init must keep that rule.
    s3.create_bucket(Bucket=name)
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
        {"ID": "keep-me", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 30}}]})
    r = _run(sediment_bin, s3_server, "check", "--object-store", target)
    assert r.returncode == 1, (r.stdout, r.stderr)
    # (servers differ on the defaults of a new bucket's encryption and public access block; the
    # only lifecycle rule does not abort multipart uploads, so that is missing everywhere)
    missing = [l for l in r.stdout.splitlines() if l.startswith("MISSING")]
    assert any("multipart lifecycle" in l for l in missing), r.stdout

    r = _run(sediment_bin, s3_server, "init", "--object-store", target, "--abort-incomplete-after-days", "3")
    assert r.returncode == 0, (r.stdout, r.stderr)

    enc = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    pab = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert all(pab[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")), pab
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]}
    assert "keep-me" in rules, rules
    ours = rules["sediment-abort-incomplete-multipart-uploads"]
    assert ours["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 3
    assert ours["Filter"]["Prefix"] == "archive/"

    # init is idempotent: a second run changes nothing and keeps one rule of ours
    r = _run(sediment_bin, s3_server, "init", "--object-store", target, "--abort-incomplete-after-days", "3")
    assert r.returncode == 0, (r.stdout, r.stderr)
    ids = [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]]
    assert sorted(ids) == ["keep-me", "sediment-abort-incomplete-multipart-uploads"], ids

    r = _run(sediment_bin, s3_server, "check", "--object-store", target)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 5 and all(l.startswith("ok") for l in lines), r.stdout
    assert "create-only PUT" in r.stdout
    assert not s3.list_objects_v2(Bucket=name).get("Contents"), "check left its probe object behind"

    # A setting removed behind Sediment's back is reported, by name.
    s3.delete_public_access_block(Bucket=name)
    r = _run(sediment_bin, s3_server, "check", "--object-store", target)
    assert r.returncode == 1, (r.stdout, r.stderr)
    missing = [l for l in r.stdout.splitlines() if l.startswith("MISSING")]
    assert len(missing) == 1 and "public access block" in missing[0], r.stdout
    assert "sediment bucket init" in r.stderr


def test_bucket_needs_an_s3_url(sediment_bin, tmp_path):
    r = subprocess.run([str(sediment_bin), "bucket", "check", "--object-store", f"file://{tmp_path}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "s3://" in r.stderr, (r.returncode, r.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("s3_server", ["seaweedfs"], indirect=True)
def test_bucket_settings_a_server_lacks_are_named(sediment_bin, s3_server):
    """SeaweedFS has no public access block API: init sets everything else and exits 1 naming
    it; check reports it as missing (NotImplemented) and still checks the rest."""
    target = f"s3://admin-{uuid.uuid4().hex[:12]}/archive"
    r = _run(sediment_bin, s3_server, "init", "--object-store", target)
    assert r.returncode == 1 and "could not set public access block" in r.stderr, (r.stdout, r.stderr)
    assert "default encryption: AES256" in r.stdout and "lifecycle rule" in r.stdout, r.stdout
    r = _run(sediment_bin, s3_server, "check", "--object-store", target)
    assert r.returncode == 1, (r.stdout, r.stderr)
    status = {l[9:31].strip(): l[:8].strip() for l in r.stdout.splitlines() if l.strip()}
    assert status == {"bucket": "ok", "default encryption": "ok", "public access block": "MISSING",
                      "multipart lifecycle": "ok", "create-only PUT": "ok"}, r.stdout
