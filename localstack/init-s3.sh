#!/usr/bin/env bash
# Creates the bucket Sediment writes to, on LocalStack, MinIO or any S3-compatible endpoint.
#
#   ./init-s3.sh                       # bucket "sediment" on http://127.0.0.1:4566
#   SEDIMENT_BUCKET=b AWS_ENDPOINT_URL=http://127.0.0.1:9000 ./init-s3.sh
#
# Mounted into LocalStack's /etc/localstack/init/ready.d/ by docker-compose.yml (it then runs
# inside the container with awslocal); elsewhere it uses the AWS CLI, or Python's boto3.
set -euo pipefail

BUCKET=${SEDIMENT_BUCKET:-sediment}
ENDPOINT=${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_REGION=${AWS_REGION:-us-east-1}

if command -v awslocal >/dev/null 2>&1; then
    # inside the LocalStack container
    awslocal s3 mb "s3://$BUCKET" 2>/dev/null || true
    # incomplete multipart uploads (a broker killed mid-upload) are cleaned up after a day
    awslocal s3api put-bucket-lifecycle-configuration --bucket "$BUCKET" --lifecycle-configuration \
        '{"Rules":[{"ID":"abort-incomplete-multipart","Status":"Enabled","Filter":{"Prefix":""},"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}}]}' || true
elif command -v aws >/dev/null 2>&1; then
    aws --endpoint-url "$ENDPOINT" s3 mb "s3://$BUCKET" 2>/dev/null || true
    aws --endpoint-url "$ENDPOINT" s3api put-bucket-lifecycle-configuration --bucket "$BUCKET" --lifecycle-configuration \
        '{"Rules":[{"ID":"abort-incomplete-multipart","Status":"Enabled","Filter":{"Prefix":""},"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}}]}' || true
else
    python3 - "$ENDPOINT" "$BUCKET" <<'PY'
import sys
import boto3
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
try:
    s3.create_bucket(Bucket=bucket)
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass
try:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [{
        "ID": "abort-incomplete-multipart", "Status": "Enabled", "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
except Exception as e:  # not every server implements lifecycle rules
    print(f"lifecycle rule not set: {e}", file=sys.stderr)
PY
fi
echo "bucket $BUCKET ready at $ENDPOINT"
