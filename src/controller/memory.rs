//! What the operator remembers about each job between reconciles, in one map
//! keyed by the job's UID, with one way to forget a job.
//!
//! Nothing here is durable: the ledger and the API server hold the truth, so
//! an operator that restarts (or a new leader) starts with an empty memory
//! and loses nothing but a few cached reads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;

use super::{context::Side, planning::PlanningTask};
use crate::{backoff::Backoff, postgres::SharedClient};

/// Shortest and longest retry delay after a failed reconcile.
pub const MIN_BACKOFF: Duration = Duration::from_secs(2);
/// See [`MIN_BACKOFF`].
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A Secret read once and kept until its `resourceVersion` changes.
#[derive(Clone, Debug)]
pub struct CachedSecret {
    /// The version read.
    pub resource_version: Option<String>,
    /// The Secret.
    pub secret: Arc<Secret>,
}

/// Per-job memory.
pub struct JobMemory {
    /// Consecutive failed reconciles, for the requeue delay.
    pub backoff: Backoff,
    /// When status was last written by this process.
    pub status_written: Option<Instant>,
    /// Database connections by side, shared with the coordinator.
    pub connections: HashMap<Side, Arc<SharedClient>>,
    /// Whether this process installed (or upgraded) the job's ledger schema.
    pub ledger_installed: bool,
    /// The planning task, while the job is being planned.
    pub planning: Option<PlanningTask>,
    /// Secrets the job reads (its connection Secrets and worker credential),
    /// by name. Secret data is never streamed: each is read once per change.
    pub secrets: HashMap<String, CachedSecret>,
}

impl Default for JobMemory {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            status_written: None,
            connections: HashMap::new(),
            ledger_installed: false,
            planning: None,
            secrets: HashMap::new(),
        }
    }
}

/// The memory of every job this process reconciles.
#[derive(Default)]
pub struct Memory {
    jobs: Mutex<HashMap<String, JobMemory>>,
}

impl Memory {
    /// Runs `f` on the memory of job `uid` (created empty if new). Never
    /// hold this across an `.await`: `f` is synchronous.
    pub fn with<R>(&self, uid: &str, f: impl FnOnce(&mut JobMemory) -> R) -> R {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        f(jobs.entry(uid.to_owned()).or_default())
    }

    /// Runs `f` on the memory of job `uid` if there is any.
    pub fn peek<R>(&self, uid: &str, f: impl FnOnce(&JobMemory) -> R) -> Option<R> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(uid).map(f)
    }

    /// Runs `f` on the memory of job `uid` only if there is any (so that a
    /// job just forgotten is not remembered again).
    pub fn update<R>(&self, uid: &str, f: impl FnOnce(&mut JobMemory) -> R) -> Option<R> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get_mut(uid).map(f)
    }

    /// Forgets job `uid`: stops its planning task and drops its connections
    /// and cached Secrets.
    pub fn forget(&self, uid: &str) {
        let gone = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        if let Some(task) = gone.and_then(|m| m.planning) {
            task.abort();
        }
    }

    /// Forgets every job (this replica stopped reconciling): planning tasks
    /// stop, so a replica that lost its lease does no more work.
    pub fn forget_all(&self) {
        let all: Vec<JobMemory> = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, m)| m)
            .collect();
        for task in all.into_iter().filter_map(|m| m.planning) {
            task.abort();
        }
    }

    /// How many jobs are remembered.
    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no job is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_drops_everything_of_one_job_only() {
        let memory = Memory::default();
        memory.with("a", |m| m.ledger_installed = true);
        memory.with("b", |m| {
            m.backoff.next_delay();
        });
        memory.forget("a");
        assert_eq!(memory.len(), 1);
        assert!(!memory.with("a", |m| m.ledger_installed));
        assert_eq!(memory.peek("b", |m| m.backoff.failures()), Some(1));
        memory.forget_all();
        assert!(memory.is_empty());
    }
}
