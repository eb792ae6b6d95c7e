//! Reconcile against a mock API server that asserts each request in order,
//! and a real PostgreSQL holding the job's tables and ledger.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;

use common::{Expect, Reply, context, job, secret, serve, settings};
use freight::controller::{
    children::desired_children,
    reconcile::reconcile,
    status::{FleetObservation, Observation, Progress, desired_status},
};
use http::Method;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use pg::TempPostgres;
use serde_json::{Value, json};

const SECRETS: &str = "/api/v1/namespaces/crm/secrets";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/crm/deployments";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/crm/horizontalpodautoscalers";
const JOBS: &str = "/apis/freight.dev/v1alpha1/namespaces/crm/migrationjobs";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/crm/events?";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn list(items: Vec<Value>) -> Reply {
    Reply::Json(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
}

/// Records in the source table of [`databases`].
const RECORDS: u64 = 25;

/// A PostgreSQL with the example's tables: 25 contacts in `source`, an empty
/// `contacts` table in `target`.
fn databases() -> TempPostgres {
    let pg = TempPostgres::start();
    pg.psql(
        "source",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, name text);
         INSERT INTO contacts SELECT g, 'name ' || g FROM generate_series(1, 25) g",
    );
    pg.psql(
        "target",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, name text)",
    );
    pg
}

/// The two Secret reads of a job whose Secrets point at `pg`.
fn secret_reads(pg: &TempPostgres) -> Vec<Expect> {
    vec![
        Expect::get(
            format!("{SECRETS}/legacy-db"),
            Reply::Json(secret("legacy-db", "url", &pg.url("source"))),
        ),
        Expect::get(
            format!("{SECRETS}/new-db"),
            Reply::Json(secret("new-db", "url", &pg.url("target"))),
        ),
    ]
}

/// The reads every reconcile of a configured, planned job makes, in order.
fn reads(pg: &TempPostgres, credential: Reply, deployments: Vec<Value>, hpa: Reply) -> Vec<Expect> {
    let mut reads = secret_reads(pg);
    reads.extend(child_reads(credential, deployments, hpa));
    reads
}

/// The reads of the job's children.
fn child_reads(credential: Reply, deployments: Vec<Value>, hpa: Reply) -> Vec<Expect> {
    vec![
        Expect::get(format!("{SECRETS}/contacts-worker"), credential),
        Expect::get(
            format!("{DEPLOYMENTS}?&labelSelector=freight.dev%2Fjob%3Dcontacts"),
            list(deployments),
        ),
        Expect::get(format!("{HPAS}/contacts-worker"), hpa),
    ]
}

/// What the server answers to a write of the job: the job as stored.
fn stored_job() -> Reply {
    Reply::Json(serde_json::to_value(job(true)).unwrap())
}

fn status_apply() -> Expect {
    Expect::apply(&format!("{JOBS}/contacts/status")).reply(stored_job())
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn first_reconcile_only_adds_the_finalizer() {
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![
            Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), stored_job()).check(|body| {
                let text = body.to_string();
                assert!(text.contains("freight.dev/cleanup"), "{text}");
            }),
        ],
    );
    reconcile(Arc::new(job(false)), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn new_job_is_planned_then_gets_credential_deployment_autoscaler_and_status() {
    let pg = databases();
    let (ctx, handle) = context();
    let mut expected = secret_reads(&pg);
    expected.extend([
        status_apply().check(|b| {
            assert_eq!(b["status"]["phase"], "Planning");
            assert_eq!(condition(&b["status"], "Progressing")["reason"], "Planning");
        }),
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Planning")),
    ]);
    expected.extend(child_reads(Reply::NotFound, vec![], Reply::NotFound));
    expected.extend([
        Expect::apply(&format!("{SECRETS}/contacts-worker")).check(|b| {
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "MigrationJob");
            assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
            let token = b["data"]["token"].as_str().unwrap();
            assert!(token.len() > 40, "token looks too short: {token}");
        }),
        Expect::new(
            Method::PATCH,
            String::new(), // filled below: the name carries the revision
            Reply::Echo,
        ),
        Expect::apply(&format!("{HPAS}/contacts-worker")).check(|b| {
            assert_eq!(b["spec"]["minReplicas"], 1);
            assert_eq!(b["spec"]["maxReplicas"], 8);
            assert!(
                b["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("contacts-worker-")
            );
        }),
        status_apply().check(|b| {
            let status = &b["status"];
            assert_eq!(status["phase"], "Running");
            assert_eq!(status["observedGeneration"], 1);
            assert_eq!(status["totalRecords"], RECORDS);
            assert_eq!(status["processedRecords"], 0);
            assert_eq!(status["failedRecords"], 0);
            assert_eq!(status["progress"], "0%");
            assert_eq!(
                status["batches"],
                json!({"total": 1, "pending": 1, "inFlight": 0, "succeeded": 0, "failed": 0})
            );
            assert_eq!(condition(status, "Progressing")["status"], "True");
            assert_eq!(condition(status, "Complete")["status"], "False");
            assert_eq!(condition(status, "Ready")["reason"], "WorkersNotReady");
            let text = b.to_string();
            assert!(
                !text.contains("postgres://"),
                "a connection string leaked into status"
            );
        }),
        Expect::post(EVENTS).check(|b| {
            assert_eq!(b["reason"], "Running");
            assert_eq!(b["type"], "Normal");
        }),
    ]);
    let job = job(true);
    let revision = freight::controller::children::worker_revision(&job, &settings());
    expected[8] = Expect::apply(&format!("{DEPLOYMENTS}/contacts-worker-{revision}")).check(|b| {
        let pod = &b["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "freight:test");
        assert_eq!(c["args"], json!(["worker"]));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert!(
            !b.to_string().contains("postgres://"),
            "connection strings are passed by Secret reference only"
        );
        assert_eq!(c["resources"]["requests"]["cpu"], "250m");
        assert!(
            b["spec"].get("replicas").is_none(),
            "replicas belong to the autoscaler"
        );
        assert_eq!(b["metadata"]["labels"]["freight.dev/job"], "contacts");
        assert_eq!(
            b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "freight-operator"
        );
    });
    let server = serve(handle, expected);
    reconcile(Arc::new(job), ctx.clone()).await.unwrap();
    server.await.unwrap();
    let planned = pg.psql(
        "target",
        "SELECT total_records || '/' || total_batches FROM freight.jobs",
    );
    assert_eq!(planned, format!("{RECORDS}/1"), "the plan is in the ledger");
}

/// What the ledger of a planned, untouched job reads as.
fn planned_progress() -> Progress {
    Progress {
        total_records: RECORDS,
        pending_batches: 1,
        window_seconds: 10,
        most_attempted: Some((0, "batch 0".into())),
        ..Progress::default()
    }
}

/// Plans the job of `job()` in `pg` (as a first reconcile would).
async fn plan(pg: &TempPostgres) {
    let source = freight::postgres::connect(&pg.url("source")).await.unwrap();
    let mut target = freight::postgres::connect(&pg.url("target")).await.unwrap();
    freight::postgres::ledger::install(&target).await.unwrap();
    let table = freight::postgres::TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    let uid = job(true).metadata.uid.unwrap();
    freight::postgres::ledger::plan(
        &source,
        &mut target,
        &uid,
        &table,
        "id",
        1000,
        &Default::default(),
    )
    .await
    .unwrap();
}

/// A planned job whose children and status are exactly what the operator wants.
async fn steady_state() -> (TempPostgres, freight::api::MigrationJob, Vec<Expect>) {
    let pg = databases();
    plan(&pg).await;
    let (job, expected) = steady_state_in(&pg, planned_progress());
    (pg, job, expected)
}

fn steady_state_in(
    pg: &TempPostgres,
    progress: Progress,
) -> (freight::api::MigrationJob, Vec<Expect>) {
    let mut job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let running = matches!(
        progress.outcome(0.01),
        freight::domain::outcome::Outcome::InProgress
    );
    let children = desired_children(&job, &owner, &settings(), TOKEN, running);
    let mut deployment = serde_json::to_value(&children.deployment).unwrap();
    deployment["status"] = json!({"replicas": 2, "readyReplicas": 2});
    let fleet = FleetObservation {
        desired: 1,
        ready: 2,
        stalled: None,
    };
    // `desired` is the Deployment's spec.replicas, which the autoscaler set.
    deployment["spec"]["replicas"] = 1.into();
    let earlier = Time(Timestamp::from_second(1_700_000_000).unwrap());
    job.status = Some(desired_status(
        &job,
        &Observation::Active { fleet, progress },
        earlier,
    ));
    let expected = reads(
        pg,
        Reply::Json(serde_json::to_value(&children.credential).unwrap()),
        vec![deployment],
        Reply::Json(serde_json::to_value(&children.autoscaler).unwrap()),
    );
    (job, expected)
}

#[tokio::test]
async fn steady_state_reconcile_sends_no_write() {
    let (ctx, handle) = context();
    let (_pg, job, expected) = steady_state().await;
    // Only the five reads: any PATCH, POST or DELETE fails the test as an extra request.
    let server = serve(handle, expected);
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn changed_worker_status_is_the_only_write() {
    let (ctx, handle) = context();
    let (_pg, job, mut expected) = steady_state().await;
    // One worker became unready: status changes, children do not.
    let Reply::Json(list) = &mut expected[3].reply_mut() else {
        unreachable!()
    };
    list["items"][0]["status"]["readyReplicas"] = 1.into();
    expected.push(status_apply().check(|b| {
        assert_eq!(b["status"]["workers"]["ready"], 1);
        // The Ready condition did not flip, so it keeps its transition time.
        assert_eq!(
            condition(&b["status"], "Ready")["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }));
    let server = serve(handle, expected);
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn missing_secret_sets_a_condition_naming_it() {
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![
            Expect::get(format!("{SECRETS}/legacy-db"), Reply::NotFound),
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
        ],
    );
    reconcile(Arc::new(job(true)), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn missing_secret_again_writes_nothing() {
    let (ctx, handle) = context();
    let mut job = job(true);
    let problem = freight::controller::config::ConfigProblem {
        reason: "SecretNotFound",
        message: "Secret crm/legacy-db referenced by spec.source.postgres.connectionSecretRef does not exist".into(),
    };
    let earlier = Time(Timestamp::from_second(1_700_000_000).unwrap());
    job.status = Some(desired_status(
        &job,
        &Observation::Blocked(problem),
        earlier,
    ));
    let server = serve(
        handle,
        vec![Expect::get(format!("{SECRETS}/legacy-db"), Reply::NotFound)],
    );
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn suspended_job_pins_workers_to_zero() {
    let (ctx, handle) = context();
    let (_pg, mut job, mut expected) = steady_state().await;
    job.spec.suspend = true;
    job.metadata.generation = Some(2);
    let revision = freight::controller::children::worker_revision(&job, &settings());
    expected.push(
        Expect::apply(&format!("{DEPLOYMENTS}/contacts-worker-{revision}"))
            .check(|b| assert_eq!(b["spec"]["replicas"], 0)),
    );
    expected.push(status_apply().check(|b| {
        assert_eq!(b["status"]["phase"], "Suspended");
        assert_eq!(b["status"]["observedGeneration"], 2);
        assert_eq!(condition(&b["status"], "Ready")["reason"], "Suspended");
    }));
    expected.push(Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Suspended")));
    let server = serve(handle, expected);
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn someone_elses_deployment_is_not_taken_over() {
    let (ctx, handle) = context();
    let (_pg, job, mut expected) = steady_state().await;
    let Reply::Json(list) = &mut expected[3].reply_mut() else {
        unreachable!()
    };
    list["items"][0]["metadata"]["ownerReferences"][0]["uid"] = "someone-else".into();
    expected.push(status_apply().check(|b| {
        assert_eq!(b["status"]["phase"], "Pending");
        let ready = condition(&b["status"], "Ready");
        assert_eq!(ready["reason"], "NameConflict");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("Deployment contacts-worker-")
        );
    }));
    expected.push(Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "NameConflict")));
    expected.push(Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Pending")));
    let server = serve(handle, expected);
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn deletion_stops_workers_removes_the_ledger_then_releases_the_finalizer() {
    let (ctx, handle) = context();
    let (pg, mut job, expected) = steady_state().await;
    job.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_100).unwrap()));
    let Reply::Json(deployments) = &expected[3].reply_ref() else {
        unreachable!()
    };
    let deployment = deployments["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = serve(
        handle,
        vec![
            Expect::delete(format!("{HPAS}/contacts-worker?"), Reply::Echo),
            Expect::get(
                format!("{DEPLOYMENTS}?&labelSelector=freight.dev%2Fjob%3Dcontacts"),
                Reply::Json(deployments.clone()),
            ),
            Expect::delete(format!("{DEPLOYMENTS}/{deployment}?"), Reply::Echo),
            Expect::delete(format!("{SECRETS}/contacts-worker?"), Reply::NotFound),
            secret_reads(&pg).remove(0),
            secret_reads(&pg).remove(1),
            Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Deleted")),
            Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), stored_job()).check(|b| {
                assert!(
                    b.to_string().contains("remove"),
                    "finalizer removal expected: {b}"
                );
            }),
        ],
    );
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
    assert_eq!(
        pg.psql(
            "target",
            "SELECT (SELECT count(*) FROM freight.jobs) + (SELECT count(*) FROM freight.batches)"
        ),
        "0",
        "the job's ledger is gone"
    );
}

#[tokio::test]
async fn api_failure_is_an_error_to_retry() {
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![Expect::get(
            format!("{SECRETS}/legacy-db"),
            Reply::Status(503, "etcd is unavailable"),
        )],
    );
    let job = Arc::new(job(true));
    let err = reconcile(job.clone(), ctx.clone()).await.unwrap_err();
    assert!(err.to_string().contains("etcd is unavailable"), "{err}");
    server.await.unwrap();
    let _ = job.name_any();
}

#[tokio::test]
async fn job_gone_before_the_finalizer_is_removed_is_not_an_error() {
    let (ctx, handle) = context();
    let (_pg, mut job, expected) = steady_state().await;
    job.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_100).unwrap()));
    let server = serve(
        handle,
        vec![
            Expect::delete(format!("{HPAS}/contacts-worker?"), Reply::NotFound),
            Expect::get(
                format!("{DEPLOYMENTS}?&labelSelector=freight.dev%2Fjob%3Dcontacts"),
                list(vec![]),
            ),
            Expect::delete(format!("{SECRETS}/contacts-worker?"), Reply::NotFound),
            Expect::get(format!("{SECRETS}/legacy-db"), Reply::NotFound),
            Expect::post(EVENTS),
            Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), Reply::NotFound),
        ],
    );
    drop(expected);
    reconcile(Arc::new(job), ctx).await.unwrap();
    server.await.unwrap();
}
