//! Status and conditions computed from observations, as plain data.

mod common;
#[path = "common/status_fixtures.rs"]
mod fixtures;

use common::job;
use fixtures::*;
use freight::{
    api::Phase,
    controller::{
        config::ConfigProblem,
        status::{
            FleetObservation, Observation, desired_status, only_counters_differ, phase_change,
        },
    },
};
use proptest::prelude::*;

#[test]
fn every_condition_type_is_reported_with_the_generation() {
    let job = job(true);
    let s = desired_status(&job, &fleet(1, 1), at(10));
    let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "Ready",
            "Progressing",
            "Complete",
            "Failed",
            "Degraded",
            "Reconciling",
            "Stalled"
        ]
    );
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn blocked_job_is_pending_with_the_problem_as_reason() {
    let job = job(true);
    let problem = ConfigProblem {
        reason: freight::api::Reason::SecretKeyNotFound,
        message: "Secret crm/new-db has no key \"url\"".into(),
    };
    let s = desired_status(&job, &Observation::Blocked(problem), at(10));
    assert_eq!(s.phase, Phase::Pending);
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Ready").reason, "SecretKeyNotFound");
    assert!(cond(&s, "Ready").message.contains("crm/new-db"));
    assert_eq!(cond(&s, "Progressing").status, "False");
}

#[test]
fn recovery_flips_ready_and_moves_its_transition_time_only() {
    let mut job = job(true);
    let problem = ConfigProblem {
        reason: freight::api::Reason::SecretNotFound,
        message: "missing".into(),
    };
    job.status = Some(desired_status(&job, &Observation::Blocked(problem), at(10)));
    let s = desired_status(&job, &fleet(1, 1), at(20));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "Ready").last_transition_time, at(20));
    // Complete and Failed stayed False: their times did not move.
    assert_eq!(cond(&s, "Complete").last_transition_time, at(10));
    assert_eq!(cond(&s, "Failed").last_transition_time, at(10));
}

#[test]
fn stalled_deployment_degrades_the_job() {
    let job = job(true);
    let obs = active(
        FleetObservation {
            desired: 2,
            ready: 0,
            stalled: Some("ReplicaSet has timed out progressing".into()),
        },
        progress(4, 0),
    );
    let s = desired_status(&job, &obs, at(10));
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(cond(&s, "Degraded").reason, "WorkersStalled");
    assert_eq!(cond(&s, "Ready").status, "False");
}

#[test]
fn suspended_job_reports_suspended() {
    let mut job = job(true);
    job.spec.suspend = true;
    let s = desired_status(&job, &fleet(0, 0), at(10));
    assert_eq!(s.phase, Phase::Suspended);
    assert_eq!(cond(&s, "Progressing").reason, "Suspended");
}

#[test]
fn first_status_of_a_pending_job_is_not_a_phase_change() {
    let job = job(true);
    let problem = ConfigProblem {
        reason: freight::api::Reason::SecretNotFound,
        message: "missing".into(),
    };
    let s = desired_status(&job, &Observation::Blocked(problem), at(10));
    assert_eq!(phase_change(None, &s), None);
    let running = desired_status(&job, &fleet(1, 1), at(10));
    assert_eq!(phase_change(Some(&s), &running), Some(Phase::Pending));
}

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        (
            0..10i32,
            0..10i32,
            proptest::option::of("[a-z ]{1,20}"),
            0..=10u64,
            0..30u64
        )
            .prop_map(|(d, r, stalled, done, failed)| {
                let failed = if done == 0 { 0 } else { failed };
                active(
                    FleetObservation {
                        desired: d,
                        ready: r,
                        stalled,
                    },
                    progress(done, failed),
                )
            }),
        (0..1000u64, 0..10u64)
            .prop_map(|(records, batches)| Observation::Planning { records, batches }),
        prop_oneof![
            Just(freight::api::Reason::SecretNotFound),
            Just(freight::api::Reason::SecretKeyNotFound),
            Just(freight::api::Reason::NameConflict)
        ]
        .prop_map(|reason| Observation::Blocked(ConfigProblem {
            reason,
            message: format!("{reason} happened"),
        })),
    ]
}

proptest! {
    /// Recomputing the status from the same observation, at any later time,
    /// yields exactly the stored status: the steady state writes nothing.
    #[test]
    fn status_is_a_fixed_point(
        history in proptest::collection::vec(observation(), 0..5),
        last in observation(),
        suspend in any::<bool>(),
        later in 1i64..1_000_000,
    ) {
        let mut job = job(true);
        job.spec.suspend = suspend;
        let mut t = 1_000;
        for obs in history.iter().chain(std::iter::once(&last)) {
            job.status = Some(desired_status(&job, obs, at(t)));
            t += 7;
        }
        let stored = job.status.clone().unwrap();
        prop_assert_eq!(desired_status(&job, &last, at(t + later)), stored);
    }

    /// A condition's transition time moves exactly when its status flips.
    #[test]
    fn transition_time_moves_only_on_flips(a in observation(), b in observation()) {
        let mut job = job(true);
        job.status = Some(desired_status(&job, &a, at(100)));
        let before = job.status.clone().unwrap();
        let after = desired_status(&job, &b, at(200));
        for c in &after.conditions {
            let old = before.conditions.iter().find(|o| o.type_ == c.type_).unwrap();
            let expected = if old.status == c.status { at(100) } else { at(200) };
            prop_assert_eq!(&c.last_transition_time, &expected, "{}", c.type_);
        }
    }
}

#[test]
fn running_job_reports_its_counters() {
    let job = job(true);
    let s = desired_status(&job, &fleet(2, 2), at(10));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.total_records, Some(1000));
    assert_eq!(s.processed_records, Some(400));
    assert_eq!(s.failed_records, Some(0));
    assert_eq!(s.progress.as_deref(), Some("40%"));
    // 300 records in the last 10 s.
    assert_eq!(s.records_per_second, Some(30));
    let b = s.batches.unwrap();
    assert_eq!(
        (b.total, b.pending, b.in_flight, b.succeeded, b.failed),
        (10, 6, 0, 4, 0)
    );
}

#[test]
fn finished_job_succeeds_and_reports_its_average_rate() {
    let job = job(true);
    let obs = active(FleetObservation::default(), progress(10, 0));
    let s = desired_status(&job, &obs, at(10));
    assert_eq!(s.phase, Phase::Succeeded);
    assert_eq!(cond(&s, "Complete").status, "True");
    assert_eq!(cond(&s, "Complete").reason, "Succeeded");
    assert_eq!(cond(&s, "Failed").status, "False");
    assert_eq!(s.progress.as_deref(), Some("100%"));
    // 1000 records over 20 s.
    assert_eq!(s.records_per_second, Some(50));
}

#[test]
fn failures_within_budget_complete_with_errors() {
    let mut job = job(true);
    job.spec.failure_policy.max_failed_record_ratio = 0.05;
    let obs = active(FleetObservation::default(), progress(10, 7));
    let s = desired_status(&job, &obs, at(10));
    assert_eq!(s.phase, Phase::CompletedWithErrors);
    assert_eq!(s.failed_records, Some(7));
    assert_eq!(s.processed_records, Some(993));
    assert_eq!(cond(&s, "Complete").reason, "CompletedWithErrors");
    assert!(cond(&s, "Complete").message.contains("spec.retryFailed"));
}

#[test]
fn failures_over_budget_fail_the_job_before_it_ends() {
    let mut job = job(true);
    job.spec.failure_policy.max_failed_record_ratio = 0.01;
    let obs = active(FleetObservation::default(), progress(3, 20));
    let s = desired_status(&job, &obs, at(10));
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(cond(&s, "Failed").status, "True");
    assert_eq!(cond(&s, "Failed").reason, "FailureBudgetExceeded");
    assert!(cond(&s, "Failed").message.contains("maxFailedRecordRatio"));
    assert_eq!(cond(&s, "Complete").status, "False");
}

#[test]
fn suspended_job_reports_no_throughput() {
    let mut job = job(true);
    job.spec.suspend = true;
    let s = desired_status(&job, &fleet(0, 0), at(10));
    assert_eq!(s.records_per_second, Some(0));
    assert_eq!(s.processed_records, Some(400));
}

#[test]
fn settled_job_keeps_its_result_and_follows_its_fleet() {
    let mut job = job(true);
    job.status = Some(desired_status(
        &job,
        &active(FleetObservation::default(), progress(10, 0)),
        at(10),
    ));
    let before = job.status.clone().unwrap();
    let s = desired_status(
        &job,
        &Observation::Settled(FleetObservation::default()),
        at(99),
    );
    assert_eq!(s, before);
}

#[test]
fn counter_changes_are_told_apart_from_state_changes() {
    let job = job(true);
    let a = desired_status(&job, &fleet(1, 1), at(10));
    let more = active(
        FleetObservation {
            desired: 1,
            ready: 1,
            stalled: None,
        },
        progress(5, 0),
    );
    let b = desired_status(&job, &more, at(10));
    assert_ne!(a, b);
    assert!(only_counters_differ(&a, &b));
    let done = desired_status(
        &job,
        &active(FleetObservation::default(), progress(10, 0)),
        at(10),
    );
    assert!(
        !only_counters_differ(&a, &done),
        "a phase change is not only counters"
    );
}

#[test]
fn status_stays_small_for_a_huge_job_with_scattered_failures() {
    let job = job(true);
    let mut p = progress(10, 0);
    p.total_records = 10_000_000;
    p.processed_records = 9_900_000;
    p.failed_records = 100_000;
    p.recent_failures = (0..5)
        .map(|i| freight::api::FailureSample {
            key: format!("{i:0>64}"),
            error: "x".repeat(200),
        })
        .collect();
    let mut job = job;
    job.spec.failure_policy.max_failed_record_ratio = 0.5;
    let s = desired_status(&job, &active(FleetObservation::default(), p), at(10));
    let size = serde_json::to_vec(&s).unwrap().len();
    assert!(size < 8 * 1024, "status is {size} bytes");
}

#[test]
fn a_batch_handed_out_too_often_degrades_the_job_and_names_it() {
    let job = job(true);
    let mut p = progress(4, 0);
    p.most_attempted = Some((3, "batch 7 (keys from 700 to 800)".into()));
    let ok = desired_status(
        &job,
        &active(FleetObservation::default(), p.clone()),
        at(10),
    );
    assert_eq!(
        cond(&ok, "Degraded").status,
        "False",
        "3 attempts are allowed"
    );
    p.most_attempted = Some((4, "batch 7 (keys from 700 to 800)".into()));
    let s = desired_status(&job, &active(FleetObservation::default(), p), at(10));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(cond(&s, "Degraded").reason, "BatchKeepsFailing");
    assert!(
        cond(&s, "Degraded")
            .message
            .contains("batch 7 (keys from 700 to 800)")
    );
    assert!(
        cond(&s, "Degraded")
            .message
            .contains("maxAttemptsPerBatch is 3")
    );
}
