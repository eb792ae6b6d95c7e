//! What every reconcile shares.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::{
    Client,
    runtime::{
        events::{Event, Recorder, Reporter},
        reflector::ObjectRef,
    },
};

use super::{
    children::ChildSettings,
    error::{Error, Result},
};
use crate::{api::MigrationJob, leader::LeaderGate, metrics::SharedMetrics};

/// Shared state of the controller.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator-wide settings for the children.
    pub settings: ChildSettings,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: SharedMetrics,
    /// Whether this replica may write.
    pub leader: LeaderGate,
    failures: Mutex<HashMap<ObjectRef<MigrationJob>, u32>>,
}

/// Shortest and longest retry delay after a failed reconcile.
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Context {
    /// A context for a controller.
    pub fn new(
        client: Client,
        settings: ChildSettings,
        metrics: SharedMetrics,
        leader: LeaderGate,
        reporter: Reporter,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            leader,
            failures: Mutex::default(),
        }
    }

    /// Fails unless this replica holds the lease. Call right before a write.
    pub fn ensure_leader(&self) -> Result<()> {
        if self.leader.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Publishes an event about `job` (a write: leader only). Event delivery is
    /// best effort: a failure is logged, not retried.
    pub async fn publish(&self, job: &MigrationJob, event: Event) -> Result<()> {
        use kube::Resource;
        self.ensure_leader()?;
        self.metrics.write("events", "create");
        if let Err(e) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
        }
        Ok(())
    }

    /// The delay before retrying `job` after its `n`-th consecutive failure:
    /// exponential from 2 s, capped at 5 min.
    pub fn next_backoff(&self, job: &ObjectRef<MigrationJob>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(job.clone()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// Forgets the failures of `job` after it reconciled successfully.
    pub fn reset_backoff(&self, job: &ObjectRef<MigrationJob>) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job);
    }
}

/// Exponential backoff: 2 s, 4 s, 8 s ... capped at 5 minutes.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    MIN_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(50), MAX_BACKOFF);
    }
}
