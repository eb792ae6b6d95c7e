//! Errors of the PostgreSQL layer, classified by what the caller should do.

use tokio_postgres::error::SqlState;

/// What a PostgreSQL failure means for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgErrorKind {
    /// Retry later with backoff: connection loss, server restart, deadlock,
    /// serialization failure, resource exhaustion. Not a failed record.
    Transient,
    /// The target refused the data itself (constraint, bad value): a record
    /// is at fault; isolate it.
    Rejected,
    /// The job cannot run as configured (missing table or column, no unique
    /// key for upsert, permission denied): report it, wait for a fix.
    Config,
}

/// A PostgreSQL failure.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct PgError {
    /// How to react.
    pub kind: PgErrorKind,
    /// What was being done.
    pub context: &'static str,
    /// The server's message (with SQLSTATE), or the client's.
    pub message: String,
}

impl PgError {
    /// Classifies a driver error.
    pub fn from_driver(context: &'static str, e: &tokio_postgres::Error) -> Self {
        let (kind, message) = match e.as_db_error() {
            Some(db) => (
                classify(db.code()),
                format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            ),
            // No server answer: the connection broke or could not be made.
            None => (PgErrorKind::Transient, e.to_string()),
        };
        Self {
            kind,
            context,
            message,
        }
    }

    /// A configuration problem found by the client.
    pub fn config(context: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: PgErrorKind::Config,
            context,
            message: message.into(),
        }
    }
}

/// Maps a SQLSTATE to what the caller should do.
pub fn classify(code: &SqlState) -> PgErrorKind {
    let class = &code.code()[..2];
    match class {
        // connection exception, transaction rollback (deadlock, serialization),
        // insufficient resources, operator intervention (shutdown), system error
        "08" | "40" | "53" | "57" | "58" => PgErrorKind::Transient,
        // data exception, integrity constraint violation
        "22" | "23" => PgErrorKind::Rejected,
        _ => PgErrorKind::Config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(
            classify(&SqlState::T_R_DEADLOCK_DETECTED),
            PgErrorKind::Transient
        );
        assert_eq!(
            classify(&SqlState::T_R_SERIALIZATION_FAILURE),
            PgErrorKind::Transient
        );
        assert_eq!(classify(&SqlState::ADMIN_SHUTDOWN), PgErrorKind::Transient);
        assert_eq!(
            classify(&SqlState::CONNECTION_FAILURE),
            PgErrorKind::Transient
        );
        assert_eq!(classify(&SqlState::CHECK_VIOLATION), PgErrorKind::Rejected);
        assert_eq!(classify(&SqlState::UNIQUE_VIOLATION), PgErrorKind::Rejected);
        assert_eq!(
            classify(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
            PgErrorKind::Rejected
        );
        assert_eq!(classify(&SqlState::UNDEFINED_TABLE), PgErrorKind::Config);
        assert_eq!(
            classify(&SqlState::INSUFFICIENT_PRIVILEGE),
            PgErrorKind::Config
        );
    }
}
