# Freight — developer entry points.
#   make test    everything CI checks (what .ci/run runs)
#   make e2e     end-to-end tests on a real local control plane
#   make demo    a MigrationJob end to end on a local control plane and PostgreSQL
#   make bench   Freight (through the operator) against a raw COPY pipe, 3 runs each
#   make bench-reconcile  API reads and operator RSS with 1,000 jobs (20 running)

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
CLUSTER := e2e/cluster
ENV := source $(CLUSTER)/env.sh

.PHONY: all build crds fmt-check lint unit tools helm-check alerts-test chart-monitoring-check gitops-check test e2e cluster-up cluster-down demo demo-down bench bench-dataplane bench-reconcile

all: build

build:
	cargo build --bins

## Regenerate the committed CRD (crds/ and the chart's copy) from the Rust types.
crds:
	cargo run -q --bin freight -- crd > crds/migrationjob.yaml
	cp crds/migrationjob.yaml charts/freight/crds/migrationjob.yaml

fmt-check:
	cargo fmt --all --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

## Unit tests, mock-API reconcile tests, CRD drift and example checks.
unit:
	cargo test --workspace --exclude freight-e2e

## Build the control plane and helm from Go modules into the cache (seconds when cached).
tools:
	bash $(CLUSTER)/build.sh

## Every opt-in of the chart (monitoring objects); e2e/check-chart-monitoring.sh has the same list.
CHART_OPT_INS := --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
	--set metrics.prometheusRule.enabled=true --set dashboards.enabled=true

helm-check: tools
	$(ENV); helm lint --strict charts/freight
	$(ENV); helm lint --strict charts/freight $(CHART_OPT_INS)
	$(ENV); helm template freight charts/freight --namespace freight-system >/dev/null
	$(ENV); helm template freight charts/freight --set watchNamespace=crm >/dev/null
	$(ENV); helm template freight charts/freight --set watchNamespace=crm $(CHART_OPT_INS) >/dev/null
	$(ENV); helm template freight charts/freight --set dashboards.enabled=true \
	  --show-only templates/dashboards.yaml | grep '^      "uid": "freight",$$' >/dev/null

## The PrometheusRule: promtool check rules + promtool test rules (charts/freight/tests/).
alerts-test: tools
	bash charts/freight/tests/alerts-test.sh

## The chart with every opt-in, dry-run on a running e2e API server against
## prometheus-operator's CRDs (e2e/run.sh runs this too).
chart-monitoring-check: tools
	bash e2e/check-chart-monitoring.sh

## How GitOps tools read MigrationJob status, on the test objects of
## argocd/resource_customizations/freight.dev/MigrationJob/testdata: the Argo CD health
## check (health.lua) on gopher-lua against health_test.yaml, and kstatus (Flux, kpt)
## against kstatus_test.yaml. The e2e suite checks kstatus on the real API server too.
HEALTH := argocd/resource_customizations/freight.dev/MigrationJob
gitops-check: tools
	$(ENV); argocd-lua-health $(HEALTH)
	$(ENV); kstatus-check -test $(HEALTH)/kstatus_test.yaml

cluster-up: tools
	bash $(CLUSTER)/up.sh

cluster-down:
	bash $(CLUSTER)/down.sh

## End-to-end tests against a real kube-apiserver + etcd (+ kwok nodes).
e2e: tools
	bash e2e/run.sh

## Everything CI checks.
test: fmt-check lint unit helm-check alerts-test gitops-check e2e

## A MigrationJob end to end: control plane, PostgreSQL with 1M contacts, operator,
## worker pods as local processes (FREIGHT_DEMO_KEEP=1 leaves it all running).
demo:
	bash e2e/demo.sh

## Stop what `FREIGHT_DEMO_KEEP=1 make demo` left running.
demo-down:
	bash e2e/demo.sh down

## Throughput through the operator vs a raw binary COPY pipe, 1M rows, median of 3 runs.
bench:
	bash e2e/bench.sh

## The data plane alone, in-process (no Kubernetes), vs the same pipe.
bench-dataplane:
	cargo build --release -p freight-e2e --bin bench-dataplane
	$${CARGO_TARGET_DIR:-target}/release/bench-dataplane

## The reconcile's cost at steady state with 1,000 jobs (20 Running, 980 Pending on a
## missing Secret): API reads per running job per minute (audit log), status writes,
## the operator's RSS (release build).
bench-reconcile:
	bash e2e/bench-reconcile.sh
