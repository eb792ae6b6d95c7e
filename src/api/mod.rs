//! The `MigrationJob` API (`freight.dev/v1alpha1`).
//!
//! Doc comments on these types are what `kubectl explain migrationjob` shows, so
//! they are written for the people who write manifests, not for Rust readers.
//! Validation that the API server can do (OpenAPI bounds and CEL rules) lives
//! here too, so a bad manifest is rejected at `kubectl apply`.

mod connectors;
mod policy;
mod reasons;
mod spec;
mod status;
mod workers;

pub use connectors::{
    PostgresSource, PostgresTarget, SecretKeyRef, SourceSpec, TargetSpec, WriteMode,
};
pub use policy::{FailurePolicy, RolloutSpec};
pub use reasons::Reason;
pub use spec::{MigrationJob, MigrationJobSpec};
pub use status::{
    BatchCounts, ConditionType, FailureSample, MigrationJobStatus, Phase, RolloutStatus,
    WorkerStatus,
};
pub use workers::WorkersSpec;

/// API group of every Freight resource.
pub const GROUP: &str = "freight.dev";
