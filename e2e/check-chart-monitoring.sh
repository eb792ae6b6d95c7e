#!/usr/bin/env bash
# The chart with every opt-in enabled, validated by a real API server against
# prometheus-operator's CRDs (e2e/run.sh calls this after the smoke check; it needs a
# running e2e cluster: make cluster-up, or e2e/run.sh starts one).
#
#  1. apply prometheus-operator's ServiceMonitor/PodMonitor/PrometheusRule CRDs
#     (build.sh monitoring-crds: from the Go module, cached, not committed) and wait
#     until they are Established;
#  2. helm template with every opt-in (FREIGHT_CHART_OPT_INS), for all namespaces and for
#     one watched namespace, then `kubectl apply --dry-run=server` of everything rendered:
#     the CRDs' OpenAPI schemas (and the built-in types') judge every field (strict
#     field validation: unknown fields fail);
#  3. a deliberately broken PrometheusRule must be rejected (proves the schema is applied);
#  4. helm lint --strict with the opt-ins.
#
# The CRDs stay installed (idempotent); the scratch namespaces are deleted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh

step() { printf '[chart-monitoring %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { step "FAILED: $*"; exit 1; }

# Every opt-in of the chart. Add new opt-ins here (one --set each).
OPT_INS=(
  --set metrics.serviceMonitor.enabled=true
  --set metrics.podMonitor.enabled=true
  --set metrics.prometheusRule.enabled=true
  --set dashboards.enabled=true
)
# shellcheck disable=SC2206 # word splitting wanted: extra "--set k=v" arguments
[[ -n "${FREIGHT_CHART_OPT_INS:-}" ]] && OPT_INS+=($FREIGHT_CHART_OPT_INS)
NS=freight-chart-check
JOBS_NS=freight-chart-check-jobs # the watched namespace of the second rendering
KINDS=(servicemonitors podmonitors prometheusrules)

kubectl get --raw /readyz >/dev/null 2>&1 || fail "no API server at $KUBECONFIG (make cluster-up)"
[[ -f "$FREIGHT_MONITORING_CRDS/monitoring.coreos.com_prometheusrules.yaml" ]] ||
  fail "no prometheus-operator CRDs in $FREIGHT_MONITORING_CRDS (make tools)"

tmp=$(mktemp -d)
cleanup() {
  local rc=$?
  kubectl delete namespace "$NS" "$JOBS_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

step "installing prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs: ${KINDS[*]}"
for k in "${KINDS[@]}"; do
  # server-side: the CRDs are too big for client-side apply's last-applied annotation
  kubectl apply --server-side --force-conflicts --field-manager=freight-chart-check \
    -f "$FREIGHT_MONITORING_CRDS/monitoring.coreos.com_$k.yaml" >&2
done
for k in "${KINDS[@]}"; do
  kubectl wait --for=condition=Established "crd/$k.monitoring.coreos.com" --timeout=60s >&2
done
# The API server serves a new CRD's schema a moment after Established.
for _ in $(seq 1 50); do
  kubectl get prometheusrules,servicemonitors,podmonitors -A >/dev/null 2>&1 && break
  sleep 0.2
done
for n in "$NS" "$JOBS_NS"; do
  kubectl create namespace "$n" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done

# check NAME [helm args...]: render the chart and dry-run it on the server.
check() {
  local name=$1 out="$tmp/$1.yaml" kinds
  shift
  helm lint --strict charts/freight --namespace "$NS" "${OPT_INS[@]}" "$@" >"$tmp/lint.log" 2>&1 ||
    { cat "$tmp/lint.log" >&2; fail "$name: helm lint --strict"; }
  helm template freight charts/freight --namespace "$NS" "${OPT_INS[@]}" "$@" >"$out"
  kinds=$(sed -n 's/^kind: //p' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  for k in ServiceMonitor PodMonitor PrometheusRule ConfigMap; do
    grep -q "^kind: $k$" "$out" || fail "$name: the opt-ins rendered no $k"
  done
  kubectl apply --dry-run=server --validate=strict -f "$out" >"$tmp/apply.log" 2>&1 ||
    { cat "$tmp/apply.log" >&2; fail "$name: the API server rejected the rendered chart"; }
  step "$name: accepted by the API server (dry run): ${kinds%, }"
}

check all-namespaces
check one-namespace --set watchNamespace="$JOBS_NS" --set metrics.prometheusRule.alertLabels.team=data

step "a broken PrometheusRule must be rejected (the CRD schema is in force)"
sed -e 's/^\( *\)for: 1m$/\1for: one minute/' \
  "$tmp/all-namespaces.yaml" >"$tmp/broken.yaml"
grep -q "for: one minute" "$tmp/broken.yaml" || fail "could not break the PrometheusRule"
if kubectl apply --dry-run=server --validate=strict -f "$tmp/broken.yaml" >"$tmp/broken.log" 2>&1; then
  fail "the API server accepted a PrometheusRule with 'for: one minute'"
fi
grep -q 'spec.groups\[0\].rules\[0\].for' "$tmp/broken.log" ||
  { cat "$tmp/broken.log" >&2; fail "the rejection does not name spec.groups[0].rules[0].for"; }
step "rejected as expected: $(grep -o 'spec.groups\[0\].rules\[0\].for[^,]*' "$tmp/broken.log" | head -n1)"
step "ok"
