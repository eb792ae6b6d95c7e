#!/usr/bin/env bash
# Print the chart's alerting rules as a Prometheus rule file (the PrometheusRule's .spec),
# for promtool or a plain Prometheus (rule_files:). Extra arguments go to helm template:
#
#   charts/freight/tests/render-rules.sh > rules.yaml
#   charts/freight/tests/render-rules.sh --set metrics.prometheusRule.jobStalledFor=1m \
#     --set-string 'metrics.prometheusRule.operatorSelector=job="freight"' > rules.yaml
#
# Release "freight" in namespace "freight-system" (what alerts_test.yaml assumes);
# needs helm on PATH (source e2e/cluster/env.sh).
set -euo pipefail
chart="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
object=$(helm template freight "$chart" --namespace freight-system \
  --set metrics.prometheusRule.enabled=true "$@" --show-only templates/prometheusrule.yaml)
# The object's .spec (its last top-level key) dedented by two spaces is the rule file.
rules=$(awk 'spec && /^[^ #]/ { exit } spec { print substr($0, 3) } /^spec:$/ { spec = 1 }' <<<"$object")
grep -q '^groups:' <<<"$rules" || { echo "render-rules: no .spec.groups in the rendered PrometheusRule" >&2; exit 1; }
printf '%s\n' "$rules"
