//! Names and labels of the objects Freight creates for a job.

use std::collections::BTreeMap;

/// Label carrying the owning MigrationJob's name; selects a job's children.
pub const JOB_LABEL: &str = "freight.dev/job";
/// Label carrying the worker template revision of a worker Deployment and its pods.
pub const REVISION_LABEL: &str = "freight.dev/revision";
/// Annotation holding the hash of what the operator last applied to a child.
/// When it matches the desired object, the operator sends nothing.
pub const APPLIED_HASH_ANNOTATION: &str = "freight.dev/applied-hash";
/// Server-side apply field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "freight-operator";
/// Finalizer that lets the operator stop workers before the job disappears.
pub const FINALIZER: &str = "freight.dev/cleanup";
/// Key of the worker credential in the per-job Secret.
pub const TOKEN_KEY: &str = "token";

/// Name of the per-job worker credential Secret.
pub fn credential_secret_name(job: &str) -> String {
    format!("{job}-worker")
}

/// Name of the worker HorizontalPodAutoscaler.
pub fn autoscaler_name(job: &str) -> String {
    format!("{job}-worker")
}

/// Name of the worker Deployment of one template revision.
pub fn deployment_name(job: &str, revision: &str) -> String {
    format!("{job}-worker-{revision}")
}

/// Labels every child of a job carries.
pub fn job_labels(job: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "freight-worker"),
        ("app.kubernetes.io/instance", job),
        ("app.kubernetes.io/component", "worker"),
        ("app.kubernetes.io/part-of", "freight"),
        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
        (JOB_LABEL, job),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Label selector (string form) for every child of a job.
pub fn job_selector(job: &str) -> String {
    format!("{JOB_LABEL}={job}")
}
