//! Every `reason` a MigrationJob's conditions and events can carry, in one
//! place. Users match on these strings (alerts, `kubectl wait`, GitOps health
//! checks), so they are part of the API: add new ones, never rename.

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A PascalCase condition or event reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Reason {
            $( $(#[$doc])* $name, )*
        }

        impl Reason {
            /// Every reason, for tests and documentation.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The reason as it appears in status and events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$name => stringify!($name), )*
                }
            }
        }
    };
}

reasons! {
    // --- configuration a person must fix (Ready=False, phase Pending) ---
    /// A referenced Secret does not exist.
    SecretNotFound,
    /// A referenced Secret lacks the referenced key.
    SecretKeyNotFound,
    /// The referenced Secret key holds an empty value.
    SecretKeyEmpty,
    /// A referenced Secret value is not UTF-8 text.
    InvalidConnectionString,
    /// The spec sets no connector for the source or the target.
    NoConnector,
    /// Source and target are the same table of the same database.
    SourceIsTarget,
    /// An object the job would create exists and belongs to someone else.
    NameConflict,
    /// The API server refused a worker object built from `spec.workers`.
    InvalidWorkerTemplate,
    /// The source database refuses the job's credentials or does not exist.
    SourceUnusable,
    /// The target database refuses the job's credentials or does not exist.
    TargetUnusable,
    /// The source table does not exist.
    SourceTableNotFound,
    /// The key column does not exist in the source table.
    KeyColumnNotFound,
    /// The key column cannot be used to cut batches (e.g. it holds NULL).
    KeyColumnUnusable,
    /// A listed column does not exist in the source table.
    ColumnNotFound,
    /// The target table does not exist.
    TargetTableNotFound,
    /// A copied column does not exist in the target table.
    TargetColumnNotFound,
    /// `mode: upsert` needs a unique key on the key column in the target.
    UpsertNeedsUniqueKey,
    // --- lifecycle ---
    /// The source is being measured and cut into batches.
    Planning,
    /// `spec.suspend` is true.
    Suspended,
    /// Worker pods are ready.
    WorkersReady,
    /// No worker pod is ready yet.
    WorkersNotReady,
    /// The worker fleet exists.
    WorkersProvisioned,
    /// The job has finished.
    Finished,
    /// The job has not finished.
    NotFinished,
    /// The job has not failed.
    NoFailure,
    /// Every record was copied.
    Succeeded,
    /// Done with failed records within budget.
    CompletedWithErrors,
    /// More records failed than `spec.failurePolicy.maxFailedRecordRatio` allows.
    FailureBudgetExceeded,
    /// Nothing is impaired.
    AsExpected,
    /// Some records were rejected by the target.
    RecordsFailed,
    /// A worker Deployment cannot make progress.
    WorkersStalled,
    /// A batch was handed out more often than `maxAttemptsPerBatch`.
    BatchKeepsFailing,
    // --- events only ---
    /// The phase changed to Pending.
    Pending,
    /// The phase changed to Running.
    Running,
    /// The phase changed to Failed.
    Failed,
    /// A reconcile failed with a transient error; it is retried with backoff.
    ReconcileError,
    /// The job was deleted and its children removed.
    Deleted,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<super::Phase> for Reason {
    /// The reason of the event announcing a change to this phase.
    fn from(phase: super::Phase) -> Self {
        use super::Phase;
        match phase {
            Phase::Pending => Reason::Pending,
            Phase::Planning => Reason::Planning,
            Phase::Running => Reason::Running,
            Phase::Succeeded => Reason::Succeeded,
            Phase::CompletedWithErrors => Reason::CompletedWithErrors,
            Phase::Failed => Reason::Failed,
            Phase::Suspended => Reason::Suspended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_pascal_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
    }

    #[test]
    fn every_phase_has_an_event_reason_of_its_name() {
        for p in crate::api::Phase::ALL {
            assert_eq!(Reason::from(p).as_str(), p.as_str());
        }
    }
}
