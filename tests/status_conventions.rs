//! The conventions status follows for GitOps tools (kstatus: Reconciling,
//! Stalled, Ready) and the estimated completion time.

mod common;
#[path = "common/status_fixtures.rs"]
mod fixtures;

use common::job;
use fixtures::*;
use freight::{
    api::Phase,
    controller::{
        config::ConfigProblem,
        status::{FleetObservation, Observation, desired_status},
    },
};

/// The kstatus pair every phase reports: (Reconciling, Stalled).
#[test]
fn reconciling_and_stalled_follow_the_kstatus_conventions() {
    let job = job(true);
    let pair = |s: &freight::api::MigrationJobStatus| {
        (
            cond(s, "Reconciling").status.clone(),
            cond(s, "Stalled").status.clone(),
        )
    };
    let t = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let blocked = desired_status(
        &job,
        &Observation::Blocked(ConfigProblem {
            reason: freight::api::Reason::TargetTableNotFound,
            message: "spec.target.postgres.table: no such table".into(),
        }),
        at(10),
    );
    assert_eq!(pair(&blocked), t("False", "True"));
    assert_eq!(cond(&blocked, "Stalled").reason, "TargetTableNotFound");
    assert!(cond(&blocked, "Stalled").message.contains("spec.target"));
    let planning = desired_status(
        &job,
        &Observation::Planning {
            records: 1,
            batches: 0,
        },
        at(10),
    );
    assert_eq!(pair(&planning), t("True", "False"));
    assert_eq!(
        pair(&desired_status(&job, &fleet(1, 1), at(10))),
        t("True", "False")
    );
    let done = desired_status(
        &job,
        &active(FleetObservation::default(), progress(10, 0)),
        at(10),
    );
    assert_eq!(done.phase, Phase::Succeeded);
    assert_eq!(pair(&done), t("False", "False"));
    let with_errors = desired_status(
        &job,
        &active(FleetObservation::default(), progress(10, 7)),
        at(10),
    );
    assert_eq!(with_errors.phase, Phase::CompletedWithErrors);
    assert_eq!(pair(&with_errors), t("False", "False"));
    let failed = desired_status(
        &job,
        &active(FleetObservation::default(), progress(3, 20)),
        at(10),
    );
    assert_eq!(failed.phase, Phase::Failed);
    assert_eq!(pair(&failed), t("False", "True"));
    assert_eq!(cond(&failed, "Stalled").reason, "FailureBudgetExceeded");
    let mut suspended_job = job.clone();
    suspended_job.spec.suspend = true;
    let suspended = desired_status(&suspended_job, &fleet(0, 0), at(10));
    assert_eq!(suspended.phase, Phase::Suspended);
    assert_eq!(pair(&suspended), t("False", "False"));
    // kstatus falls back to Ready: a job that is done (or parked on purpose)
    // must not read as still in progress; a failed one is Stalled anyway.
    for (s, ready) in [
        (&done, "True"),
        (&with_errors, "True"),
        (&suspended, "True"),
        (&failed, "False"),
        (&blocked, "False"),
    ] {
        assert_eq!(cond(s, "Ready").status, ready, "{:?}", s.phase);
    }
}

#[test]
fn estimated_completion_follows_the_recent_rate_and_goes_when_finished() {
    let job = job(true);
    // 400 of 1000 handled, 300 in the last 10 s: 600 left at 30/s = 20 s.
    let running = desired_status(&job, &fleet(1, 1), at(1_000_003));
    let eta = running
        .estimated_completion_time
        .expect("an ETA while running");
    assert_eq!(
        eta.0.as_second(),
        1_000_030,
        "now + 20 s, rounded up to 10 s"
    );
    let mut still = progress(4, 0);
    still.recent_records = 0;
    let stalled = desired_status(&job, &active(FleetObservation::default(), still), at(10));
    assert_eq!(
        stalled.estimated_completion_time, None,
        "unknown without a rate"
    );
    let done = desired_status(
        &job,
        &active(FleetObservation::default(), progress(10, 0)),
        at(10),
    );
    assert_eq!(done.estimated_completion_time, None);
}
