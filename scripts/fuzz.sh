#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers of outside input: scrape
# bodies (`exposition`), config files (`config`), PromQL from parse to answer (`promql`), the
# peer API's requests (`peer_request`) and pushed OTLP bodies (`otlp_request`). Seeds come from ../shared/corpora and the shipped configs. Each target runs
# for FUZZ_SECONDS (default 60); a crash, a hang over 10 s or more than 2 GiB resident fails
# the run and leaves the input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 # all of them, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh promql
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
CORPORA=../shared/corpora
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(exposition config promql peer_request otlp_request)

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
    peer_request | otlp_request)
      python3 - "$target" "$dir" <<'EOF'
import pathlib, struct, sys
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def field(num, payload):  # length-delimited
    return varint(num << 3 | 2) + varint(len(payload)) + payload
def vint(num, n):
    return varint(num << 3) + varint(n)
def f64(num, x):
    return varint(num << 3 | 1) + struct.pack("<d", x)
target, out = sys.argv[1], pathlib.Path(sys.argv[2])
if target == "peer_request":
    # A Flagger check's selectors as an agent asks them: a name, a regex, a 1-minute window.
    name = field(2, b"__name__") + field(3, b"istio_requests_total")
    regex = vint(1, 2) + field(2, b"response_code") + field(3, b"5.*")
    sel = field(1, name) + field(1, regex) + vint(2, 1_700_000_000_000) + vint(3, 1_700_000_060_000)
    (out / "flagger-check").write_bytes(field(1, sel) + vint(2, 50_000_000))
else:
    # One resource with service.name, one scope, one gauge of one point with an attribute.
    kv = lambda k, v: field(1, k) + field(2, field(1, v))
    point = field(7, kv(b"code", b"200")) + varint(3 << 3 | 1) + struct.pack("<Q", 1) + f64(4, 1.5)
    metric = field(1, b"requests") + field(5, field(1, point))
    rm = field(1, field(1, kv(b"service.name", b"api"))) + field(2, field(2, metric))
    (out / "gauge").write_bytes(field(1, rm))
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
