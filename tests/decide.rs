//! The pure decision, as plain data: snapshot in, plan out. The central
//! property: carrying out a plan and deciding again on the same data yields
//! a plan that does nothing (no write in a steady state).

mod common;

use std::{sync::Arc, time::Duration};

use common::{job, settings};
use freight::{
    api::{MigrationJob, Phase, Reason},
    controller::{
        children::desired_children,
        config::ConfigProblem,
        decide::{ChildWrite, CoordinatorChange, DecideSettings, Plan, decide},
        observe::{DataView, ObservedChildren, Snapshot, Token},
        status::Progress,
    },
    coordinator::JobState,
    domain::outcome::Outcome,
};
use jiff::Timestamp;
use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};
use kube::{Resource, ResourceExt};
use proptest::prelude::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const INTERVAL: Duration = Duration::from_secs(5);

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn progress(total_batches: u64, done: u64, failed_records: u64) -> Progress {
    Progress {
        total_records: total_batches * 100,
        pending_batches: total_batches - done,
        done_batches: done,
        failed_batches: u64::from(failed_records > 0),
        processed_records: done * 100 - failed_records.min(done * 100),
        failed_records: failed_records.min(done * 100),
        window_seconds: 10,
        ..Progress::default()
    }
}

fn snapshot(job: MigrationJob, data: DataView) -> Snapshot {
    Snapshot {
        job: Arc::new(job),
        children: ObservedChildren {
            token: Token(TOKEN.into()),
            ..ObservedChildren::default()
        },
        data,
        urls: None,
        since_status_write: None,
    }
}

fn run(s: &Snapshot, now: i64) -> Plan {
    let children = settings();
    decide(
        s,
        at(now),
        &DecideSettings {
            children: &children,
            status_interval: INTERVAL,
        },
    )
}

/// What the world looks like after `plan` was carried out: children as
/// applied (and made ready as asked), status as written.
fn carry_out(s: &mut Snapshot, plan: &Plan) {
    for write in &plan.apply {
        match write {
            ChildWrite::Credential(secret) => s.children.credential = Some(secret.metadata.clone()),
            ChildWrite::Fleet(d) => {
                let name = d.name_any();
                s.children.deployments.retain(|e| e.name_any() != name);
                let mut stored = Deployment::clone(d);
                let spec = stored.spec.as_mut().unwrap();
                spec.replicas = Some(spec.replicas.unwrap_or(1));
                s.children.deployments.push(Arc::new(stored));
            }
            ChildWrite::Autoscaler(h) => s.children.autoscaler = Some(Arc::new(*h.clone())),
        }
    }
    s.children
        .deployments
        .retain(|d| !plan.delete_deployments.contains(&d.name_any()));
    if let Some(status) = &plan.status {
        Arc::make_mut(&mut s.job).status = Some(status.clone());
        s.since_status_write = Some(Duration::ZERO);
    }
    if plan.start_planning
        && let DataView::Planning { running, .. } = &mut s.data
    {
        *running = true;
    }
}

fn is_idle(p: &Plan) -> bool {
    p.apply.is_empty()
        && p.delete_deployments.is_empty()
        && p.status.is_none()
        && p.events.is_empty()
        && !p.start_planning
        && p.schedule_retry.is_none()
}

#[test]
fn a_new_job_gets_its_children_and_starts_planning() {
    let s = snapshot(
        job(true),
        DataView::Planning {
            running: false,
            records: 0,
            batches: 0,
        },
    );
    let plan = run(&s, 100);
    assert!(plan.start_planning);
    assert_eq!(plan.coordinator, CoordinatorChange::Remove);
    let kinds: Vec<&str> = plan
        .apply
        .iter()
        .map(|w| match w {
            ChildWrite::Credential(_) => "credential",
            ChildWrite::Fleet(_) => "fleet",
            ChildWrite::Autoscaler(_) => "autoscaler",
        })
        .collect();
    assert_eq!(
        kinds,
        ["credential", "fleet", "autoscaler"],
        "dependency order"
    );
    let status = plan.status.unwrap();
    assert_eq!(status.phase, Phase::Planning);
    assert_eq!(plan.events[0].reason, Reason::Planning);
    assert_eq!(plan.requeue, INTERVAL);
}

#[test]
fn planning_progress_shows_as_counters() {
    let mut s = snapshot(
        job(true),
        DataView::Planning {
            running: true,
            records: 0,
            batches: 0,
        },
    );
    let plan = run(&s, 100);
    assert!(!plan.start_planning, "a running task is not started twice");
    carry_out(&mut s, &plan);
    s.data = DataView::Planning {
        running: true,
        records: 120_000,
        batches: 12,
    };
    // Counters alone wait for the status interval…
    s.since_status_write = Some(Duration::from_secs(1));
    let plan = run(&s, 101);
    assert!(plan.status.is_none());
    assert_eq!(plan.requeue, Duration::from_secs(4));
    // …then are written.
    s.since_status_write = Some(INTERVAL);
    let status = run(&s, 105).status.expect("counters written");
    assert_eq!(status.total_records, Some(120_000));
    assert_eq!(status.batches.unwrap().total, 12);
}

#[test]
fn a_retry_round_is_scheduled_before_anything_else() {
    let s = snapshot(job(true), DataView::RetryDue { round: 2 });
    let plan = run(&s, 100);
    assert_eq!(plan.schedule_retry, Some(2));
    assert!(plan.apply.is_empty() && plan.status.is_none());
    assert!(plan.requeue < Duration::from_secs(1));
}

#[test]
fn a_blocked_job_applies_nothing_and_is_not_served() {
    let problem = ConfigProblem {
        reason: Reason::TargetTableNotFound,
        message: "spec.target.postgres.table: no table public.contacts".into(),
    };
    let s = snapshot(job(true), DataView::BlockedInDatabase(problem));
    let plan = run(&s, 100);
    assert!(plan.apply.is_empty());
    assert_eq!(plan.coordinator, CoordinatorChange::Remove);
    assert_eq!(plan.status.unwrap().phase, Phase::Pending);
    assert!(plan.events[0].warning);
    assert_eq!(plan.events[0].reason, Reason::TargetTableNotFound);
    assert_eq!(
        plan.requeue,
        Duration::from_secs(15),
        "databases are rechecked"
    );
}

#[test]
fn a_finished_job_pins_its_fleet_to_zero_and_tells_workers_it_is_finished() {
    let mut s = snapshot(job(true), DataView::Planned(progress(1, 0, 0)));
    let plan = run(&s, 100);
    carry_out(&mut s, &plan);
    s.data = DataView::Planned(progress(1, 1, 0));
    let plan = run(&s, 200);
    assert_eq!(
        plan.coordinator,
        CoordinatorChange::Serve(JobState::Finished)
    );
    assert_eq!(plan.status.as_ref().unwrap().phase, Phase::Succeeded);
    let Some(ChildWrite::Fleet(d)) = plan
        .apply
        .iter()
        .find(|w| matches!(w, ChildWrite::Fleet(_)))
    else {
        panic!("the fleet is scaled to zero: {:?}", plan.apply);
    };
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0));
}

#[test]
fn fleets_of_earlier_revisions_are_deleted_unless_someone_else_owns_them() {
    let mut j = job(true);
    j.spec.workers.image = Some("freight:old".into());
    let owner = j.controller_owner_ref(&()).unwrap();
    let old = desired_children(&j, &owner, &settings(), TOKEN, true);
    let mut foreign = old.active().deployment.clone();
    foreign.metadata.name = Some("contacts-worker-foreign".into());
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let mut s = snapshot(job(true), DataView::Planned(progress(4, 1, 0)));
    s.children.deployments = vec![Arc::new(old.active().deployment.clone()), Arc::new(foreign)];
    let plan = run(&s, 100);
    assert_eq!(
        plan.delete_deployments,
        [old.active().deployment.name_any()]
    );
}

fn data_view() -> impl Strategy<Value = DataView> {
    prop_oneof![
        (1u64..20, 0u64..20, 0u64..50).prop_map(|(total, done, failed)| {
            DataView::Planned(progress(total, done.min(total), failed))
        }),
        (any::<bool>(), 0u64..10_000, 0u64..10).prop_map(|(running, records, batches)| {
            DataView::Planning {
                running,
                records,
                batches,
            }
        }),
        Just(DataView::Blocked(ConfigProblem {
            reason: Reason::SecretNotFound,
            message: "Secret crm/legacy-db does not exist".into(),
        })),
    ]
}

proptest! {
    /// Whatever the history, carrying out a plan and deciding again on the
    /// same data (any time later) does nothing: no write in a steady state.
    #[test]
    fn deciding_again_after_acting_is_idle(
        history in proptest::collection::vec((data_view(), any::<bool>()), 1..6),
        ready in 0i32..4,
        later in 0i64..1_000_000,
    ) {
        let mut s = snapshot(job(true), DataView::Settled);
        let mut t = 1_000;
        for (data, suspend) in history {
            Arc::make_mut(&mut s.job).spec.suspend = suspend;
            s.data = data;
            s.since_status_write = Some(INTERVAL);
            let plan = run(&s, t);
            carry_out(&mut s, &plan);
            for d in &mut s.children.deployments {
                let d = Arc::make_mut(d);
                d.status = Some(serde_json::from_value(serde_json::json!({"readyReplicas": ready})).unwrap());
            }
            // Readiness changed in the cache: one more look settles it.
            let plan = run(&s, t + 1);
            carry_out(&mut s, &plan);
            t += 10;
        }
        s.since_status_write = Some(Duration::from_secs(3600));
        let again = run(&s, t + later);
        prop_assert!(is_idle(&again), "not idle: {again:?}");
    }

    /// The fleet runs exactly while the job is planning or in progress and
    /// not suspended (the example's budget is 1 % failed records).
    #[test]
    fn workers_run_only_while_there_is_work(data in data_view(), suspend in any::<bool>()) {
        let mut j = job(true);
        j.spec.suspend = suspend;
        let s = snapshot(j, data.clone());
        let plan = run(&s, 100);
        let fleet = plan.apply.iter().find_map(|w| match w {
            ChildWrite::Fleet(d) => Some(d.spec.as_ref().unwrap().replicas),
            _ => None,
        });
        match data {
            DataView::Blocked(_) => prop_assert!(fleet.is_none()),
            DataView::Planned(p) if !matches!(p.outcome(0.01), Outcome::InProgress) => {
                prop_assert_eq!(fleet, Some(Some(0)))
            }
            _ if suspend => prop_assert_eq!(fleet, Some(Some(0))),
            _ => prop_assert_eq!(fleet, Some(None)),
        }
    }
}
