//! What every reconcile shares.

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::events::{Event, Recorder, Reporter},
};

use super::{
    children::ChildSettings,
    error::{Error, Result},
    memory::Memory,
    stores::Stores,
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
    /// The job's children, as the watches last saw them.
    pub stores: Stores,
    /// What this process remembers about each job.
    pub memory: Memory,
}

impl Context {
    /// A context for a controller whose children are cached in `stores`.
    pub fn new(
        client: Client,
        settings: ChildSettings,
        metrics: SharedMetrics,
        leader: LeaderGate,
        reporter: Reporter,
        stores: Stores,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            leader,
            data_plane: DataPlaneSettings::default(),
            registry: Registry::default(),
            stores,
            memory: Memory::default(),
        }
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
        self.memory.with(uid, |m| match m.connections.get(&side) {
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
                m.connections.insert(side, c.clone());
                // A new target may hold no ledger yet.
                if side == Side::Target {
                    m.ledger_installed = false;
                }
                c
            }
        })
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
}
