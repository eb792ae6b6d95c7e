//! The MigrationJob controller: each reconcile is **observe** (one snapshot of
//! the job, its Secrets, its children from the watch caches and its ledger)
//! → **decide** (a pure plan) → **act** (apply what differs).

pub mod act;
pub mod apply;
pub mod children;
pub mod conditions;
pub mod config;
pub mod context;
pub mod data_plane;
pub mod decide;
pub mod error;
pub mod labels;
pub mod memory;
pub mod observe;
pub mod plan;
pub mod planning;
pub mod reconcile;
pub mod status;
mod status_conditions;
pub mod stores;
pub mod triggers;
mod worker_pod;

pub use context::Context;
pub use error::{Error, Halt, Result, Step};
