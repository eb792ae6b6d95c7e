//! Leader election with a `coordination.k8s.io` Lease.
//!
//! Only the lease holder runs the controller, and every write checks the gate
//! right before it is sent, so a replica that lost its lease stops writing even
//! if its controller has not wound down yet.

use tokio::sync::watch;

/// Whether this replica may write now.
#[derive(Clone, Debug)]
pub struct LeaderGate(Option<watch::Receiver<bool>>);

impl LeaderGate {
    /// A gate that is always open: leader election is disabled (single replica, tests).
    pub fn always() -> Self {
        Self(None)
    }

    /// A gate that follows a lease manager's state.
    pub fn following(state: watch::Receiver<bool>) -> Self {
        Self(Some(state))
    }

    /// True while this replica holds the lease (or election is disabled).
    pub fn is_leader(&self) -> bool {
        self.0.as_ref().is_none_or(|rx| *rx.borrow())
    }
}
