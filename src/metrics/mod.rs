//! Prometheus metrics of the operator.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

mod jobs;

use jobs::JobGauges;

use crate::api::Phase;

/// Labels of `freight_coordinator_leases_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseResultLabels {
    /// What a lease request got: leased, empty, paused, finished,
    /// unauthorized, unknown_job or unavailable.
    pub result: &'static str,
}

/// Every result of a lease request (each series exists from the start).
pub const LEASE_RESULTS: [&str; 7] = [
    "leased",
    "empty",
    "paused",
    "finished",
    "unauthorized",
    "unknown_job",
    "unavailable",
];

/// Lease requests the coordinator answered, by result.
pub type LeaseResults = Family<LeaseResultLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    resource: &'static str,
    verb: &'static str,
}

/// The operator's metrics, registered under the `freight` prefix.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    jobs: Family<PhaseLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    leader: Gauge,
    phases: Mutex<HashMap<(String, String), Phase>>,
    job: JobGauges,
    /// Condition label sets last set per job (to remove them when they change).
    conditions: Mutex<HashMap<(String, String), Vec<jobs::JobConditionLabels>>>,
    leases: LeaseResults,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("freight");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let jobs = Family::<PhaseLabels, Gauge>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register("jobs", "MigrationJobs by phase", jobs.clone());
        registry.register(
            "api_writes",
            "Writes the operator sent to the Kubernetes API, by resource and verb",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        for phase in Phase::ALL {
            jobs.get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            })
            .set(0);
        }
        for error in crate::controller::Error::METRIC_LABELS {
            errors.get_or_create(&ErrorLabels { error }).inc_by(0);
        }
        let job = JobGauges::default();
        job.register(registry.sub_registry_with_prefix("job"));
        let leases = LeaseResults::default();
        for result in LEASE_RESULTS {
            leases
                .get_or_create(&LeaseResultLabels { result })
                .inc_by(0);
        }
        registry.register(
            "coordinator_leases",
            "Lease requests the batch coordinator answered, by result",
            leases.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            jobs,
            writes,
            leader,
            phases: Mutex::default(),
            job,
            conditions: Mutex::default(),
            leases,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabels { error }).inc();
    }

    /// Counts a write to the API.
    pub fn write(&self, resource: &'static str, verb: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { resource, verb })
            .inc();
    }

    /// Records the leader state.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records the phase of a job (`None` once it is gone) and updates the
    /// jobs-by-phase gauge.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), name.to_owned());
        match phase {
            Some(p) => phases.insert(key, p),
            None => phases.remove(&key),
        };
        for p in Phase::ALL {
            let n = phases.values().filter(|v| **v == p).count();
            self.jobs
                .get_or_create(&PhaseLabels { phase: p.as_str() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The coordinator's lease counter (registered here, counted there).
    pub fn lease_results(&self) -> LeaseResults {
        self.leases.clone()
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Shared handle to the metrics.
pub type SharedMetrics = Arc<Metrics>;
