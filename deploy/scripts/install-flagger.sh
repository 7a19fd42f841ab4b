#!/usr/bin/env bash
# Installs Flagger for Istio in flagger-system, its CRDs, and the load tester the Canary
# examples call.
#   deploy/scripts/install-flagger.sh                  # builtin metrics from Istio's Prometheus
# Flagger's builtin checks ask its metricsServer without credentials, and the meshmetrics
# façade requires its token (meshmetrics-query-token): judge canaries on meshmetrics through
# the MetricTemplates of deploy/flagger/meshmetrics, which send it (provider.secretRef).
set -euo pipefail
METRICS_SERVER="${METRICS_SERVER:-http://prometheus.istio-system:9090}"
# The Flagger release the manifests are validated against (scripts/validate-manifests.py
# reads the CRDs of its release line): its CRDs and its chart, not whatever is newest.
FLAGGER_VERSION="${FLAGGER_VERSION:-1.44.0}"

helm repo add flagger https://flagger.app >/dev/null
helm repo update flagger >/dev/null
kubectl apply -f "https://raw.githubusercontent.com/fluxcd/flagger/v${FLAGGER_VERSION}/artifacts/flagger/crd.yaml"
kubectl create namespace flagger-system --dry-run=client -o yaml | kubectl apply -f -
helm upgrade -i flagger flagger/flagger --version "${FLAGGER_VERSION}" \
  --namespace flagger-system \
  --set crd.create=false \
  --set meshProvider=istio \
  --set metricsServer="${METRICS_SERVER}"
kubectl create namespace test --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace test istio-injection=enabled --overwrite
helm upgrade -i flagger-loadtester flagger/loadtester --namespace test
kubectl -n flagger-system rollout status deployment/flagger --timeout=5m
echo "Flagger ${FLAGGER_VERSION} is ready (metricsServer: ${METRICS_SERVER})."
