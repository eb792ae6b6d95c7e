//! Errors of the controller layer.
//!
//! Only transient failures are errors: the controller requeues them with
//! backoff. Problems a user must fix (a missing Secret, a spec the API server
//! refuses) are not errors but outcomes, reported as conditions: a step
//! returns [`Halt::Blocked`] for those and [`Halt::Retry`] for errors.

use super::config::ConfigProblem;

/// A reconcile that failed and should be retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API call failed (network, 5xx, conflict, timeout...).
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] Box<kube::Error>),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// This replica lost its leader lease; it must not write.
    #[error("not the leader; write refused")]
    NotLeader,
    /// A job's database could not be used right now (unreachable, restarting,
    /// overloaded); the job goes on once it answers again.
    #[error("the {side} database: {source}")]
    Database {
        /// `source` or `target`.
        side: &'static str,
        /// What failed.
        #[source]
        source: crate::postgres::PgError,
    },
    /// The object from the watch lacks a field every stored object has.
    #[error("MigrationJob has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// The caches of the job's children did not fill in time (the watches
    /// of Deployments, autoscalers or Secrets cannot list).
    #[error("the watches of the job's children are not synced yet")]
    CachesNotReady,
    /// The planning task stopped before it finished (aborted or panicked);
    /// planning starts again.
    #[error("planning was interrupted; it starts again")]
    PlanningInterrupted,
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Every value of [`metric_label`](Self::metric_label), so that each
    /// series exists (at 0) from the start.
    pub const METRIC_LABELS: [&'static str; 11] = [
        "conflict",
        "forbidden",
        "api_server",
        "api_request",
        "api_connection",
        "finalizer",
        "not_leader",
        "database",
        "invalid_object",
        "caches_not_ready",
        "planning_interrupted",
    ];

    /// Low-cardinality label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(e) => match e.as_ref() {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code >= 500 => "api_server",
                kube::Error::Api(_) => "api_request",
                _ => "api_connection",
            },
            Error::Finalizer(_) => "finalizer",
            Error::NotLeader => "not_leader",
            Error::Database { .. } => "database",
            Error::MissingMetadata(_) => "invalid_object",
            Error::CachesNotReady => "caches_not_ready",
            Error::PlanningInterrupted => "planning_interrupted",
        }
    }
}

/// Result of a controller step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a step of a reconcile stopped short: something only a person can fix
/// (reported as a condition; the job waits), or a transient error (retried
/// with backoff). One type, so that each step can use `?` for both.
#[derive(Debug)]
pub enum Halt {
    /// The configuration cannot be used as it is.
    Blocked(ConfigProblem),
    /// Something failed that may work next time.
    Retry(Error),
}

/// Result of a step that may halt the reconcile.
pub type Step<T> = std::result::Result<T, Halt>;

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Retry(e)
    }
}

impl From<kube::Error> for Halt {
    fn from(e: kube::Error) -> Self {
        Halt::Retry(e.into())
    }
}

impl From<ConfigProblem> for Halt {
    fn from(p: ConfigProblem) -> Self {
        Halt::Blocked(p)
    }
}

/// The API status code of a failed request, if the server answered.
pub fn api_status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
