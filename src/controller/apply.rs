//! Sending desired children to the API server with server-side apply, only
//! when they differ from what the operator applied last.

use std::fmt::Debug;

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    children::applied_hash,
    config::ConfigProblem,
    context::Context,
    error::{Result, api_status_code},
    labels::FIELD_MANAGER,
};

/// Outcome of applying one child.
pub enum Applied<K> {
    /// The existing object already matched; nothing was sent.
    Unchanged(K),
    /// The object was created or updated; this is the server's answer.
    Written(K),
}

impl<K> Applied<K> {
    /// The object as it now is.
    pub fn into_inner(self) -> K {
        match self {
            Applied::Unchanged(k) | Applied::Written(k) => k,
        }
    }
}

/// Refuses to take over an object of the same name that this job does not
/// control (someone else's Deployment, say).
pub fn check_owned<K: Resource<DynamicType = ()>>(
    existing: &K,
    owner_uid: &str,
    owner: &str,
) -> Result<(), ConfigProblem> {
    let controlled = existing
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid);
    if controlled {
        Ok(())
    } else {
        Err(ConfigProblem {
            reason: "NameConflict",
            message: format!(
                "{} {} already exists and is not controlled by MigrationJob {owner}; delete or rename it",
                K::kind(&()),
                existing.name_any()
            ),
        })
    }
}

/// Applies `desired` unless `existing` carries the same content hash.
///
/// An API server refusal of the object itself (422 Invalid) is a problem with
/// the job's spec, returned as `Ok(Err(problem))`; other failures are errors.
pub async fn apply_child<K>(
    ctx: &Context,
    api: &Api<K>,
    desired: &K,
    existing: Option<K>,
    resource: &'static str,
) -> Result<Result<Applied<K>, ConfigProblem>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    if let Some(existing) = existing
        && applied_hash(&existing).is_some()
        && applied_hash(&existing) == applied_hash(desired)
    {
        return Ok(Ok(Applied::Unchanged(existing)));
    }
    ctx.ensure_leader()?;
    ctx.metrics.write(resource, "apply");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await
    {
        Ok(obj) => Ok(Ok(Applied::Written(obj))),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(Err(ConfigProblem {
            reason: "InvalidWorkerTemplate",
            message: format!(
                "the API server refused {} {}: {}",
                K::kind(&()),
                desired.name_any(),
                status.message
            ),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a child; one that is already gone is fine.
pub async fn delete_child<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    resource: &'static str,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    ctx.ensure_leader()?;
    ctx.metrics.write(resource, "delete");
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if api_status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
