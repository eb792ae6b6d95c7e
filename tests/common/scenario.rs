//! The reconcile tests' scenario: a job, the caches of its children filled
//! as the watches would, a mock API server that asserts each request, and a
//! real PostgreSQL holding the job's tables and ledger.

#![allow(dead_code)]

use std::sync::Arc;

use crate::common::{self, Expect, Reply, context, job, secret, serve, settings};
use crate::pg::TempPostgres;
use freight::{
    api::MigrationJob,
    controller::{
        Context,
        children::{DesiredChildren, desired_children, worker_revision},
        reconcile::reconcile,
        status::{FleetObservation, Observation, Progress, desired_status},
        stores::Writers,
    },
};
use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Resource,
    core::{ObjectMeta, PartialObjectMetaExt},
    runtime::watcher,
};
use serde_json::{Value, json};

pub const SECRETS: &str = "/api/v1/namespaces/crm/secrets";
pub const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/crm/deployments";
pub const HPAS: &str = "/apis/autoscaling/v2/namespaces/crm/horizontalpodautoscalers";
pub const JOBS: &str = "/apis/freight.dev/v1alpha1/namespaces/crm/migrationjobs";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/crm/events?";
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// Records in the source table of [`databases`].
pub const RECORDS: u64 = 25;

/// A PostgreSQL with the example's tables: 25 contacts in `source`, an empty
/// `contacts` table in `target`.
pub fn databases() -> TempPostgres {
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
pub async fn plan(pg: &TempPostgres) {
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
pub fn planned_progress() -> Progress {
    Progress {
        total_records: RECORDS,
        pending_batches: 1,
        window_seconds: 10,
        most_attempted: Some((0, "batch 0".into())),
        ..Progress::default()
    }
}

pub fn earlier() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

/// A scenario: the job, what the caches hold, and the databases.
pub struct Scenario {
    pub ctx: Arc<Context>,
    pub handle: Option<common::Handle>,
    pub writers: Writers,
    pub job: MigrationJob,
    pub pg: Option<TempPostgres>,
}

impl Scenario {
    /// A new job (with its finalizer), no children, no Secrets.
    pub fn new() -> Self {
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
    pub fn with_databases(mut self) -> Self {
        let pg = databases();
        self.add_secret_meta("legacy-db", None);
        self.add_secret_meta("new-db", None);
        self.pg = Some(pg);
        self
    }

    pub fn pg(&self) -> &TempPostgres {
        self.pg.as_ref().expect("with_databases")
    }

    /// A Secret as the metadata watch sees it.
    pub fn add_secret_meta(&mut self, name: &str, owner: Option<&MigrationJob>) {
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
    pub fn children(&self, run_workers: bool) -> DesiredChildren {
        let owner = self.job.controller_owner_ref(&()).unwrap();
        desired_children(&self.job, &owner, &settings(), TOKEN, run_workers)
    }

    /// The job planned, its children in the caches, and its status exactly
    /// what the operator computes: the steady state.
    pub async fn steady(mut self) -> Self {
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

    pub fn put_deployment(&mut self, d: Deployment) {
        self.writers
            .deployments
            .apply_watcher_event(&watcher::Event::Apply(d));
    }

    pub fn deployment(&self) -> Deployment {
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
    pub fn secret_reads(&self) -> Vec<Expect> {
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
    pub fn credential_read(&self) -> Expect {
        let mut credential = serde_json::to_value(&self.children(true).credential).unwrap();
        credential["metadata"]["resourceVersion"] = "1".into();
        Expect::get(
            format!("{SECRETS}/contacts-worker"),
            Reply::Json(credential),
        )
    }

    /// Reconciles once against `expected` requests; fails on any other.
    pub async fn reconcile(
        &mut self,
        expected: Vec<Expect>,
    ) -> Result<(), freight::controller::Error> {
        let handle = self.handle.take().expect("the mock is back");
        let server = serve(handle, expected);
        let result = reconcile(Arc::new(self.job.clone()), self.ctx.clone()).await;
        self.handle = Some(server.await.unwrap());
        result.map(|_| ())
    }
}

pub fn stored_job() -> Reply {
    Reply::Json(serde_json::to_value(job(true)).unwrap())
}

pub fn status_apply() -> Expect {
    Expect::apply(&format!("{JOBS}/contacts/status")).reply(stored_job())
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}
