//! `freight worker`: the process that runs in each worker pod.
//!
//! It reads its job identity, credential and connection strings from the
//! environment the worker Deployment sets, serves `/healthz`, `/readyz` and
//! `/metrics`, and runs the batch loop ([`batches`]) until the job is
//! finished or SIGTERM arrives; on SIGTERM the in-flight batch is finished
//! (or handed back) first.

pub mod batches;

use batches::{BatchConfig, BatchMetrics, Stopped};

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
    /// An environment variable does not hold what it should.
    #[error("environment variable {name} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
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
    /// What the batch loop needs (coordinator, databases, tables).
    pub batches: BatchConfig,
    /// Batch loops run at once.
    pub lanes: usize,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("job_name", &self.job_name)
            .field("job_namespace", &self.job_namespace)
            .field("pod_name", &self.pod_name)
            .field("revision", &self.batches.revision)
            .field("token", &"<redacted>")
            .field("metrics_addr", &self.metrics_addr)
            .field("coordinator", &self.batches.coordinator)
            .finish_non_exhaustive()
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
        fn json<T: serde::de::DeserializeOwned>(name: &'static str) -> Result<T, WorkerError> {
            serde_json::from_str(&var(name)?).map_err(|e| WorkerError::InvalidEnv {
                name,
                reason: e.to_string(),
            })
        }
        let job_name = var("FREIGHT_JOB_NAME")?;
        let job_namespace = var("FREIGHT_JOB_NAMESPACE")?;
        let pod_name = var("FREIGHT_POD_NAME")?;
        let token = var("FREIGHT_WORKER_TOKEN")?;
        let batches = BatchConfig {
            coordinator: var("FREIGHT_COORDINATOR_URL")?,
            namespace: job_namespace.clone(),
            job: job_name.clone(),
            worker: pod_name.clone(),
            revision: std::env::var("FREIGHT_WORKER_REVISION").unwrap_or_default(),
            token: token.clone(),
            source_url: var("FREIGHT_SOURCE_URL")?,
            target_url: var("FREIGHT_TARGET_URL")?,
            source: json("FREIGHT_SOURCE_SPEC")?,
            target: json("FREIGHT_TARGET_SPEC")?,
        };
        let lanes = match std::env::var("FREIGHT_BATCHES_PER_WORKER") {
            Err(_) => 1,
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or(WorkerError::InvalidEnv {
                    name: "FREIGHT_BATCHES_PER_WORKER",
                    reason: format!("{v:?} is not a number from 1 to 16"),
                })?,
        };
        Ok(Self {
            job_name,
            job_namespace,
            pod_name,
            token,
            metrics_addr,
            batches,
            lanes,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {}

/// Runs the worker until SIGTERM.
pub async fn run(cfg: WorkerConfig) -> Result<(), WorkerError> {
    tracing::info!(
        job = %cfg.job_name,
        namespace = %cfg.job_namespace,
        pod = %cfg.pod_name,
        "worker starting"
    );
    let metrics = BatchMetrics::new();
    let registry = Arc::new(worker_registry(&cfg, &metrics));
    let encoder: http::MetricsEncoder = Arc::new(move || {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    });
    let readiness = Readiness::default();
    readiness.set_ready();
    let mut server = tokio::spawn(http::serve(cfg.metrics_addr, encoder, readiness.clone()));
    let mut shutdown = crate::signals::shutdown_signal();
    // Each lane is a batch loop with its own connections, leasing as
    // `<pod>/<lane>`; the worker is done when every lane is.
    let lanes: Vec<BatchConfig> = (0..cfg.lanes)
        .map(|lane| BatchConfig {
            worker: format!("{}/{lane}", cfg.pod_name),
            ..cfg.batches.clone()
        })
        .collect();
    let lane_shutdown = shutdown.clone();
    let work = async {
        let stopped = futures::future::join_all(
            lanes
                .iter()
                .map(|lane| batches::run(lane, &metrics, lane_shutdown.clone())),
        )
        .await;
        if stopped.iter().all(|s| *s == Stopped::JobFinished) {
            Stopped::JobFinished
        } else {
            Stopped::Shutdown
        }
    };
    tokio::pin!(work);
    tokio::select! {
        stopped = &mut work => {
            if stopped == Stopped::JobFinished {
                // The operator scales the fleet to zero; until then stay up
                // (and ready) rather than crash-loop.
                tracing::info!("the job has nothing left to do; waiting to be stopped");
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => {}
                    served = &mut server => return served_result(served),
                }
            }
        }
        served = &mut server => return served_result(served),
    }
    readiness.set_unready();
    tracing::info!(pod = %cfg.pod_name, "worker stopped");
    Ok(())
}

fn served_result(
    served: Result<Result<(), HttpError>, tokio::task::JoinError>,
) -> Result<(), WorkerError> {
    match served {
        Ok(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// The worker's metrics, all prefixed `freight_worker_`.
fn worker_registry(cfg: &WorkerConfig, metrics: &BatchMetrics) -> Registry {
    // Every series carries the job and the worker's revision, so that fleets
    // of a rollout can be told apart.
    let labels = [
        ("namespace".into(), cfg.job_namespace.clone().into()),
        ("job".into(), cfg.job_name.clone().into()),
        ("revision".into(), cfg.batches.revision.clone().into()),
    ];
    let mut registry = Registry::with_prefix_and_labels("freight_worker", labels.into_iter());
    let info = Family::<JobLabels, Gauge>::default();
    registry.register("info", "The job this worker serves", info.clone());
    info.get_or_create(&JobLabels {}).set(1);
    registry.register(
        "records_processed",
        "Records written to the target",
        metrics.processed.clone(),
    );
    registry.register(
        "records_failed",
        "Records the target rejected",
        metrics.failed.clone(),
    );
    registry.register("batches", "Batches finished", metrics.batches.clone());
    registry.register(
        "transient_errors",
        "Transient database errors retried (not failed records)",
        metrics.transient_errors.clone(),
    );
    registry.register(
        "batch_duration_seconds",
        "Time to copy and record one batch",
        metrics.duration.clone(),
    );
    registry
}
