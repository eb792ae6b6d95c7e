//! What every reconcile shares.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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
use crate::{
    api::MigrationJob, coordinator::Registry, leader::LeaderGate, metrics::SharedMetrics,
    postgres::SharedClient,
};

/// A job's source or target database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Where records are read.
    Source,
    /// Where records are written, and the ledger is kept.
    Target,
}

impl Side {
    /// `source` or `target`, as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// Operator-wide settings of the data plane.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPlaneSettings {
    /// How long a worker holds a batch before it may go to another worker.
    pub batch_lease_seconds: f64,
    /// Least time between two status writes that only move counters.
    pub status_interval: Duration,
}

impl Default for DataPlaneSettings {
    fn default() -> Self {
        Self {
            batch_lease_seconds: 30.0,
            status_interval: Duration::from_secs(5),
        }
    }
}

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
    /// Data-plane settings.
    pub data_plane: DataPlaneSettings,
    /// The jobs the batch coordinator serves.
    pub registry: Registry,
    failures: Mutex<HashMap<ObjectRef<MigrationJob>, u32>>,
    /// Database connections by job UID and side (source or target).
    connections: Mutex<HashMap<(String, Side), Arc<SharedClient>>>,
    /// Jobs whose ledger schema this process has installed.
    installed: Mutex<std::collections::HashSet<String>>,
    /// When each job's status was last written.
    status_writes: Mutex<HashMap<ObjectRef<MigrationJob>, Instant>>,
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
            data_plane: DataPlaneSettings::default(),
            registry: Registry::default(),
            failures: Mutex::default(),
            connections: Mutex::default(),
            status_writes: Mutex::default(),
            installed: Mutex::default(),
        }
    }

    /// Whether the ledger schema still needs installing for job `uid` (once
    /// per process; installing is idempotent).
    pub fn needs_ledger_install(&self, uid: &str) -> bool {
        !self
            .installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid)
    }

    /// Notes that the ledger schema is installed for job `uid`.
    pub fn ledger_installed(&self, uid: &str) {
        self.installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_owned());
    }

    /// Uses these data-plane settings and serves jobs through `registry`.
    pub fn with_data_plane(mut self, settings: DataPlaneSettings, registry: Registry) -> Self {
        self.data_plane = settings;
        self.registry = registry;
        self
    }

    /// The connection of job `uid` to one side's database at `url`, shared
    /// with the coordinator (the target holds the ledger) and replaced when
    /// the URL changes.
    pub fn connection(&self, uid: &str, side: Side, url: &str) -> Arc<SharedClient> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let key = (uid.to_owned(), side);
        match connections.get(&key) {
            Some(c) if c.connects_to(url) => c.clone(),
            _ => {
                // Lease updates need not wait for their WAL flush: a lease lost
                // in a crash of the target only makes its batch leasable again.
                let session = match side {
                    Side::Source => "",
                    Side::Target => {
                        "SET synchronous_commit = off; SET client_min_messages = warning"
                    }
                };
                let c = Arc::new(SharedClient::new(url.to_owned(), session));
                connections.insert(key, c.clone());
                c
            }
        }
    }

    /// Drops the connections of job `uid`.
    pub fn forget_connections(&self, uid: &str) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(u, _), _| u != uid);
        self.installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// How long to wait before the next progress-only status write of `job`
    /// (zero: write now).
    pub fn status_write_delay(&self, job: &ObjectRef<MigrationJob>) -> Duration {
        let writes = self.status_writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.get(job).map_or(Duration::ZERO, |last| {
            self.data_plane
                .status_interval
                .saturating_sub(last.elapsed())
        })
    }

    /// Notes that `job`'s status was just written.
    pub fn status_written(&self, job: &ObjectRef<MigrationJob>) {
        self.status_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.clone(), Instant::now());
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
