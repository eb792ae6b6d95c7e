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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ConditionType, MigrationJob, MigrationJobStatus, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    namespace: String,
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobPhaseLabels {
    namespace: String,
    job: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobConditionLabels {
    namespace: String,
    job: String,
    condition: &'static str,
    reason: String,
}

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

/// Per-job gauges, labelled with the job's namespace and name (bounded by the
/// number of jobs; nothing per batch or per key).
#[derive(Default)]
struct JobGauges {
    phase: Family<JobPhaseLabels, Gauge>,
    planned: Family<JobLabels, Gauge>,
    processed: Family<JobLabels, Gauge>,
    failed: Family<JobLabels, Gauge>,
    ratio_limit: Family<JobLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    backlog: Family<JobLabels, Gauge>,
    rate: Family<JobLabels, Gauge>,
    eta: Family<JobLabels, Gauge>,
    workers_desired: Family<JobLabels, Gauge>,
    workers_ready: Family<JobLabels, Gauge>,
    condition: Family<JobConditionLabels, Gauge>,
}

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
    conditions: Mutex<HashMap<(String, String), Vec<JobConditionLabels>>>,
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
        let per_job = registry.sub_registry_with_prefix("job");
        per_job.register("phase", "1 for the job's current phase", job.phase.clone());
        per_job.register(
            "records_planned",
            "Records in the job's plan (so far, while planning)",
            job.planned.clone(),
        );
        per_job.register(
            "records_processed",
            "Records written to the target",
            job.processed.clone(),
        );
        per_job.register(
            "records_failed",
            "Records the target rejected (not yet retried)",
            job.failed.clone(),
        );
        per_job.register(
            "failed_record_ratio_limit",
            "spec.failurePolicy.maxFailedRecordRatio: over it the job fails",
            job.ratio_limit.clone(),
        );
        per_job.register(
            "backlog_batches",
            "Batches not finished (pending and in flight)",
            job.backlog.clone(),
        );
        per_job.register(
            "records_per_second",
            "Records written per second, recently",
            job.rate.clone(),
        );
        per_job.register(
            "eta_seconds",
            "Estimated seconds to completion at the recent rate",
            job.eta.clone(),
        );
        per_job.register(
            "workers_desired",
            "Worker pods wanted",
            job.workers_desired.clone(),
        );
        per_job.register(
            "workers_ready",
            "Worker pods ready",
            job.workers_ready.clone(),
        );
        per_job.register(
            "condition",
            "1 while the condition is True, with its reason",
            job.condition.clone(),
        );
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

    /// Records a job's figures from its status as just decided, at `now`.
    pub fn set_job(&self, job: &MigrationJob, status: &MigrationJobStatus, now: &Time) {
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        self.set_phase(&namespace, &name, Some(status.phase));
        let l = JobLabels {
            namespace: namespace.clone(),
            job: name.clone(),
        };
        let g = &self.job;
        for p in Phase::ALL {
            g.phase
                .get_or_create(&JobPhaseLabels {
                    namespace: namespace.clone(),
                    job: name.clone(),
                    phase: p.as_str(),
                })
                .set(i64::from(p == status.phase));
        }
        let batches = status.batches.clone().unwrap_or_default();
        g.planned
            .get_or_create(&l)
            .set(status.total_records.unwrap_or(0));
        g.processed
            .get_or_create(&l)
            .set(status.processed_records.unwrap_or(0));
        g.failed
            .get_or_create(&l)
            .set(status.failed_records.unwrap_or(0));
        g.ratio_limit
            .get_or_create(&l)
            .set(job.spec.failure_policy.max_failed_record_ratio);
        g.backlog
            .get_or_create(&l)
            .set(batches.pending + batches.in_flight);
        g.rate
            .get_or_create(&l)
            .set(status.records_per_second.unwrap_or(0));
        match &status.estimated_completion_time {
            Some(at) => {
                let secs = at.0.as_second().saturating_sub(now.0.as_second()).max(0);
                g.eta.get_or_create(&l).set(secs);
            }
            None => {
                g.eta.remove(&l);
            }
        }
        let workers = status.workers.clone().unwrap_or_default();
        g.workers_desired
            .get_or_create(&l)
            .set(i64::from(workers.desired));
        g.workers_ready
            .get_or_create(&l)
            .set(i64::from(workers.ready));
        let now_set: Vec<JobConditionLabels> = ConditionType::ALL
            .iter()
            .filter_map(|t| {
                let c = status.conditions.iter().find(|c| c.type_ == t.as_str())?;
                Some((t, c))
            })
            .map(|(t, c)| {
                let labels = JobConditionLabels {
                    namespace: namespace.clone(),
                    job: name.clone(),
                    condition: t.as_str(),
                    reason: c.reason.clone(),
                };
                g.condition
                    .get_or_create(&labels)
                    .set(i64::from(c.status == "True"));
                labels
            })
            .collect();
        let mut conditions = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        let before = conditions.insert((namespace, name), now_set.clone());
        for gone in before
            .into_iter()
            .flatten()
            .filter(|b| !now_set.contains(b))
        {
            g.condition.remove(&gone);
        }
    }

    /// Removes the series of every job (this replica stopped reconciling:
    /// another one reports them now).
    pub fn forget_all_jobs(&self) {
        let jobs: Vec<(String, String)> = self
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for (namespace, name) in jobs {
            self.forget_job(&namespace, &name);
        }
    }

    /// Removes every series of a deleted job.
    pub fn forget_job(&self, namespace: &str, name: &str) {
        self.set_phase(namespace, name, None);
        let l = JobLabels {
            namespace: namespace.to_owned(),
            job: name.to_owned(),
        };
        let g = &self.job;
        for p in Phase::ALL {
            g.phase.remove(&JobPhaseLabels {
                namespace: namespace.to_owned(),
                job: name.to_owned(),
                phase: p.as_str(),
            });
        }
        for f in [
            &g.planned,
            &g.processed,
            &g.failed,
            &g.backlog,
            &g.rate,
            &g.eta,
            &g.workers_desired,
            &g.workers_ready,
        ] {
            f.remove(&l);
        }
        g.ratio_limit.remove(&l);
        let gone = self
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_owned(), name.to_owned()));
        for labels in gone.into_iter().flatten() {
            g.condition.remove(&labels);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn job() -> MigrationJob {
        let mut job = MigrationJob::new("contacts", serde_json::from_value(serde_json::json!({
            "source": {"postgres": {"connectionSecretRef": {"name": "a", "key": "url"}, "table": "t", "keyColumn": "id"}},
            "target": {"postgres": {"connectionSecretRef": {"name": "b", "key": "url"}, "table": "t"}}
        })).unwrap());
        job.metadata.namespace = Some("crm".into());
        job
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn job_series_follow_the_status_and_go_with_the_job() {
        let m = Metrics::default();
        let now = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let status = MigrationJobStatus {
            phase: Phase::Running,
            total_records: Some(1000),
            processed_records: Some(400),
            failed_records: Some(2),
            records_per_second: Some(30),
            estimated_completion_time: Some(Time(jiff::Timestamp::from_second(1_020).unwrap())),
            conditions: vec![condition("Degraded", "True", "BatchKeepsFailing")],
            ..MigrationJobStatus::default()
        };
        m.set_job(&job(), &status, &now);
        let text = m.encode();
        for line in [
            r#"freight_job_phase{namespace="crm",job="contacts",phase="Running"} 1"#,
            r#"freight_job_phase{namespace="crm",job="contacts",phase="Pending"} 0"#,
            r#"freight_job_records_processed{namespace="crm",job="contacts"} 400"#,
            r#"freight_job_eta_seconds{namespace="crm",job="contacts"} 20"#,
            r#"freight_job_condition{namespace="crm",job="contacts",condition="Degraded",reason="BatchKeepsFailing"} 1"#,
            r#"freight_job_failed_record_ratio_limit{namespace="crm",job="contacts"} 0.01"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // The condition's reason changed: the old series goes.
        let recovered = MigrationJobStatus {
            conditions: vec![condition("Degraded", "False", "AsExpected")],
            estimated_completion_time: None,
            ..status
        };
        m.set_job(&job(), &recovered, &now);
        let text = m.encode();
        assert!(!text.contains("BatchKeepsFailing"), "{text}");
        assert!(!text.contains("freight_job_eta_seconds{"), "{text}");
        m.forget_job("crm", "contacts");
        let text = m.encode();
        assert!(!text.contains(r#"job="contacts""#), "{text}");
        m.set_job(&job(), &recovered, &now);
        m.forget_all_jobs();
        assert!(!m.encode().contains(r#"job="contacts""#));
        // Error and lease-result series exist from the start, at zero.
        let text = m.encode();
        assert!(text.contains(r#"freight_reconcile_errors_total{error="database"} 0"#));
        assert!(text.contains(r#"freight_coordinator_leases_total{result="unavailable"} 0"#));
    }
}
