//! Which jobs a change to a Secret concerns.

use std::sync::Arc;

use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};

use super::config::secret_refs;
use crate::api::MigrationJob;

/// Jobs to reconcile when the Secret `namespace/name` (owned by `owners`)
/// changes: the jobs that reference it, and the job that owns it.
pub fn jobs_for_secret<R: Resource>(
    secret: &R,
    jobs: &[Arc<MigrationJob>],
) -> Vec<ObjectRef<MigrationJob>> {
    let name = secret.name_any();
    let namespace = secret.namespace();
    let owners = secret.owner_references();
    jobs.iter()
        .filter(|job| job.namespace() == namespace)
        .filter(|job| {
            secret_refs(job).iter().any(|r| r.secret.name == name)
                || owners
                    .iter()
                    .any(|o| o.kind == "MigrationJob" && Some(&o.uid) == job.uid().as_ref())
        })
        .map(|job| ObjectRef::from_obj(job.as_ref()))
        .collect()
}
