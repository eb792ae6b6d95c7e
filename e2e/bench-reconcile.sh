#!/usr/bin/env bash
# make bench-reconcile: what the operator costs the API server and itself at steady state
# with 1,000 MigrationJobs: FREIGHT_BENCH_RUNNING (20) running, FREIGHT_BENCH_PENDING (980)
# waiting on a missing Secret (phase Pending), in one namespace the operator watches.
#
# Sets up: the control plane (reused if running), PostgreSQL on 127.0.0.1:55434 with
# legacy.contacts (FREIGHT_BENCH_ROWS, 100,000 rows) and one target table per running job
# (crm.contacts_NN) whose writes sleep FREIGHT_BENCH_SLOW (2) s per statement (a
# statement-level trigger, as the e2e scenarios do), so with batchSize 100 the running jobs
# stay Running for ~15 minutes; the operator (release build, its own client certificate
# CN=freight-bench-operator, leader election off) and the pod runner.
# Measures, after every job has its phase and FREIGHT_BENCH_SETTLE (30) s more, over
# FREIGHT_BENCH_WINDOW (60) s, from the kube-apiserver audit log (audit-policy.yaml logs
# that user's get/list as well as everyone's writes; watches are not counted):
#   api reads per running job per minute: X (total N over 60 s; by resource: …)
#   status writes per minute: …, other writes …, reconciles per minute (operator metrics)
#   operator RSS with 1000 jobs: N MiB (VmRSS at the end; sampled max and VmHWM too)
# Figures are printed, not asserted. Exits non-zero if the setup fails (jobs never reach
# their phases, the running jobs finish before the window ends, the operator exits).
# Results also in $LOGS/results.txt.
#
# Env: FREIGHT_BENCH_RUNNING, FREIGHT_BENCH_PENDING, FREIGHT_BENCH_ROWS, FREIGHT_BENCH_SLOW,
#      FREIGHT_BENCH_SETTLE, FREIGHT_BENCH_WINDOW, FREIGHT_BENCH_PROFILE (release | debug),
#      FREIGHT_BENCH_PG_PORT (55434), FREIGHT_BENCH_LOGS (/tmp/freight-bench-reconcile-logs),
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

NS=freight-bench-reconcile
RUNNING=${FREIGHT_BENCH_RUNNING:-20}
PENDING=${FREIGHT_BENCH_PENDING:-980}
TOTAL=$((RUNNING + PENDING))
ROWS=${FREIGHT_BENCH_ROWS:-100000}
SLOW=${FREIGHT_BENCH_SLOW:-2}
SETTLE=${FREIGHT_BENCH_SETTLE:-30}
WINDOW=${FREIGHT_BENCH_WINDOW:-60}
PROFILE=${FREIGHT_BENCH_PROFILE:-release}
PG_PORT=${FREIGHT_BENCH_PG_PORT:-55434}
LOGS=${FREIGHT_BENCH_LOGS:-/tmp/freight-bench-reconcile-logs}
BATCH_SIZE=100
APPLY_CHUNK=100 # MigrationJobs per `kubectl apply -f` (a multi-document file)
PHASE_TIMEOUT=600
OP_USER=freight-bench-operator # the operator's identity (and the audit policy's reader)
RESULTS=$LOGS/results.txt

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'bench-reconcile: %s\n' "$*" >&2
  exit 1
}
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
now_utc() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; } # the audit log's timestamp format
rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
# metric NAME: the operator's counter (sum over labels), from its /metrics.
metric() {
  curl -fsS --max-time 5 "http://127.0.0.1:$FREIGHT_OPERATOR_METRICS_PORT/metrics" |
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { print s + 0 }'
}
# phases: "<label> <phase>" per job (phase "-" while unset).
phases() {
  kubectl -n "$NS" get mj -o jsonpath='{range .items[*]}{.metadata.labels.bench}{" "}{.status.phase}{"\n"}{end}' |
    awk '{ print $1, ($2 == "" ? "-" : $2) }'
}
# in_phases: every job labelled running is Running, every one labelled pending Pending.
in_phases() {
  phases | awk -v r="$RUNNING" -v p="$PENDING" '$1 == "running" && $2 == "Running" { a++ }
    $1 == "pending" && $2 == "Pending" { b++ } END { exit !(a == r && b == p) }'
}
# phase_counts: e.g. "running: Running=20; pending: Pending=980".
phase_counts() {
  phases | sort | uniq -c | awk '{ k = $2; s[k] = s[k] (s[k] == "" ? "" : " ") $3 "=" $1 }
    END { for (k in s) printf "%s%s: %s", n++ ? "; " : "", k, s[k]; print "" }'
}

mkdir -p "$LOGS"
: >"$RESULTS"
PG_DIR=""
SAMPLER_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$SAMPLER_PID" ]] && { kill "$SAMPLER_PID" 2>/dev/null || true; }
  if ((rc != 0)); then
    printf '\nbench-reconcile: FAILED (exit %s). Logs: %s\n' "$rc" "$LOGS" >&2
    [[ -f "$LOGS/operator.log" ]] && { echo "--- last operator log lines" >&2; tail -n 15 "$LOGS/operator.log" | sed 's/\x1b\[[0-9;]*m//g' >&2; }
  fi
  if [[ -d "$FREIGHT_E2E_STATE/pods" ]]; then rm -rf "$LOGS/pods" && cp -r "$FREIGHT_E2E_STATE/pods" "$LOGS/"; fi
  step "cleaning up"
  # On a control plane we reuse, the jobs go while the operator runs (its finalizer stops
  # the workers), then the namespace; one this run started simply goes away.
  if [[ -n "$FREIGHT_OPERATOR_PID" ]] && ((!FREIGHT_CLUSTER_STARTED)); then
    freight_log "deleting the $TOTAL jobs and namespace $NS"
    kubectl -n "$NS" delete mj --all --wait=true --timeout=300s >/dev/null 2>&1 || true
    freight_stop
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  freight_teardown "$NS" run-01 "$PG_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$SECONDS
step "checking tools and packages"
bash e2e/cluster/build.sh 2>"$LOGS/build-tools.log" || {
  tail -n 20 "$LOGS/build-tools.log" >&2
  die "building the control plane failed"
}
pg_ensure_packages
command -v openssl >/dev/null || die "openssl is required"
pg_port_free "$PG_PORT" || die "127.0.0.1:$PG_PORT is in use (set FREIGHT_BENCH_PG_PORT)"

step "building freight and the pod runner ($PROFILE)"
t=$SECONDS
flags=()
[[ "$PROFILE" == release ]] && flags=(--release)
cargo build -q "${flags[@]}" --bin freight -p freight --bin pod-runner -p freight-e2e
BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE
printf 'built in %ss\n' "$((SECONDS - t))" >&2

step "control plane"
freight_cluster_up "$LOGS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

step "the operator's identity: client certificate CN=$OP_USER (group system:masters)"
OP_DIR=$LOGS/operator-identity
rm -rf "$OP_DIR"
mkdir -p "$OP_DIR"
chmod 700 "$OP_DIR"
openssl req -new -nodes -newkey rsa:2048 -keyout "$OP_DIR/op.key" -out "$OP_DIR/op.csr" \
  -subj "/O=system:masters/CN=$OP_USER" 2>/dev/null
openssl x509 -req -in "$OP_DIR/op.csr" -CA "$FREIGHT_E2E_STATE/pki/ca.crt" \
  -CAkey "$FREIGHT_E2E_STATE/pki/ca.key" -set_serial "0x$(openssl rand -hex 8)" -days 2 \
  -sha256 -out "$OP_DIR/op.crt" 2>/dev/null \
  -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n')
OP_KC=$OP_DIR/kubeconfig
kc=(kubectl --kubeconfig "$OP_KC")
"${kc[@]}" config set-cluster bench --server="$FREIGHT_APISERVER_URL" \
  --certificate-authority="$FREIGHT_E2E_STATE/pki/ca.crt" --embed-certs=true >/dev/null
"${kc[@]}" config set-credentials "$OP_USER" --client-certificate="$OP_DIR/op.crt" \
  --client-key="$OP_DIR/op.key" --embed-certs=true >/dev/null
"${kc[@]}" config set-context bench --cluster=bench --user="$OP_USER" >/dev/null
"${kc[@]}" config use-context bench >/dev/null
# Are this user's reads in the audit log? (Not if the control plane was started with an
# audit-policy.yaml from before the bench existed.)
off=$(stat -c %s "$FREIGHT_AUDIT_LOG")
"${kc[@]}" get namespace "$NS" >/dev/null
logged=0
for _ in $(seq 50); do
  if tail -c +"$((off + 1))" "$FREIGHT_AUDIT_LOG" | grep -F "\"username\":\"$OP_USER\"" |
    jq -e -s 'any(.verb == "get" and .objectRef.resource == "namespaces")' >/dev/null; then
    logged=1
    break
  fi
  sleep 0.2
done
((logged)) || die "the control plane's audit log does not record reads of $OP_USER: it was started
with an older e2e/cluster/audit-policy.yaml. Restart it (make cluster-down), or run on another one
(FREIGHT_E2E_STATE and FREIGHT_*_PORT, see e2e/cluster/README.md)."
echo "the audit log records $OP_USER's get/list ($FREIGHT_AUDIT_LOG)" >&2

step "PostgreSQL on 127.0.0.1:$PG_PORT: legacy.contacts ($ROWS rows), crm.contacts_01..$RUNNING (writes sleep ${SLOW}s)"
PG_DIR=$(mktemp -d /tmp/freight-pg.XXXXXX)
pg_start "$PG_DIR" "$PG_PORT" -c max_connections=400
pg_sql postgres "CREATE DATABASE legacy" >/dev/null
pg_sql postgres "CREATE DATABASE crm" >/dev/null
pg_seed_contacts legacy "$ROWS"
pg_sql crm "CREATE FUNCTION freight_bench_slow() RETURNS trigger LANGUAGE plpgsql AS
  \$\$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END \$\$" >/dev/null
for i in $(seq -f %02g 1 "$RUNNING"); do
  pg_sql crm "${PG_CONTACTS_DDL/CREATE TABLE contacts/CREATE TABLE contacts_$i};
    CREATE TRIGGER slow BEFORE INSERT ON contacts_$i
      FOR EACH STATEMENT EXECUTE FUNCTION freight_bench_slow('$SLOW')" >/dev/null
done
printf 'each running job: %s batches of %s rows, 2 at a time, >= %ss each: ~%s min\n' \
  "$((ROWS / BATCH_SIZE))" "$BATCH_SIZE" "$SLOW" "$((ROWS / BATCH_SIZE * SLOW / 2 / 60))" >&2

step "CRD, operator (watching $NS) and pod runner"
freight_install_crd
off_run=$(stat -c %s "$FREIGHT_AUDIT_LOG")
FREIGHT_OPERATOR_KUBECONFIG=$OP_KC FREIGHT_LOG_FORMAT=json freight_start "$LOGS" "$BIN" "$NS"
OP_PID=$FREIGHT_OPERATOR_PID
# VmRSS every second for the whole run: "<seconds since start> <KiB>".
(while kill -0 "$OP_PID" 2>/dev/null; do
  printf '%s %s\n' "$SECONDS" "$(rss_kib "$OP_PID")"
  sleep 1
done) >"$LOGS/rss.txt" 2>/dev/null &
SAMPLER_PID=$!
if [[ -n $(kubectl -n "$NS" get mj -o name 2>/dev/null) ]]; then
  freight_log "deleting jobs left over from an earlier run"
  kubectl -n "$NS" delete mj --all --wait=true --timeout=300s >/dev/null
fi

# jobs_yaml KIND FROM TO: MigrationJobs (multi-document YAML), numbered FROM..TO.
jobs_yaml() {
  local kind=$1 i name src dst table
  for ((i = $2; i <= $3; i++)); do
    if [[ $kind == running ]]; then
      printf -v name 'run-%02d' "$i"
      printf -v src 'src-%02d' "$i"
      printf -v dst 'dst-%02d' "$i"
      printf -v table 'contacts_%02d' "$i"
    else
      printf -v name 'wait-%04d' "$i"
      src=missing-$name dst=missing-$name table=contacts
    fi
    cat <<EOF
---
apiVersion: freight.dev/v1alpha1
kind: MigrationJob
metadata: { name: $name, labels: { bench: $kind } }
spec:
  source:
    postgres: { connectionSecretRef: { name: $src, key: url }, table: contacts, keyColumn: id }
  target:
    postgres: { connectionSecretRef: { name: $dst, key: url }, table: $table }
  batchSize: $BATCH_SIZE
EOF
  done
}

step "$RUNNING running jobs (one source and one target Secret each)"
t=$SECONDS
for i in $(seq -f %02g 1 "$RUNNING"); do
  cat <<EOF
---
apiVersion: v1
kind: Secret
metadata: { name: src-$i }
stringData: { url: "$(pg_url legacy)" }
---
apiVersion: v1
kind: Secret
metadata: { name: dst-$i }
stringData: { url: "$(pg_url crm)" }
EOF
done >"$LOGS/secrets.yaml"
kubectl -n "$NS" apply -f "$LOGS/secrets.yaml" >/dev/null
jobs_yaml running 1 "$RUNNING" >"$LOGS/jobs-running.yaml"
kubectl -n "$NS" apply -f "$LOGS/jobs-running.yaml" >/dev/null
deadline=$((SECONDS + PHASE_TIMEOUT))
until [[ $(phases | awk '$1 == "running" && $2 == "Running"' | wc -l) -ge $RUNNING ]]; do
  ((SECONDS < deadline)) || die "the running jobs did not all reach Running: $(phase_counts)"
  kill -0 "$OP_PID" 2>/dev/null || die "the operator exited (see $LOGS/operator.log)"
  sleep 3
done
printf '%s jobs Running after %ss\n' "$RUNNING" "$((SECONDS - t))" >&2

step "$PENDING jobs waiting on a missing Secret (kubectl apply, $APPLY_CHUNK per file)"
t=$SECONDS
for ((from = 1; from <= PENDING; from += APPLY_CHUNK)); do
  to=$((from + APPLY_CHUNK - 1))
  ((to <= PENDING)) || to=$PENDING
  jobs_yaml pending "$from" "$to" >"$LOGS/jobs-pending.yaml"
  kubectl -n "$NS" apply -f "$LOGS/jobs-pending.yaml" >/dev/null
done
printf 'applied in %ss\n' "$((SECONDS - t))" >&2
deadline=$((SECONDS + PHASE_TIMEOUT))
while :; do
  in_phases && break
  counts=$(phase_counts)
  ((SECONDS < deadline)) || die "after ${PHASE_TIMEOUT}s the jobs are not all in their phases: $counts"
  kill -0 "$OP_PID" 2>/dev/null || die "the operator exited (see $LOGS/operator.log)"
  printf '  %s\n' "$counts" >&2
  sleep 5
done
printf 'all %s jobs in their phase %ss after the first pending one was applied (%s)\n' \
  "$TOTAL" "$((SECONDS - t))" "$(phase_counts)" >&2

step "settling for ${SETTLE}s, then counting for ${WINDOW}s"
sleep "$SETTLE"
off=$(stat -c %s "$FREIGHT_AUDIT_LOG")
rec0=$(metric freight_reconciles_total)
err0=$(metric freight_reconcile_errors_total)
log0=$(wc -l <"$LOGS/operator.log")
w0=$(now_utc)
sleep "$WINDOW"
w1=$(now_utc)
rec1=$(metric freight_reconciles_total)
err1=$(metric freight_reconcile_errors_total)
log1=$(wc -l <"$LOGS/operator.log")
rss_end=$(rss_kib "$OP_PID")
hwm=$(rss_kib "$OP_PID" VmHWM)
counts=$(phase_counts)
sleep 2 # an audit line can land a little after its response
tail -c +"$((off + 1))" "$FREIGHT_AUDIT_LOG" | grep -F "\"username\":\"$OP_USER\"" |
  jq -c --arg t0 "$w0" --arg t1 "$w1" 'select(.requestReceivedTimestamp >= $t0 and .requestReceivedTimestamp < $t1)
    | { verb, resource: (.objectRef.resource // .requestURI), sub: (.objectRef.subresource // ""),
        name: (.objectRef.name // "") }' >"$LOGS/window.jsonl"
tail -c +"$((off_run + 1))" "$FREIGHT_AUDIT_LOG" | grep -F "\"username\":\"$OP_USER\"" |
  jq -c '{ verb, resource: (.objectRef.resource // .requestURI), sub: (.objectRef.subresource // ""),
    name: (.objectRef.name // "") }' >"$LOGS/run.jsonl"
kill -0 "$OP_PID" 2>/dev/null || die "the operator exited during the window (see $LOGS/operator.log)"
in_phases || die "the jobs did not all stay in their phases through the window: $counts"

step "results"
# breakdown FILTER: "resource N, …" of the window's requests matching FILTER, most first.
breakdown() {
  jq -r -s "map(select($1)) | group_by(.resource + (if .sub != \"\" then \"/\" + .sub else \"\" end))
    | map({ k: (.[0].resource + (if .[0].sub != \"\" then \"/\" + .[0].sub else \"\" end)), n: length })
    | sort_by(-.n) | map(\"\(.k) \(.n)\") | join(\", \") | if . == \"\" then \"none\" else . end" \
    "${2:-$LOGS/window.jsonl}"
}
count() { jq -s "map(select($1)) | length" "${2:-$LOGS/window.jsonl}"; }
per_min() { awk -v n="$1" -v w="$WINDOW" -v d="${2:-1}" 'BEGIN { printf "%.1f", n * 60 / w / d }'; }
READ='.verb == "get" or .verb == "list"'
reads=$(count "$READ")
reads_missing=$(count "($READ) and .resource == \"secrets\" and (.name | startswith(\"missing-\"))")
status_writes=$(count '(.verb == "patch" or .verb == "update") and .sub == "status"')
other_writes=$(count '(.verb != "get" and .verb != "list" and .verb != "watch") and .sub != "status"')
rss_max=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$LOGS/rss.txt")
warns=$(tail -n +"$((log0 + 1))" "$LOGS/operator.log" | head -n "$((log1 - log0))" |
  jq -R -r 'fromjson? | select(.level == "WARN" or .level == "ERROR") | "\(.level) \(.fields.message // .message // "")"' |
  sort | uniq -c | sort -rn | head -n 5 | awk '{ $1 = $1 "×"; print }' | paste -sd ';' -)

out "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); freight $PROFILE build ($(git rev-parse --short HEAD 2>/dev/null || echo '?')); $(kubectl version -o json 2>/dev/null | jq -r '.serverVersion.gitVersion') control plane"
out "jobs: $TOTAL in namespace $NS ($counts); window ${WINDOW}s after ${SETTLE}s of settling"
out "api reads per running job per minute: $(per_min "$reads" "$RUNNING") (total $reads over ${WINDOW} s; by resource: $(breakdown "$READ"); of the secrets, $reads_missing for pending jobs' missing Secrets)"
out "api reads since the operator started (setup included): $(count "$READ" "$LOGS/run.jsonl") ($(breakdown "$READ" "$LOGS/run.jsonl"))"
out "status writes per minute: $(per_min "$status_writes") ($(per_min "$status_writes" "$RUNNING") per running job); other writes per minute: $(per_min "$other_writes") ($(breakdown '(.verb != "get" and .verb != "list" and .verb != "watch") and .sub != "status"'))"
out "reconciles per minute: $(per_min "$((rec1 - rec0))") (errors: $((err1 - err0))); operator log in the window: $((log1 - log0)) lines${warns:+; warnings/errors: $warns}"
out "operator RSS with $TOTAL jobs: $(mib "$rss_end") MiB (VmRSS at the end of the window; max sampled every 1 s over the run $(mib "$rss_max") MiB, VmHWM $(mib "$hwm") MiB)"
printf '\nbench-reconcile: done in %ss (audit lines of the window: %s)\n' "$((SECONDS - T0))" "$LOGS/window.jsonl" >&2
