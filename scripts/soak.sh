#!/usr/bin/env bash
# The soak run: the agent for SOAK_MINUTES (default 60) under target churn, config reloads,
# Flagger's queries every second and backend outages (tests/soak.rs). It fails when memory,
# file descriptors or tasks drift more than 10 % after the warm-up, a query goes unanswered
# or a scraped point is not delivered. Results: $SOAK_OUT (default target/soak):
# samples.csv, summary.json, rss.svg.
#   SOAK_BIN=release   run a release build of the agent (built first) instead of the debug one
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_MINUTES="${SOAK_MINUTES:-60}"
if [ "${SOAK_BIN:-}" = release ]; then
  cargo build --release --bin meshmetrics
  export MESHMETRICS_BIN="$PWD/target/release/meshmetrics"
fi
# Built, then run directly: cargo would hold the build directory for the whole run.
exe=$(cargo test --all-features --test soak --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "soak" and m.get("executable"):
        print(m["executable"])')
# The agent runs from a copy, so rebuilding during a long run cannot touch it.
if [ -z "${MESHMETRICS_BIN:-}" ]; then
  cargo build --all-features --bin meshmetrics
  bin_dir=$(mktemp -d)
  trap 'rm -rf "$bin_dir"' EXIT
  cp target/debug/meshmetrics "$bin_dir/"
  export MESHMETRICS_BIN="$bin_dir/meshmetrics"
fi
"$exe" --ignored --nocapture soak
out="${SOAK_OUT:-target/soak}"
python3 scripts/soak-report.py "$out/samples.csv" "$out/summary.json" "$out/rss.svg"
