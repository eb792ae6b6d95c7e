//! `make bench` (early form): throughput of Freight's data plane against a
//! raw `COPY ... TO STDOUT | COPY ... FROM STDIN` pipe between the same two
//! databases, on the same 1M-row table, in one run. Prints rows/s of each and
//! the ratio.
//!
//! The data plane runs in-process (planning, ledger, coordinator, worker
//! loops) without Kubernetes; the full path through the operator replaces it
//! once the operator drives the data plane.

#[path = "../../../tests/common/pg.rs"]
mod pg;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use freight::{
    api::{PostgresSource, PostgresTarget, SecretKeyRef, WriteMode},
    coordinator::{JobEntry, JobKey, JobState, Registry, router},
    postgres::{TableRef, connect, ledger},
    worker::batches::{self, BatchConfig, BatchMetrics},
};

const JOB: &str = "00000000-0000-4000-8000-0000000be4c0";
const CONTACTS: &str = "CREATE TABLE contacts (
  id bigint PRIMARY KEY, first_name text, last_name text, email text, phone text,
  company text, created_at timestamptz, score numeric(6,2), tags text[], profile jsonb)";
const SEED: &str = "INSERT INTO contacts
  SELECT g, 'First' || g % 997, 'Last' || g % 1009, 'contact' || g || '@example.com',
         '+1-555-' || lpad((g % 10000)::text, 4, '0'), 'Company ' || g % 5003,
         TIMESTAMPTZ '2015-01-01' + g * INTERVAL '37 seconds', (g % 10000) / 100.0,
         ARRAY['crm', 'lead' || g % 7], jsonb_build_object('source', 'import', 'rank', g % 100)
    FROM generate_series(1, $ROWS) g";

fn rows() -> i64 {
    std::env::var("FREIGHT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn batch_size() -> u64 {
    std::env::var("FREIGHT_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn mode() -> WriteMode {
    match std::env::var("FREIGHT_BENCH_MODE").as_deref() {
        Ok("insert") => WriteMode::Insert,
        _ => WriteMode::Upsert,
    }
}

fn workers() -> usize {
    std::env::var("FREIGHT_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// (b) the raw pipe: psql COPY out | psql COPY in, binary.
fn raw_pipe(pg: &pg::TempPostgres) -> Duration {
    pg.psql("target", "TRUNCATE contacts");
    let start = Instant::now();
    let mut out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url("source"),
            "-c",
            "COPY contacts TO STDOUT (FORMAT binary)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    let stdout = out.stdout.take().expect("piped stdout");
    let status = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url("target"),
            "-c",
            "COPY contacts FROM STDIN (FORMAT binary)",
        ])
        .stdin(stdout)
        .status()
        .expect("psql");
    assert!(
        status.success() && out.wait().expect("psql").success(),
        "raw COPY pipe failed"
    );
    start.elapsed()
}

/// (a) Freight's data plane with `workers` loops (default settings: batch
/// size 1000, upsert; `FREIGHT_BENCH_BATCH` / `FREIGHT_BENCH_MODE` vary them).
async fn freight(pg: &pg::TempPostgres, workers: usize) -> Duration {
    pg.psql(
        "target",
        "TRUNCATE contacts; DROP SCHEMA IF EXISTS freight CASCADE",
    );
    let start = Instant::now();
    let source = connect(&pg.url("source")).await.expect("source");
    let mut target = connect(&pg.url("target")).await.expect("target");
    ledger::install(&target).await.expect("ledger");
    let table = TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    let plan = ledger::plan(&source, &mut target, JOB, &table, "id", batch_size())
        .await
        .expect("plan");
    let planned = start.elapsed();
    let target = Arc::new(target);
    let registry = Registry::default();
    let key = JobKey {
        namespace: "bench".into(),
        name: "contacts".into(),
    };
    registry.upsert(
        key.clone(),
        JobEntry::new(JOB.into(), "t", target.clone(), JobState::Serving, 60.0),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, router(registry.clone())).into_future());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let secret = SecretKeyRef {
        name: "unused".into(),
        key: "url".into(),
    };
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let cfg = BatchConfig {
                coordinator: format!("http://{addr}"),
                namespace: "bench".into(),
                job: "contacts".into(),
                worker: format!("bench-{i}"),
                token: "t".into(),
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
                    mode: mode(),
                },
            };
            let shutdown = shutdown.clone();
            tokio::spawn(async move { batches::run(&cfg, &BatchMetrics::new(), shutdown).await })
        })
        .collect();
    loop {
        let c = ledger::counts(&target, JOB).await.expect("counts");
        if c.pending == 0 && c.leased == 0 {
            assert_eq!(c.processed_records as u64, plan.records, "every row copied");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    registry.upsert(
        key,
        JobEntry::new(JOB.into(), "t", target.clone(), JobState::Finished, 60.0),
    );
    for h in handles {
        let _ = h.await;
    }
    println!(
        "  freight: planning took {:.2}s of {:.2}s",
        planned.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    elapsed
}

#[tokio::main]
async fn main() {
    let (rows, workers) = (rows(), workers());
    let pg = pg::TempPostgres::start();
    pg.psql("source", CONTACTS);
    pg.psql("target", CONTACTS);
    println!("seeding {rows} contact rows ...");
    pg.psql("source", &SEED.replace("$ROWS", &rows.to_string()));
    pg.psql("source", "VACUUM ANALYZE contacts");
    let checksum = "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM contacts t";

    let pipe = raw_pipe(&pg);
    let pipe_sum = pg.psql("target", checksum);
    let ours = freight(&pg, workers).await;
    assert_eq!(
        pg.psql("target", checksum),
        pipe_sum,
        "Freight's copy differs from the pipe's"
    );
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "raw COPY pipe:                 {:>10.0} rows/s ({:.2}s)",
        rate(pipe),
        pipe.as_secs_f64()
    );
    println!(
        "freight data plane ({workers} workers, batch {}, {:?}): {:>10.0} rows/s ({:.2}s)",
        batch_size(),
        mode(),
        rate(ours),
        ours.as_secs_f64()
    );
    println!("ratio freight / pipe: {:.2}", rate(ours) / rate(pipe));
}
