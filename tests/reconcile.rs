//! Reconcile against a mock API server that asserts each request in order,
//! caches of children filled by the test (as the watches would), and a real
//! PostgreSQL holding the job's tables and ledger.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::{sync::Arc, time::Duration};

use common::{Expect, Reply, context, job, secret, serve, settings};
use freight::{
    api::MigrationJob,
    controller::{
        Context,
        children::{DesiredChildren, desired_children, worker_revision},
        config::ConfigProblem,
        reconcile::reconcile,
        status::{FleetObservation, Observation, Progress, desired_status},
        stores::Writers,
    },
};
use http::Method;
use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Resource, ResourceExt,
    core::{ObjectMeta, PartialObjectMetaExt},
    runtime::watcher,
};
use pg::TempPostgres;
use serde_json::{Value, json};

const SECRETS: &str = "/api/v1/namespaces/crm/secrets";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/crm/deployments";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/crm/horizontalpodautoscalers";
const JOBS: &str = "/apis/freight.dev/v1alpha1/namespaces/crm/migrationjobs";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/crm/events?";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
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

/// Plans the job of `job()` in `pg` (as its planning task would).
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

fn earlier() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

/// A scenario: the job, what the caches hold, and the databases.
struct Scenario {
    ctx: Arc<Context>,
    handle: Option<common::Handle>,
    writers: Writers,
    job: MigrationJob,
    pg: Option<TempPostgres>,
}

impl Scenario {
    /// A new job (with its finalizer), no children, no Secrets.
    fn new() -> Self {
        let (ctx, handle, writers) = context();
        Self {
            ctx,
            handle: Some(handle),
            writers,
            job: job(true),
            pg: None,
        }
    }

    /// With the example's databases, and the Secrets that point at them.
    fn with_databases(mut self) -> Self {
        let pg = databases();
        self.add_secret_meta("legacy-db", None);
        self.add_secret_meta("new-db", None);
        self.pg = Some(pg);
        self
    }

    fn pg(&self) -> &TempPostgres {
        self.pg.as_ref().expect("with_databases")
    }

    /// A Secret as the metadata watch sees it.
    fn add_secret_meta(&mut self, name: &str, owner: Option<&MigrationJob>) {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("crm".into()),
            resource_version: Some("1".into()),
            owner_references: owner.map(|j| vec![j.controller_owner_ref(&()).unwrap()]),
            annotations: None,
            ..ObjectMeta::default()
        };
        self.writers
            .secrets
            .apply_watcher_event(&watcher::Event::Apply(
                meta.into_request_partial::<Secret>(),
            ));
    }

    /// The children the operator wants, exactly as stored (running or not).
    fn children(&self, run_workers: bool) -> DesiredChildren {
        let owner = self.job.controller_owner_ref(&()).unwrap();
        desired_children(&self.job, &owner, &settings(), TOKEN, run_workers)
    }

    /// The job planned, its children in the caches, and its status exactly
    /// what the operator computes: the steady state.
    async fn steady(mut self) -> Self {
        plan(self.pg()).await;
        let children = self.children(true);
        let mut credential = children.credential.clone();
        credential.metadata.resource_version = Some("1".into());
        self.writers
            .secrets
            .apply_watcher_event(&watcher::Event::Apply(
                credential.metadata.clone().into_request_partial::<Secret>(),
            ));
        let mut deployment = children.active().deployment.clone();
        // `desired` is the Deployment's spec.replicas, which the autoscaler set.
        deployment.spec.as_mut().unwrap().replicas = Some(1);
        deployment.status =
            Some(serde_json::from_value(json!({"replicas": 2, "readyReplicas": 2})).unwrap());
        self.put_deployment(deployment);
        self.writers
            .autoscalers
            .apply_watcher_event(&watcher::Event::Apply(children.autoscaler.clone()));
        let fleet = FleetObservation {
            desired: 1,
            ready: 2,
            stalled: None,
        };
        self.job.status = Some(desired_status(
            &self.job,
            &Observation::Active {
                fleet,
                progress: planned_progress(),
            },
            earlier(),
        ));
        self
    }

    fn put_deployment(&mut self, d: Deployment) {
        self.writers
            .deployments
            .apply_watcher_event(&watcher::Event::Apply(d));
    }

    fn deployment(&self) -> Deployment {
        let name = format!(
            "contacts-worker-{}",
            worker_revision(&self.job, &settings())
        );
        let d = self
            .ctx
            .stores
            .deployments
            .get(&kube::runtime::reflector::ObjectRef::new(&name).within("crm"))
            .expect("the deployment is cached");
        d.as_ref().clone()
    }

    /// The reads of a context that has not read the job's Secrets yet.
    fn secret_reads(&self) -> Vec<Expect> {
        let pg = self.pg();
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

    /// The credential read (first look of a fresh context at a steady job).
    fn credential_read(&self) -> Expect {
        let mut credential = serde_json::to_value(&self.children(true).credential).unwrap();
        credential["metadata"]["resourceVersion"] = "1".into();
        Expect::get(
            format!("{SECRETS}/contacts-worker"),
            Reply::Json(credential),
        )
    }

    /// Reconciles once against `expected` requests; fails on any other.
    async fn reconcile(&mut self, expected: Vec<Expect>) -> Result<(), freight::controller::Error> {
        let handle = self.handle.take().expect("the mock is back");
        let server = serve(handle, expected);
        let result = reconcile(Arc::new(self.job.clone()), self.ctx.clone()).await;
        self.handle = Some(server.await.unwrap());
        result.map(|_| ())
    }
}

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
    let mut s = Scenario::new();
    s.job = job(false);
    s.reconcile(vec![
        Expect::new(Method::PATCH, format!("{JOBS}/contacts?"), stored_job()).check(|body| {
            let text = body.to_string();
            assert!(text.contains("freight.dev/cleanup"), "{text}");
        }),
    ])
    .await
    .unwrap();
}

/// Waits for the job's planning task to store its plan.
async fn planned(pg: &TempPostgres) -> String {
    for _ in 0..200 {
        let found = pg.psql(
            "target",
            "SELECT coalesce((SELECT total_records || '/' || total_batches FROM freight.jobs), '')",
        );
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("planning never finished");
}

/// Keeps a copy of the request bodies it is given.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<Value>>>);

impl Captured {
    fn keep(&self, b: &Value) {
        self.0.lock().unwrap().push(b.clone());
    }
    fn take<T: serde::de::DeserializeOwned>(&self, i: usize) -> T {
        serde_json::from_value(self.0.lock().unwrap()[i].clone()).unwrap()
    }
}

#[tokio::test]
async fn new_job_gets_its_fleet_while_planned_in_the_background_then_runs() {
    let mut s = Scenario::new().with_databases();
    let revision = worker_revision(&s.job, &settings());
    let applied = Captured::default();
    let (a1, a2, a3) = (applied.clone(), applied.clone(), applied.clone());
    let mut expected = s.secret_reads();
    expected.extend([
        Expect::apply(&format!("{SECRETS}/contacts-worker")).check(move |b| {
            a1.keep(b);
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "MigrationJob");
            assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
            let token = b["data"]["token"].as_str().unwrap();
            assert!(token.len() > 40, "token looks too short: {token}");
        }),
        Expect::apply(&format!("{DEPLOYMENTS}/contacts-worker-{revision}")).check(move |b| {
            a2.keep(b);
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
        }),
        Expect::apply(&format!("{HPAS}/contacts-worker")).check(move |b| {
            a3.keep(b);
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
            assert_eq!(b["status"]["phase"], "Planning");
            assert_eq!(condition(&b["status"], "Progressing")["reason"], "Planning");
        }),
        Expect::post(EVENTS).check(|b| assert_eq!(b["reason"], "Planning")),
    ]);
    s.reconcile(expected).await.unwrap();
    assert_eq!(
        planned(s.pg()).await,
        format!("{RECORDS}/1"),
        "the plan is in the ledger"
    );

    // The watches now hold what was applied; the stored status says Planning.
    let credential: Secret = applied.take(0);
    s.writers
        .secrets
        .apply_watcher_event(&watcher::Event::Apply(
            credential.metadata.into_request_partial::<Secret>(),
        ));
    s.put_deployment(applied.take(1));
    s.writers
        .autoscalers
        .apply_watcher_event(&watcher::Event::Apply(applied.take(2)));
    s.job.status = Some(desired_status(
        &s.job,
        &Observation::Planning {
            records: 0,
            batches: 0,
        },
        earlier(),
    ));
    // Nothing is read again and no child is sent again: only the news.
    s.reconcile(vec![
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
            assert!(
                !b.to_string().contains("postgres://"),
                "a connection string leaked into status"
            );
        }),
        Expect::post(EVENTS).check(|b| {
            assert_eq!(b["reason"], "Running");
            assert_eq!(b["type"], "Normal");
        }),
    ])
    .await
    .unwrap();
}

#[tokio::test]
async fn steady_state_reads_each_secret_once_and_then_nothing_at_all() {
    let mut s = Scenario::new().with_databases().steady().await;
    // A fresh operator reads the three Secrets it needs, once; any PATCH,
    // POST or DELETE fails the test as an extra request.
    let mut reads = s.secret_reads();
    reads.insert(0, s.credential_read());
    s.reconcile(reads).await.unwrap();
    // From then on a reconcile of the unchanged job sends no request at all:
    // children come from the caches, Secrets from memory.
    s.reconcile(vec![]).await.unwrap();
    s.reconcile(vec![]).await.unwrap();
}

#[tokio::test]
async fn changed_worker_status_is_the_only_write() {
    let mut s = Scenario::new().with_databases().steady().await;
    let mut reads = s.secret_reads();
    reads.insert(0, s.credential_read());
    s.reconcile(reads).await.unwrap();
    // One worker became unready: status changes, children do not.
    let mut d = s.deployment();
    d.status.as_mut().unwrap().ready_replicas = Some(1);
    s.put_deployment(d);
    s.reconcile(vec![status_apply().check(|b| {
        assert_eq!(b["status"]["workers"]["ready"], 1);
        // The Ready condition did not flip, so it keeps its transition time.
        assert_eq!(
            condition(&b["status"], "Ready")["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    })])
    .await
    .unwrap();
}

#[tokio::test]
async fn changed_secret_is_read_again() {
    let mut s = Scenario::new().with_databases().steady().await;
    let mut reads = s.secret_reads();
    reads.insert(0, s.credential_read());
    s.reconcile(reads).await.unwrap();
    // The target Secret changed (new resourceVersion in the metadata watch).
    let meta = ObjectMeta {
        name: Some("new-db".into()),
        namespace: Some("crm".into()),
        resource_version: Some("2".into()),
        ..ObjectMeta::default()
    };
    s.writers
        .secrets
        .apply_watcher_event(&watcher::Event::Apply(
            meta.into_request_partial::<Secret>(),
        ));
    let mut again = secret("new-db", "url", &s.pg().url("target"));
    again["metadata"]["resourceVersion"] = "2".into();
    s.reconcile(vec![Expect::get(
        format!("{SECRETS}/new-db"),
        Reply::Json(again),
    )])
    .await
    .unwrap();
    s.reconcile(vec![]).await.unwrap();
}

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
