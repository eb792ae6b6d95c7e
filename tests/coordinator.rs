//! The coordinator API with a real ledger: only the job's credential leases
//! its batches, and the answers tell a worker what to do next.

#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use freight::{
    coordinator::{JobEntry, JobKey, JobState, LeaseResponse, Registry, router},
    postgres::{SharedClient, TableRef, connect, ledger},
};
use http_body_util::BodyExt;
use pg::TempPostgres;
use tower::ServiceExt;

const JOB: &str = "1f0e7c1a-0000-4000-8000-000000000001";
const OTHER: &str = "1f0e7c1a-0000-4000-8000-000000000002";
const PATH: &str = "/v1/namespaces/crm/migrationjobs/contacts/leases";

fn shared(pg: &TempPostgres) -> Arc<SharedClient> {
    Arc::new(SharedClient::new(pg.url("target"), ""))
}

async fn setup() -> (TempPostgres, Registry, Arc<tokio_postgres::Client>) {
    let pg = TempPostgres::start();
    pg.psql("source", "CREATE TABLE contacts (id int PRIMARY KEY); INSERT INTO contacts SELECT generate_series(1, 30)");
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    ledger::install(&target).await.unwrap();
    let table = TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    ledger::plan(
        &source,
        &mut target,
        JOB,
        &table,
        "id",
        10,
        &Default::default(),
    )
    .await
    .unwrap();
    ledger::plan(
        &source,
        &mut target,
        OTHER,
        &table,
        "id",
        10,
        &Default::default(),
    )
    .await
    .unwrap();
    let target = Arc::new(target);
    let registry = Registry::default();
    let key = |name: &str| JobKey {
        namespace: "crm".into(),
        name: name.into(),
    };
    registry.upsert(
        key("contacts"),
        JobEntry::new(JOB.into(), "token-a", shared(&pg), JobState::Serving, 30.0),
    );
    registry.upsert(
        key("orders"),
        JobEntry::new(
            OTHER.into(),
            "token-b",
            shared(&pg),
            JobState::Serving,
            30.0,
        ),
    );
    (pg, registry, target)
}

async fn post(
    registry: &Registry,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<LeaseResponse>) {
    post_body(registry, path, token, r#"{"worker":"pod-1"}"#).await
}

async fn post_body(
    registry: &Registry,
    path: &str,
    token: Option<&str>,
    body: &'static str,
) -> (StatusCode, Option<LeaseResponse>) {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = router(registry.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).ok())
}

#[tokio::test]
async fn only_the_jobs_own_credential_leases_its_batches() {
    let (_pg, registry, _) = setup().await;
    assert_eq!(
        post(&registry, PATH, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&registry, PATH, Some("token-b")).await.0,
        StatusCode::UNAUTHORIZED,
        "another job's credential"
    );
    assert_eq!(
        post(&registry, PATH, Some("")).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, lease) = post(&registry, PATH, Some("token-a")).await;
    assert_eq!(status, StatusCode::OK);
    let lease = lease.unwrap();
    assert_eq!(
        (
            lease.job_uid.as_str(),
            lease.lease.batch_id,
            lease.lease.attempt
        ),
        (JOB, 0, 1)
    );
    assert_eq!(
        (lease.lease.lower, lease.lease.upper.as_deref()),
        (None, Some("11"))
    );
}

#[tokio::test]
async fn answers_tell_the_worker_what_to_do_next() {
    let (pg, registry, target) = setup().await;
    for expected in 0..3 {
        let (status, lease) = post(&registry, PATH, Some("token-a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(lease.unwrap().lease.batch_id, expected);
    }
    // All leased: come back later.
    assert_eq!(
        post(&registry, PATH, Some("token-a")).await.0,
        StatusCode::NO_CONTENT
    );
    // The other job's batches are untouched.
    let other = ledger::counts(&target, OTHER).await.unwrap();
    assert_eq!((other.pending, other.leased), (3, 0));

    let key = JobKey {
        namespace: "crm".into(),
        name: "contacts".into(),
    };
    registry.upsert(
        key.clone(),
        JobEntry::new(JOB.into(), "token-a", shared(&pg), JobState::Paused, 30.0),
    );
    assert_eq!(
        post(&registry, PATH, Some("token-a")).await.0,
        StatusCode::NO_CONTENT
    );
    registry.upsert(
        key.clone(),
        JobEntry::new(JOB.into(), "token-a", shared(&pg), JobState::Finished, 30.0),
    );
    assert_eq!(
        post(&registry, PATH, Some("token-a")).await.0,
        StatusCode::GONE
    );
    registry.remove(&key);
    assert_eq!(
        post(&registry, PATH, Some("token-a")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_lease_records_the_workers_revision() {
    let (pg, registry, _) = setup().await;
    let body = r#"{"worker":"pod-2","revision":"7f9c2e1"}"#;
    let (status, _) = post_body(&registry, PATH, Some("token-a"), body).await;
    assert_eq!(status, StatusCode::OK);
    // A worker that sends no revision (an older one) is served as before.
    assert_eq!(
        post(&registry, PATH, Some("token-a")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        pg.psql(
            "target",
            "SELECT string_agg(batch_id || ':' || worker || ':' || revision, ',' ORDER BY batch_id)
               FROM freight.attempts"
        ),
        "0:pod-2:7f9c2e1,1:pod-1:"
    );
    assert_eq!(
        pg.psql(
            "target",
            "SELECT string_agg(coalesce(lease_revision, '-'), ',' ORDER BY batch_id)
               FROM freight.batches WHERE job_uid = '1f0e7c1a-0000-4000-8000-000000000001'"
        ),
        "7f9c2e1,,-"
    );
}
