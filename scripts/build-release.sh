#!/bin/sh
# The release build: one static binary (glibc linked statically, so the runtime image needs no
# libc). The image's build stage runs this script, and so does CI, so the image cannot drift
# from what is tested.
#
#   scripts/build-release.sh [TARGET]
#
# TARGET is a Rust target triple (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu); by
# default the host's, which is what a `docker buildx --platform` build stage runs as. The
# last line printed is the binary's path.
set -eu
cd "$(dirname "$0")/.."
TARGET="${1:-$(rustc -vV | sed -n 's/^host: //p')}"
case "$TARGET" in
  *-linux-gnu*) ;;
  *) echo "error: $TARGET: the release build links glibc statically; use a *-linux-gnu target" >&2
     exit 1 ;;
esac
# jemalloc is built for one page size. arm64 kernels come with 4 KiB or 64 KiB pages; built
# for 64 KiB it runs on both, built for 4 KiB only on the former.
case "$TARGET" in
  aarch64-*) export JEMALLOC_SYS_WITH_LG_PAGE="${JEMALLOC_SYS_WITH_LG_PAGE:-16}" ;;
esac
# With --target, RUSTFLAGS reach only the target build, not build scripts or proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET" --bin meshmetrics
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/meshmetrics"
# The image needs no debug info, not even the standard library's.
strip --strip-debug "$BIN"
echo "$BIN"
