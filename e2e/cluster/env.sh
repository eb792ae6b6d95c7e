# shellcheck shell=bash
# Source this file (do not execute it):   source e2e/cluster/env.sh
# Puts the cached control-plane binaries built by build.sh on PATH and points
# KUBECONFIG at the e2e cluster started by up.sh. Safe to source repeatedly.
# (No `set -euo pipefail` here on purpose: it would leak into the caller's shell.)

FREIGHT_CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/cluster/versions.env disable=SC1091
source "$FREIGHT_CLUSTER_DIR/versions.env"

export FREIGHT_CLUSTER_DIR K8S_VERSION ETCD_VERSION KWOK_VERSION HELM_VERSION PROMETHEUS_VERSION
export PROMETHEUS_OPERATOR_VERSION CLI_UTILS_VERSION GOPHER_LUA_VERSION
export FREIGHT_CACHE=${FREIGHT_CACHE:-$HOME/.cache/freight}
export FREIGHT_E2E_STATE=${FREIGHT_E2E_STATE:-/tmp/freight-e2e}

# Loopback ports (non-default so they do not clash with a real cluster/etcd).
export FREIGHT_ETCD_PORT=${FREIGHT_ETCD_PORT:-12379}
export FREIGHT_ETCD_PEER_PORT=${FREIGHT_ETCD_PEER_PORT:-12380}
export FREIGHT_APISERVER_PORT=${FREIGHT_APISERVER_PORT:-16443}
export FREIGHT_KCM_PORT=${FREIGHT_KCM_PORT:-20257}
export FREIGHT_SCHEDULER_PORT=${FREIGHT_SCHEDULER_PORT:-20259}
export FREIGHT_APISERVER_URL="https://127.0.0.1:${FREIGHT_APISERVER_PORT}"

export FREIGHT_BIN_KUBERNETES="$FREIGHT_CACHE/bin/kubernetes-$K8S_VERSION"
export FREIGHT_BIN_ETCD="$FREIGHT_CACHE/bin/etcd-$ETCD_VERSION"
export FREIGHT_BIN_KWOK="$FREIGHT_CACHE/bin/kwok-$KWOK_VERSION"
export FREIGHT_BIN_HELM="$FREIGHT_CACHE/bin/helm-$HELM_VERSION"
export FREIGHT_BIN_PROMETHEUS="$FREIGHT_CACHE/bin/prometheus-$PROMETHEUS_VERSION"
# prometheus-operator's CRDs (build.sh monitoring-crds), for e2e/check-chart-monitoring.sh.
export FREIGHT_MONITORING_CRDS="$FREIGHT_CACHE/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"

# freight_tool_bin NAME VERSION DIR: cache directory of a checker built from our own
# source in DIR (go/kstatus, go/argocd-lua): keyed by the upstream version and a hash of
# main.go, go.mod and go.sum, so an edited checker is rebuilt, never served stale.
freight_tool_bin() {
  local hash
  hash=$(cat "$3/main.go" "$3/go.mod" "$3/go.sum" 2>/dev/null | sha256sum | cut -c1-12)
  printf '%s\n' "$FREIGHT_CACHE/bin/$1-$2-$hash"
}
FREIGHT_BIN_KSTATUS=$(freight_tool_bin kstatus-check "$CLI_UTILS_VERSION" "$FREIGHT_CLUSTER_DIR/go/kstatus")
FREIGHT_BIN_ARGOCD_LUA=$(freight_tool_bin argocd-lua-health "$GOPHER_LUA_VERSION" "$FREIGHT_CLUSTER_DIR/go/argocd-lua")
export FREIGHT_BIN_KSTATUS FREIGHT_BIN_ARGOCD_LUA

for _freight_d in "$FREIGHT_BIN_ARGOCD_LUA" "$FREIGHT_BIN_KSTATUS" \
  "$FREIGHT_BIN_PROMETHEUS" "$FREIGHT_BIN_HELM" "$FREIGHT_BIN_KWOK" "$FREIGHT_BIN_ETCD" "$FREIGHT_BIN_KUBERNETES"; do
  case ":$PATH:" in
    *":$_freight_d:"*) ;;
    *) PATH="$_freight_d:$PATH" ;;
  esac
done
unset _freight_d
export PATH

# Admin (system:masters) kubeconfig of the running cluster, written by up.sh.
export KUBECONFIG="$FREIGHT_E2E_STATE/kubeconfig"
# The audit log (Metadata level, writes only; see audit-policy.yaml).
export FREIGHT_AUDIT_LOG="$FREIGHT_E2E_STATE/audit.log"
