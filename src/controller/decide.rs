//! **Decide**: a pure function from one [`Snapshot`] and the time to a
//! [`Plan`] — the children to apply or delete, what the coordinator serves,
//! the data-plane work to start, the status to write, the events and when to
//! look again. No client, no database: tested as plain data.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{Resource, ResourceExt};

pub use super::plan::{Announcement, ChildWrite, CoordinatorChange, Plan};
use super::{
    apply::up_to_date,
    children::{ChildSettings, DesiredChildren, desired_children},
    config::ConfigProblem,
    labels::APPLIED_HASH_ANNOTATION,
    observe::{DataView, Snapshot},
    status::{FleetObservation, Observation, desired_status, only_counters_differ, phase_change},
};
use crate::{
    api::{ConditionType, MigrationJob, MigrationJobStatus, Phase},
    coordinator::JobState,
    domain::outcome::Outcome,
};

/// How often a job is looked at again when nothing triggers it.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a job blocked by its databases is looked at again (no
/// Kubernetes event announces a fix made in a database).
pub const DATABASE_RECHECK: Duration = Duration::from_secs(15);
/// How often a job whose last batches are out is looked at (a short stretch
/// at the end of a job; nothing is written unless the phase changes).
pub const FINISHING: Duration = Duration::from_millis(250);
/// How soon a job is looked at after its retry round was scheduled.
pub const AFTER_RETRY: Duration = Duration::from_millis(100);

/// Operator-wide inputs of the decision.
#[derive(Clone, Copy, Debug)]
pub struct DecideSettings<'a> {
    /// What shapes the children.
    pub children: &'a ChildSettings,
    /// Least time between two status writes that only move counters.
    pub status_interval: Duration,
}

/// Decides what to do about the job of `s` at time `now`.
pub fn decide(s: &Snapshot, now: Time, cfg: &DecideSettings<'_>) -> Plan {
    let job = s.job.as_ref();
    let progress = match &s.data {
        DataView::Blocked(p) => return blocked(s, p, now, cfg, RESYNC),
        DataView::BlockedInDatabase(p) => return blocked(s, p, now, cfg, DATABASE_RECHECK),
        DataView::RetryDue { round } => {
            return Plan {
                schedule_retry: Some(*round),
                ..Plan::idle(AFTER_RETRY)
            };
        }
        DataView::Planned(p) => Some(p),
        DataView::Settled | DataView::Planning { .. } => None,
    };
    let in_progress = progress.is_none_or(|p| {
        matches!(
            p.outcome(job.spec.failure_policy.max_failed_record_ratio),
            Outcome::InProgress
        )
    });
    // The fleet starts while the source is planned; it is pinned to zero
    // while suspended and once the job has finished.
    let run_workers = in_progress && !job.spec.suspend && s.data != DataView::Settled;
    let Some(owner) = job.controller_owner_ref(&()) else {
        return Plan::idle(RESYNC);
    };
    let desired = desired_children(job, &owner, cfg.children, &s.children.token.0, run_workers);
    if let Err(problem) = check_ownership(s, &desired) {
        return blocked(s, &problem, now, cfg, RESYNC);
    }
    let fleets: Vec<FleetObservation> = desired
        .fleets
        .iter()
        .map(|f| {
            let existing = find(&s.children.deployments, &f.deployment.name_any());
            observe_fleet(existing, run_workers)
        })
        .collect();
    let fleet = FleetObservation::sum(&fleets);
    let (observation, coordinator) = match (&s.data, progress) {
        (
            DataView::Planning {
                records, batches, ..
            },
            _,
        ) => (
            Observation::Planning {
                records: *records,
                batches: *batches,
            },
            CoordinatorChange::Remove,
        ),
        (_, Some(progress)) => (
            Observation::Active {
                fleet,
                progress: progress.clone(),
            },
            CoordinatorChange::Serve(match (in_progress, job.spec.suspend) {
                (false, _) => JobState::Finished,
                (true, true) => JobState::Paused,
                (true, false) => JobState::Serving,
            }),
        ),
        _ => (Observation::Settled(fleet), CoordinatorChange::Remove),
    };
    let status = desired_status(job, &observation, now);
    let requeue = match (status.phase, progress) {
        // The last batches are out: look again soon, so that the end of the
        // job shows without waiting a whole status interval.
        (Phase::Running, Some(p)) if p.pending_batches == 0 => FINISHING.min(cfg.status_interval),
        (Phase::Planning | Phase::Running, _) => cfg.status_interval,
        _ => RESYNC,
    };
    let keep: Vec<String> = desired
        .fleets
        .iter()
        .map(|f| f.deployment.name_any())
        .collect();
    Plan {
        apply: changed_children(s, desired),
        delete_deployments: stale_deployments(s, &keep),
        coordinator,
        start_planning: matches!(s.data, DataView::Planning { running: false, .. }),
        ..with_status(s, &observation, status, requeue, cfg)
    }
}

/// The plan of a job blocked on `problem`: nothing is applied, no batch is
/// handed out, the status says why.
fn blocked(
    s: &Snapshot,
    problem: &ConfigProblem,
    now: Time,
    cfg: &DecideSettings<'_>,
    requeue: Duration,
) -> Plan {
    let observation = Observation::Blocked(problem.clone());
    let status = desired_status(&s.job, &observation, now);
    Plan {
        coordinator: CoordinatorChange::Remove,
        ..with_status(s, &observation, status, requeue, cfg)
    }
}

/// The snapshot as it would be had `problem` been found (an object the API
/// server refused while the plan was carried out).
pub fn blocked_by(
    s: &Snapshot,
    problem: ConfigProblem,
    now: Time,
    cfg: &DecideSettings<'_>,
) -> Plan {
    blocked(s, &problem, now, cfg, RESYNC)
}

/// Status, events and requeue: the status is written when it changed,
/// except that changes of counters alone wait for the status interval.
fn with_status(
    s: &Snapshot,
    observation: &Observation,
    status: MigrationJobStatus,
    requeue: Duration,
    cfg: &DecideSettings<'_>,
) -> Plan {
    let before = s.job.status.as_ref();
    let decided = Some(status.clone());
    if before == Some(&status) {
        return Plan {
            decided,
            ..Plan::idle(requeue)
        };
    }
    if before.is_some_and(|b| only_counters_differ(b, &status)) {
        let wait = s.since_status_write.map_or(Duration::ZERO, |since| {
            cfg.status_interval.saturating_sub(since)
        });
        if !wait.is_zero() {
            return Plan {
                decided,
                ..Plan::idle(wait.min(requeue))
            };
        }
    }
    Plan {
        events: announcements(s.job.as_ref(), observation, &status),
        status: Some(status),
        decided,
        ..Plan::idle(requeue)
    }
}

/// Events for what changed: a new phase, or a new configuration problem.
fn announcements(
    job: &MigrationJob,
    observation: &Observation,
    status: &MigrationJobStatus,
) -> Vec<Announcement> {
    let before = job.status.as_ref();
    let mut events = Vec::new();
    if let Observation::Blocked(problem) = observation {
        let ready_before = before
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == ConditionType::Ready.as_str())
            })
            .map(|c| (c.reason.as_str(), c.message.as_str()));
        if ready_before != Some((problem.reason.as_str(), problem.message.as_str())) {
            events.push(Announcement {
                warning: true,
                reason: problem.reason,
                note: problem.message.clone(),
                action: "Validate",
            });
        }
    }
    if let Some(from) = phase_change(before, status) {
        events.push(Announcement {
            warning: false,
            reason: status.phase.into(),
            note: format!("Phase changed from {from} to {}", status.phase),
            action: "Reconcile",
        });
    }
    events
}

/// Never take over same-named objects this job does not control.
fn check_ownership(s: &Snapshot, desired: &DesiredChildren) -> Result<(), ConfigProblem> {
    let uid = s.job.uid().unwrap_or_default();
    let name = s.job.name_any();
    if let Some(meta) = &s.children.credential {
        check_owned_meta::<Secret>(meta, &uid, &name)?;
    }
    if let Some(hpa) = &s.children.autoscaler {
        super::apply::check_owned(hpa.as_ref(), &uid, &name)?;
    }
    for fleet in &desired.fleets {
        if let Some(d) = find(&s.children.deployments, &fleet.deployment.name_any()) {
            super::apply::check_owned(d, &uid, &name)?;
        }
    }
    Ok(())
}

fn check_owned_meta<K: Resource<DynamicType = ()> + Default>(
    meta: &ObjectMeta,
    uid: &str,
    name: &str,
) -> Result<(), ConfigProblem> {
    let mut obj = K::default();
    *obj.meta_mut() = meta.clone();
    super::apply::check_owned(&obj, uid, name)
}

/// The desired children that differ from what the caches hold.
fn changed_children(s: &Snapshot, desired: DesiredChildren) -> Vec<ChildWrite> {
    let mut writes = Vec::new();
    // Dependency order: the credential before the pods that mount it, the
    // Deployment before the autoscaler that targets it.
    let credential_hash = s
        .children
        .credential
        .as_ref()
        .and_then(|m| m.annotations.as_ref()?.get(APPLIED_HASH_ANNOTATION));
    if credential_hash.is_none()
        || credential_hash
            != desired
                .credential
                .annotations()
                .get(APPLIED_HASH_ANNOTATION)
    {
        writes.push(ChildWrite::Credential(Box::new(desired.credential)));
    }
    for fleet in desired.fleets {
        let existing = find(&s.children.deployments, &fleet.deployment.name_any());
        if !up_to_date(existing, &fleet.deployment) {
            writes.push(ChildWrite::Fleet(Box::new(fleet.deployment)));
        }
    }
    if !up_to_date(s.children.autoscaler.as_deref(), &desired.autoscaler) {
        writes.push(ChildWrite::Autoscaler(Box::new(desired.autoscaler)));
    }
    writes
}

/// Worker Deployments the job controls that are none of `keep`: fleets of
/// earlier revisions.
fn stale_deployments(s: &Snapshot, keep: &[String]) -> Vec<String> {
    let uid = s.job.uid().unwrap_or_default();
    let name = s.job.name_any();
    s.children
        .deployments
        .iter()
        .filter(|d| !keep.contains(&d.name_any()))
        .filter(|d| super::apply::check_owned(d.as_ref(), &uid, &name).is_ok())
        .map(|d| d.name_any())
        .collect()
}

fn find<'a>(deployments: &'a [std::sync::Arc<Deployment>], name: &str) -> Option<&'a Deployment> {
    deployments
        .iter()
        .find(|d| d.name_any() == name)
        .map(AsRef::as_ref)
}

/// A fleet's state from its cached Deployment; pinned to zero when the plan
/// stops the workers (the cache may not have seen that write yet).
fn observe_fleet(existing: Option<&Deployment>, run_workers: bool) -> FleetObservation {
    let mut fleet = match existing {
        Some(d) => FleetObservation::from_deployment(Some(d)),
        // A new Deployment starts with one replica until the autoscaler acts.
        None => FleetObservation {
            desired: 1,
            ..FleetObservation::default()
        },
    };
    if !run_workers {
        fleet.desired = 0;
    }
    fleet
}
