#!/usr/bin/env bash
# Installs Istio (demo profile) and its Prometheus add-on, which the Prometheus setups use and
# Flagger's builtin metrics read by default.
#   ISTIO_VERSION=1.27.1 deploy/scripts/install-istio.sh
set -euo pipefail
ISTIO_VERSION="${ISTIO_VERSION:-1.27.1}"
ISTIO_MINOR="${ISTIO_VERSION%.*}"

if ! command -v istioctl >/dev/null; then
  echo "istioctl not found: downloading Istio ${ISTIO_VERSION}"
  curl -sSL https://istio.io/downloadIstio | ISTIO_VERSION="${ISTIO_VERSION}" sh -
  export PATH="$PWD/istio-${ISTIO_VERSION}/bin:$PATH"
fi

istioctl install --set profile=demo -y
kubectl apply -f "https://raw.githubusercontent.com/istio/istio/release-${ISTIO_MINOR}/samples/addons/prometheus.yaml"
kubectl -n istio-system rollout status deployment/prometheus --timeout=5m
echo "Istio ${ISTIO_VERSION} and Prometheus are ready."
