//! The worker Deployment of one template revision: pod template, env,
//! probes and the restricted security context. Pure, like every builder.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use serde::Serialize;

use super::{
    children::{ChildSettings, job_name, meta, worker_image},
    labels::{
        JOB_LABEL, REVISION_LABEL, TOKEN_KEY, credential_secret_name, deployment_name, job_labels,
    },
};
use crate::api::{MigrationJob, SecretKeyRef};

/// Port of the worker's `/metrics`, `/healthz` and `/readyz`.
pub const WORKER_METRICS_PORT: i32 = 9090;
/// UID and GID the worker runs as (the distroless `nonroot` user).
const NONROOT_ID: i64 = 65532;

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

fn worker_env(job: &MigrationJob, settings: &ChildSettings, revision: &str) -> Vec<EnvVar> {
    let name = job_name(job);
    let mut env = vec![
        value_env("FREIGHT_WORKER_REVISION", revision.to_owned()),
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

pub(super) fn worker_deployment(
    job: &MigrationJob,
    owner: &OwnerReference,
    settings: &ChildSettings,
    revision: &str,
    run_workers: bool,
) -> Deployment {
    let name = job_name(job);
    let selector = BTreeMap::from([
        (JOB_LABEL.to_owned(), name.clone()),
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
        env: Some(worker_env(job, settings, revision)),
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
