//! Reconciles of a job going well: the finalizer, the fleet while planning,
//! the steady state that reads nothing, and the changes worth a write.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/scenario.rs"]
mod scenario;

use std::{sync::Arc, time::Duration};

use common::{Expect, Reply, job, secret, settings};
use freight::controller::{
    children::worker_revision,
    status::{Observation, desired_status},
};
use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    core::{ObjectMeta, PartialObjectMetaExt},
    runtime::watcher,
};
use pg::TempPostgres;
use scenario::*;
use serde_json::{Value, json};

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
