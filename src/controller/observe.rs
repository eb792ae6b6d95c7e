//! **Observe**: one snapshot of everything a reconcile decides on — the job,
//! its Secrets, its children (from the watch caches, not the API server) and
//! what its databases and ledger say.
//!
//! Reads only: the one thing observed with a request to the API server is a
//! referenced Secret whose `resourceVersion` changed since it was last read
//! (Secret data is never streamed; the watch carries metadata only).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret,
};
use kube::{Api, ResourceExt, api::ObjectMeta, runtime::reflector::ObjectRef};
use rand::RngCore;

use super::{
    config::{ConfigProblem, SecretRefUse, check_not_self_copy, check_secret_ref, secret_refs},
    context::Context,
    data_plane::{self, LedgerView, Urls},
    error::{Error, Halt, Result, Step},
    labels::{TOKEN_KEY, autoscaler_name, credential_secret_name},
    memory::CachedSecret,
    planning::{PlanningState, take_state},
    status::{Progress, is_finished},
};
use crate::api::{MigrationJob, Reason};

/// Everything one reconcile decides on.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The job.
    pub job: Arc<MigrationJob>,
    /// Its children as the caches hold them.
    pub children: ObservedChildren,
    /// Where its data stands.
    pub data: DataView,
    /// The connection strings, when the Secrets could be read.
    pub urls: Option<Urls>,
    /// Time since this process last wrote the job's status (None: never).
    pub since_status_write: Option<Duration>,
}

/// The job's children, from the watch caches.
#[derive(Clone, Debug, Default)]
pub struct ObservedChildren {
    /// The worker credential Secret's metadata, if it exists.
    pub credential: Option<ObjectMeta>,
    /// The worker credential: the stored one, or a fresh one to create.
    pub token: Token,
    /// Worker Deployments labelled with the job's name (of any revision).
    pub deployments: Vec<Arc<Deployment>>,
    /// The worker autoscaler, if it exists.
    pub autoscaler: Option<Arc<HorizontalPodAutoscaler>>,
}

/// A worker credential. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the job's data stands.
#[derive(Clone, Debug, PartialEq)]
pub enum DataView {
    /// The job had finished when its spec last changed: neither its Secrets
    /// nor its databases were asked (users often remove both afterwards).
    Settled,
    /// A Secret or the spec is wrong; a change of either triggers a reconcile.
    Blocked(ConfigProblem),
    /// The databases do not fit the spec; nothing announces a fix made in a
    /// database, so the job is looked at again after a while.
    BlockedInDatabase(ConfigProblem),
    /// Not planned yet. `running` is false when no planning task runs.
    Planning {
        /// Whether a planning task is running.
        running: bool,
        /// Keys read so far.
        records: u64,
        /// Batches cut so far.
        batches: u64,
    },
    /// Planned; `spec.retryFailed` asks for a retry round not scheduled yet.
    RetryDue {
        /// The round to schedule.
        round: i64,
    },
    /// Planned: the ledger's counters.
    Planned(Progress),
}

/// Takes one snapshot of `job`.
pub async fn observe(job: Arc<MigrationJob>, ctx: &Context) -> Result<Snapshot> {
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let name = job.name_any();
    ctx.stores.ready().await?;

    let credential_name = credential_secret_name(&name);
    let credential = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&credential_name).within(&namespace))
        .map(|m| m.metadata.clone());
    let token = match &credential {
        Some(meta) if owned_by(meta, &uid) => {
            read_secret(ctx, &uid, &namespace, &credential_name, meta)
                .await?
                .and_then(|s| token_of(&s))
        }
        _ => None,
    }
    .unwrap_or_else(new_token);
    let token = Token(token);
    let autoscaler = ctx
        .stores
        .autoscalers
        .get(&ObjectRef::new(&autoscaler_name(&name)).within(&namespace));
    let children = ObservedChildren {
        credential,
        token,
        deployments: ctx.stores.deployments_of(&namespace, &name),
        autoscaler,
    };

    let (data, urls) = if is_settled(&job) {
        (DataView::Settled, None)
    } else {
        match read_urls(&job, ctx, &uid, &namespace).await {
            Err(Halt::Retry(e)) => return Err(e),
            Err(Halt::Blocked(problem)) => (DataView::Blocked(problem), None),
            Ok(urls) => (observe_data(&job, ctx, &uid, &urls).await?, Some(urls)),
        }
    };
    let since_status_write = ctx
        .memory
        .peek(&uid, |m| m.status_written.map(|t| t.elapsed()))
        .flatten();
    Ok(Snapshot {
        job,
        children,
        data,
        urls,
        since_status_write,
    })
}

/// What the databases, the ledger and the planning task say.
async fn observe_data(
    job: &MigrationJob,
    ctx: &Context,
    uid: &str,
    urls: &Urls,
) -> Result<DataView> {
    // A planning task that ended is taken first: its outcome decides.
    match ctx.memory.with(uid, |m| take_state(&mut m.planning)) {
        PlanningState::Running { records, batches } => {
            return Ok(DataView::Planning {
                running: true,
                records,
                batches,
            });
        }
        PlanningState::Ended(Err(Halt::Retry(e))) => return Err(e),
        PlanningState::Ended(Err(Halt::Blocked(p))) => return Ok(DataView::BlockedInDatabase(p)),
        PlanningState::Ended(Ok(())) | PlanningState::NotStarted => {}
    }
    match data_plane::observe_ledger(job, ctx, urls).await {
        Ok(LedgerView::NotPlanned) => Ok(DataView::Planning {
            running: false,
            records: 0,
            batches: 0,
        }),
        Ok(LedgerView::RetryDue { round }) => Ok(DataView::RetryDue { round }),
        Ok(LedgerView::Planned(progress)) => Ok(DataView::Planned(progress)),
        Err(Halt::Blocked(p)) => Ok(DataView::BlockedInDatabase(p)),
        Err(Halt::Retry(e)) => Err(e),
    }
}

/// Whether the job had finished when its spec last changed.
pub fn is_settled(job: &MigrationJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| is_finished(s.phase) && s.observed_generation == job.metadata.generation)
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The connection strings from the referenced Secrets.
pub async fn read_urls(
    job: &MigrationJob,
    ctx: &Context,
    uid: &str,
    namespace: &str,
) -> Step<Urls> {
    let mut values = Vec::new();
    for used in secret_refs(job) {
        values.push(secret_value(ctx, uid, namespace, &used).await?);
    }
    let [source, target] = values.as_slice() else {
        return Err(Halt::Blocked(ConfigProblem {
            reason: Reason::NoConnector,
            message: "spec.source and spec.target must each set a connector".into(),
        }));
    };
    check_not_self_copy(job, source, target)?;
    let text = |value: &[u8], field: &str| {
        String::from_utf8(value.to_vec()).map_err(|_| ConfigProblem {
            reason: Reason::InvalidConnectionString,
            message: format!("the Secret value referenced by {field} is not UTF-8 text"),
        })
    };
    Ok(Urls {
        source: text(source, "spec.source.postgres.connectionSecretRef")?,
        target: text(target, "spec.target.postgres.connectionSecretRef")?,
    })
}

/// One referenced Secret value: absent from the cache is "not found"
/// without asking; a changed Secret is read once.
async fn secret_value(
    ctx: &Context,
    uid: &str,
    namespace: &str,
    used: &SecretRefUse<'_>,
) -> Step<Vec<u8>> {
    let name = &used.secret.name;
    let meta = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(name).within(namespace))
        .map(|m| m.metadata.clone());
    let secret = match &meta {
        Some(meta) => read_secret(ctx, uid, namespace, name, meta).await?,
        None => None,
    };
    Ok(check_secret_ref(namespace, used, secret.as_deref())?.to_vec())
}

/// The Secret `name`, from the job's memory if its version is the one the
/// cache holds, else from the API server (and remembered).
async fn read_secret(
    ctx: &Context,
    uid: &str,
    namespace: &str,
    name: &str,
    meta: &ObjectMeta,
) -> Result<Option<Arc<Secret>>> {
    let version = meta.resource_version.clone();
    let cached = ctx
        .memory
        .with(uid, |m| m.secrets.get(name).cloned())
        .filter(|c| c.resource_version == version);
    if let Some(c) = cached {
        return Ok(Some(c.secret));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let secret = Arc::new(secret);
    remember_secret(ctx, uid, secret.clone());
    Ok(Some(secret))
}

/// Keeps `secret` in the job's memory until its version changes.
pub fn remember_secret(ctx: &Context, uid: &str, secret: Arc<Secret>) {
    let name = secret.name_any();
    let cached = CachedSecret {
        resource_version: secret.metadata.resource_version.clone(),
        secret,
    };
    ctx.memory.with(uid, |m| m.secrets.insert(name, cached));
}

fn token_of(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(TOKEN_KEY)
        .and_then(|t| String::from_utf8(t.0.clone()).ok())
        .filter(|t| !t.is_empty())
}

/// A fresh worker credential: 32 random bytes, hex-encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
