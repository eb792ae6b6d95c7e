//! One reconcile: **observe** (one snapshot) → **decide** (a pure plan) →
//! **act** (apply what differs), wrapped in the finalizer that cleans up.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Error as FinalizerError, Event, finalizer},
    },
};

use super::{
    act::act,
    apply::{check_owned, delete_child},
    context::Context,
    data_plane,
    decide::{DecideSettings, decide},
    error::{Error, Result, api_status_code},
    labels::{FINALIZER, autoscaler_name, credential_secret_name},
    observe::{observe, read_urls},
};
use crate::{api::MigrationJob, api::Reason, coordinator::JobKey};

/// Reconciles one MigrationJob.
pub async fn reconcile(job: Arc<MigrationJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let api: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Event::Apply(job) => apply(job, &ctx).await,
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
    ctx.memory.update(&uid, |m| m.backoff.reset());
    Ok(action)
}

/// What the controller does after a failed reconcile: count it, tell the
/// user, and retry with exponential backoff (never immediately).
pub fn error_policy(job: Arc<MigrationJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = job.uid().unwrap_or_default();
    let delay = ctx.memory.with(&uid, |m| m.backoff.next_delay());
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
                reason: Reason::ReconcileError.as_str().into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            };
            let _ = ctx.publish(&job, event).await;
        });
    }
    Action::requeue(delay)
}

/// Observe → decide → act.
async fn apply(job: Arc<MigrationJob>, ctx: &Context) -> Result<Action> {
    let snapshot = observe(job, ctx).await?;
    let now = now();
    let settings = DecideSettings {
        children: &ctx.settings,
        status_interval: ctx.data_plane.status_interval,
    };
    let plan = decide(&snapshot, now.clone(), &settings);
    act(ctx, &snapshot, plan, now, &settings).await
}

/// The current time at the precision the API stores (whole seconds), so that
/// a computed status compares equal to the stored one.
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// On deletion: stop the workers and remove the ledger before the job
/// disappears, then forget the job.
async fn cleanup(job: &MigrationJob, ctx: &Context) -> Result<Action> {
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = job.name_any();
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let key = JobKey {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    ctx.registry.remove(&key);
    ctx.stores.ready().await?;
    delete_child::<HorizontalPodAutoscaler>(
        ctx,
        &namespace,
        &autoscaler_name(&name),
        "horizontalpodautoscalers",
    )
    .await?;
    for d in ctx.stores.deployments_of(&namespace, &name) {
        if check_owned(d.as_ref(), &uid, &name).is_ok() {
            delete_child::<Deployment>(ctx, &namespace, &d.name_any(), "deployments").await?;
        }
    }
    delete_child::<Secret>(ctx, &namespace, &credential_secret_name(&name), "secrets").await?;
    let target_url = read_urls(job, ctx, &uid, &namespace)
        .await
        .ok()
        .map(|urls| urls.target);
    ctx.memory.forget(&uid);
    data_plane::forget(job, target_url.as_deref()).await;
    ctx.metrics.forget_job(&namespace, &name);
    let event = KubeEvent {
        type_: EventType::Normal,
        reason: Reason::Deleted.as_str().into(),
        note: Some("Workers stopped and children removed".into()),
        action: "Cleanup".into(),
        secondary: None,
    };
    ctx.publish(job, event).await?;
    Ok(Action::await_change())
}
