#!/usr/bin/env bash
# make alerts-test: the chart's PrometheusRule checked and unit-tested with promtool.
#
#  1-2. render-rules.sh: helm template with metrics.prometheusRule.enabled=true (release
#     "freight", namespace "freight-system", what the unit tests assume); the rule file
#     Prometheus would load is the object's .spec, written into a temp dir;
#  3. promtool check rules (syntax, PromQL, templates of the annotations);
#  4. every alert has summary, description and a runbook_url whose section exists in
#     docs/runbooks.md, and a unit test that fires and one that stays silent;
#  5. promtool test rules charts/freight/tests/alerts_test.yaml;
#  6. the knobs: disabledAlerts drops an alert, alertLabels reach every alert, and a
#     custom operatorSelector and thresholds still give valid rules.
#
# Needs helm and promtool from e2e/cluster/build.sh (make tools) and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
# shellcheck source=e2e/cluster/env.sh disable=SC1091
source e2e/cluster/env.sh
for tool in helm promtool python3; do
  command -v "$tool" >/dev/null || { echo "alerts-test: $tool not found (run make tools)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step() { printf '[alerts-test] %s\n' "$*" >&2; }

# render OUT [helm args...]: the PrometheusRule's .spec as a Prometheus rule file.
render() {
  local out=$1
  shift
  bash charts/freight/tests/render-rules.sh "$@" >"$out"
}

step "rendering the PrometheusRule (defaults) and checking it with promtool"
render "$tmp/freight-rules.yaml"
promtool check rules --lint=all --lint-fatal "$tmp/freight-rules.yaml"

step "checking annotations, runbook sections and test coverage of every alert"
python3 - "$tmp/freight-rules.yaml" charts/freight/tests/alerts_test.yaml docs/runbooks.md <<'PY'
import re, sys
from pathlib import Path

rules_text, tests_text, runbooks = (Path(p).read_text() for p in sys.argv[1:4])
# The rendered rule file, read by line (no YAML library needed): alert names and which
# annotation keys each one has, with the one-line runbook_url.
rules, cur = [], None
for line in rules_text.splitlines():
    m = re.match(r"\s*- alert: (\S+)$", line)
    if m:
        cur = {"alert": m.group(1), "annotations": {}}
        rules.append(cur)
    m = re.match(r"\s+(summary|description|runbook_url): (.+)$", line)
    if m and cur:
        cur["annotations"][m.group(1)] = m.group(2)
headings = set(re.findall(r"^## (\S+)\s*$", runbooks, re.M))
# alertname -> outcomes seen in the unit tests ("fires" / "silent")
seen = {}
current = None
for line in tests_text.splitlines():
    m = re.match(r"\s+alertname: (\S+)", line)
    if m:
        current = m.group(1)
        continue
    if current and re.match(r"\s+exp_alerts: \[\]", line):
        seen.setdefault(current, set()).add("silent")
    elif current and re.match(r"\s+exp_alerts:\s*$", line):
        seen.setdefault(current, set()).add("fires")
problems = []
for r in rules:
    name, ann = r["alert"], r.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            problems.append(f"{name}: no {key} annotation")
    url = ann.get("runbook_url", "")
    if not url.endswith("#" + name.lower()):
        problems.append(f"{name}: runbook_url {url} does not end in #{name.lower()}")
    if name not in headings:
        problems.append(f"{name}: no '## {name}' section in docs/runbooks.md")
    missing = {"fires", "silent"} - seen.get(name, set())
    if missing:
        problems.append(f"{name}: no unit test where it {' / '.join(sorted(missing))}")
unknown = set(seen) - {r["alert"] for r in rules}
problems += [f"tests name alert {n}, which the rules do not have" for n in sorted(unknown)]
if problems:
    sys.exit("alerts-test:\n  " + "\n  ".join(problems))
print(f"[alerts-test] {len(rules)} alerts: annotations, runbook sections, firing and silent tests present", file=sys.stderr)
PY

step "promtool test rules"
cp charts/freight/tests/alerts_test.yaml "$tmp/"
(cd "$tmp" && promtool test rules alerts_test.yaml)

step "values: disabledAlerts, alertLabels, operatorSelector and thresholds"
render "$tmp/custom-rules.yaml" \
  --set 'metrics.prometheusRule.disabledAlerts={FreightRolloutRolledBack,FreightJobFailed}' \
  --set metrics.prometheusRule.alertLabels.team=data-platform \
  --set-string 'metrics.prometheusRule.operatorSelector=job="freight"\,cluster=~"prod-.*"' \
  --set metrics.prometheusRule.jobStalledFor=2m \
  --set metrics.prometheusRule.etaThresholdSeconds=3600
promtool check rules --lint=all --lint-fatal "$tmp/custom-rules.yaml"
python3 - "$tmp/freight-rules.yaml" "$tmp/custom-rules.yaml" <<'PY'
import re, sys
from pathlib import Path

default, custom = (Path(p).read_text() for p in sys.argv[1:3])
flat = lambda t: set(re.findall(r"- alert: (\w+)", t))
gone = flat(default) - flat(custom)
assert gone == {"FreightRolloutRolledBack", "FreightJobFailed"}, gone
assert custom.count("data-platform") == len(flat(custom)), "alertLabels missing on some alert"
assert 'up{job="freight",cluster=~"prod-.*"}' in custom, "operatorSelector not used"
assert "[2m]" in custom and "> 3600" in custom, "thresholds not used"
PY
step "ok"
