//! Planning as a tracked background task per job, outside the reconcile
//! slots: measuring a big source takes a while, and the controller's workers
//! must not wait for it.
//!
//! The task lives in the job's [memory](super::memory): a reconcile starts it
//! (when the ledger has no plan and no task runs), reads its progress while
//! it runs, and takes its outcome when it ends. It is aborted when the job is
//! forgotten or this replica stops reconciling (lost its lease); planning is
//! one target transaction, so an aborted plan leaves nothing behind and the
//! next leader plans again.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::error::{Halt, Step};
use crate::postgres::ledger::PlanProgress;

/// A running (or just finished) planning task.
pub struct PlanningTask {
    handle: JoinHandle<()>,
    /// Keys read and batches cut so far.
    pub progress: Arc<PlanProgress>,
    outcome: Arc<Mutex<Option<Step<()>>>>,
}

/// Where a job's planning stands, as a reconcile sees it.
#[derive(Debug)]
pub enum PlanningState {
    /// No task: planning has to be started.
    NotStarted,
    /// Running: records and batches so far.
    Running {
        /// Keys read so far.
        records: u64,
        /// Batches cut so far.
        batches: u64,
    },
    /// Ended; the outcome is taken (the task is gone from memory).
    Ended(Step<()>),
}

impl PlanningTask {
    /// Runs `plan` in the background. `on_end` is called when it ends (to ask
    /// for a reconcile at once).
    pub fn spawn<F>(
        progress: Arc<PlanProgress>,
        plan: F,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Self
    where
        F: Future<Output = Step<()>> + Send + 'static,
    {
        let outcome = Arc::new(Mutex::new(None));
        let slot = outcome.clone();
        let handle = tokio::spawn(async move {
            let result = plan.await;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            on_end();
        });
        Self {
            handle,
            progress,
            outcome,
        }
    }

    /// Where the task stands; [`PlanningState::Ended`] takes the outcome.
    pub fn state(&self) -> PlanningState {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(outcome) = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return PlanningState::Ended(outcome);
        }
        if self.handle.is_finished() {
            // Ended without an outcome: it panicked or was aborted.
            return PlanningState::Ended(Err(Halt::Retry(super::Error::PlanningInterrupted)));
        }
        PlanningState::Running {
            records: self.progress.records.load(Relaxed),
            batches: self.progress.batches.load(Relaxed),
        }
    }

    /// Stops the task.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Takes the planning state out of `slot`: an ended task is removed.
pub fn take_state(slot: &mut Option<PlanningTask>) -> PlanningState {
    let Some(task) = slot else {
        return PlanningState::NotStarted;
    };
    let state = task.state();
    if matches!(state, PlanningState::Ended(_)) {
        *slot = None;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reports_progress_then_the_outcome_once() {
        let progress = Arc::new(PlanProgress::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let seen = progress.clone();
        let mut slot = Some(PlanningTask::spawn(
            progress,
            async move {
                seen.records.store(7, std::sync::atomic::Ordering::Relaxed);
                let _ = rx.await;
                Ok(())
            },
            || {},
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            take_state(&mut slot),
            PlanningState::Running { records: 7, .. }
        ));
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            take_state(&mut slot),
            PlanningState::Ended(Ok(()))
        ));
        assert!(slot.is_none());
        assert!(matches!(take_state(&mut slot), PlanningState::NotStarted));
    }

    #[tokio::test]
    async fn an_aborted_task_ends_as_an_error_to_retry() {
        let mut slot = Some(PlanningTask::spawn(
            Arc::new(PlanProgress::default()),
            std::future::pending(),
            || {},
        ));
        slot.as_ref().unwrap().abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            take_state(&mut slot),
            PlanningState::Ended(Err(Halt::Retry(_)))
        ));
    }
}
