#!/usr/bin/env bash
# Stop every process started by up.sh (by recorded pid only) and remove the state dir.
set -euo pipefail

# shellcheck source=e2e/cluster/lib.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

main() {
  local i reversed=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do reversed+=("${COMPONENTS[i]}"); done
  stop_components "${reversed[@]}"
  case "$STATE" in
    "" | / | "$HOME") die "refusing to remove state dir '$STATE'" ;;
  esac
  if [[ -d "$STATE" ]]; then
    rm -rf "$STATE"
    log "removed $STATE"
  fi
}

main "$@"
