#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real local servers, doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-features "$@"
