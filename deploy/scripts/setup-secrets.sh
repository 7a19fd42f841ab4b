#!/usr/bin/env bash
# Creates or updates the secrets the setups read:
#   flagger-system/honeycomb-otel-secret  key api-key                      (meshmetrics → Honeycomb)
#   flagger-system/dynatrace-secret       keys dynatrace_token, api-token  (Flagger → Dynatrace)
#   flagger-system/meshmetrics-query-token keys token, otlp-token         (Flagger → meshmetrics
#                                          façade and agent ↔ agent; agents → gateway OTLP)
# and the Dynatrace environment the templates ask (DYNATRACE_ENVIRONMENT_ID, e.g. abc12345,
# or a whole URL for a managed cluster), written to deploy/flagger/dynatrace/environment.env.
# The meshmetrics tokens are random unless MESHMETRICS_QUERY_TOKEN / MESHMETRICS_OTLP_TOKEN
# give them, and an existing secret is kept (its tokens are what running agents accept).
# Interactive by default; non-interactive when the values are in the environment:
#   HONEYCOMB_API_KEY=... DYNATRACE_API_TOKEN=... deploy/scripts/setup-secrets.sh --non-interactive
# A secret whose value is empty is skipped. Values never appear in the process list or output.
set -euo pipefail
NS=flagger-system
interactive=1
[[ "${1:-}" == "--non-interactive" ]] && interactive=0

ask() { # ask VAR "prompt"
  local var=$1 prompt=$2
  if [[ -z "${!var:-}" && $interactive == 1 ]]; then
    read -r -s -p "$prompt (empty to skip): " "${var?}"
    echo
  fi
}

apply_secret() { # apply_secret NAME KEY... (value on stdin)
  local name=$1; shift
  local value args=()
  value=$(cat)
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  for key in "$@"; do
    printf '%s' "$value" > "$dir/$key"
    args+=(--from-file="$key=$dir/$key")
  done
  # Server-side apply: no last-applied annotation carrying the value.
  kubectl -n "$NS" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml \
    | kubectl apply --server-side --force-conflicts --field-manager=setup-secrets -f - >/dev/null
  echo "secret $NS/$name: set ($*)"
}

random_token() {
  head -c 32 /dev/urandom | base64 | tr -d '/+=\n'
}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if kubectl -n "$NS" get secret meshmetrics-query-token -o jsonpath='{.data.token}' 2>/dev/null | grep -q . \
   && [[ -z "${MESHMETRICS_QUERY_TOKEN:-}${MESHMETRICS_OTLP_TOKEN:-}" ]]; then
  echo "secret $NS/meshmetrics-query-token: kept (token, otlp-token)"
else
  dir=$(mktemp -d)
  printf '%s' "${MESHMETRICS_QUERY_TOKEN:-$(random_token)}" > "$dir/token"
  printf '%s' "${MESHMETRICS_OTLP_TOKEN:-$(random_token)}" > "$dir/otlp-token"
  kubectl -n "$NS" create secret generic meshmetrics-query-token \
      --from-file=token="$dir/token" --from-file=otlp-token="$dir/otlp-token" \
      --dry-run=client -o yaml \
    | kubectl apply --server-side --force-conflicts --field-manager=setup-secrets -f - >/dev/null
  rm -rf "$dir"
  echo "secret $NS/meshmetrics-query-token: set (token, otlp-token)"
fi
ask HONEYCOMB_API_KEY "Honeycomb ingest key"
ask DYNATRACE_API_TOKEN "Dynatrace API token"
if [[ -z "${DYNATRACE_ENVIRONMENT_ID:-}" && $interactive == 1 ]]; then
  read -r -p "Dynatrace environment ID (abc12345, or https://... for a managed cluster; empty to skip): " DYNATRACE_ENVIRONMENT_ID
fi
if [[ -n "${DYNATRACE_ENVIRONMENT_ID:-}" ]]; then
  case "$DYNATRACE_ENVIRONMENT_ID" in
    https://*) url=${DYNATRACE_ENVIRONMENT_ID%/} ;;
    *[!a-z0-9]*) echo "error: Dynatrace environment ID $DYNATRACE_ENVIRONMENT_ID: letters and digits only, or an https:// URL" >&2; exit 1 ;;
    *) url="https://${DYNATRACE_ENVIRONMENT_ID}.live.dynatrace.com" ;;
  esac
  env_file="$(dirname "$0")/../flagger/dynatrace/environment.env"
  {
    grep '^#' "$env_file" || true
    echo "DYNATRACE_URL=$url"
  } > "$env_file.new"
  mv "$env_file.new" "$env_file"
  echo "Dynatrace templates: $url"
fi
if [[ -n "${HONEYCOMB_API_KEY:-}" ]]; then
  printf '%s' "$HONEYCOMB_API_KEY" | apply_secret honeycomb-otel-secret api-key
else
  echo "secret $NS/honeycomb-otel-secret: skipped (no HONEYCOMB_API_KEY)"
fi
if [[ -n "${DYNATRACE_API_TOKEN:-}" ]]; then
  printf '%s' "$DYNATRACE_API_TOKEN" | apply_secret dynatrace-secret dynatrace_token api-token
else
  echo "secret $NS/dynatrace-secret: skipped (no DYNATRACE_API_TOKEN)"
fi
