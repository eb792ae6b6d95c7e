//! Per-job gauges (`freight_job_*`), labelled with the job's namespace and
//! name: set from the status `decide` computed, removed with the job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::Metrics;
use crate::api::{ConditionType, MigrationJob, MigrationJobStatus, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobLabels {
    namespace: String,
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobPhaseLabels {
    namespace: String,
    job: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobConditionLabels {
    namespace: String,
    job: String,
    condition: &'static str,
    reason: String,
}

/// Per-job gauges, labelled with the job's namespace and name (bounded by the
/// number of jobs; nothing per batch or per key).
#[derive(Default)]
pub(super) struct JobGauges {
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

impl JobGauges {
    /// Registers the gauges under `per_job` (prefix `freight_job`).
    pub(super) fn register(&self, per_job: &mut Registry) {
        per_job.register("phase", "1 for the job's current phase", self.phase.clone());
        per_job.register(
            "records_planned",
            "Records in the job's plan (so far, while planning)",
            self.planned.clone(),
        );
        per_job.register(
            "records_processed",
            "Records written to the target",
            self.processed.clone(),
        );
        per_job.register(
            "records_failed",
            "Records the target rejected (not yet retried)",
            self.failed.clone(),
        );
        per_job.register(
            "failed_record_ratio_limit",
            "spec.failurePolicy.maxFailedRecordRatio: over it the job fails",
            self.ratio_limit.clone(),
        );
        per_job.register(
            "backlog_batches",
            "Batches not finished (pending and in flight)",
            self.backlog.clone(),
        );
        per_job.register(
            "records_per_second",
            "Records written per second, recently",
            self.rate.clone(),
        );
        per_job.register(
            "eta_seconds",
            "Estimated seconds to completion at the recent rate",
            self.eta.clone(),
        );
        per_job.register(
            "workers_desired",
            "Worker pods wanted",
            self.workers_desired.clone(),
        );
        per_job.register(
            "workers_ready",
            "Worker pods ready",
            self.workers_ready.clone(),
        );
        per_job.register(
            "condition",
            "1 while the condition is True, with its reason",
            self.condition.clone(),
        );
    }
}

impl Metrics {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MigrationJobStatus;
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
