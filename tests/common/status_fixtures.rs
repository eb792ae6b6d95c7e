//! Observations and helpers shared by the status tests.

#![allow(dead_code)]

use freight::controller::status::{FleetObservation, Observation, Progress};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

/// A job with `done` of 10 batches of 100 records finished, `failed` of
/// their records rejected.
pub fn progress(done: u64, failed: u64) -> Progress {
    Progress {
        total_records: 1000,
        pending_batches: 10 - done,
        done_batches: done,
        failed_batches: u64::from(failed > 0),
        processed_records: done * 100 - failed,
        failed_records: failed,
        recent_records: 300,
        window_seconds: 10,
        elapsed_seconds: 20.0,
        ..Progress::default()
    }
}

pub fn active(fleet: FleetObservation, progress: Progress) -> Observation {
    Observation::Active { fleet, progress }
}

pub fn fleet(desired: i32, ready: i32) -> Observation {
    active(
        FleetObservation {
            desired,
            ready,
            stalled: None,
        },
        progress(4, 0),
    )
}

pub fn cond<'a>(
    s: &'a freight::api::MigrationJobStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}
