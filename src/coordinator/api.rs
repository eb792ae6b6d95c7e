//! `POST /v1/namespaces/{namespace}/migrationjobs/{name}/leases`
//!
//! Authorization: `Bearer <job credential>`; body
//! `{"worker": "<pod name>", "revision": "<worker revision>"}` (`revision`
//! optional: recorded with the attempt, for per-revision figures).
//!
//! | answer | meaning |
//! |---|---|
//! | 200 + [`LeaseResponse`] | a batch is yours until the lease expires |
//! | 204 + `Retry-After` | nothing to lease now (all leased, or paused); ask again |
//! | 410 | the job has nothing left to do; the worker may exit |
//! | 401 | no credential, or not this job's |
//! | 404 | the coordinator serves no such job (yet) |
//! | 503 + `Retry-After` | the ledger is unreachable; ask again |

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};

use super::registry::{JobKey, JobState, Registry};
use crate::postgres::ledger::{self, Lease};

/// A leased batch, as the worker receives it: the ledger's [`Lease`], the
/// job it belongs to and how long it lasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseResponse {
    /// The job's UID (the ledger key to record the result under).
    pub job_uid: String,
    /// The batch, its bounds or keys, and the proof of the lease.
    #[serde(flatten)]
    pub lease: Lease,
    /// Seconds until the lease expires.
    pub lease_seconds: f64,
}

#[derive(Debug, Deserialize)]
struct LeaseRequest {
    worker: String,
    /// The worker's revision (absent from older workers: unknown).
    #[serde(default)]
    revision: Option<String>,
}

/// The coordinator's routes.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route(
            "/v1/namespaces/{namespace}/migrationjobs/{name}/leases",
            post(lease),
        )
        .with_state(registry)
}

fn retry_later(status: StatusCode, seconds: u32) -> Response {
    let mut response = status.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn lease(
    State(registry): State<Registry>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(request): Json<LeaseRequest>,
) -> Response {
    let key = JobKey { namespace, name };
    let Some(job) = registry.get(&key) else {
        registry.count("unknown_job");
        // Not (yet) known here: not planned yet, or this replica is not the
        // leader. Closing the connection lets a Service pick another replica.
        let mut response = retry_later(StatusCode::NOT_FOUND, 1);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    // Checked before anything else is revealed about the job.
    if !bearer(&headers).is_some_and(|t| job.accepts(t)) {
        registry.count("unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match job.state {
        JobState::Finished => {
            registry.count("finished");
            return StatusCode::GONE.into_response();
        }
        JobState::Paused => {
            registry.count("paused");
            return retry_later(StatusCode::NO_CONTENT, 5);
        }
        JobState::Serving => {}
    }
    let leased = match job.ledger.get().await {
        Ok(client) => {
            let revision = request.revision.as_deref().unwrap_or_default();
            ledger::lease(
                &client,
                &job.uid,
                &request.worker,
                job.lease_seconds,
                revision,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match leased {
        Ok(Some(lease)) => {
            registry.count("leased");
            Json(LeaseResponse {
                job_uid: job.uid.clone(),
                lease,
                lease_seconds: job.lease_seconds,
            })
            .into_response()
        }
        Ok(None) => {
            registry.count("empty");
            // Nothing left to hand out: the job may be about to finish.
            registry.nudge(&key);
            retry_later(StatusCode::NO_CONTENT, 2)
        }
        Err(e) => {
            registry.count("unavailable");
            tracing::warn!(job = %key.name, namespace = %key.namespace, error = %e, "lease failed");
            retry_later(StatusCode::SERVICE_UNAVAILABLE, 2)
        }
    }
}
