#!/usr/bin/env bash
# make bench: Freight through the operator vs a raw binary COPY pipe, same machine,
# same PostgreSQL server (default settings), same 1M-row contacts table.
#
# For each of FREIGHT_BENCH_RUNS (3) runs, into a fresh empty target table with the
# same schema (primary key included):
#   (a) freight: `kubectl apply` a MigrationJob with default settings (the spec has only
#       source and target) and time until its phase is Succeeded; the phase changes are
#       timestamped as they arrive on a watch. Then check count and checksum.
#   (b) pipe:    psql -c "COPY contacts TO STDOUT (FORMAT binary)" legacy
#                | psql -c "COPY contacts FROM STDIN (FORMAT binary)" crm
# Prints every run, the median of each and the ratio median(freight) / median(pipe),
# ending with `bench: freight <n> rows/s, pipe <m> rows/s, ratio <r>`.
#
# Env: FREIGHT_BENCH_ROWS (1000000), FREIGHT_BENCH_RUNS (3), FREIGHT_BENCH_TIMEOUT per
#      job (900 s), FREIGHT_BENCH_PROFILE (release | debug build of freight),
#      FREIGHT_BENCH_PG_PORT (55433), FREIGHT_BENCH_LOGS (/tmp/freight-bench-logs),
#      FREIGHT_BENCH_SPEC (one extra spec line for experiments; the default is none),
#      FREIGHT_E2E_STATE, FREIGHT_*_PORT (another control plane, see e2e/cluster/env.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh
# shellcheck source=e2e/lib/pg.sh
source e2e/lib/pg.sh
# shellcheck source=e2e/lib/freight.sh
source e2e/lib/freight.sh
exec 2>&1 # one stream: step lines and command output stay in order when captured

NS=freight-bench
JOB=contacts
ROWS=${FREIGHT_BENCH_ROWS:-1000000}
RUNS=${FREIGHT_BENCH_RUNS:-3}
TIMEOUT=${FREIGHT_BENCH_TIMEOUT:-900}
PROFILE=${FREIGHT_BENCH_PROFILE:-release}
PG_PORT=${FREIGHT_BENCH_PG_PORT:-55433}
LOGS=${FREIGHT_BENCH_LOGS:-/tmp/freight-bench-logs}
# One extra line for the job's spec, for experiments only (default: none, i.e. defaults),
# e.g. FREIGHT_BENCH_SPEC='workers: { min: 4, max: 4 }'.
SPEC_EXTRA=${FREIGHT_BENCH_SPEC:-}
RESULTS=$LOGS/results.txt

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}
# sub A B: B - A (seconds, 3 decimals). rate SECONDS: rows/s.
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", r / s }'; }
# median N...: the median of the numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

mkdir -p "$LOGS"
: >"$RESULTS"
PG_DIR=""
WATCH_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$WATCH_PID" ]] && kill "$WATCH_PID" 2>/dev/null
  if ((rc != 0)); then
    printf '\nbench: FAILED (exit %s). Logs: %s\n' "$rc" "$LOGS" >&2
    [[ -f "$LOGS/operator.log" ]] && { echo "--- last operator log lines" >&2; grep -v "NOTICE: " "$LOGS/operator.log" | tail -n 15 | sed 's/\x1b\[[0-9;]*m//g' >&2; }
  fi
  if [[ -d "$FREIGHT_E2E_STATE/pods" ]]; then rm -rf "$LOGS/pods" && cp -r "$FREIGHT_E2E_STATE/pods" "$LOGS/"; fi
  step "cleaning up"
  freight_teardown "$NS" "$JOB" "$PG_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "checking tools and packages"
bash e2e/cluster/build.sh 2>"$LOGS/build-tools.log" || {
  tail -n 20 "$LOGS/build-tools.log" >&2
  die "building the control plane failed"
}
pg_ensure_packages

step "control plane"
freight_cluster_up "$LOGS"

step "PostgreSQL on 127.0.0.1:$PG_PORT (default server settings)"
PG_DIR=$(mktemp -d /tmp/freight-pg.XXXXXX)
pg_start "$PG_DIR" "$PG_PORT"
pg_sql postgres "CREATE DATABASE legacy" >/dev/null
pg_sql postgres "CREATE DATABASE crm" >/dev/null
t=$EPOCHREALTIME
pg_seed_contacts legacy "$ROWS"
SOURCE_SUM=$(pg_checksum legacy)
printf 'seeded legacy.public.contacts with %s rows in %ss\n' "$ROWS" "$(sub "$t" "$EPOCHREALTIME")" >&2

step "building freight and the pod runner ($PROFILE)"
flags=()
[[ "$PROFILE" == release ]] && flags=(--release)
cargo build -q "${flags[@]}" --bin freight -p freight --bin pod-runner -p freight-e2e
BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE

step "installing the CRD, namespace $NS, operator and pod runner"
freight_install_crd
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
FREIGHT_LOG_FORMAT=json freight_start "$LOGS" "$BIN" "$NS"
freight_delete_job "$NS" "$JOB"
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: { name: legacy-db }
stringData: { url: "$(pg_url legacy)" }
---
apiVersion: v1
kind: Secret
metadata: { name: new-db }
stringData: { url: "$(pg_url crm)" }
EOF

# A fresh, empty target table (same schema, primary key) and no ledger; a checkpoint
# so that no run pays for the previous one's dirty pages.
fresh_target() {
  pg_sql crm "DROP SCHEMA IF EXISTS freight CASCADE" >/dev/null
  pg_create_contacts crm
  pg_sql postgres "CHECKPOINT" >/dev/null
}

# freight_run N: sets, in seconds, RUN_TOTAL (apply → phase Succeeded), RUN_RUNNING
# (first Running → Succeeded), RUN_PLANNING (the operator's own measure, from its log)
# RUN_WORKERS (most ready) and RUN_BREAKDOWN (where the time went, from the ledger).
freight_run() {
  local n=$1 wlog=$LOGS/watch-$1.log fifo=$LOGS/watch.fifo t_apply line ts ph
  freight_delete_job "$NS" "$JOB"
  fresh_target
  # Phase changes, timestamped on arrival (a watch: no polling load on the machine).
  rm -f "$fifo"
  mkfifo "$fifo"
  kubectl -n "$NS" get mj --field-selector "metadata.name=$JOB" -w \
    -o jsonpath='{.status.phase}{" "}{.status.processedRecords}{" "}{.status.workers.ready}{"\n"}' \
    >"$fifo" 2>/dev/null &
  WATCH_PID=$!
  while read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done <"$fifo" >"$wlog" &
  sleep 1 # let the watch establish before the job exists
  local log_lines
  log_lines=$(wc -l <"$LOGS/operator.log")
  t_apply=$EPOCHREALTIME
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: freight.dev/v1alpha1
kind: MigrationJob
metadata: { name: $JOB }
spec:
  source:
    postgres: { connectionSecretRef: { name: legacy-db, key: url }, table: contacts, keyColumn: id }
  target:
    postgres: { connectionSecretRef: { name: new-db, key: url }, table: contacts }
${SPEC_EXTRA:+  $SPEC_EXTRA}
EOF
  local deadline=$((SECONDS + TIMEOUT)) end="" hpa_at=$((SECONDS + 15))
  until end=$(awk '$2 ~ /^(Succeeded|CompletedWithErrors|Failed)$/ { print; exit }' "$wlog") && [[ -n "$end" ]]; do
    if ((hpa_at && SECONDS >= hpa_at)); then # what the autoscaler sees, once per run
      kubectl -n "$NS" get hpa -o yaml >"$LOGS/hpa-$n.yaml" 2>&1 || true
      hpa_at=0
    fi
    ((SECONDS < deadline)) || die "run $n: job not finished after ${TIMEOUT}s: $(tail -n 1 "$wlog")"
    kill -0 "$FREIGHT_OPERATOR_PID" 2>/dev/null || die "the operator exited (see $LOGS/operator.log)"
    sleep 0.5
  done
  kill "$WATCH_PID" 2>/dev/null
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
  rm -f "$fifo"
  read -r ts ph _ <<<"$end"
  [[ "$ph" == Succeeded ]] || die "run $n: the job ended in phase $ph (status: $(kubectl -n "$NS" get mj "$JOB" -o jsonpath='{.status}'))"
  local t_run
  t_run=$(awk '$2 == "Running" { print $1; exit }' "$wlog")
  RUN_PLANNING=$(tail -n +"$((log_lines + 1))" "$LOGS/operator.log" |
    jq -Rr 'fromjson? | select(.message == "planned") | .seconds' | tail -n 1)
  RUN_PLANNING=$(awk -v s="${RUN_PLANNING:--1}" 'BEGIN { if (s < 0) print "-"; else printf "%.1f", s }')
  # The ledger's clock (same host clock as $EPOCHREALTIME). finished_at is now(), i.e.
  # when the batch's write transaction began, not when it committed.
  local planned first last
  read -r planned first last < <(pg_sql crm "SELECT extract(epoch FROM j.planned_at),
      extract(epoch FROM min(b.finished_at)), extract(epoch FROM max(b.finished_at))
    FROM freight.jobs j JOIN freight.batches b USING (job_uid) GROUP BY j.planned_at" | tr '|' ' ')
  RUN_BREAKDOWN="apply→planned $(sub "$t_apply" "$planned")s, planned→first batch $(sub "$planned" "$first")s"
  RUN_BREAKDOWN+=", first→last batch $(sub "$first" "$last")s, last batch→Succeeded $(sub "$last" "$ts")s"
  RUN_BREAKDOWN+=" (batch times: ledger finished_at)"
  local sum
  sum=$(pg_checksum crm)
  [[ "${sum%% *}" == "$ROWS" ]] || die "run $n: target has ${sum%% *} rows, expected $ROWS"
  [[ "$sum" == "$SOURCE_SUM" ]] || die "run $n: target checksum ${sum#* } differs from the source's ${SOURCE_SUM#* }"
  RUN_TOTAL=$(sub "$t_apply" "$ts")
  RUN_RUNNING=-
  [[ -z "$t_run" ]] || RUN_RUNNING=$(sub "$t_run" "$ts")
  RUN_WORKERS=$(awk '$4 > m { m = $4 } END { print m + 0 }' "$wlog")
}

# pipe_run N: sets PIPE_SECS.
pipe_run() {
  local t0 n
  fresh_target
  t0=$EPOCHREALTIME
  psql -X -q -d "$(pg_url legacy)" -c "COPY contacts TO STDOUT (FORMAT binary)" |
    psql -X -q -d "$(pg_url crm)" -c "COPY contacts FROM STDIN (FORMAT binary)"
  PIPE_SECS=$(sub "$t0" "$EPOCHREALTIME")
  n=$(pg_sql crm "SELECT count(*) FROM contacts")
  [[ "$n" == "$ROWS" ]] || die "pipe run $1: target has $n rows, expected $ROWS"
}

step "$RUNS runs of $ROWS rows: (a) MigrationJob with default settings, (b) raw binary COPY pipe"
out "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); freight $PROFILE build; $(kubectl version -o json 2>/dev/null | jq -r '.serverVersion.gitVersion') control plane"
out "postgres: $(pg_settings)"
out "job spec: source + target only (defaults)${SPEC_EXTRA:+; plus: $SPEC_EXTRA}"
fr=() pr=()
for i in $(seq 1 "$RUNS"); do
  freight_run "$i"
  pipe_run "$i"
  fr+=("$(rate "$RUN_TOTAL")")
  pr+=("$(rate "$PIPE_SECS")")
  out "run $i: freight ${RUN_TOTAL}s = ${fr[-1]} rows/s | pipe ${PIPE_SECS}s = ${pr[-1]} rows/s"
  out "       freight: planning ${RUN_PLANNING}s (operator log), Running→Succeeded ${RUN_RUNNING}s, ${RUN_WORKERS} worker(s) ready at most"
  out "       freight: $RUN_BREAKDOWN"
done
mf=$(median "${fr[@]}")
mp=$(median "${pr[@]}")
ratio=$(awk -v a="$mf" -v b="$mp" 'BEGIN { printf "%.2f", a / b }')
out "median of $RUNS: freight $mf rows/s (runs: ${fr[*]}), pipe $mp rows/s (runs: ${pr[*]})"
out "bench: freight $mf rows/s, pipe $mp rows/s, ratio $ratio"
