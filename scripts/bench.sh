#!/bin/sh
# Runs meshmetrics side by side with the agents and servers it replaces, on the same synthetic
# Istio sidecars, then regenerates docs/benchmarks.md and its charts from the results:
# - whole_job: one agent exporting and answering Flagger and a dashboard, against vmagent plus
#   a Prometheus server (CPU, memory, freshness, equal answers);
# - agents: scrape → export alone against vmagent (three alternating rounds) and Prometheus
#   agent mode;
# - facade_vs_prometheus: the query façade against a Prometheus server holding the same
#   15-minute window (≈110k series by default).
# About 25 minutes on 2 cores, after the build.
#
#   scripts/bench.sh
#   MM_SIDECARS=50 MM_FACADE_SIDECARS=20 MM_ROUNDS=1 scripts/bench.sh   # lighter
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
cargo bench --bench whole_job --bench agents --bench facade_vs_prometheus --no-run
MM_BENCH_JSON="$out/whole_job.json" MM_WARMUP_S="${MM_JOB_WARMUP_S:-30}" MM_MEASURE_S="${MM_JOB_MEASURE_S:-120}" \
    cargo bench --bench whole_job
MM_BENCH_JSON="$out/agents.json" MM_WARMUP_S="${MM_WARMUP_S:-10}" MM_MEASURE_S="${MM_MEASURE_S:-25}" \
    cargo bench --bench agents
MM_BENCH_JSON="$out/facade.json" MM_SIDECARS="${MM_FACADE_SIDECARS:-50}" MM_QUERY_REPEATS=7 \
    cargo bench --bench facade_vs_prometheus
python3 scripts/benchmark-report.py "$out" docs/benchmarks.md docs/benchmarks.svg
