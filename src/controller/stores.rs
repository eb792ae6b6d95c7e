//! The job's children as the operator sees them: reflector caches of worker
//! Deployments, autoscalers and Secret *metadata*, filled by the controller's
//! watches. A reconcile reads its children here instead of asking the API
//! server, and a child's change triggers a reconcile only when it matters.

use std::{collections::HashMap, future::ready, hash::Hash, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret,
};
use kube::{
    Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        reflector::{self, Store},
        watcher,
    },
};

use super::{children::applied_hash, error::Error, labels::JOB_LABEL};

/// Longest a reconcile waits for the caches to fill after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read sides of the caches.
#[derive(Clone)]
pub struct Stores {
    /// Worker Deployments (labelled as Freight's).
    pub deployments: Store<Deployment>,
    /// Worker autoscalers (labelled as Freight's).
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// Metadata of every Secret in the watched namespaces.
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

/// Write sides of the caches, for the watches (or a test) to fill.
pub struct Writers {
    /// See [`Stores::deployments`].
    pub deployments: reflector::store::Writer<Deployment>,
    /// See [`Stores::autoscalers`].
    pub autoscalers: reflector::store::Writer<HorizontalPodAutoscaler>,
    /// See [`Stores::secrets`].
    pub secrets: reflector::store::Writer<PartialObjectMeta<Secret>>,
}

impl Stores {
    /// Empty caches and their writers.
    pub fn new() -> (Self, Writers) {
        let (deployments, deployments_w) = reflector::store();
        let (autoscalers, autoscalers_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        (
            Self {
                deployments,
                autoscalers,
                secrets,
            },
            Writers {
                deployments: deployments_w,
                autoscalers: autoscalers_w,
                secrets: secrets_w,
            },
        )
    }

    /// Waits until every cache has listed once.
    pub async fn ready(&self) -> Result<(), Error> {
        let all = async {
            self.deployments.wait_until_ready().await?;
            self.autoscalers.wait_until_ready().await?;
            self.secrets.wait_until_ready().await
        };
        match tokio::time::timeout(READY_TIMEOUT, all).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::CachesNotReady),
        }
    }

    /// The worker Deployments labelled with job `name` in `namespace`.
    pub fn deployments_of(&self, namespace: &str, name: &str) -> Vec<std::sync::Arc<Deployment>> {
        let mut found = self.deployments.state_filter(|d| {
            d.namespace().as_deref() == Some(namespace)
                && d.labels().get(JOB_LABEL).map(String::as_str) == Some(name)
        });
        found.sort_by_key(|d| d.name_any());
        found
    }
}

impl Writers {
    /// Marks every cache as listed (for tests that fill them by hand).
    pub fn mark_ready(&mut self) {
        self.deployments
            .apply_watcher_event(&watcher::Event::InitDone);
        self.autoscalers
            .apply_watcher_event(&watcher::Event::InitDone);
        self.secrets.apply_watcher_event(&watcher::Event::InitDone);
    }
}

/// What about a worker Deployment is worth a reconcile: what the operator
/// applied, what the autoscaler set, readiness and stalls. Status noise
/// (observedGeneration, updatedReplicas, timestamps) is not.
pub fn deployment_signature(d: &Deployment) -> u64 {
    let status = d.status.as_ref();
    let stalled = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        });
    hash_of(&(
        d.metadata.generation,
        applied_hash(d),
        owners(d),
        d.metadata.deletion_timestamp.is_some(),
        d.spec.as_ref().and_then(|s| s.replicas),
        status.and_then(|s| s.ready_replicas),
        stalled,
    ))
}

/// What about an autoscaler is worth a reconcile.
pub fn autoscaler_signature(h: &HorizontalPodAutoscaler) -> u64 {
    hash_of(&(
        h.metadata.generation,
        applied_hash(h),
        owners(h),
        h.metadata.deletion_timestamp.is_some(),
        h.status.as_ref().map(|s| s.desired_replicas),
    ))
}

/// A Secret matters whenever it changes (its data may have).
pub fn secret_signature(s: &PartialObjectMeta<Secret>) -> u64 {
    hash_of(&(s.metadata.resource_version.as_deref(), owners(s)))
}

fn owners<K: Resource>(obj: &K) -> Vec<(String, Option<bool>)> {
    obj.owner_references()
        .iter()
        .map(|o| (o.uid.clone(), o.controller))
        .collect()
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// Keeps the events of a watch whose object changed in a way that matters
/// (by `signature`), plus every deletion; drops relists of unchanged objects.
#[derive(Default)]
pub struct ChangeFilter {
    seen: HashMap<(Option<String>, String), (Option<String>, u64)>,
}

impl ChangeFilter {
    /// The object to trigger on, if `event` should trigger at all.
    pub fn pass<K: Resource + Clone>(
        &mut self,
        event: &watcher::Event<K>,
        signature: impl Fn(&K) -> u64,
    ) -> Option<K> {
        let key = |k: &K| (k.namespace(), k.name_any());
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                let now = (obj.uid(), signature(obj));
                let before = self.seen.insert(key(obj), now.clone());
                (before != Some(now)).then(|| obj.clone())
            }
            watcher::Event::Delete(obj) => {
                self.seen.remove(&key(obj));
                Some(obj.clone())
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

/// A watch stream that fills `writer` with every event, and yields the
/// objects whose change matters for a reconcile (see [`ChangeFilter`]).
pub fn reflect_changes<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    mut writer: reflector::store::Writer<K>,
    signature: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let mut filter = ChangeFilter::default();
    events.filter_map(move |event| {
        let out = match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                filter.pass(&event, signature).map(Ok)
            }
            Err(e) => Some(Err(e)),
        };
        ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn deployment(ready: i32, observed_generation: i64) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("contacts-worker-abc".into());
        d.metadata.namespace = Some("crm".into());
        d.metadata.generation = Some(3);
        d.status = Some(DeploymentStatus {
            ready_replicas: Some(ready),
            observed_generation: Some(observed_generation),
            updated_replicas: Some(observed_generation as i32),
            ..DeploymentStatus::default()
        });
        d
    }

    #[test]
    fn status_noise_does_not_trigger_readiness_does() {
        let mut f = ChangeFilter::default();
        let mut triggers =
            |e: watcher::Event<Deployment>| f.pass(&e, deployment_signature).is_some();
        assert!(triggers(watcher::Event::InitApply(deployment(1, 1))));
        assert!(
            !triggers(watcher::Event::Apply(deployment(1, 2))),
            "status noise"
        );
        assert!(
            triggers(watcher::Event::Apply(deployment(2, 2))),
            "readiness"
        );
        // A relist of the unchanged object does not trigger.
        assert!(!triggers(watcher::Event::Init));
        assert!(!triggers(watcher::Event::InitApply(deployment(2, 3))));
        // A deletion always does, and so does the object coming back.
        assert!(triggers(watcher::Event::Delete(deployment(2, 3))));
        assert!(triggers(watcher::Event::Apply(deployment(2, 3))));
    }
}
