#!/usr/bin/env bash
# make e2e: start (or reuse) the local control plane, install the CRD, run the
# pod runner, run the end-to-end tests one at a time (each in its own
# namespace, each running the operator as a local process), tear down.
#
# FREIGHT_E2E_KEEP=1 keeps a cluster this script started running afterwards.
# Extra arguments go to the test binary, e.g. `e2e/run.sh restart` to run one test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh

step() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

started=0
runner_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$runner_pid" ]]; then
    kill "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  if ((rc != 0)); then
    step "failed; last lines of the logs in $FREIGHT_E2E_STATE:"
    tail -n 20 "$FREIGHT_E2E_STATE/pod-runner.log" 2>/dev/null || true
  fi
  if ((started)) && [[ "${FREIGHT_E2E_KEEP:-0}" != 1 ]]; then
    step "tearing the cluster down"
    bash e2e/cluster/down.sh >&2 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

if kubectl get --raw /readyz >/dev/null 2>&1; then
  step "reusing the running cluster ($KUBECONFIG)"
else
  step "starting the control plane"
  bash e2e/cluster/up.sh >&2
  started=1
fi

step "smoke-checking the control plane (nodes, pods, HPA, CEL, aggregated external metrics API)"
# tee -a: without O_APPEND, tee would truncate a log file that stderr points to.
smoke=$(bash e2e/cluster/smoke.sh | tee -a /dev/stderr | tail -n 1)
[[ "$smoke" =~ ^smoke:\ [0-9]+\ passed,\ 0\ failed,\ 0\ skipped$ ]] || {
  step "the control plane smoke check did not fully pass: $smoke"
  exit 1
}

step "validating the chart with every opt-in (ServiceMonitor, PodMonitor, PrometheusRule, ...) on the API server"
bash e2e/check-chart-monitoring.sh >&2

step "building the GitOps status checkers (kstatus-check, argocd-lua-health; seconds when cached)"
bash e2e/cluster/build.sh kstatus argocd-lua >&2
# Again: a rebuilt checker lives in a directory keyed by its source hash.
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh

step "building freight and the pod runner"
cargo build --bin freight -p freight --bin pod-runner -p freight-e2e
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export FREIGHT_E2E_BIN="$TARGET_DIR/debug/freight"

step "installing the CRD"
kubectl apply --server-side --force-conflicts -f crds/migrationjob.yaml >&2
kubectl wait --for=condition=Established crd/migrationjobs.freight.dev --timeout=60s >&2

step "starting the pod runner (worker pods on fake nodes run as local processes)"
mkdir -p "$FREIGHT_E2E_STATE"
FREIGHT_E2E_POD_SELECTOR="app.kubernetes.io/part-of=freight,app.kubernetes.io/component=worker" \
  "$TARGET_DIR/debug/pod-runner" >>"$FREIGHT_E2E_STATE/pod-runner.log" 2>&1 &
runner_pid=$!

step "running the end-to-end tests"
# --no-fail-fast: a failing scenario file does not keep the others from running.
cargo test --no-fail-fast -p freight-e2e --tests -- --test-threads=1 "$@"
