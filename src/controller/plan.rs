//! A [`Plan`]: what one reconcile does, as plain data — the output of
//! [`decide`](super::decide::decide) and the input of [`act`](super::act::act).

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret,
};

use crate::{
    api::{MigrationJobStatus, Reason},
    coordinator::JobState,
};

/// What a reconcile does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Children to create or update, in dependency order.
    pub apply: Vec<ChildWrite>,
    /// Worker Deployments of the job to delete (earlier revisions).
    pub delete_deployments: Vec<String>,
    /// What the batch coordinator should do for the job.
    pub coordinator: CoordinatorChange,
    /// Start planning in the background.
    pub start_planning: bool,
    /// Schedule this retry round (`spec.retryFailed`).
    pub schedule_retry: Option<i64>,
    /// The status to write, if it changed (and may be written now).
    pub status: Option<MigrationJobStatus>,
    /// The status as decided, written now or not (for metrics), if decided.
    pub decided: Option<MigrationJobStatus>,
    /// Events to publish.
    pub events: Vec<Announcement>,
    /// When to look again.
    pub requeue: Duration,
}

/// A child to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildWrite {
    /// The worker credential.
    Credential(Box<Secret>),
    /// A worker fleet's Deployment.
    Fleet(Box<Deployment>),
    /// The autoscaler of the active fleet.
    Autoscaler(Box<HorizontalPodAutoscaler>),
}

/// What the coordinator should do for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorChange {
    /// Leave it as it is.
    Keep,
    /// Forget the job (workers get 404 and retry).
    Remove,
    /// Serve the job in this state.
    Serve(JobState),
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Warning (else Normal).
    pub warning: bool,
    /// Why.
    pub reason: Reason,
    /// What happened.
    pub note: String,
    /// What the operator was doing.
    pub action: &'static str,
}

impl Plan {
    /// A plan that does nothing and looks again after `requeue`.
    pub fn idle(requeue: Duration) -> Self {
        Self {
            apply: Vec::new(),
            delete_deployments: Vec::new(),
            coordinator: CoordinatorChange::Keep,
            start_planning: false,
            schedule_retry: None,
            status: None,
            decided: None,
            events: Vec::new(),
            requeue,
        }
    }
}
