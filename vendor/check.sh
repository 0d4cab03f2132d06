#!/usr/bin/env bash
# Checks that vendor/kafka-protocol is exactly the published crate plus vendor/kafka-protocol.patch:
# the crate is fetched from crates.io (cached under $HOME/.cache), its checksum checked, the
# files Sediment does not vendor (tests, CI config, lockfile) removed, the patch applied, and the
# result compared with the committed tree. Prints "N passed, M failed" as its last line.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=kafka-protocol
VERSION=0.18.0
SHA256=099d5c2f1b40cd830cbf18ca4d2a0805f2875b811ca18f0372b2433e68fe2dda
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/sediment-crates
CRATE="$CACHE/$NAME-$VERSION.crate"
mkdir -p "$CACHE"
fail() { echo "  FAIL $*"; echo "0 passed, 1 failed"; exit 1; }

if [ ! -s "$CRATE" ] || ! echo "$SHA256  $CRATE" | sha256sum -c --quiet - 2>/dev/null; then
    curl -sSfL --retry 3 -o "$CRATE.tmp" "https://static.crates.io/crates/$NAME/$VERSION/download" ||
        fail "could not download $NAME $VERSION from crates.io"
    mv "$CRATE.tmp" "$CRATE"
fi
echo "$SHA256  $CRATE" | sha256sum -c --quiet - || fail "$NAME-$VERSION.crate does not have the published checksum"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar xzf "$CRATE" -C "$WORK"
SRC="$WORK/$NAME-$VERSION"
# not vendored: the crate's own tests, CI config, lockfile and toolchain pin
rm -rf "$SRC/.cargo_vcs_info.json" "$SRC/.github" "$SRC/Cargo.lock" "$SRC/Cargo.toml.orig" "$SRC/rust-toolchain.toml" "$SRC/tests"
(cd "$SRC" && patch -p1 --quiet --no-backup-if-mismatch) <"$ROOT/vendor/$NAME.patch" || fail "vendor/$NAME.patch does not apply to the published $NAME $VERSION"
if ! diff -r -x PATCHED.md "$SRC" "$ROOT/vendor/$NAME" >"$WORK/diff" 2>&1; then
    head -40 "$WORK/diff"
    fail "vendor/$NAME differs from the published crate plus vendor/$NAME.patch (regenerate the patch)"
fi
echo "  ok   vendor/$NAME == crates.io $NAME $VERSION + vendor/$NAME.patch"
echo "1 passed, 0 failed"
