//! Status and conditions computed from observations, as plain data.

mod common;

use common::job;
use freight::{
    api::Phase,
    controller::{
        config::ConfigProblem,
        status::{FleetObservation, Observation, desired_status, phase_change},
    },
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn fleet(desired: i32, ready: i32) -> Observation {
    Observation::Fleet(FleetObservation {
        desired,
        ready,
        stalled: None,
    })
}

fn cond<'a>(
    s: &'a freight::api::MigrationJobStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn every_condition_type_is_reported_with_the_generation() {
    let job = job(true);
    let s = desired_status(&job, &fleet(1, 1), at(10));
    let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "Progressing", "Complete", "Failed", "Degraded"]
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
        reason: "SecretKeyNotFound",
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
        reason: "SecretNotFound",
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
    let obs = Observation::Fleet(FleetObservation {
        desired: 2,
        ready: 0,
        stalled: Some("ReplicaSet has timed out progressing".into()),
    });
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
        reason: "SecretNotFound",
        message: "missing".into(),
    };
    let s = desired_status(&job, &Observation::Blocked(problem), at(10));
    assert_eq!(phase_change(None, &s), None);
    let running = desired_status(&job, &fleet(1, 1), at(10));
    assert_eq!(phase_change(Some(&s), &running), Some(Phase::Pending));
}

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        (0..10i32, 0..10i32, proptest::option::of("[a-z ]{1,20}")).prop_map(|(d, r, stalled)| {
            Observation::Fleet(FleetObservation {
                desired: d,
                ready: r,
                stalled,
            })
        }),
        prop_oneof![
            Just("SecretNotFound"),
            Just("SecretKeyNotFound"),
            Just("NameConflict")
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
