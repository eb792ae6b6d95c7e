#!/usr/bin/env bash
# Write a kubeconfig that authenticates as a ServiceAccount of the running e2e cluster
# (bound token from the TokenRequest API), so an out-of-cluster process - e.g. the
# operator under test - runs with exactly the RBAC its Helm chart grants.
#
# Usage: sa-kubeconfig.sh NAMESPACE SERVICEACCOUNT [OUTPUT] [DURATION]
#   OUTPUT defaults to $FREIGHT_E2E_STATE/<namespace>-<sa>.kubeconfig (printed on stdout)
#   DURATION defaults to 24h. The ServiceAccount must already exist.
set -euo pipefail

# shellcheck source=e2e/cluster/lib.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

(($# >= 2)) || die "usage: $0 NAMESPACE SERVICEACCOUNT [OUTPUT] [DURATION]"
ns=$1
sa=$2
out=${3:-$STATE/$ns-$sa.kubeconfig}
duration=${4:-24h}

token=$(kubectl -n "$ns" create token "$sa" --duration="$duration")
k=(kubectl --kubeconfig "$out")
rm -f "$out"
"${k[@]}" config set-cluster freight-e2e --server="$FREIGHT_APISERVER_URL" \
  --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
"${k[@]}" config set-credentials "$ns-$sa" --token="$token" >/dev/null
"${k[@]}" config set-context "$ns-$sa@freight-e2e" --cluster=freight-e2e --user="$ns-$sa" \
  --namespace="$ns" >/dev/null
"${k[@]}" config use-context "$ns-$sa@freight-e2e" >/dev/null
chmod 600 "$out"
echo "$out"
