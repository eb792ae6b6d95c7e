//! Desired children of a MigrationJob, built as plain data (no API calls).
//!
//! Every builder is a pure function of the job and the operator settings, so
//! the objects can be unit-tested and hashed: the hash, stored in an
//! annotation, is how the apply step knows that nothing needs to be sent.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
            MetricSpec, MetricTarget, ResourceMetricSource,
        },
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::labels::{
    APPLIED_HASH_ANNOTATION, REVISION_LABEL, TOKEN_KEY, autoscaler_name, credential_secret_name,
    deployment_name, job_labels,
};
use crate::api::{MigrationJob, SecretKeyRef};

/// Port of the worker's `/metrics`, `/healthz` and `/readyz`.
pub const WORKER_METRICS_PORT: i32 = 9090;
/// UID and GID the worker runs as (the distroless `nonroot` user).
const NONROOT_ID: i64 = 65532;

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
    /// Hash of the worker template; names the Deployment.
    pub revision: String,
    /// The per-job worker credential.
    pub credential: Secret,
    /// The worker Deployment of the current revision.
    pub deployment: Deployment,
    /// The autoscaler of the worker Deployment.
    pub autoscaler: HorizontalPodAutoscaler,
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
        revision,
        credential,
        deployment,
        autoscaler,
    }
}

fn job_name(job: &MigrationJob) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

fn meta(name: String, namespace: Option<String>, owner: &OwnerReference, job: &str) -> ObjectMeta {
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

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// JSON of a plain data struct (which always serializes).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn worker_env(job: &MigrationJob, settings: &ChildSettings) -> Vec<EnvVar> {
    let name = job_name(job);
    let mut env = vec![
        value_env("FREIGHT_JOB_NAME", name.clone()),
        value_env("FREIGHT_COORDINATOR_URL", settings.coordinator_url.clone()),
        value_env(
            "FREIGHT_BATCHES_PER_WORKER",
            job.spec.workers.batches_per_worker.to_string(),
        ),
        field_env("FREIGHT_JOB_NAMESPACE", "metadata.namespace"),
        field_env("FREIGHT_POD_NAME", "metadata.name"),
        secret_env(
            "FREIGHT_WORKER_TOKEN",
            &SecretKeyRef {
                name: credential_secret_name(&name),
                key: TOKEN_KEY.to_owned(),
            },
        ),
    ];
    if let Some(pg) = &job.spec.source.postgres {
        env.push(secret_env("FREIGHT_SOURCE_URL", &pg.connection_secret_ref));
        env.push(value_env("FREIGHT_SOURCE_SPEC", json(pg)));
    }
    if let Some(pg) = &job.spec.target.postgres {
        env.push(secret_env("FREIGHT_TARGET_URL", &pg.connection_secret_ref));
        env.push(value_env("FREIGHT_TARGET_SPEC", json(pg)));
    }
    env
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

fn worker_deployment(
    job: &MigrationJob,
    owner: &OwnerReference,
    settings: &ChildSettings,
    revision: &str,
    run_workers: bool,
) -> Deployment {
    let name = job_name(job);
    let selector = BTreeMap::from([
        (super::labels::JOB_LABEL.to_owned(), name.clone()),
        (REVISION_LABEL.to_owned(), revision.to_owned()),
    ]);
    let mut pod_labels = job_labels(&name);
    pod_labels.extend(selector.clone());
    let mut metadata = meta(
        deployment_name(&name, revision),
        job.metadata.namespace.clone(),
        owner,
        &name,
    );
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.to_owned(), revision.to_owned());

    let container = Container {
        name: "worker".to_owned(),
        image: Some(worker_image(job, settings).to_owned()),
        args: Some(vec!["worker".to_owned()]),
        env: Some(worker_env(job, settings)),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: WORKER_METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: job.spec.workers.resources.clone(),
        readiness_probe: Some(http_probe("/readyz")),
        liveness_probe: Some(http_probe("/healthz")),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // Replicas belong to the autoscaler; the operator only pins them to
            // zero while the job is suspended or once it has finished.
            replicas: (!run_workers).then_some(0),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NONROOT_ID),
                        run_as_group: Some(NONROOT_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
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
fn short_hash<T: Serialize>(value: &T, len: usize) -> String {
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
