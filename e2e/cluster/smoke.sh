#!/usr/bin/env bash
# Smoke check of a running e2e cluster (start it with up.sh first):
#  1. namespace + Deployment -> pod Running/Ready on a kwok fake node
#  2. scale to 2 -> 2 Running pods
#  3. autoscaling/v2 HPA is processed by the HPA controller (metrics are missing: fine)
#  4. aggregated API: external.metrics.k8s.io served by a local process through an
#     ExternalName Service -> localhost; the HPA controller scales on that metric
#  5. a CRD with x-kubernetes-validations (CEL) rejects an invalid object
#  6. ServiceAccount auth (sa-kubeconfig.sh) and impersonation obey RBAC
#  7. namespace deletion completes (kwok finalizes pod deletion)
#  8. the audit log records the writes, per user (and impersonated user)
set -euo pipefail

# shellcheck source=e2e/cluster/lib.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

NS="freight-smoke-$$"
CRD=widgets.smoke.freight.test
APISERVICE=v1beta1.external.metrics.k8s.io
METRICS_PORT=${FREIGHT_SMOKE_METRICS_PORT:-16444}
METRICS_PID=""
OWN_APISERVICE=0
WORK=$(mktemp -d)
PASSED=0
FAILED=0
SKIPPED=0

pass() {
  PASSED=$((PASSED + 1))
  log "PASS: $*"
}
fail() {
  FAILED=$((FAILED + 1))
  log "FAIL: $*"
}

cleanup() {
  if ((OWN_APISERVICE)); then
    kubectl delete apiservice "$APISERVICE" --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [[ -n "$METRICS_PID" ]]; then kill "$METRICS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete crd "$CRD" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

running_pods() {
  kubectl -n "$NS" get pods -l app=smoke \
    -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\n"}{end}' |
    grep -c . || true
}
two_running() { [[ "$(running_pods)" -eq 2 ]]; }

check_deployment() {
  kubectl create namespace "$NS" >/dev/null
  wait_for "ServiceAccount default in $NS" 60 kubectl -n "$NS" get serviceaccount default
  kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
        - name: pause
          image: example.com/pause:1
          resources:
            requests: {cpu: 100m, memory: 16Mi}
EOF
  if kubectl -n "$NS" rollout status deployment/smoke --timeout=120s >&2 &&
    kubectl -n "$NS" wait --for=condition=Ready pod -l app=smoke --timeout=60s >&2; then
    local node
    node=$(kubectl -n "$NS" get pods -l app=smoke -o jsonpath='{.items[0].spec.nodeName}')
    if [[ "$(kubectl get node "$node" -o jsonpath='{.metadata.annotations.kwok\.x-k8s\.io/node}')" == fake ]]; then
      pass "Deployment pod Running and Ready on fake node $node"
    else
      fail "pod landed on unexpected node '$node'"
    fi
  else
    fail "Deployment did not become ready"
    kubectl -n "$NS" get deploy,rs,pods -o wide >&2 || true
  fi
}

check_scale() {
  kubectl -n "$NS" scale deployment/smoke --replicas=2 >/dev/null
  if wait_for "2 Running pods" 120 two_running &&
    kubectl -n "$NS" rollout status deployment/smoke --timeout=60s >&2; then
    pass "scaled to 2: $(kubectl -n "$NS" get pods -l app=smoke -o wide --no-headers | awk '{print $1"@"$7}' | tr '\n' ' ')"
  else
    fail "scale to 2 did not yield 2 Running pods"
    kubectl -n "$NS" get pods -o wide >&2 || true
  fi
}

hpa_processed() {
  [[ -n "$(kubectl -n "$NS" get hpa smoke -o jsonpath='{.status.conditions[?(@.type=="AbleToScale")].status}')" ]]
}

check_hpa() {
  kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: smoke
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: smoke}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: 50}
EOF
  if wait_for "HPA processed by the HPA controller" 60 hpa_processed; then
    pass "HPA processed: $(kubectl -n "$NS" get hpa smoke \
      -o jsonpath='{range .status.conditions[*]}{.type}={.status}({.reason}) {end}')"
  else
    fail "HPA controller never touched the HPA status"
    kubectl -n "$NS" describe hpa smoke >&2 || true
  fi
}

apiservice_available() {
  [[ "$(kubectl get apiservice "$APISERVICE" \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
deployment_at_4() {
  [[ "$(kubectl -n "$NS" get deployment smoke -o jsonpath='{.status.readyReplicas}')" == 4 ]]
}

check_external_metrics() {
  if ! command -v python3 >/dev/null; then
    SKIPPED=$((SKIPPED + 1))
    log "SKIP: aggregated API check needs python3"
    return 0
  fi
  if kubectl get apiservice "$APISERVICE" >/dev/null 2>&1; then
    SKIPPED=$((SKIPPED + 1))
    log "SKIP: $APISERVICE already registered (operator installed?); not touching it"
    return 0
  fi
  port_free "$METRICS_PORT" || die "127.0.0.1:$METRICS_PORT in use (set FREIGHT_SMOKE_METRICS_PORT)"
  local svc=fake-metrics
  # The aggregator dials the ExternalName host (localhost) but verifies the serving
  # certificate for <service>.<namespace>.svc, so that name must be in the SANs.
  openssl req -x509 -nodes -newkey rsa:2048 -days 1 -keyout "$WORK/tls.key" -out "$WORK/tls.crt" \
    -subj "/CN=$svc" -addext "subjectAltName=DNS:localhost,DNS:$svc.$NS.svc" 2>/dev/null
  python3 "$FREIGHT_CLUSTER_DIR/testdata/fake_external_metrics.py" --port "$METRICS_PORT" \
    --cert "$WORK/tls.crt" --key "$WORK/tls.key" --client-ca "$PKI/front-proxy-ca.crt" \
    --value 42 2>"$WORK/metrics.log" &
  METRICS_PID=$!
  OWN_APISERVICE=1
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: $svc, namespace: $NS}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $APISERVICE}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: $svc, namespace: $NS, port: $METRICS_PORT}
  caBundle: $(base64 -w0 "$WORK/tls.crt")
EOF
  local value=""
  if wait_for "APIService $APISERVICE Available" 60 apiservice_available; then
    value=$(kubectl get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/queue_depth" |
      jq -r '.items[0].value')
  fi
  if [[ "$value" == 42 ]]; then
    pass "aggregated API via ExternalName->localhost serves queue_depth=42"
  else
    fail "aggregated external metrics API not working (got '$value')"
    kubectl get apiservice "$APISERVICE" -o jsonpath='{.status.conditions}' >&2 || true
    cat "$WORK/metrics.log" >&2 || true
    return 0
  fi
  # HPA on the external metric: 42 / averageValue 10 -> 5 replicas, capped at max 4.
  kubectl -n "$NS" delete hpa smoke >/dev/null
  kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: smoke-external
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: smoke}
  minReplicas: 1
  maxReplicas: 4
  metrics:
    - type: External
      external:
        metric: {name: queue_depth}
        target: {type: AverageValue, averageValue: "10"}
EOF
  if wait_for "HPA scales Deployment to 4 on the external metric" 90 deployment_at_4; then
    pass "HPA scaled to 4 on external metric (caller: $(grep -o 'user=[^ ]*' "$WORK/metrics.log" | sort -u | tr '\n' ' '))"
  else
    fail "HPA did not scale on the external metric"
    kubectl -n "$NS" describe hpa smoke-external >&2 || true
  fi
  kubectl -n "$NS" delete hpa smoke-external >/dev/null
  kubectl delete apiservice "$APISERVICE" >/dev/null
  OWN_APISERVICE=0
  kill "$METRICS_PID" 2>/dev/null || true
  wait "$METRICS_PID" 2>/dev/null || true
  METRICS_PID=""
}

check_cel_crd() {
  kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.freight.test
spec:
  group: smoke.freight.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                minReplicas: {type: integer}
                maxReplicas: {type: integer}
              x-kubernetes-validations:
                - rule: "self.minReplicas <= self.maxReplicas"
                  message: "minReplicas must not exceed maxReplicas"
EOF
  kubectl wait --for=condition=Established "crd/$CRD" --timeout=60s >/dev/null
  # A freshly established CRD may take a moment to be served.
  wait_for "Widget kind served" 30 kubectl -n "$NS" get widgets
  local out
  if kubectl -n "$NS" apply -f - >/dev/null <<'EOF'; then
apiVersion: smoke.freight.test/v1
kind: Widget
metadata: {name: good}
spec: {minReplicas: 1, maxReplicas: 3}
EOF
    pass "valid Widget accepted"
  else
    fail "valid Widget rejected"
  fi
  if out=$(kubectl -n "$NS" apply -f - 2>&1 <<'EOF'
apiVersion: smoke.freight.test/v1
kind: Widget
metadata: {name: bad}
spec: {minReplicas: 5, maxReplicas: 3}
EOF
  ); then
    fail "invalid Widget was accepted (CEL rule not enforced)"
  elif grep -q "minReplicas must not exceed maxReplicas" <<<"$out"; then
    pass "CEL rule enforced: $(tail -n1 <<<"$out")"
  else
    fail "invalid Widget rejected for an unexpected reason: $out"
  fi
}

check_identities() {
  local sa="system:serviceaccount:$NS:smoke-sa" kc
  kubectl -n "$NS" create serviceaccount smoke-sa >/dev/null
  kubectl -n "$NS" create role smoke-pods --verb=get,list,watch,patch --resource=pods >/dev/null
  kubectl -n "$NS" create rolebinding smoke-pods --role=smoke-pods --serviceaccount="$NS:smoke-sa" >/dev/null
  kc=$("$FREIGHT_CLUSTER_DIR/sa-kubeconfig.sh" "$NS" smoke-sa)
  if [[ "$(kubectl --kubeconfig "$kc" auth can-i list pods)" == yes ]] &&
    [[ "$(kubectl --kubeconfig "$kc" auth can-i create deployments || true)" == no ]] &&
    kubectl --kubeconfig "$kc" get pods >/dev/null; then
    pass "ServiceAccount token kubeconfig works and is limited by RBAC"
  else
    fail "ServiceAccount token kubeconfig"
  fi
  rm -f "$kc"
  local pod
  pod=$(kubectl -n "$NS" get pods -l app=smoke -o jsonpath='{.items[0].metadata.name}')
  if kubectl -n "$NS" --as="$sa" annotate pod "$pod" smoke.freight.test/touched=yes >/dev/null &&
    ! kubectl -n "$NS" --as="$sa" scale deployment/smoke --replicas=3 >/dev/null 2>&1; then
    pass "impersonation (--as $sa) allowed patch pods, denied scale deployments"
  else
    fail "impersonation did not follow RBAC"
  fi
}

check_namespace_deletion() {
  kubectl delete crd "$CRD" --wait=true --timeout=60s >/dev/null
  if kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null; then
    pass "namespace $NS deleted (pods finalized by kwok)"
  else
    fail "namespace $NS still terminating"
    kubectl get namespace "$NS" -o yaml >&2 || true
  fi
}

check_audit() {
  local summary
  # Metadata-level JSON lines, writes only; count per user in our namespace.
  summary=$(jq -r --arg ns "$NS" 'select(.objectRef.namespace==$ns) | .user.username' \
    "$FREIGHT_AUDIT_LOG" | sort | uniq -c | sort -rn | head -n 8 | awk '{printf "%s=%s ", $2, $1}')
  local impersonated
  impersonated=$(jq -r --arg ns "$NS" 'select(.objectRef.namespace==$ns and .impersonatedUser != null)
    | "\(.user.username) as \(.impersonatedUser.username): \(.verb) \(.objectRef.resource)"' \
    "$FREIGHT_AUDIT_LOG" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
  if grep -q "kubernetes-admin" <<<"$summary" && [[ -n "$impersonated" ]]; then
    pass "audit log records writes in $NS by user: $summary| impersonated: $impersonated"
  else
    fail "audit log has no admin writes for $NS ($FREIGHT_AUDIT_LOG)"
  fi
}

main() {
  apiserver_ready || die "cluster not running: run $FREIGHT_CLUSTER_DIR/up.sh first"
  command -v jq >/dev/null || die "jq is required (apt-get install jq)"
  local start
  start=$(date +%s)
  log "server $(kubectl version -o json | jq -r .serverVersion.gitVersion), namespace $NS"
  check_deployment
  check_scale
  check_hpa
  check_external_metrics
  check_cel_crd
  check_identities
  check_namespace_deletion
  check_audit
  log "smoke finished in $(($(date +%s) - start))s"
  echo "smoke: $PASSED passed, $FAILED failed, $SKIPPED skipped"
  ((FAILED == 0))
}

main "$@"
