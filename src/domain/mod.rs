//! The pure core of the data plane: plain data in, plain data out, no
//! Kubernetes and no database. Planning, the job's outcome under its failure
//! budget, and isolation of rejected records are decided here and tested as
//! data (with property tests where invariants matter).

pub mod isolate;
pub mod outcome;
pub mod plan;
