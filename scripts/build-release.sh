#!/bin/sh
# The release build: one static binary (glibc linked statically, so the runtime image needs no
# libc). The image's build stage runs this script, and so does CI, so the image cannot drift
# from what is tested.
set -eu
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
# With --target, RUSTFLAGS reach only the target build, not build scripts or proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET" --bin meshmetrics
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/meshmetrics"
# The image needs no debug info, not even the standard library's.
strip --strip-debug "$BIN"
echo "$BIN"
