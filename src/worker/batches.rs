//! The worker's batch loop: lease a batch from the coordinator, copy its key
//! range, record the result in the same target transaction, repeat.
//!
//! Transient failures (connection loss, restarts, deadlocks) are retried
//! with backoff on the same lease while it is valid, then left to expire so
//! the batch goes to another attempt; they never count as failed records. On
//! shutdown the in-flight batch is finished first.

use std::time::{Duration, Instant};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::{
    api::{PostgresSource, PostgresTarget},
    backoff::Backoff,
    coordinator::LeaseResponse,
    postgres::{
        CopySpec, PgError, PgErrorKind, ResolveError, Rows, connect, copy_range, ledger,
        prepare_staging, resolve_copy_spec,
    },
};

/// What the batch loop needs.
#[derive(Clone)]
pub struct BatchConfig {
    /// Base URL of the coordinator, e.g. `http://freight-coordinator.freight-system:8081`.
    pub coordinator: String,
    /// Namespace of the job.
    pub namespace: String,
    /// Name of the job.
    pub job: String,
    /// This worker's name (pod name).
    pub worker: String,
    /// This worker's revision, recorded with each attempt ("" when unknown).
    pub revision: String,
    /// The job's credential. Never logged.
    pub token: String,
    /// Source connection string. Never logged.
    pub source_url: String,
    /// Target connection string. Never logged.
    pub target_url: String,
    /// Source table.
    pub source: PostgresSource,
    /// Target table.
    pub target: PostgresTarget,
}

/// Counters the loop updates.
#[derive(Clone)]
pub struct BatchMetrics {
    /// Records written.
    pub processed: Counter,
    /// Records rejected by the target.
    pub failed: Counter,
    /// Batches finished.
    pub batches: Counter,
    /// Transient errors retried.
    pub transient_errors: Counter,
    /// Seconds per batch.
    pub duration: Histogram,
}

impl Default for BatchMetrics {
    /// Fresh metrics with batch-duration buckets from 10 ms to 60 s.
    fn default() -> Self {
        Self {
            processed: Counter::default(),
            failed: Counter::default(),
            batches: Counter::default(),
            transient_errors: Counter::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        }
    }
}

impl BatchMetrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why the loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown was requested.
    Shutdown,
    /// The coordinator says the job has nothing left to do.
    JobFinished,
}

/// What the coordinator said.
enum Next {
    Batch(LeaseResponse),
    Wait(Duration),
    Finished,
}

struct Connections {
    source: Client,
    target: Client,
    spec: CopySpec,
}

/// Runs until shutdown or until the job is finished.
pub async fn run(
    cfg: &BatchConfig,
    metrics: &BatchMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Stopped {
    let http = reqwest::Client::new();
    let mut conns: Option<Connections> = None;
    let mut backoff = backoff();
    loop {
        if *shutdown.borrow() {
            return Stopped::Shutdown;
        }
        let next = match ask(&http, cfg).await {
            Ok(next) => next,
            Err(why) => {
                tracing::warn!(error = %why, "coordinator unavailable");
                Next::Wait(backoff.next_delay())
            }
        };
        let lease = match next {
            Next::Finished => return Stopped::JobFinished,
            Next::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.wait_for(|s| *s) => return Stopped::Shutdown,
                }
                continue;
            }
            Next::Batch(lease) => lease,
        };
        backoff.reset();
        // The batch is finished even if shutdown arrives meanwhile.
        run_batch(cfg, metrics, &mut conns, &lease).await;
    }
}

async fn ask(http: &reqwest::Client, cfg: &BatchConfig) -> Result<Next, String> {
    let url = format!(
        "{}/v1/namespaces/{}/migrationjobs/{}/leases",
        cfg.coordinator.trim_end_matches('/'),
        cfg.namespace,
        cfg.job
    );
    let response = http
        .post(url)
        .bearer_auth(&cfg.token)
        .json(&serde_json::json!({ "worker": cfg.worker, "revision": cfg.revision }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs);
    match response.status().as_u16() {
        200 => response
            .json::<LeaseResponse>()
            .await
            .map(Next::Batch)
            .map_err(|e| e.without_url().to_string()),
        204 | 404 | 503 => Ok(Next::Wait(retry_after)),
        410 => Ok(Next::Finished),
        401 => Err("the coordinator refused this worker's credential".into()),
        other => Err(format!("unexpected coordinator answer {other}")),
    }
}

async fn connections(cfg: &BatchConfig) -> Result<Connections, PgError> {
    let source = connect(&cfg.source_url).await?;
    let target = connect(&cfg.target_url).await?;
    let spec = match resolve_copy_spec(&source, &target, &cfg.source, &cfg.target).await {
        Ok(spec) => spec,
        Err(ResolveError::Source(e) | ResolveError::Target(e)) => return Err(e),
        Err(invalid @ ResolveError::Invalid { .. }) => {
            return Err(PgError::config("check tables", invalid.to_string()));
        }
    };
    // Each batch commits without waiting for its WAL flush: a batch's rows
    // and its ledger entry commit atomically, so a crash of the target
    // loses both together and the batch simply runs again.
    target
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(|e| PgError::from_driver("configure session", &e))?;
    prepare_staging(&target, &spec).await?;
    Ok(Connections {
        source,
        target,
        spec,
    })
}

/// Copies one leased batch, retrying transient failures while the lease lasts.
async fn run_batch(
    cfg: &BatchConfig,
    metrics: &BatchMetrics,
    conns: &mut Option<Connections>,
    lease: &LeaseResponse,
) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(lease.lease_seconds * 0.8);
    let mut backoff = backoff();
    loop {
        match try_batch(cfg, conns, lease).await {
            Ok(Some((written, failed))) => {
                metrics.processed.inc_by(written);
                metrics.failed.inc_by(failed);
                metrics.batches.inc();
                metrics.duration.observe(started.elapsed().as_secs_f64());
                tracing::debug!(batch = lease.lease.batch_id, written, failed, "batch done");
                return;
            }
            Ok(None) => {
                tracing::warn!(
                    batch = lease.lease.batch_id,
                    "lease expired before the batch was recorded; it goes to another attempt"
                );
                return;
            }
            Err(e) => {
                if e.kind == PgErrorKind::Transient {
                    metrics.transient_errors.inc();
                }
                // A broken or unusable connection is rebuilt on the next try.
                *conns = None;
                let wait = backoff.next_delay();
                if Instant::now() + wait > deadline {
                    tracing::warn!(batch = lease.lease.batch_id, error = %e, "giving the batch back: its lease runs out");
                    return;
                }
                tracing::warn!(batch = lease.lease.batch_id, error = %e, retry_in_ms = wait.as_millis() as u64, "batch failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One attempt: `Ok(Some((written, failed)))` recorded, `Ok(None)` lease lost.
async fn try_batch(
    cfg: &BatchConfig,
    conns: &mut Option<Connections>,
    lease: &LeaseResponse,
) -> Result<Option<(u64, u64)>, PgError> {
    if conns
        .as_ref()
        .is_none_or(|c| c.source.is_closed() || c.target.is_closed())
    {
        *conns = Some(connections(cfg).await?);
    }
    let Some(c) = conns.as_mut() else {
        return Err(PgError::config("connect", "no connection"));
    };
    let tx = c
        .target
        .transaction()
        .await
        .map_err(|e| PgError::from_driver("begin batch", &e))?;
    let rows = match &lease.lease.keys {
        Some(keys) => Rows::Keys(keys),
        None => Rows::Range {
            lower: lease.lease.lower.as_deref(),
            upper: lease.lease.upper.as_deref(),
        },
    };
    let copied = copy_range(&c.source, &tx, &c.spec, rows).await?;
    if !ledger::complete(
        &tx,
        &lease.job_uid,
        &lease.lease,
        copied.written,
        &copied.failed,
    )
    .await?
    {
        tx.rollback()
            .await
            .map_err(|e| PgError::from_driver("roll back batch", &e))?;
        return Ok(None);
    }
    tx.commit()
        .await
        .map_err(|e| PgError::from_driver("commit batch", &e))?;
    Ok(Some((copied.written, copied.failed.len() as u64)))
}

/// The worker's retry delays: exponential from 250 ms to 30 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
}
