#!/bin/sh
# Runs meshmetrics side by side with vmagent and Prometheus (agent mode, and a server for the
# query façade) on the same synthetic Istio sidecars, then regenerates docs/benchmarks.md and
# docs/benchmarks.svg from the results. About 8 minutes on 2 cores, after the build.
#
#   scripts/bench.sh
#   MM_SIDECARS=50 MM_FACADE_SIDECARS=20 scripts/bench.sh   # lighter
#   MM_FACADE_SIDECARS=50 scripts/bench.sh                  # façade at ≈110k series
set -eu
cd "$(dirname "$0")/.."
for tool in vmagent prometheus python3; do
    command -v "$tool" >/dev/null || {
        echo "scripts/bench.sh needs $tool (Debian packages victoria-metrics, prometheus, python3)" >&2
        exit 1
    }
done
out=target/bench-results
mkdir -p "$out"
cargo bench --bench agents --bench facade_vs_prometheus --no-run
MM_BENCH_JSON="$out/agents.json" MM_WARMUP_S="${MM_WARMUP_S:-10}" MM_MEASURE_S="${MM_MEASURE_S:-25}" \
    cargo bench --bench agents
MM_BENCH_JSON="$out/facade.json" MM_SIDECARS="${MM_FACADE_SIDECARS:-30}" MM_QUERY_REPEATS=7 \
    cargo bench --bench facade_vs_prometheus
python3 scripts/benchmark-report.py "$out" docs/benchmarks.md docs/benchmarks.svg
