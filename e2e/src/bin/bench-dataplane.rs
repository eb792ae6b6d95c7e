//! `make bench` (early form): throughput of Freight's data plane against a
//! raw `COPY ... TO STDOUT | COPY ... FROM STDIN` pipe between the same two
//! databases, on the same 1M-row table, in one run. Prints rows/s of each and
//! the ratio.
//!
//! The data plane runs in-process (planning, ledger, coordinator, worker
//! loops) without Kubernetes; the full path through the operator replaces it
//! once the operator drives the data plane.

#[path = "../../../tests/common/dataplane.rs"]
mod dataplane;
#[path = "../../../tests/common/pg.rs"]
mod pg;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use freight::api::WriteMode;

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
    let run = dataplane::migrate(pg, JOB, workers, batch_size(), mode()).await;
    assert_eq!(run.processed(), run.totals.records, "every row copied");
    println!(
        "  freight: planning took {:.2}s of {:.2}s",
        run.planning.as_secs_f64(),
        run.elapsed.as_secs_f64()
    );
    run.elapsed
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
