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
    error::{Halt, Result, Step, api_status_code},
    labels::FIELD_MANAGER,
};
use crate::api::Reason;

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
            reason: Reason::NameConflict,
            message: format!(
                "{} {} already exists and is not controlled by MigrationJob {owner}; delete or rename it",
                K::kind(&()),
                existing.name_any()
            ),
        })
    }
}

/// Whether `existing` already carries what `desired` would apply (same
/// content hash), so that nothing needs to be sent.
pub fn up_to_date<K: Resource>(existing: Option<&K>, desired: &K) -> bool {
    existing.is_some_and(|e| applied_hash(e).is_some() && applied_hash(e) == applied_hash(desired))
}

/// Applies `desired` (server-side apply, the operator's field manager).
///
/// An API server refusal of the object itself (422 Invalid) is a problem with
/// the job's spec ([`Halt::Blocked`]); other failures are errors to retry.
pub async fn apply_child<K>(ctx: &Context, desired: &K, resource: &'static str) -> Step<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let namespace = desired.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.ensure_leader()?;
    ctx.metrics.write(resource, "apply");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await
    {
        Ok(obj) => Ok(obj),
        Err(kube::Error::Api(status)) if status.code == 422 => Err(Halt::Blocked(ConfigProblem {
            reason: Reason::InvalidWorkerTemplate,
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
    namespace: &str,
    name: &str,
    resource: &'static str,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.ensure_leader()?;
    ctx.metrics.write(resource, "delete");
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if api_status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
