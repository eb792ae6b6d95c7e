//! The worker fleet.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The worker fleet: a Deployment of `freight worker` pods scaled by a
/// HorizontalPodAutoscaler between `min` and `max`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("workers.min must be less than or equal to workers.max"))]
pub struct WorkersSpec {
    /// Fewest worker pods while the job runs (1-1000). Default 1.
    #[serde(default = "default_min")]
    #[schemars(range(min = 1, max = 1000))]
    pub min: i32,
    /// Most worker pods the autoscaler may run (1-1000). Default 4.
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
    /// Worker container image. Defaults to the operator's own image, which
    /// contains the `freight worker` command. Changing it on a running job starts
    /// a blue-green rollout of the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// Compute resources of each worker container. The CPU request is what the
    /// autoscaler's utilization target is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Average CPU utilization (percent of the CPU request) the autoscaler aims
    /// for (1-100). Default 70.
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Batches each worker pod copies at once (1-16), each on its own pair of
    /// database connections. While one batch is being written, the next is
    /// already being read. Default 2.
    #[serde(default = "default_batches_per_worker")]
    #[schemars(range(min = 1, max = 16))]
    pub batches_per_worker: i32,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            min: default_min(),
            max: default_max(),
            image: None,
            resources: None,
            target_cpu_utilization_percentage: default_cpu_target(),
            batches_per_worker: default_batches_per_worker(),
        }
    }
}

fn default_min() -> i32 {
    1
}
fn default_max() -> i32 {
    4
}
fn default_cpu_target() -> i32 {
    70
}
fn default_batches_per_worker() -> i32 {
    2
}
