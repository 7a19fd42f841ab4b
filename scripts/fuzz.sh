#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the three parsers of outside input:
# scrape bodies (`exposition`), config files (`config`) and PromQL from parse to answer
# (`promql`). Seeds come from ../shared/corpora and the shipped configs. Each target runs
# for FUZZ_SECONDS (default 60); a crash, a hang over 10 s or more than 2 GiB resident fails
# the run and leaves the input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 # all three, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh promql
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
CORPORA=../shared/corpora
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(exposition config promql)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
# libFuzzer's instrumentation needs nightly flags: the nightly toolchain when there is one,
# otherwise the stable compiler in bootstrap mode.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $target in
    exposition)
      local i=0
      while IFS= read -r f; do
        i=$((i + 1))
        cp "$f" "$dir/seed-$i"
      done < <(find "$CORPORA/openmetrics-parsers/parsers" -name metrics -size -64k;
               find "$CORPORA/prometheus-textparse/testdata" "$CORPORA/envoy-istio-samples" \
                 "$CORPORA/exporter-samples" -type f -size -256k \
                 ! -name '*.md' ! -name LICENSE)
      ;;
    config)
      cp config/default.yaml "$dir/default.yaml"
      cp config/honeycomb.yaml "$dir/honeycomb.yaml"
      for o in deploy/overlays/*/meshmetrics.yaml; do
        cp "$o" "$dir/$(basename "$(dirname "$o")").yaml"
      done
      ;;
    promql)
      # The query of every `eval` line of Prometheus's own test files.
      python3 - "$CORPORA/prometheus-promqltest-v2.53-lts" "$dir" <<'EOF'
import pathlib, re, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
pat = re.compile(r"^eval(?:_fail|_ordered|_warn|_info)?\s+(?:instant\s+at\s+\S+|range\s+from\s+\S+\s+to\s+\S+\s+step\s+\S+)\s+(.+)$")
seen = set()
for f in sorted(src.rglob("*.test")):
    for line in f.read_text(errors="replace").splitlines():
        m = pat.match(line.strip())
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            (out / f"q{len(seen)}").write_text(m.group(1))
print(f"promql: {len(seen)} seed queries", file=sys.stderr)
EOF
      ;;
  esac
}

# One instrumented build for all targets: light optimisation (see fuzz/Cargo.toml), no
# sanitizer (the code under test has no unsafe; panics and hangs are what we look for).
"${fuzz[@]}" build --dev -s none

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  seed "$t"
  echo "== fuzz $t (${SECONDS_EACH}s)"
  if ! "${fuzz[@]}" run --dev -s none "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "error: fuzz target $t failed; its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|INFO: seed corpus)" "$log" || true
done
