//! Errors of the controller layer.
//!
//! Only transient failures are errors: the controller requeues them with
//! backoff. Problems a user must fix (a missing Secret, a spec the API server
//! refuses) are not errors but outcomes, reported as conditions.

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
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
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
        }
    }
}

/// Result of a controller step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API status code of a failed request, if the server answered.
pub fn api_status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
