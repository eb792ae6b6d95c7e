//! The jobs the coordinator serves, kept up to date by the reconciler.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::channel::mpsc;

use sha2::{Digest, Sha256};

use crate::{
    metrics::{LeaseResultLabels, LeaseResults},
    postgres::SharedClient,
};

/// Namespace and name of a MigrationJob.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Whether a job hands out batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Batches are handed out.
    Serving,
    /// No batches (suspended, or rolling back); workers wait.
    Paused,
    /// Nothing left to do; workers may exit.
    Finished,
}

/// What the coordinator knows of one job.
pub struct JobEntry {
    /// The job's UID (its ledger key).
    pub uid: String,
    token_sha256: [u8; 32],
    /// The ledger's database (the job's target).
    pub ledger: Arc<SharedClient>,
    /// Whether it hands out batches.
    pub state: JobState,
    /// How long a lease lasts before the batch may go to another worker.
    pub lease_seconds: f64,
}

impl JobEntry {
    /// An entry; only the token's hash is kept.
    pub fn new(
        uid: String,
        token: &str,
        ledger: Arc<SharedClient>,
        state: JobState,
        lease_seconds: f64,
    ) -> Self {
        Self {
            uid,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            ledger,
            state,
            lease_seconds,
        }
    }

    /// Whether `token` is this job's credential (compared in constant time).
    pub fn accepts(&self, token: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        given
            .iter()
            .zip(self.token_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The jobs being served, shared between the reconciler and the API.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: Arc<RwLock<HashMap<JobKey, Arc<JobEntry>>>>,
    nudges: Arc<Mutex<Nudges>>,
    results: LeaseResults,
}

/// Where "look at this job now" goes, and when each job was last nudged.
#[derive(Default)]
struct Nudges {
    sender: Option<mpsc::UnboundedSender<JobKey>>,
    last: HashMap<JobKey, Instant>,
}

/// Least time between two nudges of one job.
const NUDGE_INTERVAL: Duration = Duration::from_secs(1);

impl Registry {
    /// Counts the answers to lease requests in `results` (a metric family
    /// registered by the operator's metrics).
    pub fn with_lease_results(mut self, results: LeaseResults) -> Self {
        self.results = results;
        self
    }

    /// Counts one answer to a lease request.
    pub fn count(&self, result: &'static str) {
        self.results
            .get_or_create(&LeaseResultLabels { result })
            .inc();
    }

    /// Nudges (see [`nudge`](Self::nudge)) arrive on the returned stream
    /// from now on.
    pub fn nudges(&self) -> mpsc::UnboundedReceiver<JobKey> {
        let (sender, receiver) = mpsc::unbounded();
        let mut nudges = self.nudges.lock().unwrap_or_else(|e| e.into_inner());
        nudges.sender = Some(sender);
        nudges.last.clear();
        receiver
    }

    /// Asks the reconciler to look at `key` soon (e.g. its last batch is
    /// out, so it may be about to finish). At most once a second per job.
    pub fn nudge(&self, key: &JobKey) {
        let mut nudges = self.nudges.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if nudges
            .last
            .get(key)
            .is_some_and(|last| now.duration_since(*last) < NUDGE_INTERVAL)
        {
            return;
        }
        nudges.last.insert(key.clone(), now);
        if let Some(sender) = &nudges.sender {
            let _ = sender.unbounded_send(key.clone());
        }
    }

    /// Asks the reconciler to look at `key` now, whenever it was last nudged
    /// (planning ended, say).
    pub fn nudge_now(&self, key: &JobKey) {
        let mut nudges = self.nudges.lock().unwrap_or_else(|e| e.into_inner());
        nudges.last.insert(key.clone(), Instant::now());
        if let Some(sender) = &nudges.sender {
            let _ = sender.unbounded_send(key.clone());
        }
    }

    /// Adds or replaces a job.
    pub fn upsert(&self, key: JobKey, entry: JobEntry) {
        self.jobs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(entry));
    }

    /// Forgets a job.
    pub fn remove(&self, key: &JobKey) {
        self.jobs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Forgets every job (this replica stopped coordinating).
    pub fn clear(&self) {
        self.jobs.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The entry of a job.
    pub fn get(&self, key: &JobKey) -> Option<Arc<JobEntry>> {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}
