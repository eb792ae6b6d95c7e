//! `freight worker`: the process that runs in each worker pod.
//!
//! This is the process shell: it reads its job identity and credential from
//! the environment the worker Deployment sets, serves `/healthz`, `/readyz` and
//! `/metrics`, and shuts down cleanly on SIGTERM. The batch loop (lease a
//! batch, copy it, report it) arrives with the data plane.

pub mod batches;

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::http::{self, HttpError, Readiness};

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A required environment variable is missing or empty.
    #[error("environment variable {0} is not set; it is set by the worker Deployment")]
    MissingEnv(&'static str),
    /// The HTTP endpoints failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// What a worker knows about itself, from its environment.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Name of the MigrationJob this worker serves.
    pub job_name: String,
    /// Namespace of the MigrationJob.
    pub job_namespace: String,
    /// The pod's name (identity in leases).
    pub pod_name: String,
    /// The job's worker credential. Never logged.
    pub token: String,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("job_name", &self.job_name)
            .field("job_namespace", &self.job_namespace)
            .field("pod_name", &self.pod_name)
            .field("token", &"<redacted>")
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl WorkerConfig {
    /// Reads the configuration from the variables the worker Deployment sets.
    pub fn from_env(metrics_addr: SocketAddr) -> Result<Self, WorkerError> {
        fn var(name: &'static str) -> Result<String, WorkerError> {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(WorkerError::MissingEnv(name))
        }
        Ok(Self {
            job_name: var("FREIGHT_JOB_NAME")?,
            job_namespace: var("FREIGHT_JOB_NAMESPACE")?,
            pod_name: var("FREIGHT_POD_NAME")?,
            token: var("FREIGHT_WORKER_TOKEN")?,
            metrics_addr,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    namespace: String,
    job: String,
}

/// Runs the worker until SIGTERM.
pub async fn run(cfg: WorkerConfig) -> Result<(), WorkerError> {
    tracing::info!(
        job = %cfg.job_name,
        namespace = %cfg.job_namespace,
        pod = %cfg.pod_name,
        "worker starting"
    );
    let mut registry = Registry::with_prefix("freight_worker");
    let info = Family::<JobLabels, Gauge>::default();
    registry.register("info", "The job this worker serves", info.clone());
    info.get_or_create(&JobLabels {
        namespace: cfg.job_namespace.clone(),
        job: cfg.job_name.clone(),
    })
    .set(1);
    let registry = Arc::new(registry);
    let encoder: http::MetricsEncoder = Arc::new(move || {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    });
    let readiness = Readiness::default();
    readiness.set_ready();
    let server = tokio::spawn(http::serve(cfg.metrics_addr, encoder, readiness.clone()));
    let mut shutdown = crate::signals::shutdown_signal();
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => {}
        served = server => {
            return match served {
                Ok(Err(e)) => Err(e.into()),
                _ => Ok(()),
            };
        }
    }
    readiness.set_unready();
    tracing::info!(pod = %cfg.pod_name, "worker stopped");
    Ok(())
}
