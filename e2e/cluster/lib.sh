# shellcheck shell=bash
# Shared helpers for up.sh / down.sh / smoke.sh. Sourced, not executed.

# shellcheck source=e2e/cluster/env.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

STATE=$FREIGHT_E2E_STATE
PKI="$STATE/pki"
RUN="$STATE/run"   # <component>.pid
LOGS="$STATE/logs" # <component>.log
# Start order; down.sh stops in reverse.
# shellcheck disable=SC2034 # used by the scripts that source this file
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# pid_of COMPONENT: print the pid if the component is running (and really is ours).
pid_of() {
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the command line must mention our state dir.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE" || return 1
  echo "$pid"
}

# start_component NAME BINARY ARGS...: run in its own session, pid file + log in $STATE.
start_component() {
  local name=$1
  shift
  mkdir -p "$RUN" "$LOGS"
  log "starting $name"
  # bash writes its own pid, then execs the binary (same pid): the pid file is exact.
  # setsid: the process survives the shell (and terminal/job) that ran up.sh.
  # shellcheck disable=SC2016 # $$/$0/$@ are for the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1 &
  for _ in $(seq 50); do
    [[ -s "$RUN/$name.pid" ]] && return 0
    sleep 0.1
  done
  die "$name did not start (see $LOGS/$name.log)"
}

# stop_components NAME...: TERM all of them at once, wait up to 15s, then KILL what is
# left. Only the recorded pids are signalled.
stop_components() {
  local name pid pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 150); do
    local alive=0
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not exit on TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$RUN/$name.pid"; done
}

# wait_for DESCRIPTION TIMEOUT_SECONDS CMD...: poll CMD every 0.5s.
wait_for() {
  local what=$1 timeout=$2 start
  shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) - start >= timeout)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
  log "$what: ok after $(($(date +%s) - start))s"
}

apiserver_ready() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$FREIGHT_APISERVER_URL/readyz" >/dev/null
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
