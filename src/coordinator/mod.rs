//! The batch coordinator: the HTTP API workers use to lease batches of their
//! own job, served by the operator leader.
//!
//! It is the isolation boundary between jobs: a worker proves which job it
//! belongs to with the job's credential (the token in the job's worker
//! Secret) and only ever gets that job's batches. The ledger behind it lives
//! in the target database ([`crate::postgres::ledger`]); a worker records its
//! batch's result itself, in the transaction that writes the rows, with the
//! lease id it was given here.

mod api;
mod registry;

pub use api::{LeaseResponse, router};
pub use registry::{JobEntry, JobKey, JobState, Registry};
