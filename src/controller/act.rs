//! **Act**: carry out a [`Plan`] — apply the children that differ, delete
//! stale ones, tell the coordinator, start the data-plane work, write the
//! status and publish the events. Every write re-checks leadership.

use std::sync::Arc;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
    },
};
use serde_json::json;

use super::{
    apply::{apply_child, delete_child},
    context::{Context, Side},
    data_plane,
    decide::{ChildWrite, CoordinatorChange, DATABASE_RECHECK, DecideSettings, Plan, blocked_by},
    error::{Error, Halt, Result},
    labels::FIELD_MANAGER,
    observe::{Snapshot, remember_secret},
    planning::PlanningTask,
};
use crate::{
    api::{MigrationJob, MigrationJobStatus},
    coordinator::{JobEntry, JobKey},
    postgres::ledger::PlanProgress,
};

/// Carries out `plan` for the job of `snapshot`.
pub async fn act(
    ctx: &Context,
    snapshot: &Snapshot,
    plan: Plan,
    now: Time,
    cfg: &DecideSettings<'_>,
) -> Result<Action> {
    let job = snapshot.job.as_ref();
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let key = JobKey {
        namespace: namespace.clone(),
        name: job.name_any(),
    };
    match apply_children(ctx, &uid, &plan.apply).await {
        Ok(()) => {}
        Err(Halt::Blocked(problem)) => {
            // The API server refused an object built from the spec: report
            // it as the plan for a blocked job would.
            let fallback = blocked_by(snapshot, problem, now.clone(), cfg);
            return Box::pin(act(ctx, snapshot, fallback, now, cfg)).await;
        }
        Err(Halt::Retry(e)) => return Err(e),
    }
    for name in &plan.delete_deployments {
        delete_child::<Deployment>(ctx, &namespace, name, "deployments").await?;
    }
    match plan.coordinator {
        CoordinatorChange::Keep => {}
        CoordinatorChange::Remove => ctx.registry.remove(&key),
        CoordinatorChange::Serve(state) => {
            if let Some(urls) = &snapshot.urls {
                ctx.registry.upsert(
                    key.clone(),
                    JobEntry::new(
                        uid.clone(),
                        &snapshot.children.token.0,
                        ctx.connection(&uid, Side::Target, &urls.target),
                        state,
                        ctx.data_plane.batch_lease_seconds,
                    ),
                );
            }
        }
    }
    if plan.start_planning
        && let Some(urls) = &snapshot.urls
    {
        start_planning(ctx, &uid, key.clone(), job, urls);
    }
    if let (Some(round), Some(urls)) = (plan.schedule_retry, &snapshot.urls) {
        match data_plane::schedule_retry(job, urls, round).await {
            Ok(()) => {}
            // The target refuses the retry (a privilege, say): say so and
            // look again later, never in a tight loop.
            Err(Halt::Blocked(problem)) => {
                tracing::warn!(job = %key.name, reason = %problem.reason, message = %problem.message, "cannot schedule the retry");
                return Ok(Action::requeue(DATABASE_RECHECK));
            }
            Err(Halt::Retry(e)) => return Err(e),
        }
    }
    if let Some(status) = &plan.status {
        write_status(ctx, job, &namespace, status).await?;
        ctx.memory
            .with(&uid, |m| m.status_written = Some(std::time::Instant::now()));
    }
    for event in &plan.events {
        ctx.publish(
            job,
            KubeEvent {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.as_str().into(),
                note: Some(event.note.clone()),
                action: event.action.into(),
                secondary: None,
            },
        )
        .await?;
    }
    if let Some(decided) = &plan.decided {
        ctx.metrics.set_job(job, decided, &now);
    }
    Ok(Action::requeue(plan.requeue))
}

/// Applies the children in order; the credential's answer is remembered so
/// that it is not read back.
async fn apply_children(ctx: &Context, uid: &str, writes: &[ChildWrite]) -> Result<(), Halt> {
    for write in writes {
        match write {
            ChildWrite::Credential(secret) => {
                let stored: Secret = apply_child(ctx, secret.as_ref(), "secrets").await?;
                remember_secret(ctx, uid, Arc::new(stored));
            }
            ChildWrite::Fleet(deployment) => {
                apply_child(ctx, deployment.as_ref(), "deployments").await?;
            }
            ChildWrite::Autoscaler(hpa) => {
                apply_child(ctx, hpa.as_ref(), "horizontalpodautoscalers").await?;
            }
        }
    }
    Ok(())
}

/// Starts the job's planning task; when it ends the job is looked at at once.
fn start_planning(
    ctx: &Context,
    uid: &str,
    key: JobKey,
    job: &MigrationJob,
    urls: &super::data_plane::Urls,
) {
    if !ctx.leader.is_leader() {
        return;
    }
    let progress = Arc::new(PlanProgress::default());
    let (job, urls, seen) = (job.clone(), urls.clone(), progress.clone());
    let registry = ctx.registry.clone();
    let task = PlanningTask::spawn(
        progress,
        async move { data_plane::plan(&job, &urls, &seen).await },
        move || registry.nudge_now(&key),
    );
    ctx.memory.with(uid, |m| {
        if let Some(old) = m.planning.replace(task) {
            old.abort();
        }
    });
}

/// Writes the status (server-side apply of the status subresource).
async fn write_status(
    ctx: &Context,
    job: &MigrationJob,
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
