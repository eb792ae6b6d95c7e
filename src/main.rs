//! The `freight` command: `freight operator`, `freight crd`.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use freight::{
    controller::context::DataPlaneSettings,
    operator::{self, OperatorConfig},
    telemetry::{self, LogFormat},
    worker,
};

/// Freight runs data migration jobs on Kubernetes.
#[derive(Parser)]
#[command(name = "freight", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile MigrationJobs into worker fleets.
    Operator(Box<OperatorArgs>),
    /// Run a worker (the process in each worker pod).
    Worker(WorkerArgs),
    /// Print the MigrationJob CustomResourceDefinition (YAML).
    Crd,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FREIGHT_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "FREIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FREIGHT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FREIGHT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Worker image for jobs that do not set spec.workers.image (normally the
    /// operator's own image).
    #[arg(
        long,
        env = "FREIGHT_WORKER_IMAGE",
        default_value = "ghcr.io/freight-dev/freight:latest"
    )]
    worker_image: String,
    /// Elect a leader with a Lease so that several replicas are safe.
    #[arg(long, env = "FREIGHT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "FREIGHT_LEASE_NAME", default_value = "freight-operator")]
    lease_name: String,
    /// Seconds the lease stays valid without renewal; a standby takes over after it.
    #[arg(long, env = "FREIGHT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Listen address of the batch coordinator (workers lease batches from it).
    #[arg(long, env = "FREIGHT_COORDINATOR_ADDR", default_value = "0.0.0.0:8081")]
    coordinator_addr: SocketAddr,
    /// URL workers use to reach the coordinator (default:
    /// http://freight-coordinator.<namespace>.svc:<port>).
    #[arg(long, env = "FREIGHT_COORDINATOR_URL")]
    coordinator_url: Option<String>,
    /// Seconds a worker holds a batch; a worker that dies or stalls loses it
    /// after this long and the batch goes to another worker.
    #[arg(long, env = "FREIGHT_BATCH_LEASE_SECONDS", default_value_t = 30)]
    batch_lease_seconds: u64,
    /// Least seconds between two status writes of a job that only move its counters.
    #[arg(long, env = "FREIGHT_STATUS_INTERVAL_SECONDS", default_value_t = 5)]
    status_interval_seconds: u64,
    /// This replica's identity (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "FREIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match freight::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Worker(args) => {
            telemetry::init(args.log_format);
            let result = match worker::WorkerConfig::from_env(args.metrics_addr) {
                Ok(cfg) => worker::run(cfg).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "worker stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Operator(args) => {
            telemetry::init(args.log_format);
            let identity = args.identity.unwrap_or_else(default_identity);
            let coordinator_url = args.coordinator_url.unwrap_or_else(|| {
                format!(
                    "http://freight-coordinator.{}.svc:{}",
                    args.lease_namespace,
                    args.coordinator_addr.port()
                )
            });
            let cfg = OperatorConfig {
                coordinator_addr: args.coordinator_addr,
                coordinator_url,
                data_plane: DataPlaneSettings {
                    batch_lease_seconds: args.batch_lease_seconds.max(2) as f64,
                    status_interval: Duration::from_secs(args.status_interval_seconds.max(1)),
                },
                namespace: args.namespace.filter(|n| !n.is_empty()),
                metrics_addr: args.metrics_addr,
                worker_image: args.worker_image,
                leader_election: args.leader_election,
                lease_namespace: args.lease_namespace,
                lease_name: args.lease_name,
                identity,
                lease_duration_seconds: args.lease_duration_seconds.max(3),
            };
            match operator::run(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "freight".to_owned());
    format!("{host}-{}", std::process::id())
}
