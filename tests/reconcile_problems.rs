//! Reconciles of a job in trouble or going away: missing Secrets, suspend,
//! someone else's objects, deletion, and API failures.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/scenario.rs"]
mod scenario;

use common::{Expect, Reply, settings};
use freight::{
    api::MigrationJob,
    controller::{
        children::worker_revision,
        config::ConfigProblem,
        status::{Observation, desired_status},
    },
};
use http::Method;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use scenario::*;

fn missing_secret_status(job: &MigrationJob) -> freight::api::MigrationJobStatus {
    let problem = ConfigProblem {
        reason: freight::api::Reason::SecretNotFound,
        message: "Secret crm/legacy-db referenced by spec.source.postgres.connectionSecretRef does not exist".into(),
    };
    desired_status(job, &Observation::Blocked(problem), earlier())
}

#[tokio::test]
async fn missing_secret_sets_a_condition_naming_it_without_asking_the_api() {
    let mut s = Scenario::new();
    // The metadata watch has not seen the Secret: no GET is needed to know.
    s.reconcile(vec![
        status_apply().check(|b| {
            let status = &b["status"];
            assert_eq!(status["phase"], "Pending");
            let ready = condition(status, "Ready");
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "SecretNotFound");
            let message = ready["message"].as_str().unwrap();
            assert!(message.contains("crm/legacy-db"), "{message}");
            assert!(
                message.contains("spec.source.postgres.connectionSecretRef"),
                "{message}"
            );
        }),
        Expect::post(EVENTS).check(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reason"], "SecretNotFound");
        }),
    ])
    .await
    .unwrap();
}

#[tokio::test]
async fn missing_secret_again_writes_nothing() {
    let mut s = Scenario::new();
    s.job.status = Some(missing_secret_status(&s.job));
    s.reconcile(vec![]).await.unwrap();
}

#[tokio::test]
async fn suspended_job_pins_workers_to_zero() {
    let mut s = Scenario::new().with_databases().steady().await;
    s.job.spec.suspend = true;
    s.job.metadata.generation = Some(2);
    let revision = worker_revision(&s.job, &settings());
    let mut expected = s.secret_reads();
    expected.insert(0, s.credential_read());
    expected.extend([
        Expect::apply(&format!("{DEPLOYMENTS}/contacts-worker-{revision}"))
            .check(|b| assert_eq!(b["spec"]["replicas"], 0)),
        status_apply().check(|b| {
            assert_eq!(b["status"]["phase"], "Suspended");
            assert_eq!(b["status"]["observedGeneration"], 2);
            assert_eq!(b["status"]["workers"]["desired"], 0);
            assert_eq!(condition(&b["status"], "Ready")["reason"], "Suspended");
        }),
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Suspended")),
    ]);
    s.reconcile(expected).await.unwrap();
}

#[tokio::test]
async fn someone_elses_deployment_is_not_taken_over() {
    let mut s = Scenario::new().with_databases().steady().await;
    let mut d = s.deployment();
    d.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
    s.put_deployment(d);
    let mut expected = s.secret_reads();
    expected.insert(0, s.credential_read());
    expected.extend([
        status_apply().check(|b| {
            assert_eq!(b["status"]["phase"], "Pending");
            let ready = condition(&b["status"], "Ready");
            assert_eq!(ready["reason"], "NameConflict");
            assert!(
                ready["message"]
                    .as_str()
                    .unwrap()
                    .contains("Deployment contacts-worker-")
            );
        }),
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "NameConflict")),
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Pending")),
    ]);
    s.reconcile(expected).await.unwrap();
}

#[tokio::test]
async fn deletion_stops_workers_removes_the_ledger_then_releases_the_finalizer() {
    let mut s = Scenario::new().with_databases().steady().await;
    s.job.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_100).unwrap()));
    let deployment = s.deployment().name_any();
    let mut expected = vec![
        Expect::delete(format!("{HPAS}/contacts-worker?"), Reply::Echo),
        Expect::delete(format!("{DEPLOYMENTS}/{deployment}?"), Reply::Echo),
        Expect::delete(format!("{SECRETS}/contacts-worker?"), Reply::NotFound),
    ];
    expected.extend(s.secret_reads());
    expected.extend([
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Deleted")),
        Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), stored_job()).check(|b| {
            assert!(
                b.to_string().contains("remove"),
                "finalizer removal expected: {b}"
            );
        }),
    ]);
    s.reconcile(expected).await.unwrap();
    assert_eq!(
        s.pg().psql(
            "target",
            "SELECT (SELECT count(*) FROM freight.jobs) + (SELECT count(*) FROM freight.batches)"
        ),
        "0",
        "the job's ledger is gone"
    );
    assert!(s.ctx.memory.is_empty(), "the job is forgotten");
}

#[tokio::test]
async fn api_failure_is_an_error_to_retry() {
    let mut s = Scenario::new().with_databases();
    let err = s
        .reconcile(vec![Expect::get(
            format!("{SECRETS}/legacy-db"),
            Reply::Status(503, "etcd is unavailable"),
        )])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("etcd is unavailable"), "{err}");
}

#[tokio::test]
async fn job_gone_before_the_finalizer_is_removed_is_not_an_error() {
    let mut s = Scenario::new();
    s.job.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_100).unwrap()));
    s.reconcile(vec![
        Expect::delete(format!("{HPAS}/contacts-worker?"), Reply::NotFound),
        Expect::delete(format!("{SECRETS}/contacts-worker?"), Reply::NotFound),
        Expect::post(EVENTS),
        Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), Reply::NotFound),
    ])
    .await
    .unwrap();
}
