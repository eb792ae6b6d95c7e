//! Failure budget and rollout policy.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How failures are retried and when the job gives up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Times a batch may be handed to a worker (1-100). A batch is handed out
    /// again when its worker dies, stalls, or keeps hitting transient errors
    /// (connection loss, deadlock, serialization failure) until its lease runs
    /// out. Beyond this many, the job reports Degraded with reason
    /// BatchKeepsFailing naming the batch, and the batch is still retried.
    /// Records the target rejects never use up attempts: they are isolated at
    /// the first attempt and counted as failed. Default 3.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts_per_batch: i32,
    /// Largest share of failed records (0-1) with which the job still completes,
    /// as `CompletedWithErrors`. Above it the job ends `Failed`. Default 0.01 (1%).
    #[serde(default = "default_max_failed_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failed_record_ratio: f64,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_attempts_per_batch: default_max_attempts(),
            max_failed_record_ratio: default_max_failed_ratio(),
        }
    }
}

/// Blue-green rollout of the worker fleet, started when the worker template
/// (image, resources) of a running job changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Percentages of new batches sent to the new (green) fleet, one step after
    /// another. Strictly ascending, each 1-100, ending at 100. Default [10, 50, 90, 100].
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 10), inner(range(min = 1, max = 100)))]
    #[x_kube(validation = Rule::new("self[size(self) - 1] == 100").message("rollout.steps must end at 100"))]
    #[x_kube(validation = Rule::new("self.isSorted() && self.all(s, self.exists_one(t, t == s))").message("rollout.steps must be strictly ascending"))]
    pub steps: Vec<i32>,
    /// Batches green must finish at a step before it may move to the next (1-10000).
    /// Default 10.
    #[serde(default = "default_min_batches_per_step")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_batches_per_step: i32,
    /// Largest increase (0-1) of green's batch error rate over blue's that is
    /// tolerated. Above it the rollout is rolled back automatically. Default 0.05.
    #[serde(default = "default_max_error_rate_increase")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: f64,
    /// Largest relative increase (0-10) of green's median batch latency over
    /// blue's that is tolerated; 0.5 means green may be up to 50% slower. Above it
    /// the rollout is rolled back automatically. Default 0.5.
    #[serde(default = "default_max_latency_increase")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub max_latency_increase: f64,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            min_batches_per_step: default_min_batches_per_step(),
            max_error_rate_increase: default_max_error_rate_increase(),
            max_latency_increase: default_max_latency_increase(),
        }
    }
}

fn default_max_attempts() -> i32 {
    3
}
fn default_max_failed_ratio() -> f64 {
    0.01
}
fn default_steps() -> Vec<i32> {
    vec![10, 50, 90, 100]
}
fn default_min_batches_per_step() -> i32 {
    10
}
fn default_max_error_rate_increase() -> f64 {
    0.05
}
fn default_max_latency_increase() -> f64 {
    0.5
}
