# shellcheck shell=bash
# Run Freight locally against the e2e control plane, for `make demo` and `make bench`:
# the operator as a local process and the pod runner that backs worker pods (scheduled
# on kwok's fake nodes) with local `freight worker` processes. Sourced, not executed;
# expects e2e/cluster/env.sh to be sourced (KUBECONFIG, PATH, FREIGHT_E2E_STATE).
#
#   freight_free_port BASE              first free loopback port from BASE upwards
#   freight_start DIR BIN_DIR NAMESPACE operator (watching NAMESPACE) + pod runner;
#                                       logs in DIR; sets FREIGHT_OPERATOR_PID, FREIGHT_RUNNER_PID
#   freight_stop                        stop both (SIGTERM, wait, SIGKILL after 20s)
#   freight_install_crd                 apply the CRD and wait until it is Established
#   freight_phase NS NAME               the job's .status.phase ("" when unset)

FREIGHT_OPERATOR_PID=${FREIGHT_OPERATOR_PID:-}
FREIGHT_RUNNER_PID=${FREIGHT_RUNNER_PID:-}
FREIGHT_WORKER_SELECTOR="app.kubernetes.io/part-of=freight,app.kubernetes.io/component=worker"

freight_log() { printf '[freight %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

freight_free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

freight_install_crd() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  kubectl apply --server-side --force-conflicts -f "$root/crds/migrationjob.yaml" >/dev/null
  kubectl wait --for=condition=Established crd/migrationjobs.freight.dev --timeout=60s >/dev/null
}

# freight_wait_http PORT PATH SECONDS: until GET answers 2xx.
freight_wait_http() {
  local port=$1 path=$2 deadline=$(($(date +%s) + $3))
  until curl -fsS --max-time 2 "http://127.0.0.1:$port$path" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || return 1
    kill -0 "$FREIGHT_OPERATOR_PID" 2>/dev/null || return 1
    sleep 0.3
  done
}

# freight_start DIR BIN_DIR NAMESPACE: BIN_DIR holds `freight` and `pod-runner`.
# Env overrides: FREIGHT_LOG_FORMAT (text), RUST_LOG (info), FREIGHT_COORDINATOR_PORT,
# FREIGHT_OPERATOR_METRICS_PORT (first free port from 18090 / 18080),
# FREIGHT_OPERATOR_KUBECONFIG (the operator's alone; default $KUBECONFIG, the admin's).
freight_start() {
  local dir=$1 bin=$2 ns=$3 coord metrics
  mkdir -p "$dir"
  coord=${FREIGHT_COORDINATOR_PORT:-$(freight_free_port 18090)}
  metrics=${FREIGHT_OPERATOR_METRICS_PORT:-$(freight_free_port 18080)}
  ((coord != metrics)) || metrics=$(freight_free_port $((coord + 1)))
  freight_log "starting the operator (watching namespace $ns; metrics :$metrics, coordinator :$coord; log $dir/operator.log)"
  KUBECONFIG=${FREIGHT_OPERATOR_KUBECONFIG:-$KUBECONFIG} \
    FREIGHT_WATCH_NAMESPACE=$ns \
    FREIGHT_METRICS_ADDR="127.0.0.1:$metrics" \
    FREIGHT_LEADER_ELECTION=false \
    POD_NAMESPACE=$ns \
    POD_NAME=freight-local \
    FREIGHT_COORDINATOR_ADDR="127.0.0.1:$coord" \
    FREIGHT_COORDINATOR_URL="http://127.0.0.1:$coord" \
    FREIGHT_WORKER_IMAGE=freight:local \
    FREIGHT_LOG_FORMAT=${FREIGHT_LOG_FORMAT:-text} \
    RUST_LOG=${RUST_LOG:-info} \
    "$bin/freight" operator </dev/null >"$dir/operator.log" 2>&1 &
  FREIGHT_OPERATOR_PID=$!
  FREIGHT_OPERATOR_METRICS_PORT=$metrics
  if ! freight_wait_http "$metrics" /readyz 60; then
    freight_log "the operator did not become ready; last lines of $dir/operator.log:"
    tail -n 30 "$dir/operator.log" >&2
    return 1
  fi
  freight_log "starting the pod runner (worker pods run as local processes; logs $FREIGHT_E2E_STATE/pods/)"
  FREIGHT_E2E_BIN="$bin/freight" \
    FREIGHT_E2E_POD_SELECTOR=$FREIGHT_WORKER_SELECTOR \
    FREIGHT_E2E_STATE=$FREIGHT_E2E_STATE \
    RUST_LOG=info \
    "$bin/pod-runner" </dev/null >"$dir/pod-runner.log" 2>&1 &
  FREIGHT_RUNNER_PID=$!
}

# freight_stop_pid PID NAME: SIGTERM, wait up to 20s, then SIGKILL (only that pid).
freight_stop_pid() {
  local pid=$1 name=$2
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  freight_log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    freight_log "$name did not exit on SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# The pod runner first: it stops the workers (SIGTERM) while the coordinator still answers.
freight_stop() {
  freight_stop_pid "$FREIGHT_RUNNER_PID" "the pod runner"
  FREIGHT_RUNNER_PID=""
  freight_stop_pid "$FREIGHT_OPERATOR_PID" "the operator"
  FREIGHT_OPERATOR_PID=""
}

freight_phase() {
  kubectl -n "$1" get mj "$2" -o jsonpath='{.status.phase}' 2>/dev/null || true
}

freight_is_terminal() {
  case "$1" in Succeeded | CompletedWithErrors | Failed) return 0 ;; *) return 1 ;; esac
}

# freight_delete_job NS NAME: delete the job and wait until it is gone (the operator
# must be running: its finalizer stops the workers first).
freight_delete_job() {
  kubectl -n "$1" delete mj "$2" --ignore-not-found --wait=true --timeout=120s >/dev/null
}

# freight_cluster_up LOGDIR: reuse the running local control plane, or start one
# (e2e/cluster/up.sh, its log in LOGDIR/cluster-up.log). Sets FREIGHT_CLUSTER_STARTED=1
# when this call started it (the caller then tears it down with freight_cluster_down).
FREIGHT_CLUSTER_STARTED=${FREIGHT_CLUSTER_STARTED:-0}
freight_cluster_up() {
  local logdir=$1 root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if kubectl get --raw /readyz >/dev/null 2>&1; then
    freight_log "reusing the running control plane ($FREIGHT_APISERVER_URL, state $FREIGHT_E2E_STATE)"
    return 0
  fi
  freight_log "starting the local control plane ($FREIGHT_APISERVER_URL, state $FREIGHT_E2E_STATE)"
  FREIGHT_CLUSTER_STARTED=1
  if ! bash "$root/e2e/cluster/up.sh" >/dev/null 2>"$logdir/cluster-up.log"; then
    tail -n 20 "$logdir/cluster-up.log" >&2
    return 1
  fi
}

freight_cluster_down() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  ((FREIGHT_CLUSTER_STARTED)) || return 0
  freight_log "stopping the control plane this run started"
  bash "$root/e2e/cluster/down.sh" >/dev/null 2>&1 || true
  FREIGHT_CLUSTER_STARTED=0
}

# Stops everything a demo or bench run started: the job (while the operator
# still runs, so its finalizer stops the workers and clears the ledger, unless
# the cluster goes away anyway), operator and pod runner, PostgreSQL, and the
# control plane if this run started it. Usage: freight_teardown NS JOB PG_DIR
freight_teardown() {
  if [[ -n "$FREIGHT_OPERATOR_PID" ]] && ((!FREIGHT_CLUSTER_STARTED)); then
    freight_delete_job "$1" "$2" || true
  fi
  freight_stop
  pg_stop "$3"
  freight_cluster_down
}
