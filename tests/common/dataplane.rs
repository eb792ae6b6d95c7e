//! The data plane without Kubernetes, for tests and `make bench`: plan a
//! job over a `contacts` table, serve the coordinator on a loopback port,
//! run worker loops until the ledger is done, then finish the job.
//! Include next to `pg.rs` (it uses `crate::pg`).

#![allow(dead_code)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use freight::{
    api::{PostgresSource, PostgresTarget, SecretKeyRef, WriteMode},
    coordinator::{JobEntry, JobKey, JobState, Registry, router},
    domain::plan::PlanTotals,
    postgres::{SharedClient, TableRef, connect, ledger},
    worker::batches::{self, BatchConfig, BatchMetrics, Stopped},
};

use crate::pg::TempPostgres;

/// What a run did.
pub struct Migration {
    /// The plan.
    pub totals: PlanTotals,
    /// Each worker's metrics.
    pub metrics: Vec<BatchMetrics>,
    /// Time spent planning.
    pub planning: Duration,
    /// Time from the start of planning to the last batch recorded.
    pub elapsed: Duration,
}

impl Migration {
    /// Records written, summed over workers.
    pub fn processed(&self) -> u64 {
        self.metrics.iter().map(|m| m.processed.get()).sum()
    }
    /// Records rejected, summed over workers.
    pub fn failed(&self) -> u64 {
        self.metrics.iter().map(|m| m.failed.get()).sum()
    }
}

/// Migrates `public.contacts` of database `source` into `target` with job
/// `uid` (planning is skipped when the job is planned already).
pub async fn migrate(
    pg: &TempPostgres,
    uid: &str,
    workers: usize,
    batch: u64,
    mode: WriteMode,
) -> Migration {
    let start = Instant::now();
    let source = connect(&pg.url("source")).await.expect("source");
    let mut target = connect(&pg.url("target")).await.expect("target");
    ledger::install(&target).await.expect("ledger");
    let table = TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    let totals = ledger::plan(
        &source,
        &mut target,
        uid,
        &table,
        "id",
        batch,
        &Default::default(),
    )
    .await
    .expect("plan");
    let planning = start.elapsed();
    let target = Arc::new(target);
    let ledger = Arc::new(SharedClient::new(
        pg.url("target"),
        "SET synchronous_commit = off",
    ));
    let job_entry = |state| JobEntry::new(uid.into(), "secret-token", ledger.clone(), state, 60.0);

    let registry = Registry::default();
    let key = JobKey {
        namespace: "crm".into(),
        name: "contacts".into(),
    };
    registry.upsert(key.clone(), job_entry(JobState::Serving));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(freight::http::serve_on(listener, router(registry.clone())));

    let secret = SecretKeyRef {
        name: "unused".into(),
        key: "url".into(),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let cfg = BatchConfig {
                coordinator: format!("http://{addr}"),
                namespace: "crm".into(),
                job: "contacts".into(),
                worker: format!("worker-{i}"),
                revision: String::new(),
                token: "secret-token".into(),
                source_url: pg.url("source"),
                target_url: pg.url("target"),
                source: PostgresSource {
                    connection_secret_ref: secret.clone(),
                    schema: "public".into(),
                    table: "contacts".into(),
                    key_column: "id".into(),
                    columns: None,
                },
                target: PostgresTarget {
                    connection_secret_ref: secret.clone(),
                    schema: "public".into(),
                    table: "contacts".into(),
                    mode,
                },
            };
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let metrics = BatchMetrics::new();
                let stopped = batches::run(&cfg, &metrics, shutdown).await;
                (stopped, metrics)
            })
        })
        .collect();
    // The operator's part, in miniature: watch the ledger, finish the job.
    tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            let c = ledger::counts(&target, uid).await.expect("counts");
            if c.pending == 0 && c.leased == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the workers finish the job");
    let elapsed = start.elapsed();
    registry.upsert(key, job_entry(JobState::Finished));
    let mut metrics = Vec::new();
    for h in handles {
        let (stopped, m) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("workers stop")
            .expect("worker task");
        assert_eq!(stopped, Stopped::JobFinished);
        metrics.push(m);
    }
    Migration {
        totals,
        metrics,
        planning,
        elapsed,
    }
}
