//! Freight: a Kubernetes operator that runs data migration jobs.
//!
//! - [`api`]: the `MigrationJob` custom resource (what `kubectl explain` shows).
//! - [`controller`]: the reconcile pipeline (validate → build → apply → status).
//! - [`operator`]: process wiring: controller, leader election, HTTP endpoints.
pub mod api;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod signals;
pub mod telemetry;
pub mod worker;
