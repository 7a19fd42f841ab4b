#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against real local servers, doc tests, a
# two-minute soak run, then the deploy/ manifests (every kustomize overlay built and
# validated against the Kubernetes and Flagger schemas; needs kubectl and
# `pip install kubernetes-validate`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-features "$@"
# Two minutes of the soak run (scripts/soak.sh): churn, reloads, queries, outages; nothing
# lost, nothing growing.
SOAK_MINUTES="${SOAK_MINUTES:-2}" scripts/soak.sh
# The integration tests built the binary (with the tests' feature set; a plain `cargo build`
# would compile much of the tree again for nothing).
[ -x target/debug/meshmetrics ] || cargo build --bin meshmetrics
python3 scripts/validate-manifests.py target/debug/meshmetrics
