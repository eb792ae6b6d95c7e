//! Freight: a Kubernetes operator that runs data migration jobs.
//!
//! - [`api`]: the `MigrationJob` custom resource (what `kubectl explain` shows).
//! - [`domain`]: the pure data-plane core (planning, outcome, isolation), no Kubernetes.
//! - [`controller`]: the reconcile: observe (one snapshot) → decide (pure plan) → act.
//! - [`operator`]: process wiring: controller, leader election, HTTP endpoints.
pub mod api;
pub mod backoff;
pub mod controller;
pub mod coordinator;
pub mod crd;
pub mod domain;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod postgres;
pub mod signals;
pub mod telemetry;
pub mod worker;
