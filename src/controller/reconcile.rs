//! The reconcile pipeline: validate → build desired children → apply → status.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Error as FinalizerError, Event, finalizer},
        reflector::ObjectRef,
    },
};
use rand::RngCore;
use serde_json::json;

use super::{
    apply::{apply_child, check_owned, delete_child},
    children::desired_children,
    config::{ConfigProblem, check_not_self_copy, check_secret_ref, secret_refs},
    context::{Context, Side},
    data_plane::{self, Urls},
    error::{Error, Result, api_status_code},
    labels::{
        FIELD_MANAGER, FINALIZER, TOKEN_KEY, autoscaler_name, credential_secret_name, job_selector,
    },
    status::{
        FleetObservation, Observation, desired_status, is_finished, only_counters_differ,
        phase_change,
    },
};
use crate::{
    api::{MigrationJob, MigrationJobStatus, Phase},
    coordinator::{JobEntry, JobKey, JobState},
    domain::outcome::Outcome,
};

/// How often a job is looked at again when nothing triggers it.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a job blocked by its databases is looked at again.
const DATABASE_RECHECK: Duration = Duration::from_secs(15);
/// How often a job whose last batches are out is looked at (a short
/// stretch at the end of a job; nothing is written unless the phase changes).
const FINISHING: Duration = Duration::from_millis(250);

/// Reconciles one MigrationJob.
pub async fn reconcile(job: Arc<MigrationJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_ref = ObjectRef::from_obj(job.as_ref());
    let outcome = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Event::Apply(job) => apply(&job, &ctx).await,
            Event::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await;
    let action = match outcome {
        Ok(action) => action,
        // A second cleanup pass raced with the first: the job is already gone.
        Err(FinalizerError::RemoveFinalizer(e)) if api_status_code(&e) == Some(404) => {
            Action::await_change()
        }
        Err(e) => return Err(Error::Finalizer(Box::new(e))),
    };
    ctx.reset_backoff(&job_ref);
    Ok(action)
}

/// What the controller does after a failed reconcile: count it, tell the
/// user, and retry with exponential backoff (never immediately).
pub fn error_policy(job: Arc<MigrationJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(&ObjectRef::from_obj(job.as_ref()));
    ctx.metrics.reconcile_failed(error.metric_label());
    tracing::warn!(
        job = %job.name_any(),
        namespace = job.namespace().unwrap_or_default(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    if !matches!(error, Error::NotLeader) {
        let note = format!("{error}; retrying in {}s", delay.as_secs());
        tokio::spawn(async move {
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "ReconcileError".into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            };
            let _ = ctx.publish(&job, event).await;
        });
    }
    Action::requeue(delay)
}

async fn apply(job: &MigrationJob, ctx: &Context) -> Result<Action> {
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let key = JobKey {
        namespace: namespace.clone(),
        name: job.name_any(),
    };
    // A job that had finished when its spec last changed needs neither its
    // Secrets nor its databases (both may be gone by now): only its workers
    // are kept at zero.
    if is_settled(job) {
        ctx.registry.remove(&key);
        let observation = match ensure_children(job, ctx, &namespace, false).await? {
            Err(problem) => Observation::Blocked(problem),
            Ok((fleet, _)) => Observation::Settled(fleet),
        };
        return settle(job, ctx, &namespace, &observation).await;
    }
    let urls = match check_config(job, ctx, &namespace).await? {
        Err(problem) => return blocked(job, ctx, &namespace, &key, problem).await,
        Ok(urls) => urls,
    };
    let planned = match data_plane::prepare(job, ctx, &urls).await? {
        Err(problem) => return blocked_in_database(job, ctx, &namespace, &key, problem).await,
        Ok(planned) => planned,
    };
    let mut job = job.clone();
    if !planned {
        let status = desired_status(&job, &Observation::Planning, now());
        if job.status.as_ref() != Some(&status) {
            write_status(&job, ctx, &namespace, &status).await?;
            announce(&job, ctx, &Observation::Planning, &status).await?;
            job.status = Some(status);
        }
        if let Err(problem) = data_plane::plan(&job, &urls).await? {
            return blocked_in_database(&job, ctx, &namespace, &key, problem).await;
        }
    }
    if let Err(problem) = data_plane::retry_if_asked(&job, ctx, &urls).await? {
        return blocked_in_database(&job, ctx, &namespace, &key, problem).await;
    }
    let progress = match data_plane::progress(&job, ctx, &urls).await? {
        Err(problem) => return blocked_in_database(&job, ctx, &namespace, &key, problem).await,
        Ok(progress) => progress,
    };
    let in_progress = matches!(
        progress.outcome(job.spec.failure_policy.max_failed_record_ratio),
        Outcome::InProgress
    );
    let run_workers = in_progress && !job.spec.suspend;
    let (fleet, token) = match ensure_children(&job, ctx, &namespace, run_workers).await? {
        Err(problem) => return blocked(&job, ctx, &namespace, &key, problem).await,
        Ok(done) => done,
    };
    let state = match (in_progress, job.spec.suspend) {
        (false, _) => JobState::Finished,
        (true, true) => JobState::Paused,
        (true, false) => JobState::Serving,
    };
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    ctx.registry.upsert(
        key,
        JobEntry::new(
            uid.clone(),
            &token,
            ctx.connection(&uid, Side::Target, &urls.target),
            state,
            ctx.data_plane.batch_lease_seconds,
        ),
    );
    settle(
        &job,
        ctx,
        &namespace,
        &Observation::Active { fleet, progress },
    )
    .await
}

/// Whether the job had finished when its spec last changed.
fn is_settled(job: &MigrationJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| is_finished(s.phase) && s.observed_generation == job.metadata.generation)
}

/// The configuration cannot be used: stop handing out batches and report it.
async fn blocked(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
    key: &JobKey,
    problem: ConfigProblem,
) -> Result<Action> {
    ctx.registry.remove(key);
    settle(job, ctx, namespace, &Observation::Blocked(problem)).await
}

/// The databases do not fit the spec (a table or column missing, bad
/// credentials): report it, and look again every [`DATABASE_RECHECK`], since
/// no Kubernetes event announces a fix made in a database.
async fn blocked_in_database(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
    key: &JobKey,
    problem: ConfigProblem,
) -> Result<Action> {
    blocked(job, ctx, namespace, key, problem).await?;
    Ok(Action::requeue(DATABASE_RECHECK))
}

/// Writes the status `observation` calls for, if it changed. Changes of
/// counters alone are written at most once per status interval.
async fn settle(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
    observation: &Observation,
) -> Result<Action> {
    let job_ref = ObjectRef::from_obj(job);
    let status = desired_status(job, observation, now());
    ctx.metrics
        .set_phase(namespace, &job.name_any(), Some(status.phase));
    let next = match (status.phase, observation) {
        // The last batches are out: look again soon, so that the end of the
        // job shows without waiting a whole status interval.
        (Phase::Running, Observation::Active { progress, .. }) if progress.pending_batches == 0 => {
            FINISHING.min(ctx.data_plane.status_interval)
        }
        (Phase::Planning | Phase::Running, _) => ctx.data_plane.status_interval,
        _ => RESYNC,
    };
    if job.status.as_ref() == Some(&status) {
        return Ok(Action::requeue(next));
    }
    if job
        .status
        .as_ref()
        .is_some_and(|before| only_counters_differ(before, &status))
    {
        let wait = ctx.status_write_delay(&job_ref);
        if !wait.is_zero() {
            return Ok(Action::requeue(wait.min(next)));
        }
    }
    write_status(job, ctx, namespace, &status).await?;
    ctx.status_written(&job_ref);
    announce(job, ctx, observation, &status).await?;
    Ok(Action::requeue(next))
}

/// The current time at the precision the API stores (whole seconds), so that
/// a computed status compares equal to the stored one.
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Step 1: the referenced Secrets exist and hold their keys.
async fn check_config(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Urls, ConfigProblem>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut values = Vec::new();
    let mut fetched: Vec<(String, Option<Secret>)> = Vec::new();
    for used in secret_refs(job) {
        let name = &used.secret.name;
        if !fetched.iter().any(|(n, _)| n == name) {
            let secret = secrets.get_opt(name).await?;
            fetched.push((name.clone(), secret));
        }
        let found = fetched
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.as_ref());
        match check_secret_ref(namespace, &used, found) {
            Ok(value) => values.push(value.to_vec()),
            Err(problem) => return Ok(Err(problem)),
        }
    }
    let [source, target] = values.as_slice() else {
        return Ok(Err(ConfigProblem {
            reason: "NoConnector",
            message: "spec.source and spec.target must each set a connector".into(),
        }));
    };
    if let Err(problem) = check_not_self_copy(job, source, target) {
        return Ok(Err(problem));
    }
    let text = |value: &[u8], field: &str| {
        String::from_utf8(value.to_vec()).map_err(|_| ConfigProblem {
            reason: "InvalidConnectionString",
            message: format!("the Secret value referenced by {field} is not UTF-8 text"),
        })
    };
    Ok((|| {
        Ok(Urls {
            source: text(source, "spec.source.postgres.connectionSecretRef")?,
            target: text(target, "spec.target.postgres.connectionSecretRef")?,
        })
    })())
}

/// Steps 2 and 3: build the desired children and apply those that changed.
async fn ensure_children(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
    run_workers: bool,
) -> Result<Result<(FleetObservation, String), ConfigProblem>> {
    let name = job.name_any();
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let owner = job
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), namespace);

    let credential = secrets.get_opt(&credential_secret_name(&name)).await?;
    let existing_deployments = deployments
        .list(&ListParams::default().labels(&job_selector(&name)))
        .await?
        .items;
    let autoscaler = autoscalers.get_opt(&autoscaler_name(&name)).await?;

    // Never take over same-named objects this job does not control.
    let ownership = [
        credential.as_ref().map(|s| check_owned(s, &uid, &name)),
        autoscaler.as_ref().map(|a| check_owned(a, &uid, &name)),
    ];
    if let Some(Err(problem)) = ownership.into_iter().flatten().find(Result::is_err) {
        return Ok(Err(problem));
    }

    let token = credential
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(TOKEN_KEY))
        .and_then(|t| String::from_utf8(t.0.clone()).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(new_token);
    let desired = desired_children(job, &owner, &ctx.settings, &token, run_workers);
    let deployment_name = desired.deployment.name_any();
    let current_deployment = existing_deployments
        .iter()
        .find(|d| d.name_any() == deployment_name)
        .cloned();
    if let Some(d) = &current_deployment
        && let Err(problem) = check_owned(d, &uid, &name)
    {
        return Ok(Err(problem));
    }

    // Dependency order: the credential before the pods that mount it, the
    // Deployment before the autoscaler that targets it.
    if let Err(p) = apply_child(ctx, &secrets, &desired.credential, credential, "secrets").await? {
        return Ok(Err(p));
    }
    let deployment = match apply_child(
        ctx,
        &deployments,
        &desired.deployment,
        current_deployment,
        "deployments",
    )
    .await?
    {
        Ok(applied) => applied.into_inner(),
        Err(p) => return Ok(Err(p)),
    };
    if let Err(p) = apply_child(
        ctx,
        &autoscalers,
        &desired.autoscaler,
        autoscaler,
        "horizontalpodautoscalers",
    )
    .await?
    {
        return Ok(Err(p));
    }
    // Worker Deployments of earlier revisions of this job are orphans now.
    for old in existing_deployments
        .iter()
        .filter(|d| d.name_any() != deployment_name)
        .filter(|d| check_owned(*d, &uid, &name).is_ok())
    {
        delete_child(ctx, &deployments, &old.name_any(), "deployments").await?;
    }
    Ok(Ok((
        FleetObservation::from_deployment(Some(&deployment)),
        token,
    )))
}

/// A fresh worker credential: 32 random bytes, hex-encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Step 4: write the status (server-side apply of the status subresource).
async fn write_status(
    job: &MigrationJob,
    ctx: &Context,
    namespace: &str,
    status: &MigrationJobStatus,
) -> Result<()> {
    ctx.ensure_leader()?;
    ctx.metrics.write("migrationjobs/status", "apply");
    let api: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": MigrationJob::api_version(&()),
        "kind": MigrationJob::kind(&()),
        "status": status,
    });
    api.patch_status(
        &job.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Events for what changed: a new phase, or a new configuration problem.
async fn announce(
    job: &MigrationJob,
    ctx: &Context,
    observation: &Observation,
    status: &MigrationJobStatus,
) -> Result<()> {
    let before = job.status.as_ref();
    if let Observation::Blocked(problem) = observation {
        let ready_before = before
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.reason.as_str(), c.message.as_str()));
        if ready_before != Some((problem.reason, problem.message.as_str())) {
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: problem.reason.into(),
                note: Some(problem.message.clone()),
                action: "Validate".into(),
                secondary: None,
            };
            ctx.publish(job, event).await?;
        }
    }
    if let Some(from) = phase_change(before, status) {
        let event = KubeEvent {
            type_: EventType::Normal,
            reason: status.phase.to_string(),
            note: Some(format!("Phase changed from {from} to {}", status.phase)),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.publish(job, event).await?;
    }
    Ok(())
}

/// On deletion: stop the workers before the job disappears.
async fn cleanup(job: &MigrationJob, ctx: &Context) -> Result<Action> {
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = job.name_any();
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    delete_child(
        ctx,
        &autoscalers,
        &autoscaler_name(&name),
        "horizontalpodautoscalers",
    )
    .await?;
    for d in deployments
        .list(&ListParams::default().labels(&job_selector(&name)))
        .await?
        .items
        .iter()
        .filter(|d| check_owned(*d, &uid, &name).is_ok())
    {
        delete_child(ctx, &deployments, &d.name_any(), "deployments").await?;
    }
    delete_child(ctx, &secrets, &credential_secret_name(&name), "secrets").await?;
    ctx.registry.remove(&JobKey {
        namespace: namespace.clone(),
        name: name.clone(),
    });
    let target_url = match check_config(job, ctx, &namespace).await {
        Ok(Ok(urls)) => Some(urls.target),
        _ => None,
    };
    data_plane::forget(job, ctx, target_url.as_deref()).await;
    ctx.metrics.set_phase(&namespace, &name, None);
    let event = KubeEvent {
        type_: EventType::Normal,
        reason: "Deleted".into(),
        note: Some("Workers stopped and children removed".into()),
        action: "Cleanup".into(),
        secondary: None,
    };
    ctx.publish(job, event).await?;
    Ok(Action::await_change())
}
