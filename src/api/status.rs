//! What the operator reports about a `MigrationJob`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a MigrationJob, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJobStatus {
    /// Lifecycle phase: Pending, Planning, Running, Succeeded,
    /// CompletedWithErrors, Failed or Suspended.
    #[serde(default)]
    pub phase: Phase,
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Records in the source, measured when the job was planned. While the
    /// job is Planning, the records measured so far (and `batches.total` the
    /// batches cut so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_records: Option<i64>,
    /// Records written to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_records: Option<i64>,
    /// Records the target rejected, kept with their key and error for `retryFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_records: Option<i64>,
    /// Batches by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchCounts>,
    /// Share of records handled (processed + failed) of the total, e.g. "61%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Recent throughput in records per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<i64>,
    /// When the job should finish at its recent throughput (to 10 s), while
    /// it runs and records are moving. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// A few of the most recently failed records (at most 5), newest first. The
    /// full list is in the target database: `SELECT record_key, error FROM
    /// freight.failed_records WHERE job_uid = '<metadata.uid>'`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub recent_failures: Vec<FailureSample>,
    /// Worker pods, as reported by the worker Deployment(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkerStatus>,
    /// Blue-green rollout of the worker fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Ready, Progressing, Complete, Failed and Degraded, plus Reconciling and
    /// Stalled for GitOps tools (kstatus: InProgress while Reconciling is
    /// True, Failed while Stalled is True), each with the generation it was
    /// computed for and when its status last changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Lifecycle phase of a MigrationJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted; waiting for its configuration (Secrets) or its workers.
    #[default]
    Pending,
    /// Measuring the source and cutting it into batches.
    Planning,
    /// Copying batches.
    Running,
    /// Every record was copied.
    Succeeded,
    /// Done, with some records failed within the failure budget.
    CompletedWithErrors,
    /// Stopped: over the failure budget, or unable to run.
    Failed,
    /// `spec.suspend` is true: no batches are handed out, workers are scaled to zero.
    Suspended,
}

impl Phase {
    /// Every phase, for metrics that report each one.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Planning,
        Phase::Running,
        Phase::Succeeded,
        Phase::CompletedWithErrors,
        Phase::Failed,
        Phase::Suspended,
    ];

    /// The name used in status and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Planning => "Planning",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::CompletedWithErrors => "CompletedWithErrors",
            Phase::Failed => "Failed",
            Phase::Suspended => "Suspended",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The condition types a MigrationJob reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The job's configuration resolved and its worker fleet is available.
    Ready,
    /// The job is moving forward (planning, copying, rolling out).
    Progressing,
    /// The job finished (Succeeded or CompletedWithErrors).
    Complete,
    /// The job stopped without finishing, or cannot run; the reason says why.
    Failed,
    /// The job runs, but impaired (e.g. fewer workers than wanted).
    Degraded,
    /// The operator is moving the job forward (planning or copying): the
    /// kstatus convention GitOps tools (Flux, kpt) read as "in progress".
    Reconciling,
    /// The job cannot go on without a person: a problem to fix (the reason
    /// names it), or the failure budget is spent. kstatus reads it as failed.
    Stalled,
}

impl ConditionType {
    /// Every condition type, in the order they appear in status.
    pub const ALL: [ConditionType; 7] = [
        ConditionType::Ready,
        ConditionType::Progressing,
        ConditionType::Complete,
        ConditionType::Failed,
        ConditionType::Degraded,
        ConditionType::Reconciling,
        ConditionType::Stalled,
    ];

    /// The `type` string in status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Complete => "Complete",
            ConditionType::Failed => "Failed",
            ConditionType::Degraded => "Degraded",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
        }
    }
}

/// Batches by state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchCounts {
    /// All batches of the plan.
    pub total: i64,
    /// Not yet handed to a worker.
    pub pending: i64,
    /// Leased to a worker right now.
    pub in_flight: i64,
    /// Finished with every record written.
    pub succeeded: i64,
    /// Finished with some records failed.
    pub failed: i64,
}

/// A record the target rejected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureSample {
    /// The record's key (its key column, as text; shortened if long).
    pub key: String,
    /// The target's error message (shortened if long).
    pub error: String,
}

/// Worker pods of the job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Worker pods wanted right now (by the autoscaler, or 0 when suspended).
    pub desired: i32,
    /// Worker pods that are ready.
    pub ready: i32,
}

/// State of a blue-green rollout of the worker fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Revision (hash of the worker template) of the fleet that serves batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Revision of the new fleet being tried, while a rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// Percentage of new batches sent to the new fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green_weight: Option<i32>,
    /// Progressing, Promoted or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the rollout is where it is (e.g. why it was rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
