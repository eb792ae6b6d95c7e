#!/usr/bin/env bash
# Start (or reuse) the local Freight e2e control plane:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes).
# No container runtime, no kubelet: kwok fakes Nodes and Pod status.
# Idempotent: a healthy running cluster is reused. State: ${FREIGHT_E2E_STATE:-/tmp/freight-e2e}.
# Prints the admin KUBECONFIG path on stdout (last line).
#
# Env: FREIGHT_E2E_NODES (default 2) fake nodes; FREIGHT_E2E_NODE_CPU/MEMORY/PODS per node.
set -euo pipefail

# shellcheck source=e2e/cluster/lib.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

NODES=${FREIGHT_E2E_NODES:-2}
NODE_CPU=${FREIGHT_E2E_NODE_CPU:-32}
NODE_MEMORY=${FREIGHT_E2E_NODE_MEMORY:-256Gi}
NODE_PODS=${FREIGHT_E2E_NODE_PODS:-250}
SERVICE_CIDR=10.96.0.0/16 # virtual only: nothing is routed
START=$(date +%s)

ensure_binaries() {
  local b missing=0
  for b in "$FREIGHT_BIN_KUBERNETES"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl} \
    "$FREIGHT_BIN_ETCD/etcd" "$FREIGHT_BIN_KWOK/kwok"; do
    [[ -x "$b" ]] || missing=1
  done
  if ((missing)); then
    log "binaries missing; running build.sh (cold build takes a while)"
    "$FREIGHT_CLUSTER_DIR/build.sh" >&2
  fi
}

cluster_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  [[ -s "$KUBECONFIG" ]] && apiserver_ready
}

# ------------------------------------------------------------------ PKI
# sign NAME CA SUBJECT EXTENSIONS: key + cert signed by CA (RSA 2048, 10 years).
sign() {
  local name=$1 ca=$2 subj=$3 ext=$4
  openssl req -new -nodes -newkey rsa:2048 -keyout "$PKI/$name.key" -out "$PKI/$name.csr" \
    -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 3650 -sha256 -out "$PKI/$name.crt" \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext") \
    2>/dev/null
  rm -f "$PKI/$name.csr"
}

new_ca() {
  openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$PKI/$1.key" -out "$PKI/$1.crt" \
    -days 3650 -sha256 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

client() { sign "$1" ca "$2" "extendedKeyUsage=clientAuth"; }

gen_pki() {
  [[ -f "$PKI/.complete" ]] && return 0
  log "generating certificates in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  new_ca ca freight-e2e-ca
  sign apiserver ca "/CN=kube-apiserver" \
    "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # apiserver -> kubelet client identity (unused by kwok, but conventional).
  client apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client"
  client admin "/O=system:masters/CN=kubernetes-admin"
  # Distinct identities make the audit log readable (who wrote what).
  client kube-controller-manager "/CN=system:kube-controller-manager"
  client kube-scheduler "/CN=system:kube-scheduler"
  client kwok "/O=system:masters/CN=kwok-controller"
  # Aggregation layer: front-proxy CA and the client cert the apiserver proxies with.
  new_ca front-proxy-ca freight-e2e-front-proxy-ca
  sign front-proxy-client front-proxy-ca "/CN=front-proxy-client" "extendedKeyUsage=clientAuth"
  # Service-account token signing key pair.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  touch "$PKI/.complete"
}

# kubeconfig FILE USER_CERT_NAME: kubeconfig with embedded CA and client cert.
write_kubeconfig() {
  local file=$1 user=$2 k=(kubectl --kubeconfig "$1")
  rm -f "$file"
  "${k[@]}" config set-cluster freight-e2e --server="$FREIGHT_APISERVER_URL" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials "$user" --client-certificate="$PKI/$user.crt" \
    --client-key="$PKI/$user.key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context "$user@freight-e2e" --cluster=freight-e2e --user="$user" >/dev/null
  "${k[@]}" config use-context "$user@freight-e2e" >/dev/null
  chmod 600 "$file"
}

# ------------------------------------------------------------------ components
start_etcd() {
  start_component etcd "$FREIGHT_BIN_ETCD/etcd" \
    --name=freight-e2e \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$FREIGHT_ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$FREIGHT_ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$FREIGHT_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$FREIGHT_ETCD_PEER_PORT" \
    --initial-cluster="freight-e2e=http://127.0.0.1:$FREIGHT_ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn
  wait_for "etcd healthy" 60 curl -fsS --max-time 2 "http://127.0.0.1:$FREIGHT_ETCD_PORT/health"
}

start_apiserver() {
  start_component kube-apiserver "$FREIGHT_BIN_KUBERNETES/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$FREIGHT_ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$FREIGHT_APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --audit-policy-file="$FREIGHT_CLUSTER_DIR/audit-policy.yaml" \
    --audit-log-path="$STATE/audit.log" \
    --audit-log-format=json \
    --audit-log-mode=blocking \
    --audit-log-maxsize=0 \
    --profiling=false
  wait_for "kube-apiserver /readyz" 180 apiserver_ready
}

start_controller_manager() {
  local kc="$STATE/kube-controller-manager.kubeconfig"
  write_kubeconfig "$kc" kube-controller-manager
  start_component kube-controller-manager "$FREIGHT_BIN_KUBERNETES/kube-controller-manager" \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$FREIGHT_KCM_PORT" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --horizontal-pod-autoscaler-sync-period=5s \
    --leader-elect=false \
    --profiling=false
}

start_scheduler() {
  local kc="$STATE/kube-scheduler.kubeconfig"
  write_kubeconfig "$kc" kube-scheduler
  start_component kube-scheduler "$FREIGHT_BIN_KUBERNETES/kube-scheduler" \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$FREIGHT_SCHEDULER_PORT" \
    --leader-elect=false \
    --profiling=false
}

# Only nodes annotated kwok.x-k8s.io/node=fake are faked. Node InternalIP is loopback so
# nothing ever dials a fake address; pod IPs come from --cidr and are never routed.
start_kwok() {
  local kc="$STATE/kwok.kubeconfig"
  write_kubeconfig "$kc" kwok
  start_component kwok "$FREIGHT_BIN_KWOK/kwok" \
    --kubeconfig="$kc" \
    --config="$FREIGHT_CLUSTER_DIR/kwok/kwok.yaml" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    --cidr=10.0.0.1/24 \
    --node-lease-duration-seconds=40
}

create_nodes() {
  local i
  for i in $(seq 1 "$NODES"); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: fake-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: fake-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: zone-$i
status:
  allocatable: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
  capacity: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
EOF
  done | kubectl apply -f - >&2
}

main() {
  ensure_binaries
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  if cluster_healthy; then
    log "reusing the running cluster in $STATE"
  else
    if [[ -d "$STATE" ]]; then
      log "found stale/unhealthy state in $STATE; cleaning it up first"
      "$FREIGHT_CLUSTER_DIR/down.sh"
    fi
    local p
    for p in "$FREIGHT_ETCD_PORT" "$FREIGHT_ETCD_PEER_PORT" "$FREIGHT_APISERVER_PORT" \
      "$FREIGHT_KCM_PORT" "$FREIGHT_SCHEDULER_PORT"; do
      port_free "$p" || die "127.0.0.1:$p is already in use (another cluster? set FREIGHT_*_PORT)"
    done
    mkdir -p "$STATE" "$RUN" "$LOGS"
    gen_pki
    write_kubeconfig "$STATE/kubeconfig.tmp" admin
    start_etcd
    start_apiserver
    mv "$STATE/kubeconfig.tmp" "$KUBECONFIG"
    start_controller_manager
    start_scheduler
    start_kwok
  fi
  create_nodes
  wait_for "$NODES fake node(s) Ready" 120 kubectl wait --for=condition=Ready node \
    -l type=kwok --timeout=5s
  wait_for "default ServiceAccount" 60 kubectl -n default get serviceaccount default
  log "cluster up in $(($(date +%s) - START))s: $FREIGHT_APISERVER_URL ($K8S_VERSION)"
  log "  source $FREIGHT_CLUSTER_DIR/env.sh   # PATH + KUBECONFIG"
  log "  logs: $LOGS   audit: $STATE/audit.log"
  echo "$KUBECONFIG"
}

main "$@"
