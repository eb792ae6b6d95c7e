//! The status a job should have, computed from what the reconcile observed.
//!
//! Pure: same inputs, same status. Conditions keep their transition times,
//! so a steady state produces a status equal to the stored one, and the
//! operator writes nothing.

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};

use super::{
    conditions::{ConditionUpdate, merge_conditions},
    config::ConfigProblem,
};
use crate::api::{ConditionType, MigrationJob, MigrationJobStatus, Phase, WorkerStatus};

/// What the reconcile found out about a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The configuration cannot be used; nothing was applied.
    Blocked(ConfigProblem),
    /// The children are in place; this is the worker Deployment's state.
    Fleet(FleetObservation),
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
    let (phase, workers, updates) = match observation {
        Observation::Blocked(problem) => {
            (Phase::Pending, current.workers.clone(), blocked(problem))
        }
        Observation::Fleet(fleet) if job.spec.suspend => {
            (Phase::Suspended, Some(worker_status(fleet)), suspended())
        }
        Observation::Fleet(fleet) => (Phase::Running, Some(worker_status(fleet)), running(fleet)),
    };
    MigrationJobStatus {
        phase,
        observed_generation: generation,
        workers,
        conditions: merge_conditions(&current.conditions, &updates, generation, now),
        ..current
    }
}

fn worker_status(fleet: &FleetObservation) -> WorkerStatus {
    WorkerStatus {
        desired: fleet.desired,
        ready: fleet.ready,
    }
}

fn not_finished() -> [ConditionUpdate; 2] {
    [
        ConditionUpdate::new(
            ConditionType::Complete,
            false,
            "NotFinished",
            "The job has not finished",
        ),
        ConditionUpdate::new(
            ConditionType::Failed,
            false,
            "NoFailure",
            "The job has not failed",
        ),
    ]
}

fn blocked(problem: &ConfigProblem) -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    vec![
        ConditionUpdate::new(
            ConditionType::Ready,
            false,
            problem.reason,
            &problem.message,
        ),
        ConditionUpdate::new(
            ConditionType::Progressing,
            false,
            problem.reason,
            "Waiting for the configuration to be fixed; the job resumes by itself",
        ),
        complete,
        failed,
        ConditionUpdate::new(ConditionType::Degraded, false, "AsExpected", ""),
    ]
}

fn suspended() -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    let message = "spec.suspend is true: no batches are handed out and workers are scaled to zero";
    vec![
        ConditionUpdate::new(ConditionType::Ready, false, "Suspended", message),
        ConditionUpdate::new(ConditionType::Progressing, false, "Suspended", message),
        complete,
        failed,
        ConditionUpdate::new(ConditionType::Degraded, false, "AsExpected", ""),
    ]
}

fn running(fleet: &FleetObservation) -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    let counts = format!("{} of {} worker pods ready", fleet.ready, fleet.desired);
    let ready = if fleet.ready > 0 {
        ConditionUpdate::new(ConditionType::Ready, true, "WorkersReady", counts)
    } else {
        ConditionUpdate::new(ConditionType::Ready, false, "WorkersNotReady", counts)
    };
    let degraded = match &fleet.stalled {
        Some(why) => ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            "WorkersStalled",
            format!("the worker Deployment cannot make progress: {why}"),
        ),
        None => ConditionUpdate::new(ConditionType::Degraded, false, "AsExpected", ""),
    };
    vec![
        ready,
        ConditionUpdate::new(
            ConditionType::Progressing,
            true,
            "WorkersProvisioned",
            "The worker fleet is in place",
        ),
        complete,
        failed,
        degraded,
    ]
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
