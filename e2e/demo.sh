#!/usr/bin/env bash
# make demo: one MigrationJob end to end on this machine.
#
# Builds (or reuses) the local control plane, starts a throwaway PostgreSQL on
# 127.0.0.1:55432 (role freight/freight, databases `legacy` and `crm`, exactly what
# examples/postgres-to-postgres.yaml points at), seeds legacy.contacts with 1M
# CRM-like rows, runs the operator and the pod runner (worker pods on kwok's fake
# nodes become local `freight worker` processes), applies the example unchanged and
# shows `kubectl -n crm get mj` until the job finishes. Then compares the tables,
# prints the final status, and stops everything it started.
#
# Env: FREIGHT_DEMO_KEEP=1      leave everything running (stop later: e2e/demo.sh down)
#      FREIGHT_DEMO_ROWS        rows to seed (default 1000000)
#      FREIGHT_DEMO_TIMEOUT     seconds to wait for the job (default 900)
#      FREIGHT_DEMO_LOGS        log directory (default /tmp/freight-demo-logs)
#      FREIGHT_E2E_STATE, FREIGHT_*_PORT   another control plane (see e2e/cluster/env.sh)
# Exits non-zero unless the job Succeeded and the target equals the source.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh
# shellcheck source=e2e/lib/pg.sh
source e2e/lib/pg.sh
# shellcheck source=e2e/lib/freight.sh
source e2e/lib/freight.sh
exec 2>&1 # one stream: step lines and command output stay in order when captured

NS=crm
JOB=contacts
EXAMPLE=examples/postgres-to-postgres.yaml
ROWS=${FREIGHT_DEMO_ROWS:-1000000}
TIMEOUT=${FREIGHT_DEMO_TIMEOUT:-900}
KEEP=${FREIGHT_DEMO_KEEP:-0}
LOGS=${FREIGHT_DEMO_LOGS:-/tmp/freight-demo-logs}
STATE_FILE=$LOGS/demo.state
PG_PORT=55432 # fixed: the example's Secrets say 127.0.0.1:55432

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}
# secs START: seconds since START (an $EPOCHREALTIME), one decimal.
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# `e2e/demo.sh down`: stop what a FREIGHT_DEMO_KEEP=1 run left running.
if [[ "${1:-}" == down ]]; then
  [[ -f "$STATE_FILE" ]] || die "nothing to stop ($STATE_FILE not found)"
  # shellcheck disable=SC1090
  source "$STATE_FILE"
  export FREIGHT_E2E_STATE
  # shellcheck source=e2e/cluster/env.sh disable=SC1091
  source e2e/cluster/env.sh
  kill -0 "$FREIGHT_OPERATOR_PID" 2>/dev/null && ((!FREIGHT_CLUSTER_STARTED)) &&
    { freight_delete_job "$NS" "$JOB" || true; }
  # Only our processes: each pid must still be the binary we started.
  for p in "pod-runner:$FREIGHT_RUNNER_PID" "freight operator:$FREIGHT_OPERATOR_PID"; do
    tr '\0' ' ' <"/proc/${p##*:}/cmdline" 2>/dev/null | grep -qF "${p%:*}" || continue
    freight_stop_pid "${p##*:}" "${p%:*}"
  done
  pg_stop "$PG_DIR"
  freight_cluster_down
  rm -f "$STATE_FILE"
  exit 0
fi

mkdir -p "$LOGS"
PG_DIR=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    printf '\ndemo: FAILED (exit %s). Logs: %s\n' "$rc" "$LOGS" >&2
    [[ -f "$LOGS/operator.log" ]] && { echo "--- last operator log lines" >&2; grep -v "NOTICE: " "$LOGS/operator.log" | tail -n 15 | sed 's/\x1b\[[0-9;]*m//g' >&2; }
  fi
  # Worker logs live in the cluster state dir; keep a copy next to the other logs.
  if [[ -d "$FREIGHT_E2E_STATE/pods" ]]; then rm -rf "$LOGS/pods" && cp -r "$FREIGHT_E2E_STATE/pods" "$LOGS/"; fi
  # Keep on request, but never after Ctrl-C / SIGTERM, nor when we started nothing.
  if [[ "$KEEP" == 1 && -n "$PG_DIR" ]] && ((rc != 130 && rc != 143)); then
    cat >"$STATE_FILE" <<EOF
FREIGHT_E2E_STATE=$FREIGHT_E2E_STATE
FREIGHT_OPERATOR_PID=$FREIGHT_OPERATOR_PID
FREIGHT_RUNNER_PID=$FREIGHT_RUNNER_PID
PG_DIR=$PG_DIR
FREIGHT_CLUSTER_STARTED=$FREIGHT_CLUSTER_STARTED
EOF
    printf '\nFREIGHT_DEMO_KEEP=1: still running. Try:\n' >&2
    printf '  source e2e/cluster/env.sh; kubectl -n crm describe mj contacts\n' >&2
    printf '  psql %s -c "SELECT * FROM freight.jobs"\n' "$(pg_url crm)" >&2
    printf 'Stop it all with: bash e2e/demo.sh down\n' >&2
    exit "$rc"
  fi
  step "cleaning up"
  freight_teardown "$NS" "$JOB" "$PG_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$EPOCHREALTIME
step "checking tools and packages"
bash e2e/cluster/build.sh 2>"$LOGS/build-tools.log" || {
  tail -n 20 "$LOGS/build-tools.log" >&2
  die "building the control plane failed"
}
pg_ensure_packages
pg_port_free "$PG_PORT" || {
  ss -ltnp "sport = :$PG_PORT" >&2 || true
  die "127.0.0.1:$PG_PORT is in use (another demo? stop it with: bash e2e/demo.sh down)"
}

step "control plane"
freight_cluster_up "$LOGS"

step "PostgreSQL on 127.0.0.1:$PG_PORT with databases legacy and crm"
PG_DIR=$(mktemp -d /tmp/freight-pg.XXXXXX)
pg_start "$PG_DIR" "$PG_PORT"
pg_sql postgres "CREATE DATABASE legacy" >/dev/null
pg_sql postgres "CREATE DATABASE crm" >/dev/null
t=$EPOCHREALTIME
pg_seed_contacts legacy "$ROWS"
pg_create_contacts crm
printf 'seeded legacy.public.contacts with %s rows in %ss; crm.public.contacts is empty\n' \
  "$ROWS" "$(secs "$t")" >&2

step "building freight and the pod runner"
t=$EPOCHREALTIME
cargo build -q --bin freight -p freight --bin pod-runner -p freight-e2e
printf 'built in %ss\n' "$(secs "$t")" >&2
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug

step "installing the CRD, namespace $NS, operator and pod runner"
freight_install_crd
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
freight_start "$LOGS" "$BIN" "$NS"
freight_delete_job "$NS" "$JOB" # a job left over from an earlier demo on a reused cluster

step "kubectl -n $NS apply -f $EXAMPLE"
kubectl -n "$NS" apply -f "$EXAMPLE"
START=$EPOCHREALTIME

step "kubectl -n $NS get mj (every 3s until the job finishes; timeout ${TIMEOUT}s)"
header=1
phase=""
while :; do
  flags=()
  ((header)) || flags=(--no-headers)
  if out=$(kubectl -n "$NS" get mj "${flags[@]}" 2>&1); then
    printf '%s\n' "$out"
    header=0
  fi
  phase=$(freight_phase "$NS" "$JOB")
  freight_is_terminal "$phase" && break
  kill -0 "$FREIGHT_OPERATOR_PID" 2>/dev/null || die "the operator exited (see $LOGS/operator.log)"
  (($(printf '%.0f' "$(secs "$START")") < TIMEOUT)) || die "the job is still '$phase' after ${TIMEOUT}s"
  sleep 3
done
ELAPSED=$(secs "$START")

step "result"
src=$(pg_checksum legacy)
dst=$(pg_checksum crm)
printf 'source legacy.public.contacts: %s rows\n' "${src%% *}"
printf 'target crm.public.contacts:    %s rows\n' "${dst%% *}"
if [[ "$src" == "$dst" ]]; then
  echo "checksum over every column: identical (${src#* })"
else
  echo "checksum over every column: DIFFERENT (source ${src#* }, target ${dst#* })"
fi
printf 'phase %s after %ss (%s rows/s from kubectl apply)\n' "$phase" "$ELAPSED" \
  "$(awk -v r="${dst%% *}" -v s="$ELAPSED" 'BEGIN { printf "%.0f", r / s }')"
echo "kubectl -n $NS get mj $JOB -o json | jq .status (conditions shortened):"
kubectl -n "$NS" get mj "$JOB" -o json | jq '.status | .conditions |= (. // [] | map("\(.type)=\(.status) \(.reason // "")"))'

[[ "$phase" == Succeeded ]] || die "the job ended in phase $phase, not Succeeded"
[[ "${src%% *}" == "${dst%% *}" ]] || die "row counts differ: source ${src%% *}, target ${dst%% *}"
[[ "$src" == "$dst" ]] || die "the target's rows differ from the source's"
printf '\ndemo: OK in %ss: %s rows migrated by a MigrationJob\n' "$(secs "$T0")" "${dst%% *}"
