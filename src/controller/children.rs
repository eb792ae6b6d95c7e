//! Desired children of a MigrationJob, built as plain data (no API calls).
//!
//! Every builder is a pure function of the job and the operator settings, so
//! the objects can be unit-tested and hashed: the hash, stored in an
//! annotation, is how the apply step knows that nothing needs to be sent.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
            MetricSpec, MetricTarget, ResourceMetricSource,
        },
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    labels::{
        APPLIED_HASH_ANNOTATION, TOKEN_KEY, autoscaler_name, credential_secret_name,
        deployment_name, job_labels,
    },
    worker_pod::worker_deployment,
};
use crate::api::MigrationJob;

pub use super::worker_pod::WORKER_METRICS_PORT;

/// Operator-wide settings that shape the children.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildSettings {
    /// Image used when `spec.workers.image` is empty: the operator's own image.
    pub default_worker_image: String,
    /// URL at which workers reach the batch coordinator.
    pub coordinator_url: String,
}

/// Everything the operator wants to exist for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredChildren {
    /// The per-job worker credential.
    pub credential: Secret,
    /// The worker fleets, the active one first (one Deployment per worker
    /// template revision).
    pub fleets: Vec<DesiredFleet>,
    /// The autoscaler, which scales the active fleet.
    pub autoscaler: HorizontalPodAutoscaler,
}

/// One worker fleet: the Deployment of one worker template revision.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredFleet {
    /// Hash of the worker template; names the Deployment.
    pub revision: String,
    /// The Deployment.
    pub deployment: Deployment,
}

impl DesiredChildren {
    /// The fleet that serves batches (and that the autoscaler scales).
    pub fn active(&self) -> &DesiredFleet {
        &self.fleets[0]
    }
}

/// Builds the desired children of `job`.
///
/// `owner` is the job's controller reference; `token` is the worker credential
/// (an existing one is reused so that workers are not cut off). Without
/// `run_workers` (suspended or finished) the workers are scaled to zero.
pub fn desired_children(
    job: &MigrationJob,
    owner: &OwnerReference,
    settings: &ChildSettings,
    token: &str,
    run_workers: bool,
) -> DesiredChildren {
    let name = job_name(job);
    let revision = worker_revision(job, settings);
    let deployment = with_hash(worker_deployment(
        job,
        owner,
        settings,
        &revision,
        run_workers,
    ));
    let autoscaler = with_hash(worker_autoscaler(
        job,
        owner,
        &deployment_name(&name, &revision),
    ));
    let credential = with_hash(credential_secret(job, owner, token));
    DesiredChildren {
        credential,
        fleets: vec![DesiredFleet {
            revision,
            deployment,
        }],
        autoscaler,
    }
}

pub(super) fn job_name(job: &MigrationJob) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

pub(super) fn meta(
    name: String,
    namespace: Option<String>,
    owner: &OwnerReference,
    job: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(job_labels(job)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Worker image of the job: its own, or the operator's default.
pub fn worker_image<'a>(job: &'a MigrationJob, settings: &'a ChildSettings) -> &'a str {
    job.spec
        .workers
        .image
        .as_deref()
        .unwrap_or(&settings.default_worker_image)
}

/// Revision of the worker template: a short hash of what makes a worker
/// behave differently (image and resources). A change starts a new Deployment.
pub fn worker_revision(job: &MigrationJob, settings: &ChildSettings) -> String {
    #[derive(Serialize)]
    struct Template<'a> {
        image: &'a str,
        resources: &'a Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    }
    let template = Template {
        image: worker_image(job, settings),
        resources: &job.spec.workers.resources,
    };
    short_hash(&template, 10)
}

fn credential_secret(job: &MigrationJob, owner: &OwnerReference, token: &str) -> Secret {
    let name = job_name(job);
    Secret {
        metadata: meta(
            credential_secret_name(&name),
            job.metadata.namespace.clone(),
            owner,
            &name,
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn worker_autoscaler(
    job: &MigrationJob,
    owner: &OwnerReference,
    target_deployment: &str,
) -> HorizontalPodAutoscaler {
    let name = job_name(job);
    let workers = &job.spec.workers;
    HorizontalPodAutoscaler {
        metadata: meta(
            autoscaler_name(&name),
            job.metadata.namespace.clone(),
            owner,
            &name,
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: target_deployment.to_owned(),
            },
            min_replicas: Some(workers.min),
            max_replicas: workers.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(workers.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    }
}

/// Lowercase hex of the first `len` characters of the SHA-256 of `value`'s JSON.
pub(super) fn short_hash<T: Serialize>(value: &T, len: usize) -> String {
    // Serializing plain data structs to JSON cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.truncate(len);
    hex
}

/// Stamps `obj` with the hash of its content (computed without the stamp).
fn with_hash<T: Serialize + kube::Resource>(mut obj: T) -> T {
    let hash = short_hash(&obj, 16);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    obj
}

/// The hash the operator stamped on `obj` when it applied it, if any.
pub fn applied_hash<T: kube::Resource>(obj: &T) -> Option<&str> {
    obj.meta()
        .annotations
        .as_ref()?
        .get(APPLIED_HASH_ANNOTATION)
        .map(String::as_str)
}
