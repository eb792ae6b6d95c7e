//! The status a job should have, computed from what the reconcile observed.
//!
//! Pure: same inputs, same status. Conditions keep their transition times,
//! so a steady state produces a status equal to the stored one, and the
//! operator writes nothing.

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};

use super::{
    conditions::merge_conditions,
    config::ConfigProblem,
    status_conditions::{
        blocked, completed_with_errors, over_budget, planning, running, succeeded, suspended,
    },
};
use crate::{
    api::{BatchCounts, FailureSample, MigrationJob, MigrationJobStatus, Phase, WorkerStatus},
    domain::outcome::{Counters, Outcome, outcome, progress},
};

/// What the reconcile found out about a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The configuration cannot be used; nothing was applied.
    Blocked(ConfigProblem),
    /// The source is being measured and cut into batches.
    Planning {
        /// Keys read so far.
        records: u64,
        /// Batches cut so far.
        batches: u64,
    },
    /// The job is planned; its ledger and its worker fleets.
    Active {
        /// The worker fleets' state, summed over every fleet.
        fleet: FleetObservation,
        /// The ledger's counters.
        progress: Progress,
    },
    /// The job had finished when its spec last changed; the databases were
    /// not asked again. Only the fleet is looked at.
    Settled(FleetObservation),
}

/// What the ledger says about a planned job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Records in the plan.
    pub total_records: u64,
    /// Batches not leased yet.
    pub pending_batches: u64,
    /// Batches leased to a worker.
    pub leased_batches: u64,
    /// Batches finished.
    pub done_batches: u64,
    /// Finished batches that hold failed records.
    pub failed_batches: u64,
    /// Records written.
    pub processed_records: u64,
    /// Records rejected (and not yet written by a retry).
    pub failed_records: u64,
    /// Records written in the last `window_seconds`.
    pub recent_records: u64,
    /// The window of `recent_records`.
    pub window_seconds: u64,
    /// Seconds from planning to the last finished batch.
    pub elapsed_seconds: f64,
    /// The newest failed records.
    pub recent_failures: Vec<FailureSample>,
    /// The unfinished batch leased most often: (times leased, description).
    pub most_attempted: Option<(u32, String)>,
}

impl Progress {
    /// The counters the outcome rules need.
    pub fn counters(&self) -> Counters {
        Counters {
            total_records: self.total_records,
            processed_records: self.processed_records,
            failed_records: self.failed_records,
            unfinished_batches: self.pending_batches + self.leased_batches,
        }
    }

    /// Where the job stands under `max_failed_ratio`.
    pub fn outcome(&self, max_failed_ratio: f64) -> Outcome {
        outcome(&self.counters(), max_failed_ratio)
    }

    /// Seconds until every record is handled at the recent rate; None when
    /// nothing moved recently.
    pub fn seconds_to_completion(&self) -> Option<u64> {
        let remaining = self
            .total_records
            .saturating_sub(self.processed_records + self.failed_records);
        let rate = self.recent_records as f64 / self.window_seconds.max(1) as f64;
        (rate > 0.0).then(|| (remaining as f64 / rate).ceil() as u64)
    }

    /// Records per second: over the recent window while running, the
    /// average over the whole run once finished.
    fn records_per_second(&self, finished: bool) -> i64 {
        let rate = if finished {
            if self.elapsed_seconds > 0.0 {
                self.processed_records as f64 / self.elapsed_seconds
            } else {
                0.0
            }
        } else {
            self.recent_records as f64 / self.window_seconds.max(1) as f64
        };
        rate.round() as i64
    }
}

/// Whether a phase is final (until `retryFailed` is increased).
pub fn is_finished(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Succeeded | Phase::CompletedWithErrors | Phase::Failed
    )
}

/// State of the worker fleet, read from its Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetObservation {
    /// Worker pods wanted now.
    pub desired: i32,
    /// Worker pods ready.
    pub ready: i32,
    /// Why the Deployment cannot make progress, if it cannot (e.g. its
    /// progress deadline passed).
    pub stalled: Option<String>,
}

impl FleetObservation {
    /// Reads the fleet state from the worker Deployment, if it exists yet.
    pub fn from_deployment(deployment: Option<&Deployment>) -> Self {
        let Some(d) = deployment else {
            return Self::default();
        };
        let status = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let stalled = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .map(|c| {
                c.message
                    .unwrap_or_else(|| "progress deadline exceeded".into())
            });
        Self {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            stalled,
        }
    }

    /// The fleets taken together: pods summed, the first stall reported.
    pub fn sum<'a>(fleets: impl IntoIterator<Item = &'a FleetObservation>) -> Self {
        fleets.into_iter().fold(Self::default(), |acc, f| Self {
            desired: acc.desired.saturating_add(f.desired),
            ready: acc.ready.saturating_add(f.ready),
            stalled: acc.stalled.or_else(|| f.stalled.clone()),
        })
    }
}

/// The status `job` should have given `observation`, at time `now`.
///
/// Fields this step does not own (record counters, rollout) are carried over
/// from the current status unchanged.
pub fn desired_status(
    job: &MigrationJob,
    observation: &Observation,
    now: Time,
) -> MigrationJobStatus {
    let current = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let mut status = current.clone();
    let updates = match observation {
        Observation::Blocked(problem) => {
            status.phase = Phase::Pending;
            status.estimated_completion_time = None;
            blocked(problem)
        }
        Observation::Planning { records, batches } => {
            status.phase = Phase::Planning;
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            status.total_records = Some(n(*records));
            status.batches = Some(BatchCounts {
                total: n(*batches),
                ..BatchCounts::default()
            });
            status.progress = Some("0%".to_owned());
            status.estimated_completion_time = None;
            planning()
        }
        Observation::Settled(fleet) => {
            status.workers = Some(worker_status(fleet));
            Vec::new()
        }
        Observation::Active { fleet, progress } => {
            status.workers = Some(worker_status(fleet));
            let result = progress.outcome(job.spec.failure_policy.max_failed_record_ratio);
            let (phase, updates) = match result {
                Outcome::InProgress if job.spec.suspend => (Phase::Suspended, suspended()),
                Outcome::InProgress => (
                    Phase::Running,
                    running(
                        fleet,
                        progress,
                        job.spec.failure_policy.max_attempts_per_batch,
                    ),
                ),
                Outcome::Succeeded => (Phase::Succeeded, succeeded(progress)),
                Outcome::CompletedWithErrors => {
                    (Phase::CompletedWithErrors, completed_with_errors(progress))
                }
                Outcome::OverBudget { ratio } => (
                    Phase::Failed,
                    over_budget(
                        progress,
                        ratio,
                        job.spec.failure_policy.max_failed_record_ratio,
                    ),
                ),
            };
            status.phase = phase;
            record_progress(&mut status, progress, is_finished(phase), &now);
            // The estimate moves only when the records do: recomputing the
            // same state later yields the same status (nothing to write).
            let same_records = |a: &MigrationJobStatus, b: &MigrationJobStatus| {
                (a.total_records, a.processed_records, a.failed_records)
                    == (b.total_records, b.processed_records, b.failed_records)
            };
            if same_records(&current, &status)
                && current.estimated_completion_time.is_some()
                && status.estimated_completion_time.is_some()
            {
                status.estimated_completion_time = current.estimated_completion_time.clone();
            }
            if phase == Phase::Suspended {
                status.records_per_second = Some(0);
                status.estimated_completion_time = None;
            }
            updates
        }
    };
    let conditions = if updates.is_empty() {
        current.conditions
    } else {
        merge_conditions(&current.conditions, &updates, generation, now)
    };
    MigrationJobStatus {
        observed_generation: generation,
        conditions,
        ..status
    }
}

/// Copies the ledger's counters into the status.
fn record_progress(status: &mut MigrationJobStatus, p: &Progress, finished: bool, now: &Time) {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    status.total_records = Some(to_i64(p.total_records));
    status.processed_records = Some(to_i64(p.processed_records));
    status.failed_records = Some(to_i64(p.failed_records));
    status.batches = Some(BatchCounts {
        total: to_i64(p.pending_batches + p.leased_batches + p.done_batches),
        pending: to_i64(p.pending_batches),
        in_flight: to_i64(p.leased_batches),
        succeeded: to_i64(p.done_batches.saturating_sub(p.failed_batches)),
        failed: to_i64(p.failed_batches),
    });
    status.progress = Some(progress(&p.counters()));
    status.records_per_second = Some(p.records_per_second(finished));
    status.estimated_completion_time = (!finished)
        .then(|| p.seconds_to_completion())
        .flatten()
        .and_then(|secs| eta(now, secs));
    status.recent_failures = p.recent_failures.clone();
}

/// `now` plus `secs`, rounded up to 10 seconds (so that it moves in steps).
fn eta(now: &Time, secs: u64) -> Option<Time> {
    let at = now.0.as_second().checked_add(i64::try_from(secs).ok()?)?;
    let rounded = at.checked_add((10 - at.rem_euclid(10)) % 10)?;
    jiff::Timestamp::from_second(rounded).ok().map(Time)
}

fn worker_status(fleet: &FleetObservation) -> WorkerStatus {
    WorkerStatus {
        desired: fleet.desired,
        ready: fleet.ready,
    }
}

/// Whether two statuses differ only in their counters (records, batches,
/// progress, throughput, failure samples): such changes are written at a
/// bounded rate.
pub fn only_counters_differ(a: &MigrationJobStatus, b: &MigrationJobStatus) -> bool {
    fn without_counters(s: &MigrationJobStatus) -> MigrationJobStatus {
        MigrationJobStatus {
            total_records: None,
            processed_records: None,
            failed_records: None,
            batches: None,
            progress: None,
            records_per_second: None,
            estimated_completion_time: None,
            recent_failures: Vec::new(),
            ..s.clone()
        }
    }
    without_counters(a) == without_counters(b)
}

/// The phase before, if it differs from the phase after. A job without a
/// status counts as Pending.
pub fn phase_change(
    before: Option<&MigrationJobStatus>,
    after: &MigrationJobStatus,
) -> Option<Phase> {
    let before = before.map(|b| b.phase).unwrap_or_default();
    (before != after.phase).then_some(before)
}
