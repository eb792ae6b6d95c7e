//! `freight operator`: runs the controller, its HTTP endpoints and leader election.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret,
};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt, controller::Config as ControllerConfig, events::Reporter,
        reflector::ObjectRef, watcher,
    },
};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{
    api::MigrationJob,
    controller::{
        Context,
        children::ChildSettings,
        context::DataPlaneSettings,
        labels::FIELD_MANAGER,
        reconcile::{error_policy, reconcile},
        stores::{
            Stores, autoscaler_signature, deployment_signature, reflect_changes, secret_signature,
        },
        triggers::jobs_for_secret,
    },
    coordinator::{self, Registry},
    http::{self, HttpError, Readiness},
    leader::LeaderGate,
    metrics::{Metrics, SharedMetrics},
};

/// Settings of `freight operator`.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// Worker image for jobs that do not name one.
    pub worker_image: String,
    /// Run leader election (needed with more than one replica).
    pub leader_election: bool,
    /// Namespace and name of the leader Lease.
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease and in events.
    pub identity: String,
    /// Seconds a lease stays valid without renewal.
    pub lease_duration_seconds: u64,
    /// Address of the batch coordinator workers lease batches from.
    pub coordinator_addr: SocketAddr,
    /// URL at which workers reach the coordinator.
    pub coordinator_url: String,
    /// Data-plane settings (batch lease length, status write interval).
    pub data_plane: DataPlaneSettings,
}

/// Errors that stop the operator process.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(#[source] kube::Error),
    /// The API server could not be reached at startup.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(#[source] kube::Error),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] LeaseManagerError),
    /// The HTTP endpoints failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(cfg: OperatorConfig) -> Result<(), OperatorError> {
    let client = Client::try_default()
        .await
        .map_err(OperatorError::ClientConfig)?;
    let version = client
        .apiserver_version()
        .await
        .map_err(OperatorError::Unreachable)?;
    tracing::info!(
        server = %version.git_version,
        namespace = cfg.namespace.as_deref().unwrap_or("<all>"),
        identity = %cfg.identity,
        "connected to the Kubernetes API"
    );

    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    readiness.set_ready();
    let encoder = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.encode())
    };
    let server = tokio::spawn(http::serve(cfg.metrics_addr, encoder, readiness));
    // Every replica serves the coordinator; only the leader's knows jobs
    // (the others answer 404 and close the connection, so a Service retries
    // elsewhere). Leases themselves live in each job's ledger.
    let registry = Registry::default().with_lease_results(metrics.lease_results());
    let coordinator = tokio::spawn(http::serve_router(
        cfg.coordinator_addr,
        coordinator::router(registry.clone()),
        "the batch coordinator",
    ));
    let shutdown = crate::signals::shutdown_signal();

    let result = tokio::select! {
        result = async {
            if cfg.leader_election {
                run_elected(client, &cfg, metrics, &registry, shutdown).await
            } else {
                metrics.set_leader(true);
                let stop = wait_for(shutdown, true);
                run_controller(client, &cfg, metrics, LeaderGate::always(), &registry, stop).await;
                Ok(())
            }
        } => result,
        served = coordinator => match served {
            Ok(Err(e)) => Err(e.into()),
            _ => Ok(()),
        },
    };
    server.abort();
    result
}

/// Leader election loop: run the controller while holding the lease, stand by otherwise.
async fn run_elected(
    client: Client,
    cfg: &OperatorConfig,
    metrics: SharedMetrics,
    registry: &Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), OperatorError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_field_manager(FIELD_MANAGER)
        .with_duration(cfg.lease_duration_seconds)
        .with_grace(cfg.lease_duration_seconds / 3)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tracing::info!(lease = %cfg.lease_name, "waiting for the leader lease");
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            held = leader.wait_for(|l| *l) => if held.is_err() { break },
        }
        tracing::info!("acquired the leader lease; starting the controller");
        metrics.set_leader(true);
        let lost = wait_for(leader.clone(), false);
        let stopping = wait_for(shutdown.clone(), true);
        let stop = async move {
            tokio::select! { () = lost => {}, () = stopping => {} }
        };
        run_controller(
            client.clone(),
            cfg,
            metrics.clone(),
            LeaderGate::following(leader.clone()),
            registry,
            stop,
        )
        .await;
        metrics.set_leader(false);
        if *shutdown.borrow() {
            break;
        }
        tracing::warn!("lost the leader lease; controller stopped, standing by");
    }
    // Dropping the receiver makes the lease manager release the lease, so a
    // standby replica takes over at once instead of after the lease expires.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader lease"),
        Ok(Err(_)) | Err(_) => tracing::warn!("lease release did not finish"),
    }
    Ok(())
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the MigrationJob controller until `stop` resolves.
async fn run_controller(
    client: Client,
    cfg: &OperatorConfig,
    metrics: SharedMetrics,
    leader: LeaderGate,
    registry: &Registry,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = cfg.namespace.as_deref();
    let (stores, writers) = Stores::new();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            ChildSettings {
                default_worker_image: cfg.worker_image.clone(),
                coordinator_url: cfg.coordinator_url.clone(),
            },
            metrics,
            leader,
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(cfg.identity.clone()),
            },
            stores,
        )
        .with_data_plane(cfg.data_plane.clone(), registry.clone()),
    );
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=freight-operator");
    // Children are cached (a reconcile reads them there, not from the API
    // server) and trigger a reconcile only when something that matters
    // changed: what the operator applied, replicas, readiness, stalls.
    let deployments = reflect_changes(
        watcher(scoped::<Deployment>(&client, ns), managed.clone()).default_backoff(),
        writers.deployments,
        deployment_signature,
    );
    let autoscalers = reflect_changes(
        watcher(scoped::<HorizontalPodAutoscaler>(&client, ns), managed).default_backoff(),
        writers.autoscalers,
        autoscaler_signature,
    );
    // Secrets are watched as metadata only: enough to notice that a referenced
    // Secret appeared or changed, without streaming Secret data.
    let secrets = reflect_changes(
        watcher(
            scoped::<PartialObjectMeta<Secret>>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff(),
        writers.secrets,
        secret_signature,
    );
    let controller = Controller::new(
        scoped::<MigrationJob>(&client, ns),
        watcher::Config::default(),
    );
    let store = controller.store();
    // The coordinator asks for a look at a job when its last batches are out
    // (and planning asks when it ends).
    let nudges = registry
        .nudges()
        .map(|key| ObjectRef::new(&key.name).within(&key.namespace));
    controller
        .owns_stream(deployments)
        .owns_stream(autoscalers)
        .watches_stream(secrets, move |secret| {
            jobs_for_secret(&secret, &store.state())
        })
        .reconcile_on(nudges)
        .with_config(ControllerConfig::default().concurrency(8))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((job, _)) => tracing::debug!(job = %job.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    // A replica that stopped reconciling no longer knows which jobs may run,
    // and stops its planning tasks.
    registry.clear();
    ctx.memory.forget_all();
    ctx.metrics.forget_all_jobs();
}

/// Resolves when the watched flag equals `value`.
async fn wait_for(mut rx: watch::Receiver<bool>, value: bool) {
    let _ = rx.wait_for(|v| *v == value).await;
}
