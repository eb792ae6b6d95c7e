//! The durable ledger of a job, kept in the target database (schema
//! `freight`): the plan (one row per key range), leases, per-batch results
//! and failed records.
//!
//! A batch's result is recorded in the same transaction that writes its rows
//! ([`complete`] takes the copy's transaction), and only by the holder of its
//! current lease. So a batch's rows and its "done" mark commit together or not
//! at all: a crash anywhere loses no finished batch and counts none twice, and
//! a worker whose lease expired cannot commit over the batch's new holder.
//!
//! One file per concern; everything is re-exported here, so callers write
//! `ledger::lease`, `ledger::counts`, …:
//! - `schema`: the versioned schema — [`install`] applies its migrations
//!   ([`SCHEMA_VERSION`], [`schema_version`]); [`forget`] removes a job.
//! - `plan`: cutting the source into key ranges — [`plan()`], watched
//!   through [`PlanProgress`].
//! - `lease`: handing batches out ([`lease()`]), recording them
//!   ([`complete`]) or taking them back ([`release`]); every lease is an
//!   attempt, kept in `freight.attempts` with the worker's revision.
//! - `report`: what status shows — [`planned`], [`counts`],
//!   [`recent_failures`], [`most_attempted`]; per-revision figures —
//!   [`revision_stats`].
//! - `retry`: retrying failed records — [`retry_round`], [`retry_failed`].

mod lease;
mod plan;
mod report;
mod retry;
mod schema;

pub use lease::{Lease, complete, lease, release};
pub use plan::{PlanProgress, plan};
pub use report::{
    LedgerCounts, MostAttempted, RECENT_WINDOW_SECONDS, RevisionStats, counts, most_attempted,
    planned, recent_failures, revision_stats,
};
pub use retry::{retry_failed, retry_round};
pub use schema::{SCHEMA_VERSION, forget, install, schema_version};
