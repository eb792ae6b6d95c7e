//! The `MigrationJob` resource.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{FailurePolicy, MigrationJobStatus, RolloutSpec, SourceSpec, TargetSpec, WorkersSpec};

/// What to migrate, where to, and how: the desired state of a MigrationJob.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "freight.dev",
    version = "v1alpha1",
    kind = "MigrationJob",
    doc = "A data migration: Freight copies every record of a source table to a target table in batches, with a fleet of worker pods it scales and upgrades blue-green, and reports progress and failed records in status. Failed records can be retried alone with spec.retryFailed.",
    plural = "migrationjobs",
    shortname = "mj",
    namespaced,
    status = "MigrationJobStatus",
    derive = "PartialEq",
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it names the worker Deployment and is used as a label value"),
    printcolumn = r#"{"name":"Phase","type":"string","description":"Lifecycle phase","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","description":"Share of records handled","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Processed","type":"integer","description":"Records written to the target","jsonPath":".status.processedRecords"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","description":"Records the target rejected","jsonPath":".status.failedRecords"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","description":"Ready worker pods","jsonPath":".status.workers.ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Rate","type":"integer","description":"Records per second, recently","jsonPath":".status.recordsPerSecond","priority":1}"#,
    printcolumn = r#"{"name":"ETA","type":"string","description":"Estimated completion time at the recent rate","jsonPath":".status.estimatedCompletionTime","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJobSpec {
    /// Where records are read from. Exactly one connector. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable; create a new MigrationJob to migrate another source"))]
    pub source: SourceSpec,
    /// Where records are written to. Exactly one connector. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable; create a new MigrationJob to migrate to another target"))]
    pub target: TargetSpec,
    /// Records per batch (1-100000). A batch is the unit of leasing, retry and
    /// progress; each worker holds `workers.batchesPerWorker` batches in memory
    /// at once, so lower it for very wide rows. Default 10000. Immutable.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100_000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("batchSize is immutable"))]
    pub batch_size: i32,
    /// The worker fleet: pod count bounds, image and resources.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// Retries per batch and the failed-record budget.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Blue-green rollout of worker template changes.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Increase this number to run the failed records again (only those). It can
    /// only go up. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("retryFailed can only be increased"))]
    pub retry_failed: i64,
    /// Stop handing out batches and scale the workers to zero. Setting it back to
    /// false resumes from the last checkpoint. Default false.
    #[serde(default)]
    pub suspend: bool,
}

fn default_batch_size() -> i32 {
    10_000
}
