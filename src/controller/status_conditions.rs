//! Which conditions each state of a job reports. Pure builders of
//! [`ConditionUpdate`]s; [`merge_conditions`](super::conditions::merge_conditions)
//! keeps their transition times.

use super::{
    conditions::ConditionUpdate,
    config::ConfigProblem,
    status::{FleetObservation, Progress},
};
use crate::api::{ConditionType, Reason};

pub(super) fn not_finished() -> [ConditionUpdate; 2] {
    [
        ConditionUpdate::new(
            ConditionType::Complete,
            false,
            Reason::NotFinished,
            "The job has not finished",
        ),
        ConditionUpdate::new(
            ConditionType::Failed,
            false,
            Reason::NoFailure,
            "The job has not failed",
        ),
    ]
}

/// The kstatus pair: `Reconciling` while the operator moves the job forward,
/// `Stalled` while it cannot without a person.
fn kstatus(
    reconciling: (bool, Reason, &str),
    stalled: Option<(Reason, &str)>,
) -> [ConditionUpdate; 2] {
    let (on, reason, message) = reconciling;
    [
        ConditionUpdate::new(ConditionType::Reconciling, on, reason, message),
        match stalled {
            Some((reason, message)) => {
                ConditionUpdate::new(ConditionType::Stalled, true, reason, message)
            }
            None => ConditionUpdate::new(ConditionType::Stalled, false, Reason::AsExpected, ""),
        },
    ]
}

pub(super) fn blocked(problem: &ConfigProblem) -> Vec<ConditionUpdate> {
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
        ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    ]
    .into_iter()
    .chain(kstatus(
        (
            false,
            problem.reason,
            "Waiting for the configuration to be fixed",
        ),
        Some((problem.reason, &problem.message)),
    ))
    .collect()
}

pub(super) fn suspended() -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    let message = "spec.suspend is true: no batches are handed out and workers are scaled to zero";
    vec![
        ConditionUpdate::new(ConditionType::Ready, true, Reason::Suspended, message),
        ConditionUpdate::new(
            ConditionType::Progressing,
            false,
            Reason::Suspended,
            message,
        ),
        complete,
        failed,
        ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    ]
    .into_iter()
    .chain(kstatus((false, Reason::Suspended, message), None))
    .collect()
}

pub(super) fn running(
    fleet: &FleetObservation,
    progress: &Progress,
    max_attempts: i32,
) -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    let counts = format!("{} of {} worker pods ready", fleet.ready, fleet.desired);
    let ready = if fleet.ready > 0 {
        ConditionUpdate::new(ConditionType::Ready, true, Reason::WorkersReady, counts)
    } else {
        ConditionUpdate::new(ConditionType::Ready, false, Reason::WorkersNotReady, counts)
    };
    let max_attempts = u32::try_from(max_attempts).unwrap_or(0);
    let degraded = match (&fleet.stalled, &progress.most_attempted) {
        (Some(why), _) => ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            Reason::WorkersStalled,
            format!("the worker Deployment cannot make progress: {why}"),
        ),
        (None, Some((attempts, batch))) if *attempts > max_attempts => ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            Reason::BatchKeepsFailing,
            format!(
                "{batch} was handed out {attempts} times without finishing \
                 (spec.failurePolicy.maxAttemptsPerBatch is {max_attempts}): its workers \
                 die, stall or keep hitting transient errors on it; see the worker logs. \
                 It is still retried"
            ),
        ),
        _ => ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    };
    vec![
        ready,
        ConditionUpdate::new(
            ConditionType::Progressing,
            true,
            Reason::WorkersProvisioned,
            "The worker fleet is in place",
        ),
        complete,
        failed,
        degraded,
    ]
    .into_iter()
    .chain(kstatus((true, Reason::Running, "Copying batches"), None))
    .collect()
}

pub(super) fn planning() -> Vec<ConditionUpdate> {
    let [complete, failed] = not_finished();
    let message = "Measuring the source and cutting it into batches";
    vec![
        ConditionUpdate::new(ConditionType::Ready, false, Reason::Planning, message),
        ConditionUpdate::new(ConditionType::Progressing, true, Reason::Planning, message),
        complete,
        failed,
        ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    ]
    .into_iter()
    .chain(kstatus((true, Reason::Planning, message), None))
    .collect()
}

/// Conditions of a job that has finished, one way or another.
pub(super) fn finished(
    complete: ConditionUpdate,
    failed: ConditionUpdate,
    degraded: ConditionUpdate,
) -> Vec<ConditionUpdate> {
    let message = "The job has finished; its workers are scaled to zero";
    // A job that failed needs a person (fix the records, raise retryFailed).
    let stalled = (failed.status).then(|| (failed.reason, failed.message.clone()));
    let stalled_any = stalled.is_some();
    let mut updates = vec![
        ConditionUpdate::new(
            ConditionType::Ready,
            !stalled_any,
            Reason::Finished,
            message,
        ),
        ConditionUpdate::new(ConditionType::Progressing, false, Reason::Finished, message),
        complete,
        failed,
        degraded,
    ];
    updates.extend(kstatus(
        (false, Reason::Finished, message),
        stalled.as_ref().map(|(r, m)| (*r, m.as_str())),
    ));
    updates
}

pub(super) fn no_failure() -> ConditionUpdate {
    ConditionUpdate::new(
        ConditionType::Failed,
        false,
        Reason::NoFailure,
        "The job has not failed",
    )
}

pub(super) fn succeeded(p: &Progress) -> Vec<ConditionUpdate> {
    finished(
        ConditionUpdate::new(
            ConditionType::Complete,
            true,
            Reason::Succeeded,
            format!("All {} records were copied", p.total_records),
        ),
        no_failure(),
        ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    )
}

pub(super) fn completed_with_errors(p: &Progress) -> Vec<ConditionUpdate> {
    let message = format!(
        "{} of {} records were copied; {} were rejected by the target (within \
         spec.failurePolicy.maxFailedRecordRatio). Fix them and increase \
         spec.retryFailed to copy only those again",
        p.processed_records, p.total_records, p.failed_records
    );
    finished(
        ConditionUpdate::new(
            ConditionType::Complete,
            true,
            Reason::CompletedWithErrors,
            message.clone(),
        ),
        no_failure(),
        ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            Reason::RecordsFailed,
            message,
        ),
    )
}

pub(super) fn over_budget(p: &Progress, ratio: f64, budget: f64) -> Vec<ConditionUpdate> {
    let message = format!(
        "{} of {} records were rejected by the target ({:.2}%), more than \
         spec.failurePolicy.maxFailedRecordRatio allows ({:.2}%); no more batches \
         are handed out. Fix the records and increase spec.retryFailed to retry them",
        p.failed_records,
        p.total_records,
        ratio * 100.0,
        budget * 100.0
    );
    finished(
        ConditionUpdate::new(
            ConditionType::Complete,
            false,
            Reason::NotFinished,
            "The job stopped before every record was handled",
        ),
        ConditionUpdate::new(
            ConditionType::Failed,
            true,
            Reason::FailureBudgetExceeded,
            message,
        ),
        ConditionUpdate::new(ConditionType::Degraded, false, Reason::AsExpected, ""),
    )
}
